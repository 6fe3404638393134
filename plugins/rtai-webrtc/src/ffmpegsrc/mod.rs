use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct FfmpegSrc(ObjectSubclass<imp::FfmpegSrc>) @extends gst_base::PushSrc, gst_base::BaseSrc, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "ffmpegsrc",
        gst::Rank::NONE,
        FfmpegSrc::static_type(),
    )
}
