//! objtracker: in-place transform on video/x-raw that reads detection ROI metas
//! (`GstVideoRegionOfInterestMeta` with a `detection` param, see
//! `rtai_core::inference`), tracks them with ByteTrack-style two-stage IoU
//! association (`crate::bytetrack`) and writes track ids: the ROI meta's `id`
//! and an `object_id` param `{id: gint, predicted: gboolean}`.
//!
//! A frame carrying no detection ROI went without inference (upstream `interval` > 1)
//! unless it carries inferclient's inference marker (the custom meta
//! `RtaiInferredMeta`: inferred, nothing found) or `interval` says otherwise; on such
//! frames the tracks move by prediction and, with `emit-predicted`, appear as new ROI
//! metas with `predicted = true`.
//! Confirmed tracks post `object-enter`, removed ones `object-leave` on the bus.

use std::sync::{LazyLock, Mutex, MutexGuard};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;
use gst_video::VideoRegionOfInterestMeta;
use rtai_core::inference::{DETECTION_PARAM, OBJECT_ID_PARAM};

use crate::bytetrack::{BBox, Config, Detection, Event, Stats, Tracker};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "objtracker",
        gst::DebugColorFlags::empty(),
        Some("ByteTrack-style object tracker"),
    )
});

const DEFAULT_HIGH_THRESHOLD: f64 = 0.5;
const DEFAULT_LOW_THRESHOLD: f64 = 0.1;
const DEFAULT_NEW_TRACK_THRESHOLD: f64 = 0.6;
const DEFAULT_MATCH_IOU: f64 = 0.2;
const DEFAULT_LOW_MATCH_IOU: f64 = 0.5;
const DEFAULT_MAX_LOST_FRAMES: u32 = 30;
const DEFAULT_CLASS_AWARE: bool = true;
const DEFAULT_INTERVAL: u32 = 0;
const DEFAULT_EMIT_PREDICTED: bool = true;

#[derive(Debug, Clone)]
struct Settings {
    high_threshold: f64,
    low_threshold: f64,
    new_track_threshold: f64,
    match_iou: f64,
    low_match_iou: f64,
    max_lost_frames: u32,
    class_aware: bool,
    interval: u32,
    emit_predicted: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            high_threshold: DEFAULT_HIGH_THRESHOLD,
            low_threshold: DEFAULT_LOW_THRESHOLD,
            new_track_threshold: DEFAULT_NEW_TRACK_THRESHOLD,
            match_iou: DEFAULT_MATCH_IOU,
            low_match_iou: DEFAULT_LOW_MATCH_IOU,
            max_lost_frames: DEFAULT_MAX_LOST_FRAMES,
            class_aware: DEFAULT_CLASS_AWARE,
            interval: DEFAULT_INTERVAL,
            emit_predicted: DEFAULT_EMIT_PREDICTED,
        }
    }
}

impl Settings {
    fn config(&self) -> Config {
        Config {
            high_threshold: self.high_threshold,
            low_threshold: self.low_threshold,
            new_track_threshold: self.new_track_threshold,
            match_iou: self.match_iou,
            low_match_iou: self.low_match_iou,
            max_lost_frames: self.max_lost_frames,
            class_aware: self.class_aware,
            ..Config::default()
        }
    }
}

struct State {
    tracker: Tracker,
    /// Frame size from the caps, to clip predicted boxes.
    size: Option<(u32, u32)>,
    /// Frames since the last frame that went through inference (for `interval` > 1).
    since_inference: u32,
    /// ROI metas ignored because their `detection` param was malformed.
    ignored: u64,
    /// PTS of the last frame, for the messages posted at EOS.
    last_pts: Option<gst::ClockTime>,
}

impl State {
    fn new(s: &Settings) -> Self {
        Self {
            tracker: Tracker::new(s.config()),
            size: None,
            since_inference: 0,
            ignored: 0,
            last_pts: None,
        }
    }
}

pub struct ObjTracker {
    settings: Mutex<Settings>,
    state: Mutex<State>,
}

/// One detection ROI of the current buffer: its position among the buffer's ROI metas and what it says.
struct Parsed {
    roi_index: usize,
    detection: Detection,
}

/// Reads a ROI's `detection` param. `Err` explains why it is malformed.
fn parse_detection(
    roi: &VideoRegionOfInterestMeta,
    s: &gst::StructureRef,
) -> Result<Detection, String> {
    let confidence = match s.get::<f64>("confidence") {
        Ok(c) => c,
        Err(_) => match s.get::<f32>("confidence") {
            Ok(c) => c as f64,
            Err(_) if s.has_field("confidence") => return Err("confidence is not a double".into()),
            Err(_) => return Err("no confidence".into()),
        },
    };
    if !confidence.is_finite() || !(0.0..=1.0).contains(&confidence) {
        return Err(format!("confidence {confidence} outside 0..1"));
    }
    let label = match s.get::<Option<String>>("label") {
        Ok(Some(l)) if !l.is_empty() => l,
        Ok(_) => roi.roi_type().to_string(),
        Err(_) if s.has_field("label") => return Err("label is not a string".into()),
        Err(_) => roi.roi_type().to_string(),
    };
    let (x, y, w, h) = roi.rect();
    if w == 0 || h == 0 {
        return Err(format!("empty rectangle {w}x{h}"));
    }
    Ok(Detection {
        bbox: BBox::new(x as f64, y as f64, w as f64, h as f64),
        score: confidence,
        label,
    })
}

/// Sets (or replaces) the ROI's `object_id` param and its `id`.
fn write_object_id(roi: &mut VideoRegionOfInterestMeta, id: u32, predicted: bool) {
    let gint = id.min(i32::MAX as u32) as i32;
    roi.set_id(gint);
    // SAFETY: VideoRegionOfInterestMeta is a transparent wrapper of the C struct, which we
    // hold mutably; its params list holds GstStructures owned by the meta.
    unsafe {
        let raw = roi as *mut VideoRegionOfInterestMeta
            as *mut gst_video::ffi::GstVideoRegionOfInterestMeta;
        let mut list = (*raw).params;
        while !list.is_null() {
            let s = gst::StructureRef::from_glib_borrow_mut(
                (*list).data as *mut gst::ffi::GstStructure,
            );
            if s.name() == OBJECT_ID_PARAM {
                s.set("id", gint);
                s.set("predicted", predicted);
                return;
            }
            list = (*list).next;
        }
    }
    roi.add_param(
        gst::Structure::builder(OBJECT_ID_PARAM)
            .field("id", gint)
            .field("predicted", predicted)
            .build(),
    );
}

/// Rounds and clips a box to the frame; `None` when nothing of it is inside.
fn clip(b: &BBox, size: Option<(u32, u32)>) -> Option<(u32, u32, u32, u32)> {
    let (fw, fh) = size.map_or((f64::MAX, f64::MAX), |(w, h)| (w as f64, h as f64));
    let x0 = b.x.max(0.0);
    let y0 = b.y.max(0.0);
    let x1 = (b.x + b.w).min(fw);
    let y1 = (b.y + b.h).min(fh);
    if !(x1 - x0 >= 1.0 && y1 - y0 >= 1.0) {
        return None;
    }
    let (x, y) = (x0.round() as u32, y0.round() as u32);
    Some((
        x,
        y,
        ((x1.round() as u32).saturating_sub(x)).max(1),
        ((y1.round() as u32).saturating_sub(y)).max(1),
    ))
}

fn bbox_value(b: &BBox) -> gst::Array {
    let r = clip(b, None).unwrap_or((b.x.max(0.0) as u32, b.y.max(0.0) as u32, 0, 0));
    gst::Array::new([r.0, r.1, r.2, r.3])
}

impl ObjTracker {
    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn running_time(&self, pts: Option<gst::ClockTime>) -> Option<gst::ClockTime> {
        let segment = self.obj().segment();
        segment
            .downcast_ref::<gst::ClockTime>()
            .and_then(|s| s.to_running_time(pts?))
    }

    fn post_events(&self, events: Vec<Event>, pts: Option<gst::ClockTime>, reason: &str) {
        if events.is_empty() {
            return;
        }
        let running_time = self.running_time(pts).map_or(u64::MAX, |t| t.nseconds());
        for event in events {
            let s = match event {
                Event::Enter { id, label, bbox } => gst::Structure::builder("object-enter")
                    .field("track-id", id)
                    .field("label", label)
                    .field("running-time", running_time)
                    .field("bbox", bbox_value(&bbox))
                    .build(),
                Event::Leave {
                    id,
                    label,
                    bbox,
                    frames,
                } => gst::Structure::builder("object-leave")
                    .field("track-id", id)
                    .field("label", label)
                    .field("running-time", running_time)
                    .field("bbox", bbox_value(&bbox))
                    .field("frames", frames)
                    .field("reason", reason)
                    .build(),
            };
            gst::debug!(CAT, imp = self, "{s}");
            let _ = self
                .obj()
                .post_message(gst::message::Element::builder(s).src(&*self.obj()).build());
        }
    }

    fn stats(&self) -> gst::Structure {
        let state = self.lock_state();
        let Stats {
            frames,
            detection_frames,
            predicted_frames,
            detections,
            matched,
            matched_low,
            created,
            lost,
            predicted_boxes,
        } = state.tracker.stats;
        gst::Structure::builder("objtracker-stats")
            .field("frames", frames)
            .field("detection-frames", detection_frames)
            .field("predicted-frames", predicted_frames)
            .field("detections", detections)
            .field("matched", matched)
            .field("matched-low", matched_low)
            .field("created", created)
            .field("total-tracks", created)
            .field("lost", lost)
            .field("active-tracks", state.tracker.active() as u64)
            .field("predicted-boxes", predicted_boxes)
            .field("ignored", state.ignored)
            .build()
    }
}

#[glib::object_subclass]
impl ObjectSubclass for ObjTracker {
    const NAME: &'static str = "GstObjTracker";
    type Type = super::ObjTracker;
    type ParentType = gst_base::BaseTransform;

    fn new() -> Self {
        let settings = Settings::default();
        let state = State::new(&settings);
        Self {
            settings: Mutex::new(settings),
            state: Mutex::new(state),
        }
    }
}

impl ObjectImpl for ObjTracker {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let ratio =
                |name: &'static str, nick: &'static str, blurb: &'static str, default: f64| {
                    glib::ParamSpecDouble::builder(name)
                        .nick(nick)
                        .blurb(blurb)
                        .minimum(0.0)
                        .maximum(1.0)
                        .default_value(default)
                        .mutable_playing()
                        .build()
                };
            vec![
                ratio(
                    "high-threshold",
                    "High threshold",
                    "Detections with at least this confidence are matched in the first stage",
                    DEFAULT_HIGH_THRESHOLD,
                ),
                ratio(
                    "low-threshold",
                    "Low threshold",
                    "Detections below high-threshold but at least this confident are matched in the second stage; lower ones are ignored",
                    DEFAULT_LOW_THRESHOLD,
                ),
                ratio(
                    "new-track-threshold",
                    "New track threshold",
                    "An unmatched high detection starts a track only with at least this confidence",
                    DEFAULT_NEW_TRACK_THRESHOLD,
                ),
                ratio(
                    "match-iou",
                    "Match IoU",
                    "Least IoU between a predicted track box and a high-confidence detection to match them",
                    DEFAULT_MATCH_IOU,
                ),
                ratio(
                    "low-match-iou",
                    "Low match IoU",
                    "Least IoU between a predicted track box and a low-confidence detection to match them",
                    DEFAULT_LOW_MATCH_IOU,
                ),
                glib::ParamSpecUInt::builder("max-lost-frames")
                    .nick("Max lost frames")
                    .blurb("A track unmatched for more than this many frames (with or without inference) is removed")
                    .maximum(100_000)
                    .default_value(DEFAULT_MAX_LOST_FRAMES)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("class-aware")
                    .nick("Class aware")
                    .blurb("Match detections only to tracks of the same label")
                    .default_value(DEFAULT_CLASS_AWARE)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("interval")
                    .nick("Inference interval")
                    .blurb(
                        "Upstream runs inference every Nth frame. 0: any frame without detection ROIs went without \
                         inference; 1: every frame did (no detections = nothing seen); N>1: a frame without detections \
                         N frames after the last inferred one is an empty inference result. A frame inferclient marked \
                         as inferred (RtaiInferredMeta) always is an inference frame",
                    )
                    .maximum(10_000)
                    .default_value(DEFAULT_INTERVAL)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("emit-predicted")
                    .nick("Emit predicted")
                    .blurb("On frames without inference, attach a ROI meta (object_id predicted=true) per tracked object")
                    .default_value(DEFAULT_EMIT_PREDICTED)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb(
                        "frames, detection-frames, predicted-frames, detections, matched, matched-low, created, \
                         total-tracks, lost, active-tracks, predicted-boxes, ignored (malformed ROIs)",
                    )
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = self.settings.lock().unwrap();
        match pspec.name() {
            "high-threshold" => {
                settings.high_threshold = value.get().expect("type checked upstream")
            }
            "low-threshold" => settings.low_threshold = value.get().expect("type checked upstream"),
            "new-track-threshold" => {
                settings.new_track_threshold = value.get().expect("type checked upstream")
            }
            "match-iou" => settings.match_iou = value.get().expect("type checked upstream"),
            "low-match-iou" => settings.low_match_iou = value.get().expect("type checked upstream"),
            "max-lost-frames" => {
                settings.max_lost_frames = value.get().expect("type checked upstream")
            }
            "class-aware" => settings.class_aware = value.get().expect("type checked upstream"),
            "interval" => settings.interval = value.get().expect("type checked upstream"),
            "emit-predicted" => {
                settings.emit_predicted = value.get().expect("type checked upstream")
            }
            other => unreachable!("objtracker has no writable property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = self.settings.lock().unwrap();
        match pspec.name() {
            "high-threshold" => settings.high_threshold.to_value(),
            "low-threshold" => settings.low_threshold.to_value(),
            "new-track-threshold" => settings.new_track_threshold.to_value(),
            "match-iou" => settings.match_iou.to_value(),
            "low-match-iou" => settings.low_match_iou.to_value(),
            "max-lost-frames" => settings.max_lost_frames.to_value(),
            "class-aware" => settings.class_aware.to_value(),
            "interval" => settings.interval.to_value(),
            "emit-predicted" => settings.emit_predicted.to_value(),
            "stats" => {
                drop(settings);
                self.stats().to_value()
            }
            other => unreachable!("objtracker has no property {other}"),
        }
    }
}

impl GstObjectImpl for ObjTracker {}

impl ElementImpl for ObjTracker {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Object tracker",
                "Filter/Analyzer/Video",
                "Tracks detection ROI metas across frames (ByteTrack-style two-stage IoU association with Kalman \
                 prediction), writes stable track ids, predicts boxes on frames without inference and posts \
                 object-enter/object-leave messages",
                "rtai contributors",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst::Caps::builder("video/x-raw").any_features().build();
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &caps,
                )
                .expect("valid template"),
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &caps,
                )
                .expect("valid template"),
            ]
        });
        TEMPLATES.as_ref()
    }
}

impl BaseTransformImpl for ObjTracker {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings.lock().unwrap().clone();
        *self.lock_state() = State::new(&settings);
        Ok(())
    }

    fn set_caps(&self, incaps: &gst::Caps, outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let size = incaps
            .structure(0)
            .and_then(|s| Some((s.get::<i32>("width").ok()?, s.get::<i32>("height").ok()?)));
        let size = size
            .filter(|&(w, h)| w > 0 && h > 0)
            .map(|(w, h)| (w as u32, h as u32));
        gst::debug!(
            CAT,
            imp = self,
            "caps {incaps} → {outcaps}, frame size {size:?}"
        );
        self.lock_state().size = size;
        Ok(())
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        match event.view() {
            gst::EventView::Eos(_) => {
                let (events, pts) = {
                    let mut state = self.lock_state();
                    (state.tracker.finish(), state.last_pts)
                };
                self.post_events(events, pts, "eos");
            }
            gst::EventView::FlushStop(_) => {
                // After a seek the old tracks mean nothing; start afresh (ids keep increasing, stats are kept).
                let mut state = self.lock_state();
                state.tracker.reset();
                state.since_inference = 0;
            }
            _ => {}
        }
        self.parent_sink_event(event)
    }

    fn transform_ip(&self, buf: &mut gst::BufferRef) -> Result<gst::FlowSuccess, gst::FlowError> {
        let settings = self.settings.lock().unwrap().clone();
        // Read the detections.
        let mut parsed = Vec::new();
        let mut has_detection_rois = false;
        let mut ignored = 0u64;
        for (roi_index, roi) in buf.iter_meta::<VideoRegionOfInterestMeta>().enumerate() {
            let Some(param) = roi.param(DETECTION_PARAM) else {
                continue;
            };
            has_detection_rois = true;
            match parse_detection(&roi, param) {
                Ok(detection) => parsed.push(Parsed {
                    roi_index,
                    detection,
                }),
                Err(why) => {
                    ignored += 1;
                    gst::debug!(
                        CAT,
                        imp = self,
                        "ignoring ROI {roi_index} ({}): {why} ({param})",
                        roi.roi_type()
                    );
                }
            }
        }

        // inferclient's marker (rtai_core::InferredMeta): inferred, zero detections included.
        let marked = rtai_core::InferredMeta::get(buf).is_some();

        let mut state = self.lock_state();
        state.ignored += ignored;
        state.last_pts = buf.pts().or(state.last_pts);
        state.tracker.config = settings.config();
        let inferred = has_detection_rois
            || marked
            || match settings.interval {
                0 => false,
                1 => true,
                n => state.since_inference + 1 >= n,
            };
        let out = if inferred {
            state.since_inference = 0;
            let dets: Vec<Detection> = parsed.iter().map(|p| p.detection.clone()).collect();
            state.tracker.update(&dets)
        } else {
            state.since_inference = state.since_inference.saturating_add(1);
            state.tracker.predict_only()
        };
        let size = state.size;
        drop(state);

        gst::log!(
            CAT,
            imp = self,
            "{} frame {:?}: {} detections, {} ids, {} predicted",
            if inferred { "inferred" } else { "predicted" },
            buf.pts(),
            parsed.len(),
            out.assignments.len(),
            out.predicted.len()
        );

        // Write the ids.
        if !out.assignments.is_empty() {
            let mut by_roi: Vec<(usize, u32)> = out
                .assignments
                .iter()
                .map(|&(det, id)| (parsed[det].roi_index, id))
                .collect();
            by_roi.sort_unstable();
            let mut next = by_roi.iter().peekable();
            for (roi_index, mut roi) in buf.iter_meta_mut::<VideoRegionOfInterestMeta>().enumerate()
            {
                let Some(&&(want, id)) = next.peek() else {
                    break;
                };
                if want == roi_index {
                    write_object_id(&mut roi, id, false);
                    next.next();
                }
            }
        }
        if settings.emit_predicted {
            for (id, label, bbox) in &out.predicted {
                let Some(rect) = clip(bbox, size) else {
                    continue;
                };
                let mut roi = VideoRegionOfInterestMeta::add(buf, label, rect);
                write_object_id(&mut roi, *id, true);
            }
        }
        self.post_events(out.events, buf.pts(), "lost");
        Ok(gst::FlowSuccess::Ok)
    }
}
