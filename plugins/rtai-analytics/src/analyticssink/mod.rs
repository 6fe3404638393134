//! `analyticssink`: turns detections, speech segments, transcripts and scene
//! captions into scored events; stores them (SQLite or PostgreSQL), publishes
//! them (Redis, SSE), serves a dashboard and Prometheus metrics, and posts clip
//! markers on the bus. See docs/analyticssink.md.

use gst::glib;
use gst::prelude::*;

mod control;
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

/// The element's [`Reporter`](crate::report::Reporter) for its background
/// tasks (writer, Redis, HTTP server): their messages are logged on the
/// element while it exists, like its own; by name afterwards.
pub(crate) struct ElementReporter {
    obj: glib::WeakRef<gst::Element>,
    name: String,
}

impl ElementReporter {
    pub(crate) fn new(element: &gst::Element) -> Self {
        Self {
            obj: element.downgrade(),
            name: element.name().to_string(),
        }
    }
}

impl crate::report::Reporter for ElementReporter {
    fn warning(&self, msg: &str) {
        match self.obj.upgrade() {
            Some(obj) => gst::warning!(CAT, obj = &obj, "{msg}"),
            None => gst::warning!(CAT, "{}: {msg}", self.name),
        }
    }

    fn debug(&self, msg: &str) {
        match self.obj.upgrade() {
            Some(obj) => gst::debug!(CAT, obj = &obj, "{msg}"),
            None => gst::debug!(CAT, "{}: {msg}", self.name),
        }
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
