//! A labelled voice-activity corpus, generated: speech from espeak-ng in
//! several voices (trimmed with sox so label times are exact) and non-speech
//! bursts synthesised here (clicks, coughs, knocks, door slams, noise bursts,
//! music-like tones), laid out between stretches of quiet room noise.
#![allow(dead_code)]

use std::process::Command;

pub const RATE: u32 = 16_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Speech,
    Click,
    Cough,
    Knock,
    DoorSlam,
    NoiseBurst,
    Tone,
    /// Held-out corpus only (sox-generated): plucked melody.
    Music,
    /// Held-out: speech-shaped babble (band-passed pink noise with a syllable-rate tremolo).
    TvChatter,
    /// Held-out: a run of key clicks.
    Keyboard,
    /// Held-out: one breath in and out.
    Breathing,
}

impl Kind {
    pub fn is_speech(self) -> bool {
        self == Kind::Speech
    }
}

#[derive(Debug, Clone)]
pub struct Label {
    pub kind: Kind,
    pub what: String,
    /// Sample range [start, end) in the corpus.
    pub start: usize,
    pub end: usize,
}

impl Label {
    pub fn start_ns(&self) -> u64 {
        self.start as u64 * 1_000_000_000 / RATE as u64
    }
    pub fn end_ns(&self) -> u64 {
        self.end as u64 * 1_000_000_000 / RATE as u64
    }
}

pub struct Corpus {
    pub samples: Vec<i16>,
    pub labels: Vec<Label>,
}

const SENTENCES: &[&str] = &[
    "Turn the lights on in the kitchen.",
    "What is the weather like tomorrow?",
    "Please call me back in ten minutes.",
    "The quick brown fox jumps over the lazy dog.",
    "Set a timer for twenty minutes.",
    "Can you read my last message again?",
];
const VOICES: &[&str] = &[
    "en",
    "en-us",
    "en-gb-scotland",
    "en+f3",
    "en-us+m4",
    "en-029",
];

/// espeak-ng speech at 16 kHz mono S16, leading and trailing silence removed.
pub fn speak(text: &str, voice: &str, speed: u32) -> Result<Vec<i16>, String> {
    let dir = std::env::temp_dir().join(format!("rtai-corpus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let wav = dir.join("speech.wav");
    let raw = dir.join("speech.raw");
    let st = Command::new("espeak-ng")
        .args(["-v", voice, "-s", &speed.to_string(), "-w"])
        .arg(&wav)
        .arg(text)
        .status()
        .map_err(|e| format!("espeak-ng: {e}"))?;
    if !st.success() {
        return Err(format!("espeak-ng failed for voice {voice}"));
    }
    let st = Command::new("sox")
        .arg(&wav)
        .args([
            "-r",
            "16000",
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
            "-t",
            "raw",
        ])
        .arg(&raw)
        .args([
            "silence", "1", "0.005", "0.3%", "reverse", "silence", "1", "0.005", "0.3%", "reverse",
        ])
        .status()
        .map_err(|e| format!("sox: {e}"))?;
    if !st.success() {
        return Err("sox failed".into());
    }
    let bytes = std::fs::read(&raw).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect())
}

/// Deterministic pseudo-random numbers in [-1, 1).
struct Noise(u32);
impl Noise {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (self.0 >> 8) as f32 / (1u32 << 23) as f32 - 1.0
    }
}

fn synth(kind: Kind, variant: u32, noise: &mut Noise) -> Vec<f32> {
    let r = RATE as f32;
    let n = |ms: f32| (ms * r / 1000.0) as usize;
    match kind {
        Kind::Click => (0..n(4.0 + variant as f32 * 6.0))
            .map(|_| noise.next() * 0.8)
            .collect(),
        Kind::Cough => {
            // Two noisy bursts with a fast attack and a ~60 ms decay, low-passed.
            let mut out = Vec::new();
            let mut lp = 0.0f32;
            for burst in 0..2 {
                let len = n(180.0 - burst as f32 * 60.0);
                for i in 0..len {
                    lp += 0.25 * (noise.next() - lp);
                    out.push(lp * 0.9 * (-(i as f32) / n(60.0) as f32).exp());
                }
                out.extend(std::iter::repeat_n(0.0, n(70.0)));
            }
            out
        }
        Kind::Knock => {
            let mut out = Vec::new();
            for _ in 0..3 {
                let len = n(60.0);
                out.extend((0..len).map(|i| {
                    let t = i as f32 / r;
                    (2.0 * std::f32::consts::PI * (180.0 + variant as f32 * 40.0) * t).sin()
                        * 0.8
                        * (-t * 60.0).exp()
                }));
                out.extend(std::iter::repeat_n(0.0, n(140.0)));
            }
            out
        }
        Kind::DoorSlam => (0..n(400.0))
            .map(|i| {
                let t = i as f32 / r;
                let thump = (2.0 * std::f32::consts::PI * 70.0 * t).sin() * (-t * 12.0).exp();
                (thump * 0.8 + noise.next() * 0.4 * (-t * 30.0).exp()).clamp(-1.0, 1.0)
            })
            .collect(),
        Kind::NoiseBurst => (0..n(150.0 + variant as f32 * 150.0))
            .map(|_| noise.next() * 0.3)
            .collect(),
        Kind::Tone => {
            // A sustained three-note chord, like a held synth pad.
            let base = 220.0 * (1.0 + variant as f32 * 0.25);
            (0..n(800.0))
                .map(|i| {
                    let t = i as f32 / r;
                    [1.0, 1.26, 1.5]
                        .iter()
                        .map(|m| (2.0 * std::f32::consts::PI * base * m * t).sin())
                        .sum::<f32>()
                        * 0.12
                })
                .collect()
        }
        Kind::Speech => unreachable!("speech comes from espeak-ng"),
        Kind::Music | Kind::TvChatter | Kind::Keyboard | Kind::Breathing => {
            unreachable!("held-out sounds come from held_out_sound")
        }
    }
}

/// Builds the corpus. `utterances` speech items (cycling voices and sentences)
/// interleaved with `utterances` non-speech items (cycling their kinds).
pub fn build(utterances: usize) -> Result<Corpus, String> {
    let mut noise = Noise(12345);
    let mut samples: Vec<i16> = Vec::new();
    let mut labels = Vec::new();
    let room = |len: usize, noise: &mut Noise, out: &mut Vec<i16>| {
        out.extend((0..len).map(|_| (noise.next() * 0.002 * 32767.0) as i16));
    };
    let kinds = [
        Kind::Click,
        Kind::Cough,
        Kind::Knock,
        Kind::DoorSlam,
        Kind::NoiseBurst,
        Kind::Tone,
    ];
    room(RATE as usize, &mut noise, &mut samples);
    for i in 0..utterances {
        let voice = VOICES[i % VOICES.len()];
        let text = SENTENCES[i % SENTENCES.len()];
        let speech = speak(text, voice, 150 + (i as u32 % 3) * 20)?;
        let start = samples.len();
        samples.extend(
            speech
                .iter()
                .map(|s| s.saturating_add((noise.next() * 0.002 * 32767.0) as i16)),
        );
        labels.push(Label {
            kind: Kind::Speech,
            what: format!("{voice}: {text}"),
            start,
            end: samples.len(),
        });
        room(RATE as usize * 12 / 10, &mut noise, &mut samples);

        let kind = kinds[i % kinds.len()];
        let burst = synth(kind, (i / kinds.len()) as u32 % 3, &mut noise);
        let start = samples.len();
        samples.extend(
            burst
                .iter()
                .map(|v| ((v + noise.next() * 0.002) * 32767.0) as i16),
        );
        labels.push(Label {
            kind,
            what: format!("{kind:?}"),
            start,
            end: samples.len(),
        });
        room(RATE as usize * 12 / 10, &mut noise, &mut samples);
    }
    Ok(Corpus { samples, labels })
}

/// `engine=silero` properties: the model and ONNX Runtime that scripts/setup.sh
/// installs into the workspace's .venv ($RTAI_SILERO_MODEL / $ORT_DYLIB_PATH win).
pub fn silero_properties() -> Vec<(&'static str, String)> {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = manifest
        .ancestors()
        .find(|d| d.join(".venv").is_dir())
        .unwrap_or(manifest);
    let site = std::fs::read_dir(workspace.join(".venv/lib"))
        .ok()
        .and_then(|mut d| d.find_map(|e| e.ok().map(|e| e.path().join("site-packages"))));
    let model = std::env::var("RTAI_SILERO_MODEL")
        .ok()
        .or_else(|| site.as_ref().map(|s| s.join("silero_vad/data/silero_vad.onnx").to_string_lossy().into_owned()))
        .filter(|p| std::path::Path::new(p).is_file())
        .expect("silero_vad.onnx not found: run scripts/setup.sh (installs the silero-vad wheel into .venv)");
    let library = std::env::var("ORT_DYLIB_PATH")
        .ok()
        .filter(|p| !p.is_empty())
        .or_else(|| {
            let capi = site.as_ref()?.join("onnxruntime/capi");
            std::fs::read_dir(capi).ok()?.find_map(|e| {
                let p = e.ok()?.path();
                p.file_name()?.to_str()?.starts_with("libonnxruntime.so.").then(|| p.to_string_lossy().into_owned())
            })
        })
        .expect("libonnxruntime.so not found: run scripts/setup.sh (installs the onnxruntime wheel into .venv)");
    vec![
        ("engine", "silero".into()),
        ("model-path", model),
        ("onnxruntime-library", library),
    ]
}

/// Held-out corpus: voices, sentences, noise seed and non-speech sounds that
/// the tone rejection and the hold were never tuned on (all synthesised with
/// espeak-ng and sox). Used only to report and to check targets.
const HELD_OUT_SENTENCES: &[&str] = &[
    "My flight leaves at half past seven.",
    "Add milk and bread to the shopping list.",
    "How far is it to the nearest station?",
    "I would like to book a table for four.",
    "Remind me to water the plants tonight.",
    "Yes, that sounds good to me.",
];
const HELD_OUT_VOICES: &[&str] = &[
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en+m3",
    "en-us+f2",
    "en+f4",
];

/// Raw 16 kHz mono S16 from `sox -n` with `effects` (synth and friends), as f32.
fn sox_synth(effects: &[&str]) -> Result<Vec<f32>, String> {
    let out = Command::new("sox")
        // -R: no random seed, the same sound every run.
        .args([
            "-R", "-n", "-r", "16000", "-c", "1", "-b", "16", "-e", "signed", "-t", "raw", "-",
        ])
        .args(effects)
        .output()
        .map_err(|e| format!("sox: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "sox {effects:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out
        .stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
        .collect())
}

fn held_out_sound(kind: Kind, variant: u32) -> Result<Vec<f32>, String> {
    Ok(match kind {
        Kind::Music => {
            let tunes = [
                ["C4", "E4", "G4", "C5"],
                ["A3", "C4", "E4", "A4"],
                ["D4", "F4", "A4", "D5"],
            ];
            let mut out = Vec::new();
            for note in tunes[variant as usize % 3] {
                out.extend(sox_synth(&[
                    "synth", "0.22", "pluck", note, "fade", "0", "0.22", "0.05", "vol", "0.6",
                ])?);
            }
            out
        }
        Kind::TvChatter => sox_synth(&[
            "synth",
            "1.6",
            "pinknoise",
            "bandpass",
            "900",
            "1.2q",
            "tremolo",
            ["3.5", "4.5", "5.5"][variant as usize % 3],
            "90",
            "vol",
            "0.25",
        ])?,
        Kind::DoorSlam => sox_synth(&[
            "synth",
            "0.45",
            "brownnoise",
            "lowpass",
            "180",
            "fade",
            "h",
            "0",
            "0.45",
            "0.42",
            "gain",
            "-n",
            "-3",
        ])?,
        Kind::Keyboard => {
            let mut out = Vec::new();
            let gaps = [90, 140, 110, 180, 95, 160, 120, 200];
            for (k, gap) in gaps.iter().enumerate() {
                let click = sox_synth(&[
                    "synth",
                    "0.008",
                    "whitenoise",
                    "highpass",
                    "1500",
                    "fade",
                    "0",
                    "0.008",
                    "0.006",
                    "vol",
                    if (k as u32 + variant).is_multiple_of(2) {
                        "0.5"
                    } else {
                        "0.35"
                    },
                ])?;
                out.extend(click);
                out.extend(std::iter::repeat_n(
                    0.0,
                    (*gap as usize) * RATE as usize / 1000,
                ));
            }
            out
        }
        Kind::Breathing => sox_synth(&[
            "synth",
            "1.4",
            "pinknoise",
            "bandpass",
            "700",
            "0.8q",
            "fade",
            "q",
            "0.5",
            "1.4",
            "0.6",
            "vol",
            ["0.15", "0.25", "0.35"][variant as usize % 3],
        ])?,
        _ => return Err(format!("{kind:?} is not a held-out sound")),
    })
}

/// The held-out corpus: `utterances` speech items and as many non-speech items
/// (music, TV chatter, door slam, keyboard, breathing), with another noise seed.
pub fn build_held_out(utterances: usize) -> Result<Corpus, String> {
    let mut noise = Noise(987_654_321);
    let mut samples: Vec<i16> = Vec::new();
    let mut labels = Vec::new();
    let room = |len: usize, noise: &mut Noise, out: &mut Vec<i16>| {
        out.extend((0..len).map(|_| (noise.next() * 0.003 * 32767.0) as i16));
    };
    let kinds = [
        Kind::Music,
        Kind::TvChatter,
        Kind::DoorSlam,
        Kind::Keyboard,
        Kind::Breathing,
    ];
    room(RATE as usize, &mut noise, &mut samples);
    for i in 0..utterances {
        let voice = HELD_OUT_VOICES[i % HELD_OUT_VOICES.len()];
        let text = HELD_OUT_SENTENCES[(i * 5) % HELD_OUT_SENTENCES.len()];
        let speech = speak(text, voice, 140 + (i as u32 % 4) * 15)?;
        let start = samples.len();
        samples.extend(
            speech
                .iter()
                .map(|s| s.saturating_add((noise.next() * 0.003 * 32767.0) as i16)),
        );
        labels.push(Label {
            kind: Kind::Speech,
            what: format!("{voice}: {text}"),
            start,
            end: samples.len(),
        });
        room(RATE as usize * 13 / 10, &mut noise, &mut samples);

        let kind = kinds[i % kinds.len()];
        let sound = held_out_sound(kind, (i / kinds.len()) as u32 % 3)?;
        let start = samples.len();
        samples.extend(
            sound
                .iter()
                .map(|v| ((v + noise.next() * 0.003).clamp(-1.0, 1.0) * 32767.0) as i16),
        );
        labels.push(Label {
            kind,
            what: format!("{kind:?}"),
            start,
            end: samples.len(),
        });
        room(RATE as usize * 13 / 10, &mut noise, &mut samples);
    }
    Ok(Corpus { samples, labels })
}

/// Development corpus: for analysing a change without looking at the held-out
/// corpus. Other voices, sentences, speeds and noise seed than both other
/// corpora, and other sox-made sounds of the kinds that fooled Silero on the
/// held-out set (music, TV-like chatter, breathing) plus the tuning kinds.
const DEV_SENTENCES: &[&str] = &[
    "Could you open the garage door please?",
    "The meeting moved to Thursday afternoon.",
    "Play something relaxing in the living room.",
    "How many minutes until the train arrives?",
    "Send the report to everyone on the team.",
    "No, I said the other one.",
];
const DEV_VOICES: &[&str] = &[
    "en+m1",
    "en-us+f1",
    "en+m5",
    "en-us+f5",
    "en+m7",
    "en-us+klatt2",
];

fn dev_sound(kind: Kind, variant: u32) -> Result<Vec<f32>, String> {
    let v = variant as usize % 3;
    Ok(match kind {
        Kind::Music => {
            // Other instruments and tunes than the held-out plucks: a square-wave
            // arpeggio, a sawtooth line with vibrato, plucked notes an octave lower.
            let mut out = Vec::new();
            let notes: [[&str; 5]; 3] = [
                ["E4", "G4", "B4", "E5", "B4"],
                ["F3", "A3", "C4", "F4", "C4"],
                ["G2", "B2", "D3", "G3", "D3"],
            ];
            for note in notes[v] {
                let effects: Vec<&str> = match v {
                    0 => vec![
                        "synth", "0.18", "square", note, "fade", "0.01", "0.18", "0.04", "lowpass",
                        "3000", "vol", "0.25",
                    ],
                    1 => vec![
                        "synth", "0.3", "sawtooth", note, "sine", "6", "fade", "0.02", "0.3",
                        "0.06", "lowpass", "2500", "vol", "0.25",
                    ],
                    _ => vec![
                        "synth", "0.26", "pluck", note, "fade", "0", "0.26", "0.06", "vol", "0.7",
                    ],
                };
                out.extend(sox_synth(&effects)?);
            }
            out
        }
        Kind::TvChatter => sox_synth(&[
            "synth",
            "1.8",
            if v == 1 { "brownnoise" } else { "pinknoise" },
            "bandpass",
            ["600", "1400", "1000"][v],
            ["1.5q", "0.9q", "2q"][v],
            "tremolo",
            ["4", "6", "3"][v],
            ["80", "95", "70"][v],
            "vol",
            ["0.3", "0.5", "0.2"][v],
        ])?,
        Kind::Breathing => sox_synth(&[
            "synth",
            ["1.1", "1.8", "1.3"][v],
            if v == 2 { "brownnoise" } else { "pinknoise" },
            "bandpass",
            ["500", "900", "1200"][v],
            ["1q", "0.6q", "1.4q"][v],
            "fade",
            "t",
            ["0.4", "0.7", "0.5"][v],
            ["1.1", "1.8", "1.3"][v],
            ["0.5", "0.8", "0.6"][v],
            "vol",
            ["0.2", "0.3", "0.45"][v],
        ])?,
        Kind::Keyboard | Kind::DoorSlam => held_out_sound(kind, variant + 1)?,
        _ => return Err(format!("{kind:?} is not a dev sound")),
    })
}

/// The development corpus: `utterances` speech items and as many sounds
/// (music, TV chatter, breathing, the tuning corpus's tones and knocks).
pub fn build_dev(utterances: usize) -> Result<Corpus, String> {
    let mut noise = Noise(55_555);
    let mut samples: Vec<i16> = Vec::new();
    let mut labels = Vec::new();
    let room = |len: usize, noise: &mut Noise, out: &mut Vec<i16>| {
        out.extend((0..len).map(|_| (noise.next() * 0.0025 * 32767.0) as i16));
    };
    let kinds = [
        Kind::Music,
        Kind::TvChatter,
        Kind::Breathing,
        Kind::Music,
        Kind::Knock,
        Kind::Tone,
        Kind::Keyboard,
    ];
    room(RATE as usize, &mut noise, &mut samples);
    for i in 0..utterances {
        let voice = DEV_VOICES[i % DEV_VOICES.len()];
        let text = DEV_SENTENCES[(i * 7) % DEV_SENTENCES.len()];
        let speech = speak(text, voice, 135 + (i as u32 % 5) * 12)?;
        let start = samples.len();
        samples.extend(
            speech
                .iter()
                .map(|s| s.saturating_add((noise.next() * 0.0025 * 32767.0) as i16)),
        );
        labels.push(Label {
            kind: Kind::Speech,
            what: format!("{voice}: {text}"),
            start,
            end: samples.len(),
        });
        room(RATE as usize * 11 / 10, &mut noise, &mut samples);

        let kind = kinds[i % kinds.len()];
        let variant = (i / kinds.len()) as u32 + i as u32;
        let sound = match kind {
            Kind::Knock | Kind::Tone => synth(kind, variant % 3, &mut noise),
            _ => dev_sound(kind, variant)?,
        };
        let start = samples.len();
        samples.extend(
            sound
                .iter()
                .map(|v| ((v + noise.next() * 0.0025).clamp(-1.0, 1.0) * 32767.0) as i16),
        );
        labels.push(Label {
            kind,
            what: format!("{kind:?}/{}", variant % 3),
            start,
            end: samples.len(),
        });
        room(RATE as usize * 11 / 10, &mut noise, &mut samples);
    }
    Ok(Corpus { samples, labels })
}
