//! inferclient against real peers started on loopback by the tests: MLServer
//! (KServe v2 REST) with a tiny ball detector, and the runpod SDK's local API
//! with a handler that finds the ball in the JPEG and answers audio.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gst::glib;
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
    /// MLServer's gRPC port (0 for the others).
    grpc_port: u16,
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
        let (port, grpc_port) = (free_port(), free_port());
        let child = Command::new(venv.join("mlserver"))
            .arg("start")
            .arg(peers().join("mlserver"))
            .env("PYTHONPATH", peers().join("mlserver"))
            .env("MLSERVER_HOST", "127.0.0.1")
            .env("MLSERVER_HTTP_PORT", port.to_string())
            .env("MLSERVER_GRPC_PORT", grpc_port.to_string())
            .env("MLSERVER_METRICS_PORT", free_port().to_string())
            .env("MLSERVER_METRICS_ENDPOINT", "")
            .env("MLSERVER_PARALLEL_WORKERS", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mlserver starts");
        Peer { child, port, grpc_port }.wait_ready("MLServer", |p| ["ball", "slow", "broken", "text"].iter().all(|m| http(p, "GET", &format!("/v2/models/{m}/ready")) == Some(200)))
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
        Peer { child, port, grpc_port: 0 }.wait_ready("runpod local API", |p| http(p, "GET", "/openapi.json") == Some(200))
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Runs `desc` (ending in an appsink named `sink`) to EOS: its caps and buffers.
fn frames_from(desc: &str) -> (gst::Caps, Vec<gst::Buffer>) {
    init();
    let pipeline = gst::parse::launch(desc).unwrap().downcast::<gst::Pipeline>().unwrap();
    let sink = pipeline.by_name("sink").unwrap().downcast::<gst_app::AppSink>().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut caps = None;
    let mut out = Vec::new();
    while let Ok(s) = sink.pull_sample() {
        caps = s.caps_owned();
        out.push(s.buffer_owned().unwrap());
    }
    pipeline.set_state(gst::State::Null).unwrap();
    (caps.expect("at least one frame"), out)
}

/// `n` RGB frames of videotestsrc's moving white ball on black.
fn ball_frames(n: usize) -> (gst::Caps, Vec<gst::Buffer>) {
    frames_from(&format!(
        "videotestsrc num-buffers={n} pattern=ball ! video/x-raw,format=RGB,width={W},height={H},framerate=10/1 ! appsink name=sink sync=false"
    ))
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

fn harness(props: &[(&str, &str)], caps: &gst::Caps) -> Harness {
    init();
    // Properties before the harness brings the element up: it reads them on start.
    let element = gst::ElementFactory::make("inferclient").build().unwrap();
    for (k, v) in props {
        element.set_property_from_str(k, v);
    }
    let mut h = Harness::with_element(&element, Some("sink"), Some("src"));
    h.set_src_caps(caps.clone());
    h.play();
    h
}

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
            ("url", &server.url()),
            ("model", "ball"),
            ("input-width", "160"),
            ("input-height", "160"),
            ("labels", "ball"),
            ("latency-budget", "30000"),
            ("max-inflight", "16"),
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
            ("url", &server.url()),
            ("model", "slow"),
            ("input-width", "64"),
            ("input-height", "64"),
            ("latency-budget", "200"),
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
            ("url", &server.url()),
            ("model", "broken"),
            ("input-width", "64"),
            ("input-height", "64"),
            ("max-retries", "1"),
            ("breaker-threshold", "2"),
            ("breaker-cooldown", "600000"),
            ("max-inflight", "1"),
            ("latency-budget", "30000"),
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

/// 10 ms of 16 kHz S16LE mono speech-ish samples carrying segment `id`.
fn audio(pts_ms: u64, id: u64) -> gst::Buffer {
    let mut b = plain_audio(pts_ms);
    SegmentIdMeta::set(b.make_mut(), id);
    b
}

/// 10 ms of 16 kHz S16LE mono without a segment.
fn plain_audio(pts_ms: u64) -> gst::Buffer {
    let samples: Vec<u8> = (0..160).flat_map(|i| (((i as f64 * 0.2).sin() * 8000.0) as i16).to_le_bytes()).collect();
    let mut b = gst::Buffer::from_slice(samples);
    {
        let b = b.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_mseconds(pts_ms));
        b.set_duration(gst::ClockTime::from_mseconds(10));
    }
    b
}

const AUDIO: &str = "audio/x-raw,format=S16LE,rate=16000,channels=1,layout=interleaved";

#[test]
fn runpod_images_segmented_audio_and_cancel() {
    let server = Peer::runpod();
    let url = server.url();

    // Frames as JPEG to a RunPod handler that finds the ball: boxes in frame coordinates.
    let (caps, frames) = ball_frames(3);
    let mut h = harness(&[("protocol", "runpod"), ("url", &url), ("model", "ball"), ("latency-budget", "30000"), ("api-key", "rp-secret")], &caps);
    for f in &frames {
        h.push(f.clone()).unwrap();
    }
    for f in &frames {
        let out = h.pull().unwrap();
        let found = rois(&out);
        assert_eq!(found.len(), 1);
        let (truth, got) = (ball_box(f), found[0].rect);
        // JPEG blurs the edge by a pixel or two.
        assert!(iou(truth, got) > 0.75, "{got:?} vs {truth:?}");
        assert_eq!(found[0].label, "ball");
        let result = InferenceResult::get(&out).expect("the handler's text as an inference meta");
        assert_eq!(result.text, format!("jpeg {W}x{H} (input said {W}x{H})"));
    }
    drop(h);

    // Audio in speech segments, output=text: one transcript per segment, with its times and id.
    let caps: gst::Caps = AUDIO.parse().unwrap();
    let mut h = harness(&[("protocol", "runpod"), ("url", &url), ("output", "text")], &caps);
    let start = |id: u64, ms: u64| SegmentEvent::Start { id, running_time: gst::ClockTime::from_mseconds(ms), lookback: gst::ClockTime::ZERO }.to_event();
    h.push_event(start(1, 0));
    for i in 0..50 {
        h.push(audio(i * 10, 1)).unwrap();
    }
    h.push_event(SegmentEvent::End { id: 1 }.to_event());
    let text = h.pull().unwrap();
    assert_eq!(text.pts(), Some(gst::ClockTime::ZERO));
    assert_eq!(text.duration(), Some(gst::ClockTime::from_mseconds(500)));
    assert_eq!(SegmentIdMeta::get(&text), Some(1));
    assert_eq!(std::str::from_utf8(&text.map_readable().unwrap()).unwrap(), "16000 bytes of audio", "500 ms of 16 kHz S16LE");
    assert_eq!(InferenceResult::get(&text).unwrap().kind, "transcript");
    drop(h);

    // A cancel while the request is in flight: aborted at once, cancel-ack posted, no text.
    let pipeline = gst::Pipeline::new();
    let src = gst_app::AppSrc::builder().caps(&caps).format(gst::Format::Time).build();
    let client = gst::ElementFactory::make("inferclient").build().unwrap();
    for (k, v) in [("protocol", "runpod"), ("url", url.as_str()), ("model", "slow"), ("output", "text")] {
        client.set_property_from_str(k, v);
    }
    let sink = gst_app::AppSink::builder().sync(false).build();
    pipeline.add_many([src.upcast_ref(), &client, sink.upcast_ref()]).unwrap();
    gst::Element::link_many([src.upcast_ref(), &client, sink.upcast_ref()]).unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let srcpad = src.static_pad("src").unwrap();
    for i in 0..20 {
        src.push_buffer(audio(i * 10, 2)).unwrap();
    }
    // Serialized: after the audio; the request starts when it reaches inferclient.
    src.send_event(SegmentEvent::End { id: 2 }.to_event());
    let sent = Instant::now();
    while client.property::<gst::Structure>("stats").get::<u64>("inflight").unwrap() == 0 {
        assert!(sent.elapsed() < Duration::from_secs(10), "the request never started");
        std::thread::yield_now();
    }
    assert!(srcpad.push_event(SegmentEvent::Cancel { id: 2, reason: "false start".into() }.to_event()));
    let bus = pipeline.bus().unwrap();
    let ack = bus
        .timed_pop_filtered(gst::ClockTime::from_seconds(5), &[gst::MessageType::Element])
        .and_then(|m| m.structure().and_then(rtai_core::CancelAck::from_structure))
        .expect("cancel-ack");
    assert_eq!((ack.id, ack.requests_aborted), (2, 1));
    src.end_of_stream().unwrap();
    assert!(sink.pull_sample().is_err(), "no transcript for a cancelled segment: EOS comes first");
    assert!(sent.elapsed() < Duration::from_secs(3), "the 3 s request was not waited for");
    let s = client.property::<gst::Structure>("stats");
    assert_eq!(s.get::<u64>("aborted").unwrap(), 1, "{s}");
    pipeline.set_state(gst::State::Null).unwrap();
}

#[test]
fn max_inflight_and_interval_limit_requests() {
    let server = Peer::mlserver();
    let (caps, frames) = ball_frames(12);
    // interval=3: frames 0, 3, 6, 9 are sent; the rest pass without results.
    let mut h = harness(&[("url", &server.url()), ("model", "ball"), ("input-width", "64"), ("input-height", "64"), ("interval", "3"), ("max-inflight", "16"), ("latency-budget", "30000")], &caps);
    for f in &frames {
        h.push(f.clone()).unwrap();
    }
    let with_results: Vec<usize> = (0..frames.len()).filter(|_| !rois(&h.pull().unwrap()).is_empty()).collect();
    assert_eq!(with_results, vec![0, 3, 6, 9]);
    drop(h);
    // max-inflight=1 with a 2 s model: the first frame is sent, the next ones are skipped, counted.
    let mut h = harness(&[("url", &server.url()), ("model", "slow"), ("input-width", "64"), ("input-height", "64"), ("max-inflight", "1"), ("latency-budget", "50")], &caps);
    for f in &frames[..4] {
        h.push(f.clone()).unwrap();
    }
    for _ in 0..4 {
        h.pull().unwrap();
    }
    let s = stats(&h);
    assert_eq!((s.get::<u64>("sent").unwrap(), s.get::<u64>("skipped-busy").unwrap()), (1, 3), "{s}");
}

#[test]
fn bad_input_is_a_clear_error() {
    init();
    for (caps, desc, expected) in [
        ("video/x-raw,format=GRAY8,width=64,height=64,framerate=10/1", "inferclient", "not-negotiated"),
        ("audio/x-raw,format=S16LE,rate=16000,channels=1,layout=interleaved", "inferclient protocol=kserve-rest", "cannot carry audio"),
    ] {
        let pipeline = gst::parse::launch(&format!("appsrc name=src format=time caps={caps} ! {desc} ! fakesink")).unwrap().downcast::<gst::Pipeline>().unwrap();
        let src = pipeline.by_name("src").unwrap().downcast::<gst_app::AppSrc>().unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let _ = src.push_buffer(gst::Buffer::with_size(64 * 64).unwrap());
        let msg = pipeline.bus().unwrap().timed_pop_filtered(gst::ClockTime::from_seconds(10), &[gst::MessageType::Error]).expect("an error");
        let gst::MessageView::Error(e) = msg.view() else { unreachable!() };
        let text = format!("{} {:?}", e.error(), e.debug());
        assert!(text.contains(expected), "{text}");
        pipeline.set_state(gst::State::Null).unwrap();
    }
}

#[test]
fn api_key_is_write_only() {
    init();
    let e = gst::ElementFactory::make("inferclient").property("api-key", "sk-1").build().unwrap();
    let pspec = e.find_property("api-key").unwrap();
    assert!(!pspec.flags().contains(glib::ParamFlags::READABLE));
    let out = Command::new("gst-inspect-1.0").arg("inferclient").env("GST_PLUGIN_PATH", workspace().join("target/release")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("api-key") && text.contains("Write only"), "{text}");
}

#[test]
fn openai_chat_and_transcriptions_against_a_fixture() {
    let port = free_port();
    let child = Command::new("python3").arg(peers().join("openai_fixture.py")).arg(port.to_string()).spawn().expect("python3 runs");
    let server = Peer { child, port, grpc_port: 0 }.wait_ready("OpenAI fixture", |p| http(p, "GET", "/").is_some());
    let (caps, frames) = ball_frames(3);
    // Two context frames and the previous answer fed back.
    let mut h = harness(
        &[
            ("protocol", "openai-chat"),
            ("url", &server.url()),
            ("model", "vlm"),
            ("api-key", "sk-test"),
            ("prompt", "What moves?"),
            ("context-frames", "2"),
            ("feed-back-answer", "true"),
            ("max-inflight", "1"),
            ("latency-budget", "30000"),
        ],
        &caps,
    );
    let mut captions = Vec::new();
    for f in &frames {
        h.push(f.clone()).unwrap();
        let out = h.pull().unwrap();
        let r = InferenceResult::get(&out).expect("a caption");
        assert_eq!((r.kind.as_str(), r.model.as_deref()), ("caption", Some("vlm")));
        captions.push(r.text);
    }
    assert_eq!(captions[0], "1 frames, prompt 'What moves?', previous: none");
    assert_eq!(captions[1], format!("2 frames, prompt 'What moves?', previous: {}", captions[0]));
    assert!(captions[2].starts_with("2 frames"));
    drop(h);

    // Transcriptions in fixed chunks (no segments): 300 ms chunks of 16 kHz audio, as text.
    let caps: gst::Caps = AUDIO.parse().unwrap();
    let mut h = harness(&[("protocol", "openai-transcriptions"), ("url", &server.url()), ("model", "whisper-1"), ("api-key", "sk-test"), ("output", "text"), ("chunk-duration", "300")], &caps);
    for i in 0..60 {
        h.push(plain_audio(i * 10)).unwrap();
    }
    h.push_event(gst::event::Eos::new());
    let texts: Vec<String> = (0..2).map(|_| String::from_utf8(h.pull().unwrap().map_readable().unwrap().to_vec()).unwrap()).collect();
    assert_eq!(texts, vec!["9600 bytes for whisper-1".to_string(), "9600 bytes for whisper-1".to_string()]);
    drop(h);

    // A wrong key: 401 is a clear error, without the key in it.
    let (message, debug) = run_expecting_error(&format!("inferclient protocol=openai-chat url={} api-key=sk-wrong-one", server.url()), &ball_frames(1).0, &frames[..1]);
    assert!(message.contains("401") && message.contains("Incorrect API key"), "{message}");
    assert!(!message.contains("sk-wrong") && !debug.contains("sk-wrong"));
}

fn fault_server() -> Peer {
    let port = free_port();
    let child = Command::new("python3").arg(peers().join("kserve_faults.py")).arg(port.to_string()).spawn().expect("python3 runs");
    Peer { child, port, grpc_port: 0 }.wait_ready("KServe fault fixture", |p| http(p, "GET", "/v2/health/live") == Some(200))
}

/// Runs frames through `appsrc ! inferclient <props> ! appsink` to EOS; returns the
/// outputs, the warnings posted and the element's stats.
fn run_to_eos(props: &str, caps: &gst::Caps, frames: &[gst::Buffer], mut between: impl FnMut(usize)) -> (Vec<gst::Buffer>, Vec<String>, gst::Structure) {
    init();
    let pipeline = gst::parse::launch(&format!("appsrc name=src format=time ! inferclient name=infer {props} ! appsink name=sink sync=false"))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let src = pipeline.by_name("src").unwrap().downcast::<gst_app::AppSrc>().unwrap();
    let sink = pipeline.by_name("sink").unwrap().downcast::<gst_app::AppSink>().unwrap();
    src.set_caps(Some(caps));
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut out = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        between(i);
        src.push_buffer(f.clone()).unwrap();
        // One frame in, one frame out: a stall shows up here as a 60 s timeout.
        out.push(sink.try_pull_sample(gst::ClockTime::from_seconds(60)).expect("the frame comes out").buffer_owned().unwrap());
    }
    src.end_of_stream().unwrap();
    assert!(sink.pull_sample().is_err(), "EOS after the last frame");
    let bus = pipeline.bus().unwrap();
    let messages: Vec<gst::Message> = std::iter::from_fn(|| bus.pop()).collect();
    assert!(!messages.iter().any(|m| m.type_() == gst::MessageType::Error), "{messages:?}");
    let warnings = messages
        .iter()
        .filter_map(|m| match m.view() {
            gst::MessageView::Warning(w) => Some(w.error().to_string()),
            _ => None,
        })
        .collect();
    let stats = pipeline.by_name("infer").unwrap().property::<gst::Structure>("stats");
    pipeline.set_state(gst::State::Null).unwrap();
    (out, warnings, stats)
}

fn count(s: &gst::Structure, f: &str) -> u64 {
    s.get::<u64>(f).unwrap()
}

#[test]
fn faults_are_retried_counted_and_never_stall() {
    let mut server = fault_server();
    let url = server.url();
    let (caps, frames) = ball_frames(6);
    let base = format!("url={url} input-width=32 input-height=32 max-inflight=1 latency-budget=30000");

    // 503 on every other call: each request succeeds on its retry.
    let (out, warnings, s) = run_to_eos(&format!("{base} model=flaky max-retries=2"), &caps, &frames, |_| {});
    assert!(out.iter().all(|b| rois(b).len() == 1), "{s}");
    assert_eq!((count(&s, "sent"), count(&s, "ok"), count(&s, "failed"), count(&s, "retried")), (6, 6, 0, 6), "{s}");
    assert!(warnings.is_empty(), "{warnings:?}");

    // Malformed JSON and a wrong tensor shape: results lost, one warning, breaker opens, frames flow.
    for model in ["garbage", "shape"] {
        let (out, warnings, s) = run_to_eos(&format!("{base} model={model} breaker-threshold=3 breaker-cooldown=600000"), &caps, &frames, |_| {});
        assert_eq!(out.len(), 6);
        assert!(out.iter().all(|b| rois(b).is_empty()));
        assert_eq!((count(&s, "sent"), count(&s, "failed"), count(&s, "skipped-breaker")), (3, 3, 3), "{model}: {s}");
        assert_eq!(s.get::<&str>("breaker-state").unwrap(), "open");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("Unusable reply"), "{warnings:?}");
    }

    // The server dies after three frames: later requests fail (connection refused), are
    // retried and counted; the breaker opens; every frame still comes out, then EOS.
    let (out, _, s) = run_to_eos(&format!("{base} model=ok max-retries=1 breaker-threshold=2 breaker-cooldown=600000"), &caps, &frames, |i| {
        if i == 3 {
            let _ = server.child.kill();
            let _ = server.child.wait();
        }
    });
    let with_results = out.iter().filter(|b| rois(b).len() == 1).count();
    assert_eq!(with_results, 3, "{s}");
    assert_eq!(count(&s, "ok"), 3, "{s}");
    assert_eq!(count(&s, "failed"), 2, "{s}");
    assert_eq!(count(&s, "retried"), 2, "one retry per failed request: {s}");
    assert_eq!(count(&s, "sent"), count(&s, "ok") + count(&s, "failed") + count(&s, "aborted"), "stats add up: {s}");
    assert_eq!(count(&s, "skipped-breaker"), 1, "{s}");
}

#[test]
fn kserve_grpc_against_mlserver() {
    let server = Peer::mlserver();
    let url = format!("http://127.0.0.1:{}", server.grpc_port);
    let (caps, frames) = ball_frames(4);
    let mut h = harness(
        &[("protocol", "kserve-grpc"), ("url", &url), ("model", "ball"), ("labels", "ball"), ("input-width", "160"), ("input-height", "160"), ("latency-budget", "30000")],
        &caps,
    );
    for f in &frames {
        h.push(f.clone()).unwrap();
    }
    for (i, f) in frames.iter().enumerate() {
        let out = h.pull().unwrap();
        let found = rois(&out);
        assert_eq!(found.len(), 1, "frame {i}");
        assert!(iou(ball_box(f), found[0].rect) > 0.8, "frame {i}: {:?} vs {:?}", found[0].rect, ball_box(f));
        assert_eq!(found[0].label, "ball");
    }
    assert_eq!(stats(&h).get::<u64>("ok").unwrap(), 4);
    drop(h);
    // An unknown model: NOT_FOUND is a clear error, without the key.
    let (message, debug) = run_expecting_error(
        &format!("inferclient protocol=kserve-grpc url={url} model=no-such-model api-key=grpc-secret-key input-width=32 input-height=32"),
        &caps,
        &frames[..1],
    );
    assert!(message.contains("NotFound"), "{message}");
    assert!(!message.contains("grpc-secret") && !debug.contains("grpc-secret"));
}

/// Frames showing "HELLO 42" in white on black (drawn by Pillow), and the text's box.
fn text_frames() -> (gst::Caps, Vec<gst::Buffer>, (f64, f64, f64, f64)) {
    init();
    let png = std::env::temp_dir().join(format!("rtai-text-{}.png", std::process::id()));
    let status = Command::new(workspace().join(".venv-runpod/bin/python")).arg(peers().join("make_text_image.py")).arg(&png).status().unwrap();
    assert!(status.success());
    let (caps, frames) = frames_from(&format!(
        "filesrc location={} ! pngdec ! videoconvert ! video/x-raw,format=RGB,width={W},height={H} ! imagefreeze num-buffers=2 ! video/x-raw,framerate=10/1 ! appsink name=sink sync=false",
        png.display()
    ));
    let _ = std::fs::remove_file(&png);
    let truth = ball_box(&frames[0]);
    (caps, frames, truth)
}

fn union(rois: &[Roi]) -> (f64, f64, f64, f64) {
    rois.iter().fold((f64::MAX, f64::MAX, 0.0, 0.0), |u, r| (u.0.min(r.rect.0), u.1.min(r.rect.1), u.2.max(r.rect.2), u.3.max(r.rect.3)))
}

#[test]
fn ocr_text_detector_onnx_over_rest_grpc_and_runpod() {
    let mlserver = Peer::mlserver();
    let runpod = Peer::runpod();
    let (caps, frames, truth) = text_frames();
    let grpc = format!("http://127.0.0.1:{}", mlserver.grpc_port);
    for props in [
        vec![("protocol", "kserve-rest"), ("url", mlserver.url().as_str()), ("model", "text"), ("labels", "text")],
        vec![("protocol", "kserve-grpc"), ("url", grpc.as_str()), ("model", "text"), ("labels", "text")],
        vec![("protocol", "runpod"), ("url", runpod.url().as_str()), ("model", "text")],
    ] {
        let mut all = props.clone();
        all.extend([("input-width", "320"), ("input-height", "320"), ("latency-budget", "60000"), ("request-timeout", "60000"), ("confidence-threshold", "0.3")]);
        let mut h = harness(&all, &caps);
        for f in &frames {
            h.push(f.clone()).unwrap();
        }
        for _ in &frames {
            let found = rois(&h.pull().unwrap());
            assert!(!found.is_empty(), "{props:?}: no text found");
            assert!(found.iter().all(|r| r.label == "text"));
            let got = union(&found);
            eprintln!("{props:?}: text at {got:?}, drawn at {truth:?}, IoU {:.2}", iou(truth, got));
            assert!(iou(truth, got) > 0.6, "{props:?}: {got:?} vs {truth:?}");
        }
    }
}

#[test]
fn pocketsphinx_transcribes_speech_segments_over_runpod() {
    init();
    let server = Peer::runpod();
    let dir = std::env::temp_dir().join(format!("rtai-sphinx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |cmd: &str, args: &[&str]| assert!(Command::new(cmd).args(args).current_dir(&dir).status().unwrap().success(), "{cmd}");
    run("espeak-ng", &["-s", "150", "-w", "raw.wav", "turn the lights on in the kitchen"]);
    run("sox", &["-q", "raw.wav", "-r", "16000", "-c", "1", "-b", "16", "speech.raw"]);
    let samples = std::fs::read(dir.join("speech.raw")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let caps: gst::Caps = AUDIO.parse().unwrap();
    let grammar = "#JSGF V1.0; grammar cmd; public <cmd> = turn the lights (on | off) in the (kitchen | bedroom | hall);";
    let mut h = harness(&[("protocol", "runpod"), ("url", &server.url()), ("model", "sphinx"), ("prompt", grammar), ("output", "text"), ("request-timeout", "60000")], &caps);
    h.push_event(SegmentEvent::Start { id: 7, running_time: gst::ClockTime::ZERO, lookback: gst::ClockTime::ZERO }.to_event());
    for (i, chunk) in samples.chunks(320).enumerate() {
        let mut b = gst::Buffer::from_slice(chunk.to_vec());
        {
            let b = b.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_mseconds(i as u64 * 10));
            b.set_duration(gst::ClockTime::from_mseconds(10));
            SegmentIdMeta::set(b, 7);
        }
        h.push(b).unwrap();
    }
    h.push_event(SegmentEvent::End { id: 7 }.to_event());
    let text = h.pull().unwrap();
    assert_eq!(std::str::from_utf8(&text.map_readable().unwrap()).unwrap(), "turn the lights on in the kitchen");
    assert_eq!(SegmentIdMeta::get(&text), Some(7));
}

#[test]
fn kserve_rest_binary_tensor_extension() {
    let server = fault_server();
    let (caps, frames) = ball_frames(2);
    let mut h = harness(
        &[("url", &server.url()), ("model", "binary"), ("binary-data", "true"), ("input-width", "32"), ("input-height", "24"), ("labels", "box"), ("latency-budget", "30000")],
        &caps,
    );
    for f in &frames {
        h.push(f.clone()).unwrap();
    }
    for _ in &frames {
        let found = rois(&h.pull().unwrap());
        assert_eq!(found.len(), 1);
        // [4, 4, 20, 20] in a 32x24 input letterboxed from 320x240 (scale 0.1): x10 in the frame.
        assert_eq!(found[0].rect, (40.0, 40.0, 200.0, 200.0));
        assert_eq!(found[0].label, "box");
    }
    let s = stats(&h);
    assert_eq!((s.get::<u64>("ok").unwrap(), s.get::<u64>("failed").unwrap()), (2, 0), "{s}");
}

#[test]
fn a_buffer_list_is_one_batched_request() {
    let server = Peer::mlserver();
    let (caps, frames) = ball_frames(4);
    init();
    // batcher's keep-separate mode pushes buffer lists like this one.
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src format=time ! inferclient name=infer url={} model=ball labels=ball input-width=160 input-height=160 latency-budget=30000 ! appsink name=sink sync=false",
        server.url()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = pipeline.by_name("src").unwrap().downcast::<gst_app::AppSrc>().unwrap();
    let sink = pipeline.by_name("sink").unwrap().downcast::<gst_app::AppSink>().unwrap();
    src.set_caps(Some(&caps));
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut list = gst::BufferList::new();
    for f in &frames {
        list.get_mut().unwrap().add(f.clone());
    }
    src.push_buffer_list(list).unwrap();
    src.end_of_stream().unwrap();
    for (i, f) in frames.iter().enumerate() {
        let out = sink.pull_sample().unwrap().buffer_owned().unwrap();
        assert_eq!(out.pts(), f.pts());
        let found = rois(&out);
        assert_eq!(found.len(), 1, "frame {i}");
        assert!(iou(ball_box(f), found[0].rect) > 0.8, "frame {i} got its own box: {:?} vs {:?}", found[0].rect, ball_box(f));
    }
    let s = pipeline.by_name("infer").unwrap().property::<gst::Structure>("stats");
    assert_eq!((s.get::<u64>("sent").unwrap(), s.get::<u64>("ok").unwrap()), (1, 1), "one request for the list: {s}");
    pipeline.set_state(gst::State::Null).unwrap();
}
