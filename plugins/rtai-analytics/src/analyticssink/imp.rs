//! The element: request pads `sink_%u` (any caps), per-pad parsing of metas,
//! events and text into the [`Aggregator`], and the fan-out of every event to
//! metrics, the bus, the database writer, Redis and the live feed. Nothing on
//! a streaming thread waits for the network: the fan-out only `try_send`s.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use rtai_core::prosody::Prosody;
use rtai_core::{InferenceResult, SegmentEvent, SegmentIdMeta};
use tokio::sync::{broadcast, mpsc};

use super::events::{Aggregator, Config, Detection, Event, EventKind, TimeSource, parse_keywords};
use super::{CAT, ElementReporter};
use crate::http::{self, SinkApi, Summary};
use crate::metrics::{Labels, METRICS};
use crate::publish::{self, RedisStats};
use crate::report::Reporter;
use crate::store::{self, Store, WriterStats};

const DEFAULT_LISTEN: &str = "127.0.0.1:9464";
const DEFAULT_DATABASE: &str = "";
const DEFAULT_REDIS_STREAM: &str = "rtai:events";
const DEFAULT_REDIS_MAX_LEN: u32 = 10_000;
const DEFAULT_CLIP_THRESHOLD: f64 = 0.7;
const DEFAULT_CLIP_PADDING_MS: u32 = 2000;
const DEFAULT_KEYWORDS: &str = "help,fire,alarm,emergency,accident,stop,goal,wow,look";
const DEFAULT_LEAVE_TIMEOUT_MS: u32 = 1000;
const DEFAULT_NOVELTY_WINDOW_MS: u32 = 60_000;
const DEFAULT_TRANSCRIPT_WAIT_MS: u32 = 2000;
const DEFAULT_BATCH_SIZE: u32 = 100;
const DEFAULT_MAX_PENDING: u32 = 10_000;
const DEFAULT_POST_MESSAGES: bool = true;
/// How long stopping waits for the database writer to write what is queued.
const WRITER_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_millis(200);

/// Element message posted for every event.
pub const MESSAGE_EVENT: &str = "rtai-analytics-event";
/// Element message posted for every clip marker.
pub const MESSAGE_CLIP: &str = "rtai-clip-marker";
/// cliprecorder's message when a clip is in storage (docs/cliprecorder.md).
const MESSAGE_CLIP_RECORDED: &str = "rtai-clip-recorded";
/// Recorded local clip files the HTTP server knows by name (the oldest forgotten first).
const MAX_CLIP_FILES: usize = 1000;

#[derive(Clone)]
struct Settings {
    listen: String,
    auth_token: Option<String>,
    database: String,
    redis_url: Option<String>,
    redis_stream: String,
    redis_max_len: u32,
    clip_threshold: f64,
    clip_padding_ms: u32,
    keywords: String,
    leave_timeout_ms: u32,
    novelty_window_ms: u32,
    transcript_wait_ms: u32,
    batch_size: u32,
    max_pending: u32,
    post_messages: bool,
}

/// By hand: the token and the URLs' passwords must not reach a log through `{:?}`.
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("auth_token", &self.auth_token.as_ref().map(|_| "***"))
            .field("database", &rtai_core::secrets::redact(&self.database))
            .field(
                "redis_url",
                &self.redis_url.as_deref().map(rtai_core::secrets::redact),
            )
            .field("redis_stream", &self.redis_stream)
            .field("redis_max_len", &self.redis_max_len)
            .field("clip_threshold", &self.clip_threshold)
            .field("clip_padding_ms", &self.clip_padding_ms)
            .field("keywords", &self.keywords)
            .field("leave_timeout_ms", &self.leave_timeout_ms)
            .field("novelty_window_ms", &self.novelty_window_ms)
            .field("transcript_wait_ms", &self.transcript_wait_ms)
            .field("batch_size", &self.batch_size)
            .field("max_pending", &self.max_pending)
            .field("post_messages", &self.post_messages)
            .finish()
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.into(),
            auth_token: None,
            database: DEFAULT_DATABASE.into(),
            redis_url: None,
            redis_stream: DEFAULT_REDIS_STREAM.into(),
            redis_max_len: DEFAULT_REDIS_MAX_LEN,
            clip_threshold: DEFAULT_CLIP_THRESHOLD,
            clip_padding_ms: DEFAULT_CLIP_PADDING_MS,
            keywords: DEFAULT_KEYWORDS.into(),
            leave_timeout_ms: DEFAULT_LEAVE_TIMEOUT_MS,
            novelty_window_ms: DEFAULT_NOVELTY_WINDOW_MS,
            transcript_wait_ms: DEFAULT_TRANSCRIPT_WAIT_MS,
            batch_size: DEFAULT_BATCH_SIZE,
            max_pending: DEFAULT_MAX_PENDING,
            post_messages: DEFAULT_POST_MESSAGES,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum PadKind {
    Unknown,
    Video,
    Audio { float: bool, channels: usize },
    Text,
}

#[derive(Debug)]
struct PadState {
    kind: PadKind,
    segment: gst::FormattedSegment<gst::ClockTime>,
    eos: bool,
    /// The open speech segment on this pad (between start and end/cancel).
    open_segment: Option<u64>,
    /// End (running time) of the last buffer.
    last_end: u64,
}

impl Default for PadState {
    fn default() -> Self {
        Self {
            kind: PadKind::Unknown,
            segment: gst::FormattedSegment::new(),
            eos: false,
            open_segment: None,
            last_end: 0,
        }
    }
}

impl PadState {
    fn running_time(&self, pts: Option<gst::ClockTime>) -> u64 {
        pts.map(|p| self.segment.to_running_time(p).unwrap_or(p).nseconds())
            .unwrap_or(self.last_end)
    }
}

struct State {
    agg: Aggregator,
    store_tx: Option<mpsc::Sender<store::Write>>,
    writer: Option<tokio::task::JoinHandle<()>>,
    redis_tx: Option<mpsc::Sender<(&'static str, Arc<str>)>>,
    redis: Option<tokio::task::JoinHandle<()>>,
    server: Option<http::Server>,
    ticker: Option<tokio::task::JoinHandle<()>>,
    live: broadcast::Sender<Arc<str>>,
    summary: Arc<Mutex<Summary>>,
    writer_stats: Arc<WriterStats>,
    redis_stats: Arc<RedisStats>,
    events: u64,
    dropped: u64,
    malformed: u64,
    eos_posted: bool,
    /// The pipeline's bus and the handler taking cliprecorder's `rtai-clip-recorded`.
    clip_bus: Option<(gst::Bus, glib::SignalHandlerId)>,
}

/// Runs `fut` on the shared runtime and waits for it from a non-runtime thread.
fn wait_on<T: Send + 'static>(fut: impl std::future::Future<Output = T> + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    rtai_core::runtime::runtime().spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().expect("the runtime runs the task to completion")
}

pub struct AnalyticsSink {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    pads: Mutex<HashMap<String, PadState>>,
    /// Metric labels of the element (`element`, `pipeline`), set on start.
    base_labels: Mutex<Labels>,
    /// Control messages over SSE while the server runs (issue 19).
    control: Mutex<Option<Arc<rtai_core::control_http::ControlHub>>>,
}

#[glib::object_subclass]
impl ObjectSubclass for AnalyticsSink {
    const NAME: &'static str = "GstRtaiAnalyticsSink";
    type Type = super::AnalyticsSink;
    type ParentType = gst::Element;

    fn new() -> Self {
        Self {
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(None),
            pads: Mutex::new(HashMap::new()),
            base_labels: Mutex::new(Vec::new()),
            control: Mutex::new(None),
        }
    }
}

/// A ROI meta as a detection: `Ok(None)` when it is not a detection (no
/// `detection` param), `Err` when its detection param is malformed.
fn parse_roi(roi: &gst_video::VideoRegionOfInterestMeta) -> Result<Option<Detection>, String> {
    let Some(det) = roi.param(rtai_core::inference::DETECTION_PARAM) else {
        return Ok(None);
    };
    let confidence = det
        .get::<f64>("confidence")
        .map_err(|e| format!("confidence: {e}"))?;
    if !confidence.is_finite() || !(0.0..=1.0).contains(&confidence) {
        return Err(format!("confidence {confidence} outside 0..1"));
    }
    let class_id = match det.value("label_id") {
        Ok(v) => Some(
            v.get::<i32>()
                .or_else(|_| v.get::<u32>().map(|u| u as i32))
                .map_err(|e| format!("label_id: {e}"))?,
        ),
        Err(_) => None,
    };
    let label = match det.value("label") {
        Ok(v) => v.get::<String>().map_err(|e| format!("label: {e}"))?,
        Err(_) => roi.roi_type().to_string(),
    };
    if label.is_empty() {
        return Err("no label (empty roi_type and no label field)".into());
    }
    let model = match det.value("model_name") {
        Ok(v) => Some(v.get::<String>().map_err(|e| format!("model_name: {e}"))?),
        Err(_) => None,
    };
    let track_id = match roi.param(rtai_core::inference::OBJECT_ID_PARAM) {
        Some(s) => {
            let v = s.value("id").map_err(|e| format!("object_id: {e}"))?;
            Some(
                v.get::<i32>()
                    .map(i64::from)
                    .or_else(|_| v.get::<i64>())
                    .or_else(|_| v.get::<u32>().map(i64::from))
                    .or_else(|_| v.get::<u64>().map(|u| u as i64))
                    .map_err(|e| format!("object_id id: {e}"))?,
            )
        }
        None => None,
    };
    Ok(Some(Detection {
        label,
        class_id,
        confidence,
        track_id,
        model,
        rect: roi.rect(),
    }))
}

/// Mean level of interleaved audio in dBFS.
fn level_dbfs(data: &[u8], float: bool) -> f64 {
    let (sum, n) = if float {
        data.chunks_exact(4).fold((0.0f64, 0usize), |(s, n), b| {
            let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64;
            (s + v * v, n + 1)
        })
    } else {
        data.chunks_exact(2).fold((0.0f64, 0usize), |(s, n), b| {
            let v = i16::from_le_bytes([b[0], b[1]]) as f64 / 32768.0;
            (s + v * v, n + 1)
        })
    };
    if n == 0 {
        return f64::NAN;
    }
    10.0 * (sum / n as f64).max(1e-12).log10()
}

/// Name of the top-level bin `element` is in (its own name when it is in none).
fn pipeline_name(element: &gst::Element) -> String {
    let mut top: gst::Object = element.clone().upcast();
    while let Some(parent) = top.parent() {
        top = parent;
    }
    top.name().to_string()
}

/// UTC ns = running time + this, from the reference timestamp (`timestamp/x-unix`)
/// of a buffer at running time `rt`.
fn reference_offset(buffer: &gst::BufferRef, rt: u64) -> Option<i128> {
    static UNIX: LazyLock<gst::Caps> =
        LazyLock::new(|| gst::Caps::new_empty_simple("timestamp/x-unix"));
    buffer
        .iter_meta::<gst::ReferenceTimestampMeta>()
        .find(|m| m.reference().can_intersect(&UNIX))
        .map(|m| m.timestamp().nseconds() as i128 - rt as i128)
}

impl AnalyticsSink {
    /// Queues `write` for the database writer without waiting: counted in the
    /// queue depth, or, when the queue is full, dropped and counted. False when
    /// dropped; true too when no database is kept.
    fn queue_write(&self, state: &mut State, write: store::Write) -> bool {
        let Some(tx) = &state.store_tx else {
            return true;
        };
        if tx.try_send(write).is_err() {
            state.dropped += 1;
            METRICS
                .dropped
                .get_or_create(&self.labels(&[("reason", "storage_queue_full")]))
                .inc();
            return false;
        }
        let q = state.writer_stats.queued.fetch_add(1, Ordering::Relaxed) + 1;
        METRICS
            .queue_depth
            .get_or_create(&self.labels(&[]))
            .set(q as i64);
        true
    }

    /// The element's metric labels followed by `extra`.
    fn labels(&self, extra: &[(&'static str, &str)]) -> Labels {
        let mut l = self.base_labels.lock().unwrap().clone();
        if l.is_empty() {
            l.push(("element", self.obj().name().to_string()));
            l.push(("pipeline", pipeline_name(self.obj().upcast_ref())));
        }
        l.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        l
    }

    /// UTC ns = running time + this, through the pipeline clock: its time now
    /// against the system's UTC time now, and the base time.
    fn clock_offset(&self) -> Option<i128> {
        let obj = self.obj();
        let clock = obj.clock()?;
        let base = obj.base_time()?;
        let utc_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_nanos() as i128;
        Some(utc_now - clock.time().nseconds() as i128 + base.nseconds() as i128)
    }

    fn pad_kind(caps: &gst::CapsRef) -> PadKind {
        let Some(s) = caps.structure(0) else {
            return PadKind::Unknown;
        };
        let name = s.name().as_str();
        if name.starts_with("video/") || name.starts_with("image/") {
            PadKind::Video
        } else if name == "audio/x-raw" {
            let format = s.get::<&str>("format").unwrap_or("");
            let channels = s.get::<i32>("channels").unwrap_or(1).max(1) as usize;
            match format {
                "S16LE" => PadKind::Audio {
                    float: false,
                    channels,
                },
                "F32LE" => PadKind::Audio {
                    float: true,
                    channels,
                },
                _ => PadKind::Unknown,
            }
        } else if name.starts_with("text/") || name == "application/x-json" {
            PadKind::Text
        } else {
            PadKind::Unknown
        }
    }

    fn malformed(&self, pad: &gst::Pad, what: &str) {
        gst::debug!(CAT, obj = pad, "ignoring malformed meta: {what}");
        METRICS
            .malformed
            .get_or_create(&self.labels(&[("stream", &pad.name()), ("pad", &pad.name())]))
            .inc();
        if let Some(state) = self.state.lock().unwrap().as_mut() {
            state.malformed += 1;
        }
    }

    fn chain(
        &self,
        pad: &gst::Pad,
        buffer: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let stream = pad.name().to_string();
        let (kind, rt, duration, open_segment) = {
            let mut pads = self.pads.lock().unwrap();
            let ps = pads.entry(stream.clone()).or_default();
            let rt = ps.running_time(buffer.pts());
            let duration = buffer.duration().map(|d| d.nseconds());
            ps.last_end = ps.last_end.max(rt + duration.unwrap_or(0));
            (ps.kind, rt, duration, ps.open_segment)
        };

        // Detections.
        let mut detections = Vec::new();
        for roi in buffer.iter_meta::<gst_video::VideoRegionOfInterestMeta>() {
            match parse_roi(&roi) {
                Ok(Some(d)) => detections.push(d),
                Ok(None) => gst::trace!(
                    CAT,
                    obj = pad,
                    "ROI '{}' without a detection param: not a detection",
                    roi.roi_type()
                ),
                Err(err) => self.malformed(pad, &format!("ROI '{}': {err}", roi.roi_type())),
            }
        }
        for d in &detections {
            METRICS
                .detections
                .get_or_create(&self.labels(&[
                    ("pad", &stream),
                    ("stream", &stream),
                    ("class", &d.label),
                ]))
                .inc();
        }
        if let Ok(m) =
            gst::meta::CustomMeta::from_buffer(&buffer, rtai_core::inference::INFERENCE_META_NAME)
            && InferenceResult::from_structure(m.structure()).is_none()
        {
            self.malformed(pad, "RtaiInferenceMeta");
        }
        let result = InferenceResult::get(&buffer);
        if let Some(rt_ns) = result.as_ref().and_then(|r| r.round_trip) {
            let model = result
                .as_ref()
                .and_then(|r| r.model.clone())
                .unwrap_or_default();
            METRICS
                .inference_round_trip
                .get_or_create(&self.labels(&[
                    ("pad", &stream),
                    ("stream", &stream),
                    ("model", &model),
                ]))
                .observe(rt_ns as f64 / 1e9);
        }
        let segment_id = SegmentIdMeta::get(&buffer).or(open_segment);

        // Text content of text pads (the result meta's text wins when both exist).
        let text = if kind == PadKind::Text && result.is_none() {
            match buffer.map_readable() {
                Ok(map) => match std::str::from_utf8(&map) {
                    Ok(t) => Some(t.trim_end_matches('\0').to_string()),
                    Err(_) => {
                        drop(map);
                        self.malformed(pad, "text buffer is not UTF-8");
                        None
                    }
                },
                Err(_) => None,
            }
        } else {
            None
        };
        let level = match kind {
            PadKind::Audio { float, .. } => {
                buffer.map_readable().ok().map(|m| level_dbfs(&m, float))
            }
            _ => None,
        };

        let time_base = match reference_offset(&buffer, rt) {
            Some(offset) => Some((offset, TimeSource::Reference)),
            None => self.clock_offset().map(|o| (o, TimeSource::Clock)),
        };
        let events = {
            let mut guard = self.state.lock().unwrap();
            let Some(state) = guard.as_mut() else {
                return Err(gst::FlowError::Flushing);
            };
            if let Some((offset, source)) = time_base {
                state.agg.set_time_base(&stream, offset, source);
            }
            let mut events = Vec::new();
            if kind == PadKind::Video || !detections.is_empty() {
                events.extend(state.agg.frame(&stream, rt, &detections));
            }
            if let Some(db) = level {
                state.agg.audio_level(&stream, segment_id, db);
            }
            match (&result, text) {
                (Some(r), _) if r.kind == "transcript" => events.extend(state.agg.transcript(
                    &stream,
                    r.segment_id.or(segment_id),
                    &r.text,
                    rt,
                    duration,
                    r.confidence,
                    r.model.clone(),
                )),
                (Some(r), _) if r.kind == "caption" => events.extend(state.agg.caption(
                    &stream,
                    &r.text,
                    rt,
                    r.confidence,
                    r.model.clone(),
                )),
                (Some(_), _) => {}
                (None, Some(t)) => {
                    if segment_id.is_some() {
                        events.extend(
                            state
                                .agg
                                .transcript(&stream, segment_id, &t, rt, duration, None, None),
                        );
                    } else {
                        events.extend(state.agg.caption(&stream, &t, rt, None, None));
                    }
                }
                (None, None) => {}
            }
            events
        };
        self.dispatch(events);
        Ok(gst::FlowSuccess::Ok)
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        let stream = pad.name().to_string();
        let hub = self.control.lock().unwrap().clone();
        if let Some(hub) = hub {
            super::control::publish(&hub, &event, &stream);
        }
        match event.view() {
            gst::EventView::StreamStart(s) => {
                let pipeline = pipeline_name(self.obj().upcast_ref());
                if let Some(state) = self.state.lock().unwrap().as_mut() {
                    state
                        .agg
                        .set_source_id(&stream, format!("{pipeline}/{}", s.stream_id()));
                }
            }
            gst::EventView::Caps(c) => {
                let kind = Self::pad_kind(c.caps());
                gst::debug!(CAT, obj = pad, "caps {} → {kind:?}", c.caps());
                self.pads.lock().unwrap().entry(stream).or_default().kind = kind;
            }
            gst::EventView::Segment(s) => {
                if let Ok(seg) = s.segment().clone().downcast::<gst::ClockTime>() {
                    self.pads.lock().unwrap().entry(stream).or_default().segment = seg;
                }
            }
            gst::EventView::FlushStop(_) => {
                self.pads.lock().unwrap().entry(stream).or_default().eos = false;
            }
            gst::EventView::CustomDownstream(_) | gst::EventView::CustomDownstreamOob(_) => {
                if let Some(seg) = SegmentEvent::parse(&event) {
                    self.segment_event(pad, seg);
                } else if let Some(p) = Prosody::parse(&event) {
                    gst::debug!(CAT, obj = pad, "{p:?}");
                    if let Some(state) = self.state.lock().unwrap().as_mut() {
                        state.agg.prosody(&stream, p);
                    }
                } else if let Some(s) = event.structure()
                    && s.name() == rtai_core::prosody::EVENT_PROSODY
                {
                    self.malformed(pad, &format!("prosody event {s}"));
                } else if let Some(s) = event.structure()
                    && s.name().starts_with("rtai-segment-")
                {
                    self.malformed(pad, &format!("segment event {s}"));
                }
            }
            gst::EventView::Eos(_) => {
                let all_eos = {
                    let mut pads = self.pads.lock().unwrap();
                    pads.entry(stream.clone()).or_default().eos = true;
                    let sinkpads: Vec<String> = self
                        .obj()
                        .sink_pads()
                        .iter()
                        .map(|p| p.name().to_string())
                        .collect();
                    sinkpads
                        .iter()
                        .all(|name| pads.get(name).is_some_and(|p| p.eos))
                };
                let events = {
                    let mut guard = self.state.lock().unwrap();
                    match guard.as_mut() {
                        Some(state) => state.agg.finish(Some(&stream)),
                        None => Vec::new(),
                    }
                };
                self.dispatch(events);
                if all_eos {
                    let post = {
                        let mut guard = self.state.lock().unwrap();
                        guard
                            .as_mut()
                            .is_some_and(|s| !std::mem::replace(&mut s.eos_posted, true))
                    };
                    if post {
                        gst::debug!(CAT, imp = self, "all pads at EOS");
                        let _ = self
                            .obj()
                            .post_message(gst::message::Eos::builder().src(&*self.obj()).build());
                    }
                }
            }
            _ => {}
        }
        true
    }

    fn segment_event(&self, pad: &gst::Pad, seg: SegmentEvent) {
        let stream = pad.name().to_string();
        let (kind, last_end) = {
            let mut pads = self.pads.lock().unwrap();
            let ps = pads.entry(stream.clone()).or_default();
            match &seg {
                SegmentEvent::Start { id, .. } => ps.open_segment = Some(*id),
                SegmentEvent::End { id } | SegmentEvent::Cancel { id, .. }
                    if ps.open_segment == Some(*id) =>
                {
                    ps.open_segment = None
                }
                _ => {}
            }
            let kind = match &seg {
                SegmentEvent::Start { .. } => "start",
                SegmentEvent::Commit { .. } => "commit",
                SegmentEvent::End { .. } => "end",
                SegmentEvent::Cancel { .. } => "cancel",
            };
            (kind, ps.last_end)
        };
        METRICS
            .vad
            .get_or_create(&self.labels(&[("stream", &stream), ("pad", &stream), ("kind", kind)]))
            .inc();
        gst::debug!(CAT, obj = pad, "{seg:?}");
        let events = {
            let mut guard = self.state.lock().unwrap();
            let Some(state) = guard.as_mut() else { return };
            match seg {
                SegmentEvent::Start {
                    id, running_time, ..
                } => {
                    state
                        .agg
                        .segment_start(&stream, id, running_time.nseconds());
                    Vec::new()
                }
                SegmentEvent::Commit { id } => {
                    state.agg.segment_commit(&stream, id);
                    Vec::new()
                }
                SegmentEvent::End { id } => state.agg.segment_end(&stream, id, last_end),
                SegmentEvent::Cancel { id, .. } => {
                    state.agg.segment_cancel(&stream, id);
                    Vec::new()
                }
            }
        };
        self.dispatch(events);
    }

    /// Fans events out: metrics, summary, live feed, database, Redis, bus.
    fn dispatch(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let post = self.settings.lock().unwrap().post_messages;
        let mut messages = Vec::new();
        {
            let mut guard = self.state.lock().unwrap();
            let Some(state) = guard.as_mut() else { return };
            for event in events {
                let kind = event.kind.as_str();
                state.events += 1;
                METRICS
                    .events
                    .get_or_create(&self.labels(&[("stream", &event.stream), ("type", kind)]))
                    .inc();
                let json: Arc<str> =
                    Arc::from(serde_json::to_string(&event).expect("events serialize"));
                {
                    let mut summary = state.summary.lock().unwrap();
                    *summary.events_per_type.entry(kind.to_string()).or_default() += 1;
                    if event.kind == EventKind::ObjectAppear
                        && let Some(label) = &event.label
                    {
                        *summary
                            .detections_per_class
                            .entry(label.clone())
                            .or_default() += 1;
                    }
                    if event.kind == EventKind::Clip {
                        summary
                            .clip_markers
                            .push_back(serde_json::from_str(&json).unwrap_or_default());
                        while summary.clip_markers.len() > Summary::MAX_CLIPS {
                            summary.clip_markers.pop_front();
                        }
                    }
                }
                let _ = state.live.send(json.clone());
                if let Some(tx) = &state.redis_tx
                    && tx.try_send((kind, json.clone())).is_err()
                {
                    state.dropped += 1;
                    METRICS
                        .dropped
                        .get_or_create(&self.labels(&[("reason", "redis_queue_full")]))
                        .inc();
                }
                if post {
                    messages.push(
                        gst::Structure::builder(MESSAGE_EVENT)
                            .field("type", kind)
                            .field("stream", event.stream.as_str())
                            .field("event-id", event.event_id.as_str())
                            .field("source-id", event.source_id.as_str())
                            .field("event-time", event.event_time.as_str())
                            .field("start", event.start_ns)
                            .field("end", event.end_ns.unwrap_or(event.start_ns))
                            .field("clip-worthy-score", event.clip_worthy_score)
                            .field("label", event.label.clone().unwrap_or_default())
                            .field("text", event.text.clone().unwrap_or_default())
                            .field("json", json.as_ref())
                            .build(),
                    );
                }
                if event.kind == EventKind::Clip {
                    METRICS
                        .clip_markers
                        .get_or_create(&self.labels(&[("stream", &event.stream)]))
                        .inc();
                    messages.push(
                        gst::Structure::builder(MESSAGE_CLIP)
                            .field("stream", event.stream.as_str())
                            .field("source-id", event.source_id.as_str())
                            .field("event-time", event.event_time.as_str())
                            .field("start", event.start_ns)
                            .field("end", event.end_ns.unwrap_or(event.start_ns))
                            .field("clip-worthy-score", event.clip_worthy_score)
                            .field("reason", event.data["reason"].as_str().unwrap_or_default())
                            .field("source", event.data["source"].as_str().unwrap_or_default())
                            .field("event-id", event.event_id.as_str())
                            .build(),
                    );
                }
                self.queue_write(state, event.into());
            }
        }
        for s in messages {
            let _ = self
                .obj()
                .post_message(gst::message::Element::builder(s).src(&*self.obj()).build());
        }
    }

    /// Takes cliprecorder's `rtai-clip-recorded` messages from the pipeline's bus
    /// (its sync-message signal, as cliprecorder takes the markers).
    fn listen_clips(&self) -> Option<(gst::Bus, glib::SignalHandlerId)> {
        let mut top: gst::Object = self.obj().clone().upcast();
        while let Some(parent) = top.parent() {
            top = parent;
        }
        let bus = top.downcast_ref::<gst::Element>()?.bus()?;
        bus.enable_sync_message_emission();
        let weak = self.obj().downgrade();
        let id = bus.connect_sync_message(Some("element"), move |_, msg| {
            if let Some(s) = msg.structure()
                && s.name() == MESSAGE_CLIP_RECORDED
                && let Some(obj) = weak.upgrade()
            {
                obj.imp().clip_recorded(s);
            }
        });
        Some((bus, id))
    }

    /// A clip is in storage: its clip markers (matched by `sources`, the scored
    /// events' ids) get `data.url`, `data.play_url` and `data.recorded`, and a
    /// local file becomes servable under `/clips/{name}`.
    fn clip_recorded(&self, s: &gst::StructureRef) {
        let text = |f: &str| s.get::<String>(f).unwrap_or_default();
        let (url, http_url, location, storage) = (
            text("url"),
            text("http-url"),
            text("location"),
            text("storage"),
        );
        let sources = text("sources");
        let Some(summary) = self
            .state
            .lock()
            .unwrap()
            .as_ref()
            .map(|st| st.summary.clone())
        else {
            return;
        };
        if url.is_empty() {
            gst::debug!(
                CAT,
                imp = self,
                "{MESSAGE_CLIP_RECORDED} without a url: {s}"
            );
            return;
        }
        let file = std::path::Path::new(&location)
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string);
        let play_url = match (storage.as_str(), file) {
            ("local", Some(name)) => {
                let mut sum = summary.lock().unwrap();
                sum.clip_files
                    .insert(name.clone(), std::path::PathBuf::from(&location));
                while sum.clip_files.len() > MAX_CLIP_FILES {
                    sum.clip_files.pop_first();
                }
                Some(format!("clips/{name}"))
            }
            _ if !http_url.is_empty() => Some(http_url),
            _ => None,
        };
        let u = |f: &str| s.get::<u64>(f).ok();
        let recorded = serde_json::json!({
            "start_ns": u("start"), "end_ns": u("end"), "duration_ns": u("duration"),
            "bytes": u("bytes"), "storage": storage,
        });
        let event_ids = text("event-ids");
        let list = |v: &str| -> Vec<String> {
            v.split(',')
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect()
        };
        let (sources, event_ids) = (list(&sources), list(&event_ids));
        let mut matched = 0;
        for clip in summary.lock().unwrap().clip_markers.iter_mut() {
            let source = clip["data"]["source"].as_str().unwrap_or_default();
            let id = clip["event_id"].as_str().unwrap_or_default();
            if sources.iter().any(|s| s == source) || event_ids.iter().any(|e| e == id) {
                clip["data"]["url"] = url.clone().into();
                clip["data"]["play_url"] = play_url.clone().into();
                clip["data"]["recorded"] = recorded.clone();
                matched += 1;
            }
        }
        // The stored clip events get the same fields, through the writer (never waited on).
        let patch = serde_json::json!({ "url": url, "play_url": play_url, "recorded": recorded });
        let write = store::Write::ClipRecorded(Box::new(store::ClipRecorded::new(
            sources, event_ids, patch,
        )));
        if let Some(state) = self.state.lock().unwrap().as_mut()
            && !self.queue_write(state, write)
        {
            gst::warning!(
                CAT,
                imp = self,
                "storage queue full: the url of {url} is not stored"
            );
        }
        gst::info!(
            CAT,
            imp = self,
            "clip recorded: {url} ({matched} clip markers)"
        );
    }

    fn tick(&self) {
        let events = match self.state.lock().unwrap().as_mut() {
            Some(state) => state.agg.tick(Instant::now()),
            None => return,
        };
        self.dispatch(events);
    }

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let s = self.settings.lock().unwrap().clone();
        let element = self.obj().name().to_string();
        let database = s.database.clone();
        let store = wait_on(async move { Store::open(&database).await })
            .map_err(|err| rtai_core::store::open_error("analytics", err, &s.database))?;
        gst::info!(
            CAT,
            imp = self,
            "storing events in {}",
            store.backend_name()
        );
        let pipeline = pipeline_name(self.obj().upcast_ref());
        let base: Labels = vec![("element", element.clone()), ("pipeline", pipeline.clone())];
        *self.base_labels.lock().unwrap() = base.clone();
        METRICS.init_element(&base, store.backend_name(), s.redis_url.is_some());
        for pad in self.obj().sink_pads() {
            METRICS.init_stream(&base, &pad.name());
        }
        let rt = rtai_core::runtime::runtime();
        let writer_stats = Arc::new(WriterStats::default());
        let (store_tx, store_rx) = mpsc::channel(s.max_pending.max(1) as usize);
        let reporter: Arc<dyn Reporter> = Arc::new(ElementReporter::new(
            self.obj().upcast_ref::<gst::Element>(),
        ));
        let writer = rt.spawn(store::run_writer(
            store.clone(),
            store_rx,
            s.batch_size.max(1) as usize,
            reporter.clone(),
            base.clone(),
            writer_stats.clone(),
        ));
        let redis_stats = Arc::new(RedisStats::default());
        let (redis_tx, redis) = match s.redis_url.clone().filter(|u| !u.is_empty()) {
            Some(url) => {
                let (tx, rx) = mpsc::channel(s.max_pending.max(1) as usize);
                let task = rt.spawn(publish::run_redis(
                    url,
                    s.redis_stream.clone(),
                    s.redis_max_len,
                    rx,
                    reporter.clone(),
                    base.clone(),
                    redis_stats.clone(),
                ));
                (Some(tx), Some(task))
            }
            None => (None, None),
        };
        let (live, _) = broadcast::channel(1024);
        let summary = Arc::new(Mutex::new(Summary::default()));
        let server = if s.listen.is_empty() {
            None
        } else {
            let hub = super::control::hub(self.obj().upcast_ref());
            *self.control.lock().unwrap() = Some(hub.clone());
            let api = Arc::new(SinkApi {
                element: element.clone(),
                pipeline: pipeline.clone(),
                store,
                live: live.clone(),
                summary: summary.clone(),
                control: Some(hub),
            });
            let state = http::AppState::sink(
                api,
                s.auth_token.clone(),
                Some(Arc::new(crate::latencymetrics::Latencies)),
            );
            let server =
                http::Server::start(&s.listen, state, reporter.as_ref()).map_err(|err| {
                    gst::error_msg!(
                        gst::ResourceError::OpenReadWrite,
                        ("Cannot start the HTTP server: {}", err),
                        ["listen property: {}", s.listen]
                    )
                })?;
            gst::info!(CAT, imp = self, "dashboard on http://{}/", server.addr());
            Some(server)
        };
        let weak = self.obj().downgrade();
        let ticker = rt.spawn(async move {
            let mut interval = tokio::time::interval(TICK);
            loop {
                interval.tick().await;
                let Some(obj) = weak.upgrade() else { break };
                obj.imp().tick();
            }
        });
        let cfg = Config {
            element,
            pipeline,
            leave_timeout: s.leave_timeout_ms as u64 * 1_000_000,
            novelty_window: s.novelty_window_ms as u64 * 1_000_000,
            keywords: parse_keywords(&s.keywords),
            clip_threshold: s.clip_threshold,
            clip_padding: s.clip_padding_ms as u64 * 1_000_000,
            transcript_wait: Duration::from_millis(s.transcript_wait_ms as u64),
        };
        *self.state.lock().unwrap() = Some(State {
            agg: Aggregator::new(cfg),
            store_tx: Some(store_tx),
            writer: Some(writer),
            redis_tx,
            redis,
            server,
            ticker: Some(ticker),
            live,
            summary,
            writer_stats,
            redis_stats,
            events: 0,
            dropped: 0,
            malformed: 0,
            eos_posted: false,
            clip_bus: self.listen_clips(),
        });
        Ok(())
    }

    fn stop(&self) {
        if let Some(hub) = self.control.lock().unwrap().take() {
            hub.close();
        }
        let events = match self.state.lock().unwrap().as_mut() {
            Some(state) => state.agg.finish(None),
            None => return,
        };
        self.dispatch(events);
        let Some(mut state) = self.state.lock().unwrap().take() else {
            return;
        };
        if let Some((bus, id)) = state.clip_bus.take() {
            bus.disconnect(id);
        }
        if let Some(t) = state.ticker.take() {
            t.abort();
        }
        state.store_tx = None;
        state.redis_tx = None;
        let writer = state.writer.take();
        let redis = state.redis.take();
        // The writer and publisher finish what is queued (bounded by a timeout).
        wait_on(async move {
            if let Some(w) = writer {
                let abort = w.abort_handle();
                if tokio::time::timeout(WRITER_DRAIN_TIMEOUT, w).await.is_err() {
                    abort.abort();
                }
            }
            if let Some(r) = redis {
                let abort = r.abort_handle();
                if tokio::time::timeout(Duration::from_secs(3), r)
                    .await
                    .is_err()
                {
                    abort.abort();
                }
            }
        });
        self.pads
            .lock()
            .unwrap()
            .values_mut()
            .for_each(|p| *p = PadState::default());
        drop(state);
    }

    fn stats(&self) -> gst::Structure {
        let guard = self.state.lock().unwrap();
        let mut b = gst::Structure::builder("rtai-analytics-stats");
        if let Some(s) = guard.as_ref() {
            b = b
                .field("events", s.events)
                .field(
                    "dropped",
                    s.dropped + s.writer_stats.dropped.load(Ordering::Relaxed),
                )
                .field("malformed", s.malformed)
                .field("rejected", s.writer_stats.rejected.load(Ordering::Relaxed))
                .field(
                    "rows-written",
                    s.writer_stats.written.load(Ordering::Relaxed),
                )
                .field(
                    "write-failures",
                    s.writer_stats.failures.load(Ordering::Relaxed),
                )
                .field("write-queue", s.writer_stats.queued.load(Ordering::Relaxed))
                .field(
                    "redis-published",
                    s.redis_stats.published.load(Ordering::Relaxed),
                )
                .field(
                    "redis-failures",
                    s.redis_stats.failures.load(Ordering::Relaxed),
                );
        }
        b.build()
    }
}

impl ObjectImpl for AnalyticsSink {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("listen")
                    .nick("Listen address")
                    .blurb("host:port of the HTTP server (dashboard, /api, /metrics); empty: no server; port 0 picks a free port")
                    .default_value(Some(DEFAULT_LISTEN))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("bound-address")
                    .nick("Bound address")
                    .blurb("host:port the HTTP server listens on while running (read-only)")
                    .read_only()
                    .build(),
                glib::ParamSpecString::builder("auth-token")
                    .nick("Bearer token")
                    .blurb("When set, every HTTP request but /metrics and /healthz needs 'Authorization: Bearer TOKEN' (or ?access_token=); when not, only requests whose Host is 127.0.0.1, localhost, [::1] or the bound address with its port are served, and a listen address beyond loopback is warned about; write-only")
                    .write_only()
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("database")
                    .nick("Database")
                    .blurb("SQLite file path, a postgres:// URL or libpq key=value string (host=… dbname=…), or empty for an in-memory SQLite database (passwords read back as ***)")
                    .default_value(Some(DEFAULT_DATABASE))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("redis-url")
                    .nick("Redis URL")
                    .blurb("redis:// URL: every event is added to a Redis stream (XADD); empty: no publishing")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("redis-stream")
                    .nick("Redis stream")
                    .blurb("Key of the Redis stream events are added to")
                    .default_value(Some(DEFAULT_REDIS_STREAM))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("redis-max-len")
                    .nick("Redis stream length")
                    .blurb("Approximate cap of the Redis stream's length (XADD MAXLEN ~)")
                    .minimum(1)
                    .maximum(1_000_000_000)
                    .default_value(DEFAULT_REDIS_MAX_LEN)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("clip-threshold")
                    .nick("Clip threshold")
                    .blurb("Events whose clip_worthy_score reaches this post a clip marker (rtai-clip-marker) on the bus")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_CLIP_THRESHOLD)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("clip-padding")
                    .nick("Clip padding")
                    .blurb("Running time (ms) a clip marker extends before and after its event")
                    .maximum(600_000)
                    .default_value(DEFAULT_CLIP_PADDING_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("keywords")
                    .nick("Keywords")
                    .blurb("Comma-separated words that make transcripts and captions clip-worthy (case-insensitive)")
                    .default_value(Some(DEFAULT_KEYWORDS))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("leave-timeout")
                    .nick("Leave timeout")
                    .blurb("Running time (ms) a track (or class) must be unseen before it has left")
                    .minimum(1)
                    .maximum(3_600_000)
                    .default_value(DEFAULT_LEAVE_TIMEOUT_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("novelty-window")
                    .nick("Novelty window")
                    .blurb("Running time (ms) after which a class seen before counts as new again (at most a day)")
                    .maximum(24 * 3600 * 1000)
                    .default_value(DEFAULT_NOVELTY_WINDOW_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("transcript-wait")
                    .nick("Transcript wait")
                    .blurb("Wall time (ms) an ended speech segment waits for its transcript before its event is made without one")
                    .maximum(600_000)
                    .default_value(DEFAULT_TRANSCRIPT_WAIT_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("batch-size")
                    .nick("Batch size")
                    .blurb("Most events written to the database in one transaction")
                    .minimum(1)
                    .maximum(10_000)
                    .default_value(DEFAULT_BATCH_SIZE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-pending")
                    .nick("Max pending")
                    .blurb("Events queued for the database (and for Redis) before new ones are dropped and counted")
                    .minimum(1)
                    .maximum(10_000_000)
                    .default_value(DEFAULT_MAX_PENDING)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("post-messages")
                    .nick("Post messages")
                    .blurb("Post an rtai-analytics-event element message for every event")
                    .default_value(DEFAULT_POST_MESSAGES)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("events, dropped, malformed, rejected (events the database refused), rows-written, write-failures, write-queue, redis-published, redis-failures")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        match pspec.name() {
            "listen" => s.listen = value.get::<Option<String>>().unwrap().unwrap_or_default(),
            "auth-token" => {
                s.auth_token = value
                    .get::<Option<String>>()
                    .unwrap()
                    .filter(|t| !t.is_empty())
            }
            "database" => s.database = value.get::<Option<String>>().unwrap().unwrap_or_default(),
            "redis-url" => {
                s.redis_url = value
                    .get::<Option<String>>()
                    .unwrap()
                    .filter(|t| !t.is_empty())
            }
            "redis-stream" => {
                s.redis_stream = value
                    .get::<Option<String>>()
                    .unwrap()
                    .unwrap_or_else(|| DEFAULT_REDIS_STREAM.into())
            }
            "redis-max-len" => s.redis_max_len = value.get().unwrap(),
            "clip-threshold" => s.clip_threshold = value.get().unwrap(),
            "clip-padding" => s.clip_padding_ms = value.get().unwrap(),
            "keywords" => s.keywords = value.get::<Option<String>>().unwrap().unwrap_or_default(),
            "leave-timeout" => s.leave_timeout_ms = value.get().unwrap(),
            "novelty-window" => s.novelty_window_ms = value.get().unwrap(),
            "transcript-wait" => s.transcript_wait_ms = value.get().unwrap(),
            "batch-size" => s.batch_size = value.get().unwrap(),
            "max-pending" => s.max_pending = value.get().unwrap(),
            "post-messages" => s.post_messages = value.get().unwrap(),
            other => unreachable!("unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock().unwrap();
        match pspec.name() {
            "listen" => s.listen.to_value(),
            "bound-address" => {
                drop(s);
                self.state
                    .lock()
                    .unwrap()
                    .as_ref()
                    .and_then(|st| st.server.as_ref())
                    .map(|srv| srv.addr().to_string())
                    .to_value()
            }
            "auth-token" => None::<String>.to_value(),
            // Credentials in the URLs are never read back.
            "database" => rtai_core::secrets::redact(&s.database).to_value(),
            "redis-url" => s
                .redis_url
                .as_deref()
                .map(rtai_core::secrets::redact)
                .to_value(),
            "redis-stream" => s.redis_stream.to_value(),
            "redis-max-len" => s.redis_max_len.to_value(),
            "clip-threshold" => s.clip_threshold.to_value(),
            "clip-padding" => s.clip_padding_ms.to_value(),
            "keywords" => s.keywords.to_value(),
            "leave-timeout" => s.leave_timeout_ms.to_value(),
            "novelty-window" => s.novelty_window_ms.to_value(),
            "transcript-wait" => s.transcript_wait_ms.to_value(),
            "batch-size" => s.batch_size.to_value(),
            "max-pending" => s.max_pending.to_value(),
            "post-messages" => s.post_messages.to_value(),
            "stats" => {
                drop(s);
                self.stats().to_value()
            }
            other => unreachable!("unknown property {other}"),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        self.obj().set_element_flags(gst::ElementFlags::SINK);
    }
}

impl GstObjectImpl for AnalyticsSink {}

impl ElementImpl for AnalyticsSink {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Analytics sink",
                "Sink/Analytics",
                "Turns detections (ROI metas), speech segments, transcripts and captions into scored events and clip markers; \
                 stores them in SQLite or PostgreSQL, publishes to Redis, serves a live dashboard, an events API and Prometheus metrics",
                "rtai contributors",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            vec![
                gst::PadTemplate::new(
                    "sink_%u",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Request,
                    &gst::Caps::new_any(),
                )
                .unwrap(),
            ]
        });
        TEMPLATES.as_ref()
    }

    fn request_new_pad(
        &self,
        templ: &gst::PadTemplate,
        name: Option<&str>,
        _caps: Option<&gst::Caps>,
    ) -> Option<gst::Pad> {
        let name = match name {
            Some(n) => n.to_string(),
            None => {
                let taken: Vec<String> = self
                    .obj()
                    .sink_pads()
                    .iter()
                    .map(|p| p.name().to_string())
                    .collect();
                (0..)
                    .map(|i| format!("sink_{i}"))
                    .find(|n| !taken.contains(n))
                    .expect("a free name")
            }
        };
        if self.obj().static_pad(&name).is_some() {
            gst::debug!(CAT, imp = self, "pad {name} exists already");
            return None;
        }
        let pad = gst::Pad::builder_from_template(templ)
            .name(name.as_str())
            .chain_function(|pad, parent, buffer| {
                AnalyticsSink::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |imp| imp.chain(pad, buffer),
                )
            })
            .event_function(|pad, parent, event| {
                AnalyticsSink::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.sink_event(pad, event),
                )
            })
            .build();
        self.pads
            .lock()
            .unwrap()
            .insert(name.clone(), PadState::default());
        if self.state.lock().unwrap().is_some() {
            METRICS.init_stream(&self.labels(&[]), &name);
        }
        pad.set_active(true).ok();
        self.obj().add_pad(&pad).ok()?;
        Some(pad)
    }

    fn release_pad(&self, pad: &gst::Pad) {
        self.pads.lock().unwrap().remove(pad.name().as_str());
        let _ = pad.set_active(false);
        let _ = self.obj().remove_pad(pad);
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::NullToReady
            && let Err(err) = self.start()
        {
            self.post_error_message(err);
            return Err(gst::StateChangeError);
        }
        let result = self.parent_change_state(transition)?;
        if transition == gst::StateChange::ReadyToNull {
            self.stop();
        }
        if transition == gst::StateChange::PausedToReady
            && let Some(state) = self.state.lock().unwrap().as_mut()
        {
            state.eos_posted = false;
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_debug_shows_no_secret() {
        let s = Settings {
            auth_token: Some("tok-s3cret".into()),
            database: "host=db user=app password=pg-s3cret".into(),
            redis_url: Some("redis://:redis-s3cret@localhost/0".into()),
            ..Settings::default()
        };
        let text = format!("{s:?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(
            text.contains(r#"auth_token: Some("***")"#)
                && text.contains("password=***")
                && text.contains("redis://:***@localhost/0"),
            "{text}"
        );
        assert!(format!("{:?}", Settings::default()).contains("auth_token: None"));
    }
}
