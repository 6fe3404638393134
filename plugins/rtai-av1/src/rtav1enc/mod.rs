use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct RtAv1Enc(ObjectSubclass<imp::RtAv1Enc>) @extends gst_video::VideoEncoder, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(Some(plugin), "rtav1enc", gst::Rank::NONE, RtAv1Enc::static_type())
}
