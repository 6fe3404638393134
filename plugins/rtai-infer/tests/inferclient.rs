//! inferclient against real peers started on loopback by the tests: MLServer
//! (KServe v2 REST) with a tiny ball detector, and the runpod SDK's local API
//! with a handler that finds the ball in the JPEG and answers audio.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_check::Harness;
use rtai_core::{InferenceResult, SegmentEvent, SegmentIdMeta};

const W: u32 = 320;
const H: u32 = 240;

fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstrtaiinfer::plugin_register_static().unwrap();
    });
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn peers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn http(port: u16, method: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_whitespace().nth(1)?.parse().ok()
}

/// A server process, killed on drop.
struct Peer {
    child: Child,
    port: u16,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    /// Waits until `ready` says the server answers (it loads models first).
    fn wait_ready(mut self, what: &str, ready: impl Fn(u16) -> bool) -> Self {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !ready(self.port) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{what} exited with {status} before it was ready");
            }
            assert!(Instant::now() < deadline, "{what} not ready within 90 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        self
    }

    fn mlserver() -> Self {
        let venv = workspace().join(".venv-mlserver/bin");
        assert!(venv.join("mlserver").exists(), "MLServer is missing: scripts/setup.sh installs it into .venv-mlserver");
        let port = free_port();
        let child = Command::new(venv.join("mlserver"))
            .arg("start")
            .arg(peers().join("mlserver"))
            .env("PYTHONPATH", peers().join("mlserver"))
            .env("MLSERVER_HOST", "127.0.0.1")
            .env("MLSERVER_HTTP_PORT", port.to_string())
            .env("MLSERVER_GRPC_PORT", free_port().to_string())
            .env("MLSERVER_METRICS_PORT", free_port().to_string())
            .env("MLSERVER_METRICS_ENDPOINT", "")
            .env("MLSERVER_PARALLEL_WORKERS", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mlserver starts");
        Peer { child, port }.wait_ready("MLServer", |p| ["ball", "slow", "broken"].iter().all(|m| http(p, "GET", &format!("/v2/models/{m}/ready")) == Some(200)))
    }

    fn runpod() -> Self {
        let python = workspace().join(".venv-runpod/bin/python");
        assert!(python.exists(), "the runpod SDK is missing: scripts/setup.sh installs it into .venv-runpod");
        let port = free_port();
        let child = Command::new(python)
            .arg(peers().join("runpod_handler.py"))
            .args(["--rp_serve_api", "--rp_api_host", "127.0.0.1", "--rp_api_port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the runpod handler starts");
        // The local API has no health route; its OpenAPI page answers once it serves.
        Peer { child, port }.wait_ready("runpod local API", |p| http(p, "GET", "/openapi.json") == Some(200))
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// `n` RGB frames of videotestsrc's moving white ball on black.
fn ball_frames(n: usize) -> (gst::Caps, Vec<gst::Buffer>) {
    init();
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers={n} pattern=ball ! video/x-raw,format=RGB,width={W},height={H},framerate=10/1 ! appsink name=sink sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = pipeline.by_name("sink").unwrap().downcast::<gst_app::AppSink>().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut caps = None;
    let mut out = Vec::new();
    while let Ok(s) = sink.pull_sample() {
        caps = s.caps_owned();
        out.push(s.buffer_owned().unwrap());
    }
    pipeline.set_state(gst::State::Null).unwrap();
    (caps.unwrap(), out)
}

/// The ball's box in an RGB frame, from its pixels (the ground truth).
fn ball_box(frame: &gst::Buffer) -> (f64, f64, f64, f64) {
    let map = frame.map_readable().unwrap();
    let stride = (W as usize * 3).next_multiple_of(4);
    let (mut x1, mut y1, mut x2, mut y2) = (u32::MAX, u32::MAX, 0, 0);
    for y in 0..H {
        for x in 0..W {
            let p = &map[y as usize * stride + x as usize * 3..][..3];
            if p.iter().all(|&c| c > 204) {
                (x1, y1, x2, y2) = (x1.min(x), y1.min(y), x2.max(x + 1), y2.max(y + 1));
            }
        }
    }
    assert!(x2 > x1, "the frame shows the ball");
    (x1 as f64, y1 as f64, x2 as f64, y2 as f64)
}

fn iou(a: (f64, f64, f64, f64), b: (f64, f64, f64, f64)) -> f64 {
    let w = (a.2.min(b.2) - a.0.max(b.0)).max(0.0);
    let h = (a.3.min(b.3) - a.1.max(b.1)).max(0.0);
    let inter = w * h;
    inter / ((a.2 - a.0) * (a.3 - a.1) + (b.2 - b.0) * (b.3 - b.1) - inter)
}

struct Roi {
    label: String,
    rect: (f64, f64, f64, f64),
    confidence: f64,
    model: String,
}

fn rois(buffer: &gst::BufferRef) -> Vec<Roi> {
    buffer
        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .map(|m| {
            let (x, y, w, h) = m.rect();
            let p = m.param("detection").expect("a detection param");
            Roi {
                label: m.roi_type().to_string(),
                rect: (x as f64, y as f64, (x + w) as f64, (y + h) as f64),
                confidence: p.get("confidence").unwrap(),
                model: p.get("model_name").unwrap(),
            }
        })
        .collect()
}

fn harness(props: &[(&str, glib::Value)], caps: &gst::Caps) -> Harness {
    init();
    // Properties before the harness brings the element up: it reads them on start.
    let element = gst::ElementFactory::make("inferclient").build().unwrap();
    for (k, v) in props {
        element.set_property_from_value(k, v);
    }
    let mut h = Harness::with_element(&element, Some("sink"), Some("src"));
    h.set_src_caps(caps.clone());
    h.play();
    h
}

use gst::glib;

fn stats(h: &Harness) -> gst::Structure {
    h.element().unwrap().property("stats")
}

#[test]
fn kserve_rest_against_mlserver() {
    let server = Peer::mlserver();
    let (caps, frames) = ball_frames(8);

    // 1. The detector finds the ball; boxes come back in frame coordinates through the letterbox.
    let mut h = harness(
        &[
            ("url", server.url().to_value()),
            ("model", "ball".to_value()),
            ("input-width", 160u32.to_value()),
            ("input-height", 160u32.to_value()),
            ("labels", "ball".to_value()),
            ("latency-budget", 30_000u32.to_value()),
            ("max-inflight", 16u32.to_value()),
        ],
        &caps,
    );
    for f in &frames {
        h.push(f.clone()).unwrap();
    }
    for (i, f) in frames.iter().enumerate() {
        let out = h.pull().unwrap();
        assert_eq!(out.pts(), f.pts(), "stream order");
        let found = rois(&out);
        assert_eq!(found.len(), 1, "frame {i}: one ball");
        let (truth, got) = (ball_box(f), found[0].rect);
        assert!(iou(truth, got) > 0.8, "frame {i}: {got:?} vs {truth:?}");
        assert_eq!((found[0].label.as_str(), found[0].model.as_str()), ("ball", "ball"));
        assert!((found[0].confidence - 0.9).abs() < 1e-6);
        assert_eq!(out.map_readable().unwrap().as_slice(), f.map_readable().unwrap().as_slice(), "media unchanged");
    }
    let s = stats(&h);
    assert_eq!((s.get::<u64>("sent").unwrap(), s.get::<u64>("ok").unwrap()), (8, 8), "{s}");
    assert!(s.get::<u64>("round-trip-p50").unwrap() > 0, "{s}");
    drop(h);

    // 2. A model slower than the budget: frames pass on time without results, in order.
    let mut h = harness(
        &[
            ("url", server.url().to_value()),
            ("model", "slow".to_value()),
            ("input-width", 64u32.to_value()),
            ("input-height", 64u32.to_value()),
            ("latency-budget", 200u32.to_value()),
        ],
        &caps,
    );
    let started = Instant::now();
    for f in &frames[..3] {
        h.push(f.clone()).unwrap();
    }
    for f in &frames[..3] {
        let out = h.pull().unwrap();
        assert_eq!(out.pts(), f.pts());
        assert!(rois(&out).is_empty());
    }
    assert!(started.elapsed() < Duration::from_millis(1900), "frames waited {:?}, longer than the budget allows", started.elapsed());
    let s = stats(&h);
    assert_eq!(s.get::<u64>("dropped-by-budget").unwrap(), 3, "{s}");
    let mut q = gst::query::Latency::new();
    assert!(h.element().unwrap().static_pad("src").unwrap().query(&mut q));
    assert_eq!(q.result().1, gst::ClockTime::from_mseconds(200), "the budget is the added latency");
    drop(h);

    // 3. A model that always fails (HTTP 500): retried, then the breaker opens and frames pass.
    let mut h = harness(
        &[
            ("url", server.url().to_value()),
            ("model", "broken".to_value()),
            ("input-width", 64u32.to_value()),
            ("input-height", 64u32.to_value()),
            ("max-retries", 1u32.to_value()),
            ("breaker-threshold", 2u32.to_value()),
            ("breaker-cooldown", 600_000u32.to_value()),
            ("max-inflight", 1u32.to_value()),
            ("latency-budget", 30_000u32.to_value()),
        ],
        &caps,
    );
    for f in &frames {
        h.push(f.clone()).unwrap();
        let out = h.pull().unwrap();
        assert_eq!(out.pts(), f.pts());
        assert!(rois(&out).is_empty());
    }
    let s = stats(&h);
    eprintln!("broken model: {s}");
    assert_eq!(s.get::<u64>("failed").unwrap(), 2, "{s}");
    assert_eq!(s.get::<u64>("retried").unwrap(), 2, "one retry per request: {s}");
    assert_eq!(s.get::<u64>("skipped-breaker").unwrap(), 6, "{s}");
    assert_eq!(s.get::<&str>("breaker-state").unwrap(), "open");
    drop(h);

    // 4. An unknown model (HTTP 404): a clear element error that never shows the API key.
    let (message, debug) = run_expecting_error(
        &format!("inferclient url={} model=no-such-model api-key=sk-very-secret-key input-width=64 input-height=64", server.url()),
        &caps,
        &frames[..2],
    );
    assert!(message.contains("refused the request") && message.contains("404"), "{message}");
    assert!(!message.contains("sk-very-secret") && !debug.contains("sk-very-secret"), "{message} {debug}");
}

/// Runs `appsrc ! desc ! fakesink` with `frames`; returns the error it must post.
fn run_expecting_error(desc: &str, caps: &gst::Caps, frames: &[gst::Buffer]) -> (String, String) {
    init();
    let pipeline = gst::parse::launch(&format!("appsrc name=src format=time ! {desc} ! fakesink")).unwrap().downcast::<gst::Pipeline>().unwrap();
    let src = pipeline.by_name("src").unwrap().downcast::<gst_app::AppSrc>().unwrap();
    src.set_caps(Some(caps));
    pipeline.set_state(gst::State::Playing).unwrap();
    for f in frames {
        let _ = src.push_buffer(f.clone());
    }
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(gst::ClockTime::from_seconds(30), &[gst::MessageType::Error])
        .expect("an error within 30 s");
    pipeline.set_state(gst::State::Null).unwrap();
    let gst::MessageView::Error(e) = msg.view() else { unreachable!() };
    (e.error().to_string(), e.debug().map(|d| d.to_string()).unwrap_or_default())
}
