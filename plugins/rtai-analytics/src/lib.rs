#![allow(clippy::non_send_fields_in_send_ty)]
//! rtai analytics plugin: the `analyticssink` element and the `latencymetrics` tracer.

use gst::glib;

pub mod analyticssink;
mod http;
pub mod latencymetrics;
pub mod metrics;
mod publish;
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
