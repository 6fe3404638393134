use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct GrpcSink(ObjectSubclass<imp::GrpcSink>) @extends gst_base::BaseSink, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "grpcsink",
        gst::Rank::NONE,
        GrpcSink::static_type(),
    )
}
