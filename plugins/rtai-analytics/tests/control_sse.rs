//! analyticssink's control routes on its `listen` server (issue 19): control
//! events reaching the sink stream to an SSE client with ids, the client's acks
//! post `control-ack` (transport `sse`), a missing ack ends in
//! `control-undelivered`; a POSTed `interrupt` goes upstream from the sink pad
//! it names, once however often it is resent; bad input gets an error and the
//! pipeline goes on.

#[allow(unused_imports)]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use gst::prelude::*;
use rtai_core::SegmentEvent;
use rtai_core::control::{self, ControlAckInfo, ControlMessage};

fn post(addr: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap();
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    (status, body.unwrap_or_default())
}

/// Reads SSE `data:` lines (control messages) until `n` arrived.
fn sse_until(s: &mut TcpStream, text: &mut String, n: usize) -> Vec<ControlMessage> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got: Vec<ControlMessage> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| control::parse_message(d.trim().as_bytes()).unwrap())
            .collect();
        if got.len() >= n {
            assert!(text.contains("\nid: "), "events carry SSE ids: {text}");
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} SSE events: {text}",
            got.len()
        );
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(k) => text.push_str(&String::from_utf8_lossy(&buf[..k])),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn control_messages_cross_the_sse_routes_both_ways() {
    let rig = Rig::new(&[("listen", "127.0.0.1:0".to_value())], &[AUDIO]);
    let addr = rig.addr();
    let upstream: Arc<Mutex<Vec<ControlMessage>>> = Arc::default();
    let up = upstream.clone();
    rig.srcs[0].add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
        if let Some(gst::PadProbeData::Event(e)) = &info.data
            && let Some(m) = ControlMessage::from_event(e, None)
        {
            up.lock().unwrap().push(m);
        }
        gst::PadProbeReturn::Ok
    });
    let mut sse = TcpStream::connect(&addr).unwrap();
    sse.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    sse.write_all(format!("GET /api/control/stream HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .unwrap();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text.contains("\r\n\r\n") {
        assert!(Instant::now() < deadline);
        let mut buf = [0u8; 4096];
        if let Ok(k) = sse.read(&mut buf) {
            text.push_str(&String::from_utf8_lossy(&buf[..k]));
        }
    }
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");

    let seg = 9 << 32 | 1;
    rig.event(
        0,
        SegmentEvent::Start {
            id: seg,
            running_time: gst::ClockTime::from_mseconds(100),
            lookback: gst::ClockTime::ZERO,
        }
        .to_event(),
    );
    rig.push(0, audio_frame(100, 0.5));
    rig.event(
        0,
        SegmentEvent::Cancel {
            id: seg,
            reason: "click".into(),
        }
        .to_event(),
    );
    let got = sse_until(&mut sse, &mut text, 2);
    assert_eq!(got[0].kind, control::TYPE_SPEECH_START);
    assert_eq!(got[0].segment_id, Some(seg));
    assert_eq!(got[0].stream.as_deref(), Some("sink_0"));
    assert_eq!(got[1].kind, control::TYPE_SPEECH_CANCEL);
    for m in &got {
        let (status, body) = post(
            &addr,
            "/api/control/ack",
            control::ack_json(&m.id).as_bytes(),
        );
        assert_eq!(status, 204, "{body}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut acks = Vec::new();
    while acks.len() < 2 {
        assert!(Instant::now() < deadline, "acks {acks:?}");
        if let Some(msg) = rig.bus.timed_pop(gst::ClockTime::from_mseconds(100))
            && let Some(a) = ControlAckInfo::parse(&msg)
        {
            acks.push(a);
        }
    }
    for (a, m) in acks.iter().zip(&got) {
        assert_eq!(
            (a.id.as_str(), a.transport.as_str()),
            (m.id.as_str(), "sse")
        );
    }

    // Browser → pipeline: an interrupt for sink_0, sent twice (a retry), goes upstream once.
    let mut interrupt = ControlMessage::new(control::TYPE_INTERRUPT);
    interrupt.stream = Some("sink_0".into());
    for _ in 0..2 {
        let (status, body) = post(&addr, "/api/control", interrupt.to_json().as_bytes());
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, control::ack_json(&interrupt.id));
    }
    assert_eq!(upstream.lock().unwrap().as_slice(), &[interrupt.clone()]);

    // Bad input gets an error; the pipeline and the stream go on.
    for (body, status) in [(&b"{oops"[..], 400), (br#"{"id":"z","type":"yell"}"#, 422)] {
        assert_eq!(post(&addr, "/api/control", body).0, status);
    }
    rig.push(0, audio_frame(200, 0.5));
    rig.event(0, SegmentEvent::End { id: seg }.to_event());
    let got = sse_until(&mut sse, &mut text, 3);
    let end = &got[2];
    assert_eq!(end.kind, control::TYPE_SPEECH_END);
    // Not acked: 3 retries, then the warning names it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no control-undelivered");
        let Some(msg) = rig.bus.timed_pop(gst::ClockTime::from_mseconds(100)) else {
            continue;
        };
        if let gst::MessageView::Warning(w) = msg.view()
            && let Some(d) = w.details()
            && d.name() == control::MESSAGE_CONTROL_UNDELIVERED
        {
            assert_eq!(d.get::<String>("id").unwrap(), end.id);
            assert_eq!(d.get::<String>("transport").unwrap(), "sse");
            break;
        }
    }
    assert_eq!(upstream.lock().unwrap().len(), 1);
    rig.stop();
}
