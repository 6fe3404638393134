#![allow(clippy::non_send_fields_in_send_ty)]
//! rtai encoding plugin: `rtencodebin` (docs/rtencodebin.md).

use gst::glib;

pub mod candidates;
mod rtencodebin;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    rtencodebin::register(plugin)
}

gst::plugin_define!(
    rtaiencode,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
