//! The control hub's HTTP routes (feature `control-http`) on a loopback server:
//! SSE with ids and Last-Event-ID resume, acks with their round trip, retries
//! then `undelivered`, inbound messages deduped, and bad input (malformed,
//! unknown type, oversized, floods) refused to that client while the hub goes on.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtai_core::control::{self, ControlMessage};
use rtai_core::control_http::{ControlHandler, ControlHub, HubConfig};

#[derive(Default)]
struct Recorder {
    received: Mutex<Vec<ControlMessage>>,
    acked: Mutex<Vec<(String, Duration, u32)>>,
    undelivered: Mutex<Vec<(String, u32)>>,
}

impl ControlHandler for Recorder {
    fn received(&self, msg: ControlMessage) {
        self.received.lock().unwrap().push(msg);
    }
    fn acked(&self, msg: &ControlMessage, round_trip: Duration, retries: u32) {
        self.acked
            .lock()
            .unwrap()
            .push((msg.id.clone(), round_trip, retries));
    }
    fn undelivered(&self, msg: &ControlMessage, attempts: u32) {
        self.undelivered
            .lock()
            .unwrap()
            .push((msg.id.clone(), attempts));
    }
}

fn serve(config: HubConfig) -> (Arc<ControlHub>, Arc<Recorder>, SocketAddr) {
    let rec = Arc::new(Recorder::default());
    let hub = ControlHub::new(rec.clone(), config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
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
    (hub, rec, addr)
}

fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// POSTs `body`; the status and the response body.
fn post(addr: SocketAddr, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // A server may refuse an oversized body before reading it all.
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    (status, body.unwrap_or_default())
}

/// An SSE client reading `id:` / `data:` lines.
struct SseClient {
    socket: TcpStream,
    text: String,
    events: Vec<(u64, ControlMessage)>,
    current_id: Option<u64>,
    parsed_upto: usize,
}

impl SseClient {
    fn open(addr: SocketAddr, last_event_id: Option<u64>) -> SseClient {
        let mut socket = TcpStream::connect(addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let resume = last_event_id
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "GET /api/control/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n{resume}\r\n"
        );
        socket.write_all(req.as_bytes()).unwrap();
        let mut c = SseClient {
            socket,
            text: String::new(),
            events: Vec::new(),
            current_id: None,
            parsed_upto: 0,
        };
        // Subscribed once the response head arrived.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !c.text.contains("\r\n\r\n") {
            assert!(Instant::now() < deadline, "no SSE response head");
            c.read_some();
        }
        assert!(c.text.starts_with("HTTP/1.1 200"), "{}", c.text);
        assert!(c.text.contains("text/event-stream"), "{}", c.text);
        c
    }

    fn read_some(&mut self) {
        let mut buf = [0u8; 8192];
        match self.socket.read(&mut buf) {
            Ok(n) => self.text.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("SSE read: {e}"),
        }
        // Whole lines only.
        while let Some(end) = self.text[self.parsed_upto..].find('\n') {
            let line = self.text[self.parsed_upto..self.parsed_upto + end]
                .trim_end_matches('\r')
                .to_string();
            self.parsed_upto += end + 1;
            if let Some(id) = line.strip_prefix("id: ").or(line.strip_prefix("id:")) {
                self.current_id = id.trim().parse().ok();
            } else if let Some(data) = line.strip_prefix("data: ").or(line.strip_prefix("data:")) {
                let msg = control::parse_message(data.trim().as_bytes())
                    .unwrap_or_else(|e| panic!("SSE data {data:?}: {e}"));
                self.events
                    .push((self.current_id.take().expect("every event has an id"), msg));
            }
        }
    }

    /// Reads until `n` events arrived in all (or panics at the deadline).
    fn until(&mut self, n: usize, within: Duration) -> &[(u64, ControlMessage)] {
        let deadline = Instant::now() + within;
        while self.events.len() < n {
            assert!(
                Instant::now() < deadline,
                "{} of {n} SSE events: {:?}",
                self.events.len(),
                self.events
            );
            self.read_some();
        }
        &self.events
    }
}

fn message(kind: &str, seg: u64) -> ControlMessage {
    let mut m = ControlMessage::new(kind);
    m.segment_id = Some(seg);
    m
}

#[test]
fn published_messages_stream_with_ids_and_acks_report_the_round_trip() {
    let (hub, rec, addr) = serve(HubConfig::default());
    let mut sse = SseClient::open(addr, None);
    let sent: Vec<ControlMessage> = (0..3)
        .map(|i| message(control::TYPE_SPEECH_START, 10 + i))
        .collect();
    for m in &sent {
        hub.publish(m.clone());
    }
    let got = sse.until(3, Duration::from_secs(10)).to_vec();
    for (m, (_, g)) in sent.iter().zip(&got) {
        assert_eq!(g, m);
        let (status, body) = post(
            addr,
            "/api/control/ack",
            control::ack_json(&m.id).as_bytes(),
        );
        assert_eq!(status, 204, "{body}");
    }
    let ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    wait_until("3 acks", Duration::from_secs(5), || {
        rec.acked.lock().unwrap().len() == 3
    });
    for (id, rtt, retries) in rec.acked.lock().unwrap().iter() {
        assert!(sent.iter().any(|m| &m.id == id));
        // Acked well before the first retry could have made it 1 (unless the machine stalled).
        assert!(
            *retries <= 1 && *rtt > Duration::ZERO,
            "{id} {rtt:?} {retries}"
        );
    }
    assert_eq!(hub.pending(), 0);
    // A second ack of the same id is accepted and ignored.
    let (status, _) = post(
        addr,
        "/api/control/ack",
        control::ack_json(&sent[0].id).as_bytes(),
    );
    assert_eq!(status, 204);
    assert_eq!(rec.acked.lock().unwrap().len(), 3);
}

#[test]
fn last_event_id_resumes_after_the_events_a_client_missed() {
    let (hub, _rec, addr) = serve(HubConfig::default());
    let mut first = SseClient::open(addr, None);
    let sent: Vec<ControlMessage> = (0..4)
        .map(|i| message(control::TYPE_SPEECH_END, 20 + i))
        .collect();
    for m in &sent[..2] {
        hub.publish(m.clone());
    }
    let seen = first.until(2, Duration::from_secs(10)).to_vec();
    let last_id = seen[1].0;
    drop(first);
    // Published while the client is away.
    for m in &sent[2..] {
        hub.publish(m.clone());
    }
    let mut again = SseClient::open(addr, Some(last_id));
    let resumed = again.until(2, Duration::from_secs(10)).to_vec();
    assert_eq!(resumed[0].1, sent[2]);
    assert_eq!(resumed[1].1, sent[3]);
    assert!(resumed.iter().all(|(id, _)| *id > last_id));
}

#[test]
fn unacked_messages_are_sent_three_more_times_then_undelivered() {
    let (hub, rec, addr) = serve(HubConfig::default());
    let mut sse = SseClient::open(addr, None);
    let m = message(control::TYPE_SPEECH_CANCEL, 30);
    let t0 = Instant::now();
    hub.publish(m.clone());
    wait_until("undelivered", Duration::from_secs(10), || {
        !rec.undelivered.lock().unwrap().is_empty()
    });
    assert!(t0.elapsed() >= 4 * control::ACK_TIMEOUT);
    assert_eq!(
        rec.undelivered.lock().unwrap().as_slice(),
        &[(m.id.clone(), control::MAX_RETRIES + 1)]
    );
    // The client saw the message 4 times: same message id, new SSE ids.
    let got = sse.until(4, Duration::from_secs(10)).to_vec();
    assert!(got.iter().all(|(_, g)| g == &m));
    let mut ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 4);
    assert_eq!(hub.pending(), 0);
    assert!(rec.acked.lock().unwrap().is_empty());
}

#[test]
fn inbound_messages_are_acked_and_delivered_once() {
    let (_hub, rec, addr) = serve(HubConfig::default());
    let mut m = ControlMessage::new(control::TYPE_INTERRUPT);
    m.stream = Some("browser".into());
    for _ in 0..3 {
        let (status, body) = post(addr, "/api/control", m.to_json().as_bytes());
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            control::parse(body.as_bytes()).unwrap(),
            control::Inbound::Ack(m.id.clone())
        );
    }
    assert_eq!(rec.received.lock().unwrap().as_slice(), &[m]);
}

#[test]
fn bad_input_and_floods_get_an_error_and_the_hub_goes_on() {
    let (hub, rec, addr) = serve(HubConfig {
        rate: 20.0,
        burst: 10.0,
    });
    let big = format!(
        r#"{{"id":"a","type":"x-big","payload":"{}"}}"#,
        "a".repeat(control::MAX_MESSAGE_BYTES)
    );
    let deep = format!(
        r#"{{"id":"a","type":"x-deep","payload":{}"#,
        "[".repeat(10_000)
    );
    let cases: [(&[u8], u16, &str); 6] = [
        (b"{not json", 400, "malformed"),
        (br#"{"id":"a","type":"shout"}"#, 422, "unknown-type"),
        (br#"{"id":"a","type":"speech-start"}"#, 422, "invalid"),
        (big.as_bytes(), 413, "too-large"),
        (deep.as_bytes(), 400, "too-deep"),
        (br#"{"ack":"a"}"#, 422, "invalid"),
    ];
    for (body, status, code) in cases {
        let (got, reply) = post(addr, "/api/control", body);
        assert_eq!(got, status, "{reply}");
        let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(v["error"], code, "{reply}");
    }
    let (got, _) = post(addr, "/api/control/ack", b"[[[");
    assert_eq!(got, 400);
    assert!(rec.received.lock().unwrap().is_empty());
    // A flood: the burst passes, then 429 with rate-limited.
    let mut limited = 0;
    for i in 0..40 {
        let m = message(control::TYPE_SPEECH_COMMIT, 40 + i);
        let (status, reply) = post(addr, "/api/control", m.to_json().as_bytes());
        if status == 429 {
            assert!(reply.contains("rate-limited"), "{reply}");
            limited += 1;
        } else {
            assert_eq!(status, 200, "{reply}");
        }
    }
    assert!(limited >= 10, "{limited} of 40 limited");
    assert!(hub.refused() >= 7 + limited);
    // The hub goes on: a message after the bucket refills, and the stream.
    let later = message(control::TYPE_SPEECH_END, 99);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _) = post(addr, "/api/control", later.to_json().as_bytes());
        if status == 200 {
            break;
        }
        assert_eq!(status, 429);
        assert!(Instant::now() < deadline, "the bucket never refilled");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(rec.received.lock().unwrap().contains(&later));
    let mut sse = SseClient::open(addr, None);
    let out = message(control::TYPE_SPEECH_START, 100);
    hub.publish(out.clone());
    assert_eq!(sse.until(1, Duration::from_secs(10))[0].1, out);
}
