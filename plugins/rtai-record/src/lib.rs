#![allow(clippy::non_send_fields_in_send_ty)]
//! rtai record plugin: `cliprecorder`, clips of an encoded stream around clip markers
//! (analyticssink's `rtai-clip-marker`), stored in a directory or S3-compatible object storage.

use gst::glib;

pub mod cliprecorder;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    cliprecorder::register(plugin)
}

gst::plugin_define!(
    rtairecord,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
