//! `analyticssink`: turns detections, speech segments, transcripts and scene
//! captions into scored events; stores them (SQLite or PostgreSQL), publishes
//! them (Redis, SSE), serves a dashboard and Prometheus metrics, and posts clip
//! markers on the bus. See docs/analyticssink.md.

use gst::glib;
use gst::prelude::*;

pub mod events;
mod imp;

/// The element's debug category, also for its background tasks (writer, Redis).
pub(crate) static CAT: std::sync::LazyLock<gst::DebugCategory> = std::sync::LazyLock::new(|| {
    gst::DebugCategory::new(
        "analyticssink",
        gst::DebugColorFlags::empty(),
        Some("Analytics events, storage, dashboard and metrics"),
    )
});

/// A warning of a background task about `element` (named `name`): on the
/// element while it exists, so it is logged like the element's own.
pub(crate) fn warn(element: &glib::WeakRef<gst::Element>, name: &str, msg: &str) {
    match element.upgrade() {
        Some(obj) => gst::warning!(CAT, obj = &obj, "{msg}"),
        None => gst::warning!(CAT, "{name}: {msg}"),
    }
}

glib::wrapper! {
    pub struct AnalyticsSink(ObjectSubclass<imp::AnalyticsSink>) @extends gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "analyticssink",
        gst::Rank::NONE,
        AnalyticsSink::static_type(),
    )
}
