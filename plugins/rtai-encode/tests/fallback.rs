//! rtencodebin with fake hardware encoders that misbehave the way real ones
//! do: one hangs like a stuck driver (the trial is abandoned, the start stays
//! fast, the result is cached for the process), one passes the 320x240 trial
//! but fails at the real resolution, one fails mid-stream. The bin falls back
//! to the next candidate while streaming, with a key frame, and tells the
//! application (a warning and an `rtencodebin-fallback` message), never an
//! error.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gst::prelude::*;
use rtai_core::testing::{element, launch};

#[path = "support/fake_encoders.rs"]
mod fake;

/// How long a test waits for a pipeline before calling it hung.
const DEADLINE: Duration = Duration::from_secs(20);

fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release");
        let registry = std::env::temp_dir().join(format!(
            "rtai-encode-fallback-registry-{}.bin",
            std::process::id()
        ));
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
            gst::ElementFactory::find("rtencodebin").is_some(),
            "build the plugins first: cargo build --release --workspace"
        );
        // H.264: the first hardware candidate hangs, the second fails above 320x240.
        fake::register("vaapih264enc", fake::HangEnc::static_type());
        fake::register("vah264enc", fake::FailsAtRealSizeEnc::static_type());
        // VP8: the first hardware candidate fails after a few frames.
        fake::register("vaapivp8enc", fake::FailsMidStreamEnc::static_type());
    });
}

struct Run {
    /// Encoded buffers: (is a key frame).
    keys: Vec<bool>,
    messages: Vec<gst::Message>,
    startup: Duration,
}

impl Run {
    fn element_message(&self, name: &str) -> Option<gst::Structure> {
        self.messages.iter().find_map(|m| {
            m.structure()
                .filter(|s| s.name() == name)
                .map(|s| s.to_owned())
        })
    }
    fn errors(&self) -> Vec<&gst::Message> {
        self.messages
            .iter()
            .filter(|m| m.type_() == gst::MessageType::Error)
            .collect()
    }
    fn warnings(&self) -> Vec<String> {
        self.messages
            .iter()
            .filter_map(|m| match m.view() {
                gst::MessageView::Warning(w) => Some(w.error().to_string()),
                _ => None,
            })
            .collect()
    }
}

/// The tests that meet the stuck H.264 candidate run one at a time (the hang
/// test counts its instances).
static H264: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `videotestsrc ! <caps> ! rtencodebin <props> ! appsink`, in a thread so a
/// hang fails the test at DEADLINE instead of hanging it.
fn run(props: &str, width: u32, height: u32, frames: u32) -> Run {
    init();
    let desc = format!(
        "videotestsrc num-buffers={frames} ! video/x-raw,width={width},height={height},framerate=30/1 \
         ! rtencodebin name=enc trial-timeout=500 {props} ! appsink name=sink sync=false"
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let pipeline = launch(&desc);
        let sink = element::<gst_app::AppSink>(&pipeline, "sink");
        let bus = pipeline.bus().unwrap();
        let started = Instant::now();
        let ok = pipeline.set_state(gst::State::Playing).is_ok();
        let startup = started.elapsed();
        let mut keys = Vec::new();
        if ok {
            while let Ok(sample) = sink.pull_sample() {
                let b = sample.buffer().unwrap();
                keys.push(!b.flags().contains(gst::BufferFlags::DELTA_UNIT));
            }
        }
        let messages: Vec<gst::Message> = std::iter::from_fn(|| bus.pop()).collect();
        pipeline.set_state(gst::State::Null).unwrap();
        let _ = tx.send(Run {
            keys,
            messages,
            startup,
        });
    });
    rx.recv_timeout(DEADLINE)
        .expect("the pipeline hung (a stuck encoder must not hang rtencodebin)")
}

#[test]
fn a_hanging_trial_is_abandoned_and_cached() {
    let _serial = H264.lock().unwrap_or_else(|e| e.into_inner());
    let first = run("codec=h264", 320, 240, 10);
    assert!(first.errors().is_empty(), "{:?}", first.errors());
    let selected = first
        .element_message("rtencodebin-selected")
        .expect("a selection");
    let tried = selected.get::<&str>("tried").unwrap();
    assert!(
        tried.contains("vaapih264enc: trial overran"),
        "the stuck candidate is reported: {tried}"
    );
    // At 320x240 the next fake works: it is the choice.
    assert_eq!(selected.get::<&str>("encoder").unwrap(), "vah264enc");
    assert_eq!(first.keys.len(), 10, "every frame encoded");
    assert!(
        first.startup < Duration::from_secs(5),
        "start took {:?}",
        first.startup
    );
    // A second bin in this process reuses the outcome: no new trial, a fast start.
    let made = fake::HANG_INSTANCES.load(Ordering::SeqCst);
    let second = run("codec=h264", 320, 240, 5);
    assert!(second.errors().is_empty(), "{:?}", second.errors());
    assert_eq!(
        fake::HANG_INSTANCES.load(Ordering::SeqCst),
        made,
        "the stuck candidate was tried again"
    );
    assert!(
        second.startup < Duration::from_millis(400),
        "a cached start took {:?}",
        second.startup
    );
}

#[test]
fn failure_at_the_real_resolution_falls_back_with_a_key_frame() {
    let _serial = H264.lock().unwrap_or_else(|e| e.into_inner());
    let r = run("codec=h264", 640, 480, 20);
    assert!(r.errors().is_empty(), "{:?}", r.errors());
    let selected = r.element_message("rtencodebin-selected").unwrap();
    assert_eq!(selected.get::<&str>("encoder").unwrap(), "vah264enc");
    let fallback = r
        .element_message("rtencodebin-fallback")
        .expect("the application is told of the fallback");
    assert_eq!(fallback.get::<&str>("failed").unwrap(), "vah264enc");
    assert_eq!(fallback.get::<&str>("encoder").unwrap(), "x264enc");
    assert!(
        r.warnings().iter().any(|w| w.contains("vah264enc failed")),
        "{:?}",
        r.warnings()
    );
    // The failed first frame went to x264enc: every frame, from a key frame.
    assert_eq!(r.keys.len(), 20, "every frame encoded once");
    assert!(r.keys[0], "the first buffer is a key frame");
}

#[test]
fn failure_mid_stream_falls_back_with_a_key_frame() {
    let r = run("codec=vp8", 320, 240, 30);
    assert!(r.errors().is_empty(), "{:?}", r.errors());
    let selected = r.element_message("rtencodebin-selected").unwrap();
    assert_eq!(selected.get::<&str>("encoder").unwrap(), "vaapivp8enc");
    let fallback = r.element_message("rtencodebin-fallback").unwrap();
    assert_eq!(fallback.get::<&str>("failed").unwrap(), "vaapivp8enc");
    assert_eq!(fallback.get::<&str>("encoder").unwrap(), "vp8enc");
    assert_eq!(r.keys.len(), 30, "every frame encoded once");
    assert!(
        r.keys[fake::FAILS_AT_FRAME],
        "the new encoder starts with a key frame: {:?}",
        r.keys
    );
    assert!(
        !r.keys[fake::FAILS_AT_FRAME - 1],
        "the fake's frames before the failure are deltas: {:?}",
        r.keys
    );
}
