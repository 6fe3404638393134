use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct RtAv1Enc(ObjectSubclass<imp::RtAv1Enc>) @extends gst_video::VideoEncoder, gst::Element, gst::Object;
}

/// What rav1e's rate-distortion decisions optimise for.
#[derive(Debug, Eq, PartialEq, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstRtAv1EncTune")]
pub enum Tune {
    #[enum_value(
        name = "PSNR: transform-domain distortion, fastest (real time)",
        nick = "psnr"
    )]
    Psnr = 0,
    #[enum_value(
        name = "Psychovisual: pixel-domain distortion and activity masking, slower",
        nick = "psychovisual"
    )]
    Psychovisual = 1,
}

/// How rav1e places key frames besides the interval and force-key-unit.
#[derive(Debug, Eq, PartialEq, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstRtAv1EncSceneDetection")]
pub enum SceneDetection {
    #[enum_value(
        name = "None: key frames only at max-key-frame-interval and on force-key-unit",
        nick = "none"
    )]
    None = 0,
    #[enum_value(
        name = "Fast: pixel-wise comparison of consecutive frames",
        nick = "fast"
    )]
    Fast = 1,
    #[enum_value(
        name = "Standard: motion vectors and cost estimates, slowest",
        nick = "standard"
    )]
    Standard = 2,
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "rtav1enc",
        gst::Rank::NONE,
        RtAv1Enc::static_type(),
    )
}
