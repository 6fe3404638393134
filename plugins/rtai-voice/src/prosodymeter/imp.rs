//! prosodymeter: passes audio through unchanged and measures each speech
//! segment that specvadgate (or any producer of the rtai protocol) marks:
//! pitch (YIN: F0 mean and P5–P95 range), level and speaking rate (syllable
//! nuclei per second). At the segment's `rtai-segment-end` it pushes the
//! serialized `rtai-prosody` event just before the end event and posts a
//! `prosody` element message (rtai_core::prosody, docs/prosodymeter.md).

use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;
use rtai_core::prosody::Prosody;
use rtai_core::{SegmentEvent, SegmentIdMeta};

use super::analysis::{Params, analyze};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "prosodymeter",
        gst::DebugColorFlags::empty(),
        Some("Prosody of speech segments"),
    )
});

const DEFAULT_MIN_PITCH: f64 = 60.0;
const DEFAULT_MAX_PITCH: f64 = 500.0;
const DEFAULT_MAX_DURATION_MS: u32 = 30_000;
const DEFAULT_POST_MESSAGES: bool = true;

#[derive(Debug, Clone)]
struct Settings {
    min_pitch: f64,
    max_pitch: f64,
    max_duration_ms: u32,
    post_messages: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            min_pitch: DEFAULT_MIN_PITCH,
            max_pitch: DEFAULT_MAX_PITCH,
            max_duration_ms: DEFAULT_MAX_DURATION_MS,
            post_messages: DEFAULT_POST_MESSAGES,
        }
    }
}

struct Open {
    id: u64,
    /// Mono samples of the segment so far (at most `max-duration`).
    samples: Vec<f32>,
    truncated: bool,
}

#[derive(Default)]
struct State {
    info: Option<gst_audio::AudioInfo>,
    open: Option<Open>,
    measured: u64,
    cancelled: u64,
}

#[derive(Default)]
pub struct ProsodyMeter {
    settings: Mutex<Settings>,
    state: Mutex<State>,
}

#[glib::object_subclass]
impl ObjectSubclass for ProsodyMeter {
    const NAME: &'static str = "GstProsodyMeter";
    type Type = super::ProsodyMeter;
    type ParentType = gst_base::BaseTransform;
}

/// Mono downmix of interleaved S16LE or F32LE audio, appended to `out`.
fn downmix(data: &[u8], info: &gst_audio::AudioInfo, out: &mut Vec<f32>, limit: usize) -> bool {
    let channels = info.channels().max(1) as usize;
    let float = info.format() == gst_audio::AudioFormat::F32le;
    let width = if float { 4 } else { 2 };
    let frame = width * channels;
    for f in data.chunks_exact(frame) {
        if out.len() >= limit {
            return false;
        }
        let sum: f32 = f
            .chunks_exact(width)
            .map(|s| {
                if float {
                    let v = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                    if v.is_finite() { v } else { 0.0 }
                } else {
                    i16::from_le_bytes([s[0], s[1]]) as f32 / 32768.0
                }
            })
            .sum();
        out.push(sum / channels as f32);
    }
    true
}

impl ProsodyMeter {
    fn measure(&self, open: Open, rate: u32) {
        let settings = self.settings.lock().unwrap().clone();
        let params = Params {
            min_pitch: settings.min_pitch,
            max_pitch: settings.max_pitch.max(settings.min_pitch * 1.5),
        };
        let m = analyze(&open.samples, rate, &params);
        let p = Prosody {
            segment_id: open.id,
            duration: (m.duration * 1e9) as u64,
            f0_mean: m.f0_mean,
            f0_min: m.f0_min,
            f0_max: m.f0_max,
            level_db: if m.level_db.is_finite() {
                m.level_db
            } else {
                -120.0
            },
            syllables: m.syllables,
            rate: m.rate,
            voiced_ratio: m.voiced_ratio,
        };
        gst::debug!(
            CAT,
            imp = self,
            "segment {}: {p:?}{}",
            open.id,
            if open.truncated {
                " (truncated at max-duration)"
            } else {
                ""
            }
        );
        self.state.lock().unwrap().measured += 1;
        if !self.obj().src_pad().push_event(p.to_event()) {
            gst::debug!(CAT, imp = self, "downstream did not take the prosody event");
        }
        if settings.post_messages {
            let _ = self.obj().post_message(p.to_message(&*self.obj()));
        }
    }

    fn stats(&self) -> gst::Structure {
        let state = self.state.lock().unwrap();
        gst::Structure::builder("prosodymeter-stats")
            .field("measured", state.measured)
            .field("cancelled", state.cancelled)
            .field("open", state.open.as_ref().map(|o| o.id).unwrap_or(0))
            .build()
    }
}

impl ObjectImpl for ProsodyMeter {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecDouble::builder("min-pitch")
                    .nick("Minimum pitch")
                    .blurb("Lowest fundamental frequency (Hz) the pitch tracker looks for")
                    .minimum(30.0)
                    .maximum(1000.0)
                    .default_value(DEFAULT_MIN_PITCH)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("max-pitch")
                    .nick("Maximum pitch")
                    .blurb("Highest fundamental frequency (Hz) the pitch tracker looks for (at least 1.5 × min-pitch)")
                    .minimum(50.0)
                    .maximum(2000.0)
                    .default_value(DEFAULT_MAX_PITCH)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-duration")
                    .nick("Maximum duration")
                    .blurb("Audio kept per segment (ms); a longer segment is measured on its first max-duration")
                    .minimum(100)
                    .maximum(600_000)
                    .default_value(DEFAULT_MAX_DURATION_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("post-messages")
                    .nick("Post messages")
                    .blurb("Post a 'prosody' element message per measured segment")
                    .default_value(DEFAULT_POST_MESSAGES)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("measured, cancelled, open (the open segment's id, 0 for none)")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        match pspec.name() {
            "min-pitch" => s.min_pitch = value.get().expect("type checked upstream"),
            "max-pitch" => s.max_pitch = value.get().expect("type checked upstream"),
            "max-duration" => s.max_duration_ms = value.get().expect("type checked upstream"),
            "post-messages" => s.post_messages = value.get().expect("type checked upstream"),
            _ => unimplemented!(),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock().unwrap();
        match pspec.name() {
            "min-pitch" => s.min_pitch.to_value(),
            "max-pitch" => s.max_pitch.to_value(),
            "max-duration" => s.max_duration_ms.to_value(),
            "post-messages" => s.post_messages.to_value(),
            "stats" => {
                drop(s);
                self.stats().to_value()
            }
            _ => unimplemented!(),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        self.obj().set_passthrough(true);
    }
}

impl GstObjectImpl for ProsodyMeter {}

impl ElementImpl for ProsodyMeter {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Prosody meter",
                "Filter/Analyzer/Audio",
                "Passes audio through and measures each speech segment's pitch (YIN), level and speaking rate; \
                 sends an rtai-prosody event before the segment's end",
                "rtai contributors",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst_audio::AudioCapsBuilder::new_interleaved()
                .format_list([gst_audio::AudioFormat::S16le, gst_audio::AudioFormat::F32le])
                .rate_range(8000..=192_000)
                .build();
            vec![
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &caps,
                )
                .expect("valid template"),
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &caps,
                )
                .expect("valid template"),
            ]
        });
        TEMPLATES.as_ref()
    }
}

impl BaseTransformImpl for ProsodyMeter {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = true;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = true;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        *self.state.lock().unwrap() = State::default();
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *self.state.lock().unwrap() = State::default();
        Ok(())
    }

    fn set_caps(&self, incaps: &gst::Caps, _outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let info = gst_audio::AudioInfo::from_caps(incaps)
            .map_err(|_| gst::loggable_error!(CAT, "unsupported caps {incaps}"))?;
        let mut state = self.state.lock().unwrap();
        if state
            .info
            .as_ref()
            .is_some_and(|i| i.rate() != info.rate() || i.channels() != info.channels())
            && state.open.take().is_some()
        {
            gst::debug!(
                CAT,
                imp = self,
                "format changed: the open segment is not measured"
            );
        }
        state.info = Some(info);
        Ok(())
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        if let Some(seg) = SegmentEvent::parse(&event) {
            let mut state = self.state.lock().unwrap();
            match seg {
                SegmentEvent::Start { id, .. } => {
                    state.open = Some(Open {
                        id,
                        samples: Vec::new(),
                        truncated: false,
                    });
                }
                SegmentEvent::Cancel { id, .. } => {
                    if state.open.as_ref().is_some_and(|o| o.id == id) {
                        state.open = None;
                        state.cancelled += 1;
                    }
                }
                SegmentEvent::End { id } => {
                    let rate = state.info.as_ref().map(|i| i.rate());
                    if let (Some(open), Some(rate)) = (state.open.take_if(|o| o.id == id), rate) {
                        drop(state);
                        // Before the end event: downstream has the measures when it closes the segment.
                        self.measure(open, rate);
                    }
                }
                SegmentEvent::Commit { .. } => {}
            }
        } else if let gst::EventView::FlushStop(_) = event.view() {
            self.state.lock().unwrap().open = None;
        }
        self.parent_sink_event(event)
    }

    fn transform_ip_passthrough(
        &self,
        buf: &gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let max_ms = self.settings.lock().unwrap().max_duration_ms;
        let mut state = self.state.lock().unwrap();
        let Some(info) = state.info.clone() else {
            return Ok(gst::FlowSuccess::Ok);
        };
        let Some(open) = state.open.as_mut() else {
            return Ok(gst::FlowSuccess::Ok);
        };
        // Buffers of another segment (a second producer) are not this one's.
        if SegmentIdMeta::get(buf).is_some_and(|id| id != open.id) {
            return Ok(gst::FlowSuccess::Ok);
        }
        let limit = (info.rate() as u64 * max_ms as u64 / 1000) as usize;
        if let Ok(map) = buf.map_readable()
            && !downmix(&map, &info, &mut open.samples, limit)
        {
            open.truncated = true;
        }
        Ok(gst::FlowSuccess::Ok)
    }
}
