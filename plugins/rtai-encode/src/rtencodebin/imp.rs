//! rtencodebin: `videoconvert ! <encoder>` behind ghost pads. On the way to
//! READY it tries the codec's candidates in order (hardware first unless
//! `prefer-hardware=false`): a candidate is used only if its factory exists
//! and a fresh instance encodes a test frame in a throwaway pipeline, which is
//! what catches a VA-API plugin without a device or an NVENC without a GPU.

use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::EncodeCodec;
use crate::candidates::{self, Candidate, Codec};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "rtencodebin",
        gst::DebugColorFlags::empty(),
        Some("Hardware-first encoder bin"),
    )
});

const DEFAULT_CODEC: EncodeCodec = EncodeCodec::H264;
const DEFAULT_PREFER_HARDWARE: bool = true;
const DEFAULT_BITRATE: u32 = 2000;
const DEFAULT_KEY_FRAME_INTERVAL: u32 = 60;
/// How long a candidate may take to encode its test frame.
const TRIAL_TIMEOUT: gst::ClockTime = gst::ClockTime::from_seconds(10);

#[derive(Debug, Clone)]
struct Settings {
    codec: EncodeCodec,
    prefer_hardware: bool,
    bitrate: u32,
    key_frame_interval: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            codec: DEFAULT_CODEC,
            prefer_hardware: DEFAULT_PREFER_HARDWARE,
            bitrate: DEFAULT_BITRATE,
            key_frame_interval: DEFAULT_KEY_FRAME_INTERVAL,
        }
    }
}

/// The chosen encoder while the bin is up.
struct State {
    candidate: Candidate,
    convert: gst::Element,
    encoder: gst::Element,
}

pub struct RtEncodeBin {
    sinkpad: gst::GhostPad,
    srcpad: gst::GhostPad,
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
}

fn codec_of(c: EncodeCodec) -> Codec {
    match c {
        EncodeCodec::H264 => Codec::H264,
        EncodeCodec::Vp8 => Codec::Vp8,
        EncodeCodec::Av1 => Codec::Av1,
    }
}

/// The encoder's always sink and src pads: the bin's ghost pads target them.
fn always_pads(encoder: &gst::Element) -> Result<(gst::Pad, gst::Pad), String> {
    match (encoder.static_pad("sink"), encoder.static_pad("src")) {
        (Some(sink), Some(src)) => Ok((sink, src)),
        _ => Err(
            "has no always sink and src pads (request or sometimes pads are not supported)".into(),
        ),
    }
}

/// Whether a fresh instance of `c` encodes one frame; the reason when not.
fn trial(c: &Candidate, codec: Codec, settings: &Settings) -> Result<(), String> {
    let encoder = gst::ElementFactory::make(c.factory)
        .build()
        .map_err(|_| "not installed".to_string())?;
    always_pads(&encoder)?;
    let problems =
        candidates::configure(&encoder, c, settings.bitrate, settings.key_frame_interval);
    if !problems.is_empty() {
        gst::debug!(
            CAT,
            "{}: settings not applied: {}",
            c.factory,
            problems.join("; ")
        );
    }
    let pipeline = gst::Pipeline::new();
    let make = |f: &str| {
        gst::ElementFactory::make(f)
            .build()
            .map_err(|_| format!("{f} is missing"))
    };
    let src = make("videotestsrc")?;
    src.set_property("num-buffers", 2i32);
    let filter = make("capsfilter")?;
    filter.set_property(
        "caps",
        gst::Caps::builder("video/x-raw")
            .field("width", 320i32)
            .field("height", 240i32)
            .field("framerate", gst::Fraction::new(30, 1))
            .build(),
    );
    let convert = make("videoconvert")?;
    let out_filter = make("capsfilter")?;
    out_filter.set_property("caps", gst::Caps::new_empty_simple(codec.caps_name()));
    let sink = make("fakesink")?;
    sink.set_property("sync", false);
    pipeline
        .add_many([&src, &filter, &convert, &encoder, &out_filter, &sink])
        .map_err(|e| e.to_string())?;
    gst::Element::link_many([&src, &filter, &convert, &encoder, &out_filter, &sink])
        .map_err(|_| format!("does not produce {}", codec.caps_name()))?;
    let result = (|| {
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|_| "cannot start (no device?)".to_string())?;
        let bus = pipeline.bus().unwrap();
        match bus.timed_pop_filtered(
            TRIAL_TIMEOUT,
            &[gst::MessageType::Eos, gst::MessageType::Error],
        ) {
            None => Err(format!("no output within {TRIAL_TIMEOUT}")),
            Some(msg) => match msg.view() {
                gst::MessageView::Error(e) => Err(format!("{}", e.error())),
                _ => {
                    let last = sink.property::<Option<gst::Sample>>("last-sample");
                    if last.is_some() {
                        Ok(())
                    } else {
                        Err("encoded nothing".into())
                    }
                }
            },
        }
    })();
    let _ = pipeline.set_state(gst::State::Null);
    result
}

impl RtEncodeBin {
    /// Picks the first candidate that works, builds `videoconvert ! encoder` and links the ghost pads.
    fn select(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings.lock().unwrap().clone();
        let codec = codec_of(settings.codec);
        let mut order = candidates::candidates(codec);
        if !settings.prefer_hardware {
            order.retain(|c| !c.hardware);
        }
        let mut tried = Vec::new();
        let mut chosen = None;
        for c in order {
            // The instance used is a new one: the trial's went away with its pipeline.
            let usable = trial(&c, codec, &settings).and_then(|()| {
                let encoder = gst::ElementFactory::make(c.factory)
                    .build()
                    .map_err(|_| "vanished after its trial".to_string())?;
                let (_, src) = always_pads(&encoder)?;
                Ok((encoder, src))
            });
            match usable {
                Ok(found) => {
                    chosen = Some((c, found));
                    break;
                }
                Err(reason) => {
                    if reason != "not installed" {
                        gst::warning!(CAT, imp = self, "{} cannot be used: {reason}", c.factory);
                    }
                    tried.push(format!("{}: {reason}", c.factory));
                }
            }
        }
        let Some((c, (encoder, encoder_src))) = chosen else {
            return Err(gst::error_msg!(
                gst::CoreError::MissingPlugin,
                ("No working {} encoder on this machine", codec.name()),
                ["tried {}", tried.join("; ")]
            ));
        };
        candidates::configure(&encoder, &c, settings.bitrate, settings.key_frame_interval);
        let convert = gst::ElementFactory::make("videoconvert")
            .build()
            .map_err(|_| {
                gst::error_msg!(gst::CoreError::MissingPlugin, ("videoconvert is missing"))
            })?;
        let convert_sink = convert.static_pad("sink").ok_or_else(|| {
            gst::error_msg!(gst::CoreError::Pad, ("videoconvert has no sink pad"))
        })?;
        let obj = self.obj();
        obj.add_many([&convert, &encoder])
            .map_err(|e| gst::error_msg!(gst::CoreError::Failed, ("{}", e)))?;
        let wired = (|| {
            convert
                .link(&encoder)
                .map_err(|e| gst::error_msg!(gst::CoreError::Negotiation, ("{}", e)))?;
            self.sinkpad
                .set_target(Some(&convert_sink))
                .map_err(|e| gst::error_msg!(gst::CoreError::Failed, ("{}", e)))?;
            self.srcpad
                .set_target(Some(&encoder_src))
                .map_err(|e| gst::error_msg!(gst::CoreError::Failed, ("{}", e)))
        })();
        if let Err(e) = wired {
            // Leave the bin empty, as teardown does: the next start tries again.
            self.unwire(&convert, &encoder);
            return Err(e);
        }
        convert.sync_state_with_parent().ok();
        encoder.sync_state_with_parent().ok();
        gst::info!(
            CAT,
            imp = self,
            "encoding {} with {} ({})",
            codec.name(),
            c.factory,
            if c.hardware { "hardware" } else { "software" }
        );
        let message = gst::message::Element::builder(
            gst::Structure::builder("rtencodebin-selected")
                .field("encoder", c.factory)
                .field("hardware", c.hardware)
                .field("codec", codec.name())
                .field("tried", tried.join("; "))
                .build(),
        )
        .src(&*obj)
        .build();
        *self.state.lock().unwrap() = Some(State {
            candidate: c,
            convert,
            encoder,
        });
        let _ = obj.post_message(message);
        Ok(())
    }

    fn teardown(&self) {
        let Some(state) = self.state.lock().unwrap().take() else {
            return;
        };
        self.unwire(&state.convert, &state.encoder);
    }

    /// Untargets the ghost pads and takes `convert` and `encoder` out of the bin.
    fn unwire(&self, convert: &gst::Element, encoder: &gst::Element) {
        let _ = self.sinkpad.set_target(None::<&gst::Pad>);
        let _ = self.srcpad.set_target(None::<&gst::Pad>);
        for e in [convert, encoder] {
            let _ = e.set_state(gst::State::Null);
            let _ = self.obj().remove(e);
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for RtEncodeBin {
    const NAME: &'static str = "GstRtEncodeBin";
    type Type = super::RtEncodeBin;
    type ParentType = gst::Bin;

    fn with_class(klass: &Self::Class) -> Self {
        let sinkpad =
            gst::GhostPad::builder_from_template(&klass.pad_template("sink").unwrap()).build();
        let srcpad =
            gst::GhostPad::builder_from_template(&klass.pad_template("src").unwrap()).build();
        Self {
            sinkpad,
            srcpad,
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(None),
        }
    }
}

impl ObjectImpl for RtEncodeBin {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecEnum::builder_with_default("codec", DEFAULT_CODEC)
                    .nick("Codec")
                    .blurb("What to encode to; the encoder is chosen when the bin goes to READY")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("prefer-hardware")
                    .nick("Prefer hardware")
                    .blurb("Try hardware encoders (VA-API, VA, NVENC, V4L2) before software ones")
                    .default_value(DEFAULT_PREFER_HARDWARE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("bitrate")
                    .nick("Bitrate")
                    .blurb("Target bitrate in kbit/s, mapped to the chosen encoder's own property and unit")
                    .minimum(1)
                    .maximum(1_000_000)
                    .default_value(DEFAULT_BITRATE)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("key-frame-interval")
                    .nick("Key frame interval")
                    .blurb("Most frames between key frames, mapped to the chosen encoder's property")
                    .minimum(1)
                    .maximum(100_000)
                    .default_value(DEFAULT_KEY_FRAME_INTERVAL)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("active-encoder")
                    .nick("Active encoder")
                    .blurb("Factory name of the encoder in use (empty before READY)")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        match pspec.name() {
            "codec" => s.codec = value.get().expect("type checked upstream"),
            "prefer-hardware" => s.prefer_hardware = value.get().expect("type checked upstream"),
            "bitrate" => {
                s.bitrate = value.get().expect("type checked upstream");
                let bitrate = s.bitrate;
                drop(s);
                // Live: the running encoder follows (each encoder handles a change its own way).
                if let Some(state) = self.state.lock().unwrap().as_ref()
                    && let Some((property, per_kbit)) = state.candidate.bitrate
                    && let Err(e) = candidates::set(
                        &state.encoder,
                        property,
                        &(bitrate as u64 * per_kbit).to_string(),
                    )
                {
                    gst::warning!(CAT, imp = self, "cannot change the bitrate: {e}");
                }
            }
            "key-frame-interval" => {
                s.key_frame_interval = value.get().expect("type checked upstream")
            }
            other => unreachable!("unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "active-encoder" => self
                .state
                .lock()
                .unwrap()
                .as_ref()
                .map(|s| s.candidate.factory)
                .unwrap_or("")
                .to_value(),
            name => {
                let s = self.settings.lock().unwrap();
                match name {
                    "codec" => s.codec.to_value(),
                    "prefer-hardware" => s.prefer_hardware.to_value(),
                    "bitrate" => s.bitrate.to_value(),
                    "key-frame-interval" => s.key_frame_interval.to_value(),
                    other => unreachable!("unknown property {other}"),
                }
            }
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add_pad(&self.sinkpad).unwrap();
        obj.add_pad(&self.srcpad).unwrap();
    }
}

impl GstObjectImpl for RtEncodeBin {}

impl ElementImpl for RtEncodeBin {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Real-time encoder bin",
                "Codec/Encoder/Video",
                "Encodes to H.264, VP8 or AV1 with the first encoder that really works on this machine: hardware (VA-API, VA, NVENC, V4L2) first, then software with real-time settings; uniform bitrate and key-frame interval",
                "rtai contributors",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let sink = gst::PadTemplate::new(
                "sink",
                gst::PadDirection::Sink,
                gst::PadPresence::Always,
                &gst::Caps::new_empty_simple("video/x-raw"),
            )
            .unwrap();
            let mut src_caps = gst::Caps::new_empty();
            for name in ["video/x-h264", "video/x-vp8", "video/x-av1"] {
                src_caps
                    .get_mut()
                    .unwrap()
                    .append(gst::Caps::new_empty_simple(name));
            }
            let src = gst::PadTemplate::new(
                "src",
                gst::PadDirection::Src,
                gst::PadPresence::Always,
                &src_caps,
            )
            .unwrap();
            vec![sink, src]
        });
        PAD_TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::NullToReady
            && let Err(err) = self.select()
        {
            self.post_error_message(err);
            return Err(gst::StateChangeError);
        }
        let ret = self.parent_change_state(transition);
        if transition == gst::StateChange::ReadyToNull
            || (ret.is_err() && transition == gst::StateChange::NullToReady)
        {
            self.teardown();
        }
        ret
    }
}

impl BinImpl for RtEncodeBin {}
