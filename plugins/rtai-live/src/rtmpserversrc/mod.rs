use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct RtmpServerSrc(ObjectSubclass<imp::RtmpServerSrc>)
        @extends gst_base::PushSrc, gst_base::BaseSrc, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "rtmpserversrc",
        gst::Rank::NONE,
        RtmpServerSrc::static_type(),
    )
}
