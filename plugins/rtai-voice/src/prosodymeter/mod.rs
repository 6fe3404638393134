use gst::glib;
use gst::prelude::*;

pub mod analysis;
mod imp;

glib::wrapper! {
    pub struct ProsodyMeter(ObjectSubclass<imp::ProsodyMeter>) @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "prosodymeter",
        gst::Rank::NONE,
        ProsodyMeter::static_type(),
    )
}
