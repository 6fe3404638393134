use gst::glib;
use gst::prelude::*;

mod datachannel;
mod guard;
mod imp;
mod server;
pub mod signalling;
mod talk;
mod viewer;

/// What webrtcserve does with its viewers (`mode`).
#[derive(Debug, Default, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstWebRtcServeMode")]
pub enum Mode {
    /// Viewers receive the stream only.
    #[default]
    #[enum_value(name = "Send only: viewers receive the stream", nick = "send-only")]
    SendOnly = 0,
    /// Viewers also send their microphone (out of `audio_src`) and talk on a
    /// `control` data channel.
    #[enum_value(
        name = "Send and receive: viewers' microphones come out of audio_src, a control data channel both ways",
        nick = "send-recv"
    )]
    SendRecv = 1,
}

glib::wrapper! {
    pub struct WebRtcServe(ObjectSubclass<imp::WebRtcServe>) @extends gst::Bin, gst::Element, gst::Object, @implements gst::ChildProxy;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    Mode::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "webrtcserve",
        gst::Rank::NONE,
        WebRtcServe::static_type(),
    )
}
