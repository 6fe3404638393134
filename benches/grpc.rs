//! grpcsink → grpcsrc versus tcpserversink+gdppay → tcpclientsrc+gdpdepay on
//! loopback, in one run: throughput of 720p30 raw video and of H.264 (frames
//! per second at the receiver, first to last frame), and the latency each adds
//! per buffer (sender's sink pad to the receiver's fakesink, live 720p30).
//!
//! Run: `cargo bench -p rtai-benches --bench grpc`

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use gst::prelude::*;
use rtai_benches::{figure, ratio};
use rtai_core::stats::LatencyHistogram;

const FRAMES: u32 = 300;

struct Bridge {
    name: &'static str,
    sender_sink: &'static str,
    receiver_src: &'static str,
}

const GRPC: Bridge = Bridge {
    name: "grpcsink/grpcsrc",
    sender_sink: "grpcsink name=bridge uri=http://127.0.0.1:PORT",
    receiver_src: "grpcsrc name=bridge listen=127.0.0.1:0",
};
/// The same roles as the gRPC pair (the receiver listens, the sender dials):
/// tcpclientsink/tcpserversrc. tcpserversink drops data until a client has
/// connected, which makes a fair start hard to arrange; the transport is the same.
const GDP: Bridge = Bridge {
    name: "gdppay+tcpclientsink/tcpserversrc+gdpdepay",
    sender_sink: "gdppay ! tcpclientsink name=bridge host=127.0.0.1 port=PORT sync=false",
    receiver_src: "tcpserversrc name=bridge host=127.0.0.1 port=FREE ! gdpdepay",
};

struct Measured {
    fps: f64,
    latency: LatencyHistogram,
    frames: usize,
}

/// Runs `source ! <bridge sender>` and `<bridge receiver> ! fakesink`, returns
/// the receiver's frame rate and per-buffer latency (by PTS).
fn run(bridge: &Bridge, source: &str) -> Measured {
    let entered: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    // (sequence number of the buffer, when it arrived)
    type Arrivals = Arc<Mutex<Vec<(Option<u64>, Instant)>>>;
    let arrived: Arrivals = Arc::default();
    let (sender, receiver);
    // The receiver listens first; the sender dials its port.
    // A free port for tcpserversrc (its current-port is not known until it accepts).
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    receiver = gst::parse::launch(&format!(
        "{} ! fakesink name=out sync=false",
        bridge.receiver_src.replace("FREE", &free.to_string())
    ))
    .unwrap();
    receiver.set_state(gst::State::Playing).unwrap();
    let listener = receiver
        .downcast_ref::<gst::Bin>()
        .unwrap()
        .by_name("bridge")
        .unwrap();
    let port = if bridge.name.starts_with("grpc") {
        listener.property::<u32>("bound-port") as i32
    } else {
        free as i32
    };
    sender = gst::parse::launch(&format!(
        "{source} ! {}",
        bridge.sender_sink.replace("PORT", &port.to_string())
    ))
    .unwrap();
    let bin = |p: &gst::Element, n: &str| p.downcast_ref::<gst::Bin>().unwrap().by_name(n).unwrap();
    {
        let entered = entered.clone();
        let sender_pad = bin(&sender, "bridge").static_pad("sink").unwrap();
        sender_pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(b) = info.buffer() {
                let mut entered = entered.lock().unwrap();
                // Buffers without PTS (H.264 from a file) count for throughput only.
                let key = b
                    .pts()
                    .map_or(u64::MAX - entered.len() as u64, |p| p.nseconds());
                entered.insert(key, Instant::now());
            }
            gst::PadProbeReturn::Ok
        });
    }
    {
        let arrived = arrived.clone();
        bin(&receiver, "out").static_pad("sink").unwrap().add_probe(
            gst::PadProbeType::BUFFER,
            move |_, info| {
                if info.buffer().is_some() {
                    let pts = info.buffer().and_then(|b| b.pts()).map(|p| p.nseconds());
                    arrived.lock().unwrap().push((pts, Instant::now()));
                }
                gst::PadProbeReturn::Ok
            },
        );
    }
    sender.set_state(gst::State::Playing).unwrap();
    let started = Instant::now();
    // The GDP sender keeps its socket open after EOS; closing it ends the receiver's stream.
    sender.bus().unwrap().timed_pop_filtered(
        gst::ClockTime::from_seconds(120),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    sender.set_state(gst::State::Null).unwrap();
    let done = receiver.bus().unwrap().timed_pop_filtered(
        gst::ClockTime::from_seconds(20),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    match done.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Eos(_)) => {}
        other => panic!(
            "{}: the receiver did not finish after {:?}: {other:?} (sender: {:?})",
            bridge.name,
            started.elapsed(),
            sender
                .bus()
                .unwrap()
                .pop_filtered(&[gst::MessageType::Error, gst::MessageType::Eos])
        ),
    }
    sender.set_state(gst::State::Null).unwrap();
    receiver.set_state(gst::State::Null).unwrap();
    let arrived = arrived.lock().unwrap();
    let entered = entered.lock().unwrap();
    let mut latency = LatencyHistogram::new();
    for (pts, at) in arrived.iter() {
        if let Some(t) = pts.and_then(|pts| entered.get(&pts)) {
            latency.record(at.saturating_duration_since(*t).as_nanos() as u64);
        }
    }
    // From the first frame entering the sender to the last leaving the receiver.
    let first_in = entered.values().min().copied();
    let span = match (first_in, arrived.last()) {
        (Some(a), Some(b)) => b.1.duration_since(a).as_secs_f64(),
        _ => f64::NAN,
    };
    Measured {
        fps: arrived.len() as f64 / span,
        latency,
        frames: arrived.len(),
    }
}

fn print_latency(grpc: &Measured, gdp: &Measured) {
    for (name, m) in [(GRPC.name, grpc), (GDP.name, gdp)] {
        println!(
            "{name:<44} P50 {:>7.3} ms  P95 {:>7.3} ms  P99 {:>7.3} ms",
            m.latency.quantile(0.5) as f64 / 1e6,
            m.latency.quantile(0.95) as f64 / 1e6,
            m.latency.quantile(0.99) as f64 / 1e6
        );
    }
}

fn main() {
    gst::init().unwrap();
    gstrtaigrpc::plugin_register_static().unwrap();
    let raw = format!(
        "videotestsrc num-buffers={FRAMES} pattern=ball ! video/x-raw,format=I420,width=1280,height=720,framerate=30/1"
    );

    // H.264 once, into memory-backed file, so both bridges carry the same bytes and the encoder is not measured.
    let h264_path = std::env::temp_dir().join(format!("rtai-bench-{}.h264", std::process::id()));
    let encode = gst::parse::launch(&format!(
        "{raw} ! x264enc speed-preset=ultrafast tune=zerolatency bitrate=4000 key-int-max=60 ! h264parse ! video/x-h264,stream-format=byte-stream ! filesink location={}",
        h264_path.display()
    ))
    .unwrap();
    encode.set_state(gst::State::Playing).unwrap();
    encode.bus().unwrap().timed_pop_filtered(
        gst::ClockTime::from_seconds(300),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    encode.set_state(gst::State::Null).unwrap();
    let h264 = format!("filesrc location={} ! h264parse", h264_path.display());

    println!("== throughput at the receiver (frames/s, first to last frame), {FRAMES} frames");
    for (what, source) in [
        ("720p raw I420", raw.as_str()),
        ("720p H.264", h264.as_str()),
    ] {
        let g = run(&GRPC, source);
        let t = run(&GDP, source);
        println!(
            "{what:<14} {:<44} {:>9.1} fps ({} frames)",
            GRPC.name, g.fps, g.frames
        );
        println!(
            "{what:<14} {:<44} {:>9.1} fps ({} frames)",
            GDP.name, t.fps, t.frames
        );
        ratio(
            &format!("{what}: grpc / gdp throughput (goal >= 0.9)"),
            g.fps,
            t.fps,
            "fps",
        );
    }

    println!(
        "\n== added latency per buffer, live 720p30 raw, {} s",
        FRAMES / 30
    );
    let live = format!(
        "videotestsrc is-live=true num-buffers={FRAMES} pattern=ball ! video/x-raw,format=I420,width=1280,height=720,framerate=30/1"
    );
    let g = run(&GRPC, &live);
    let t = run(&GDP, &live);
    print_latency(&g, &t);
    figure(
        "grpc P95 latency, 720p raw (goal < 1 ms)",
        g.latency.quantile(0.95) as f64 / 1e6,
        "ms",
    );
    ratio(
        "grpc / gdp P95 latency, 720p raw",
        g.latency.quantile(0.95) as f64,
        t.latency.quantile(0.95) as f64,
        "ns",
    );

    println!("\n== added latency per buffer, live 16 kHz audio in 10 ms buffers, 5 s");
    let audio = "audiotestsrc is-live=true num-buffers=500 samplesperbuffer=160 ! audio/x-raw,format=S16LE,rate=16000,channels=1";
    let g = run(&GRPC, audio);
    let t = run(&GDP, audio);
    print_latency(&g, &t);
    figure(
        "grpc P95 latency, small buffers (goal < 1 ms)",
        g.latency.quantile(0.95) as f64 / 1e6,
        "ms",
    );
    ratio(
        "grpc / gdp P95 latency, small buffers",
        g.latency.quantile(0.95) as f64,
        t.latency.quantile(0.95) as f64,
        "ns",
    );
    let _ = std::fs::remove_file(&h264_path);
}
