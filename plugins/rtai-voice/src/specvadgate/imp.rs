//! specvadgate: opens on the first voiced frame (speculatively), forwards the
//! lookback audio before it and live audio at once, and later commits or
//! cancels the segment with the rtai protocol (docs/protocol.md).
//!
//! State machine (docs/specvadgate.md):
//! idle → speculative (start-frames voiced frames) → committed (commit-time of
//! mostly voiced audio) → hangover (silence) → idle after stop-time of silence.
//! A speculative segment that is not mostly voiced at commit-time, or that
//! falls silent for stop-time first, is cancelled.

use std::collections::VecDeque;
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use rtai_core::{SegmentEvent, SegmentIdMeta};

use super::engine::{EnergyEngine, SileroEngine, ToneDetector, WebRtcEngine};
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
/// Analysis frame length; the WebRTC VAD's smallest frame, fine enough for the energy engine.
const FRAME_MS: u64 = 10;
const DEFAULT_WEBRTC_AGGRESSIVENESS: u32 = 2;
/// How far below `silero-threshold` the probability may fall inside a segment.
const SILERO_HYSTERESIS: f64 = 0.15;
const DEFAULT_SILERO_THRESHOLD: f64 = 0.5;
/// Below this share of energy outside its three strongest spectral lines a
/// frame is a tone. Measured on the corpus: chords and knocks ≤ 0.001, the
/// most tonal onset window of espeak-ng speech 0.017 (docs/specvadgate.md).
const DEFAULT_TONE_THRESHOLD: f64 = 0.005;
/// How long a tone keeps the gate from opening after it: two Silero windows,
/// because a recurrent engine still calls the audio voiced after a knock or a
/// beep has decayed.
const TONE_HOLD: gst::ClockTime = gst::ClockTime::from_mseconds(200);
/// Where ONNX Runtime is loaded from when `onnxruntime-library` is unset (after `$ORT_DYLIB_PATH`).
const FALLBACK_ONNXRUNTIME_LIBRARY: &str = "libonnxruntime.so";

#[derive(Debug, Clone)]
struct Settings {
    engine: Engine,
    mode: Mode,
    idle_output: IdleOutput,
    threshold: f64,
    webrtc_aggressiveness: u32,
    silero_threshold: f64,
    model_path: Option<String>,
    onnxruntime_library: Option<String>,
    lookback_ms: u32,
    start_frames: u32,
    commit_time_ms: u32,
    stop_time_ms: u32,
    min_voiced_ratio: f64,
    tone_threshold: f64,
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
            model_path: None,
            onnxruntime_library: None,
            lookback_ms: DEFAULT_LOOKBACK_MS,
            start_frames: DEFAULT_START_FRAMES,
            commit_time_ms: DEFAULT_COMMIT_TIME_MS,
            stop_time_ms: DEFAULT_STOP_TIME_MS,
            min_voiced_ratio: DEFAULT_MIN_VOICED_RATIO,
            tone_threshold: DEFAULT_TONE_THRESHOLD,
        }
    }
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
                let library = settings
                    .onnxruntime_library
                    .clone()
                    .or_else(|| std::env::var("ORT_DYLIB_PATH").ok())
                    .unwrap_or_else(|| FALLBACK_ONNXRUNTIME_LIBRARY.into());
                let model = settings.model_path.clone().unwrap_or_default();
                Self::Silero(Box::new(SileroEngine::new(rate, &model, &library)?))
            }
        })
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

#[derive(Debug, Clone, Copy, PartialEq)]
enum Decision {
    Start { first_voiced: gst::ClockTime },
    Commit,
    Cancel,
    End { last_voiced: gst::ClockTime },
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
    /// Recent idle buffers, pushed first when a segment starts.
    lookback: VecDeque<gst::Buffer>,
    /// Segment buffers held back in confirmed mode until the commit.
    held: Vec<gst::Buffer>,
    next_id: u64,
    current_id: u64,
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
            lookback: VecDeque::new(),
            held: Vec::new(),
            next_id: 1,
            current_id: 0,
            last_voiced_end: None,
            confirmed_start: None,
        }
    }

    fn frame_samples(&self) -> usize {
        (self.info.rate() as u64 * FRAME_MS / 1000) as usize
    }

    fn in_segment(&self) -> bool {
        !matches!(self.phase, Phase::Idle { .. })
    }

    fn running_time(&self, pts: gst::ClockTime) -> gst::ClockTime {
        self.segment.to_running_time(pts).unwrap_or(pts)
    }

    /// Appends the buffer's mono downmix to the analysis frames and runs the
    /// state machine on every complete frame.
    fn analyse(
        &mut self,
        buffer: &gst::BufferRef,
        settings: &Settings,
        stats: &mut Stats,
    ) -> Result<Vec<Decision>, String> {
        let Ok(map) = buffer.map_readable() else {
            return Ok(Vec::new());
        };
        let channels = self.info.channels() as usize;
        let rate = self.info.rate() as u64;
        let buffer_pts = buffer.pts();
        if self.pending.is_empty() {
            self.pending_pts = buffer_pts;
        }
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
        let frame_len = self.frame_samples().max(1);
        let frame_dur = gst::ClockTime::from_nseconds(frame_len as u64 * 1_000_000_000 / rate);
        let mut decisions = Vec::new();
        let mut consumed = 0;
        while self.pending.len() - consumed >= frame_len {
            let frame = &self.pending[consumed..consumed + frame_len];
            self.tones.push(frame);
            let engine_voiced = match &mut self.engine {
                VadEngine::Energy(e) => e.is_voiced(frame, settings.threshold),
                VadEngine::WebRtc(e) => e.is_voiced(frame),
                VadEngine::Silero(e) => {
                    // Silero's own hysteresis: a segment opens at the threshold and stays
                    // open while the probability is above threshold - 0.15.
                    let threshold = match self.phase {
                        Phase::Idle { .. } => settings.silero_threshold,
                        _ => (settings.silero_threshold - SILERO_HYSTERESIS).max(0.0),
                    };
                    e.probability(frame)? as f64 >= threshold
                }
            };
            let frame_pts = self.pending_pts.unwrap_or(gst::ClockTime::ZERO);
            let frame_rt = self.running_time(frame_pts);
            // A tone (or what an engine still hears of one) can neither open nor
            // commit a segment; inside committed speech the engine alone decides.
            let undecided = matches!(self.phase, Phase::Idle { .. } | Phase::Speculative { .. });
            let tone = if settings.tone_threshold > 0.0 && undecided {
                let tonal = self.tones.residual() < settings.tone_threshold;
                if tonal {
                    self.tone_hold_until = Some(frame_rt + frame_dur + TONE_HOLD);
                }
                let held = matches!(self.phase, Phase::Idle { .. })
                    && self.tone_hold_until.is_some_and(|t| frame_rt < t);
                engine_voiced && (tonal || held)
            } else {
                false
            };
            stats.tone_frames += tone as u64;
            let voiced = engine_voiced && !tone;
            self.pending_pts = Some(frame_pts + frame_dur);
            consumed += frame_len;
            stats.frames += 1;
            if voiced {
                self.last_voiced_end = Some(frame_rt + frame_dur);
            }
            if let Some(d) = self.step(voiced, frame_rt, settings) {
                decisions.push(d);
            }
        }
        self.pending.drain(..consumed);
        Ok(decisions)
    }

    fn step(&mut self, voiced: bool, frame_rt: gst::ClockTime, s: &Settings) -> Option<Decision> {
        let frames_for = |ms: u32| (ms as u64).div_ceil(FRAME_MS).max(1) as u32;
        match self.phase {
            Phase::Idle {
                voiced_run,
                run_start,
            } => {
                if !voiced {
                    self.phase = Phase::Idle {
                        voiced_run: 0,
                        run_start: None,
                    };
                    return None;
                }
                let run_start = run_start.unwrap_or(frame_rt);
                let voiced_run = voiced_run + 1;
                if voiced_run >= s.start_frames {
                    self.phase = Phase::Speculative {
                        frames: voiced_run,
                        voiced: voiced_run,
                        silence_run: 0,
                    };
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
                    self.phase = Phase::Idle {
                        voiced_run: 0,
                        run_start: None,
                    };
                    return Some(Decision::Cancel);
                }
                if frames >= frames_for(s.commit_time_ms) {
                    if n_voiced as f64 >= s.min_voiced_ratio * frames as f64 {
                        self.phase = if voiced {
                            Phase::Committed
                        } else {
                            Phase::Hangover { silence_run }
                        };
                        return Some(Decision::Commit);
                    }
                    self.phase = Phase::Idle {
                        voiced_run: 0,
                        run_start: None,
                    };
                    return Some(Decision::Cancel);
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
                if silence_run >= frames_for(s.stop_time_ms) {
                    self.phase = Phase::Idle {
                        voiced_run: 0,
                        run_start: None,
                    };
                    return Some(Decision::End {
                        last_voiced: self.last_voiced_end.unwrap_or(frame_rt),
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

    fn trim_lookback(&mut self, lookback_ms: u32) {
        let limit = gst::ClockTime::from_mseconds(lookback_ms as u64);
        let mut total: gst::ClockTime = self.lookback.iter().filter_map(|b| b.duration()).sum();
        while total > limit
            && let Some(old) = self.lookback.pop_front()
        {
            total = total.saturating_sub(old.duration().unwrap_or(gst::ClockTime::ZERO));
        }
    }
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
}

impl SpecVadGate {
    fn tag(buffer: gst::Buffer, id: u64) -> gst::Buffer {
        let mut buffer = buffer;
        SegmentIdMeta::set(buffer.make_mut(), id);
        buffer
    }

    fn message(name: &str, id: u64, running_time: gst::ClockTime, latency_ns: u64) -> Output {
        Output::Message(
            gst::Structure::builder(name)
                .field("segment-id", id)
                .field("running-time", running_time.nseconds())
                .field("decision-latency", latency_ns)
                .build(),
        )
    }

    fn idle_output(buffer: gst::Buffer, idle: IdleOutput, out: &mut Vec<Output>) {
        match idle {
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
                    out.push(Output::Event(
                        gst::event::Gap::builder(pts)
                            .duration(buffer.duration())
                            .build(),
                    ));
                }
            }
        }
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
            let mut stats = self.stats.lock().unwrap();
            let decisions = match state.analyse(&buffer, &settings, &mut stats) {
                Ok(decisions) => decisions,
                Err(err) => {
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
                Some(buffer),
                arrived,
                &mut outputs,
            );
        }
        self.emit(outputs)
    }

    /// Turns decisions on `buffer` into the ordered outputs.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        state: &mut State,
        s: &Settings,
        stats: &mut Stats,
        decisions: Vec<Decision>,
        mut buffer: Option<gst::Buffer>,
        arrived: Instant,
        out: &mut Vec<Output>,
    ) {
        for decision in decisions {
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
                    let id = state.next_id;
                    state.next_id += 1;
                    state.current_id = id;
                    let first = state
                        .lookback
                        .front()
                        .and_then(|b| b.pts())
                        .map(|pts| state.running_time(pts))
                        .unwrap_or(first_voiced)
                        .min(first_voiced);
                    out.push(Self::message("speech-start", id, first_voiced, latency));
                    // Passthrough mode already forwarded the ring; it reports only.
                    let tag = s.mode != Mode::Passthrough;
                    let ring: Vec<gst::Buffer> = state.lookback.drain(..).collect();
                    let mut segment_buffers: Vec<gst::Buffer> = if tag {
                        ring.into_iter().map(|b| Self::tag(b, id)).collect()
                    } else {
                        Vec::new()
                    };
                    if let Some(b) = buffer.take() {
                        segment_buffers.push(if tag { Self::tag(b, id) } else { b });
                    }
                    let start = SegmentEvent::Start {
                        id,
                        running_time: first,
                        lookback: first_voiced.saturating_sub(first),
                    };
                    match s.mode {
                        Mode::Speculative => {
                            out.push(Output::Event(start.to_event()));
                            out.extend(segment_buffers.into_iter().map(Output::Buffer));
                        }
                        Mode::Confirmed => {
                            // The start event goes out at the commit, before the held audio.
                            state.held = segment_buffers;
                            state.confirmed_start = Some(start);
                        }
                        Mode::Passthrough => {
                            out.extend(segment_buffers.into_iter().map(Output::Buffer))
                        }
                    }
                }
                Decision::Commit => {
                    stats.commits += 1;
                    let id = state.current_id;
                    let rt = state
                        .pending_pts
                        .map(|p| state.running_time(p))
                        .unwrap_or(gst::ClockTime::ZERO);
                    out.push(Self::message("speech-commit", id, rt, latency));
                    if s.mode == Mode::Confirmed {
                        if let Some(start) = state.confirmed_start.take() {
                            out.push(Output::Event(start.to_event()));
                        }
                        out.extend(state.held.drain(..).map(Output::Buffer));
                    }
                    if s.mode != Mode::Passthrough {
                        out.push(Output::Event(SegmentEvent::Commit { id }.to_event()));
                    }
                }
                Decision::Cancel => {
                    stats.cancels += 1;
                    let id = state.current_id;
                    let rt = state
                        .pending_pts
                        .map(|p| state.running_time(p))
                        .unwrap_or(gst::ClockTime::ZERO);
                    out.push(Self::message("speech-cancel", id, rt, latency));
                    if s.mode == Mode::Speculative {
                        out.push(Output::Event(
                            SegmentEvent::Cancel {
                                id,
                                reason: "not enough voiced audio to commit".into(),
                            }
                            .to_event(),
                        ));
                    }
                    state.held.clear();
                    state.confirmed_start = None;
                }
                Decision::End { last_voiced } => {
                    let id = state.current_id;
                    if let Some(b) = buffer.take() {
                        out.push(Output::Buffer(if s.mode == Mode::Passthrough {
                            b
                        } else {
                            Self::tag(b, id)
                        }));
                    }
                    out.push(Self::message("speech-end", id, last_voiced, latency));
                    if s.mode != Mode::Passthrough {
                        out.push(Output::Event(SegmentEvent::End { id }.to_event()));
                    }
                }
            }
        }
        let Some(buffer) = buffer else { return };
        if state.in_segment() {
            match s.mode {
                Mode::Speculative => out.push(Output::Buffer(Self::tag(buffer, state.current_id))),
                Mode::Confirmed => {
                    if state.confirmed_start.is_some() {
                        state.held.push(Self::tag(buffer, state.current_id));
                    } else {
                        out.push(Output::Buffer(Self::tag(buffer, state.current_id)));
                    }
                }
                Mode::Passthrough => out.push(Output::Buffer(buffer)),
            }
        } else {
            if s.mode == Mode::Passthrough {
                out.push(Output::Buffer(buffer.clone()));
            } else {
                Self::idle_output(buffer.clone(), s.idle_output, out);
            }
            if s.lookback_ms > 0 {
                state.lookback.push_back(buffer);
                state.trim_lookback(s.lookback_ms);
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

    /// Closes an open segment (commit-worthy or not) at EOS or caps change.
    fn close_segment(&self) -> Vec<Output> {
        let settings = self.settings.lock().unwrap().clone();
        let mut outputs = Vec::new();
        let mut state_guard = self.state.lock().unwrap();
        let Some(state) = state_guard.as_mut() else {
            return outputs;
        };
        let rt = state.last_voiced_end.unwrap_or(gst::ClockTime::ZERO);
        let decisions = match state.phase {
            Phase::Speculative { frames, voiced, .. } => {
                if frames > 0 && voiced as f64 >= settings.min_voiced_ratio * frames as f64 {
                    vec![Decision::Commit, Decision::End { last_voiced: rt }]
                } else {
                    vec![Decision::Cancel]
                }
            }
            Phase::Committed | Phase::Hangover { .. } => vec![Decision::End { last_voiced: rt }],
            Phase::Idle { .. } => vec![],
        };
        state.phase = Phase::Idle {
            voiced_run: 0,
            run_start: None,
        };
        let mut stats = self.stats.lock().unwrap();
        self.apply(
            state,
            &settings,
            &mut stats,
            decisions,
            None,
            Instant::now(),
            &mut outputs,
        );
        outputs
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
                let outputs = self.close_segment();
                let _ = self.emit(outputs);
                let mut state = self.state.lock().unwrap();
                let segment = state
                    .as_ref()
                    .map(|s| s.segment.clone())
                    .unwrap_or_default();
                let next_id = state.as_ref().map(|s| s.next_id).unwrap_or(1);
                let mut new_state = State::new(info, segment, engine);
                new_state.next_id = next_id;
                *state = Some(new_state);
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
            EventView::Eos(_) => {
                let outputs = self.close_segment();
                let _ = self.emit(outputs);
                gst::Pad::event_default(pad, Some(&*self.obj()), event)
            }
            EventView::FlushStop(_) => {
                let settings = self.settings.lock().unwrap().clone();
                if let Some(state) = self.state.lock().unwrap().as_mut()
                    && let Ok(engine) = VadEngine::new(&settings, state.info.rate())
                {
                    let (info, segment, next_id) =
                        (state.info.clone(), state.segment.clone(), state.next_id);
                    *state = State::new(info, segment, engine);
                    state.next_id = next_id;
                }
                gst::Pad::event_default(pad, Some(&*self.obj()), event)
            }
            _ => gst::Pad::event_default(pad, Some(&*self.obj()), event),
        }
    }

    fn stats_structure(&self) -> gst::Structure {
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
            .flags(gst::PadFlags::PROXY_CAPS | gst::PadFlags::PROXY_ALLOCATION)
            .build();
        Self {
            sinkpad,
            srcpad,
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(None),
            stats: Mutex::new(Stats::default()),
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
                glib::ParamSpecString::builder("model-path")
                    .nick("Model path")
                    .blurb("Silero engine: the silero_vad.onnx file (v5 or v6; shipped in the PyPI silero-vad package)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("onnxruntime-library")
                    .nick("ONNX Runtime library")
                    .blurb("Silero engine: libonnxruntime.so to load (e.g. from the PyPI onnxruntime wheel); unset: $ORT_DYLIB_PATH, else libonnxruntime.so")
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
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("Counters: frames-analysed, speculative-starts, commits, cancels, tone-frames (voiced frames rejected as tones), acceptance-rate, mean/max-decision-time (ns)")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
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
            other => unimplemented!("property {other}"),
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
            "model-path" => settings.model_path.to_value(),
            "onnxruntime-library" => settings.onnxruntime_library.to_value(),
            "lookback" => settings.lookback_ms.to_value(),
            "start-frames" => settings.start_frames.to_value(),
            "commit-time" => settings.commit_time_ms.to_value(),
            "stop-time" => settings.stop_time_ms.to_value(),
            "min-voiced-ratio" => settings.min_voiced_ratio.to_value(),
            "tone-threshold" => settings.tone_threshold.to_value(),
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
        }
        Ok(ret)
    }
}
