#![allow(clippy::non_send_fields_in_send_ty)]
//! rtai inference plugin: the `inferclient` element (docs/inferclient.md).

use gst::glib;

pub use rtai_core::{INFERRED_META_NAME, InferredMeta};

pub mod client;
mod inferclient;
pub mod postprocess;
pub mod preprocess;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    rtai_core::SegmentIdMeta::register();
    rtai_core::InferenceResult::register();
    rtai_core::InferredMeta::register();
    rtai_core::tensor::TensorMeta::register();
    inferclient::register(plugin)
}

gst::plugin_define!(
    rtaiinfer,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
