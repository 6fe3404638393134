#![allow(clippy::non_send_fields_in_send_ty)]
//! rtai analytics plugin: the `analyticssink` element and the `latencymetrics` tracer.
//!
//! Modules and their dependencies (one direction only):
//! - `event` (the event data and schema), `report` (the [`report::Reporter`]
//!   interface), `metrics` (the Prometheus registry): depend on nothing here;
//! - `store` (SQLite/PostgreSQL and the writer) and `publish` (Redis): on
//!   `event`, `metrics`, `report`;
//! - `http` (the server): on `store`, `event`, `metrics`, `report` and its
//!   [`http::LatencySource`] interface;
//! - `latencymetrics` (the tracer): on `http`, `metrics`;
//! - `analyticssink` (the element): on all of them.
//!
//! `event`, `report`, `metrics`, `store`, `publish` and `http` are what a shared
//! crate for the delivery work (abrsink) would take.

use gst::glib;

pub mod analyticssink;
pub mod event;
mod http;
pub mod latencymetrics;
pub mod metrics;
mod publish;
mod report;
mod store;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    rtai_core::SegmentIdMeta::register();
    rtai_core::InferenceResult::register();
    analyticssink::register(plugin)?;
    latencymetrics::register(plugin)
}

gst::plugin_define!(
    rtaianalytics,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
