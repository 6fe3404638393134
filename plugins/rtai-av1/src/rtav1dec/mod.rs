use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct RtAv1Dec(ObjectSubclass<imp::RtAv1Dec>) @extends gst_video::VideoDecoder, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    // Above aom's av1dec (PRIMARY): decodebin picks the faster decoder.
    gst::Element::register(
        Some(plugin),
        "rtav1dec",
        gst::Rank::PRIMARY + 1,
        RtAv1Dec::static_type(),
    )
}
