//! Fake "hardware" encoders for the rtencodebin tests: one that cannot open a
//! device, one that works (x264enc inside), one with request pads only.
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

/// Registers the encoder `element_type` under `factory`, ranked like hardware.
pub fn register(factory: &str, element_type: glib::Type) {
    gst::Element::register(None, factory, gst::Rank::PRIMARY, element_type).unwrap();
}
