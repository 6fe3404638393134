//! The gRPC bridge's transport cost, measured against named baselines in the
//! same run. Every sender is an `appsrc` fed from buffers generated (and, for
//! H.264, encoded) into memory before any clock starts, so neither
//! `videotestsrc` nor the encoder shares the cores with what is measured.
//!
//! - throughput: 720p raw I420 and 720p H.264 as fast as they go, frames/s at
//!   the receiver, first frame in to last frame out;
//! - latency: H.264 paced as a live 30 fps stream, one way (appsrc push →
//!   receiver's fakesink), P50/P95/P99;
//! - 4 streams at once (4 sender/receiver pairs), aggregate frames/s.
//!
//! Baselines: `in-process` (the same appsrc → fakesink in one pipeline: no
//! transport at all) and `gdp+tcp` (gdppay ! tcpclientsink → tcpserversrc !
//! gdpdepay over loopback, the plain-TCP transport GStreamer ships).
//!
//! Run: `cargo bench -p rtai-benches --bench grpc`

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use rtai_benches::{figure, ratio};
use rtai_core::stats::LatencyHistogram;

const FRAMES: usize = 300;
/// H.264 frames are small: ten times as many make a throughput run long enough to time.
const H264_FRAMES: usize = 3000;
const FPS: u64 = 30;

#[derive(Clone, Copy, PartialEq)]
enum Transport {
    InProcess,
    GdpTcp,
    Grpc,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::InProcess => "in-process appsrc ! fakesink",
            Transport::GdpTcp => "gdp+tcp (tcpclientsink/tcpserversrc)",
            Transport::Grpc => "grpcsink/grpcsrc",
        }
    }
}

/// Buffers in memory and their caps.
struct Frames {
    caps: gst::Caps,
    buffers: Vec<gst::Buffer>,
}

/// Runs `desc ! appsink` to EOS and keeps every buffer.
fn capture(desc: &str) -> Frames {
    let pipeline = gst::parse::launch(&format!("{desc} ! appsink name=out sync=false"))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = pipeline
        .by_name("out")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut buffers = Vec::new();
    let mut caps = None;
    while let Ok(sample) = sink.pull_sample() {
        caps = sample.caps().map(|c| c.to_owned());
        buffers.push(sample.buffer_owned().unwrap());
    }
    pipeline.set_state(gst::State::Null).unwrap();
    Frames {
        caps: caps.expect("frames were captured"),
        buffers,
    }
}

struct Measured {
    fps: f64,
    /// Payload megabits per second at the receiver.
    mbps: f64,
    latency: LatencyHistogram,
    frames: usize,
}

/// One sender/receiver pair, started and ready to be fed.
struct Pair {
    sender: gst::Pipeline,
    receiver: Option<gst::Pipeline>,
    appsrc: gst_app::AppSrc,
    arrived: Arc<Mutex<Vec<(u64, Instant)>>>,
    bytes: Arc<Mutex<u64>>,
}

fn pair(transport: Transport, caps: &gst::Caps) -> Pair {
    let launch = |d: &str| {
        gst::parse::launch(d)
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap()
    };
    let appsrc_desc = "appsrc name=src format=time block=true max-bytes=8000000 stream-type=stream";
    let (sender, receiver) = match transport {
        Transport::InProcess => (
            launch(&format!("{appsrc_desc} ! fakesink name=out sync=false")),
            None,
        ),
        Transport::GdpTcp => {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let receiver = launch(&format!(
                "tcpserversrc host=127.0.0.1 port={port} ! gdpdepay ! fakesink name=out sync=false"
            ));
            receiver.set_state(gst::State::Playing).unwrap();
            let sender = launch(&format!(
                "{appsrc_desc} ! gdppay ! tcpclientsink host=127.0.0.1 port={port} sync=false"
            ));
            (sender, Some(receiver))
        }
        Transport::Grpc => {
            let receiver =
                launch("grpcsrc name=bridge listen=127.0.0.1:0 ! fakesink name=out sync=false");
            receiver.set_state(gst::State::Playing).unwrap();
            let port = receiver
                .by_name("bridge")
                .unwrap()
                .property::<u32>("bound-port");
            let sender = launch(&format!(
                "{appsrc_desc} ! grpcsink uri=http://127.0.0.1:{port}"
            ));
            (sender, Some(receiver))
        }
    };
    let appsrc = sender
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    appsrc.set_caps(Some(caps));
    let arrived: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let bytes: Arc<Mutex<u64>> = Arc::default();
    let out = receiver.as_ref().unwrap_or(&sender).by_name("out").unwrap();
    {
        let (arrived, bytes) = (arrived.clone(), bytes.clone());
        out.static_pad("sink")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(b) = info.buffer()
                    && let Some(pts) = b.pts()
                {
                    *bytes.lock().unwrap() += b.size() as u64;
                    arrived
                        .lock()
                        .unwrap()
                        .push((pts.nseconds(), Instant::now()));
                }
                gst::PadProbeReturn::Ok
            });
    }
    sender.set_state(gst::State::Playing).unwrap();
    Pair {
        sender,
        receiver,
        appsrc,
        arrived,
        bytes,
    }
}

/// Feeds `frames` (cycled to `count` buffers) into the pair, paced at FPS when
/// `paced`; returns when the receiver has everything. Push times by PTS.
fn feed(p: &Pair, frames: &Frames, count: usize, paced: bool) -> HashMap<u64, Instant> {
    let period = Duration::from_nanos(1_000_000_000 / FPS);
    let mut pushed = HashMap::new();
    let start = Instant::now();
    for i in 0..count {
        if paced {
            // The feeder is the live source: it waits for each frame's time.
            let due = start + period * i as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let mut buffer = frames.buffers[i % frames.buffers.len()].copy();
        let pts = period.as_nanos() as u64 * i as u64;
        {
            let b = buffer.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_nseconds(pts));
            b.set_dts(gst::ClockTime::NONE);
            b.set_duration(gst::ClockTime::from_nseconds(period.as_nanos() as u64));
        }
        pushed.insert(pts, Instant::now());
        p.appsrc.push_buffer(buffer).unwrap();
    }
    p.appsrc.end_of_stream().unwrap();
    let wait = |pipeline: &gst::Pipeline, what: &str| {
        let msg = pipeline.bus().unwrap().timed_pop_filtered(
            gst::ClockTime::from_seconds(120),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        );
        match msg.as_ref().map(|m| m.view()) {
            Some(gst::MessageView::Eos(_)) => {}
            other => panic!("{what} did not finish: {other:?}"),
        }
    };
    wait(&p.sender, "the sender");
    if let Some(r) = &p.receiver {
        // tcpclientsink keeps its socket after EOS; closing it ends the receiver's stream.
        p.sender.set_state(gst::State::Null).unwrap();
        wait(r, "the receiver");
    }
    pushed
}

fn finish(p: Pair, pushed: &HashMap<u64, Instant>) -> Measured {
    p.sender.set_state(gst::State::Null).unwrap();
    if let Some(r) = &p.receiver {
        r.set_state(gst::State::Null).unwrap();
    }
    let bytes = *p.bytes.lock().unwrap();
    let arrived = p.arrived.lock().unwrap();
    let mut latency = LatencyHistogram::new();
    for (pts, at) in arrived.iter() {
        if let Some(t) = pushed.get(pts) {
            latency.record(at.saturating_duration_since(*t).as_nanos() as u64);
        }
    }
    let first_in = pushed.values().min().copied();
    let span = match (first_in, arrived.last()) {
        (Some(a), Some(b)) => b.1.duration_since(a).as_secs_f64(),
        _ => f64::NAN,
    };
    Measured {
        fps: arrived.len() as f64 / span,
        mbps: bytes as f64 * 8.0 / 1e6 / span,
        latency,
        frames: arrived.len(),
    }
}

fn run(transport: Transport, frames: &Frames, count: usize, paced: bool) -> Measured {
    let p = pair(transport, &frames.caps);
    let pushed = feed(&p, frames, count, paced);
    finish(p, &pushed)
}

/// `n` pairs at once, each fed from its own thread; aggregate frames/s.
fn run_concurrent(transport: Transport, frames: &Frames, n: usize) -> f64 {
    let pairs: Vec<Pair> = (0..n).map(|_| pair(transport, &frames.caps)).collect();
    let started = Instant::now();
    let frames_out: usize = std::thread::scope(|s| {
        let handles: Vec<_> = pairs
            .into_iter()
            .map(|p| {
                s.spawn(move || {
                    let pushed = feed(&p, frames, FRAMES, false);
                    finish(p, &pushed).frames
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    frames_out as f64 / started.elapsed().as_secs_f64()
}

fn print_latency(name: &str, m: &Measured) {
    println!(
        "{name:<44} P50 {:>7.3} ms  P95 {:>7.3} ms  P99 {:>7.3} ms ({} frames)",
        m.latency.quantile(0.5) as f64 / 1e6,
        m.latency.quantile(0.95) as f64 / 1e6,
        m.latency.quantile(0.99) as f64 / 1e6,
        m.latency.count()
    );
}

fn main() {
    gst::init().unwrap();
    gstrtaigrpc::plugin_register_static().unwrap();
    let all = [Transport::InProcess, Transport::GdpTcp, Transport::Grpc];

    // Generated before any measurement: 30 distinct raw frames, 300 encoded ones (noise
    // at 4 Mb/s: frames of a real stream's size; a moving ball compresses to a few
    // hundred bytes a frame, which would measure the per-message cost only).
    let raw = capture(
        "videotestsrc num-buffers=30 pattern=ball ! video/x-raw,format=I420,width=1280,height=720,framerate=30/1",
    );
    let h264 = capture(&format!(
        "videotestsrc num-buffers={FRAMES} pattern=snow ! video/x-raw,format=I420,width=1280,height=720,framerate=30/1 \
         ! x264enc speed-preset=ultrafast tune=zerolatency bitrate=4000 vbv-buf-capacity=1000 key-int-max=60 ! h264parse \
         ! video/x-h264,stream-format=byte-stream,alignment=au"
    ));
    let h264_bytes: usize = h264.buffers.iter().map(|b| b.size()).sum();
    println!(
        "inputs in memory: 30 raw 720p I420 frames ({} bytes each), {} H.264 frames ({} bytes)",
        raw.buffers[0].size(),
        h264.buffers.len(),
        h264_bytes
    );

    println!("\n== throughput at the receiver (first in to last out), as fast as it goes");
    for (what, frames, count) in [
        ("720p raw I420", &raw, FRAMES),
        ("720p H.264", &h264, H264_FRAMES),
    ] {
        let m: Vec<Measured> = all.iter().map(|t| run(*t, frames, count, false)).collect();
        for (t, m) in all.iter().zip(&m) {
            println!(
                "{what:<14} {:<40} {:>9.1} fps {:>8.1} Mbit/s ({} frames)",
                t.name(),
                m.fps,
                m.mbps,
                m.frames
            );
        }
        ratio(
            &format!("{what}: grpc / gdp+tcp throughput"),
            m[2].fps,
            m[1].fps,
            "fps",
        );
        ratio(
            &format!("{what}: grpc / in-process throughput"),
            m[2].fps,
            m[0].fps,
            "fps",
        );
    }

    println!("\n== one-way latency, H.264 720p paced at {FPS} fps (live), {FRAMES} frames");
    let m: Vec<Measured> = all.iter().map(|t| run(*t, &h264, FRAMES, true)).collect();
    for (t, m) in all.iter().zip(&m) {
        print_latency(t.name(), m);
    }
    figure(
        "grpc P95 one-way latency, paced H.264",
        m[2].latency.quantile(0.95) as f64 / 1e6,
        "ms",
    );
    ratio(
        "grpc / gdp+tcp P95 latency, paced H.264",
        m[2].latency.quantile(0.95) as f64,
        m[1].latency.quantile(0.95) as f64,
        "ns",
    );
    ratio(
        "grpc / gdp+tcp P99 latency, paced H.264",
        m[2].latency.quantile(0.99) as f64,
        m[1].latency.quantile(0.99) as f64,
        "ns",
    );

    println!("\n== 4 streams at once, 720p raw, {FRAMES} frames each (aggregate frames/s)");
    let single = run(Transport::Grpc, &raw, FRAMES, false).fps;
    let grpc4 = run_concurrent(Transport::Grpc, &raw, 4);
    let tcp4 = run_concurrent(Transport::GdpTcp, &raw, 4);
    figure("grpc, 4 streams, aggregate", grpc4, "fps");
    figure("gdp+tcp, 4 streams, aggregate", tcp4, "fps");
    ratio("grpc / gdp+tcp, 4 streams", grpc4, tcp4, "fps");
    ratio(
        "grpc 4 streams / 1 stream (aggregate)",
        grpc4,
        single,
        "fps",
    );
}
