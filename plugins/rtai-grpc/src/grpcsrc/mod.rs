use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct GrpcSrc(ObjectSubclass<imp::GrpcSrc>) @extends gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "grpcsrc",
        gst::Rank::NONE,
        GrpcSrc::static_type(),
    )
}
