#![allow(clippy::non_send_fields_in_send_ty)]
//! rtai live plugin: `rtmpserversrc`, a listening RTMP server source for OBS,
//! ffmpeg and `rtmp2sink` publishers with stream keys (docs/rtmpserversrc.md).
//!
//! `abrsink`: an ABR ladder packaged as CMAF and served as HLS (LL-HLS optional)
//! and DASH (docs/abrsink.md).
//!
//! The RTMP server itself (listeners shared per address, sessions, stream-key
//! checks) lives in [`rtmp`], so the delivery elements of this plugin can use it too.

use gst::glib;

pub mod abrsink;
pub mod delivery;
pub mod rtmp;
mod rtmpserversrc;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    rtmpserversrc::register(plugin)?;
    abrsink::register(plugin)
}

gst::plugin_define!(
    rtailive,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
