//! Control messages on loopback, per transport, in one run (issue 19):
//! send → ack round trip and one-way propagation, P50/P95/P99. Goal: P95 < 10 ms.
//!
//! - `grpc`: a control event sent into `appsrc ! grpcsink` → `grpcsrc ! fakesink`;
//!   one way = `send_event` → the event at the receiver's fakesink; round trip =
//!   grpcsink's `control-ack` (first send → ack from the receiver).
//! - `sse`: `ControlHub::publish` → an SSE client on a raw socket, which POSTs the
//!   ack at once on a kept-alive connection; one way = publish → the client parsed
//!   the event; round trip = the hub's acked callback.
//! - `datachannel`: `appsrc ! webrtcserve mode=send-recv`'s `control` pad →
//!   the WebRTC data channel `control` → an in-process `webrtcbin` peer (joined
//!   over WHEP, its offer carrying the channel), which sends `{"ack": id}` back
//!   on the channel at once; one way = `send_event` → the peer's
//!   `on-message-string`; round trip = webrtcserve's `control-ack`.
//!
//! Baseline: `tcp-echo`, the same JSON text written to a loopback TCP socket
//! and echoed back by a thread (no framing beyond a newline, no framework): the
//! floor a transport's round trip is compared with.
//!
//! Run: `cargo bench -p rtai-benches --bench control`

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use gst::prelude::*;
use rtai_benches::{figure, ratio};
use rtai_core::control::{self, ControlAckInfo, ControlMessage};
use rtai_core::control_http::{ControlHandler, ControlHub, HubConfig};

/// Messages per transport, one every `GAP` (a busy voice session sends far fewer).
const N: usize = 400;
const GAP: Duration = Duration::from_millis(5);

/// Round trips and one-way times of one transport, milliseconds.
#[derive(Default)]
struct Samples {
    round_trip: Vec<f64>,
    one_way: Vec<f64>,
}

fn pct(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn report(name: &str, s: &Samples) {
    for (what, v) in [("round trip", &s.round_trip), ("one way", &s.one_way)] {
        figure(&format!("{name} {what} samples"), v.len() as f64, "");
        for (label, q) in [("P50", 0.5), ("P95", 0.95), ("P99", 0.99)] {
            figure(&format!("{name} {what} {label}"), pct(v, q), "ms");
        }
    }
    let p95 = pct(&s.round_trip, 0.95).max(pct(&s.one_way, 0.95));
    println!(
        "{name}: P95 {p95:.3} ms — goal < 10 ms {}",
        if p95 < 10.0 { "met" } else { "NOT met" }
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn tcp_echo(n: usize) -> Samples {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut w = s.try_clone().unwrap();
        for line in BufReader::new(s).lines() {
            let Ok(line) = line else { break };
            if w.write_all(format!("{line}\n").as_bytes()).is_err() {
                break;
            }
        }
    });
    let s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut out = Samples::default();
    let mut line = String::new();
    for _ in 0..n {
        let json = ControlMessage::new("x-bench").to_json();
        let t0 = Instant::now();
        w.write_all(format!("{json}\n").as_bytes()).unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        out.round_trip.push(ms(t0.elapsed()));
        std::thread::sleep(GAP);
    }
    out
}

fn grpc(n: usize) -> Samples {
    let rx =
        gst::parse::launch("grpcsrc name=src listen=127.0.0.1:0 ! fakesink name=sink sync=false")
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let one_way: Arc<Mutex<Vec<f64>>> = Arc::default();
    {
        let (sent, one_way) = (sent.clone(), one_way.clone());
        let pad = rx.by_name("sink").unwrap().static_pad("sink").unwrap();
        pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
            if let Some(gst::PadProbeData::Event(e)) = &info.data
                && let Some(m) = ControlMessage::from_event(e, None)
                && let Some(t0) = sent.lock().unwrap().get(&m.id)
            {
                one_way.lock().unwrap().push(ms(t0.elapsed()));
            }
            gst::PadProbeReturn::Ok
        });
    }
    rx.set_state(gst::State::Playing).unwrap();
    let port = rx.by_name("src").unwrap().property::<u32>("bound-port");
    let tx = gst::parse::launch(&format!(
        "appsrc name=src format=time caps=text/x-raw,format=utf8 ! grpcsink uri=http://127.0.0.1:{port}"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let appsrc = appsrc_of(&tx);
    tx.set_state(gst::State::Playing).unwrap();
    appsrc
        .push_buffer(gst::Buffer::from_slice(b"warm-up".to_vec()))
        .unwrap();
    let bus = tx.bus().unwrap();
    let out = Samples {
        round_trip: send_and_time_acks(&appsrc, &bus, &sent, n),
        one_way: one_way.lock().unwrap().clone(),
    };
    tx.set_state(gst::State::Null).unwrap();
    rx.set_state(gst::State::Null).unwrap();
    out
}

/// The pipeline's `appsrc name=src`.
fn appsrc_of(pipeline: &gst::Pipeline) -> gst_app::AppSrc {
    pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap()
}

/// Sends `n` control messages into `appsrc`, `GAP` apart (their send times in
/// `sent`), then collects the round trips of the `control-ack`s on `bus` (30 s at most).
fn send_and_time_acks(
    appsrc: &gst_app::AppSrc,
    bus: &gst::Bus,
    sent: &Mutex<HashMap<String, Instant>>,
    n: usize,
) -> Vec<f64> {
    for _ in 0..n {
        let m = ControlMessage::new("x-bench");
        sent.lock().unwrap().insert(m.id.clone(), Instant::now());
        appsrc.send_event(m.to_event());
        std::thread::sleep(GAP);
    }
    let mut round_trip = Vec::with_capacity(n);
    let deadline = Instant::now() + Duration::from_secs(30);
    while round_trip.len() < n && Instant::now() < deadline {
        if let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100))
            && let Some(a) = ControlAckInfo::parse(&msg)
        {
            round_trip.push(ms(a.round_trip));
        }
    }
    round_trip
}

struct AckTimes(Mutex<Vec<f64>>);

impl ControlHandler for AckTimes {
    fn received(&self, _: ControlMessage) {}
    fn acked(&self, _: &ControlMessage, round_trip: Duration, _: u32) {
        self.0.lock().unwrap().push(ms(round_trip));
    }
    fn undelivered(&self, _: &ControlMessage, _: u32) {}
}

fn sse(n: usize) -> Samples {
    let acks = Arc::new(AckTimes(Mutex::new(Vec::new())));
    let hub = ControlHub::new(
        acks.clone(),
        HubConfig {
            rate: 1e6,
            burst: 1e6,
        },
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let app: axum::Router = hub.router();
    rtai_core::runtime::runtime().spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (ready_tx, ready_rx) = mpsc::channel();
    let client = {
        let sent = sent.clone();
        std::thread::spawn(move || {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream.set_nodelay(true).unwrap();
            stream
                .write_all(b"GET /api/control/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                .unwrap();
            let mut acker = TcpStream::connect(addr).unwrap();
            acker.set_nodelay(true).unwrap();
            let mut acker_reader = BufReader::new(acker.try_clone().unwrap());
            let mut reader = BufReader::new(stream);
            let mut one_way = Vec::new();
            let mut line = String::new();
            let mut ready = Some(ready_tx);
            while one_way.len() < n {
                line.clear();
                if reader.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                if line == "\r\n" {
                    // End of the response head: subscribed.
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                    continue;
                }
                let Some(data) = line.trim_end().strip_prefix("data: ") else {
                    continue;
                };
                let Ok(m) = control::parse_message(data.as_bytes()) else {
                    continue;
                };
                if let Some(t0) = sent.lock().unwrap().get(&m.id) {
                    one_way.push(ms(t0.elapsed()));
                }
                let body = control::ack_json(&m.id);
                acker
                    .write_all(
                        format!(
                            "POST /api/control/ack HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .unwrap();
                // 204: a head without a body; read it up to the blank line.
                let mut head = String::new();
                loop {
                    head.clear();
                    if acker_reader.read_line(&mut head).unwrap() == 0 || head == "\r\n" {
                        break;
                    }
                }
            }
            let _ = reader.get_mut().read(&mut [0u8; 0]);
            one_way
        })
    };
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the SSE client subscribed");
    for _ in 0..n {
        let m = ControlMessage::new("x-bench");
        sent.lock().unwrap().insert(m.id.clone(), Instant::now());
        hub.publish(m);
        std::thread::sleep(GAP);
    }
    let one_way = client.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while acks.0.lock().unwrap().len() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    hub.close();
    Samples {
        round_trip: acks.0.lock().unwrap().clone(),
        one_way,
    }
}

/// One transport's run: `n` messages in, samples out.
type Run = fn(usize) -> Samples;

fn datachannel(n: usize) -> Samples {
    use gstrtaiwebrtc::testing::{WhepViewer, h264_offer_caps, listening_address, wait_until};
    let tx = gst::parse::launch(
        "videotestsrc is-live=true ! video/x-raw,width=160,height=120,framerate=15/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 bframes=0 \
         ! video/x-h264,profile=constrained-baseline \
         ! webrtcserve name=serve listen=127.0.0.1:0 mode=send-recv \
         appsrc name=src is-live=true format=time caps=text/x-raw,format=utf8 ! serve.control",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let serve = tx.by_name("serve").unwrap();
    let appsrc = appsrc_of(&tx);
    tx.set_state(gst::State::Playing).unwrap();
    let address = listening_address(&serve, Duration::from_secs(15));
    // The peer: receives the video (dropped), opens the `control` channel in its offer,
    // acks every control message at once and notes when it arrived.
    let peer = WhepViewer::new(&h264_offer_caps(96, true), |pipeline, pad| {
        let sink = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .build()
            .unwrap();
        pipeline.add(&sink).unwrap();
        sink.sync_state_with_parent().unwrap();
        let _ = pad.link(&sink.static_pad("sink").unwrap());
    });
    let channel = peer.webrtc.emit_by_name::<gst_webrtc::WebRTCDataChannel>(
        "create-data-channel",
        &[&"control", &None::<gst::Structure>],
    );
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let one_way: Arc<Mutex<Vec<f64>>> = Arc::default();
    {
        let (sent, one_way) = (sent.clone(), one_way.clone());
        channel.connect_on_message_string(move |ch, text| {
            let t = Instant::now();
            if let Some(Ok(control::Inbound::Message(m))) =
                text.map(|t| control::parse(t.as_bytes()))
            {
                let _ = ch.send_string_full(Some(&control::ack_json(&m.id)));
                if let Some(t0) = sent.lock().unwrap().get(&m.id) {
                    one_way.lock().unwrap().push(ms(t.duration_since(*t0)));
                }
            }
        });
    }
    peer.whep_join(&address);
    wait_until(Duration::from_secs(15), "the control channel open", || {
        channel.ready_state() == gst_webrtc::WebRTCDataChannelState::Open
    });
    let bus = tx.bus().unwrap();
    // Warm-up: one message acked before measuring (the server side's channel is open too).
    appsrc.send_event(ControlMessage::new("x-warm-up").to_event());
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100))
            && ControlAckInfo::parse(&msg).is_some()
        {
            break;
        }
    }
    let out = Samples {
        round_trip: send_and_time_acks(&appsrc, &bus, &sent, n),
        one_way: one_way.lock().unwrap().clone(),
    };
    drop(peer);
    tx.set_state(gst::State::Null).unwrap();
    out
}

/// The transports measured, in this order, in one run.
const TRANSPORTS: &[(&str, Run)] = &[("grpc", grpc), ("sse", sse), ("datachannel", datachannel)];

fn main() {
    gst::init().unwrap();
    gstrtaigrpc::plugin_register_static().unwrap();
    gstrtaiwebrtc::plugin_register_static().unwrap();
    println!("control messages on loopback: {N} per transport, one every {GAP:?}");
    let base = tcp_echo(N);
    figure("tcp-echo round trip P50", pct(&base.round_trip, 0.5), "ms");
    figure("tcp-echo round trip P95", pct(&base.round_trip, 0.95), "ms");
    let base95 = pct(&base.round_trip, 0.95);
    for (name, run) in TRANSPORTS {
        let s = run(N);
        report(name, &s);
        ratio(
            &format!("{name} vs tcp-echo round trip P95"),
            pct(&s.round_trip, 0.95),
            base95,
            "ms",
        );
    }
}
