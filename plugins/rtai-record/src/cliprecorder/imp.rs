//! cliprecorder: a passthrough filter on a parsed encoded video stream (H.264 after
//! h264parse, H.265, AV1, VP9) that keeps a ring of the last `pre-roll` of it and, on a
//! clip marker, writes an MP4 from the last key frame at or before the marker's start
//! to its end plus `post-roll`, into a directory or S3-compatible object storage
//! (docs/cliprecorder.md).
//!
//! Markers come from (1) `rtai-clip-marker` element messages on the pipeline's bus
//! (analyticssink's), read through the bus's sync-message signal, (2) a custom event
//! `rtai-clip-marker` travelling downstream into the sink pad or upstream into the src
//! pad, (3) the action signal `record(start, end, reason)`. Overlapping markers merge.
//! Buffers pass through untouched; the streaming thread only keeps buffer references:
//! muxing runs on the element's worker thread and uploads on the shared tokio runtime.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::mpsc;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;

use super::mux;
use super::ring::{Clip, Frame, Marked, Marker, Ring};
use super::storage::{self, ClipInfo, Recorded, Report, Reporter, S3Settings, S3Target};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "cliprecorder",
        gst::DebugColorFlags::empty(),
        Some("Pre-roll ring of encoded video written to MP4 clips on markers"),
    )
});

/// The marker: bus message, custom event and the analyticssink field names.
pub const MARKER_NAME: &str = "rtai-clip-marker";
/// Posted when a clip is in storage.
pub const RECORDED_NAME: &str = "rtai-clip-recorded";

const DEFAULT_LOCATION: &str = "clips";
const DEFAULT_SPOOL_LOCATION: &str = "clips-spool";
const DEFAULT_PRE_ROLL_MS: u32 = 5000;
const DEFAULT_POST_ROLL_MS: u32 = 3000;
const DEFAULT_MAX_DURATION_MS: u32 = 60_000;
const DEFAULT_LISTEN_BUS: bool = true;
const DEFAULT_MARKER_SOURCE: &str = "";
const DEFAULT_S3_ENDPOINT: &str = "";
const DEFAULT_S3_REGION: &str = "";
const DEFAULT_STOP_TIMEOUT_MS: u32 = 5000;
/// Clips waiting for the worker thread; beyond it a clip is dropped with a warning.
const MAX_QUEUED_CLIPS: usize = 16;

#[derive(Debug, Clone)]
struct Settings {
    location: String,
    spool_location: String,
    pre_roll_ms: u32,
    post_roll_ms: u32,
    max_duration_ms: u32,
    listen_bus: bool,
    marker_source: String,
    s3: S3Settings,
    stop_timeout_ms: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            location: DEFAULT_LOCATION.into(),
            spool_location: DEFAULT_SPOOL_LOCATION.into(),
            pre_roll_ms: DEFAULT_PRE_ROLL_MS,
            post_roll_ms: DEFAULT_POST_ROLL_MS,
            max_duration_ms: DEFAULT_MAX_DURATION_MS,
            listen_bus: DEFAULT_LISTEN_BUS,
            marker_source: DEFAULT_MARKER_SOURCE.into(),
            s3: S3Settings {
                endpoint: DEFAULT_S3_ENDPOINT.into(),
                region: DEFAULT_S3_REGION.into(),
                ..Default::default()
            },
            stop_timeout_ms: DEFAULT_STOP_TIMEOUT_MS,
        }
    }
}

const MS: u64 = 1_000_000;

/// Where the worker writes.
enum Target {
    Local(PathBuf),
    S3(Arc<S3Target>),
}

struct Job {
    caps: gst::Caps,
    clip: Clip<gst::Buffer>,
    name: String,
}

#[derive(Debug, Default, Clone)]
struct Stats {
    markers: u64,
    merged: u64,
    invalid_markers: u64,
    clips: u64,
    recorded: u64,
    failed: u64,
    dropped: u64,
}

struct State {
    ring: Ring<gst::Buffer>,
    caps: Option<gst::Caps>,
    jobs: Option<mpsc::SyncSender<Job>>,
    worker: Option<std::thread::JoinHandle<()>>,
    uploader: Option<tokio::task::JoinHandle<()>>,
    stop_uploader: Option<tokio::sync::watch::Sender<bool>>,
    wake_uploader: Option<Arc<tokio::sync::Notify>>,
    bus: Option<(gst::Bus, glib::SignalHandlerId)>,
    spool: Option<PathBuf>,
}

#[derive(Default)]
pub struct ClipRecorder {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    stats: Mutex<Stats>,
}

/// Reads a marker from a message or event structure (`start`, `end`: running times in ns
/// as guint64 (or gint64 ≥ 0, or GstClockTime); `reason`, `source`, `event-id`: strings,
/// optional).
pub fn parse_marker(s: &gst::StructureRef) -> Result<Marker, String> {
    let time = |field: &str| -> Result<u64, String> {
        if let Ok(v) = s.get::<u64>(field) {
            return Ok(v);
        }
        if let Ok(v) = s.get::<i64>(field) {
            return u64::try_from(v).map_err(|_| format!("{field} is negative"));
        }
        if let Ok(v) = s.get::<gst::ClockTime>(field) {
            return Ok(v.nseconds());
        }
        Err(format!("no {field} running time (guint64 ns)"))
    };
    let start = time("start")?;
    let end = if s.has_field("end") {
        time("end")?
    } else {
        start
    };
    let text = |field: &str| {
        s.get::<Option<String>>(field)
            .ok()
            .flatten()
            .map(|t| t.chars().take(256).collect::<String>())
            .unwrap_or_default()
    };
    let mut reason = text("reason");
    if reason.is_empty() {
        reason = "marker".into();
    }
    Ok(Marker {
        start,
        end,
        reason,
        source: text("source"),
        event_id: text("event-id"),
    })
}

impl ClipRecorder {
    fn lock_state(&self) -> MutexGuard<'_, Option<State>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_stats(&self) -> MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a marker from any of the three ways in; `false` when refused.
    pub(super) fn mark(&self, marker: Marker, via: &str) -> bool {
        let mut guard = self.lock_state();
        let Some(state) = guard.as_mut() else {
            gst::debug!(
                CAT,
                imp = self,
                "marker {marker:?} via {via} while stopped: ignored"
            );
            return false;
        };
        let oldest = state.ring.oldest();
        let result = state.ring.mark(marker.clone());
        drop(guard);
        let mut stats = self.lock_stats();
        match result {
            Marked::Invalid => {
                stats.invalid_markers += 1;
                drop(stats);
                gst::warning!(
                    CAT,
                    imp = self,
                    "marker via {via} ends before it starts: {marker:?}"
                );
                false
            }
            Marked::Merged | Marked::New => {
                stats.markers += 1;
                if result == Marked::Merged {
                    stats.merged += 1;
                }
                drop(stats);
                gst::info!(
                    CAT,
                    imp = self,
                    "marker via {via}: {} .. {} ({}), {:?}; ring from {:?}",
                    gst::ClockTime::from_nseconds(marker.start),
                    gst::ClockTime::from_nseconds(marker.end),
                    marker.reason,
                    result,
                    oldest.map(gst::ClockTime::from_nseconds)
                );
                true
            }
        }
    }

    fn send_clips(&self, state: &mut State, clips: Vec<Clip<gst::Buffer>>) {
        if clips.is_empty() {
            return;
        }
        let Some(caps) = state.caps.clone() else {
            return;
        };
        let element = self.obj().name();
        for clip in clips {
            let name = clip_name(&element);
            gst::debug!(
                CAT,
                imp = self,
                "clip {name}: {} frames {} .. {}",
                clip.frames.len(),
                gst::ClockTime::from_nseconds(clip.start),
                gst::ClockTime::from_nseconds(clip.end)
            );
            let sent = state.jobs.as_ref().map(|tx| {
                tx.try_send(Job {
                    caps: caps.clone(),
                    clip,
                    name,
                })
            });
            let mut stats = self.lock_stats();
            stats.clips += 1;
            if !matches!(sent, Some(Ok(()))) {
                stats.dropped += 1;
                drop(stats);
                gst::element_imp_warning!(
                    self,
                    gst::ResourceError::Write,
                    [
                        "{MAX_QUEUED_CLIPS} clips are already waiting to be written: a clip was dropped"
                    ]
                );
            }
        }
    }

    fn report(&self, r: Report) {
        match r {
            Report::Recorded(rec) => {
                self.lock_stats().recorded += 1;
                gst::info!(
                    CAT,
                    imp = self,
                    "clip recorded: {} ({} bytes)",
                    rec.url,
                    rec.bytes
                );
                let s = recorded_structure(&rec);
                let _ = self
                    .obj()
                    .post_message(gst::message::Element::builder(s).src(&*self.obj()).build());
            }
            Report::Warning(text) => {
                gst::element_imp_warning!(self, gst::ResourceError::Write, ["{text}"]);
            }
            Report::Info(text) => {
                gst::info!(CAT, imp = self, "{text}");
                gst::element_imp_info!(self, gst::ResourceError::Write, ["{text}"]);
            }
        }
    }

    fn reporter(&self) -> Reporter {
        let weak = self.obj().downgrade();
        Arc::new(move |r| {
            if let Some(obj) = weak.upgrade() {
                obj.imp().report(r);
            }
        })
    }

    fn listen_bus(&self, marker_source: String) -> Option<(gst::Bus, glib::SignalHandlerId)> {
        let mut top: gst::Object = self.obj().clone().upcast();
        while let Some(parent) = top.parent() {
            top = parent;
        }
        let bus = top.downcast_ref::<gst::Element>()?.bus()?;
        bus.enable_sync_message_emission();
        let weak = self.obj().downgrade();
        let id = bus.connect_sync_message(Some("element"), move |_, msg| {
            let Some(s) = msg.structure() else { return };
            if s.name() != MARKER_NAME {
                return;
            }
            if !marker_source.is_empty()
                && msg.src().map(|o| o.name()).as_deref() != Some(marker_source.as_str())
            {
                return;
            }
            let Some(obj) = weak.upgrade() else { return };
            match parse_marker(s) {
                Ok(m) => {
                    obj.imp().mark(m, "bus");
                }
                Err(e) => {
                    obj.imp().lock_stats().invalid_markers += 1;
                    gst::warning!(CAT, obj = obj, "malformed {MARKER_NAME} message: {e}")
                }
            }
        });
        gst::debug!(
            CAT,
            imp = self,
            "listening for {MARKER_NAME} on {}'s bus",
            top.name()
        );
        Some((bus, id))
    }

    fn take_event_marker(&self, event: &gst::EventRef, via: &str) {
        if let Some(s) = event.structure()
            && s.name() == MARKER_NAME
        {
            match parse_marker(s) {
                Ok(m) => {
                    self.mark(m, via);
                }
                Err(e) => {
                    self.lock_stats().invalid_markers += 1;
                    gst::warning!(CAT, imp = self, "malformed {MARKER_NAME} event: {e}");
                }
            }
        }
    }

    fn finish_ring(&self) {
        let mut guard = self.lock_state();
        if let Some(state) = guard.as_mut() {
            let clips = state.ring.finish();
            self.send_clips(state, clips);
        }
    }

    fn stats(&self) -> gst::Structure {
        let st = self.lock_stats().clone();
        let guard = self.lock_state();
        let (frames, oldest, pending, spooled) = guard.as_ref().map_or((0, None, 0, 0), |s| {
            (
                s.ring.len() as u64,
                s.ring.oldest(),
                s.ring.pending().len() as u64,
                s.spool.as_ref().map_or(0, |d| count_spooled(d)),
            )
        });
        drop(guard);
        gst::Structure::builder("cliprecorder-stats")
            .field("markers", st.markers)
            .field("merged-markers", st.merged)
            .field("invalid-markers", st.invalid_markers)
            .field("clips", st.clips)
            .field("recorded", st.recorded)
            .field("failed", st.failed)
            .field("dropped", st.dropped)
            .field("pending-clips", pending)
            .field("spooled", spooled)
            .field("ring-frames", frames)
            .field("ring-oldest", oldest.unwrap_or(u64::MAX))
            .build()
    }
}

fn count_spooled(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |rd| {
        rd.filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "mp4"))
            .count() as u64
    })
}

/// `<element>-<UTC yyyymmddThhmmss.mmm>-<8 hex>.mp4`: sorts by time per element, unique.
fn clip_name(element: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let stamp = glib::DateTime::from_unix_utc(now.as_secs() as i64)
        .and_then(|d| d.format("%Y%m%dT%H%M%S"))
        .map(|s| s.to_string())
        .unwrap_or_else(|_| now.as_secs().to_string());
    let id = uuid::Uuid::new_v4().simple().to_string();
    let safe: String = element
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{safe}-{stamp}.{:03}Z-{}.mp4",
        now.subsec_millis(),
        &id[..8]
    )
}

fn recorded_structure(rec: &Recorded) -> gst::Structure {
    let i = &rec.info;
    gst::Structure::builder(RECORDED_NAME)
        .field("url", rec.url.as_str())
        .field("http-url", rec.http_url.as_str())
        .field("location", rec.location.as_str())
        .field("storage", rec.storage)
        .field("start", i.start)
        .field("end", i.end)
        .field("duration", i.end.saturating_sub(i.start))
        .field("requested-start", i.requested_start)
        .field("requested-end", i.requested_end)
        // The ring no longer held the requested start (pre-roll too short for the marker).
        .field("truncated", i.start > i.requested_start)
        .field("reason", i.reason.as_str())
        .field("sources", i.sources.as_str())
        .field("event-ids", i.event_ids.as_str())
        .field("markers", i.markers)
        .field("frames", i.frames)
        .field("bytes", rec.bytes)
        .build()
}

fn info_of(clip: &Clip<gst::Buffer>) -> ClipInfo {
    let joined = |field: fn(&Marker) -> &str| {
        let mut seen: Vec<&str> = Vec::new();
        for m in &clip.markers {
            let v = field(m);
            if !v.is_empty() && !seen.contains(&v) {
                seen.push(v);
            }
        }
        seen.join(",")
    };
    ClipInfo {
        start: clip.start,
        end: clip.end,
        requested_start: clip.requested_start,
        requested_end: clip.requested_end,
        reason: clip.reason(),
        sources: joined(|m| &m.source),
        event_ids: joined(|m| &m.event_id),
        markers: clip.markers.len().min(u32::MAX as usize) as u32,
        frames: clip.frames.len().min(u32::MAX as usize) as u32,
    }
}

/// The worker thread: muxes each clip, then stores it (local) or spools it (S3).
fn worker(
    jobs: mpsc::Receiver<Job>,
    target: Target,
    report: Reporter,
    wake: Option<Arc<tokio::sync::Notify>>,
    failed: Arc<dyn Fn() + Send + Sync>,
) {
    for job in jobs {
        let info = info_of(&job.clip);
        let dir = match &target {
            Target::Local(dir) => dir.clone(),
            Target::S3(t) => t.spool.clone(),
        };
        let path = dir.join(&job.name);
        let part = dir.join(format!("{}.part", job.name));
        let written = std::fs::create_dir_all(&dir)
            .map_err(|e| e.to_string())
            .and_then(|()| mux::write_mp4(&job.caps, &job.clip.frames, &part))
            .and_then(|()| {
                if let Target::S3(_) = target {
                    storage::write_info(&path, &info).map_err(|e| e.to_string())?;
                }
                std::fs::rename(&part, &path).map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&part);
            failed();
            report(Report::Warning(format!(
                "cannot write clip {}: {e} (is the disk full or the directory not writable?); the pipeline goes on",
                path.display()
            )));
            continue;
        }
        match &target {
            Target::Local(_) => {
                let abs = std::path::absolute(&path).unwrap_or(path.clone());
                let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                report(Report::Recorded(Recorded {
                    url: format!("file://{}", abs.display()),
                    http_url: String::new(),
                    location: abs.display().to_string(),
                    storage: "local",
                    info,
                    bytes,
                }));
            }
            Target::S3(_) => {
                if let Some(w) = &wake {
                    w.notify_one();
                }
            }
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for ClipRecorder {
    const NAME: &'static str = "GstClipRecorder";
    type Type = super::ClipRecorder;
    type ParentType = gst_base::BaseTransform;
}

impl ObjectImpl for ClipRecorder {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("location")
                    .nick("Location")
                    .blurb("Where clips go: a local directory (created), or s3://bucket[/prefix] for S3-compatible object storage")
                    .default_value(Some(DEFAULT_LOCATION))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("spool-location")
                    .nick("Spool location")
                    .blurb("With an s3:// location: local directory where clips wait until the storage has taken them (kept across restarts)")
                    .default_value(Some(DEFAULT_SPOOL_LOCATION))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("pre-roll")
                    .nick("Pre-roll")
                    .blurb("Milliseconds of the stream kept before the newest frame (from a key frame): how far back a clip can start")
                    .maximum(600_000)
                    .default_value(DEFAULT_PRE_ROLL_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("post-roll")
                    .nick("Post-roll")
                    .blurb("Milliseconds recorded after a marker's end")
                    .maximum(600_000)
                    .default_value(DEFAULT_POST_ROLL_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-duration")
                    .nick("Maximum duration")
                    .blurb("Longest clip in milliseconds (from its start): bounds the memory a long or unbounded marker holds")
                    .minimum(1)
                    .maximum(3_600_000)
                    .default_value(DEFAULT_MAX_DURATION_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("listen-bus")
                    .nick("Listen on the bus")
                    .blurb("Take rtai-clip-marker element messages (analyticssink's) from the pipeline's bus")
                    .default_value(DEFAULT_LISTEN_BUS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("marker-source")
                    .nick("Marker source")
                    .blurb("With listen-bus: take markers only from the element of this name (empty: from any element)")
                    .default_value(Some(DEFAULT_MARKER_SOURCE))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("s3-endpoint")
                    .nick("S3 endpoint")
                    .blurb("S3-compatible endpoint URL (http://127.0.0.1:9000 for MinIO; path-style requests); empty: AWS, or AWS_ENDPOINT")
                    .default_value(Some(DEFAULT_S3_ENDPOINT))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("s3-region")
                    .nick("S3 region")
                    .blurb("Region of the bucket; empty: AWS_REGION or us-east-1")
                    .default_value(Some(DEFAULT_S3_REGION))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("s3-access-key-id")
                    .nick("S3 access key id")
                    .blurb("Access key id; empty: AWS_ACCESS_KEY_ID (none at all: anonymous requests)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("s3-secret-access-key")
                    .nick("S3 secret access key")
                    .blurb("Secret access key (write-only); empty: AWS_SECRET_ACCESS_KEY")
                    .write_only()
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("stop-timeout")
                    .nick("Stop timeout")
                    .blurb("Milliseconds the element waits, when stopping, for spooled clips to upload (the rest are uploaded at the next start)")
                    .maximum(600_000)
                    .default_value(DEFAULT_STOP_TIMEOUT_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb(
                        "markers, merged-markers, invalid-markers, clips (completed), recorded (in storage), failed \
                         (not written), dropped (writer queue full), pending-clips, spooled (waiting for upload), \
                         ring-frames, ring-oldest (running time, ns)",
                    )
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn signals() -> &'static [glib::subclass::Signal] {
        static SIGNALS: LazyLock<Vec<glib::subclass::Signal>> = LazyLock::new(|| {
            vec![
                glib::subclass::Signal::builder("record")
                    .param_types([
                        u64::static_type(),
                        u64::static_type(),
                        String::static_type(),
                    ])
                    .return_type::<bool>()
                    .action()
                    .class_handler(|args| {
                        let obj = args[0].get::<super::ClipRecorder>().expect("signal arg");
                        let start = args[1].get::<u64>().expect("signal arg");
                        let end = args[2].get::<u64>().expect("signal arg");
                        let reason = args[3]
                            .get::<Option<String>>()
                            .expect("signal arg")
                            .filter(|r| !r.is_empty())
                            .unwrap_or_else(|| "record".into());
                        let ok = obj.imp().mark(
                            Marker {
                                start,
                                end,
                                reason: reason.chars().take(256).collect(),
                                source: String::new(),
                                event_id: String::new(),
                            },
                            "record signal",
                        );
                        Some(ok.to_value())
                    })
                    .build(),
            ]
        });
        SIGNALS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        let text = || {
            value
                .get::<Option<String>>()
                .expect("type checked upstream")
                .unwrap_or_default()
        };
        match pspec.name() {
            "location" => s.location = text(),
            "spool-location" => s.spool_location = text(),
            "pre-roll" => s.pre_roll_ms = value.get().expect("type checked upstream"),
            "post-roll" => s.post_roll_ms = value.get().expect("type checked upstream"),
            "max-duration" => s.max_duration_ms = value.get().expect("type checked upstream"),
            "listen-bus" => s.listen_bus = value.get().expect("type checked upstream"),
            "marker-source" => s.marker_source = text(),
            "s3-endpoint" => s.s3.endpoint = text(),
            "s3-region" => s.s3.region = text(),
            "s3-access-key-id" => s.s3.access_key_id = text(),
            "s3-secret-access-key" => s.s3.secret_access_key = text(),
            "stop-timeout" => s.stop_timeout_ms = value.get().expect("type checked upstream"),
            other => unimplemented!("property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock().unwrap();
        match pspec.name() {
            "location" => s.location.to_value(),
            "spool-location" => s.spool_location.to_value(),
            "pre-roll" => s.pre_roll_ms.to_value(),
            "post-roll" => s.post_roll_ms.to_value(),
            "max-duration" => s.max_duration_ms.to_value(),
            "listen-bus" => s.listen_bus.to_value(),
            "marker-source" => s.marker_source.to_value(),
            "s3-endpoint" => rtai_core::secrets::redact_url(&s.s3.endpoint).to_value(),
            "s3-region" => s.s3.region.to_value(),
            "s3-access-key-id" => s.s3.access_key_id.to_value(),
            "stop-timeout" => s.stop_timeout_ms.to_value(),
            "stats" => {
                drop(s);
                self.stats().to_value()
            }
            other => unimplemented!("property {other}"),
        }
    }
}

impl GstObjectImpl for ClipRecorder {}

impl ElementImpl for ClipRecorder {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Clip recorder",
                "Filter/Video",
                "Keeps a pre-roll ring of parsed encoded video and writes MP4 clips around rtai-clip-marker \
                 markers to a directory or S3-compatible object storage",
                "rtai contributors",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst::Caps::from_str(
                "video/x-h264, stream-format=(string){ avc, avc3, byte-stream }, alignment=(string)au; \
                 video/x-h265, stream-format=(string){ hvc1, hev1, byte-stream }, alignment=(string)au; \
                 video/x-av1, stream-format=(string)obu-stream, alignment=(string)tu; \
                 video/x-vp9",
            )
            .expect("valid caps");
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
}

impl BaseTransformImpl for ClipRecorder {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = true;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = true;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let s = self.settings.lock().unwrap().clone();
        let report = self.reporter();
        let (target, spool, uploader) = if s.location.starts_with("s3://") {
            let t = S3Target::new(
                &s.location,
                &s.s3,
                PathBuf::from(&s.spool_location).join(
                    // One spool per recorder: two recorders never upload each other's clips.
                    self.obj().name().as_str(),
                ),
            )
            .map_err(|e| gst::error_msg!(gst::ResourceError::Settings, ["{e}"]))?;
            let t = Arc::new(t);
            let wake = Arc::new(tokio::sync::Notify::new());
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let handle = rtai_core::runtime::runtime().spawn(storage::uploader(
                t.clone(),
                wake.clone(),
                report.clone(),
                stop_rx,
                Duration::from_millis(s.stop_timeout_ms as u64),
            ));
            let spool = t.spool.clone();
            (Target::S3(t), Some(spool), Some((handle, stop_tx, wake)))
        } else {
            let dir = PathBuf::from(if s.location.is_empty() {
                "."
            } else {
                &s.location
            });
            std::fs::create_dir_all(&dir).map_err(|e| {
                gst::error_msg!(
                    gst::ResourceError::OpenWrite,
                    ["cannot create the clip directory {}: {e}", dir.display()]
                )
            })?;
            (Target::Local(dir), None, None)
        };
        let (tx, rx) = mpsc::sync_channel(MAX_QUEUED_CLIPS);
        let wake = uploader.as_ref().map(|u| u.2.clone());
        let weak = self.obj().downgrade();
        let failed: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            if let Some(obj) = weak.upgrade() {
                obj.imp().lock_stats().failed += 1;
            }
        });
        let worker = std::thread::Builder::new()
            .name("cliprecorder".into())
            .spawn(move || worker(rx, target, report, wake, failed))
            .map_err(|e| {
                gst::error_msg!(
                    gst::CoreError::Failed,
                    ["cannot start the writer thread: {e}"]
                )
            })?;
        let bus = if s.listen_bus {
            self.listen_bus(s.marker_source.clone())
        } else {
            None
        };
        let (uploader, stop_uploader, wake_uploader) = match uploader {
            Some((h, s, w)) => (Some(h), Some(s), Some(w)),
            None => (None, None, None),
        };
        *self.lock_state() = Some(State {
            ring: Ring::new(
                s.pre_roll_ms as u64 * MS,
                s.post_roll_ms as u64 * MS,
                s.max_duration_ms as u64 * MS,
            ),
            caps: None,
            jobs: Some(tx),
            worker: Some(worker),
            uploader,
            stop_uploader,
            wake_uploader,
            bus,
            spool,
        });
        *self.lock_stats() = Stats::default();
        gst::info!(CAT, imp = self, "recording clips to {}", s.location);
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        let Some(mut state) = self.lock_state().take() else {
            return Ok(());
        };
        if let Some((bus, id)) = state.bus.take() {
            bus.disconnect(id);
            bus.disable_sync_message_emission();
        }
        // Clips still waiting for their end are written with what there is.
        let clips = state.ring.finish();
        self.send_clips(&mut state, clips);
        drop(state.jobs.take());
        if let Some(w) = state.worker.take() {
            let _ = w.join();
        }
        if let (Some(h), Some(stop)) = (state.uploader.take(), state.stop_uploader.take()) {
            if let Some(w) = &state.wake_uploader {
                w.notify_one();
            }
            let _ = stop.send(true);
            // The uploader gives up after one more pass of at most stop-timeout; an upload
            // in flight ends within its own timeouts. Whatever is left stays spooled for the
            // next start. Never block a runtime thread (an application calling from one).
            if tokio::runtime::Handle::try_current().is_err() {
                let limit = Duration::from_millis(
                    self.settings.lock().unwrap().stop_timeout_ms as u64 + 1000,
                );
                let abort = h.abort_handle();
                let finished = rtai_core::runtime::runtime()
                    .block_on(async { tokio::time::timeout(limit, h).await.is_ok() });
                if !finished {
                    abort.abort();
                    gst::warning!(
                        CAT,
                        imp = self,
                        "uploader did not stop in time: left spooled"
                    );
                }
            }
        }
        Ok(())
    }

    fn set_caps(&self, incaps: &gst::Caps, _outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        if mux::parser_for(incaps).is_none() {
            return Err(gst::loggable_error!(CAT, "cannot record {incaps} to MP4"));
        }
        let mut guard = self.lock_state();
        if let Some(state) = guard.as_mut() {
            let changed = state.caps.as_ref().is_some_and(|c| c != incaps);
            if changed {
                // An MP4 has one set of caps: what came before is written out.
                let clips = state.ring.finish();
                self.send_clips(state, clips);
            }
            state.caps = Some(incaps.clone());
        }
        Ok(())
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        match event.view() {
            gst::EventView::CustomDownstream(_)
            | gst::EventView::CustomDownstreamOob(_)
            | gst::EventView::CustomBoth(_)
            | gst::EventView::CustomBothOob(_) => self.take_event_marker(&event, "event"),
            gst::EventView::Eos(_) => self.finish_ring(),
            gst::EventView::FlushStop(_) => self.finish_ring(),
            _ => {}
        }
        self.parent_sink_event(event)
    }

    fn src_event(&self, event: gst::Event) -> bool {
        match event.view() {
            gst::EventView::CustomUpstream(_)
            | gst::EventView::CustomBoth(_)
            | gst::EventView::CustomBothOob(_)
                if event.structure().is_some_and(|s| s.name() == MARKER_NAME) =>
            {
                self.take_event_marker(&event, "upstream event");
                // Handled here; passed on for any other recorder upstream.
                let _ = self.parent_src_event(event);
                true
            }
            _ => self.parent_src_event(event),
        }
    }

    fn transform_ip_passthrough(
        &self,
        buf: &gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let segment = self.obj().segment();
        let Some(rt) = segment
            .downcast_ref::<gst::ClockTime>()
            .and_then(|seg| seg.to_running_time(buf.pts().or(buf.dts())?))
        else {
            gst::trace!(CAT, imp = self, "buffer without running time: not kept");
            return Ok(gst::FlowSuccess::Ok);
        };
        let rt = rt.nseconds();
        let frame = Frame {
            buf: buf.clone(),
            rt,
            end: rt + buf.duration().map_or(0, |d| d.nseconds()),
            key: !buf.flags().contains(gst::BufferFlags::DELTA_UNIT),
        };
        let mut guard = self.lock_state();
        if let Some(state) = guard.as_mut() {
            let clips = state.ring.push(frame);
            self.send_clips(state, clips);
        }
        Ok(gst::FlowSuccess::Ok)
    }

    fn transform_ip(&self, buf: &mut gst::BufferRef) -> Result<gst::FlowSuccess, gst::FlowError> {
        // Never called: the element is always in passthrough (same caps in and out).
        let _ = buf;
        Ok(gst::FlowSuccess::Ok)
    }
}
