//! rtencodebin: `videoconvert ! <encoder>` behind ghost pads. On the way to
//! READY it tries the codec's candidates in order (hardware first unless
//! `prefer-hardware=false`): a candidate is used only if its factory exists
//! and a fresh instance encodes a test frame in a throwaway pipeline, which is
//! what catches a VA-API plugin without a device or an NVENC without a GPU.
//!
//! Trials run in their own thread and are abandoned after `trial-timeout`
//! (a stuck driver may never return, not even from `set_state(Null)`); each
//! candidate is tried once per process and the result cached. An encoder
//! that fails later (at the real resolution, or mid-stream) is replaced by
//! the next working candidate while streaming: the failed buffer goes to the
//! new encoder, which starts with a key frame, and the application gets a
//! warning and an `rtencodebin-fallback` element message instead of an error.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, mpsc};
use std::time::Duration;

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
/// Milliseconds a candidate may take to start, encode its test frames and stop.
const DEFAULT_TRIAL_TIMEOUT: u32 = 3000;

/// Trial outcomes of this process per (codec, factory): a device that worked
/// (or hung) a moment ago is not tried again at every start.
type TrialResults = HashMap<(Codec, &'static str), Result<(), String>>;
static TRIALS: LazyLock<Mutex<TrialResults>> = LazyLock::new(|| Mutex::new(HashMap::new()));

#[derive(Debug, Clone)]
struct Settings {
    codec: EncodeCodec,
    prefer_hardware: bool,
    bitrate: u32,
    key_frame_interval: u32,
    trial_timeout: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            codec: DEFAULT_CODEC,
            prefer_hardware: DEFAULT_PREFER_HARDWARE,
            bitrate: DEFAULT_BITRATE,
            key_frame_interval: DEFAULT_KEY_FRAME_INTERVAL,
            trial_timeout: DEFAULT_TRIAL_TIMEOUT,
        }
    }
}

/// The chosen encoder while the bin is up.
struct State {
    candidate: Candidate,
    convert: gst::Element,
    encoder: gst::Element,
    /// The candidates after this one, for a fallback while streaming.
    remaining: Vec<Candidate>,
    /// The encoder posted an error that a fallback may still absorb (held
    /// back from the application until no candidate is left).
    failure: Option<gst::Message>,
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

/// [`trial`] in its own thread, abandoned (left to finish or hang on its own)
/// after `trial-timeout`; the outcome is cached for the process.
fn trial_bounded(c: &Candidate, codec: Codec, settings: &Settings) -> Result<(), String> {
    if gst::ElementFactory::find(c.factory).is_none() {
        return Err("not installed".into());
    }
    if let Some(known) = TRIALS.lock().unwrap().get(&(codec, c.factory)) {
        gst::debug!(CAT, "{}: trial result cached: {known:?}", c.factory);
        return known.clone();
    }
    let timeout = Duration::from_millis(settings.trial_timeout as u64);
    let (tx, rx) = mpsc::channel();
    let (candidate, s) = (*c, settings.clone());
    let spawned = std::thread::Builder::new()
        .name(format!("rtencodebin-trial-{}", c.factory))
        .spawn(move || {
            let _ = tx.send(trial(&candidate, codec, &s));
        });
    let result = match spawned {
        Err(e) => Err(format!("cannot start a trial thread: {e}")),
        Ok(_) => rx.recv_timeout(timeout).unwrap_or_else(|_| {
            Err(format!(
                "trial overran {} ms (stuck driver?): abandoned",
                timeout.as_millis()
            ))
        }),
    };
    TRIALS
        .lock()
        .unwrap()
        .insert((codec, c.factory), result.clone());
    result
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
        let timeout = gst::ClockTime::from_mseconds(settings.trial_timeout as u64);
        match bus.timed_pop_filtered(timeout, &[gst::MessageType::Eos, gst::MessageType::Error]) {
            None => Err(format!("no output within {timeout}")),
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
        let mut order = order.into_iter();
        for c in order.by_ref() {
            match self.usable(&c, codec, &settings) {
                Ok(found) => {
                    chosen = Some((c, found));
                    break;
                }
                Err(reason) => tried.push(format!("{}: {reason}", c.factory)),
            }
        }
        let remaining: Vec<Candidate> = order.collect();
        let Some((c, (encoder, encoder_src))) = chosen else {
            return Err(gst::error_msg!(
                gst::CoreError::MissingPlugin,
                ("No working {} encoder on this machine", codec.name()),
                ["tried {}", tried.join("; ")]
            ));
        };
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
            remaining,
            failure: None,
        });
        let _ = obj.post_message(message);
        Ok(())
    }

    /// A fresh, configured instance of `c` if its (cached, bounded) trial
    /// passes, with its src pad; the reason when not.
    fn usable(
        &self,
        c: &Candidate,
        codec: Codec,
        settings: &Settings,
    ) -> Result<(gst::Element, gst::Pad), String> {
        // The instance used is a new one: the trial's went away with its pipeline.
        let usable = trial_bounded(c, codec, settings).and_then(|()| {
            let encoder = gst::ElementFactory::make(c.factory)
                .build()
                .map_err(|_| "vanished after its trial".to_string())?;
            let (_, src) = always_pads(&encoder)?;
            Ok((encoder, src))
        });
        match &usable {
            Ok((encoder, _)) => {
                candidates::configure(encoder, c, settings.bitrate, settings.key_frame_interval);
            }
            Err(reason) if reason != "not installed" => {
                gst::warning!(CAT, imp = self, "{} cannot be used: {reason}", c.factory);
            }
            Err(_) => {}
        }
        usable
    }

    /// The sink pad's chain: on to videoconvert and the encoder; when the
    /// encoder failed on this buffer, the next candidate takes over and gets
    /// the buffer again.
    fn sink_chain(
        &self,
        pad: &gst::GhostPad,
        buffer: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        loop {
            let result = gst::ProxyPad::chain_default(pad, Some(&*self.obj()), buffer.clone());
            let failed = self
                .state
                .lock()
                .unwrap()
                .as_ref()
                .is_some_and(|s| s.failure.is_some());
            if result.is_ok() || !failed {
                return result;
            }
            if !self.fall_back() {
                return result;
            }
        }
    }

    /// Replaces the failed encoder with the next working candidate. False
    /// when none is left: the held-back error goes to the application.
    fn fall_back(&self) -> bool {
        let settings = self.settings.lock().unwrap().clone();
        let codec = codec_of(settings.codec);
        let Some((old, old_candidate, convert, mut remaining, failure)) =
            self.state.lock().unwrap().as_mut().map(|s| {
                (
                    s.encoder.clone(),
                    s.candidate,
                    s.convert.clone(),
                    std::mem::take(&mut s.remaining),
                    s.failure.take(),
                )
            })
        else {
            return false;
        };
        let reason = failure
            .as_ref()
            .and_then(|m| match m.view() {
                gst::MessageView::Error(e) => Some(e.error().to_string()),
                _ => None,
            })
            .unwrap_or_else(|| "failed".into());
        let obj = self.obj();
        // The failed encoder leaves the bin; stopping it may hang on a stuck
        // driver, so that happens in a thread nobody waits for.
        convert.unlink(&old);
        let _ = self.srcpad.set_target(None::<&gst::Pad>);
        let _ = obj.remove(&old);
        let stopping = old.clone();
        let _ = std::thread::Builder::new()
            .name("rtencodebin-stop-failed".into())
            .spawn(move || {
                let _ = stopping.set_state(gst::State::Null);
            });
        while !remaining.is_empty() {
            let c = remaining.remove(0);
            let Ok((encoder, src)) = self.usable(&c, codec, &settings) else {
                continue;
            };
            let wired = obj.add(&encoder).is_ok()
                && convert.link(&encoder).is_ok()
                && self.srcpad.set_target(Some(&src)).is_ok()
                && encoder.sync_state_with_parent().is_ok();
            if !wired {
                let _ = encoder.set_state(gst::State::Null);
                let _ = obj.remove(&encoder);
                continue;
            }
            // videoconvert negotiates again with the new encoder's caps.
            if let Some(sink) = encoder.static_pad("sink") {
                sink.send_event(gst::event::Reconfigure::new());
            }
            gst::warning!(
                CAT,
                imp = self,
                "{} failed ({reason}): continuing with {}",
                old_candidate.factory,
                c.factory
            );
            gst::element_imp_warning!(
                self,
                gst::StreamError::Encode,
                (
                    "Encoder {} failed; continuing with {}",
                    old_candidate.factory,
                    c.factory
                ),
                ["{reason}"]
            );
            let _ = obj.post_message(
                gst::message::Element::builder(
                    gst::Structure::builder("rtencodebin-fallback")
                        .field("failed", old_candidate.factory)
                        .field("reason", &reason)
                        .field("encoder", c.factory)
                        .field("hardware", c.hardware)
                        .build(),
                )
                .src(&*obj)
                .build(),
            );
            if let Some(state) = self.state.lock().unwrap().as_mut() {
                state.candidate = c;
                state.encoder = encoder;
                state.remaining = remaining;
                state.failure = None;
            }
            return true;
        }
        if let Some(failure) = failure {
            let _ = obj.post_message(failure);
        }
        false
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
        let sinkpad = gst::GhostPad::builder_from_template(&klass.pad_template("sink").unwrap())
            .chain_function(|pad, parent, buffer| {
                RtEncodeBin::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |imp| imp.sink_chain(pad, buffer),
                )
            })
            .chain_list_function(|pad, parent, list| {
                RtEncodeBin::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |imp| {
                        for buffer in list.iter_owned() {
                            imp.sink_chain(pad, buffer)?;
                        }
                        Ok(gst::FlowSuccess::Ok)
                    },
                )
            })
            .build();
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
                glib::ParamSpecUInt::builder("trial-timeout")
                    .nick("Trial timeout")
                    .blurb("Milliseconds a candidate may take to start, encode two test frames and stop; one that overruns is abandoned in its thread (a stuck driver never hangs the bin) and skipped. Trial results are cached per process")
                    .minimum(10)
                    .maximum(60_000)
                    .default_value(DEFAULT_TRIAL_TIMEOUT)
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
            "trial-timeout" => s.trial_timeout = value.get().expect("type checked upstream"),
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
                    "trial-timeout" => s.trial_timeout.to_value(),
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

impl BinImpl for RtEncodeBin {
    fn handle_message(&self, message: gst::Message) {
        // An error from the encoder while another candidate is left is held
        // back: the chain function falls back and posts it only if none works.
        if let gst::MessageView::Error(_) = message.view() {
            let mut state = self.state.lock().unwrap();
            if let Some(state) = state.as_mut()
                && !state.remaining.is_empty()
                && message.src().is_some_and(|src| {
                    src == state.encoder.upcast_ref::<gst::Object>()
                        || src.has_as_ancestor(&state.encoder)
                })
            {
                gst::debug!(CAT, imp = self, "encoder error held back for a fallback");
                state.failure.get_or_insert(message);
                return;
            }
        }
        self.parent_handle_message(message)
    }
}
