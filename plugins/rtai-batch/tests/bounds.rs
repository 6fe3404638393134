//! batcher's bounds and blocking: a merged batch is capped, all-zero limits are
//! refused, and overflow=block neither hides the waiting batch from a cancel
//! nor keeps upstream blocked after downstream has stopped.

use std::sync::mpsc;
use std::time::Duration;

use gst::prelude::*;
use gst_check::Harness;
use rtai_core::{CancelAck, SegmentEvent, SegmentIdMeta};

const AUDIO_CAPS: &str = "audio/x-raw,format=S16LE,layout=interleaved,rate=16000,channels=1";

fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstrtaibatch::plugin_register_static().unwrap();
    });
}

fn buffer(ms: u64, id: Option<u64>) -> gst::Buffer {
    let mut buffer = gst::Buffer::from_mut_slice(vec![0u8; 320]);
    let b = buffer.get_mut().unwrap();
    b.set_pts(gst::ClockTime::from_mseconds(ms));
    b.set_duration(gst::ClockTime::from_mseconds(10));
    if let Some(id) = id {
        SegmentIdMeta::set(b, id);
    }
    buffer
}

struct Fixture {
    h: Harness,
    bus: gst::Bus,
    /// Each batch that left: the PTS (ms) of its buffers.
    out: mpsc::Receiver<Vec<u64>>,
}

fn fixture(props: &[(&str, &str)]) -> Fixture {
    init();
    let mut builder = gst::ElementFactory::make("batcher");
    for (k, v) in props {
        builder = builder.property_from_str(k, v);
    }
    let element = builder.build().unwrap();
    let bus = gst::Bus::new();
    element.set_bus(Some(&bus));
    let (tx, out) = mpsc::channel();
    element.static_pad("src").unwrap().add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
        move |_, info| {
            let pts = |b: &gst::BufferRef| b.pts().unwrap().mseconds();
            let batch = match &info.data {
                Some(gst::PadProbeData::Buffer(b)) => vec![pts(b)],
                Some(gst::PadProbeData::BufferList(l)) => l.iter().map(pts).collect(),
                _ => return gst::PadProbeReturn::Ok,
            };
            let _ = tx.send(batch);
            gst::PadProbeReturn::Ok
        },
    );
    let mut h = Harness::with_element(&element, Some("sink"), Some("src"));
    h.set_src_caps_str(AUDIO_CAPS);
    Fixture { h, bus, out }
}

/// Holds the push thread in its next push; `rx` reports each arrival at the held pad.
fn hold(f: &Fixture) -> (gst::Pad, gst::PadProbeId, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel();
    let pad = f.h.element().unwrap().static_pad("src").unwrap();
    let probe = pad
        .add_probe(
            gst::PadProbeType::BLOCK | gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |_, _| {
                let _ = tx.send(());
                gst::PadProbeReturn::Ok
            },
        )
        .unwrap();
    (pad, probe, rx)
}

const WAIT: Duration = Duration::from_secs(10);

/// Pushes `buffer` from another thread (it may block); the receiver gets the flow.
fn push_in_thread(
    f: &Fixture,
    buffer: gst::Buffer,
) -> mpsc::Receiver<Result<gst::FlowSuccess, gst::FlowError>> {
    let sinkpad = f.h.element().unwrap().static_pad("sink").unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(sinkpad.chain(buffer));
    });
    rx
}

/// Waits until the batcher's chain is blocked for room: the batch it took out
/// of `pending` is no longer pending and the queue is full.
fn wait_until_blocked(f: &Fixture) {
    let element = f.h.element().unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let stats = element.property::<gst::Structure>("stats");
        if stats.get::<u32>("pending-buffers").unwrap() == 0
            && stats.get::<u64>("buffers-in").unwrap() == 3
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "chain never blocked: {stats}"
        );
        std::thread::yield_now();
    }
}

#[test]
fn overflow_merge_caps_the_merged_batch() {
    let f = fixture(&[
        ("max-batch-size", "1"),
        ("max-queue", "1"),
        ("timeout", "0"),
        ("overflow", "merge"),
    ]);
    let (pad, probe, held) = hold(&f);
    let mut h = f.h;
    assert_eq!(h.push(buffer(0, None)), Ok(gst::FlowSuccess::Ok));
    held.recv_timeout(WAIT).unwrap();
    for ms in [10, 20, 30, 40, 50] {
        assert_eq!(h.push(buffer(ms, None)), Ok(gst::FlowSuccess::Ok));
    }
    let stats = h.element().unwrap().property::<gst::Structure>("stats");
    pad.remove_probe(probe);
    assert_eq!(f.out.recv_timeout(WAIT).unwrap(), vec![0]);
    assert_eq!(
        f.out.recv_timeout(WAIT).unwrap(),
        vec![10, 20],
        "a merged batch holds at most max(max-queue, 2) batches"
    );
    assert_eq!(stats.get::<u64>("merged").unwrap(), 1, "{stats}");
    assert_eq!(stats.get::<u64>("dropped-newest").unwrap(), 3, "{stats}");
}

#[test]
fn all_zero_limits_are_refused_at_ready() {
    init();
    let element = gst::ElementFactory::make("batcher")
        .property("max-batch-size", 0u32)
        .property("max-batch-bytes", 0u64)
        .property("max-batch-duration", 0u64)
        .property("timeout", 0u32)
        .build()
        .unwrap();
    let bus = gst::Bus::new();
    element.set_bus(Some(&bus));
    assert!(element.set_state(gst::State::Ready).is_err());
    let msg = bus
        .pop_filtered(&[gst::MessageType::Error])
        .expect("an error message says why");
    let gst::MessageView::Error(err) = msg.view() else {
        unreachable!()
    };
    let text = format!("{} {:?}", err.error(), err.debug());
    assert!(text.contains("max-batch-size"), "{text}");
    assert!(text.contains("timeout"), "{text}");
    // One limit is enough.
    element.set_state(gst::State::Null).unwrap();
    element.set_property("timeout", 50u32);
    assert!(element.set_state(gst::State::Ready).is_ok());
    element.set_state(gst::State::Null).unwrap();
}

#[test]
fn overflow_block_the_waiting_batch_is_cancelled_and_counted() {
    let f = fixture(&[
        ("max-batch-size", "1"),
        ("max-queue", "1"),
        ("timeout", "0"),
        ("overflow", "block"),
    ]);
    let (pad, probe, held) = hold(&f);
    let mut h = f.h;
    assert_eq!(h.push(buffer(0, Some(7))), Ok(gst::FlowSuccess::Ok));
    held.recv_timeout(WAIT).unwrap();
    assert_eq!(h.push(buffer(10, Some(7))), Ok(gst::FlowSuccess::Ok));
    let f = Fixture {
        h,
        bus: f.bus,
        out: f.out,
    };
    let blocked = push_in_thread(&f, buffer(20, Some(7)));
    wait_until_blocked(&f);
    let mut h = f.h;
    assert!(
        h.push_event(
            SegmentEvent::Cancel {
                id: 7,
                reason: "test".into()
            }
            .to_event()
        )
    );
    let ack = f
        .bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(10),
            &[gst::MessageType::Element],
        )
        .and_then(|m| CancelAck::parse(&m))
        .expect("cancel-ack");
    assert_eq!(ack.buffers_dropped, 2, "the queued and the waiting batch");
    assert_eq!(
        blocked.recv_timeout(WAIT).unwrap(),
        Ok(gst::FlowSuccess::Ok)
    );
    assert_eq!(h.push(buffer(30, Some(8))), Ok(gst::FlowSuccess::Ok));
    pad.remove_probe(probe);
    assert!(h.push_event(gst::event::Eos::new()));
    let mut seen = Vec::new();
    while let Ok(b) = f.out.recv_timeout(Duration::from_secs(2)) {
        seen.extend(b);
        if seen.contains(&30) {
            break;
        }
    }
    assert_eq!(seen, vec![0, 30], "nothing of segment 7 after the cancel");
}

#[test]
fn overflow_block_ends_when_downstream_returns_eos_or_an_error() {
    for flow in [
        gst::FlowError::Eos,
        gst::FlowError::Error,
        gst::FlowError::NotLinked,
    ] {
        let f = fixture(&[
            ("max-batch-size", "1"),
            ("max-queue", "1"),
            ("timeout", "0"),
            ("overflow", "block"),
        ]);
        let (pad, probe, held) = hold(&f);
        let mut h = f.h;
        assert_eq!(h.push(buffer(0, None)), Ok(gst::FlowSuccess::Ok));
        held.recv_timeout(WAIT).unwrap();
        assert_eq!(h.push(buffer(10, None)), Ok(gst::FlowSuccess::Ok));
        let f = Fixture {
            h,
            bus: f.bus,
            out: f.out,
        };
        let blocked = push_in_thread(&f, buffer(20, None));
        wait_until_blocked(&f);
        // Downstream stops: the held push returns `flow`.
        pad.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |_, info| {
                drop(info.take_buffer());
                drop(info.take_buffer_list());
                info.flow_res = Err(flow);
                gst::PadProbeReturn::Handled
            },
        );
        pad.remove_probe(probe);
        assert_eq!(
            blocked.recv_timeout(WAIT).expect("upstream is released"),
            Err(flow),
            "{flow:?}"
        );
    }
}

/// A chain blocked for room (`overflow=block`) with its first batch held in the push.
fn blocked_chain() -> (
    Fixture,
    gst::Pad,
    gst::PadProbeId,
    mpsc::Receiver<Result<gst::FlowSuccess, gst::FlowError>>,
) {
    let f = fixture(&[
        ("max-batch-size", "1"),
        ("max-queue", "1"),
        ("timeout", "0"),
        ("overflow", "block"),
    ]);
    let (pad, probe, held) = hold(&f);
    let mut h = f.h;
    assert_eq!(h.push(buffer(0, None)), Ok(gst::FlowSuccess::Ok));
    held.recv_timeout(WAIT).unwrap();
    assert_eq!(h.push(buffer(10, None)), Ok(gst::FlowSuccess::Ok));
    let f = Fixture {
        h,
        bus: f.bus,
        out: f.out,
    };
    let blocked = push_in_thread(&f, buffer(20, None));
    wait_until_blocked(&f);
    (f, pad, probe, blocked)
}

#[test]
fn overflow_block_ends_when_downstream_or_the_pad_flushes() {
    // Downstream returns FLUSHING (a seek or a stop downstream): upstream is released with it.
    let (f, pad, probe, blocked) = blocked_chain();
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
        |_, info| {
            drop(info.take_buffer());
            drop(info.take_buffer_list());
            info.flow_res = Err(gst::FlowError::Flushing);
            gst::PadProbeReturn::Handled
        },
    );
    pad.remove_probe(probe);
    assert_eq!(
        blocked.recv_timeout(WAIT).expect("upstream is released"),
        Err(gst::FlowError::Flushing)
    );
    drop(f);

    // A FLUSH_START from upstream while the chain waits: the chain returns FLUSHING at once,
    // and after FLUSH_STOP the batcher takes buffers again.
    let (f, pad, probe, blocked) = blocked_chain();
    let mut h = f.h;
    assert!(h.push_event(gst::event::FlushStart::new()));
    assert_eq!(
        blocked.recv_timeout(WAIT).expect("upstream is released"),
        Err(gst::FlowError::Flushing)
    );
    pad.remove_probe(probe);
    assert!(h.push_event(gst::event::FlushStop::new(true)));
    h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
        gst::ClockTime,
    >::new()));
    assert_eq!(h.push(buffer(30, None)), Ok(gst::FlowSuccess::Ok));
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let batch = f
            .out
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("a buffer after the flush leaves");
        if batch.contains(&30) {
            break;
        }
    }
}
