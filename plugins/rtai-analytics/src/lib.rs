//! rtai analytics plugin: `analyticssink` and the `latencymetrics` tracer.
fn plugin_init(_plugin: &gst::Plugin) -> Result<(), gst::glib::BoolError> { Ok(()) }
gst::plugin_define!(rtaianalytics, env!("CARGO_PKG_DESCRIPTION"), plugin_init, concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")), "MPL", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_NAME"), env!("CARGO_PKG_REPOSITORY"), env!("BUILD_REL_DATE"));
