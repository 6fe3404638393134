//! rtencodebin when no candidate works at all: a GStreamer with only the core
//! elements, videotestsrc, videoconvert and rtaiencode (no x264, openh264, vpx,
//! aom or rtaiav1), plus a fake VA-API VP8 encoder that cannot open a device.
//! Its own test binary: the plugin paths must be set before GStreamer starts.

use std::path::{Path, PathBuf};

use gst::prelude::*;

#[path = "support/fake_encoders.rs"]
mod fake;

/// A directory holding links to `plugins` from `from`.
fn plugin_dir(name: &str, from: &Path, plugins: &[&str]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rtai-encode-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for p in plugins {
        let source = from.join(p);
        assert!(source.exists(), "{} is missing", source.display());
        std::os::unix::fs::symlink(&source, dir.join(p)).unwrap();
    }
    dir
}

fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let target = std::env::var_os("RTAI_PLUGIN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release"));
        let system = Path::new("/usr/lib/x86_64-linux-gnu/gstreamer-1.0");
        let core = plugin_dir(
            "core",
            system,
            &[
                "libgstcoreelements.so",
                "libgstvideotestsrc.so",
                "libgstvideoconvertscale.so",
            ],
        );
        let ours = plugin_dir("ours", &target, &["libgstrtaiencode.so"]);
        let registry = std::env::temp_dir().join(format!(
            "rtai-encode-bare-registry-{}.bin",
            std::process::id()
        ));
        // SAFETY: set once before GStreamer initialises and before other threads read them.
        unsafe {
            std::env::set_var("GST_PLUGIN_SYSTEM_PATH_1_0", &core);
            std::env::set_var("GST_PLUGIN_SYSTEM_PATH", &core);
            std::env::set_var("GST_PLUGIN_PATH_1_0", &ours);
            std::env::set_var("GST_PLUGIN_PATH", &ours);
            std::env::set_var("GST_REGISTRY", registry);
        }
        gst::init().unwrap();
        assert!(
            gst::ElementFactory::find("rtencodebin").is_some(),
            "build the plugins first: cargo build --release --workspace"
        );
        for missing in ["x264enc", "openh264enc", "vp8enc", "av1enc", "rtav1enc"] {
            assert!(
                gst::ElementFactory::find(missing).is_none(),
                "{missing} should not be loaded here"
            );
        }
        fake::register("vaapivp8enc", fake::NoDeviceEnc::static_type());
    });
}

/// Starts `videotestsrc ! rtencodebin codec=<codec> ! fakesink`: the state change
/// must fail with the bin's error, which this returns (message, debug).
fn start(codec: &str) -> (String, String) {
    init();
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers=5 ! rtencodebin name=enc codec={codec} ! fakesink"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    assert!(
        pipeline.set_state(gst::State::Playing).is_err(),
        "{codec}: no encoder, yet the bin started"
    );
    let msg = pipeline
        .bus()
        .unwrap()
        .pop_filtered(&[gst::MessageType::Error])
        .expect("an error message, not only a failed state change");
    let gst::MessageView::Error(e) = msg.view() else {
        unreachable!()
    };
    assert_eq!(
        msg.src().map(|s| s.name().to_string()).as_deref(),
        Some("enc"),
        "posted by the bin"
    );
    assert!(
        e.error().matches(gst::CoreError::MissingPlugin),
        "{:?}",
        e.error()
    );
    let bin = pipeline.by_name("enc").unwrap();
    assert_eq!(bin.property::<String>("active-encoder"), "");
    assert_eq!(
        bin.downcast_ref::<gst::Bin>().unwrap().children().len(),
        0,
        "nothing left in the bin"
    );
    pipeline.set_state(gst::State::Null).unwrap();
    (
        e.error().to_string(),
        e.debug().map(|d| d.to_string()).unwrap_or_default(),
    )
}

#[test]
fn no_working_encoder_is_a_clear_error_naming_every_candidate() {
    let (message, debug) = start("vp8");
    assert_eq!(message, "No working vp8 encoder on this machine");
    for reason in [
        "vaapivp8enc: cannot start (no device?)",
        "vavp8enc: not installed",
        "v4l2vp8enc: not installed",
        "vp8enc: not installed",
    ] {
        assert!(debug.contains(reason), "{reason} missing from: {debug}");
    }
    let (message, debug) = start("h264");
    assert_eq!(message, "No working h264 encoder on this machine");
    assert!(
        debug.contains("x264enc: not installed") && debug.contains("openh264enc: not installed"),
        "{debug}"
    );
    let (message, debug) = start("av1");
    assert_eq!(message, "No working av1 encoder on this machine");
    assert!(
        debug.contains("rtav1enc: not installed") && debug.contains("av1enc: not installed"),
        "{debug}"
    );
}

#[test]
fn a_failed_start_can_be_retried() {
    // The same bin fails the same way twice (no half-built state from the first try).
    init();
    let bin = gst::ElementFactory::make("rtencodebin")
        .property_from_str("codec", "vp8")
        .build()
        .unwrap();
    for _ in 0..2 {
        assert!(bin.set_state(gst::State::Ready).is_err());
        assert_eq!(bin.downcast_ref::<gst::Bin>().unwrap().children().len(), 0);
        bin.set_state(gst::State::Null).unwrap();
    }
}
