#![allow(clippy::non_send_fields_in_send_ty)]
//! rtai voice plugin: `specvadgate`, `prosodymeter`.

use gst::glib;

mod prosodymeter;
mod specvadgate;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    rtai_core::SegmentIdMeta::register();
    specvadgate::register(plugin)?;
    prosodymeter::register(plugin)
}

gst::plugin_define!(
    rtaivoice,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
