use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct RtAv1Pay(ObjectSubclass<imp::RtAv1Pay>) @extends gst_rtp::RTPBasePayload, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "rtav1pay",
        gst::Rank::MARGINAL,
        RtAv1Pay::static_type(),
    )
}
