use gst::glib;
use gst::prelude::*;

mod guard;
mod imp;
mod server;
pub mod signalling;
mod viewer;

glib::wrapper! {
    pub struct WebRtcServe(ObjectSubclass<imp::WebRtcServe>) @extends gst::Bin, gst::Element, gst::Object, @implements gst::ChildProxy;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "webrtcserve",
        gst::Rank::NONE,
        WebRtcServe::static_type(),
    )
}
