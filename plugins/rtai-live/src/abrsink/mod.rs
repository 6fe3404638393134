//! abrsink: one live input → an ABR ladder (scaled once per rung, encoded with
//! `rtencodebin`, key frames aligned at every segment boundary) + one shared AAC
//! rendition → CMAF segments (`cmafmux`) → HLS (multivariant playlist, optional
//! LL-HLS parts with blocking reload) and DASH, served by an embedded HTTP server.
//! See docs/abrsink.md.

use gst::glib;
use gst::prelude::*;

mod imp;
pub mod ladder;
pub mod mp4;
pub mod server;
pub mod store;

glib::wrapper! {
    pub struct AbrSink(ObjectSubclass<imp::AbrSink>)
        @extends gst::Bin, gst::Element, gst::Object,
        @implements gst::ChildProxy;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "abrsink",
        gst::Rank::NONE,
        AbrSink::static_type(),
    )
}
