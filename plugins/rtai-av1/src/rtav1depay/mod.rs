use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct RtAv1Depay(ObjectSubclass<imp::RtAv1Depay>) @extends gst_rtp::RTPBaseDepayload, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "rtav1depay",
        gst::Rank::MARGINAL,
        RtAv1Depay::static_type(),
    )
}
