//! `latencymetrics`: a tracer that measures per-element processing latency
//! (buffer into an element's sink pad → a buffer with the same timestamp out of
//! its src pad) and queue levels, keeps HDR histograms and exposes P50/P95/P99
//! through the shared Prometheus registry (`/metrics` of an `analyticssink`, or
//! its own `listen` parameter). See docs/analyticssink.md, section "latencymetrics tracer".

use gst::glib;
use gst::prelude::*;

mod imp;

pub use imp::{Collector, Latencies, PadLatency, PadRate, rates, snapshot, tracked};

glib::wrapper! {
    pub struct LatencyMetrics(ObjectSubclass<imp::LatencyMetrics>) @extends gst::Tracer, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Tracer::register(
        Some(plugin),
        "latencymetrics",
        LatencyMetrics::static_type(),
    )
}
