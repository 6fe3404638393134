#![allow(clippy::non_send_fields_in_send_ty)]
//! rtai track plugin: `objtracker`, ByteTrack-style tracking of detection ROI metas.

use gst::glib;

pub mod bytetrack;
pub mod kalman;
mod objtracker;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    objtracker::register(plugin)
}

gst::plugin_define!(
    rtaitrack,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
