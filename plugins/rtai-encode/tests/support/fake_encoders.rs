//! Fake "hardware" encoders for the rtencodebin tests: one that cannot open a
//! device, one that works (x264enc inside), one with request pads only, one
//! that hangs like a stuck driver, one that fails at the real resolution and
//! one that fails mid-stream.
#![allow(dead_code)] // each test binary registers the ones it needs

use std::str::FromStr;
use std::sync::LazyLock;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

static CAPS_IN: LazyLock<gst::Caps> = LazyLock::new(|| gst::Caps::new_empty_simple("video/x-raw"));
// Both codecs a fake VA-API encoder stands in for here (rtencodebin picks by factory name).
static CAPS_OUT: LazyLock<gst::Caps> =
    LazyLock::new(|| gst::Caps::from_str("video/x-h264; video/x-vp8").unwrap());

/// Like a VA-API encoder on a machine without a VA display: cannot start.
#[derive(Default)]
pub struct NoDevice;

#[glib::object_subclass]
impl ObjectSubclass for NoDevice {
    const NAME: &'static str = "RtaiTestNoDeviceEnc";
    type Type = NoDeviceEnc;
    type ParentType = gst::Element;
}
impl ObjectImpl for NoDevice {
    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        for t in obj.pad_template_list() {
            obj.add_pad(&gst::Pad::from_template(&t)).unwrap();
        }
    }
}
impl GstObjectImpl for NoDevice {}
impl ElementImpl for NoDevice {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static M: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "fake VA-API encoder",
                "Codec/Encoder/Video/Hardware",
                "cannot open a device",
                "test",
            )
        });
        Some(&*M)
    }
    fn pad_templates() -> &'static [gst::PadTemplate] {
        static T: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &CAPS_IN,
                )
                .unwrap(),
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &CAPS_OUT,
                )
                .unwrap(),
            ]
        });
        T.as_ref()
    }
    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::NullToReady {
            gst::element_imp_error!(
                self,
                gst::ResourceError::NotFound,
                ("Could not open a VA display")
            );
            return Err(gst::StateChangeError);
        }
        self.parent_change_state(transition)
    }
}
glib::wrapper! { pub struct NoDeviceEnc(ObjectSubclass<NoDevice>) @extends gst::Element, gst::Object; }

/// A "hardware" encoder that works (x264enc inside).
#[derive(Default)]
pub struct Working;

#[glib::object_subclass]
impl ObjectSubclass for Working {
    const NAME: &'static str = "RtaiTestWorkingHwEnc";
    type Type = WorkingEnc;
    type ParentType = gst::Bin;
}
impl ObjectImpl for Working {
    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        let enc = gst::ElementFactory::make("x264enc")
            .property_from_str("tune", "zerolatency")
            .build()
            .unwrap();
        obj.add(&enc).unwrap();
        obj.add_pad(&gst::GhostPad::with_target(&enc.static_pad("sink").unwrap()).unwrap())
            .unwrap();
        obj.add_pad(&gst::GhostPad::with_target(&enc.static_pad("src").unwrap()).unwrap())
            .unwrap();
    }
}
impl GstObjectImpl for Working {}
impl ElementImpl for Working {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static M: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "fake VA H.264",
                "Codec/Encoder/Video/Hardware",
                "works",
                "test",
            )
        });
        Some(&*M)
    }
}
impl BinImpl for Working {}
glib::wrapper! { pub struct WorkingEnc(ObjectSubclass<Working>) @extends gst::Bin, gst::Element, gst::Object; }

/// An encoder whose pads are all request pads (none exist until asked for).
#[derive(Default)]
pub struct RequestPads;

#[glib::object_subclass]
impl ObjectSubclass for RequestPads {
    const NAME: &'static str = "RtaiTestRequestPadsEnc";
    type Type = RequestPadsEnc;
    type ParentType = gst::Element;
}
impl ObjectImpl for RequestPads {}
impl GstObjectImpl for RequestPads {}
impl ElementImpl for RequestPads {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static M: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "fake VA AV1",
                "Codec/Encoder/Video/Hardware",
                "request pads only",
                "test",
            )
        });
        Some(&*M)
    }
    fn pad_templates() -> &'static [gst::PadTemplate] {
        static T: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            vec![
                gst::PadTemplate::new(
                    "sink_%u",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Request,
                    &CAPS_IN,
                )
                .unwrap(),
                gst::PadTemplate::new(
                    "src_%u",
                    gst::PadDirection::Src,
                    gst::PadPresence::Request,
                    &gst::Caps::new_empty_simple("video/x-av1"),
                )
                .unwrap(),
            ]
        });
        T.as_ref()
    }
}
glib::wrapper! { pub struct RequestPadsEnc(ObjectSubclass<RequestPads>) @extends gst::Element, gst::Object; }

/// Instances of [`Hang`] made so far (a cached trial makes none).
pub static HANG_INSTANCES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Like a stuck driver: the first buffer never returns, so neither does
/// stopping the element (pad deactivation waits for the streaming thread).
#[derive(Default)]
pub struct Hang;

#[glib::object_subclass]
impl ObjectSubclass for Hang {
    const NAME: &'static str = "RtaiTestHangEnc";
    type Type = HangEnc;
    type ParentType = gst::Element;
}
impl ObjectImpl for Hang {
    fn constructed(&self) {
        self.parent_constructed();
        HANG_INSTANCES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let obj = self.obj();
        let sink = gst::Pad::builder_from_template(&obj.pad_template("sink").unwrap())
            .chain_function(|_, _, _| {
                loop {
                    // A driver call that never comes back.
                    std::thread::park();
                }
            })
            .build();
        obj.add_pad(&sink).unwrap();
        obj.add_pad(&gst::Pad::from_template(&obj.pad_template("src").unwrap()))
            .unwrap();
    }
}
impl GstObjectImpl for Hang {}
impl ElementImpl for Hang {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static M: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "fake stuck encoder",
                "Codec/Encoder/Video/Hardware",
                "never returns from its first buffer",
                "test",
            )
        });
        Some(&*M)
    }
    fn pad_templates() -> &'static [gst::PadTemplate] {
        NoDevice::pad_templates()
    }
}
glib::wrapper! { pub struct HangEnc(ObjectSubclass<Hang>) @extends gst::Element, gst::Object; }

/// A working encoder (x264enc, or vp8enc when registered under a VP8 name)
/// that fails as `fails(width, frame index)` says: an element error and
/// FlowError::Error, as a hardware encoder does when its device gives up.
fn flaky_encoder(bin: &gst::Bin, fails: fn(i32, usize) -> bool) {
    let factory = bin
        .factory()
        .map(|f| f.name().to_string())
        .unwrap_or_default();
    let inner = if factory.contains("vp8") {
        gst::ElementFactory::make("vp8enc")
            .property("deadline", 1i64)
            .property("lag-in-frames", 0i32)
            .build()
            .unwrap()
    } else {
        gst::ElementFactory::make("x264enc")
            .property_from_str("tune", "zerolatency")
            .build()
            .unwrap()
    };
    bin.add(&inner).unwrap();
    let sink = inner.static_pad("sink").unwrap();
    let weak = bin.downgrade();
    let frame = std::sync::atomic::AtomicUsize::new(0);
    sink.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let width = pad
            .current_caps()
            .and_then(|c| c.structure(0).and_then(|s| s.get::<i32>("width").ok()))
            .unwrap_or(0);
        let index = frame.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if !fails(width, index) {
            return gst::PadProbeReturn::Ok;
        }
        if let Some(bin) = weak.upgrade() {
            gst::element_error!(
                bin,
                gst::StreamError::Encode,
                ("Fake hardware encoder failed at frame {index} ({width} wide)")
            );
        }
        info.flow_res = Err(gst::FlowError::Error);
        gst::PadProbeReturn::Handled
    });
    bin.add_pad(&gst::GhostPad::with_target(&sink).unwrap())
        .unwrap();
    bin.add_pad(&gst::GhostPad::with_target(&inner.static_pad("src").unwrap()).unwrap())
        .unwrap();
}

/// Passes the 320x240 trial, fails on the first frame wider than that.
#[derive(Default)]
pub struct FailsAtRealSize;

#[glib::object_subclass]
impl ObjectSubclass for FailsAtRealSize {
    const NAME: &'static str = "RtaiTestFailsAtRealSizeEnc";
    type Type = FailsAtRealSizeEnc;
    type ParentType = gst::Bin;
}
impl ObjectImpl for FailsAtRealSize {
    fn constructed(&self) {
        self.parent_constructed();
        flaky_encoder(self.obj().upcast_ref(), |width, _| width > 320);
    }
}
impl GstObjectImpl for FailsAtRealSize {}
impl ElementImpl for FailsAtRealSize {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static M: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "fake encoder failing above 320x240",
                "Codec/Encoder/Video/Hardware",
                "fails at the real resolution",
                "test",
            )
        });
        Some(&*M)
    }
}
impl BinImpl for FailsAtRealSize {}
glib::wrapper! { pub struct FailsAtRealSizeEnc(ObjectSubclass<FailsAtRealSize>) @extends gst::Bin, gst::Element, gst::Object; }

/// Frame index at which [`FailsMidStream`] gives up (the trial's two frames pass).
pub const FAILS_AT_FRAME: usize = 10;

/// Works for [`FAILS_AT_FRAME`] frames, then fails.
#[derive(Default)]
pub struct FailsMidStream;

#[glib::object_subclass]
impl ObjectSubclass for FailsMidStream {
    const NAME: &'static str = "RtaiTestFailsMidStreamEnc";
    type Type = FailsMidStreamEnc;
    type ParentType = gst::Bin;
}
impl ObjectImpl for FailsMidStream {
    fn constructed(&self) {
        self.parent_constructed();
        flaky_encoder(self.obj().upcast_ref(), |_, index| index >= FAILS_AT_FRAME);
    }
}
impl GstObjectImpl for FailsMidStream {}
impl ElementImpl for FailsMidStream {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static M: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "fake encoder failing mid-stream",
                "Codec/Encoder/Video/Hardware",
                "fails after some frames",
                "test",
            )
        });
        Some(&*M)
    }
}
impl BinImpl for FailsMidStream {}
glib::wrapper! { pub struct FailsMidStreamEnc(ObjectSubclass<FailsMidStream>) @extends gst::Bin, gst::Element, gst::Object; }

/// Registers the encoder `element_type` under `factory`, ranked like hardware.
pub fn register(factory: &str, element_type: glib::Type) {
    gst::Element::register(None, factory, gst::Rank::PRIMARY, element_type).unwrap();
}
