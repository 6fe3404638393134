//! Shared by the crate's test binaries: GStreamer with the built plugins, and
//! waiting on bus messages with a deadline.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Loads the collection's plugins from `$RTAI_PLUGIN_DIR` or `target/release`
/// (this crate's and `rtencodebin`) in a fresh registry.
pub fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release");
        let registry =
            std::env::temp_dir().join(format!("rtai-webrtc-registry-{}.bin", std::process::id()));
        // SAFETY: set once before GStreamer initialises and before other threads read it.
        unsafe {
            std::env::set_var(
                "GST_PLUGIN_PATH",
                std::env::var_os("RTAI_PLUGIN_DIR").unwrap_or(target.into_os_string()),
            );
            std::env::set_var("GST_REGISTRY", registry);
        }
        gst::init().unwrap();
        assert!(
            gst::ElementFactory::find("ffmpegsrc").is_some(),
            "build the plugins first: cargo build --release -p gst-plugin-rtai-webrtc"
        );
    });
}

/// ffmpeg encoding a lavfi test pattern in real time to H.264 Annex-B on stdout.
pub fn lavfi_command(size: &str, rate: u32, extra: &str) -> String {
    format!(
        "ffmpeg -hide_banner -nostdin -loglevel warning -re -f lavfi -i testsrc2=size={size}:rate={rate} \
         {extra} -c:v libx264 -preset ultrafast -tune zerolatency -profile:v baseline -pix_fmt yuv420p \
         -g {rate} -bf 0 -f h264 -"
    )
}

/// Waits for the first message that `pred` accepts, failing on an error
/// message (unless `pred` takes it) or at the deadline.
pub fn wait_for(
    bus: &gst::Bus,
    timeout: Duration,
    what: &str,
    mut pred: impl FnMut(&gst::Message) -> bool,
) -> gst::Message {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out waiting for {what}");
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_nseconds(left.as_nanos() as u64)) else {
            continue;
        };
        if pred(&msg) {
            return msg;
        }
        if let gst::MessageView::Error(e) = msg.view() {
            panic!(
                "error while waiting for {what}: {} ({:?})",
                e.error(),
                e.debug()
            );
        }
    }
}

/// Sets `pipeline` PLAYING and waits for `serve`'s `track_active` (failing on an
/// error); returns the bus and the address webrtcserve listens on.
pub fn play_until_track_active(
    pipeline: &gst::Pipeline,
    serve: &gst::Element,
    timeout: Duration,
) -> (gst::Bus, String) {
    use gst::prelude::*;
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    wait_for(&bus, timeout, "track_active", |m| {
        element_message(m, "track_active").is_some()
    });
    (
        bus,
        gstrtaiwebrtc::testing::listening_address(serve, timeout),
    )
}

/// The structure of an element message named `name`, if `msg` is one.
pub fn element_message(msg: &gst::Message, name: &str) -> Option<gst::Structure> {
    match msg.view() {
        gst::MessageView::Element(e) => e
            .structure()
            .filter(|s| s.name() == name)
            .map(|s| s.to_owned()),
        _ => None,
    }
}

/// Polls a condition until it holds or the deadline passes.
pub use gstrtaiwebrtc::testing::wait_until;

/// True while a process with this pid exists (a zombie counts: it is not reaped).
pub fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// `.venv-aiortc`'s python running tests/peers/`script` (an aiortc peer);
/// panics if aiortc is not installed.
pub fn aiortc_peer(script: &str) -> std::process::Command {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv-aiortc/bin/python");
    assert!(
        python.exists(),
        "aiortc is missing: scripts/setup.sh installs scripts/peers-aiortc.txt into .venv-aiortc"
    );
    let mut command = std::process::Command::new(python);
    command.arg(format!(
        "{}/tests/peers/{script}",
        env!("CARGO_MANIFEST_DIR")
    ));
    command
}
