//! inferclient against real peers started on loopback by the tests: MLServer
//! (KServe v2 REST) with a tiny ball detector, and the runpod SDK's local API
//! with a handler that finds the ball in the JPEG and answers audio.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
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
        gstrtaitrack::plugin_register_static().unwrap();
    });
}

/// Runs `desc` (ending in an appsink named `sink`) to EOS: its caps and buffers.
fn frames_from(desc: &str) -> (gst::Caps, Vec<gst::Buffer>) {
    init();
    let pipeline = gst::parse::launch(desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
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
    label_id: i32,
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
                label_id: p.get("label_id").unwrap(),
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
        assert_eq!(
            (found[0].label.as_str(), found[0].model.as_str()),
            ("ball", "ball")
        );
        assert!((found[0].confidence - 0.9).abs() < 1e-6);
        assert_eq!(
            out.map_readable().unwrap().as_slice(),
            f.map_readable().unwrap().as_slice(),
            "media unchanged"
        );
    }
    let s = stats(&h);
    assert_eq!(
        (s.get::<u64>("sent").unwrap(), s.get::<u64>("ok").unwrap()),
        (8, 8),
        "{s}"
    );
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
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "frames waited {:?}, longer than the budget allows",
        started.elapsed()
    );
    let s = stats(&h);
    assert_eq!(s.get::<u64>("dropped-by-budget").unwrap(), 3, "{s}");
    let mut q = gst::query::Latency::new();
    assert!(
        h.element()
            .unwrap()
            .static_pad("src")
            .unwrap()
            .query(&mut q)
    );
    assert_eq!(
        q.result().1,
        gst::ClockTime::from_mseconds(200),
        "the budget is the added latency"
    );
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
    assert_eq!(
        s.get::<u64>("retried").unwrap(),
        2,
        "one retry per request: {s}"
    );
    assert_eq!(s.get::<u64>("skipped-breaker").unwrap(), 6, "{s}");
    assert_eq!(s.get::<&str>("breaker-state").unwrap(), "open");
    drop(h);

    // 4. An unknown model (HTTP 404): a clear element error that never shows the API key.
    let (message, debug) = run_expecting_error(
        &format!(
            "inferclient url={} model=no-such-model api-key=sk-very-secret-key input-width=64 input-height=64",
            server.url()
        ),
        &caps,
        &frames[..2],
    );
    assert!(
        message.contains("refused the request") && message.contains("404"),
        "{message}"
    );
    assert!(
        !message.contains("sk-very-secret") && !debug.contains("sk-very-secret"),
        "{message} {debug}"
    );
}

/// Runs `appsrc ! desc ! fakesink` with `frames`; returns the error it must post.
fn run_expecting_error(desc: &str, caps: &gst::Caps, frames: &[gst::Buffer]) -> (String, String) {
    init();
    let pipeline = gst::parse::launch(&format!("appsrc name=src format=time ! {desc} ! fakesink"))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
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
    let gst::MessageView::Error(e) = msg.view() else {
        unreachable!()
    };
    (
        e.error().to_string(),
        e.debug().map(|d| d.to_string()).unwrap_or_default(),
    )
}

const AUDIO: &str = "audio/x-raw,format=S16LE,rate=16000,channels=1,layout=interleaved";

#[test]
fn runpod_images_segmented_audio_and_cancel() {
    let server = Peer::runpod();
    let url = server.url();

    // Frames as JPEG to a RunPod handler that finds the ball: boxes in frame coordinates.
    let (caps, frames) = ball_frames(3);
    let mut h = harness(
        &[
            ("protocol", "runpod"),
            ("url", &url),
            ("model", "ball"),
            ("latency-budget", "30000"),
            ("api-key", "rp-secret"),
        ],
        &caps,
    );
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
    let mut h = harness(
        &[("protocol", "runpod"), ("url", &url), ("output", "text")],
        &caps,
    );
    let start = |id: u64, ms: u64| {
        SegmentEvent::Start {
            id,
            running_time: gst::ClockTime::from_mseconds(ms),
            lookback: gst::ClockTime::ZERO,
        }
        .to_event()
    };
    h.push_event(start(1, 0));
    for i in 0..50 {
        h.push(audio(i * 10, 1)).unwrap();
    }
    h.push_event(SegmentEvent::End { id: 1 }.to_event());
    let text = h.pull().unwrap();
    assert_eq!(text.pts(), Some(gst::ClockTime::ZERO));
    assert_eq!(text.duration(), Some(gst::ClockTime::from_mseconds(500)));
    assert_eq!(SegmentIdMeta::get(&text), Some(1));
    assert_eq!(
        std::str::from_utf8(&text.map_readable().unwrap()).unwrap(),
        "16000 bytes of audio",
        "500 ms of 16 kHz S16LE"
    );
    assert_eq!(InferenceResult::get(&text).unwrap().kind, "transcript");
    drop(h);

    // A cancel while the request is in flight: aborted at once, cancel-ack posted, no text.
    let pipeline = gst::Pipeline::new();
    let src = gst_app::AppSrc::builder()
        .caps(&caps)
        .format(gst::Format::Time)
        .build();
    let client = gst::ElementFactory::make("inferclient").build().unwrap();
    for (k, v) in [
        ("protocol", "runpod"),
        ("url", url.as_str()),
        ("model", "slow"),
        ("output", "text"),
    ] {
        client.set_property_from_str(k, v);
    }
    let sink = gst_app::AppSink::builder().sync(false).build();
    pipeline
        .add_many([src.upcast_ref(), &client, sink.upcast_ref()])
        .unwrap();
    gst::Element::link_many([src.upcast_ref(), &client, sink.upcast_ref()]).unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let srcpad = src.static_pad("src").unwrap();
    for i in 0..20 {
        src.push_buffer(audio(i * 10, 2)).unwrap();
    }
    // Serialized: after the audio; the request starts when it reaches inferclient.
    src.send_event(SegmentEvent::End { id: 2 }.to_event());
    let sent = Instant::now();
    while client
        .property::<gst::Structure>("stats")
        .get::<u64>("inflight")
        .unwrap()
        == 0
    {
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "the request never started"
        );
        std::thread::yield_now();
    }
    assert!(
        srcpad.push_event(
            SegmentEvent::Cancel {
                id: 2,
                reason: "false start".into()
            }
            .to_event()
        )
    );
    let bus = pipeline.bus().unwrap();
    let ack = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(5),
            &[gst::MessageType::Element],
        )
        .and_then(|m| m.structure().and_then(rtai_core::CancelAck::from_structure))
        .expect("cancel-ack");
    assert_eq!((ack.id, ack.requests_aborted), (2, 1));
    src.end_of_stream().unwrap();
    assert!(
        sink.pull_sample().is_err(),
        "no transcript for a cancelled segment: EOS comes first"
    );
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "the 3 s request was not waited for"
    );
    let s = client.property::<gst::Structure>("stats");
    assert_eq!(s.get::<u64>("aborted").unwrap(), 1, "{s}");
    pipeline.set_state(gst::State::Null).unwrap();
}

#[test]
fn max_inflight_and_interval_limit_requests() {
    let server = Peer::mlserver();
    let (caps, frames) = ball_frames(12);
    // interval=3: frames 0, 3, 6, 9 are sent; the rest pass without results.
    let mut h = harness(
        &[
            ("url", &server.url()),
            ("model", "ball"),
            ("input-width", "64"),
            ("input-height", "64"),
            ("interval", "3"),
            ("max-inflight", "16"),
            ("latency-budget", "30000"),
        ],
        &caps,
    );
    for f in &frames {
        h.push(f.clone()).unwrap();
    }
    let with_results: Vec<usize> = (0..frames.len())
        .filter(|_| !rois(&h.pull().unwrap()).is_empty())
        .collect();
    assert_eq!(with_results, vec![0, 3, 6, 9]);
    drop(h);
    // max-inflight=1 with a 2 s model: the first frame is sent, the next ones are skipped, counted.
    let mut h = harness(
        &[
            ("url", &server.url()),
            ("model", "slow"),
            ("input-width", "64"),
            ("input-height", "64"),
            ("max-inflight", "1"),
            ("latency-budget", "50"),
        ],
        &caps,
    );
    for f in &frames[..4] {
        h.push(f.clone()).unwrap();
    }
    for _ in 0..4 {
        h.pull().unwrap();
    }
    let s = stats(&h);
    assert_eq!(
        (
            s.get::<u64>("sent").unwrap(),
            s.get::<u64>("skipped-busy").unwrap()
        ),
        (1, 3),
        "{s}"
    );
}

#[test]
fn bad_input_is_a_clear_error() {
    init();
    for (caps, desc, expected) in [
        (
            "video/x-raw,format=GRAY8,width=64,height=64,framerate=10/1",
            "inferclient",
            "not-negotiated",
        ),
        (
            "audio/x-raw,format=S16LE,rate=16000,channels=1,layout=interleaved",
            "inferclient protocol=kserve-rest",
            "cannot carry audio",
        ),
    ] {
        let pipeline = gst::parse::launch(&format!(
            "appsrc name=src format=time caps={caps} ! {desc} ! fakesink"
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let src = pipeline
            .by_name("src")
            .unwrap()
            .downcast::<gst_app::AppSrc>()
            .unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let _ = src.push_buffer(gst::Buffer::with_size(64 * 64).unwrap());
        let msg = pipeline
            .bus()
            .unwrap()
            .timed_pop_filtered(gst::ClockTime::from_seconds(10), &[gst::MessageType::Error])
            .expect("an error");
        let gst::MessageView::Error(e) = msg.view() else {
            unreachable!()
        };
        let text = format!("{} {:?}", e.error(), e.debug());
        assert!(text.contains(expected), "{text}");
        pipeline.set_state(gst::State::Null).unwrap();
    }
}

#[test]
fn api_key_is_write_only() {
    init();
    let e = gst::ElementFactory::make("inferclient")
        .property("api-key", "sk-1")
        .build()
        .unwrap();
    let pspec = e.find_property("api-key").unwrap();
    assert!(!pspec.flags().contains(glib::ParamFlags::READABLE));
    let out = Command::new("gst-inspect-1.0")
        .arg("inferclient")
        .env("GST_PLUGIN_PATH", workspace().join("target/release"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("api-key") && text.contains("Write only"),
        "{text}"
    );
}

#[test]
fn openai_chat_and_transcriptions_against_a_fixture() {
    let port = free_port();
    let child = Command::new("python3")
        .arg(peers().join("openai_fixture.py"))
        .arg(port.to_string())
        .spawn()
        .expect("python3 runs");
    let server = Peer {
        child,
        port,
        grpc_port: 0,
    }
    .wait_ready("OpenAI fixture", |p| http(p, "GET", "/").is_some());
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
        assert_eq!(
            (r.kind.as_str(), r.model.as_deref()),
            ("caption", Some("vlm"))
        );
        captions.push(r.text);
    }
    assert_eq!(
        captions[0],
        "1 frames, prompt 'What moves?', previous: none"
    );
    assert_eq!(
        captions[1],
        format!("2 frames, prompt 'What moves?', previous: {}", captions[0])
    );
    assert!(captions[2].starts_with("2 frames"));
    drop(h);

    // Transcriptions in fixed chunks (no segments): 300 ms chunks of 16 kHz audio, as text.
    let caps: gst::Caps = AUDIO.parse().unwrap();
    let mut h = harness(
        &[
            ("protocol", "openai-transcriptions"),
            ("url", &server.url()),
            ("model", "whisper-1"),
            ("api-key", "sk-test"),
            ("output", "text"),
            ("chunk-duration", "300"),
        ],
        &caps,
    );
    for i in 0..60 {
        h.push(plain_audio(i * 10)).unwrap();
    }
    h.push_event(gst::event::Eos::new());
    let texts: Vec<String> = (0..2)
        .map(|_| String::from_utf8(h.pull().unwrap().map_readable().unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(
        texts,
        vec![
            "9600 bytes for whisper-1".to_string(),
            "9600 bytes for whisper-1".to_string()
        ]
    );
    drop(h);

    // A wrong key: 401 is a clear error, without the key in it.
    let (message, debug) = run_expecting_error(
        &format!(
            "inferclient protocol=openai-chat url={} api-key=sk-wrong-one",
            server.url()
        ),
        &ball_frames(1).0,
        &frames[..1],
    );
    assert!(
        message.contains("401") && message.contains("Incorrect API key"),
        "{message}"
    );
    assert!(!message.contains("sk-wrong") && !debug.contains("sk-wrong"));
}

fn fault_server() -> Peer {
    let port = free_port();
    let child = Command::new("python3")
        .arg(peers().join("kserve_faults.py"))
        .arg(port.to_string())
        .spawn()
        .expect("python3 runs");
    Peer {
        child,
        port,
        grpc_port: 0,
    }
    .wait_ready("KServe fault fixture", |p| {
        http(p, "GET", "/v2/health/live") == Some(200)
    })
}

/// inferclient against the fault fixture's `model` with 32x32 input, plus `extra`.
fn fault_harness(server: &Peer, model: &str, extra: &[(&str, &str)], caps: &gst::Caps) -> Harness {
    let url = server.url();
    let mut props = vec![
        ("url", url.as_str()),
        ("model", model),
        ("input-width", "32"),
        ("input-height", "32"),
    ];
    props.extend_from_slice(extra);
    harness(&props, caps)
}

/// Starts `appsrc ! inferclient <props> ! appsink` playing, the appsrc with `caps`.
fn start_pipeline(
    props: &str,
    caps: &gst::Caps,
) -> (gst::Pipeline, gst_app::AppSrc, gst_app::AppSink) {
    init();
    let pipeline = gst::parse::launch(&format!("appsrc name=src format=time ! inferclient name=infer {props} ! appsink name=sink sync=false"))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    src.set_caps(Some(caps));
    pipeline.set_state(gst::State::Playing).unwrap();
    (pipeline, src, sink)
}

/// Runs frames through `appsrc ! inferclient <props> ! appsink` to EOS; returns the
/// outputs, the warnings posted, the element's stats and its `inference-result` messages.
fn run_to_eos(
    props: &str,
    caps: &gst::Caps,
    frames: &[gst::Buffer],
    mut between: impl FnMut(usize),
) -> (
    Vec<gst::Buffer>,
    Vec<String>,
    gst::Structure,
    Vec<gst::Structure>,
) {
    let (pipeline, src, sink) = start_pipeline(props, caps);
    let mut out = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        between(i);
        src.push_buffer(f.clone()).unwrap();
        // One frame in, one frame out: a stall shows up here as a 60 s timeout.
        out.push(
            sink.try_pull_sample(gst::ClockTime::from_seconds(60))
                .expect("the frame comes out")
                .buffer_owned()
                .unwrap(),
        );
    }
    src.end_of_stream().unwrap();
    assert!(sink.pull_sample().is_err(), "EOS after the last frame");
    let bus = pipeline.bus().unwrap();
    let messages: Vec<gst::Message> = std::iter::from_fn(|| bus.pop()).collect();
    assert!(
        !messages
            .iter()
            .any(|m| m.type_() == gst::MessageType::Error),
        "{messages:?}"
    );
    let warnings = messages
        .iter()
        .filter_map(|m| match m.view() {
            gst::MessageView::Warning(w) => Some(w.error().to_string()),
            _ => None,
        })
        .collect();
    let results = messages
        .iter()
        .filter_map(|m| {
            m.structure()
                .filter(|s| s.name() == "inference-result")
                .map(|s| s.to_owned())
        })
        .collect();
    let stats = pipeline
        .by_name("infer")
        .unwrap()
        .property::<gst::Structure>("stats");
    pipeline.set_state(gst::State::Null).unwrap();
    (out, warnings, stats, results)
}

fn count(s: &gst::Structure, f: &str) -> u64 {
    s.get::<u64>(f).unwrap()
}

#[test]
fn faults_are_retried_counted_and_never_stall() {
    let mut server = fault_server();
    let url = server.url();
    let (caps, frames) = ball_frames(6);
    let base =
        format!("url={url} input-width=32 input-height=32 max-inflight=1 latency-budget=30000");

    // 503 on every other call: each request succeeds on its retry.
    let (out, warnings, s, _) = run_to_eos(
        &format!("{base} model=flaky max-retries=2"),
        &caps,
        &frames,
        |_| {},
    );
    assert!(out.iter().all(|b| rois(b).len() == 1), "{s}");
    assert_eq!(
        (
            count(&s, "sent"),
            count(&s, "ok"),
            count(&s, "failed"),
            count(&s, "retried")
        ),
        (6, 6, 0, 6),
        "{s}"
    );
    assert!(warnings.is_empty(), "{warnings:?}");

    // Malformed JSON and a wrong tensor shape: results lost, one warning, breaker opens, frames flow.
    for model in ["garbage", "shape"] {
        let (out, warnings, s, _) = run_to_eos(
            &format!("{base} model={model} breaker-threshold=3 breaker-cooldown=600000"),
            &caps,
            &frames,
            |_| {},
        );
        assert_eq!(out.len(), 6);
        assert!(out.iter().all(|b| rois(b).is_empty()));
        assert_eq!(
            (
                count(&s, "sent"),
                count(&s, "failed"),
                count(&s, "skipped-breaker")
            ),
            (3, 3, 3),
            "{model}: {s}"
        );
        assert_eq!(s.get::<&str>("breaker-state").unwrap(), "open");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("Unusable reply"), "{warnings:?}");
    }

    // The server dies after three frames: later requests fail (connection refused), are
    // retried and counted; the breaker opens; every frame still comes out, then EOS.
    let (out, _, s, _) = run_to_eos(
        &format!("{base} model=ok max-retries=1 breaker-threshold=2 breaker-cooldown=600000"),
        &caps,
        &frames,
        |i| {
            if i == 3 {
                let _ = server.child.kill();
                let _ = server.child.wait();
            }
        },
    );
    let with_results = out.iter().filter(|b| rois(b).len() == 1).count();
    assert_eq!(with_results, 3, "{s}");
    assert_eq!(count(&s, "ok"), 3, "{s}");
    assert_eq!(count(&s, "failed"), 2, "{s}");
    assert_eq!(count(&s, "retried"), 2, "one retry per failed request: {s}");
    assert_eq!(
        count(&s, "sent"),
        count(&s, "ok") + count(&s, "failed") + count(&s, "aborted"),
        "stats add up: {s}"
    );
    assert_eq!(count(&s, "skipped-breaker"), 1, "{s}");
}

#[test]
fn kserve_grpc_against_mlserver() {
    let server = Peer::mlserver();
    let url = format!("http://127.0.0.1:{}", server.grpc_port);
    let (caps, frames) = ball_frames(4);
    let mut h = harness(
        &[
            ("protocol", "kserve-grpc"),
            ("url", &url),
            ("model", "ball"),
            ("labels", "ball"),
            ("input-width", "160"),
            ("input-height", "160"),
            ("latency-budget", "30000"),
        ],
        &caps,
    );
    for f in &frames {
        h.push(f.clone()).unwrap();
    }
    for (i, f) in frames.iter().enumerate() {
        let out = h.pull().unwrap();
        let found = rois(&out);
        assert_eq!(found.len(), 1, "frame {i}");
        assert!(
            iou(ball_box(f), found[0].rect) > 0.8,
            "frame {i}: {:?} vs {:?}",
            found[0].rect,
            ball_box(f)
        );
        assert_eq!(found[0].label, "ball");
    }
    assert_eq!(stats(&h).get::<u64>("ok").unwrap(), 4);
    drop(h);
    // An unknown model: NOT_FOUND is a clear error, without the key.
    let (message, debug) = run_expecting_error(
        &format!(
            "inferclient protocol=kserve-grpc url={url} model=no-such-model api-key=grpc-secret-key input-width=32 input-height=32"
        ),
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
    let status = Command::new(workspace().join(".venv-runpod/bin/python"))
        .arg(peers().join("make_text_image.py"))
        .arg(&png)
        .status()
        .unwrap();
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
    rois.iter().fold((f64::MAX, f64::MAX, 0.0, 0.0), |u, r| {
        (
            u.0.min(r.rect.0),
            u.1.min(r.rect.1),
            u.2.max(r.rect.2),
            u.3.max(r.rect.3),
        )
    })
}

#[test]
fn ocr_text_detector_onnx_over_rest_grpc_and_runpod() {
    let mlserver = Peer::mlserver();
    let runpod = Peer::runpod();
    let (caps, frames, truth) = text_frames();
    let grpc = format!("http://127.0.0.1:{}", mlserver.grpc_port);
    for props in [
        vec![
            ("protocol", "kserve-rest"),
            ("url", mlserver.url().as_str()),
            ("model", "text"),
            ("labels", "text"),
        ],
        vec![
            ("protocol", "kserve-grpc"),
            ("url", grpc.as_str()),
            ("model", "text"),
            ("labels", "text"),
        ],
        vec![
            ("protocol", "runpod"),
            ("url", runpod.url().as_str()),
            ("model", "text"),
        ],
    ] {
        let mut all = props.clone();
        all.extend([
            ("input-width", "320"),
            ("input-height", "320"),
            ("latency-budget", "60000"),
            ("request-timeout", "60000"),
            ("confidence-threshold", "0.3"),
        ]);
        let mut h = harness(&all, &caps);
        for f in &frames {
            h.push(f.clone()).unwrap();
        }
        for _ in &frames {
            let found = rois(&h.pull().unwrap());
            assert!(!found.is_empty(), "{props:?}: no text found");
            assert!(found.iter().all(|r| r.label == "text"));
            let got = union(&found);
            eprintln!(
                "{props:?}: text at {got:?}, drawn at {truth:?}, IoU {:.2}",
                iou(truth, got)
            );
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
    let run = |cmd: &str, args: &[&str]| {
        assert!(
            Command::new(cmd)
                .args(args)
                .current_dir(&dir)
                .status()
                .unwrap()
                .success(),
            "{cmd}"
        )
    };
    run(
        "espeak-ng",
        &[
            "-s",
            "150",
            "-w",
            "raw.wav",
            "turn the lights on in the kitchen",
        ],
    );
    run(
        "sox",
        &[
            "-q",
            "raw.wav",
            "-r",
            "16000",
            "-c",
            "1",
            "-b",
            "16",
            "speech.raw",
        ],
    );
    let samples = std::fs::read(dir.join("speech.raw")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let caps: gst::Caps = AUDIO.parse().unwrap();
    let grammar = "#JSGF V1.0; grammar cmd; public <cmd> = turn the lights (on | off) in the (kitchen | bedroom | hall);";
    let mut h = harness(
        &[
            ("protocol", "runpod"),
            ("url", &server.url()),
            ("model", "sphinx"),
            ("prompt", grammar),
            ("output", "text"),
            ("request-timeout", "60000"),
        ],
        &caps,
    );
    h.push_event(
        SegmentEvent::Start {
            id: 7,
            running_time: gst::ClockTime::ZERO,
            lookback: gst::ClockTime::ZERO,
        }
        .to_event(),
    );
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
    assert_eq!(
        std::str::from_utf8(&text.map_readable().unwrap()).unwrap(),
        "turn the lights on in the kitchen"
    );
    assert_eq!(SegmentIdMeta::get(&text), Some(7));
}

#[test]
fn kserve_rest_binary_tensor_extension() {
    // The fixture checks the raw input's size for the datatype (and that BYTES are
    // length-prefixed whole JPEGs), then answers raw bytes too.
    let server = fault_server();
    let (caps, frames) = ball_frames(2);
    for datatype in ["fp32", "fp16", "uint8", "jpeg"] {
        let mut h = harness(
            &[
                ("url", &server.url()),
                ("model", "binary"),
                ("binary-data", "true"),
                ("input-width", "32"),
                ("input-height", "24"),
                ("input-name", "images"),
                ("input-datatype", datatype),
                ("labels", "box"),
                ("latency-budget", "30000"),
            ],
            &caps,
        );
        for f in &frames {
            h.push(f.clone()).unwrap();
        }
        for _ in &frames {
            let found = rois(&h.pull().unwrap());
            assert_eq!(found.len(), 1, "{datatype}");
            // [4, 4, 20, 20] in a 32x24 input letterboxed from 320x240 (scale 0.1): x10 in the frame.
            assert_eq!(found[0].rect, (40.0, 40.0, 200.0, 200.0));
            assert_eq!(found[0].label, "box");
        }
        let s = stats(&h);
        assert_eq!(
            (s.get::<u64>("ok").unwrap(), s.get::<u64>("failed").unwrap()),
            (2, 0),
            "{datatype}: {s}"
        );
    }
}

#[test]
fn a_buffer_list_is_one_batched_request() {
    let server = Peer::mlserver();
    let (caps, frames) = ball_frames(4);
    // batcher's keep-separate mode pushes buffer lists like this one.
    let (pipeline, src, sink) = start_pipeline(
        &format!(
            "url={} model=ball labels=ball input-width=160 input-height=160 latency-budget=30000",
            server.url()
        ),
        &caps,
    );
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
        assert!(
            iou(ball_box(f), found[0].rect) > 0.8,
            "frame {i} got its own box: {:?} vs {:?}",
            found[0].rect,
            ball_box(f)
        );
    }
    let s = pipeline
        .by_name("infer")
        .unwrap()
        .property::<gst::Structure>("stats");
    assert_eq!(
        (s.get::<u64>("sent").unwrap(), s.get::<u64>("ok").unwrap()),
        (1, 1),
        "one request for the list: {s}"
    );
    pipeline.set_state(gst::State::Null).unwrap();
}

/// Polls `cond` until it holds; panics after `secs` seconds saying `what`.
fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn flush(h: &mut Harness) {
    assert!(h.push_event(gst::event::FlushStart::new()));
    assert!(h.push_event(gst::event::FlushStop::new(true)));
    // A flush-stop drops the segment; buffers need one again.
    assert!(
        h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
            gst::ClockTime,
        >::new()))
    );
    // What left before the flush started (the harness keeps it; a sink would drop it).
    while h.try_pull().is_some() {}
}

#[test]
fn an_aborted_half_open_probe_does_not_lock_the_breaker() {
    // probe-hangs: call 1 fails (the breaker opens), call 2 (the probe) hangs, call 3 answers.
    let server = fault_server();
    let (caps, frames) = ball_frames(3);
    let mut h = fault_harness(
        &server,
        "probe-hangs",
        &[
            ("max-retries", "0"),
            ("breaker-threshold", "1"),
            ("breaker-cooldown", "200"),
            ("latency-budget", "60000"),
        ],
        &caps,
    );
    h.push(frames[0].clone()).unwrap();
    assert!(rois(&h.pull().unwrap()).is_empty());
    assert_eq!(stats(&h).get::<&str>("breaker-state").unwrap(), "open");
    wait_until(10, "cooldown over", || {
        stats(&h).get::<&str>("breaker-state").unwrap() == "half-open"
    });
    // The probe goes out and hangs; a flush aborts it.
    h.push(frames[1].clone()).unwrap();
    wait_until(10, "the probe reached the server", || {
        http_body(server.port, "GET", "/calls/probe-hangs").contains("\"calls\": 2")
    });
    flush(&mut h);
    wait_until(10, "the probe's task ended", || {
        count(&stats(&h), "inflight") == 0
    });
    assert_eq!(count(&stats(&h), "aborted"), 1);
    // Without the probe released, the breaker refuses every request from here on.
    h.push(frames[2].clone()).unwrap();
    let out = h.pull().unwrap();
    assert_eq!(out.pts(), frames[2].pts());
    assert_eq!(
        rois(&out).len(),
        1,
        "the next frame probed and got its result: {}",
        stats(&h)
    );
    let s = stats(&h);
    assert_eq!(
        (count(&s, "sent"), count(&s, "skipped-breaker")),
        (3, 0),
        "{s}"
    );
    assert_eq!(s.get::<&str>("breaker-state").unwrap(), "closed", "{s}");
}

#[test]
fn the_breaker_closes_after_its_cooldown() {
    // recovering: two failures, then answers.
    let server = fault_server();
    let (caps, frames) = ball_frames(5);
    let mut h = fault_harness(
        &server,
        "recovering",
        &[
            ("max-retries", "0"),
            ("breaker-threshold", "2"),
            ("breaker-cooldown", "2000"),
            ("latency-budget", "30000"),
        ],
        &caps,
    );
    let run = |h: &mut Harness, i: usize| {
        h.push(frames[i].clone()).unwrap();
        rois(&h.pull().unwrap()).len()
    };
    assert_eq!((run(&mut h, 0), run(&mut h, 1)), (0, 0));
    assert_eq!(stats(&h).get::<&str>("breaker-state").unwrap(), "open");
    assert_eq!(
        run(&mut h, 2),
        0,
        "open: the frame passes without a request"
    );
    assert_eq!(count(&stats(&h), "skipped-breaker"), 1);
    wait_until(10, "cooldown over", || {
        stats(&h).get::<&str>("breaker-state").unwrap() == "half-open"
    });
    assert_eq!(run(&mut h, 3), 1, "the probe succeeds");
    assert_eq!(stats(&h).get::<&str>("breaker-state").unwrap(), "closed");
    assert_eq!(run(&mut h, 4), 1, "closed: requests go again");
    let s = stats(&h);
    assert_eq!(
        (
            count(&s, "sent"),
            count(&s, "ok"),
            count(&s, "failed"),
            count(&s, "skipped-breaker")
        ),
        (4, 2, 2, 1),
        "{s}"
    );
}

#[test]
fn rate_limits_and_timeouts_are_retried() {
    let server = fault_server();
    let (caps, frames) = ball_frames(3);
    let base = format!(
        "url={} input-width=32 input-height=32 max-inflight=1 latency-budget=30000",
        server.url()
    );

    // 429 (Retry-After: 0) on every other call: each request succeeds on its retry.
    let (out, warnings, s, _) = run_to_eos(
        &format!("{base} model=ratelimited max-retries=2"),
        &caps,
        &frames,
        |_| {},
    );
    assert!(out.iter().all(|b| rois(b).len() == 1), "{s}");
    assert_eq!(
        (
            count(&s, "sent"),
            count(&s, "ok"),
            count(&s, "failed"),
            count(&s, "retried")
        ),
        (3, 3, 0, 3),
        "{s}"
    );
    assert!(warnings.is_empty(), "{warnings:?}");

    // Every other call answers after 3 s: request-timeout=400 gives up on it and the retry answers.
    let mut h = fault_harness(
        &server,
        "stalling",
        &[
            ("request-timeout", "400"),
            ("max-retries", "1"),
            ("latency-budget", "30000"),
        ],
        &caps,
    );
    for f in &frames {
        let pushed = Instant::now();
        h.push(f.clone()).unwrap();
        assert_eq!(rois(&h.pull().unwrap()).len(), 1);
        assert!(
            pushed.elapsed() < Duration::from_millis(2500),
            "the 3 s reply was waited for: {:?}",
            pushed.elapsed()
        );
    }
    let s = stats(&h);
    assert_eq!(
        (count(&s, "ok"), count(&s, "failed"), count(&s, "retried")),
        (3, 0, 3),
        "{s}"
    );
    drop(h);

    // Without retries a timed-out request fails; the frame passes without a result.
    let mut h = fault_harness(
        &server,
        "stalling",
        &[
            ("request-timeout", "400"),
            ("max-retries", "0"),
            ("latency-budget", "30000"),
        ],
        &caps,
    );
    h.push(frames[0].clone()).unwrap();
    assert!(rois(&h.pull().unwrap()).is_empty());
    let s = stats(&h);
    assert_eq!(
        (count(&s, "sent"), count(&s, "failed"), count(&s, "retried")),
        (1, 1, 0),
        "{s}"
    );
}

#[test]
fn results_carry_label_ids_bus_messages_and_an_inferred_marker() {
    let server = fault_server();
    let (caps, frames) = ball_frames(4);
    let base = format!(
        "url={} input-width=32 input-height=24 max-inflight=1 latency-budget=30000",
        server.url()
    );

    // Class ids 2 and 7 with labels for 0..2: the label by id, or classN; label_id in the param.
    let (out, _, _, results) = run_to_eos(
        &format!("{base} model=classes labels=a,b,car interval=2"),
        &caps,
        &frames,
        |_| {},
    );
    let found = rois(&out[0]);
    assert_eq!(
        found
            .iter()
            .map(|r| (r.label.as_str(), r.label_id))
            .collect::<Vec<_>>(),
        vec![("car", 2), ("class7", 7)]
    );
    // One inference-result message per inferred frame (0 and 2), with its pts and round trip.
    assert_eq!(results.len(), 2, "{results:?}");
    for (r, f) in results.iter().zip([&frames[0], &frames[2]]) {
        assert_eq!(r.get::<u32>("detections").unwrap(), 2, "{r}");
        assert_eq!(
            r.get::<u64>("pts").unwrap(),
            f.pts().unwrap().nseconds(),
            "{r}"
        );
        assert!(r.get::<u64>("round-trip").unwrap() > 0, "{r}");
    }
    // The marker: on inferred frames, with the detection count; skipped frames have none.
    let marks: Vec<Option<u32>> = out
        .iter()
        .map(|b| gstrtaiinfer::InferredMeta::get(b).map(|m| m.detections))
        .collect();
    assert_eq!(marks, vec![Some(2), None, Some(2), None]);
    assert_eq!(
        gstrtaiinfer::InferredMeta::get(&out[0]).unwrap().model,
        "classes"
    );

    // An inferred frame with nothing found carries the marker (detections 0) and no ROI.
    let (out, _, _, results) = run_to_eos(
        &format!("{base} model=empty interval=2"),
        &caps,
        &frames,
        |_| {},
    );
    let marks: Vec<Option<u32>> = out
        .iter()
        .map(|b| gstrtaiinfer::InferredMeta::get(b).map(|m| m.detections))
        .collect();
    assert_eq!(marks, vec![Some(0), None, Some(0), None]);
    assert!(out.iter().all(|b| rois(b).is_empty()));
    assert_eq!(
        results
            .iter()
            .map(|r| r.get::<u32>("detections").unwrap())
            .collect::<Vec<_>>(),
        vec![0, 0]
    );
}

#[test]
fn min_interval_ms_spaces_requests_in_wall_clock_time() {
    let server = fault_server();
    let (caps, frames) = ball_frames(1);
    let mut h = fault_harness(
        &server,
        "ok",
        &[("min-interval-ms", "300"), ("latency-budget", "30000")],
        &caps,
    );
    // (pushed, pulled, inferred) per frame, for 1.2 s of a 50 fps source.
    let mut log = Vec::new();
    let started = Instant::now();
    let mut i = 0u64;
    while started.elapsed() < Duration::from_millis(1200) {
        let mut f = frames[0].copy();
        f.make_mut().set_pts(gst::ClockTime::from_mseconds(i * 20));
        let pushed = Instant::now();
        h.push(f).unwrap();
        let inferred = !rois(&h.pull().unwrap()).is_empty();
        log.push((pushed, Instant::now(), inferred));
        i += 1;
        // Pacing, as a live source has (what is asserted does not depend on it).
        std::thread::sleep(Duration::from_millis(20));
    }
    let inferred: Vec<usize> = (0..log.len()).filter(|&k| log[k].2).collect();
    assert_eq!(inferred.first(), Some(&0), "the first frame is sent");
    assert!(
        inferred.len() >= 3 && inferred.len() < log.len() / 3,
        "{} of {} frames inferred",
        inferred.len(),
        log.len()
    );
    for w in inferred.windows(2) {
        let (a, b) = (log[w[0]], log[w[1]]);
        // Decided somewhere between push and pull: the gap is at most pulled(b) - pushed(a).
        assert!(
            b.1 - a.0 >= Duration::from_millis(300),
            "requests {} and {} only {:?} apart",
            w[0],
            w[1],
            b.1 - a.0
        );
    }
    // And no frame was held back longer than the interval asks.
    for (k, entry) in log.iter().enumerate() {
        let last = inferred.iter().rev().find(|&&j| j < k).map(|&j| log[j]);
        if let Some(last) = last
            && entry.0 - last.1 >= Duration::from_millis(300)
        {
            assert!(
                entry.2,
                "frame {k} was due ({:?} after the last request) but not sent",
                entry.0 - last.1
            );
        }
    }
    assert_eq!(count(&stats(&h), "sent") as usize, inferred.len());
}

/// `n` frames of the ball as JPEG (jpegenc), and the raw RGB frames they were made from.
fn jpeg_ball_frames(n: usize) -> (gst::Caps, Vec<gst::Buffer>, Vec<gst::Buffer>) {
    let (caps, jpegs) = frames_from(&format!(
        "videotestsrc num-buffers={n} pattern=ball ! video/x-raw,format=RGB,width={W},height={H},framerate=10/1 ! videoconvert ! jpegenc quality=90 ! appsink name=sink sync=false"
    ));
    assert_eq!(caps.structure(0).unwrap().name(), "image/jpeg");
    (caps, jpegs, ball_frames(n).1)
}

#[test]
fn jpeg_input_to_tensor_and_image_endpoints() {
    use base64::Engine;
    let b64 = |b: &gst::Buffer| {
        base64::engine::general_purpose::STANDARD.encode(b.map_readable().unwrap().as_slice())
    };
    let (caps, jpegs, raw) = jpeg_ball_frames(3);

    // KServe: decoded, letterboxed; the boxes match the ball in the raw frames.
    let mlserver = Peer::mlserver();
    for props in [
        vec![("url", mlserver.url()), ("model", "ball".into())],
        vec![
            ("protocol", "kserve-grpc".into()),
            ("url", format!("http://127.0.0.1:{}", mlserver.grpc_port)),
            ("model", "ball".into()),
        ],
    ] {
        let mut all: Vec<(&str, &str)> = props.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.extend([
            ("labels", "ball"),
            ("input-width", "160"),
            ("input-height", "160"),
            ("latency-budget", "30000"),
        ]);
        let mut h = harness(&all, &caps);
        for j in &jpegs {
            h.push(j.clone()).unwrap();
        }
        for (i, (j, r)) in jpegs.iter().zip(&raw).enumerate() {
            let out = h.pull().unwrap();
            assert_eq!(
                out.map_readable().unwrap().as_slice(),
                j.map_readable().unwrap().as_slice(),
                "the JPEG passes unchanged"
            );
            let found = rois(&out);
            assert_eq!(found.len(), 1, "{props:?} frame {i}");
            assert!(
                iou(ball_box(r), found[0].rect) > 0.75,
                "{props:?} frame {i}: {:?} vs {:?}",
                found[0].rect,
                ball_box(r)
            );
        }
    }
    drop(mlserver);

    // RunPod: the handler gets the JPEG as it came (model echo returns input.image) and finds the ball in it.
    let runpod = Peer::runpod();
    let mut h = harness(
        &[
            ("protocol", "runpod"),
            ("url", &runpod.url()),
            ("model", "echo"),
            ("latency-budget", "30000"),
        ],
        &caps,
    );
    for j in &jpegs {
        h.push(j.clone()).unwrap();
        assert_eq!(
            InferenceResult::get(&h.pull().unwrap()).unwrap().text,
            b64(j),
            "sent as is"
        );
    }
    drop(h);
    let mut h = harness(
        &[
            ("protocol", "runpod"),
            ("url", &runpod.url()),
            ("model", "ball"),
            ("latency-budget", "30000"),
        ],
        &caps,
    );
    h.push(jpegs[0].clone()).unwrap();
    let out = h.pull().unwrap();
    assert!(iou(ball_box(&raw[0]), rois(&out)[0].rect) > 0.75);
    assert_eq!(
        InferenceResult::get(&out).unwrap().text,
        format!("jpeg {W}x{H} (input said {W}x{H})"),
        "the size from the JPEG's header"
    );
    drop(h);

    // OpenAI chat: a data URI of the JPEG as it came.
    let port = free_port();
    let child = Command::new("python3")
        .arg(peers().join("openai_fixture.py"))
        .arg(port.to_string())
        .spawn()
        .expect("python3 runs");
    let openai = Peer {
        child,
        port,
        grpc_port: 0,
    }
    .wait_ready("OpenAI fixture", |p| http(p, "GET", "/").is_some());
    let mut h = harness(
        &[
            ("protocol", "openai-chat"),
            ("url", &openai.url()),
            ("api-key", "sk-test"),
            ("prompt", "echo"),
            ("latency-budget", "30000"),
        ],
        &caps,
    );
    h.push(jpegs[1].clone()).unwrap();
    assert_eq!(
        InferenceResult::get(&h.pull().unwrap()).unwrap().text,
        format!("data:image/jpeg;base64,{}", b64(&jpegs[1]))
    );
    drop(h);

    // A JPEG that does not decode: one warning, the frame passes without inference, the stream goes on.
    let server = fault_server();
    let mut corrupt = gst::Buffer::from_slice(b"\xff\xd8\xff\xe0 not really a JPEG".to_vec());
    corrupt.make_mut().set_pts(jpegs[0].pts());
    let (out, warnings, s, _) = run_to_eos(
        &format!(
            "url={} model=ok input-width=32 input-height=32 latency-budget=30000",
            server.url()
        ),
        &caps,
        &[corrupt, jpegs[1].clone()],
        |_| {},
    );
    assert_eq!(
        out.iter().map(|b| rois(b).len()).collect::<Vec<_>>(),
        vec![0, 1]
    );
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("Cannot read a JPEG frame"),
        "{warnings:?}"
    );
    assert_eq!(count(&s, "sent"), 1, "{s}");
}

/// The body of `METHOD path` on loopback `port`.
fn http_body(port: u16, method: &str, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// `tests/peers/runpod_gateway.py` in front of the SDK's local API: what it was asked.
struct Gateway {
    _peer: Peer,
    port: u16,
}

impl Gateway {
    fn start(upstream: &Peer) -> Self {
        let port = free_port();
        let child = Command::new("python3")
            .arg(peers().join("runpod_gateway.py"))
            .args([port.to_string(), upstream.port.to_string()])
            .spawn()
            .expect("python3 runs");
        let peer = Peer {
            child,
            port,
            grpc_port: 0,
        }
        .wait_ready("RunPod gateway", |p| http(p, "GET", "/calls") == Some(200));
        Gateway { _peer: peer, port }
    }

    fn url(&self, mode: &str) -> String {
        format!("http://127.0.0.1:{}/v2/{mode}", self.port)
    }

    /// The calls received (without GET /calls) and the job ids /run gave out.
    fn calls(&self) -> (Vec<String>, Vec<String>) {
        let body = http_body(self.port, "GET", "/calls");
        let strings = |key: &str| -> Vec<String> {
            let list = body
                .split(&format!("\"{key}\": ["))
                .nth(1)
                .and_then(|r| r.split(']').next())
                .unwrap_or_default();
            list.split(", ")
                .map(|s| s.trim_matches('"').to_string())
                .filter(|s| !s.is_empty() && s != "GET /calls")
                .collect()
        };
        (strings("calls"), strings("ids"))
    }
}

/// inferclient on the RunPod gateway in `mode` (see runpod_gateway.py) for `model`, with a
/// long latency budget and `extra` properties.
fn runpod_harness(
    gateway: &Gateway,
    mode: &str,
    model: &str,
    extra: &[(&str, &str)],
    caps: &gst::Caps,
) -> Harness {
    let url = gateway.url(mode);
    let mut props = vec![
        ("protocol", "runpod"),
        ("url", url.as_str()),
        ("model", model),
        ("latency-budget", "30000"),
    ];
    props.extend_from_slice(extra);
    harness(&props, caps)
}

#[test]
fn runpod_run_fallback_status_polling_and_cancel() {
    // The SDK's local API serves /run and /status (POST only) but has no /cancel, and
    // its /runsync always waits for the job; the gateway (tests/peers/runpod_gateway.py)
    // plays the hosted API's 404 for /runsync, its IN_PROGRESS reply from /runsync, a
    // first IN_QUEUE status and its /cancel reply, in the shapes RunPod documents.
    let sdk = Peer::runpod();
    let gateway = Gateway::start(&sdk);
    let (caps, frames) = ball_frames(2);

    // /runsync is 404: /run, then /status until COMPLETED; the second frame goes to /run at once.
    let mut h = runpod_harness(
        &gateway,
        "no-runsync",
        "ball",
        &[("max-inflight", "1")],
        &caps,
    );
    for f in &frames {
        h.push(f.clone()).unwrap();
        let found = rois(&h.pull().unwrap());
        assert_eq!(found.len(), 1);
        assert!(iou(ball_box(f), found[0].rect) > 0.75);
    }
    drop(h);
    let (calls, ids) = gateway.calls();
    let (a, b) = (&ids[0], &ids[1]);
    let p = "/v2/no-runsync";
    let expected: Vec<String> = [
        // /runsync asks RunPod to answer within the request timeout (then IN_PROGRESS).
        format!("POST {p}/runsync?wait=10000"),
        format!("POST {p}/run"),
        format!("GET {p}/status/{a}"),
        format!("GET {p}/status/{a}"),
        format!("POST {p}/status/{a}"),
        format!("POST {p}/run"),
        format!("GET {p}/status/{b}"),
        format!("GET {p}/status/{b}"),
        format!("POST {p}/status/{b}"),
    ]
    .into();
    // IN_QUEUE from the gateway, 405 from the SDK for GET, then POST completes.
    assert_eq!(calls, expected);

    // /runsync answers IN_PROGRESS (the job outlasted its wait): polled on /status.
    let mut h = runpod_harness(&gateway, "async", "ball", &[], &caps);
    h.push(frames[0].clone()).unwrap();
    assert_eq!(rois(&h.pull().unwrap()).len(), 1);
    drop(h);
    let (calls, ids) = gateway.calls();
    let c = ids.last().unwrap();
    assert_eq!(
        &calls[calls.len() - 4..],
        [
            "POST /v2/async/runsync?wait=10000".to_string(),
            format!("GET /v2/async/status/{c}"),
            format!("GET /v2/async/status/{c}"),
            format!("POST /v2/async/status/{c}")
        ]
    );

    // A cancel while the job is being polled: /cancel/{id} with the job's id, at once.
    let caps: gst::Caps = AUDIO.parse().unwrap();
    let pipeline = gst::Pipeline::new();
    let src = gst_app::AppSrc::builder()
        .caps(&caps)
        .format(gst::Format::Time)
        .build();
    let client = gst::ElementFactory::make("inferclient").build().unwrap();
    let url = gateway.url("no-runsync");
    for (k, v) in [
        ("protocol", "runpod"),
        ("url", url.as_str()),
        ("model", "slow"),
        ("output", "text"),
    ] {
        client.set_property_from_str(k, v);
    }
    let sink = gst_app::AppSink::builder().sync(false).build();
    pipeline
        .add_many([src.upcast_ref(), &client, sink.upcast_ref()])
        .unwrap();
    gst::Element::link_many([src.upcast_ref(), &client, sink.upcast_ref()]).unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    for i in 0..20 {
        src.push_buffer(audio(i * 10, 5)).unwrap();
    }
    src.send_event(SegmentEvent::End { id: 5 }.to_event());
    let known = ids.len();
    // Polling has started: the element knows the job's id.
    let mut job = String::new();
    wait_until(20, "the job is polled", || {
        let (calls, ids) = gateway.calls();
        job = ids.get(known).cloned().unwrap_or_default();
        !job.is_empty() && calls.contains(&format!("GET {p}/status/{job}"))
    });
    assert!(
        src.static_pad("src").unwrap().push_event(
            SegmentEvent::Cancel {
                id: 5,
                reason: "barge-in".into()
            }
            .to_event()
        )
    );
    wait_until(10, "/cancel reaches the gateway", || {
        gateway
            .calls()
            .0
            .contains(&format!("POST {p}/cancel/{job}"))
    });
    let ack = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(5),
            &[gst::MessageType::Element],
        )
        .and_then(|m| m.structure().and_then(rtai_core::CancelAck::from_structure))
        .expect("cancel-ack");
    assert_eq!((ack.id, ack.requests_aborted), (5, 1));
    src.end_of_stream().unwrap();
    assert!(
        sink.pull_sample().is_err(),
        "no transcript for a cancelled job"
    );
    pipeline.set_state(gst::State::Null).unwrap();
}

#[test]
fn audio_meta_mode_never_waits_for_a_bus_only_transcript() {
    let server = Peer::runpod();
    let caps: gst::Caps = AUDIO.parse().unwrap();
    let (pipeline, src, sink) = start_pipeline(
        &format!(
            "protocol=runpod url={} model=slow latency-budget=2500",
            server.url()
        ),
        &caps,
    );
    for i in 0..20 {
        src.push_buffer(audio(i * 10, 9)).unwrap();
    }
    // The segment's end sends its audio to a handler that takes 3 s; the transcript goes
    // only to the bus, so the audio after it must not wait for it (not even the budget).
    src.send_event(SegmentEvent::End { id: 9 }.to_event());
    let ended = Instant::now();
    for i in 20..40 {
        src.push_buffer(plain_audio(i * 10)).unwrap();
    }
    for i in 0..40 {
        let b = sink
            .try_pull_sample(gst::ClockTime::from_seconds(10))
            .expect("audio flows")
            .buffer_owned()
            .unwrap();
        assert_eq!(b.pts(), Some(gst::ClockTime::from_mseconds(i * 10)));
    }
    assert!(
        ended.elapsed() < Duration::from_millis(1000),
        "later audio waited {:?} for the 3 s transcript",
        ended.elapsed()
    );
    let infer = pipeline.by_name("infer").unwrap();
    assert_eq!(
        count(
            &infer.property::<gst::Structure>("stats"),
            "dropped-by-budget"
        ),
        0
    );
    // The transcript still reaches the bus when it comes.
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(20),
            &[gst::MessageType::Element],
        )
        .expect("the late transcript on the bus");
    let s = msg.structure().unwrap();
    assert_eq!(s.name(), "inference-result");
    assert_eq!(
        (
            s.get::<&str>("text").unwrap(),
            s.get::<u64>("segment-id").unwrap()
        ),
        ("6400 bytes of audio", 9)
    );
    assert_eq!(s.get::<u64>("pts").unwrap(), 0, "the segment's start");
    assert!(
        ended.elapsed() >= Duration::from_secs(3),
        "it came from the 3 s job"
    );
    src.end_of_stream().unwrap();
    assert!(sink.pull_sample().is_err());
    pipeline.set_state(gst::State::Null).unwrap();
}

#[test]
fn the_queue_is_bounded_and_holds_upstream_back() {
    init();
    // Text in, text out: buffers pass through the queue without requests.
    let element = gst::ElementFactory::make("inferclient")
        .property_from_str("output", "text")
        .build()
        .unwrap();
    let mut h = Harness::with_element(&element, Some("sink"), Some("src"));
    h.set_src_caps("text/x-raw,format=utf8".parse().unwrap());
    h.play();
    // Downstream takes a buffer only when the test pulls it: a stalled sink.
    h.set_blocking_push_mode();
    let limit = count(&stats(&h), "queue-limit") as usize;
    assert_eq!(
        limit,
        4 + 100 + 16,
        "max-inflight, one budget of buffers at 100/s, slack"
    );
    let n = limit + 10;
    let pad = h.srcpad().unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let pusher = std::thread::spawn(move || {
        for i in 0..n {
            let mut b = gst::Buffer::from_slice(i.to_string().into_bytes());
            b.make_mut()
                .set_pts(gst::ClockTime::from_mseconds(i as u64));
            pad.push(b).unwrap();
        }
        done_tx.send(()).unwrap();
    });
    wait_until(10, "the queue fills", || {
        count(&stats(&h), "queued") as usize == limit
    });
    // One buffer is held downstream, `limit` are queued: the next push must wait.
    assert!(
        done_rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "upstream pushed on past a full queue"
    );
    assert_eq!(
        count(&stats(&h), "queued") as usize,
        limit,
        "the queue never grows past its limit"
    );
    // Downstream takes them: upstream goes on, nothing lost, in order.
    for i in 0..n {
        let b = h.pull().unwrap();
        assert_eq!(
            std::str::from_utf8(&b.map_readable().unwrap()).unwrap(),
            i.to_string()
        );
    }
    done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("upstream finished");
    pusher.join().unwrap();
}

/// `tests/peers/tls_proxy.py` (TLS with its own CA) in front of `upstream`.
fn tls_proxy(upstream: u16) -> (Peer, PathBuf) {
    let dir = std::env::temp_dir().join(format!("rtai-tls-{}-{upstream}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let child = Command::new("python3")
        .arg(peers().join("tls_proxy.py"))
        .args([
            dir.to_str().unwrap(),
            &port.to_string(),
            &upstream.to_string(),
        ])
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs");
    let ca = dir.join("ca.pem");
    let peer = Peer {
        child,
        port,
        grpc_port: 0,
    }
    .wait_ready("TLS proxy", |p| {
        ca.exists() && TcpStream::connect(("127.0.0.1", p)).is_ok()
    });
    (peer, ca)
}

#[test]
fn kserve_grpc_over_tls() {
    let server = Peer::mlserver();
    let (proxy, ca) = tls_proxy(server.grpc_port);
    let url = format!("https://127.0.0.1:{}", proxy.port);
    // The trust roots come from the environment (SSL_CERT_FILE), which a test cannot change
    // in its own threaded process: a child process of this test binary runs the element.
    let child = |trust: Option<&Path>, expect: &str| {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "grpc_tls_child",
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("RTAI_TLS_URL", &url)
        .env("RTAI_TLS_EXPECT", expect);
        if let Some(ca) = trust {
            cmd.env("SSL_CERT_FILE", ca);
        }
        let out = cmd.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.contains("1 passed"),
            "{expect}: {text}"
        );
    };
    child(Some(&ca), "detections");
    // The system's roots do not know the proxy's CA: the certificate is checked, requests fail.
    child(None, "untrusted");
}

/// Run by `kserve_grpc_over_tls` in a child process (ignored otherwise).
#[test]
#[ignore]
fn grpc_tls_child() {
    let (Ok(url), Ok(expect)) = (
        std::env::var("RTAI_TLS_URL"),
        std::env::var("RTAI_TLS_EXPECT"),
    ) else {
        return;
    };
    let (caps, frames) = ball_frames(2);
    let mut h = harness(
        &[
            ("protocol", "kserve-grpc"),
            ("url", &url),
            ("model", "ball"),
            ("labels", "ball"),
            ("input-width", "160"),
            ("input-height", "160"),
            ("max-retries", "0"),
            ("latency-budget", "30000"),
        ],
        &caps,
    );
    for f in &frames {
        h.push(f.clone()).unwrap();
        let found = rois(&h.pull().unwrap());
        if expect == "detections" {
            assert_eq!(found.len(), 1);
            assert!(iou(ball_box(f), found[0].rect) > 0.8);
        } else {
            assert!(found.is_empty());
        }
    }
    let s = stats(&h);
    let (ok, failed) = (count(&s, "ok"), count(&s, "failed"));
    assert_eq!(
        (ok, failed),
        if expect == "detections" {
            (2, 0)
        } else {
            (0, 2)
        },
        "{s}"
    );
}

/// The 192x48 text line of `make_text_image.py` as one RGB frame, upright or upside down.
fn text_line_frame(upside_down: bool) -> (gst::Caps, gst::Buffer) {
    init();
    let png = std::env::temp_dir().join(format!(
        "rtai-line-{}-{upside_down}.png",
        std::process::id()
    ));
    let status = Command::new(workspace().join(".venv-runpod/bin/python"))
        .arg(peers().join("make_text_image.py"))
        .arg(&png)
        .arg("line")
        .args(upside_down.then_some("upside-down"))
        .status()
        .unwrap();
    assert!(status.success());
    let (caps, frames) = frames_from(&format!(
        "filesrc location={} ! pngdec ! videoconvert ! video/x-raw,format=RGB ! imagefreeze num-buffers=1 ! video/x-raw,framerate=10/1 ! appsink name=sink sync=false",
        png.display()
    ));
    let _ = std::fs::remove_file(&png);
    (caps, frames[0].clone())
}

/// A numpy reference: class ids by descending score (and the scores) of FP32 `data`,
/// computed by the MLServer venv's numpy.
fn numpy_ranking(data: &[u8]) -> (Vec<i64>, Vec<f64>) {
    let mut child = Command::new(workspace().join(".venv-mlserver/bin/python"))
        .args([
            "-c",
            "import sys, numpy as np\n\
             p = np.frombuffer(sys.stdin.buffer.read(), '<f4').astype(np.float64)\n\
             order = np.argsort(-p, kind='stable')\n\
             print(' '.join(map(str, order)))\n\
             print(' '.join(repr(float(p[i])) for i in order))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let ids = lines
        .next()
        .unwrap()
        .split(' ')
        .map(|v| v.parse().unwrap())
        .collect();
    let scores = lines
        .next()
        .unwrap()
        .split(' ')
        .map(|v| v.parse().unwrap())
        .collect();
    (ids, scores)
}

#[test]
fn a_real_classifier_served_raw_matches_a_numpy_decode_of_its_outputs() {
    // PP-OCR's text direction classifier from rapidocr-onnxruntime, served raw by MLServer
    // (tests/peers/mlserver/raw.py): its output is save_infer_model/scale_0.tmp_1 [1, 2].
    let server = Peer::mlserver();
    for (upside_down, expected) in [(false, "0"), (true, "180")] {
        let (caps, frame) = text_line_frame(upside_down);
        let mut h = harness(
            &[
                ("url", server.url().as_str()),
                ("model", "cls"),
                ("input-name", "x"),
                ("input-width", "192"),
                ("input-height", "48"),
                ("labels", "0,180"),
                // As PP-OCR prepares its classifier's input: BGR, (x / 255 - 0.5) / 0.5.
                ("channel-order", "bgr"),
                ("mean", "0.5"),
                ("std", "0.5"),
                ("top-k", "2"),
                ("confidence-threshold", "0"),
                ("attach-tensors", "true"),
                ("latency-budget", "30000"),
            ],
            &caps,
        );
        h.push(frame).unwrap();
        let out = h.pull().unwrap();
        // The frame's classes: one ROI over the whole frame with a classification param.
        let roi = out
            .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
            .next()
            .expect("a classification ROI");
        assert_eq!(roi.rect(), (0, 0, 192, 48));
        let c = roi.param("classification").expect("a classification param");
        let labels: Vec<String> = c
            .get::<gst::Array>("labels")
            .unwrap()
            .iter()
            .map(|v| v.get::<String>().unwrap())
            .collect();
        let scores: Vec<f64> = c
            .get::<gst::Array>("scores")
            .unwrap()
            .iter()
            .map(|v| v.get::<f64>().unwrap())
            .collect();
        assert_eq!(c.get::<&str>("label").unwrap(), expected, "{c}");
        // The model's own output, as the tensor meta carries it, decoded by numpy.
        let tensors = rtai_core::tensor::TensorMeta::get(&out);
        assert_eq!(tensors.len(), 1);
        let t = &tensors[0];
        assert_eq!(
            (t.name.as_str(), t.dims.as_slice(), t.datatype.as_str()),
            ("save_infer_model/scale_0.tmp_1", &[1, 2][..], "FP32")
        );
        let (ids, reference) = numpy_ranking(&t.data);
        let names = ["0", "180"];
        assert_eq!(
            labels,
            ids.iter().map(|&i| names[i as usize]).collect::<Vec<_>>()
        );
        for (a, b) in scores.iter().zip(&reference) {
            assert!((a - b).abs() < 1e-6, "{scores:?} vs numpy {reference:?}");
        }
        assert!(scores[0] > 0.9, "a confident answer: {scores:?}");
    }
}

#[test]
fn a_raw_probability_map_travels_as_a_tensor_and_auto_refuses_to_guess_boxes() {
    // PP-OCRv4's detector served raw answers a probability map [1, 1, H, W]: no box layout.
    let server = Peer::mlserver();
    let (caps, frames, _) = text_frames();
    let url = server.url();
    let base = format!(
        "url={url} model=detraw input-name=x input-width=320 input-height=320 latency-budget=60000 request-timeout=60000"
    );
    // box-format=none: the map arrives whole as a tensor meta.
    let (out, warnings, _, _) = run_to_eos(
        &format!("{base} box-format=none attach-tensors=true"),
        &caps,
        &frames[..1],
        |_| {},
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    let tensors = rtai_core::tensor::TensorMeta::get(&out[0]);
    assert_eq!(tensors[0].dims, vec![1, 1, 320, 320]);
    assert_eq!(tensors[0].data.len(), 320 * 320 * 4);
    let map: Vec<f32> = tensors[0]
        .data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert!(map.iter().any(|&p| p > 0.9), "the text shows in the map");
    // auto: a map is not boxes; one clear warning, no boxes made up.
    let (out, warnings, s, _) = run_to_eos(&base, &caps, &frames[..1], |_| {});
    assert!(rois(&out[0]).is_empty());
    assert_eq!(count(&s, "failed"), 1, "{s}");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("cannot tell the layout") && warnings[0].contains("box-format"),
        "{warnings:?}"
    );
}

#[test]
fn separate_boxes_scores_and_bytes_labels_become_rois_and_bus_boxes() {
    // The layout of the issue: boxes [N, 4], scores [N], labels BYTES [N].
    let server = fault_server();
    let (caps, frames) = ball_frames(1);
    let labels = std::env::temp_dir().join(format!("rtai-labels-{}.txt", std::process::id()));
    std::fs::write(&labels, "person\nball\n").unwrap();
    let (out, warnings, _, results) = run_to_eos(
        &format!(
            "url={} model=named input-width=32 input-height=32 labels-file={} latency-budget=30000",
            server.url(),
            labels.display()
        ),
        &caps,
        &frames,
        |_| {},
    );
    let _ = std::fs::remove_file(&labels);
    assert!(warnings.is_empty(), "{warnings:?}");
    let found = rois(&out[0]);
    assert_eq!(found.len(), 1, "the 0.1 score is under the threshold");
    // 32x32 input of a 320x240 frame: scale 0.1, 4 px bars top and bottom.
    assert_eq!(
        (found[0].label.as_str(), found[0].label_id, found[0].rect),
        ("ball", 1, (40.0, 0.0, 200.0, 160.0))
    );
    let boxes = results[0].get::<gst::Array>("boxes").unwrap();
    let b = boxes.as_slice()[0].get::<gst::Structure>().unwrap();
    assert_eq!(
        (b.get::<&str>("label").unwrap(), b.get::<f64>("x2").unwrap()),
        ("ball", 200.0)
    );
}

#[test]
fn a_slow_runpod_job_is_one_paid_job_and_an_abandoned_one_is_cancelled() {
    // The gateway's "hosted" mode runs jobs as RunPod's hosted API does: /runsync holds a
    // job at most ?wait= ms, then answers IN_PROGRESS with its id. The handler's "slow"
    // model takes 3 s, longer than request-timeout: the job must be polled, never
    // submitted again (each submit is a paid job), and counted server-side.
    let sdk = Peer::runpod();
    let gateway = Gateway::start(&sdk);
    let (caps, frames) = ball_frames(2);
    let mut h = runpod_harness(
        &gateway,
        "hosted",
        "slow",
        &[("request-timeout", "1000"), ("max-inflight", "1")],
        &caps,
    );
    for f in &frames {
        h.push(f.clone()).unwrap();
        let found = rois(&h.pull().unwrap());
        assert_eq!(found.len(), 1, "the slow job's result comes back");
    }
    let s = stats(&h);
    drop(h);
    let (calls, ids) = gateway.calls();
    assert_eq!(ids.len(), 2, "exactly one job per frame: {calls:?} ({s})");
    assert!(!calls.iter().any(|c| c.contains("/cancel/")), "{calls:?}");

    // Polled for longer than 6 x request-timeout (1.2 s; the job takes 3 s): given up and cancelled.
    let mut h = runpod_harness(
        &gateway,
        "hosted",
        "slow",
        &[("request-timeout", "200")],
        &caps,
    );
    h.push(frames[0].clone()).unwrap();
    assert!(rois(&h.pull().unwrap()).is_empty());
    drop(h);
    let (calls, ids) = gateway.calls();
    assert_eq!(ids.len(), 3, "one more job, not four: {calls:?}");
    let job = ids.last().unwrap();
    assert!(
        calls.contains(&format!("POST /v2/hosted/cancel/{job}")),
        "the abandoned job is cancelled: {calls:?}"
    );
}

#[test]
fn a_request_refused_mid_stream_is_a_counted_warning_and_the_stream_goes_on() {
    // The second request gets HTTP 400 (input too long): that result is lost, the others come.
    let server = fault_server();
    let (caps, frames) = ball_frames(4);
    let (out, warnings, s, _) = run_to_eos(
        &format!(
            "url={} model=rejects-second input-width=32 input-height=32 max-inflight=1 latency-budget=30000",
            server.url()
        ),
        &caps,
        &frames,
        |_| {},
    );
    let found: Vec<usize> = out.iter().map(|b| rois(b).len()).collect();
    assert_eq!(found, vec![1, 0, 1, 1], "{s}");
    assert_eq!((count(&s, "rejected"), count(&s, "ok")), (1, 3), "{s}");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("HTTP 400"), "{warnings:?}");
    // A refusal before any answer (a bad key) is still the configuration's error.
    let (message, _) = run_expecting_error(
        &format!(
            "inferclient url={} model=forbidden input-width=32 input-height=32",
            server.url()
        ),
        &caps,
        &frames[..1],
    );
    assert!(message.contains("HTTP 403"), "{message}");
}

#[test]
fn retry_after_is_honoured() {
    // 429 with Retry-After: 1 on every other call: the retry waits a second (backoff alone: ~0.1 s).
    let server = fault_server();
    let (caps, frames) = ball_frames(1);
    let started = Instant::now();
    let (out, _, s, _) = run_to_eos(
        &format!(
            "url={} model=retry-after input-width=32 input-height=32 latency-budget=30000",
            server.url()
        ),
        &caps,
        &frames,
        |_| {},
    );
    assert_eq!(rois(&out[0]).len(), 1, "{s}");
    assert_eq!(count(&s, "retried"), 1, "{s}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "retried after {:?}",
        started.elapsed()
    );
}

#[test]
fn a_cancelled_segment_is_never_sent_later() {
    // Audio of segment 7 still arriving after its cancel (it was in flight upstream) and
    // its end: nothing of it is sent, no transcript comes.
    init();
    let server = Peer::runpod();
    let caps: gst::Caps = AUDIO.parse().unwrap();
    let (pipeline, src, sink) = start_pipeline(
        &format!("protocol=runpod url={} output=text", server.url()),
        &caps,
    );
    for i in 0..10 {
        src.push_buffer(audio(i * 10, 7)).unwrap();
    }
    assert!(
        src.static_pad("src").unwrap().push_event(
            SegmentEvent::Cancel {
                id: 7,
                reason: "barge-in".into()
            }
            .to_event()
        )
    );
    for i in 10..20 {
        src.push_buffer(audio(i * 10, 7)).unwrap();
    }
    src.send_event(SegmentEvent::End { id: 7 }.to_event());
    // A later segment is sent as usual.
    for i in 20..30 {
        src.push_buffer(audio(i * 10, 8)).unwrap();
    }
    src.send_event(SegmentEvent::End { id: 8 }.to_event());
    src.end_of_stream().unwrap();
    let mut texts = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        let b = sample.buffer().unwrap();
        texts.push((
            SegmentIdMeta::get(b),
            String::from_utf8(b.map_readable().unwrap().to_vec()).unwrap(),
        ));
    }
    let infer = pipeline.by_name("infer").unwrap();
    let s = infer.property::<gst::Structure>("stats");
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(
        texts,
        vec![(Some(8), "3200 bytes of audio".to_string())],
        "{s}"
    );
    assert_eq!(count(&s, "sent"), 1, "{s}");
}

#[test]
fn a_stop_aborts_requests_in_flight() {
    // A 2 s request in flight when the element stops: nothing of it outlives the stop.
    let server = Peer::mlserver();
    let (caps, frames) = ball_frames(1);
    let mut h = harness(
        &[
            ("url", server.url().as_str()),
            ("model", "slow"),
            ("input-width", "64"),
            ("input-height", "64"),
            ("latency-budget", "0"),
        ],
        &caps,
    );
    h.push(frames[0].clone()).unwrap();
    let _ = h.pull().unwrap();
    let element = h.element().unwrap();
    assert_eq!(count(&stats(&h), "inflight"), 1);
    element.set_state(gst::State::Null).unwrap();
    let s: gst::Structure = element.property("stats");
    assert_eq!(count(&s, "inflight"), 0, "{s}");
    assert_eq!(count(&s, "aborted"), 1, "{s}");
}

#[test]
fn text_output_latency_includes_the_retries() {
    init();
    let pipeline = gst::parse::launch(
        "audiotestsrc is-live=true ! audio/x-raw,format=S16LE,rate=16000,channels=1 ! inferclient name=infer protocol=openai-transcriptions url=http://127.0.0.1:1 output=text request-timeout=1000 max-retries=3 ! fakesink",
    )
    .unwrap();
    let infer = pipeline
        .downcast_ref::<gst::Bin>()
        .unwrap()
        .by_name("infer")
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let _ = pipeline.state(gst::ClockTime::from_seconds(5));
    let mut q = gst::query::Latency::new();
    assert!(infer.static_pad("src").unwrap().query(&mut q));
    let (_, min, _) = q.result();
    pipeline.set_state(gst::State::Null).unwrap();
    // 4 attempts of 1 s and the longest backoffs before the 3 retries (150 + 300 + 600 ms).
    assert!(
        min >= gst::ClockTime::from_mseconds(4000 + 1050),
        "latency {min}"
    );
}

/// A file that a package installed into the workspace's .venv ships (`rel` under site-packages).
fn venv_file(rel: &str) -> PathBuf {
    let lib = workspace().join(".venv/lib");
    std::fs::read_dir(&lib)
        .unwrap_or_else(|e| panic!("{}: {e}: scripts/setup.sh makes .venv", lib.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages").join(rel))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{rel} is missing: scripts/setup.sh installs it into .venv"))
}

/// scikit-image's astronaut photo (512x512, one face: FACE_FEMALE at about x 173-274,
/// y 83-180) as one RGB frame.
fn astronaut_frame() -> (gst::Caps, gst::Buffer) {
    let png = venv_file("skimage/data/astronaut.png");
    let (caps, frames) = frames_from(&format!(
        "filesrc location={} ! pngdec ! videoconvert ! video/x-raw,format=RGB ! imagefreeze num-buffers=1 ! video/x-raw,framerate=10/1 ! appsink name=sink sync=false",
        png.display()
    ));
    (caps, frames[0].clone())
}

/// A numpy reference decode of YOLOv8 output `data` ([1, 4 + C, A] FP32): per-class greedy
/// NMS, boxes mapped back by `scale` and `pad` (x, y), best first: (class, score, x1, y1, x2, y2).
fn numpy_yolov8(
    data: &[u8],
    dims: &[u64],
    threshold: f64,
    iou: f64,
    scale: f64,
    pad: (f64, f64),
) -> Vec<(usize, f64, [f64; 4])> {
    let mut child = Command::new(workspace().join(".venv-mlserver/bin/python"))
        .args([
            "-c",
            "import sys, numpy as np\n\
             rows, anchors, thr, iou, scale, px, py = sys.argv[1:]\n\
             p = np.frombuffer(sys.stdin.buffer.read(), '<f4').astype(np.float64)\n\
             p = p.reshape(int(rows), int(anchors)).T\n\
             cls = p[:, 4:].argmax(1); score = p[:, 4:].max(1)\n\
             keep = score >= float(thr)\n\
             p, cls, score = p[keep], cls[keep], score[keep]\n\
             xy = np.stack([p[:, 0] - p[:, 2] / 2, p[:, 1] - p[:, 3] / 2, p[:, 0] + p[:, 2] / 2, p[:, 1] + p[:, 3] / 2], 1)\n\
             xy = (xy - [float(px), float(py), float(px), float(py)]) / float(scale)\n\
             order = np.argsort(-score, kind='stable'); kept = []\n\
             def iou_of(a, b):\n\
             \x20   w = max(0.0, min(a[2], b[2]) - max(a[0], b[0])); h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))\n\
             \x20   i = w * h\n\
             \x20   return i / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - i)\n\
             for i in order:\n\
             \x20   if all(cls[k] != cls[i] or iou_of(xy[k], xy[i]) <= float(iou) for k in kept): kept.append(i)\n\
             for k in kept: print(cls[k], score[k], *xy[k])",
            &dims[1].to_string(),
            &dims[2].to_string(),
            &threshold.to_string(),
            &iou.to_string(),
            &scale.to_string(),
            &pad.0.to_string(),
            &pad.1.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the numpy reference ran");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Vec<f64> = l.split(' ').map(|v| v.parse().unwrap()).collect();
            (v[0] as usize, v[1], [v[2], v[3], v[4], v[5]])
        })
        .collect()
}

/// NudeNet's labels, line N for class N (the fixture's labels.txt).
fn nudenet_labels() -> Vec<String> {
    std::fs::read_to_string(nudenet_fixture().join("labels.txt"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The face in the astronaut photo, from NudeNet's own decode of a plain resize (checked
/// by hand: forehead to chin, ear to ear).
const ASTRONAUT_FACE: (f64, f64, f64, f64) = (173.0, 83.0, 274.0, 180.0);

#[test]
fn a_real_yolov8_detector_finds_the_face_and_matches_a_numpy_decode() {
    // NudeNet's YOLOv8n (PyPI nudenet 3.4.2, nudenet/320n.onnx) served raw by MLServer through
    // scripts/peers/nudenet: output0 [1, 22, 2100], decoded only by the element.
    let server = Peer::mlserver();
    let (caps, frame) = astronaut_frame();
    let labels = nudenet_fixture().join("labels.txt");
    let mut h = harness(
        &[
            ("url", server.url().as_str()),
            ("model", "faces"),
            ("input-name", "images"),
            ("input-width", "320"),
            ("input-height", "320"),
            ("box-format", "yolov8"),
            ("labels-file", labels.to_str().unwrap()),
            ("attach-tensors", "true"),
            ("latency-budget", "30000"),
        ],
        &caps,
    );
    h.push(frame).unwrap();
    let out = h.pull().unwrap();
    let found = rois(&out);
    let faces: Vec<&Roi> = found
        .iter()
        .filter(|r| r.label.starts_with("FACE_"))
        .collect();
    assert_eq!(
        faces.len(),
        1,
        "one face: {:?}",
        found.iter().map(|r| (&r.label, r.rect)).collect::<Vec<_>>()
    );
    let face = faces[0];
    assert_eq!(
        (face.label.as_str(), face.label_id, face.model.as_str()),
        ("FACE_FEMALE", 1, "faces")
    );
    assert!(face.confidence > 0.5, "{}", face.confidence);
    assert!(
        iou(face.rect, ASTRONAUT_FACE) > 0.8,
        "the box is on the face: {:?}",
        face.rect
    );
    // Every box the element made is the numpy decode of the same output (512 -> 320: scale
    // 0.625, no bars); ROI rects are whole pixels.
    let tensors = rtai_core::tensor::TensorMeta::get(&out);
    assert_eq!(tensors.len(), 1);
    let t = &tensors[0];
    assert_eq!(
        (t.name.as_str(), t.dims.as_slice()),
        ("output0", &[1, 22, 2100][..])
    );
    let reference = numpy_yolov8(&t.data, &t.dims, 0.25, 0.45, 0.625, (0.0, 0.0));
    assert!(!reference.is_empty());
    assert_eq!(found.len(), reference.len(), "as many boxes as numpy finds");
    let names = nudenet_labels();
    for (class, score, b) in &reference {
        let r = found
            .iter()
            .find(|r| r.label == names[*class] && (r.confidence - score).abs() < 1e-5)
            .unwrap_or_else(|| panic!("numpy's {} {score} {b:?} is among the ROIs", names[*class]));
        for (a, e) in [r.rect.0, r.rect.1, r.rect.2, r.rect.3].iter().zip(b) {
            assert!((a - e).abs() <= 1.0, "{:?} vs numpy {b:?}", r.rect);
        }
    }
}

#[test]
fn model_metadata_configures_the_input_and_every_input_datatype_finds_the_face() {
    // The faces* models declare their input (name, datatype, shape) and refuse any other
    // (HTTP 400, "strict"): a face found means inferclient sent exactly what was declared.
    let server = Peer::mlserver();
    let (caps, frame) = astronaut_frame();
    let labels = nudenet_fixture().join("labels.txt");
    let rest = server.url();
    let grpc = format!("http://127.0.0.1:{}", server.grpc_port);
    /// Model, protocol, properties.
    type Row<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>);
    let rows: Vec<Row> = vec![
        // Nothing about the input set: everything from GET /v2/models/{model}.
        ("faces", "kserve-rest", vec![]),
        ("faces-fp16", "kserve-rest", vec![]),
        ("faces-u8", "kserve-rest", vec![]),
        // ... and from gRPC ModelMetadata.
        ("faces-u8", "kserve-grpc", vec![]),
        ("faces-fp16", "kserve-grpc", vec![]),
        // Set by hand (no metadata read).
        (
            "faces-u8",
            "kserve-rest",
            vec![
                ("input-name", "images"),
                ("input-width", "320"),
                ("input-height", "320"),
                ("input-datatype", "uint8"),
            ],
        ),
        // JPEG in a BYTES tensor (the server decodes and letterboxes into 320x320): the
        // metadata gives the name and datatype, the size the server fits to is set.
        (
            "faces-jpeg",
            "kserve-rest",
            vec![("input-width", "320"), ("input-height", "320")],
        ),
        (
            "faces-jpeg",
            "kserve-grpc",
            vec![("input-width", "320"), ("input-height", "320")],
        ),
    ];
    for (model, protocol, extra) in rows {
        let url = if protocol == "kserve-grpc" {
            &grpc
        } else {
            &rest
        };
        let mut props = vec![
            ("url", url.as_str()),
            ("protocol", protocol),
            ("model", model),
            ("box-format", "yolov8"),
            ("labels-file", labels.to_str().unwrap()),
            ("latency-budget", "30000"),
            ("max-retries", "0"),
        ];
        props.extend(extra.iter().copied());
        let (out, warnings, s, _) = run_to_eos(
            &props
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            &caps,
            std::slice::from_ref(&frame),
            |_| {},
        );
        let what = format!("{model} over {protocol} {extra:?}");
        assert!(warnings.is_empty(), "{what}: {warnings:?} {s}");
        assert_eq!(count(&s, "ok"), 1, "{what}: {s}");
        let found = rois(&out[0]);
        let face = found
            .iter()
            .find(|r| r.label == "FACE_FEMALE")
            .unwrap_or_else(|| panic!("{what}: no face"));
        assert!(
            iou(face.rect, ASTRONAUT_FACE) > 0.8 && face.confidence > 0.5,
            "{what}: {:?} {}",
            face.rect,
            face.confidence
        );
    }
    // image/jpeg in: the JPEG travels as it came (no decode, no second encode).
    let png = venv_file("skimage/data/astronaut.png");
    let (jpeg_caps, jpegs) = frames_from(&format!(
        "filesrc location={} ! pngdec ! videoconvert ! jpegenc ! appsink name=sink sync=false",
        png.display()
    ));
    let (out, warnings, s, _) = run_to_eos(
        &format!(
            "url={rest} model=faces-jpeg input-width=320 input-height=320 box-format=yolov8 labels-file={} latency-budget=30000",
            labels.display()
        ),
        &jpeg_caps,
        &jpegs,
        |_| {},
    );
    assert!(warnings.is_empty(), "{warnings:?} {s}");
    assert_eq!(
        out[0].map_readable().unwrap().as_slice(),
        jpegs[0].map_readable().unwrap().as_slice()
    );
    let face = rois(&out[0])
        .into_iter()
        .find(|r| r.label == "FACE_FEMALE")
        .expect("a face from the JPEG");
    assert!(iou(face.rect, ASTRONAUT_FACE) > 0.8, "{:?}", face.rect);
    // The check the rows rely on: FP32 to the UINT8 model is refused, nothing found.
    let (out, warnings, s, _) = run_to_eos(
        &format!(
            "url={rest} model=faces-u8 input-datatype=fp32 box-format=yolov8 latency-budget=30000 max-retries=0"
        ),
        &caps,
        std::slice::from_ref(&frame),
        |_| {},
    );
    assert!(rois(&out[0]).is_empty());
    assert_eq!((count(&s, "ok"), count(&s, "rejected")), (0, 1), "{s}");
    assert!(warnings[0].contains("400"), "{warnings:?}");
    // Output names from the metadata: ball-split answers OUTPUT_BOXES, output_confidences and
    // output_class_ids, none a usual name. With the metadata read (input unset) box-format
    // auto reads them; with the input set by hand (no metadata) it cannot tell.
    let (ball_caps, balls) = ball_frames(1);
    for (extra, found) in [
        ("", true),
        (
            "input-name=pixels input-width=160 input-height=160 input-datatype=fp32",
            false,
        ),
    ] {
        let (out, warnings, s, _) = run_to_eos(
            &format!(
                "url={rest} model=ball-split labels=ball latency-budget=30000 max-retries=0 {extra}"
            ),
            &ball_caps,
            &balls,
            |_| {},
        );
        let got = rois(&out[0]);
        if found {
            assert!(warnings.is_empty(), "{warnings:?} {s}");
            assert_eq!(got.len(), 1, "{s}");
            assert_eq!(got[0].label, "ball");
            assert!(
                iou(ball_box(&balls[0]), got[0].rect) > 0.8,
                "{:?}",
                got[0].rect
            );
        } else {
            assert!(got.is_empty(), "{} found", got.len());
            assert!(
                warnings.iter().any(|w| w.contains("box-format")),
                "{warnings:?} {s}"
            );
        }
    }
}

/// An RGB frame `w` x `h` (black) with `parts` (RGB buffers of `pw` x `ph`) pasted at (x, y).
fn compose(w: u32, h: u32, parts: &[(&gst::Buffer, u32, u32, u32, u32)]) -> gst::Buffer {
    let stride = (w as usize * 3).next_multiple_of(4);
    let mut data = vec![0u8; stride * h as usize];
    for (part, pw, ph, x, y) in parts {
        let map = part.map_readable().unwrap();
        let pstride = (*pw as usize * 3).next_multiple_of(4);
        for row in 0..*ph as usize {
            let dst = (*y as usize + row) * stride + *x as usize * 3;
            data[dst..dst + *pw as usize * 3]
                .copy_from_slice(&map[row * pstride..row * pstride + *pw as usize * 3]);
        }
    }
    gst::Buffer::from_mut_slice(data)
}

fn rgb_caps(w: u32, h: u32) -> gst::Caps {
    gst::Caps::builder("video/x-raw")
        .field("format", "RGB")
        .field("width", w as i32)
        .field("height", h as i32)
        .field("framerate", gst::Fraction::new(10, 1))
        .build()
}

/// A ROI's label, rect and classification param.
type Classified = (String, (u32, u32, u32, u32), Option<gst::Structure>);

/// The ROIs' (label, rect, classification param) in order.
fn roi_classifications(buffer: &gst::BufferRef) -> Vec<Classified> {
    buffer
        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .map(|m| {
            (
                m.roi_type().to_string(),
                m.rect(),
                m.param("classification").map(|p| p.to_owned()),
            )
        })
        .collect()
}

/// Adds a ROI with a detection param (as a detector upstream would).
fn add_roi(buffer: &mut gst::BufferRef, label: &str, rect: (u32, u32, u32, u32)) {
    let mut roi = gst_video::VideoRegionOfInterestMeta::add(buffer, label, rect);
    roi.add_param(
        gst::Structure::builder("detection")
            .field("confidence", 0.9f64)
            .field("label", label)
            .build(),
    );
}

/// PP-OCR's text direction classifier, as the classifier test prepares it.
const CLS_PROPS: &str = "model=cls input-name=x input-width=192 input-height=48 input-datatype=fp32 labels=0,180 channel-order=bgr mean=0.5 std=0.5 box-format=classification latency-budget=30000";

#[test]
fn per_object_inference_classifies_each_roi_crop_in_one_batched_request() {
    // Two text lines in one frame, one upside down, each a "text" ROI; a "person" ROI and a
    // too small "text" ROI are left alone. The classifier must tell each crop's direction.
    let server = Peer::mlserver();
    let (_, upright) = text_line_frame(false);
    let (_, upside_down) = text_line_frame(true);
    let mut frame = compose(
        480,
        120,
        &[
            (&upright, 192, 48, 16, 20),
            (&upside_down, 192, 48, 256, 60),
        ],
    );
    {
        let b = frame.get_mut().unwrap();
        add_roi(b, "text", (16, 20, 192, 48));
        add_roi(b, "person", (0, 0, 100, 100));
        add_roi(b, "text", (256, 60, 192, 48));
        add_roi(b, "text", (300, 0, 10, 10));
    }
    let (out, warnings, s, _) = run_to_eos(
        &format!(
            "url={} {CLS_PROPS} roi-classes=text,car roi-min-size=16",
            server.url()
        ),
        &rgb_caps(480, 120),
        &[frame],
        |_| {},
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        (count(&s, "sent"), count(&s, "ok")),
        (1, 1),
        "one request: {s}"
    );
    let rois = roi_classifications(&out[0]);
    assert_eq!(rois.len(), 4, "no ROI added or lost");
    let label = |i: usize| {
        rois[i].2.as_ref().map(|c| {
            (
                c.get::<String>("label").unwrap(),
                c.get::<f64>("confidence").unwrap(),
            )
        })
    };
    let (up, up_score) = label(0).expect("the upright line classified");
    let (down, down_score) = label(2).expect("the upside-down line classified");
    assert_eq!((up.as_str(), down.as_str()), ("0", "180"));
    assert!(
        up_score > 0.9 && down_score > 0.9,
        "{up_score} {down_score}"
    );
    assert!(
        label(1).is_none() && label(3).is_none(),
        "other class, too small"
    );
    // Not the frame's own inference: no frame-level ROI and no inferred marker added.
    assert!(gstrtaiinfer::InferredMeta::get(&out[0]).is_none());
}

#[test]
fn detector_tracker_and_reclassify_interval_keep_ids_and_skip_repeats() {
    // The astronaut photo seen through a 320x320 window that moves 8 px right and 4 px down
    // per frame: the face moves left and up. NudeNet finds it, objtracker keeps its id, and
    // a second inferclient classifies the face crop once per 4 frames (PP-OCR's direction
    // classifier: any answer, but the same model; in between the track's last answer).
    let server = Peer::mlserver();
    let (_, photo) = astronaut_frame();
    let map = photo.map_readable().unwrap();
    let frames: Vec<gst::Buffer> = (0..10u32)
        .map(|k| {
            let (ox, oy) = (8 * k as usize, 4 * k as usize);
            let mut data = Vec::with_capacity(320 * 320 * 3);
            for row in 0..320 {
                let start = (oy + row) * 512 * 3 + ox * 3;
                data.extend_from_slice(&map[start..start + 320 * 3]);
            }
            let mut b = gst::Buffer::from_mut_slice(data);
            b.get_mut()
                .unwrap()
                .set_pts(gst::ClockTime::from_mseconds(100 * k as u64));
            b
        })
        .collect();
    drop(map);
    let labels = nudenet_fixture().join("labels.txt");
    let url = server.url();
    let (out, warnings, _, _) = run_to_eos(
        &format!(
            "url={url} model=faces box-format=yolov8 labels-file={} latency-budget=30000 \
             ! objtracker ! inferclient name=cls url={url} {CLS_PROPS} roi-classes=FACE_FEMALE reclassify-interval=4",
            labels.display()
        ),
        &rgb_caps(320, 320),
        &frames,
        |_| {},
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    let mut ids = Vec::new();
    let mut answers = Vec::new();
    for (k, buffer) in out.iter().enumerate() {
        let faces: Vec<_> = buffer
            .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
            .filter(|m| m.roi_type() == "FACE_FEMALE")
            .map(|m| {
                let (x, y, w, h) = m.rect();
                (
                    (x as f64, y as f64, (x + w) as f64, (y + h) as f64),
                    m.param("object_id").map(|p| p.get::<i32>("id").unwrap()),
                    m.param("classification").map(|p| p.to_owned()),
                )
            })
            .collect();
        assert_eq!(faces.len(), 1, "frame {k}: one face");
        let (rect, id, class) = faces[0].clone();
        let (ox, oy) = (8.0 * k as f64, 4.0 * k as f64);
        let expected = (
            ASTRONAUT_FACE.0 - ox,
            ASTRONAUT_FACE.1 - oy,
            ASTRONAUT_FACE.2 - ox,
            ASTRONAUT_FACE.3 - oy,
        );
        assert!(
            iou(rect, expected) > 0.7,
            "frame {k}: {rect:?} vs {expected:?}"
        );
        ids.push(id.unwrap_or_else(|| panic!("frame {k}: the face is tracked")));
        let class = class.unwrap_or_else(|| panic!("frame {k}: the face is classified"));
        answers.push((
            class.get::<bool>("cached").unwrap(),
            class.get::<String>("label").unwrap(),
        ));
    }
    assert!(
        ids.iter().all(|&id| id == ids[0]),
        "one id throughout: {ids:?}"
    );
    // Sent on frames 0, 4 and 8; the frames between repeat the last answer.
    let cached: Vec<bool> = answers.iter().map(|a| a.0).collect();
    assert_eq!(
        cached,
        [
            false, true, true, true, false, true, true, true, false, true
        ]
    );
    for k in 1..10 {
        if answers[k].0 {
            assert_eq!(
                answers[k].1,
                answers[k - k % 4].1,
                "frame {k} repeats frame {}",
                k - k % 4
            );
        }
    }
}
