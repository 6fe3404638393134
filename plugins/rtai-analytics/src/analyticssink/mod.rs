//! `analyticssink`: turns detections, speech segments, transcripts and scene
//! captions into scored events; stores them (SQLite or PostgreSQL), publishes
//! them (Redis, SSE), serves a dashboard and Prometheus metrics, and posts clip
//! markers on the bus. See docs/analyticssink.md.

use gst::glib;
use gst::prelude::*;

pub mod events;
mod imp;

glib::wrapper! {
    pub struct AnalyticsSink(ObjectSubclass<imp::AnalyticsSink>) @extends gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(Some(plugin), "analyticssink", gst::Rank::NONE, AnalyticsSink::static_type())
}
