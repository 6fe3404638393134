//! specvadgate: opens on the first voiced frame (speculatively), forwards the
//! lookback audio before it and live audio at once, and later commits or
//! cancels the segment with the rtai protocol (docs/protocol.md).
//!
//! State machine (docs/specvadgate.md):
//! idle → speculative (start-frames voiced frames) → committed (commit-time of
//! mostly voiced audio) → hangover (silence) → idle after stop-time of silence.
//! A speculative segment that is not mostly voiced at commit-time, or that
//! falls silent for stop-time first, is cancelled.
//!
//! Timeline: every input range (buffer or upstream GAP) leaves exactly once,
//! in order, as a buffer or a GAP event. Idle audio waits in the lookback ring
//! and leaves as idle output (GAP, silence or itself) when it falls out of the
//! ring, or as segment audio when a segment starts; confirmed mode also holds
//! the segment until its commit. The LATENCY query reports that hold.

use std::collections::VecDeque;
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use rtai_core::{SegmentEvent, SegmentIdMeta};

use super::engine::{EnergyEngine, SileroEngine, SileroModel, ToneDetector, WebRtcEngine};
use super::{Engine, IdleOutput, Mode};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "specvadgate",
        gst::DebugColorFlags::empty(),
        Some("Speculative voice activity gate"),
    )
});

const DEFAULT_ENGINE: Engine = Engine::Energy;
const DEFAULT_MODE: Mode = Mode::Speculative;
const DEFAULT_IDLE_OUTPUT: IdleOutput = IdleOutput::Drop;
const DEFAULT_THRESHOLD: f64 = 9.0;
const DEFAULT_LOOKBACK_MS: u32 = 200;
const DEFAULT_START_FRAMES: u32 = 1;
const DEFAULT_COMMIT_TIME_MS: u32 = 250;
const DEFAULT_STOP_TIME_MS: u32 = 500;
const DEFAULT_MIN_VOICED_RATIO: f64 = 0.5;
/// 0: a committed segment lasts as long as the speech.
const DEFAULT_MAX_SPEECH_DURATION_MS: u32 = 0;
/// dBFS a frame needs to count as voiced; the minimum turns the check off.
const DEFAULT_MIN_VOLUME_DB: f64 = -100.0;
/// Analysis frame length; the WebRTC VAD's smallest frame, fine enough for the energy engine.
const FRAME_MS: u64 = 10;
const DEFAULT_WEBRTC_AGGRESSIVENESS: u32 = 2;
/// How far below `silero-threshold` the probability may fall inside a segment.
const SILERO_HYSTERESIS: f64 = 0.15;
const DEFAULT_SILERO_THRESHOLD: f64 = 0.5;
/// Silero engine: how long the probability must stay at or above the threshold
/// before a segment opens (as Silero's own `min_speech_duration_ms`, shorter).
/// Chosen on the tuning and development corpora (tests/corpus), never on the
/// held-out one: 40 and 70 ms still opened on a sawtooth melody with vibrato
/// in the development corpus, 100 ms on nothing (docs/specvadgate.md).
const DEFAULT_SILERO_MIN_SPEECH_MS: u32 = 100;
/// Silero windows of all gates in the process run as one batch.
const DEFAULT_SILERO_SHARED: bool = true;
/// Below this share of energy outside its three strongest spectral lines a
/// frame is a tone. Measured on the corpus: chords and knocks ≤ 0.001, the
/// most tonal onset window of espeak-ng speech 0.017 (docs/specvadgate.md).
const DEFAULT_TONE_THRESHOLD: f64 = 0.005;
/// How long a tone keeps the gate from opening after it: two Silero windows,
/// because a recurrent engine still calls the audio voiced after a knock or a
/// beep has decayed.
const TONE_HOLD: gst::ClockTime = gst::ClockTime::from_mseconds(200);
/// Where ONNX Runtime is loaded from when `onnxruntime-library` and `$ORT_DYLIB_PATH` are unset
/// and no `.venv` with the onnxruntime wheel is found.
const FALLBACK_ONNXRUNTIME_LIBRARY: &str = "libonnxruntime.so";
/// Level reported for digital silence and GAPs.
const SILENT_DB: f64 = -100.0;

#[derive(Debug, Clone)]
struct Settings {
    engine: Engine,
    mode: Mode,
    idle_output: IdleOutput,
    threshold: f64,
    webrtc_aggressiveness: u32,
    silero_threshold: f64,
    silero_min_speech_ms: u32,
    model_path: Option<String>,
    onnxruntime_library: Option<String>,
    lookback_ms: u32,
    start_frames: u32,
    commit_time_ms: u32,
    stop_time_ms: u32,
    min_voiced_ratio: f64,
    tone_threshold: f64,
    max_speech_duration_ms: u32,
    min_volume_db: f64,
    silero_shared: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            engine: DEFAULT_ENGINE,
            mode: DEFAULT_MODE,
            idle_output: DEFAULT_IDLE_OUTPUT,
            threshold: DEFAULT_THRESHOLD,
            webrtc_aggressiveness: DEFAULT_WEBRTC_AGGRESSIVENESS,
            silero_threshold: DEFAULT_SILERO_THRESHOLD,
            silero_min_speech_ms: DEFAULT_SILERO_MIN_SPEECH_MS,
            model_path: None,
            onnxruntime_library: None,
            lookback_ms: DEFAULT_LOOKBACK_MS,
            start_frames: DEFAULT_START_FRAMES,
            commit_time_ms: DEFAULT_COMMIT_TIME_MS,
            stop_time_ms: DEFAULT_STOP_TIME_MS,
            min_voiced_ratio: DEFAULT_MIN_VOICED_RATIO,
            tone_threshold: DEFAULT_TONE_THRESHOLD,
            max_speech_duration_ms: DEFAULT_MAX_SPEECH_DURATION_MS,
            min_volume_db: DEFAULT_MIN_VOLUME_DB,
            silero_shared: DEFAULT_SILERO_SHARED,
        }
    }
}

impl Settings {
    /// Consecutive voiced 10 ms frames that open a segment: `start-frames`, and with
    /// the Silero engine at least `silero-min-speech`.
    fn start_frames(&self) -> u32 {
        let min_speech = match self.engine {
            Engine::Silero => (self.silero_min_speech_ms as u64).div_ceil(FRAME_MS) as u32,
            _ => 0,
        };
        self.start_frames.max(min_speech).max(1)
    }

    /// Media time the gate holds audio back before it leaves (the LATENCY it adds).
    fn latency(&self) -> gst::ClockTime {
        let lookback = gst::ClockTime::from_mseconds(self.lookback_ms as u64);
        match self.mode {
            Mode::Speculative => lookback,
            // The held segment leaves at the commit: lookback + the frames until the
            // start decision + commit-time.
            Mode::Confirmed => {
                lookback
                    + gst::ClockTime::from_mseconds(
                        self.commit_time_ms as u64 + (self.start_frames() as u64 - 1) * FRAME_MS,
                    )
            }
            Mode::Passthrough => gst::ClockTime::ZERO,
        }
    }
}

/// The first of `candidates` that is a file.
fn first_file(candidates: impl IntoIterator<Item = std::path::PathBuf>) -> Option<String> {
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .map(|p| p.to_string_lossy().into_owned())
}

/// `<dir>/.venv/lib/python3*/site-packages/<rel>` for the working directory and its parents:
/// where `scripts/setup.sh` installs the PyPI wheels.
fn venv_candidates(rel: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(cwd) = std::env::current_dir() else {
        return out;
    };
    for dir in cwd.ancestors() {
        let Ok(entries) = std::fs::read_dir(dir.join(".venv/lib")) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with("python3") {
                out.push(entry.path().join("site-packages").join(rel));
            }
        }
    }
    out
}

/// The Silero model: `model-path`, else `$RTAI_SILERO_MODEL`, else the silero-vad wheel in a
/// `.venv` of the working directory or a parent. The error names every place it looked.
fn silero_model(settings: &Settings) -> Result<String, String> {
    if let Some(path) = settings.model_path.clone().filter(|p| !p.is_empty()) {
        return Ok(path);
    }
    let env = std::env::var_os("RTAI_SILERO_MODEL").map(std::path::PathBuf::from);
    let wheels = venv_candidates("silero_vad/data/silero_vad.onnx");
    first_file(env.iter().cloned().chain(wheels.iter().cloned())).ok_or_else(|| {
        let mut looked = vec![match &env {
            Some(p) => format!("$RTAI_SILERO_MODEL={} (not a file)", p.display()),
            None => "$RTAI_SILERO_MODEL (unset)".to_string(),
        }];
        looked.extend(wheels.iter().map(|p| p.display().to_string()));
        if wheels.is_empty() {
            let cwd = std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_else(|_| "the working directory".into());
            looked.push(format!(
                "no .venv/lib/python3*/site-packages in {cwd} or its parents"
            ));
        }
        format!(
            "engine=silero found no silero_vad.onnx (looked at: {}): set model-path or \
             $RTAI_SILERO_MODEL to the file in the PyPI silero-vad wheel (pip install --no-deps \
             silero-vad; it is in site-packages/silero_vad/data/), or run scripts/setup.sh",
            looked.join("; ")
        )
    })
}

/// ONNX Runtime: `onnxruntime-library`, else `$ORT_DYLIB_PATH`, else the onnxruntime wheel in a
/// `.venv` of the working directory or a parent, else `libonnxruntime.so` from the system.
fn onnxruntime_library(settings: &Settings) -> String {
    if let Some(path) = settings
        .onnxruntime_library
        .clone()
        .filter(|p| !p.is_empty())
    {
        return path;
    }
    if let Ok(path) = std::env::var("ORT_DYLIB_PATH")
        && !path.is_empty()
    {
        return path;
    }
    venv_candidates("onnxruntime/capi")
        .into_iter()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flat_map(|entries| entries.flatten())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so."))
        })
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| FALLBACK_ONNXRUNTIME_LIBRARY.into())
}

enum VadEngine {
    Energy(EnergyEngine),
    WebRtc(Box<WebRtcEngine>),
    Silero(Box<SileroEngine>),
}

impl VadEngine {
    fn new(settings: &Settings, rate: u32) -> Result<Self, String> {
        Ok(match settings.engine {
            Engine::Energy => Self::Energy(EnergyEngine::default()),
            Engine::Webrtc => Self::WebRtc(Box::new(WebRtcEngine::new(
                rate,
                settings.webrtc_aggressiveness,
            )?)),
            Engine::Silero => {
                let model = silero_model(settings)?;
                let library = onnxruntime_library(settings);
                Self::Silero(Box::new(SileroEngine::new(
                    rate,
                    &model,
                    &library,
                    settings.silero_shared,
                )?))
            }
        })
    }

    /// Forgets what the engine heard (FLUSH, reset), keeping its model.
    fn reset(&mut self) {
        match self {
            Self::Energy(e) => *e = EnergyEngine::default(),
            Self::WebRtc(e) => e.reset(),
            Self::Silero(e) => e.reset(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Idle {
        voiced_run: u32,
        run_start: Option<gst::ClockTime>,
    },
    Speculative {
        frames: u32,
        voiced: u32,
        silence_run: u32,
    },
    Committed,
    Hangover {
        silence_run: u32,
    },
}

/// What the state machine decided, and the running time at the end of the
/// frame that decided it (`at`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Decision {
    Start {
        first_voiced: gst::ClockTime,
    },
    Commit {
        at: gst::ClockTime,
    },
    Cancel {
        at: gst::ClockTime,
    },
    End {
        last_voiced: gst::ClockTime,
        at: gst::ClockTime,
        /// max-speech-duration split the segment, or an application forced the end.
        forced: bool,
    },
}

/// The deciding frame's speech probability (0–1) and level (dBFS).
#[derive(Debug, Clone, Copy, PartialEq)]
struct FrameVoice {
    probability: f64,
    level_db: f64,
}

impl FrameVoice {
    const SILENT: Self = Self {
        probability: 0.0,
        level_db: SILENT_DB,
    };
}

#[derive(Debug, Default, Clone)]
struct Stats {
    frames: u64,
    starts: u64,
    commits: u64,
    cancels: u64,
    tone_frames: u64,
    decision_total_ns: u64,
    decision_count: u64,
    decision_max_ns: u64,
}

/// One input range: a buffer (with what the analysis saw in it) or an upstream GAP.
#[derive(Debug, Clone)]
enum Chunk {
    Buffer(gst::Buffer, FrameVoice),
    Gap {
        pts: gst::ClockTime,
        duration: Option<gst::ClockTime>,
    },
}

struct State {
    info: gst_audio::AudioInfo,
    segment: gst::FormattedSegment<gst::ClockTime>,
    engine: VadEngine,
    tones: ToneDetector,
    /// No segment opens before this running time: a tone was just heard.
    tone_hold_until: Option<gst::ClockTime>,
    phase: Phase,
    /// Mono downmix waiting to fill a frame, and the PTS of its first sample.
    pending: Vec<f32>,
    pending_pts: Option<gst::ClockTime>,
    /// Idle input not yet sent, oldest first: pushed as the lookback when a
    /// segment starts, as idle output when it falls out of the ring.
    ring: VecDeque<Chunk>,
    ring_samples: u64,
    /// Confirmed mode: the segment's input, held until the commit (or the cancel).
    held: Vec<Chunk>,
    /// High bits of this stream's segment ids (rtai_core::protocol::new_segment_id_base).
    id_base: u64,
    next_seq: u64,
    current_id: u64,
    /// Running time of the open segment's first voiced frame.
    segment_start: gst::ClockTime,
    last_voiced_end: Option<gst::ClockTime>,
    /// Confirmed mode: the start event of the segment being held.
    confirmed_start: Option<SegmentEvent>,
}

impl State {
    fn new(
        info: gst_audio::AudioInfo,
        segment: gst::FormattedSegment<gst::ClockTime>,
        engine: VadEngine,
    ) -> Self {
        Self {
            tones: ToneDetector::new(info.rate()),
            tone_hold_until: None,
            info,
            segment,
            engine,
            phase: Phase::Idle {
                voiced_run: 0,
                run_start: None,
            },
            pending: Vec::new(),
            pending_pts: None,
            ring: VecDeque::new(),
            ring_samples: 0,
            held: Vec::new(),
            id_base: rtai_core::protocol::new_segment_id_base(),
            next_seq: 1,
            current_id: 0,
            segment_start: gst::ClockTime::ZERO,
            last_voiced_end: None,
            confirmed_start: None,
        }
    }

    /// The state after a caps change or a flush: same stream (ids keep rising), new machine.
    fn renewed(&mut self, info: gst_audio::AudioInfo, engine: VadEngine) -> Self {
        let mut next = State::new(info, self.segment.clone(), engine);
        next.id_base = self.id_base;
        next.next_seq = self.next_seq;
        next
    }

    fn new_id(&mut self) -> u64 {
        let id = self.id_base | self.next_seq;
        self.next_seq = if self.next_seq >= u32::MAX as u64 {
            1
        } else {
            self.next_seq + 1
        };
        id
    }

    fn frame_samples(&self) -> usize {
        (self.info.rate() as u64 * FRAME_MS / 1000) as usize
    }

    fn frame_duration(&self) -> gst::ClockTime {
        self.samples_time(self.frame_samples().max(1) as u64)
    }

    fn samples_time(&self, samples: u64) -> gst::ClockTime {
        gst::ClockTime::from_nseconds(
            (samples as u128 * 1_000_000_000 / self.info.rate().max(1) as u128) as u64,
        )
    }

    fn chunk_samples(&self, chunk: &Chunk) -> u64 {
        match chunk {
            Chunk::Buffer(b, _) => b.size() as u64 / self.info.bpf().max(1) as u64,
            Chunk::Gap { duration, .. } => duration.map_or(0, |d| {
                (d.nseconds() as u128 * self.info.rate() as u128 / 1_000_000_000) as u64
            }),
        }
    }

    /// The chunk's duration: its own, else from its sample count.
    fn chunk_duration(&self, chunk: &Chunk) -> Option<gst::ClockTime> {
        match chunk {
            Chunk::Buffer(b, _) => b
                .duration()
                .or_else(|| Some(self.samples_time(self.chunk_samples(chunk)))),
            Chunk::Gap { duration, .. } => *duration,
        }
    }

    fn in_segment(&self) -> bool {
        !matches!(self.phase, Phase::Idle { .. })
    }

    fn running_time(&self, pts: gst::ClockTime) -> gst::ClockTime {
        self.segment.to_running_time(pts).unwrap_or(pts)
    }

    /// Appends the buffer's mono downmix to the analysis frames and runs the
    /// state machine on every complete frame. Returns the decisions with the
    /// deciding frame's voice, and what the whole buffer sounded like.
    fn analyse(
        &mut self,
        buffer: &gst::BufferRef,
        settings: &Settings,
        stats: &mut Stats,
    ) -> Result<(Vec<(Decision, FrameVoice)>, FrameVoice), String> {
        let Ok(map) = buffer.map_readable() else {
            return Ok((Vec::new(), FrameVoice::SILENT));
        };
        let channels = self.info.channels() as usize;
        let buffer_pts = buffer.pts();
        if self.pending.is_empty() {
            self.pending_pts = buffer_pts;
        }
        let first_new = self.pending.len();
        match self.info.format() {
            gst_audio::AudioFormat::S16le => {
                for frame in map.chunks_exact(2 * channels) {
                    let sum: f32 = frame
                        .chunks_exact(2)
                        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
                        .sum();
                    self.pending.push(sum / channels as f32);
                }
            }
            _ => {
                for frame in map.chunks_exact(4 * channels) {
                    let sum: f32 = frame
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .sum();
                    self.pending.push(sum / channels as f32);
                }
            }
        }
        let mut buffer_voice = FrameVoice {
            probability: 0.0,
            level_db: level_db(&self.pending[first_new..]),
        };
        let frame_len = self.frame_samples().max(1);
        let frame_dur = self.frame_duration();
        let mut decisions = Vec::new();
        let mut consumed = 0;
        while self.pending.len() - consumed >= frame_len {
            let frame = &self.pending[consumed..consumed + frame_len];
            self.tones.push(frame);
            let level = level_db(frame);
            let (engine_voiced, probability) = match &mut self.engine {
                VadEngine::Energy(e) => {
                    let v = e.is_voiced(frame, settings.threshold);
                    (v, v as u8 as f64)
                }
                VadEngine::WebRtc(e) => {
                    let v = e.is_voiced(frame);
                    (v, v as u8 as f64)
                }
                VadEngine::Silero(e) => {
                    // Silero's own hysteresis: a segment opens at the threshold and stays
                    // open while the probability is above threshold - 0.15.
                    let threshold = match self.phase {
                        Phase::Idle { .. } => settings.silero_threshold,
                        _ => (settings.silero_threshold - SILERO_HYSTERESIS).max(0.0),
                    };
                    let p = e.probability(frame)? as f64;
                    (p >= threshold, p)
                }
            };
            let engine_voiced = engine_voiced && level >= settings.min_volume_db;
            let frame_pts = self.pending_pts.unwrap_or(gst::ClockTime::ZERO);
            let frame_rt = self.running_time(frame_pts);
            let frame_end = frame_rt.saturating_add(frame_dur);
            // A tone (or what an engine still hears of one) can neither open nor
            // commit a segment; inside committed speech the engine alone decides.
            let undecided = matches!(self.phase, Phase::Idle { .. } | Phase::Speculative { .. });
            let tone = if settings.tone_threshold > 0.0 && undecided {
                let tonal = self.tones.residual() < settings.tone_threshold;
                if tonal {
                    self.tone_hold_until = Some(frame_end.saturating_add(TONE_HOLD));
                }
                let held = matches!(self.phase, Phase::Idle { .. })
                    && self.tone_hold_until.is_some_and(|t| frame_rt < t);
                engine_voiced && (tonal || held)
            } else {
                false
            };
            stats.tone_frames += tone as u64;
            let voiced = engine_voiced && !tone;
            self.pending_pts = Some(frame_pts.saturating_add(frame_dur));
            consumed += frame_len;
            stats.frames += 1;
            buffer_voice.probability = buffer_voice.probability.max(probability);
            if voiced {
                self.last_voiced_end = Some(frame_end);
            }
            let voice = FrameVoice {
                probability,
                level_db: level,
            };
            if let Some(d) = self.step(voiced, frame_rt, frame_end, settings) {
                decisions.push((d, voice));
            }
        }
        self.pending.drain(..consumed);
        Ok((decisions, buffer_voice))
    }

    /// Runs the machine over an upstream GAP: silence, frame by frame.
    fn analyse_gap(
        &mut self,
        pts: gst::ClockTime,
        duration: Option<gst::ClockTime>,
        settings: &Settings,
    ) -> Vec<(Decision, FrameVoice)> {
        // Samples before the GAP and after it are not one frame.
        self.pending.clear();
        self.pending_pts = None;
        let frame_dur = self.frame_duration();
        let frames = duration.map_or(0, |d| d.nseconds() / frame_dur.nseconds().max(1));
        let mut decisions = Vec::new();
        for k in 0..frames {
            let frame_rt = self.running_time(pts.saturating_add(frame_dur * k));
            let frame_end = frame_rt.saturating_add(frame_dur);
            if let Some(d) = self.step(false, frame_rt, frame_end, settings) {
                decisions.push((d, FrameVoice::SILENT));
            }
        }
        decisions
    }

    fn go_idle(&mut self) {
        self.phase = Phase::Idle {
            voiced_run: 0,
            run_start: None,
        };
    }

    fn step(
        &mut self,
        voiced: bool,
        frame_rt: gst::ClockTime,
        frame_end: gst::ClockTime,
        s: &Settings,
    ) -> Option<Decision> {
        let frames_for = |ms: u32| (ms as u64).div_ceil(FRAME_MS).max(1) as u32;
        match self.phase {
            Phase::Idle {
                voiced_run,
                run_start,
            } => {
                if !voiced {
                    self.go_idle();
                    return None;
                }
                let run_start = run_start.unwrap_or(frame_rt);
                let voiced_run = voiced_run + 1;
                if voiced_run >= s.start_frames() {
                    self.phase = Phase::Speculative {
                        frames: voiced_run,
                        voiced: voiced_run,
                        silence_run: 0,
                    };
                    self.segment_start = run_start;
                    return Some(Decision::Start {
                        first_voiced: run_start,
                    });
                }
                self.phase = Phase::Idle {
                    voiced_run,
                    run_start: Some(run_start),
                };
                None
            }
            Phase::Speculative {
                frames,
                voiced: n_voiced,
                silence_run,
            } => {
                let frames = frames + 1;
                let n_voiced = n_voiced + voiced as u32;
                let silence_run = if voiced { 0 } else { silence_run + 1 };
                if silence_run >= frames_for(s.stop_time_ms) {
                    self.go_idle();
                    return Some(Decision::Cancel { at: frame_end });
                }
                if frames >= frames_for(s.commit_time_ms) {
                    if n_voiced as f64 >= s.min_voiced_ratio * frames as f64 {
                        self.phase = if voiced {
                            Phase::Committed
                        } else {
                            Phase::Hangover { silence_run }
                        };
                        return Some(Decision::Commit { at: frame_end });
                    }
                    self.go_idle();
                    return Some(Decision::Cancel { at: frame_end });
                }
                self.phase = Phase::Speculative {
                    frames,
                    voiced: n_voiced,
                    silence_run,
                };
                None
            }
            Phase::Committed | Phase::Hangover { .. } => {
                let silence_run = match (self.phase, voiced) {
                    (_, true) => 0,
                    (Phase::Hangover { silence_run }, false) => silence_run + 1,
                    _ => 1,
                };
                // Split only while speech goes on: in the hangover silence ends it anyway.
                let too_long = voiced
                    && s.max_speech_duration_ms > 0
                    && frame_end.saturating_sub(self.segment_start)
                        >= gst::ClockTime::from_mseconds(s.max_speech_duration_ms as u64);
                if silence_run >= frames_for(s.stop_time_ms) || too_long {
                    self.go_idle();
                    return Some(Decision::End {
                        last_voiced: self.last_voiced_end.unwrap_or(frame_rt).min(frame_end),
                        at: frame_end,
                        forced: too_long && silence_run < frames_for(s.stop_time_ms),
                    });
                }
                self.phase = if silence_run == 0 {
                    Phase::Committed
                } else {
                    Phase::Hangover { silence_run }
                };
                None
            }
        }
    }

    /// Adds idle input to the ring; returns what fell out of it (oldest first).
    fn push_ring(&mut self, chunk: Chunk, lookback_ms: u32) -> Vec<Chunk> {
        self.ring_samples += self.chunk_samples(&chunk);
        self.ring.push_back(chunk);
        let limit = lookback_ms as u64 * self.info.rate() as u64 / 1000;
        let mut out = Vec::new();
        while self.ring_samples > limit
            && let Some(old) = self.ring.pop_front()
        {
            self.ring_samples = self.ring_samples.saturating_sub(self.chunk_samples(&old));
            out.push(old);
        }
        out
    }

    fn take_ring(&mut self) -> Vec<Chunk> {
        self.ring_samples = 0;
        self.ring.drain(..).collect()
    }
}

/// RMS level of `samples` in dBFS (−100 for silence).
fn level_db(samples: &[f32]) -> f64 {
    if samples.is_empty() {
        return SILENT_DB;
    }
    let energy = samples
        .iter()
        .map(|s| (*s as f64) * (*s as f64))
        .sum::<f64>()
        / samples.len() as f64;
    (10.0 * energy.max(1e-10).log10()).max(SILENT_DB)
}

/// What leaves the element, in order, once the state lock is released.
enum Output {
    Event(gst::Event),
    Buffer(gst::Buffer),
    Message(gst::Structure),
}

pub struct SpecVadGate {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    stats: Mutex<Stats>,
    /// The Silero model in use, for `stats` without taking the state lock (held during inference).
    silero_model: Mutex<Option<std::sync::Arc<SileroModel>>>,
}

impl SpecVadGate {
    fn tag(buffer: gst::Buffer, id: u64, voice: FrameVoice) -> gst::Buffer {
        let mut buffer = buffer;
        let b = buffer.make_mut();
        SegmentIdMeta::set(b, id);
        SegmentIdMeta::set_voice(b, voice.probability, voice.level_db);
        buffer
    }

    fn gap_event(pts: gst::ClockTime, duration: Option<gst::ClockTime>) -> gst::Event {
        gst::event::Gap::builder(pts).duration(duration).build()
    }

    /// A chunk as segment audio: the buffer tagged with the segment id, or the GAP.
    fn out_segment(chunk: Chunk, id: u64, out: &mut Vec<Output>) {
        match chunk {
            Chunk::Buffer(b, voice) => out.push(Output::Buffer(Self::tag(b, id, voice))),
            Chunk::Gap { pts, duration } => out.push(Output::Event(Self::gap_event(pts, duration))),
        }
    }

    /// A chunk unchanged (passthrough mode).
    fn out_plain(chunk: Chunk, out: &mut Vec<Output>) {
        match chunk {
            Chunk::Buffer(b, _) => out.push(Output::Buffer(b)),
            Chunk::Gap { pts, duration } => out.push(Output::Event(Self::gap_event(pts, duration))),
        }
    }

    /// A chunk outside any segment, as `idle-output` says.
    fn out_idle(state: &State, chunk: Chunk, idle: IdleOutput, out: &mut Vec<Output>) {
        let duration = state.chunk_duration(&chunk);
        match chunk {
            Chunk::Gap { pts, duration } => out.push(Output::Event(Self::gap_event(pts, duration))),
            Chunk::Buffer(buffer, _) => match idle {
                IdleOutput::Passthrough => out.push(Output::Buffer(buffer)),
                IdleOutput::Silence => {
                    let mut silent = buffer.copy();
                    if let Some(b) = silent.get_mut()
                        && let Ok(mut map) = b.map_writable()
                    {
                        map.fill(0);
                    }
                    out.push(Output::Buffer(silent));
                }
                IdleOutput::Drop => {
                    if let Some(pts) = buffer.pts() {
                        out.push(Output::Event(Self::gap_event(pts, duration)));
                    }
                }
            },
        }
    }

    fn message(
        name: &str,
        id: u64,
        running_time: gst::ClockTime,
        latency_ns: u64,
        voice: FrameVoice,
    ) -> gst::structure::Builder {
        gst::Structure::builder(name)
            .field("segment-id", id)
            .field("running-time", running_time.nseconds())
            .field("decision-latency", latency_ns)
            .field("probability", voice.probability)
            .field("level", voice.level_db)
    }

    fn chain(
        &self,
        _pad: &gst::Pad,
        buffer: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let arrived = Instant::now();
        let settings = self.settings.lock().unwrap().clone();
        let mut outputs = Vec::new();
        {
            let mut state_guard = self.state.lock().unwrap();
            let Some(state) = state_guard.as_mut() else {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Negotiation,
                    ("Received audio before caps"),
                    ["no caps event before the first buffer"]
                );
                return Err(gst::FlowError::NotNegotiated);
            };
            if buffer.flags().contains(gst::BufferFlags::DISCONT) {
                // Samples before and after a discontinuity are not one frame.
                state.pending.clear();
                state.pending_pts = None;
            }
            // Inference runs without the stats lock: `stats` stays readable meanwhile.
            let mut counted = Stats::default();
            let analysed = state.analyse(&buffer, &settings, &mut counted);
            let mut stats = self.stats.lock().unwrap();
            stats.frames += counted.frames;
            stats.tone_frames += counted.tone_frames;
            let (decisions, voice) = match analysed {
                Ok(analysed) => analysed,
                Err(err) => {
                    drop(stats);
                    gst::element_imp_error!(
                        self,
                        gst::LibraryError::Failed,
                        ("Voice activity analysis failed"),
                        ["{err}"]
                    );
                    return Err(gst::FlowError::Error);
                }
            };
            self.apply(
                state,
                &settings,
                &mut stats,
                decisions,
                Some(Chunk::Buffer(buffer, voice)),
                arrived,
                &mut outputs,
            );
        }
        self.emit(outputs)
    }

    /// Turns decisions on `chunk` (the input that produced them) into the ordered outputs.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        state: &mut State,
        s: &Settings,
        stats: &mut Stats,
        decisions: Vec<(Decision, FrameVoice)>,
        mut chunk: Option<Chunk>,
        arrived: Instant,
        out: &mut Vec<Output>,
    ) {
        for (decision, voice) in decisions {
            gst::debug!(
                CAT,
                imp = self,
                "{decision:?} (segment {})",
                state.current_id
            );
            let latency = arrived.elapsed().as_nanos() as u64;
            stats.decision_count += 1;
            stats.decision_total_ns += latency;
            stats.decision_max_ns = stats.decision_max_ns.max(latency);
            match decision {
                Decision::Start { first_voiced } => {
                    stats.starts += 1;
                    let id = state.new_id();
                    state.current_id = id;
                    let first = state
                        .ring
                        .front()
                        .and_then(|c| match c {
                            Chunk::Buffer(b, _) => b.pts(),
                            Chunk::Gap { pts, .. } => Some(*pts),
                        })
                        .map(|pts| state.running_time(pts))
                        .unwrap_or(first_voiced)
                        .min(first_voiced);
                    out.push(Output::Message(
                        Self::message("speech-start", id, first_voiced, latency, voice).build(),
                    ));
                    let ring = state.take_ring();
                    let start = SegmentEvent::Start {
                        id,
                        running_time: first,
                        lookback: first_voiced.saturating_sub(first),
                    };
                    match s.mode {
                        Mode::Speculative => {
                            out.push(Output::Event(start.to_event()));
                            for c in ring.into_iter().chain(chunk.take()) {
                                Self::out_segment(c, id, out);
                            }
                        }
                        Mode::Confirmed => {
                            // The start event goes out at the commit, before the held audio.
                            state.held = ring.into_iter().chain(chunk.take()).collect();
                            state.confirmed_start = Some(start);
                        }
                        // Passthrough mode already forwarded the ring; it reports only.
                        Mode::Passthrough => {}
                    }
                }
                Decision::Commit { at } => {
                    stats.commits += 1;
                    let id = state.current_id;
                    out.push(Output::Message(
                        Self::message("speech-commit", id, at, latency, voice).build(),
                    ));
                    if s.mode == Mode::Confirmed {
                        if let Some(start) = state.confirmed_start.take() {
                            out.push(Output::Event(start.to_event()));
                        }
                        for c in std::mem::take(&mut state.held) {
                            Self::out_segment(c, id, out);
                        }
                    }
                    if s.mode != Mode::Passthrough {
                        out.push(Output::Event(SegmentEvent::Commit { id }.to_event()));
                    }
                }
                Decision::Cancel { at } => {
                    stats.cancels += 1;
                    let id = state.current_id;
                    out.push(Output::Message(
                        Self::message("speech-cancel", id, at, latency, voice).build(),
                    ));
                    if s.mode == Mode::Speculative {
                        out.push(Output::Event(
                            SegmentEvent::Cancel {
                                id,
                                reason: "not enough voiced audio to commit".into(),
                            }
                            .to_event(),
                        ));
                    }
                    // Confirmed mode: the held audio was never sent; it leaves as idle output.
                    for c in std::mem::take(&mut state.held) {
                        Self::out_idle(state, c, s.idle_output, out);
                    }
                    state.confirmed_start = None;
                }
                Decision::End {
                    last_voiced,
                    at,
                    forced,
                } => {
                    let id = state.current_id;
                    if let Some(c) = chunk.take() {
                        if s.mode == Mode::Passthrough {
                            Self::out_plain(c, out);
                        } else {
                            Self::out_segment(c, id, out);
                        }
                    }
                    let duration = last_voiced.saturating_sub(state.segment_start);
                    out.push(Output::Message(
                        Self::message("speech-end", id, last_voiced, latency, voice)
                            .field("duration", duration.nseconds())
                            .field("decided-at", at.nseconds())
                            .field("forced", forced)
                            .build(),
                    ));
                    if s.mode != Mode::Passthrough {
                        out.push(Output::Event(SegmentEvent::End { id }.to_event()));
                    }
                }
            }
        }
        let Some(chunk) = chunk else { return };
        if state.in_segment() {
            let id = state.current_id;
            match s.mode {
                Mode::Speculative => Self::out_segment(chunk, id, out),
                Mode::Confirmed => {
                    if state.confirmed_start.is_some() {
                        state.held.push(chunk);
                    } else {
                        Self::out_segment(chunk, id, out);
                    }
                }
                Mode::Passthrough => Self::out_plain(chunk, out),
            }
        } else if s.mode == Mode::Passthrough {
            // Everything leaves at once; the ring only dates the lookback of a start.
            Self::out_plain(chunk.clone(), out);
            let _ = state.push_ring(chunk, s.lookback_ms);
        } else {
            for old in state.push_ring(chunk, s.lookback_ms) {
                Self::out_idle(state, old, s.idle_output, out);
            }
        }
    }

    fn emit(&self, outputs: Vec<Output>) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut flow = Ok(gst::FlowSuccess::Ok);
        for output in outputs {
            match output {
                Output::Event(event) => {
                    self.srcpad.push_event(event);
                }
                Output::Buffer(buffer) => {
                    flow = Ok(self.srcpad.push(buffer)?);
                }
                Output::Message(s) => {
                    let _ = self
                        .obj()
                        .post_message(gst::message::Element::builder(s).src(&*self.obj()).build());
                }
            }
        }
        flow
    }

    /// Closes an open segment (commit-worthy or not): at EOS, a caps change, or
    /// when the application forces it. With `flush_ring` the idle audio still in
    /// the lookback ring leaves too (nothing may stay behind at EOS).
    fn close_segment(&self, flush_ring: bool, forced: bool) -> Vec<Output> {
        let settings = self.settings.lock().unwrap().clone();
        let mut outputs = Vec::new();
        let mut state_guard = self.state.lock().unwrap();
        let Some(state) = state_guard.as_mut() else {
            return outputs;
        };
        let last = state.last_voiced_end.unwrap_or(gst::ClockTime::ZERO);
        let at = state
            .pending_pts
            .map(|p| state.running_time(p))
            .unwrap_or(last)
            .max(last);
        let end = Decision::End {
            last_voiced: last,
            at,
            forced,
        };
        let decisions = match state.phase {
            Phase::Speculative { frames, voiced, .. } => {
                if frames > 0 && voiced as f64 >= settings.min_voiced_ratio * frames as f64 {
                    vec![Decision::Commit { at }, end]
                } else {
                    vec![Decision::Cancel { at }]
                }
            }
            Phase::Committed | Phase::Hangover { .. } => vec![end],
            Phase::Idle { .. } => vec![],
        };
        state.go_idle();
        let mut stats = self.stats.lock().unwrap();
        self.apply(
            state,
            &settings,
            &mut stats,
            decisions
                .into_iter()
                .map(|d| (d, FrameVoice::SILENT))
                .collect(),
            None,
            Instant::now(),
            &mut outputs,
        );
        if flush_ring {
            for c in state.take_ring() {
                if settings.mode != Mode::Passthrough {
                    Self::out_idle(state, c, settings.idle_output, &mut outputs);
                }
            }
        }
        outputs
    }

    /// An upstream GAP (e.g. Opus DTX): silence for the state machine, forwarded in place.
    fn gap(&self, pts: gst::ClockTime, duration: Option<gst::ClockTime>) -> Option<Vec<Output>> {
        let arrived = Instant::now();
        let settings = self.settings.lock().unwrap().clone();
        let mut state_guard = self.state.lock().unwrap();
        let state = state_guard.as_mut()?;
        let decisions = state.analyse_gap(pts, duration, &settings);
        let mut outputs = Vec::new();
        let mut stats = self.stats.lock().unwrap();
        self.apply(
            state,
            &settings,
            &mut stats,
            decisions,
            Some(Chunk::Gap { pts, duration }),
            arrived,
            &mut outputs,
        );
        Some(outputs)
    }

    /// Action signal `force-end`: ends the open segment now (committed and ended if it
    /// qualifies, else cancelled). Serialized with the stream.
    fn force_end(&self) {
        let _stream = self.sinkpad.stream_lock();
        let outputs = self.close_segment(false, true);
        let _ = self.emit(outputs);
    }

    /// Action signal `reset`: ends the open segment like `force-end`, then forgets what the
    /// engine, the tone detector and the noise floor heard (a new speaker, a new call).
    fn reset(&self) {
        let _stream = self.sinkpad.stream_lock();
        let outputs = self.close_segment(false, true);
        if let Some(state) = self.state.lock().unwrap().as_mut() {
            state.engine.reset();
            state.tones = ToneDetector::new(state.info.rate());
            state.tone_hold_until = None;
            state.pending.clear();
            state.pending_pts = None;
            state.last_voiced_end = None;
        }
        let _ = self.emit(outputs);
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        use gst::EventView;
        match event.view() {
            EventView::Caps(c) => {
                let info = match gst_audio::AudioInfo::from_caps(c.caps()) {
                    Ok(info)
                        if matches!(
                            info.format(),
                            gst_audio::AudioFormat::S16le | gst_audio::AudioFormat::F32le
                        ) && (8000..=48000).contains(&info.rate())
                            && info.channels() > 0 =>
                    {
                        info
                    }
                    _ => {
                        gst::element_imp_error!(
                            self,
                            gst::StreamError::Format,
                            ("Unsupported audio caps {}", c.caps()),
                            ["specvadgate needs interleaved S16LE or F32LE audio at 8000–48000 Hz"]
                        );
                        return false;
                    }
                };
                if self
                    .state
                    .lock()
                    .unwrap()
                    .as_ref()
                    .is_some_and(|s| s.info == info)
                {
                    // The same format again (a renegotiation that changed nothing): the
                    // segment and the engine carry on.
                    return self.srcpad.push_event(event);
                }
                let settings = self.settings.lock().unwrap().clone();
                let engine = match VadEngine::new(&settings, info.rate()) {
                    Ok(engine) => engine,
                    Err(err) => {
                        gst::element_imp_error!(
                            self,
                            gst::LibraryError::Init,
                            ("Cannot start the {:?} engine", settings.engine),
                            ["{err}"]
                        );
                        return false;
                    }
                };
                *self.silero_model.lock().unwrap() = match &engine {
                    VadEngine::Silero(e) => Some(e.model()),
                    _ => None,
                };
                // Audio of the old format leaves under the old caps.
                let outputs = self.close_segment(true, false);
                let _ = self.emit(outputs);
                let mut state = self.state.lock().unwrap();
                let next = match state.as_mut() {
                    Some(old) => old.renewed(info, engine),
                    None => State::new(info, gst::FormattedSegment::new(), engine),
                };
                *state = Some(next);
                drop(state);
                self.srcpad.push_event(event)
            }
            EventView::Segment(seg) => {
                if let Ok(segment) = seg.segment().clone().downcast::<gst::ClockTime>()
                    && let Some(state) = self.state.lock().unwrap().as_mut()
                {
                    state.segment = segment;
                }
                gst::Pad::event_default(pad, Some(&*self.obj()), event)
            }
            EventView::Gap(g) => {
                let (pts, duration) = g.get();
                match self.gap(pts, duration) {
                    Some(outputs) => {
                        let _ = self.emit(outputs);
                        true
                    }
                    None => self.srcpad.push_event(event),
                }
            }
            EventView::Eos(_) => {
                let outputs = self.close_segment(true, false);
                let _ = self.emit(outputs);
                gst::Pad::event_default(pad, Some(&*self.obj()), event)
            }
            EventView::FlushStop(_) => {
                if let Some(state) = self.state.lock().unwrap().as_mut() {
                    // Same model, fresh memory: nothing is reloaded from disk.
                    let mut engine = std::mem::replace(
                        &mut state.engine,
                        VadEngine::Energy(EnergyEngine::default()),
                    );
                    engine.reset();
                    let info = state.info.clone();
                    *state = state.renewed(info, engine);
                }
                gst::Pad::event_default(pad, Some(&*self.obj()), event)
            }
            _ => gst::Pad::event_default(pad, Some(&*self.obj()), event),
        }
    }

    fn src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        match query.view_mut() {
            gst::QueryViewMut::Latency(q) => {
                let mut upstream = gst::query::Latency::new();
                if !self.sinkpad.peer_query(&mut upstream) {
                    return false;
                }
                let (live, min, max) = upstream.result();
                let ours = self.settings.lock().unwrap().latency();
                q.set(
                    live,
                    min.saturating_add(ours),
                    max.map(|m| m.saturating_add(ours)),
                );
                true
            }
            _ => gst::Pad::query_default(pad, Some(&*self.obj()), query),
        }
    }

    fn stats_structure(&self) -> gst::Structure {
        let (batches, windows) = self
            .silero_model
            .lock()
            .unwrap()
            .as_ref()
            .map_or((0, 0), |m| m.counters());
        let s = self.stats.lock().unwrap().clone();
        let acceptance = if s.starts > 0 {
            s.commits as f64 / s.starts as f64
        } else {
            0.0
        };
        let mean = s
            .decision_total_ns
            .checked_div(s.decision_count)
            .unwrap_or(0);
        gst::Structure::builder("specvadgate-stats")
            .field("frames-analysed", s.frames)
            .field("speculative-starts", s.starts)
            .field("commits", s.commits)
            .field("cancels", s.cancels)
            .field("tone-frames", s.tone_frames)
            .field("acceptance-rate", acceptance)
            .field("mean-decision-time", mean)
            .field("max-decision-time", s.decision_max_ns)
            .field("silero-batches", batches)
            .field("silero-windows", windows)
            .build()
    }
}

#[glib::object_subclass]
impl ObjectSubclass for SpecVadGate {
    const NAME: &'static str = "GstSpecVadGate";
    type Type = super::SpecVadGate;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let sinkpad = gst::Pad::builder_from_template(&klass.pad_template("sink").unwrap())
            .chain_function(|pad, parent, buffer| {
                SpecVadGate::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |gate| gate.chain(pad, buffer),
                )
            })
            .event_function(|pad, parent, event| {
                SpecVadGate::catch_panic_pad_function(
                    parent,
                    || false,
                    |gate| gate.sink_event(pad, event),
                )
            })
            .flags(gst::PadFlags::PROXY_CAPS | gst::PadFlags::PROXY_ALLOCATION)
            .build();
        let srcpad = gst::Pad::builder_from_template(&klass.pad_template("src").unwrap())
            .query_function(|pad, parent, query| {
                SpecVadGate::catch_panic_pad_function(
                    parent,
                    || false,
                    |gate| gate.src_query(pad, query),
                )
            })
            .flags(gst::PadFlags::PROXY_CAPS | gst::PadFlags::PROXY_ALLOCATION)
            .build();
        Self {
            sinkpad,
            srcpad,
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(None),
            stats: Mutex::new(Stats::default()),
            silero_model: Mutex::new(None),
        }
    }
}

impl ObjectImpl for SpecVadGate {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecEnum::builder_with_default("engine", DEFAULT_ENGINE)
                    .nick("Engine")
                    .blurb("Voice activity detector that classifies each 10 ms analysis frame")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("mode", DEFAULT_MODE)
                    .nick("Mode")
                    .blurb("When speech is forwarded: at once (speculative), after commit (confirmed), or always (passthrough)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("idle-output", DEFAULT_IDLE_OUTPUT)
                    .nick("Idle output")
                    .blurb("What happens to audio outside speech segments")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("threshold")
                    .nick("Threshold")
                    .blurb("Energy engine: dB a frame must exceed the adaptive noise floor by to count as voiced")
                    .minimum(0.0)
                    .maximum(60.0)
                    .default_value(DEFAULT_THRESHOLD)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("webrtc-aggressiveness")
                    .nick("WebRTC aggressiveness")
                    .blurb("WebRTC engine: 0 keeps the most speech, 3 passes the fewest non-speech frames")
                    .maximum(3)
                    .default_value(DEFAULT_WEBRTC_AGGRESSIVENESS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("silero-threshold")
                    .nick("Silero threshold")
                    .blurb("Silero engine: speech probability at or above which a frame counts as voiced")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_SILERO_THRESHOLD)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("silero-min-speech")
                    .nick("Silero minimum speech")
                    .blurb("Silero engine: milliseconds the speech probability must stay at or above silero-threshold before a segment opens (at least start-frames; 0: the first voiced window opens it). The segment still starts at the first voiced sample, with the lookback; the start decision comes this much later")
                    .maximum(1000)
                    .default_value(DEFAULT_SILERO_MIN_SPEECH_MS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("silero-shared")
                    .nick("Silero shared")
                    .blurb("Silero engine: run this stream's 32 ms windows in one batched inference with those of every other gate of the process using the same model (one model in memory); false: a model session of its own")
                    .default_value(DEFAULT_SILERO_SHARED)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("model-path")
                    .nick("Model path")
                    .blurb("Silero engine: the silero_vad.onnx file (v5 or v6; in the PyPI silero-vad wheel); unset: $RTAI_SILERO_MODEL, else site-packages/silero_vad/data/silero_vad.onnx of a .venv in the working directory or a parent")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("onnxruntime-library")
                    .nick("ONNX Runtime library")
                    .blurb("Silero engine: libonnxruntime.so to load (e.g. from the PyPI onnxruntime wheel); unset: $ORT_DYLIB_PATH, else the onnxruntime wheel in a .venv of the working directory or a parent, else libonnxruntime.so")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("lookback")
                    .nick("Lookback")
                    .blurb("Milliseconds of audio before the first voiced frame that are forwarded with a segment")
                    .maximum(2000)
                    .default_value(DEFAULT_LOOKBACK_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("start-frames")
                    .nick("Start frames")
                    .blurb("Consecutive voiced 10 ms frames that open a speculative segment")
                    .minimum(1)
                    .maximum(50)
                    .default_value(DEFAULT_START_FRAMES)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("commit-time")
                    .nick("Commit time")
                    .blurb("Milliseconds of mostly voiced audio after which a speculative segment is committed (else cancelled)")
                    .maximum(5000)
                    .default_value(DEFAULT_COMMIT_TIME_MS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("stop-time")
                    .nick("Stop time")
                    .blurb("Milliseconds of silence that end a committed segment or cancel a speculative one")
                    .maximum(10000)
                    .default_value(DEFAULT_STOP_TIME_MS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("min-voiced-ratio")
                    .nick("Minimum voiced ratio")
                    .blurb("Share of voiced frames a speculative segment needs at commit-time to be committed")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_MIN_VOICED_RATIO)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("tone-threshold")
                    .nick("Tone threshold")
                    .blurb("A voiced frame whose 80-4000 Hz energy lies less than this share outside its three strongest spectral lines is a tone (beep, chord, knock) and can neither open nor commit a segment; 0 turns tone rejection off")
                    .minimum(0.0)
                    .maximum(0.5)
                    .default_value(DEFAULT_TONE_THRESHOLD)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("max-speech-duration")
                    .nick("Max speech duration")
                    .blurb("Milliseconds after which a committed segment ends even while speech goes on (the speech continues in a new segment); 0 = no limit")
                    .maximum(3_600_000)
                    .default_value(DEFAULT_MAX_SPEECH_DURATION_MS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("min-volume")
                    .nick("Minimum volume")
                    .blurb("dBFS (RMS of a 10 ms frame) below which a frame never counts as voiced, whatever the engine says; -100 = no limit")
                    .minimum(SILENT_DB)
                    .maximum(0.0)
                    .default_value(DEFAULT_MIN_VOLUME_DB)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("Counters: frames-analysed, speculative-starts, commits, cancels, tone-frames (voiced frames rejected as tones), acceptance-rate, mean/max-decision-time (ns), silero-batches/silero-windows (of this gate's Silero model, all its gates)")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn signals() -> &'static [glib::subclass::Signal] {
        static SIGNALS: LazyLock<Vec<glib::subclass::Signal>> = LazyLock::new(|| {
            vec![
                // End the open segment now (committed and ended if it qualifies, else cancelled).
                glib::subclass::Signal::builder("force-end")
                    .action()
                    .class_handler(|args| {
                        let gate = args[0].get::<super::SpecVadGate>().expect("signal arg");
                        gate.imp().force_end();
                        None
                    })
                    .build(),
                // force-end, then forget what the engine heard (a new speaker or call).
                glib::subclass::Signal::builder("reset")
                    .action()
                    .class_handler(|args| {
                        let gate = args[0].get::<super::SpecVadGate>().expect("signal arg");
                        gate.imp().reset();
                        None
                    })
                    .build(),
            ]
        });
        SIGNALS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = self.settings.lock().unwrap();
        match pspec.name() {
            "engine" => settings.engine = value.get().expect("type checked upstream"),
            "mode" => settings.mode = value.get().expect("type checked upstream"),
            "idle-output" => settings.idle_output = value.get().expect("type checked upstream"),
            "threshold" => settings.threshold = value.get().expect("type checked upstream"),
            "webrtc-aggressiveness" => {
                settings.webrtc_aggressiveness = value.get().expect("type checked upstream")
            }
            "silero-threshold" => {
                settings.silero_threshold = value.get().expect("type checked upstream")
            }
            "silero-min-speech" => {
                settings.silero_min_speech_ms = value.get().expect("type checked upstream")
            }
            "model-path" => settings.model_path = value.get().expect("type checked upstream"),
            "onnxruntime-library" => {
                settings.onnxruntime_library = value.get().expect("type checked upstream")
            }
            "lookback" => settings.lookback_ms = value.get().expect("type checked upstream"),
            "start-frames" => settings.start_frames = value.get().expect("type checked upstream"),
            "commit-time" => settings.commit_time_ms = value.get().expect("type checked upstream"),
            "stop-time" => settings.stop_time_ms = value.get().expect("type checked upstream"),
            "min-voiced-ratio" => {
                settings.min_voiced_ratio = value.get().expect("type checked upstream")
            }
            "tone-threshold" => {
                settings.tone_threshold = value.get().expect("type checked upstream")
            }
            "max-speech-duration" => {
                settings.max_speech_duration_ms = value.get().expect("type checked upstream")
            }
            "min-volume" => settings.min_volume_db = value.get().expect("type checked upstream"),
            "silero-shared" => settings.silero_shared = value.get().expect("type checked upstream"),
            other => unimplemented!("property {other}"),
        }
        drop(settings);
        if matches!(
            pspec.name(),
            "commit-time" | "start-frames" | "silero-min-speech"
        ) {
            // Confirmed mode holds commit-time of audio (and the frames until the start
            // decision): the pipeline's latency changes.
            let _ = self
                .obj()
                .post_message(gst::message::Latency::builder().src(&*self.obj()).build());
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = self.settings.lock().unwrap();
        match pspec.name() {
            "engine" => settings.engine.to_value(),
            "mode" => settings.mode.to_value(),
            "idle-output" => settings.idle_output.to_value(),
            "threshold" => settings.threshold.to_value(),
            "webrtc-aggressiveness" => settings.webrtc_aggressiveness.to_value(),
            "silero-threshold" => settings.silero_threshold.to_value(),
            "silero-min-speech" => settings.silero_min_speech_ms.to_value(),
            "model-path" => settings.model_path.to_value(),
            "onnxruntime-library" => settings.onnxruntime_library.to_value(),
            "lookback" => settings.lookback_ms.to_value(),
            "start-frames" => settings.start_frames.to_value(),
            "commit-time" => settings.commit_time_ms.to_value(),
            "stop-time" => settings.stop_time_ms.to_value(),
            "min-voiced-ratio" => settings.min_voiced_ratio.to_value(),
            "tone-threshold" => settings.tone_threshold.to_value(),
            "max-speech-duration" => settings.max_speech_duration_ms.to_value(),
            "min-volume" => settings.min_volume_db.to_value(),
            "silero-shared" => settings.silero_shared.to_value(),
            "stats" => {
                drop(settings);
                self.stats_structure().to_value()
            }
            other => unimplemented!("property {other}"),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add_pad(&self.sinkpad).unwrap();
        obj.add_pad(&self.srcpad).unwrap();
    }
}

impl GstObjectImpl for SpecVadGate {}

impl ElementImpl for SpecVadGate {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Speculative voice activity gate",
                "Filter/Audio",
                "Forwards speech from its first voiced frame (with lookback audio), then commits it or retracts it with a cancel event",
                "rtai contributors",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst_audio::AudioCapsBuilder::new_interleaved()
                .format_list([gst_audio::AudioFormat::S16le, gst_audio::AudioFormat::F32le])
                .rate_range(8000..=48000)
                .build();
            vec![
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &caps,
                )
                .unwrap(),
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &caps,
                )
                .unwrap(),
            ]
        });
        TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::ReadyToPaused {
            *self.stats.lock().unwrap() = Stats::default();
        }
        let ret = self.parent_change_state(transition)?;
        if transition == gst::StateChange::PausedToReady {
            *self.state.lock().unwrap() = None;
            *self.silero_model.lock().unwrap() = None;
        }
        Ok(ret)
    }
}
