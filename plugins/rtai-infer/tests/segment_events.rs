//! `segment-events`: with `immediate` a segment start that comes while the
//! previous segment's transcript is still being made leaves at once (barge-in);
//! with `in-order` it waits behind that transcript. The transcription peer is a
//! RunPod `/runsync` endpoint in the test that holds its reply until the test
//! releases it, so "while pending" is a fact, not a timing.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::audio;
use gst::glib;
use gst::prelude::*;
use gst_check::Harness;
use rtai_core::{SegmentEvent, SegmentIdMeta};

const AUDIO: &str = "audio/x-raw,format=S16LE,rate=16000,channels=1,layout=interleaved";

/// A one-job RunPod endpoint: reports the request when it has read it (the path),
/// answers `{"text": "held"}` when `release` is sent.
struct HeldRunpod {
    url: String,
    requested: mpsc::Receiver<String>,
    release: mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HeldRunpod {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (requested_tx, requested) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut length = 0usize;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                if header.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = header.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            requested_tx.send(path).unwrap();
            if release_rx.recv().is_err() {
                return;
            }
            let reply = r#"{"id":"held-1","status":"COMPLETED","output":{"text":"held"}}"#;
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            );
        });
        Self {
            url,
            requested,
            release,
            thread: Some(thread),
        }
    }
}

impl Drop for HeldRunpod {
    fn drop(&mut self) {
        let _ = self.release.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What leaves inferclient's src pad, in order: segment events and transcripts.
#[derive(Debug, Clone, PartialEq)]
enum Out {
    Start(u64),
    End(u64),
    Text(u64, String),
}

fn start(id: u64) -> gst::Event {
    SegmentEvent::Start {
        id,
        running_time: gst::ClockTime::from_mseconds(id * 1000),
        lookback: gst::ClockTime::ZERO,
    }
    .to_event()
}

fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstrtaiinfer::plugin_register_static().unwrap();
    });
}

fn poll(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "{what} not within 10 s");
        std::thread::yield_now();
    }
}

/// Segment 1 ends (its request held by the peer), segment 2 starts: returns what left
/// before the release, and everything once the transcript came.
fn run(mode: &str) -> (Vec<Out>, Vec<Out>) {
    init();
    let server = HeldRunpod::start();
    let element = gst::ElementFactory::make("inferclient").build().unwrap();
    for (k, v) in [
        ("protocol", "runpod"),
        ("url", server.url.as_str()),
        ("output", "text"),
        ("segment-events", mode),
    ] {
        element.set_property_from_str(k, v);
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let srcpad = element.static_pad("src").unwrap();
    let log = seen.clone();
    srcpad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            let out = match &info.data {
                Some(gst::PadProbeData::Buffer(b)) => Some(Out::Text(
                    SegmentIdMeta::get(b).unwrap_or(0),
                    String::from_utf8_lossy(&b.map_readable().unwrap()).into_owned(),
                )),
                Some(gst::PadProbeData::Event(e)) => match SegmentEvent::parse(e) {
                    Some(SegmentEvent::Start { id, .. }) => Some(Out::Start(id)),
                    Some(SegmentEvent::End { id }) => Some(Out::End(id)),
                    _ => None,
                },
                _ => None,
            };
            log.lock().unwrap().extend(out);
            gst::PadProbeReturn::Ok
        },
    );
    let mut h = Harness::with_element(&element, Some("sink"), Some("src"));
    h.set_src_caps(AUDIO.parse().unwrap());
    h.play();
    // The stream's start and segment out first (before them, segment events queue).
    poll("the stream's segment downstream", || {
        srcpad.sticky_event::<gst::event::Segment>(0).is_some()
    });

    h.push_event(start(1));
    for i in 0..30 {
        h.push(audio(i * 10, 1)).unwrap();
    }
    h.push_event(SegmentEvent::End { id: 1 }.to_event());
    let path = server
        .requested
        .recv_timeout(Duration::from_secs(10))
        .expect("segment 1's audio sent");
    assert!(path.starts_with("/runsync"), "{path}");
    // The next utterance starts while segment 1's transcript is held by the peer.
    h.push_event(start(2));
    h.push(audio(1000, 2)).unwrap();
    let before = seen.lock().unwrap().clone();

    server.release.send(()).unwrap();
    poll("segment 2's start and segment 1's transcript", || {
        let s = seen.lock().unwrap();
        s.contains(&Out::Start(2)) && s.iter().any(|o| matches!(o, Out::Text(..)))
    });
    let after = seen.lock().unwrap().clone();
    drop(h);
    drop(server);
    (before, after)
}

#[test]
fn immediate_segment_start_is_not_held_behind_a_pending_transcript() {
    let (before, after) = run("immediate");
    assert_eq!(
        before,
        [Out::Start(1), Out::End(1), Out::Start(2)],
        "start, end and the next start leave while the transcript is pending"
    );
    assert_eq!(
        after,
        [
            Out::Start(1),
            Out::End(1),
            Out::Start(2),
            Out::Text(1, "held".into())
        ],
        "the transcript comes after, with segment 1's id"
    );
}

#[test]
fn in_order_segment_start_waits_for_the_pending_transcript() {
    let (before, after) = run("in-order");
    assert!(
        before.iter().all(|o| *o == Out::Start(1)),
        "nothing past segment 1's start before the transcript: {before:?}"
    );
    assert_eq!(
        after,
        [
            Out::Start(1),
            Out::Text(1, "held".into()),
            Out::End(1),
            Out::Start(2)
        ]
    );
}

#[test]
fn segment_events_property() {
    init();
    let element = gst::ElementFactory::make("inferclient").build().unwrap();
    let pspec = element.find_property("segment-events").unwrap();
    assert!(pspec.flags().contains(gst::PARAM_FLAG_MUTABLE_READY));
    let nick = |v: &glib::Value| glib::EnumValue::from_value(v).unwrap().1.nick().to_string();
    assert_eq!(
        nick(pspec.default_value()),
        "in-order",
        "today's behaviour by default"
    );
    element.set_property_from_str("segment-events", "immediate");
    assert_eq!(nick(&element.property_value("segment-events")), "immediate");
}
