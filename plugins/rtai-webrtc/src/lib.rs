#![allow(clippy::non_send_fields_in_send_ty)]
//! rtai WebRTC plugin: `webrtcserve` (docs/webrtcserve.md) and `ffmpegsrc`
//! (docs/ffmpegsrc.md).

use gst::glib;

pub mod cmdline;
mod ffmpegsrc;
pub mod h264scan;
#[cfg(feature = "testing")]
pub mod testing;
pub mod webrtcserve;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    ffmpegsrc::register(plugin)?;
    webrtcserve::register(plugin)
}

gst::plugin_define!(
    rtaiwebrtc,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
