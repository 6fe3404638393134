use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct ObjTracker(ObjectSubclass<imp::ObjTracker>) @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "objtracker",
        gst::Rank::NONE,
        ObjTracker::static_type(),
    )
}
