use gst::glib;
use gst::prelude::*;

mod engine;
mod imp;

glib::wrapper! {
    pub struct SpecVadGate(ObjectSubclass<imp::SpecVadGate>) @extends gst::Element, gst::Object;
}

#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstSpecVadGateEngine")]
pub enum Engine {
    #[enum_value(
        name = "Energy: frame level against an adaptive noise floor",
        nick = "energy"
    )]
    Energy = 0,
    #[enum_value(
        name = "WebRTC: the WebRTC VAD's sub-band GMM (pure-Rust port)",
        nick = "webrtc"
    )]
    Webrtc = 1,
    #[enum_value(
        name = "Silero: the Silero VAD neural model through ONNX Runtime",
        nick = "silero"
    )]
    Silero = 2,
}

#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstSpecVadGateMode")]
pub enum Mode {
    #[enum_value(
        name = "Speculative: forward on the first voiced frame, cancel false starts",
        nick = "speculative"
    )]
    Speculative = 0,
    #[enum_value(
        name = "Confirmed: forward only after commit (classic VAD)",
        nick = "confirmed"
    )]
    Confirmed = 1,
    #[enum_value(
        name = "Passthrough: forward everything, analyse and report only",
        nick = "passthrough"
    )]
    Passthrough = 2,
}

#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstSpecVadGateIdleOutput")]
pub enum IdleOutput {
    #[enum_value(
        name = "Drop: drop idle audio, push GAP events so downstream keeps time",
        nick = "drop"
    )]
    Drop = 0,
    #[enum_value(name = "Silence: replace idle audio with silence", nick = "silence")]
    Silence = 1,
    #[enum_value(
        name = "Passthrough: forward idle audio unchanged",
        nick = "passthrough"
    )]
    Passthrough = 2,
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "specvadgate",
        gst::Rank::NONE,
        SpecVadGate::static_type(),
    )
}
