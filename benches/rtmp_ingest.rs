//! rtmpserversrc's cost against the same FLV bytes over plain TCP
//! (`tcpserversrc ! flvdemux`), measured in the same run:
//!
//! - added latency per frame: publisher socket write → `flvdemux` video output
//!   (appsink, sync=false), 720p30 H.264 at 4 Mbit/s paced in real time, P50/P95/P99;
//! - CPU per Mbit/s with 10 concurrent 4 Mbit/s publishers (process CPU time,
//!   publishers included on both sides, divided by the megabits delivered).
//!
//! The H.264 is encoded by ffmpeg into memory before any clock starts. The RTMP
//! publisher is rml_rtmp's client session (as ffmpeg/OBS would send it); the TCP
//! baseline writes the FLV file header and the same tags to the socket.
//!
//! Run: `cargo build --release -p gst-plugin-rtai-live && cargo bench -p rtai-benches --bench rtmp_ingest`

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gst::prelude::*;
use gstrtailive::rtmp::flv;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use rtai_benches::{figure, ratio};
use rtai_core::stats::LatencyHistogram;

const SECONDS: u32 = 10;
const PUBLISHERS: usize = 10;

/// (kind, timestamp ms, body) of every video tag of a 720p30 4 Mbit/s clip.
fn clip() -> Vec<(u8, u32, Vec<u8>)> {
    let out = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30"])
        .args([
            "-t",
            &SECONDS.to_string(),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ])
        .args([
            "-tune",
            "zerolatency",
            "-b:v",
            "4M",
            "-maxrate",
            "4M",
            "-bufsize",
            "2M",
        ])
        .args([
            "-g", "60", "-pix_fmt", "yuv420p", "-an", "-f", "flv", "pipe:1",
        ])
        .output()
        .expect("ffmpeg runs");
    assert!(out.status.success());
    let mut data = &out.stdout[13..];
    let mut tags = Vec::new();
    while let Some((tag, used)) = flv::parse_tag(data) {
        if tag.kind == 9 {
            tags.push((tag.kind, tag.timestamp_ms, tag.body));
        }
        data = &data[used..];
    }
    tags
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Rtmp,
    Tcp,
}

struct Receiver {
    pipeline: gst::Pipeline,
    port: u16,
    arrivals: Arc<Mutex<HashMap<u64, Instant>>>,
}

fn receiver(kind: Kind, port: u16, name: &str) -> Receiver {
    let desc = match kind {
        Kind::Rtmp => format!(
            "rtmpserversrc name=src listen=127.0.0.1:{port} stream-name={name} ! flvdemux name=d d.video ! appsink name=v sync=false"
        ),
        Kind::Tcp => format!(
            "tcpserversrc name=src host=127.0.0.1 port={port} ! flvdemux name=d d.video ! appsink name=v sync=false"
        ),
    };
    let pipeline = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let arrivals = Arc::new(Mutex::new(HashMap::new()));
    let a = arrivals.clone();
    let sink = pipeline
        .by_name("v")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if let Some(ts) = sample.buffer().and_then(|b| b.dts_or_pts()) {
                    a.lock().unwrap().insert(ts.mseconds(), Instant::now());
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    let src = pipeline.by_name("src").unwrap();
    let port = match kind {
        Kind::Rtmp => src.property::<u32>("bound-port") as u16,
        Kind::Tcp => {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let p = src.property::<i32>("current-port");
                if p > 0 || Instant::now() > deadline {
                    break p as u16;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    };
    Receiver {
        pipeline,
        port,
        arrivals,
    }
}

fn read_some(s: &mut TcpStream, buf: &mut [u8]) -> usize {
    match s.read(buf) {
        Ok(0) => panic!("server closed"),
        Ok(n) => n,
        Err(_) => 0,
    }
}

/// An RTMP publisher (rml_rtmp client) that has connected and is publishing `name`.
fn rtmp_publisher(port: u16, name: &str) -> (TcpStream, ClientSession) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut hs = Handshake::new(PeerType::Client);
    s.write_all(&hs.generate_outbound_p0_and_p1().unwrap())
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let leftover = loop {
        let n = read_some(&mut s, &mut buf);
        match hs.process_bytes(&buf[..n]).unwrap() {
            HandshakeProcessResult::InProgress { response_bytes } => {
                s.write_all(&response_bytes).unwrap()
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                s.write_all(&response_bytes).unwrap();
                break remaining_bytes;
            }
        }
    };
    let (mut session, results) = ClientSession::new(ClientSessionConfig::new()).unwrap();
    let send = |s: &mut TcpStream, r: ClientSessionResult| {
        if let ClientSessionResult::OutboundResponse(p) = r {
            s.write_all(&p.bytes).unwrap();
        }
    };
    for r in results {
        send(&mut s, r);
    }
    send(&mut s, session.request_connection("live".into()).unwrap());
    let mut input = leftover;
    let mut published = false;
    let mut connected = false;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !published {
        assert!(Instant::now() < deadline, "publish accepted");
        for r in session.handle_input(&input).unwrap() {
            match r {
                ClientSessionResult::RaisedEvent(ClientSessionEvent::ConnectionRequestAccepted) => {
                    connected = true
                }
                ClientSessionResult::RaisedEvent(ClientSessionEvent::PublishRequestAccepted) => {
                    published = true
                }
                other => send(&mut s, other),
            }
        }
        if connected {
            connected = false;
            send(
                &mut s,
                session
                    .request_publishing(name.into(), PublishRequestType::Live)
                    .unwrap(),
            );
        }
        input.clear();
        if !published {
            let n = read_some(&mut s, &mut buf);
            input.extend_from_slice(&buf[..n]);
        }
    }
    s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
    (s, session)
}

/// Sends the clip paced at 30 fps; returns send instants by timestamp and bytes sent.
fn publish(
    kind: Kind,
    port: u16,
    name: &str,
    tags: &[(u8, u32, Vec<u8>)],
) -> (HashMap<u64, Instant>, u64) {
    let mut sent = HashMap::new();
    let mut bytes = 0u64;
    let mut drain = vec![0u8; 65536];
    let (mut s, mut session) = match kind {
        Kind::Rtmp => {
            let (s, session) = rtmp_publisher(port, name);
            (s, Some(session))
        }
        Kind::Tcp => {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_nodelay(true).unwrap();
            s.write_all(&flv::file_header()).unwrap();
            (s, None)
        }
    };
    let start = Instant::now();
    for (i, (_, ts, body)) in tags.iter().enumerate() {
        let due = start + Duration::from_micros(i as u64 * 1_000_000 / 30);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let data = match session.as_mut() {
            Some(session) => {
                let _ = s.read(&mut drain); // acknowledgements
                match session
                    .publish_video_data(Bytes::from(body.clone()), RtmpTimestamp::new(*ts), false)
                    .unwrap()
                {
                    ClientSessionResult::OutboundResponse(p) => p.bytes,
                    _ => continue,
                }
            }
            None => flv::tag(flv::TagKind::Video, *ts, body).unwrap().to_vec(),
        };
        sent.insert(*ts as u64, Instant::now());
        s.write_all(&data).unwrap();
        bytes += body.len() as u64;
    }
    std::thread::sleep(Duration::from_millis(300));
    (sent, bytes)
}

fn latency(kind: Kind, tags: &[(u8, u32, Vec<u8>)]) -> LatencyHistogram {
    let r = receiver(kind, 0, "lat");
    let (sent, _) = publish(kind, r.port, "lat", tags);
    let arrivals = r.arrivals.lock().unwrap().clone();
    r.pipeline.set_state(gst::State::Null).unwrap();
    let mut h = LatencyHistogram::new();
    for (ts, at) in &sent {
        if let Some(out) = arrivals.get(ts) {
            h.record(out.saturating_duration_since(*at).as_nanos() as u64);
        }
    }
    assert!(
        h.count() as usize >= tags.len() * 9 / 10,
        "frames arrived: {}",
        h.count()
    );
    h
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// CPU seconds per megabit with PUBLISHERS concurrent publishers.
fn cpu_per_mbit(kind: Kind, tags: &[(u8, u32, Vec<u8>)]) -> (f64, f64) {
    let mut receivers = Vec::new();
    let first = receiver(kind, 0, "s0");
    let port = first.port;
    receivers.push(first);
    for i in 1..PUBLISHERS {
        receivers.push(match kind {
            Kind::Rtmp => receiver(kind, port, &format!("s{i}")),
            Kind::Tcp => receiver(kind, 0, ""),
        });
    }
    let ports: Vec<u16> = receivers.iter().map(|r| r.port).collect();
    let cpu0 = cpu_seconds();
    let wall = Instant::now();
    let threads: Vec<_> = (0..PUBLISHERS)
        .map(|i| {
            let tags = tags.to_vec();
            let port = ports[i];
            std::thread::spawn(move || publish(kind, port, &format!("s{i}"), &tags).1)
        })
        .collect();
    let bytes: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let cpu = cpu_seconds() - cpu0;
    let secs = wall.elapsed().as_secs_f64();
    let delivered: usize = receivers
        .iter()
        .map(|r| r.arrivals.lock().unwrap().len())
        .sum();
    for r in &receivers {
        r.pipeline.set_state(gst::State::Null).unwrap();
    }
    assert!(
        delivered >= PUBLISHERS * tags.len() * 9 / 10,
        "frames delivered: {delivered}"
    );
    let mbit = bytes as f64 * 8.0 / 1e6;
    (cpu * 1000.0 / mbit, mbit / secs)
}

fn main() {
    rtai_benches::init();
    let tags = clip();
    let bytes: usize = tags.iter().map(|t| t.2.len()).sum();
    figure("clip: video tags", tags.len() as f64, "");
    figure(
        "clip: bitrate",
        bytes as f64 * 8.0 / 1e6 / SECONDS as f64,
        "Mbit/s",
    );

    let tcp = latency(Kind::Tcp, &tags);
    let rtmp = latency(Kind::Rtmp, &tags);
    for (name, h) in [
        ("tcpserversrc ! flvdemux", &tcp),
        ("rtmpserversrc ! flvdemux", &rtmp),
    ] {
        for q in [0.5, 0.95, 0.99] {
            figure(
                &format!("{name} latency P{}", (q * 100.0) as u32),
                h.quantile(q) as f64 / 1e6,
                "ms",
            );
        }
    }
    let added = rtmp.quantile(0.95) as f64 / 1e6 - tcp.quantile(0.95) as f64 / 1e6;
    figure("rtmp added latency P95 (goal < 5 ms)", added, "ms");
    ratio(
        "rtmp vs tcp latency P95",
        rtmp.quantile(0.95) as f64 / 1e6,
        tcp.quantile(0.95) as f64 / 1e6,
        "ms",
    );

    let (tcp_cpu, tcp_rate) = cpu_per_mbit(Kind::Tcp, &tags);
    let (rtmp_cpu, rtmp_rate) = cpu_per_mbit(Kind::Rtmp, &tags);
    figure("tcp: 10 publishers aggregate", tcp_rate, "Mbit/s");
    figure("rtmp: 10 publishers aggregate", rtmp_rate, "Mbit/s");
    figure("tcp CPU per Mbit (publishers included)", tcp_cpu, "ms/Mbit");
    figure(
        "rtmp CPU per Mbit (publishers included)",
        rtmp_cpu,
        "ms/Mbit",
    );
    ratio("rtmp vs tcp CPU per Mbit", rtmp_cpu, tcp_cpu, "ms/Mbit");
}
