//! `cliprecorder`: a pre-roll ring of parsed encoded video written to MP4 clips around
//! clip markers, into a directory or S3-compatible object storage (docs/cliprecorder.md).

use gst::glib;
use gst::prelude::*;

mod imp;
pub mod mux;
pub mod ring;
pub mod storage;

pub use imp::{MARKER_NAME, RECORDED_NAME, parse_marker};

glib::wrapper! {
    pub struct ClipRecorder(ObjectSubclass<imp::ClipRecorder>) @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "cliprecorder",
        gst::Rank::NONE,
        ClipRecorder::static_type(),
    )
}
