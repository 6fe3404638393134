//! Frame classifiers behind specvadgate's `engine` property. Each takes 10 ms
//! mono f32 frames at the stream's rate and answers voiced / not voiced.

use rubato::Resampler;

/// Frames quieter than this are never voice, whatever the noise floor.
const ABSOLUTE_FLOOR_DB: f64 = -60.0;

/// Voiced when the frame's level exceeds an adaptive noise floor that falls
/// fast (to follow quiet rooms) and rises slowly (so speech does not raise it
/// within an utterance).
#[derive(Debug, Default)]
pub struct EnergyEngine {
    floor_db: Option<f64>,
}

impl EnergyEngine {
    pub fn is_voiced(&mut self, frame: &[f32], threshold_db: f64) -> bool {
        let energy = frame.iter().map(|s| (*s as f64) * (*s as f64)).sum::<f64>()
            / frame.len().max(1) as f64;
        let level = (10.0 * energy.max(1e-10).log10()).max(-100.0);
        let floor = self.floor_db.get_or_insert(level);
        let voiced = level > ABSOLUTE_FLOOR_DB && level > *floor + threshold_db;
        if level < *floor {
            *floor += (level - *floor) * 0.5;
        } else {
            *floor += (level - *floor) * 0.002;
        }
        voiced
    }
}

/// Turns 10 ms frames at the stream's rate into 16 kHz samples (a copy when
/// the stream is 16 kHz already), queued until an engine takes them.
pub struct To16k {
    resampler: Option<rubato::FftFixedIn<f32>>,
    pub queue: Vec<f32>,
}

impl To16k {
    pub fn new(rate: u32) -> Result<Self, String> {
        let resampler = if rate == 16000 {
            None
        } else {
            Some(
                rubato::FftFixedIn::<f32>::new(rate as usize, 16000, (rate / 100) as usize, 1, 1)
                    .map_err(|e| format!("cannot resample {rate} Hz to 16 kHz for analysis: {e}"))?,
            )
        };
        Ok(Self {
            resampler,
            queue: Vec::new(),
        })
    }

    pub fn push(&mut self, frame: &[f32]) {
        match self.resampler.as_mut() {
            None => self.queue.extend_from_slice(frame),
            Some(r) => {
                // Frames are always 10 ms; anything else (never produced) is skipped, not guessed at.
                if frame.len() == r.input_frames_next()
                    && let Ok(out) = r.process(&[frame], None)
                {
                    self.queue.extend_from_slice(&out[0]);
                }
            }
        }
    }
}

/// The WebRTC VAD (GMM on sub-band energies) through `earshot`, a pure-Rust
/// port. It takes 8, 16, 32 or 48 kHz; other rates are resampled to 16 kHz.
pub struct WebRtcEngine {
    vad: earshot::VoiceActivityDetector,
    rate: u32,
    to16k: Option<To16k>,
    last: bool,
}

impl WebRtcEngine {
    /// `aggressiveness` 0 (keeps most speech) to 3 (fewest false positives).
    pub fn new(rate: u32, aggressiveness: u32) -> Result<Self, String> {
        let profile = match aggressiveness {
            0 => earshot::VoiceActivityProfile::QUALITY,
            1 => earshot::VoiceActivityProfile::LBR,
            2 => earshot::VoiceActivityProfile::AGGRESSIVE,
            _ => earshot::VoiceActivityProfile::VERY_AGGRESSIVE,
        };
        let to16k = match rate {
            8000 | 16000 | 32000 | 48000 => None,
            _ => Some(To16k::new(rate)?),
        };
        Ok(Self {
            vad: earshot::VoiceActivityDetector::new(profile),
            rate,
            to16k,
            last: false,
        })
    }

    fn predict(&mut self, rate: u32, samples: &[f32]) {
        let pcm: Vec<i16> = samples
            .iter()
            .map(|s| (s.clamp(-1.0, 1.0) * 32767.0) as i16)
            .collect();
        let result = match rate {
            8000 => self.vad.predict_8khz(&pcm),
            16000 => self.vad.predict_16khz(&pcm),
            32000 => self.vad.predict_32khz(&pcm),
            _ => self.vad.predict_48khz(&pcm),
        };
        if let Ok(voiced) = result {
            self.last = voiced;
        }
    }

    /// `frame` holds 10 ms at the stream's rate.
    pub fn is_voiced(&mut self, frame: &[f32]) -> bool {
        match self.to16k.take() {
            None => self.predict(self.rate, frame),
            Some(mut to16k) => {
                to16k.push(frame);
                while to16k.queue.len() >= 160 {
                    let chunk: Vec<f32> = to16k.queue.drain(..160).collect();
                    self.predict(16000, &chunk);
                }
                self.to16k = Some(to16k);
            }
        }
        self.last
    }
}

/// Tells tones from voice: beeps, chords, knocks and ringing put nearly all
/// their energy into a few spectral lines, while voiced speech spreads it over
/// many harmonics and unvoiced speech over a wide band. Used by the gate so a
/// tone can neither open nor commit a segment, whatever the engine says.
pub struct ToneDetector {
    fft: std::sync::Arc<dyn realfft::RealToComplex<f32>>,
    window: Vec<f32>,
    recent: std::collections::VecDeque<f32>,
    input: Vec<f32>,
    spectrum: Vec<realfft::num_complex::Complex<f32>>,
    power: Vec<f32>,
    /// Bins of the band that speech energy lives in (80–4000 Hz).
    band: std::ops::Range<usize>,
}

/// Spectral lines counted as "the tone": a chord has three notes.
const TONE_PEAKS: usize = 3;
/// A Hann window's main lobe: a pure sine covers its bin and two either side.
const PEAK_HALF_WIDTH: usize = 2;

impl ToneDetector {
    /// Looks at the last ~32 ms (a power of two of samples) at `rate`.
    pub fn new(rate: u32) -> Self {
        let n = ((rate as usize * 32 / 1000).next_power_of_two()).max(64);
        let fft = realfft::RealFftPlanner::<f32>::new().plan_fft_forward(n);
        let window = (0..n)
            .map(|i| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / n as f32).cos())
            .collect();
        let bin = |hz: f32| ((hz * n as f32 / rate as f32).round() as usize).min(n / 2);
        Self {
            spectrum: fft.make_output_vec(),
            input: fft.make_input_vec(),
            fft,
            window,
            recent: std::collections::VecDeque::with_capacity(n),
            power: vec![0.0; n / 2 + 1],
            band: bin(80.0)..bin(4000.0) + 1,
        }
    }

    /// Keeps the most recent samples of the mono stream.
    pub fn push(&mut self, frame: &[f32]) {
        let n = self.window.len();
        if frame.len() >= n {
            self.recent.clear();
            self.recent.extend(&frame[frame.len() - n..]);
            return;
        }
        let excess = (self.recent.len() + frame.len()).saturating_sub(n);
        self.recent.drain(..excess);
        self.recent.extend(frame);
    }

    /// Share of the band's energy outside the strongest few spectral lines of
    /// the recent audio: near 0 for a tone, a few percent or more for voice.
    /// 1.0 until a full window has arrived or when the band is silent.
    pub fn residual(&mut self) -> f64 {
        let n = self.window.len();
        if self.recent.len() < n {
            return 1.0;
        }
        for ((x, s), w) in self.input.iter_mut().zip(&self.recent).zip(&self.window) {
            *x = s * w;
        }
        if self
            .fft
            .process(&mut self.input, &mut self.spectrum)
            .is_err()
        {
            return 1.0;
        }
        for (p, c) in self.power.iter_mut().zip(&self.spectrum) {
            *p = c.norm_sqr();
        }
        let band = &mut self.power[self.band.clone()];
        let total: f64 = band.iter().map(|p| *p as f64).sum();
        if total <= f64::MIN_POSITIVE {
            return 1.0;
        }
        let mut in_peaks = 0.0f64;
        for _ in 0..TONE_PEAKS {
            let Some((i, _)) = band.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)) else {
                break;
            };
            let lobe = i.saturating_sub(PEAK_HALF_WIDTH)..(i + PEAK_HALF_WIDTH + 1).min(band.len());
            in_peaks += band[lobe.clone()].iter().map(|p| *p as f64).sum::<f64>();
            band[lobe].fill(0.0);
        }
        (1.0 - in_peaks / total).max(0.0)
    }
}

/// ONNX Runtime loaded from a shared library once per process (ort's
/// load-dynamic), so the plugin builds without downloading anything.
static ORT_ENV: std::sync::OnceLock<Result<ort::environment::Environment, String>> =
    std::sync::OnceLock::new();

fn ort_environment(library: &str) -> Result<&'static ort::environment::Environment, String> {
    ORT_ENV
        .get_or_init(|| {
            let builder = ort::init_from(library)
                .map_err(|e| format!("cannot load ONNX Runtime from {library}: {e}"))?;
            builder
                .with_name("rtai")
                .build()
                .map_err(|e| format!("ONNX Runtime does not start: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Silero VAD (v5/v6 ONNX) at 16 kHz: 512-sample chunks with 64 samples of
/// context and a recurrent state, one speech probability per 32 ms.
pub struct SileroEngine {
    session: ort::session::Session,
    to16k: To16k,
    context: Vec<f32>,
    state: Vec<f32>,
    last_probability: f32,
}

const SILERO_CHUNK: usize = 512;
const SILERO_CONTEXT: usize = 64;

impl SileroEngine {
    pub fn new(rate: u32, model_path: &str, library: &str) -> Result<Self, String> {
        if model_path.is_empty() {
            return Err("the silero engine needs model-path (silero_vad.onnx from the PyPI silero-vad package)".into());
        }
        let env = ort_environment(library)?;
        let options = |e: &dyn std::fmt::Display| format!("ONNX Runtime session options: {e}");
        // One thread per session: many sessions (streams) share the cores.
        let session = ort::session::Session::builder(env)
            .map_err(|e| options(&e))?
            .with_intra_threads(1)
            .map_err(|e| options(&e))?
            .with_inter_threads(1)
            .map_err(|e| options(&e))?
            .commit_from_file(model_path)
            .map_err(|e| format!("cannot load the Silero model {model_path}: {e}"))?;
        Ok(Self {
            session,
            to16k: To16k::new(rate)?,
            context: vec![0.0; SILERO_CONTEXT],
            state: vec![0.0; 2 * 128],
            last_probability: 0.0,
        })
    }

    fn infer(&mut self, chunk: &[f32]) -> Result<f32, ort::Error> {
        let mut input = Vec::with_capacity(SILERO_CONTEXT + SILERO_CHUNK);
        input.extend_from_slice(&self.context);
        input.extend_from_slice(chunk);
        self.context
            .copy_from_slice(&chunk[SILERO_CHUNK - SILERO_CONTEXT..]);
        let outputs = self.session.run(ort::inputs![
            "input" => ort::value::Tensor::from_array(([1usize, SILERO_CONTEXT + SILERO_CHUNK], input))?,
            "state" => ort::value::Tensor::from_array(([2usize, 1, 128], self.state.clone()))?,
            "sr" => ort::value::Tensor::from_array(([1usize], vec![16000i64]))?,
        ])?;
        let (_, probability) = outputs["output"].try_extract_tensor::<f32>()?;
        let probability = probability.first().copied().unwrap_or(0.0);
        let (_, state) = outputs["stateN"].try_extract_tensor::<f32>()?;
        if state.len() == self.state.len() {
            self.state.copy_from_slice(state);
        }
        Ok(probability)
    }

    /// Speech probability after `frame` (10 ms at the stream's rate); updated every 32 ms.
    pub fn probability(&mut self, frame: &[f32]) -> Result<f32, String> {
        self.to16k.push(frame);
        while self.to16k.queue.len() >= SILERO_CHUNK {
            let chunk: Vec<f32> = self.to16k.queue.drain(..SILERO_CHUNK).collect();
            self.last_probability = self
                .infer(&chunk)
                .map_err(|e| format!("Silero inference failed: {e}"))?;
        }
        Ok(self.last_probability)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, ms: u32, amp: f32) -> Vec<Vec<f32>> {
        let n = rate / 100;
        (0..ms / 10)
            .map(|f| {
                (0..n)
                    .map(|i| {
                        let t = (f * n + i) as f32 / rate as f32;
                        (1..=6)
                            .map(|h| {
                                (2.0 * std::f32::consts::PI * 150.0 * h as f32 * t).sin() / h as f32
                            })
                            .sum::<f32>()
                            * amp
                    })
                    .collect()
            })
            .collect()
    }

    fn frames_of(rate: u32, ms: u32, mut f: impl FnMut(f32) -> f32) -> Vec<Vec<f32>> {
        let n = rate / 100;
        (0..ms / 10)
            .map(|k| {
                (0..n)
                    .map(|i| f((k * n + i) as f32 / rate as f32))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn tone_detector_tells_chords_from_voice_and_noise() {
        use std::f32::consts::PI;
        for rate in [8000, 16000, 22050, 44100, 48000] {
            let residual_after = |frames: Vec<Vec<f32>>| {
                let mut t = ToneDetector::new(rate);
                frames.iter().for_each(|f| t.push(f));
                t.residual()
            };
            let chord = residual_after(frames_of(rate, 100, |t| {
                [220.0, 277.0, 330.0]
                    .iter()
                    .map(|f| (2.0 * PI * f * t).sin())
                    .sum::<f32>()
                    * 0.1
            }));
            assert!(
                chord < 0.005,
                "{rate} Hz: a three-note chord has residual {chord}"
            );
            // A voice-like source: 120 Hz pulse train harmonics, falling 6 dB per octave.
            let voice = residual_after(frames_of(rate, 100, |t| {
                (1..=30)
                    .map(|h| (2.0 * PI * 120.0 * h as f32 * t).sin() / h as f32)
                    .sum::<f32>()
                    * 0.1
            }));
            assert!(
                voice > 0.02,
                "{rate} Hz: a harmonic voice-like source has residual {voice}"
            );
            let mut noise = 1u32;
            let hiss = residual_after(frames_of(rate, 100, |_| {
                noise = noise.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (noise >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            }));
            assert!(hiss > 0.5, "{rate} Hz: noise has residual {hiss}");
        }
        let mut t = ToneDetector::new(16000);
        assert_eq!(t.residual(), 1.0, "no decision before a full window");
        t.push(&vec![0.0; 4000]);
        assert_eq!(t.residual(), 1.0, "silence is not a tone");
    }

    #[test]
    fn energy_engine_follows_the_noise_floor() {
        let mut e = EnergyEngine::default();
        let quiet = vec![0.001f32; 160];
        for _ in 0..50 {
            assert!(!e.is_voiced(&quiet, 9.0));
        }
        assert!(e.is_voiced(&[0.3f32; 160], 9.0));
        assert!(
            !EnergyEngine::default().is_voiced(&[0.00001f32; 160], 0.0),
            "below -60 dBFS is never voice"
        );
    }

    #[test]
    fn webrtc_engine_works_at_native_and_resampled_rates() {
        for rate in [8000, 16000, 22050, 44100, 48000] {
            let mut e = WebRtcEngine::new(rate, 0).unwrap();
            let silence = vec![0f32; (rate / 100) as usize];
            let quiet: Vec<bool> = (0..30).map(|_| e.is_voiced(&silence)).collect();
            assert!(quiet.iter().all(|v| !v), "{rate} Hz: silence is not voice");
            let voiced = tone(rate, 500, 0.3)
                .iter()
                .filter(|f| e.is_voiced(f))
                .count();
            assert!(
                voiced > 25,
                "{rate} Hz: only {voiced}/50 frames of a harmonic tone were voiced"
            );
        }
    }
}
