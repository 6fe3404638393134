//! Control events across grpcsink → grpcsrc with acks (issue 19): each control
//! event is acked back upstream (`control-ack` with the round trip), lost acks
//! are retried and the receiver pushes each event once, three lost retries end
//! in a `control-undelivered` warning naming the message, and a receiver
//! restarted mid-stream loses no control message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use rtai_core::SegmentEvent;
use rtai_core::control::{self, ControlAckInfo, ControlMessage};

fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstrtaigrpc::plugin_register_static().unwrap();
    });
}

/// Control events (their control ids) that passed the receiver's sink pad, in order.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

struct Receiver {
    pipeline: gst::Pipeline,
    src: gst::Element,
    seen: Seen,
}

impl Receiver {
    fn start(listen: &str, props: &str) -> Result<Receiver, gst::StateChangeError> {
        init();
        let pipeline = gst::parse::launch(&format!(
            "grpcsrc name=src listen={listen} {props} ! fakesink name=sink sync=false"
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let src = pipeline.by_name("src").unwrap();
        let seen: Seen = Arc::default();
        let out = seen.clone();
        let pad = pipeline
            .by_name("sink")
            .unwrap()
            .static_pad("sink")
            .unwrap();
        pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
            if let Some(gst::PadProbeData::Event(e)) = &info.data
                && let Some(m) = ControlMessage::from_event(e, None)
            {
                out.lock().unwrap().push((m.kind, m.id));
            }
            gst::PadProbeReturn::Ok
        });
        if let Err(e) = pipeline.set_state(gst::State::Playing) {
            let _ = pipeline.set_state(gst::State::Null);
            return Err(e);
        }
        Ok(Receiver {
            pipeline,
            src,
            seen,
        })
    }

    fn port(&self) -> u32 {
        self.src.property::<u32>("bound-port")
    }

    fn stat(&self, field: &str) -> u64 {
        self.src
            .property::<gst::Structure>("stats")
            .get::<u64>(field)
            .unwrap()
    }

    fn seen(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

struct Sender {
    pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
}

impl Sender {
    fn start(port: u32) -> Sender {
        let pipeline = gst::parse::launch(&format!(
            "appsrc name=src format=time caps=text/x-raw,format=utf8 \
             ! grpcsink name=sink uri=http://127.0.0.1:{port} stream-id=mic"
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let appsrc = pipeline
            .by_name("src")
            .unwrap()
            .downcast::<gst_app::AppSrc>()
            .unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let s = Sender { pipeline, appsrc };
        s.push(0);
        s
    }

    fn push(&self, i: u64) {
        let mut b = gst::Buffer::from_slice(format!("{i:04}").into_bytes());
        b.get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_mseconds(10 * i));
        self.appsrc.push_buffer(b).unwrap();
    }

    /// Sends `msg` into the sender pipeline as its event; returns its id.
    fn send(&self, msg: &ControlMessage) -> String {
        assert!(self.appsrc.send_event(msg.to_event()));
        msg.id.clone()
    }

    /// Collects `control-ack` messages and `control-undelivered` warnings until
    /// `done` holds for what was collected, or panics at the deadline.
    fn collect(
        &self,
        within: Duration,
        mut done: impl FnMut(&HashMap<String, ControlAckInfo>, &HashMap<String, u32>) -> bool,
    ) -> (HashMap<String, ControlAckInfo>, HashMap<String, u32>) {
        let bus = self.pipeline.bus().unwrap();
        let deadline = Instant::now() + within;
        let (mut acks, mut undelivered) = (HashMap::new(), HashMap::new());
        while !done(&acks, &undelivered) {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("timed out: acks {acks:?}, undelivered {undelivered:?}"));
            let Some(msg) = bus.timed_pop(gst::ClockTime::from_nseconds(left.as_nanos() as u64))
            else {
                continue;
            };
            match msg.view() {
                gst::MessageView::Element(_) => {
                    if let Some(ack) = ControlAckInfo::parse(&msg) {
                        assert!(
                            acks.insert(ack.id.clone(), ack).is_none(),
                            "one control-ack per message"
                        );
                    }
                }
                gst::MessageView::Warning(w) => {
                    if let Some(d) = w.details()
                        && d.name() == control::MESSAGE_CONTROL_UNDELIVERED
                    {
                        let id = d.get::<String>("id").unwrap();
                        let attempts = d.get::<u32>("attempts").unwrap();
                        assert!(undelivered.insert(id, attempts).is_none());
                    }
                }
                gst::MessageView::Error(e) => panic!("sender error: {} {:?}", e.error(), e.debug()),
                _ => {}
            }
        }
        (acks, undelivered)
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn segment_messages(seg: u64) -> Vec<ControlMessage> {
    let mut out: Vec<ControlMessage> = [
        SegmentEvent::Start {
            id: seg,
            running_time: gst::ClockTime::from_mseconds(10),
            lookback: gst::ClockTime::ZERO,
        },
        SegmentEvent::Commit { id: seg },
        SegmentEvent::End { id: seg },
        SegmentEvent::Cancel {
            id: seg + 1,
            reason: "click".into(),
        },
    ]
    .iter()
    .map(|ev| ControlMessage::from_segment_event(ev, Some("mic")))
    .collect();
    let mut custom = ControlMessage::new("x-transcript");
    custom.payload = Some(serde_json::json!({"text": "hello"}));
    out.push(custom);
    out
}

/// Each (type, id) exactly once, whatever the order (the cancel is out of band).
fn assert_once(seen: &[(String, String)], sent: &[ControlMessage]) {
    let mut got = seen.to_vec();
    let mut want: Vec<(String, String)> = sent
        .iter()
        .map(|m| (m.kind.clone(), m.id.clone()))
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn control_events_are_acked_upstream_with_their_round_trip() {
    let rx = Receiver::start("127.0.0.1:0", "").unwrap();
    let tx = Sender::start(rx.port());
    let sent = segment_messages(5 << 32 | 1);
    for (i, m) in sent.iter().enumerate() {
        tx.send(m);
        tx.push(i as u64 + 1);
    }
    let (acks, undelivered) = tx.collect(Duration::from_secs(20), |a, _| a.len() == sent.len());
    assert!(undelivered.is_empty());
    for m in &sent {
        let ack = &acks[&m.id];
        assert_eq!(
            (ack.kind.as_str(), ack.transport.as_str()),
            (m.kind.as_str(), "grpc")
        );
        assert_eq!(ack.retries, 0, "{ack:?}");
        assert!(ack.round_trip > Duration::ZERO && ack.round_trip < Duration::from_secs(5));
    }
    assert_once(&rx.seen(), &sent);
    assert_eq!(rx.stat("control-acks"), sent.len() as u64);
    assert_eq!(rx.stat("control-duplicates"), 0);
}

#[test]
fn dropped_acks_are_retried_and_the_receiver_pushes_each_event_once() {
    let rx = Receiver::start("127.0.0.1:0", "drop-control-acks=2").unwrap();
    let tx = Sender::start(rx.port());
    let sent = segment_messages(6 << 32 | 1);
    for (i, m) in sent.iter().enumerate() {
        tx.send(m);
        tx.push(i as u64 + 1);
    }
    let (acks, undelivered) = tx.collect(Duration::from_secs(20), |a, _| a.len() == sent.len());
    assert!(undelivered.is_empty());
    for m in &sent {
        let ack = &acks[&m.id];
        // Two acks lost: the second retry's ack comes back, after two 50 ms timeouts.
        assert_eq!(ack.retries, 2, "{ack:?}");
        assert!(ack.round_trip >= 2 * control::ACK_TIMEOUT, "{ack:?}");
    }
    assert_once(&rx.seen(), &sent);
    let n = sent.len() as u64;
    assert_eq!(rx.stat("control-acks-dropped"), 2 * n);
    assert_eq!(rx.stat("control-duplicates"), 2 * n);
    assert_eq!(rx.stat("control-acks"), n);
}

#[test]
fn three_lost_retries_post_control_undelivered_with_the_message_id() {
    let rx = Receiver::start("127.0.0.1:0", "drop-control-acks=100").unwrap();
    let tx = Sender::start(rx.port());
    let sent = segment_messages(7 << 32 | 1);
    let t0 = Instant::now();
    for m in &sent {
        tx.send(m);
    }
    tx.push(1);
    let (acks, undelivered) = tx.collect(Duration::from_secs(20), |_, u| u.len() == sent.len());
    // 1 send + 3 retries, 50 ms apart, then the 4th timeout.
    assert!(t0.elapsed() >= 4 * control::ACK_TIMEOUT);
    assert!(acks.is_empty());
    for m in &sent {
        assert_eq!(
            undelivered.get(&m.id),
            Some(&(control::MAX_RETRIES + 1)),
            "{}",
            m.id
        );
    }
    // Delivered once all the same (only the acks were lost).
    assert_once(&rx.seen(), &sent);
    assert_eq!(rx.stat("control-duplicates"), 3 * sent.len() as u64);
    let sink = tx.pipeline.by_name("sink").unwrap();
    let st = sink.property::<gst::Structure>("stats");
    assert_eq!(
        st.get::<u64>("control-undelivered").unwrap(),
        sent.len() as u64
    );
    assert_eq!(st.get::<u64>("control-pending").unwrap(), 0);
}

#[test]
fn a_restarted_receiver_loses_no_control_message() {
    let a = Receiver::start("127.0.0.1:0", "").unwrap();
    let port = a.port();
    let tx = Sender::start(port);
    let before = ControlMessage::from_segment_event(
        &SegmentEvent::Start {
            id: 8 << 32 | 1,
            running_time: gst::ClockTime::ZERO,
            lookback: gst::ClockTime::ZERO,
        },
        Some("mic"),
    );
    tx.send(&before);
    tx.push(1);
    tx.collect(Duration::from_secs(20), |acks, _| {
        acks.contains_key(&before.id)
    });
    assert_once(&a.seen(), std::slice::from_ref(&before));
    // The receiver goes away; control events are sent while nobody listens.
    drop(a);
    let during = vec![
        ControlMessage::from_segment_event(
            &SegmentEvent::Cancel {
                id: 8 << 32 | 1,
                reason: "barge-in".into(),
            },
            Some("mic"),
        ),
        ControlMessage::from_segment_event(
            &SegmentEvent::Start {
                id: 8 << 32 | 2,
                running_time: gst::ClockTime::from_mseconds(20),
                lookback: gst::ClockTime::ZERO,
            },
            Some("mic"),
        ),
    ];
    for m in &during {
        tx.send(m);
    }
    tx.push(2);
    // A new receiver process on the same port (restarted).
    let deadline = Instant::now() + Duration::from_secs(10);
    let b = loop {
        match Receiver::start(&format!("127.0.0.1:{port}"), "") {
            Ok(b) => break b,
            Err(e) => {
                assert!(Instant::now() < deadline, "port {port} not free again: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    let (acks, undelivered) = tx.collect(Duration::from_secs(20), |acks, _| {
        during.iter().all(|m| acks.contains_key(&m.id))
    });
    assert!(undelivered.is_empty(), "{undelivered:?}");
    for m in &during {
        assert_eq!(acks[&m.id].transport, "grpc");
    }
    assert_once(&b.seen(), &during);
}

/// A control event with nothing after it is acked at once: the receiver's
/// accepted socket has TCP_NODELAY (without it Nagle held the ack until the
/// sender's next packet, 40 ms or more with nothing else to send).
#[test]
fn a_lone_control_event_is_acked_without_waiting_for_more_traffic() {
    let rx = Receiver::start("127.0.0.1:0", "").unwrap();
    let tx = Sender::start(rx.port());
    let mut round_trips = Vec::new();
    for i in 0..5u64 {
        let m = ControlMessage::from_segment_event(&SegmentEvent::End { id: 10 << 32 | i }, None);
        tx.send(&m);
        let (acks, _) = tx.collect(Duration::from_secs(20), |a, _| a.contains_key(&m.id));
        assert_eq!(acks[&m.id].retries, 0);
        round_trips.push(acks[&m.id].round_trip);
    }
    round_trips.sort();
    assert!(
        round_trips[2] < Duration::from_millis(30),
        "median round trip {:?}",
        round_trips[2]
    );
}
