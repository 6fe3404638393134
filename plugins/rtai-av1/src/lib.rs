#![allow(clippy::non_send_fields_in_send_ty)]
//! rtai AV1 plugin: `rtav1enc` (rav1e), `rtav1dec` (dav1d), `rtav1pay` and
//! `rtav1depay` (the AV1 RTP payload format).

use gst::glib;

pub mod obu;
mod rtav1dec;
mod rtav1depay;
mod rtav1enc;
mod rtav1pay;
pub mod rtp;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    rtav1enc::register(plugin)?;
    rtav1dec::register(plugin)?;
    rtav1pay::register(plugin)?;
    rtav1depay::register(plugin)
}

gst::plugin_define!(
    rtaiav1,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
