//! batcher through gst_check::Harness: each flush condition, each merge mode,
//! each overflow policy, cancel, EOS, caps changes and flushing.

use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use std::str::FromStr;

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

/// What left the batcher's source pad, in order.
#[derive(Debug, Clone, PartialEq)]
enum Out {
    /// One pushed batch: the PTS (ms) of each buffer in it.
    Batch(Vec<u64>),
    Caps(i32),
    Eos,
    Cancel(u64),
}

struct Fixture {
    h: Harness,
    out: Arc<Mutex<Vec<Out>>>,
    bus: gst::Bus,
}

fn pts_ms(b: &gst::BufferRef) -> u64 {
    b.pts().map_or(u64::MAX, |p| p.mseconds())
}

fn fixture(props: &[(&str, &str)], caps: &str) -> Fixture {
    init();
    let mut builder = gst::ElementFactory::make("batcher");
    for (k, v) in props {
        builder = builder.property_from_str(k, v);
    }
    let element = builder.build().unwrap();
    let bus = gst::Bus::new();
    element.set_bus(Some(&bus));
    let out: Arc<Mutex<Vec<Out>>> = Arc::default();
    let record = out.clone();
    element.static_pad("src").unwrap().add_probe(
        gst::PadProbeType::BUFFER
            | gst::PadProbeType::BUFFER_LIST
            | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            let mut out = record.lock().unwrap();
            match &info.data {
                Some(gst::PadProbeData::Buffer(b)) => out.push(Out::Batch(vec![pts_ms(b)])),
                Some(gst::PadProbeData::BufferList(l)) => {
                    out.push(Out::Batch(l.iter().map(pts_ms).collect()))
                }
                Some(gst::PadProbeData::Event(e)) => match e.view() {
                    gst::EventView::Caps(c) => out.push(Out::Caps(
                        c.caps()
                            .structure(0)
                            .and_then(|s| s.get::<i32>("rate").ok())
                            .unwrap_or(0),
                    )),
                    gst::EventView::Eos(_) => out.push(Out::Eos),
                    _ => {
                        if let Some(SegmentEvent::Cancel { id, .. }) = SegmentEvent::parse(e) {
                            out.push(Out::Cancel(id));
                        }
                    }
                },
                _ => {}
            }
            gst::PadProbeReturn::Ok
        },
    );
    let mut h = Harness::with_element(&element, Some("sink"), Some("src"));
    h.set_src_caps_str(caps);
    Fixture { h, out, bus }
}

fn buffer(ms: u64, len: usize) -> gst::Buffer {
    let mut buffer = gst::Buffer::from_mut_slice(vec![(ms % 251) as u8; len]);
    let b = buffer.get_mut().unwrap();
    b.set_pts(gst::ClockTime::from_mseconds(ms));
    b.set_duration(gst::ClockTime::from_mseconds(10));
    buffer
}

fn tagged(ms: u64, id: u64) -> gst::Buffer {
    let mut b = buffer(ms, 320);
    SegmentIdMeta::set(b.get_mut().unwrap(), id);
    b
}

impl Fixture {
    fn push_all(&mut self, times: &[u64], len: usize) {
        for &ms in times {
            assert_eq!(self.h.push(buffer(ms, len)), Ok(gst::FlowSuccess::Ok));
        }
    }

    /// Sends EOS and waits until it has left the batcher (everything before it has too).
    fn finish(&mut self) -> Vec<Out> {
        assert!(self.h.push_event(gst::event::Eos::new()));
        loop {
            let ev = self.h.pull_event().expect("EOS leaves the batcher");
            if ev.type_() == gst::EventType::Eos {
                break;
            }
        }
        self.out
            .lock()
            .unwrap()
            .iter()
            .filter(|o| !matches!(o, Out::Caps(_)))
            .cloned()
            .collect()
    }

    fn stats(&self) -> gst::Structure {
        self.h
            .element()
            .unwrap()
            .property::<gst::Structure>("stats")
    }
}

fn batches(v: &[&[u64]]) -> Vec<Out> {
    v.iter().map(|b| Out::Batch(b.to_vec())).collect()
}

#[test]
fn max_batch_size_flushes_and_eos_pushes_the_partial_batch() {
    let mut f = fixture(&[("max-batch-size", "3"), ("timeout", "0")], AUDIO_CAPS);
    f.push_all(&[0, 10, 20, 30, 40, 50, 60], 320);
    let mut expected = batches(&[&[0, 10, 20], &[30, 40, 50], &[60]]);
    expected.push(Out::Eos);
    assert_eq!(f.finish(), expected, "nothing lost at EOS, order kept");
    let stats = f.stats();
    assert_eq!(stats.get::<u64>("batches").unwrap(), 3);
    assert_eq!(stats.get::<u64>("buffers-out").unwrap(), 7);
    assert_eq!(stats.get::<u64>("max-batch-size").unwrap(), 3);
}

#[test]
fn max_batch_bytes_flushes() {
    let mut f = fixture(
        &[
            ("max-batch-size", "0"),
            ("max-batch-bytes", "250"),
            ("timeout", "0"),
        ],
        AUDIO_CAPS,
    );
    f.push_all(&[0, 10, 20, 30, 40], 100);
    let out = f.finish();
    assert_eq!(out[..2], batches(&[&[0, 10, 20], &[30, 40]])[..]);
}

#[test]
fn max_batch_duration_flushes_on_media_time() {
    let mut f = fixture(
        &[
            ("max-batch-size", "0"),
            ("max-batch-duration", "40000000"),
            ("timeout", "0"),
        ],
        AUDIO_CAPS,
    );
    f.push_all(&[0, 10, 20, 30, 40, 50], 320);
    let out = f.finish();
    assert_eq!(out[..2], batches(&[&[0, 10, 20, 30], &[40, 50]])[..]);
}

#[test]
fn timeout_flushes_on_wall_clock() {
    let mut f = fixture(&[("max-batch-size", "100"), ("timeout", "80")], AUDIO_CAPS);
    let pushed = Instant::now();
    f.push_all(&[0, 10], 320);
    let first = f.h.pull().expect("the timeout flushes the batch");
    let waited = pushed.elapsed();
    assert!(
        waited >= Duration::from_millis(80),
        "flushed after {waited:?}, before the timeout"
    );
    assert_eq!(pts_ms(&first), 0);
    assert_eq!(
        f.out
            .lock()
            .unwrap()
            .iter()
            .filter(|o| matches!(o, Out::Batch(_)))
            .cloned()
            .collect::<Vec<_>>(),
        batches(&[&[0, 10]])
    );
    let wait_p50 = f.stats().get::<u64>("wait-p50").unwrap();
    assert!(
        wait_p50 >= 70_000_000,
        "a buffer's wait is counted: {wait_p50} ns"
    );
}

#[test]
fn concat_audio_joins_samples_and_spans_the_timestamps() {
    let mut f = fixture(
        &[
            ("max-batch-size", "4"),
            ("merge", "concat-audio"),
            ("timeout", "0"),
        ],
        AUDIO_CAPS,
    );
    let mut expected = Vec::new();
    for (i, ms) in [0u64, 10, 20, 30].into_iter().enumerate() {
        let mut b = buffer(ms, 320);
        b.get_mut().unwrap().set_offset(i as u64 * 160);
        b.get_mut().unwrap().set_offset_end((i as u64 + 1) * 160);
        expected.extend(b.map_readable().unwrap().iter().copied());
        assert_eq!(f.h.push(b), Ok(gst::FlowSuccess::Ok));
    }
    let out = f.h.pull().unwrap();
    assert_eq!(
        out.map_readable().unwrap().as_slice(),
        expected.as_slice(),
        "samples appended, bit-exact"
    );
    assert_eq!(out.pts(), Some(gst::ClockTime::ZERO));
    assert_eq!(out.duration(), Some(gst::ClockTime::from_mseconds(40)));
    assert_eq!((out.offset(), out.offset_end()), (0, 640));
}

#[test]
fn concat_text_joins_with_the_separator_and_keeps_the_segment_id() {
    let mut f = fixture(
        &[
            ("max-batch-size", "3"),
            ("merge", "concat-text"),
            ("separator", " | "),
            ("timeout", "0"),
        ],
        "text/x-raw,format=utf8",
    );
    for (i, word) in ["turn", "the lights", "on"].iter().enumerate() {
        let mut b = gst::Buffer::from_slice(word.as_bytes().to_vec());
        let r = b.get_mut().unwrap();
        r.set_pts(gst::ClockTime::from_mseconds(100 * i as u64));
        r.set_duration(gst::ClockTime::from_mseconds(100));
        SegmentIdMeta::set(r, 9);
        assert_eq!(f.h.push(b), Ok(gst::FlowSuccess::Ok));
    }
    let out = f.h.pull().unwrap();
    assert_eq!(
        std::str::from_utf8(&out.map_readable().unwrap()).unwrap(),
        "turn | the lights | on"
    );
    assert_eq!(out.duration(), Some(gst::ClockTime::from_mseconds(300)));
    assert_eq!(SegmentIdMeta::get(&out), Some(9));
}

#[test]
fn keep_separate_pushes_one_buffer_list_per_batch() {
    let mut f = fixture(&[("max-batch-size", "2"), ("timeout", "0")], AUDIO_CAPS);
    let lists: Arc<Mutex<u32>> = Arc::default();
    let count = lists.clone();
    f.h.element().unwrap().static_pad("src").unwrap().add_probe(
        gst::PadProbeType::BUFFER_LIST,
        move |_, _| {
            *count.lock().unwrap() += 1;
            gst::PadProbeReturn::Ok
        },
    );
    f.push_all(&[0, 10, 20, 30], 320);
    f.finish();
    assert_eq!(
        *lists.lock().unwrap(),
        2,
        "each batch is one push_list call"
    );
}

#[test]
fn merge_mode_rejects_caps_it_cannot_join() {
    init();
    for (merge, caps) in [
        (
            "concat-audio",
            "video/x-raw,format=RGB,width=4,height=4,framerate=30/1",
        ),
        ("concat-text", AUDIO_CAPS),
    ] {
        let element = gst::ElementFactory::make("batcher")
            .property_from_str("merge", merge)
            .build()
            .unwrap();
        let bus = gst::Bus::new();
        element.set_bus(Some(&bus));
        let mut h = Harness::with_element(&element, Some("sink"), Some("src"));
        h.play();
        h.push_event(gst::event::StreamStart::new("s"));
        h.push_event(gst::event::Caps::new(&gst::Caps::from_str(caps).unwrap()));
        assert!(
            element.static_pad("sink").unwrap().current_caps().is_none(),
            "{merge} accepted {caps}"
        );
        let msg = bus
            .pop_filtered(&[gst::MessageType::Error])
            .expect("an error message explains the refusal");
        let gst::MessageView::Error(err) = msg.view() else {
            unreachable!()
        };
        assert!(err.error().to_string().contains(merge), "{}", err.error());
    }
}

/// Blocks the batcher's push thread in its next push; the receiver reports each
/// time a batch reaches the blocked pad. Remove the probe to release it.
fn hold_downstream(f: &Fixture) -> (gst::Pad, gst::PadProbeId, mpsc::Receiver<()>) {
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

/// max-batch-size 1, max-queue 1: batch 0 blocks in the push, batch 10 waits in
/// the queue, batch 20 overflows.
fn overflow_case(policy: &str) -> (Fixture, Vec<Out>) {
    let mut f = fixture(
        &[
            ("max-batch-size", "1"),
            ("max-queue", "1"),
            ("timeout", "0"),
            ("overflow", policy),
        ],
        AUDIO_CAPS,
    );
    let (pad, probe, rx) = hold_downstream(&f);
    f.push_all(&[0], 320);
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the first batch reaches the blocked pad");
    f.push_all(&[10, 20], 320);
    pad.remove_probe(probe);
    let out = f.finish();
    (f, out)
}

#[test]
fn overflow_drop_newest_drops_the_batch_that_does_not_fit() {
    let (f, out) = overflow_case("drop-newest");
    assert_eq!(out[..2], batches(&[&[0], &[10]])[..]);
    assert_eq!(f.stats().get::<u64>("dropped-newest").unwrap(), 1);
}

#[test]
fn overflow_drop_oldest_drops_the_waiting_batch() {
    let (f, out) = overflow_case("drop-oldest");
    assert_eq!(out[..2], batches(&[&[0], &[20]])[..]);
    assert_eq!(f.stats().get::<u64>("dropped-oldest").unwrap(), 1);
}

#[test]
fn overflow_merge_folds_into_the_waiting_batch() {
    let (f, out) = overflow_case("merge");
    assert_eq!(out[..2], batches(&[&[0], &[10, 20]])[..]);
    assert_eq!(f.stats().get::<u64>("merged").unwrap(), 1);
}

#[test]
fn overflow_block_holds_upstream_until_there_is_room() {
    let mut f = fixture(
        &[
            ("max-batch-size", "1"),
            ("max-queue", "1"),
            ("timeout", "0"),
            ("overflow", "block"),
        ],
        AUDIO_CAPS,
    );
    let (pad, probe, blocked_rx) = hold_downstream(&f);
    f.push_all(&[0], 320);
    blocked_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    f.push_all(&[10], 320);
    let sinkpad = f.h.element().unwrap().static_pad("sink").unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    let pusher = std::thread::spawn(move || {
        let flow = sinkpad.chain(buffer(20, 320));
        done_tx.send(flow).unwrap();
    });
    // Negative check: the third push must still be held back.
    assert!(
        done_rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "upstream was not held back"
    );
    assert_eq!(f.stats().get::<u32>("queue-depth").unwrap(), 1);
    pad.remove_probe(probe);
    assert_eq!(
        done_rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        Ok(gst::FlowSuccess::Ok)
    );
    pusher.join().unwrap();
    let out = f.finish();
    assert_eq!(
        out[..3],
        batches(&[&[0], &[10], &[20]])[..],
        "nothing dropped"
    );
}

#[test]
fn cancel_drops_the_pending_segment_and_acks() {
    let mut f = fixture(&[("max-batch-size", "10"), ("timeout", "0")], AUDIO_CAPS);
    let start = SegmentEvent::Start {
        id: 5,
        running_time: gst::ClockTime::ZERO,
        lookback: gst::ClockTime::ZERO,
    };
    assert!(f.h.push_event(start.to_event()));
    for ms in [0, 10, 20] {
        assert_eq!(f.h.push(tagged(ms, 5)), Ok(gst::FlowSuccess::Ok));
    }
    let cancel = SegmentEvent::Cancel {
        id: 5,
        reason: "test".into(),
    };
    assert!(f.h.push_event(cancel.to_event()));
    // Late buffers of the cancelled segment are dropped too; segment 6 passes.
    assert_eq!(f.h.push(tagged(30, 5)), Ok(gst::FlowSuccess::Ok));
    assert_eq!(f.h.push(tagged(40, 6)), Ok(gst::FlowSuccess::Ok));
    let ack = f
        .bus
        .pop_filtered(&[gst::MessageType::Element])
        .and_then(|m| CancelAck::parse(&m))
        .expect("cancel-ack posted");
    assert_eq!((ack.id, ack.buffers_dropped), (5, 3));
    let out = f.finish();
    assert_eq!(out, vec![Out::Cancel(5), Out::Batch(vec![40]), Out::Eos]);
    assert_eq!(f.stats().get::<u64>("dropped-cancelled").unwrap(), 4);
}

#[test]
fn cancel_drops_queued_batches_of_the_segment() {
    let mut f = fixture(
        &[
            ("max-batch-size", "1"),
            ("max-queue", "8"),
            ("timeout", "0"),
        ],
        AUDIO_CAPS,
    );
    let (pad, probe, rx) = hold_downstream(&f);
    assert_eq!(f.h.push(tagged(0, 1)), Ok(gst::FlowSuccess::Ok));
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    for ms in [10, 20, 30] {
        assert_eq!(f.h.push(tagged(ms, 2)), Ok(gst::FlowSuccess::Ok));
    }
    assert!(
        f.h.push_event(
            SegmentEvent::Cancel {
                id: 2,
                reason: "false start".into()
            }
            .to_event()
        )
    );
    pad.remove_probe(probe);
    let out = f.finish();
    assert_eq!(
        out,
        vec![Out::Cancel(2), Out::Batch(vec![0]), Out::Eos],
        "the cancel overtook the queue"
    );
}

#[test]
fn caps_change_mid_batch_flushes_under_the_old_caps() {
    let mut f = fixture(&[("max-batch-size", "10"), ("timeout", "0")], AUDIO_CAPS);
    f.push_all(&[0, 10], 320);
    f.h.set_src_caps_str("audio/x-raw,format=S16LE,layout=interleaved,rate=8000,channels=1");
    f.push_all(&[20], 160);
    f.finish();
    let out = f.out.lock().unwrap().clone();
    assert_eq!(
        out,
        vec![
            Out::Caps(16000),
            Out::Batch(vec![0, 10]),
            Out::Caps(8000),
            Out::Batch(vec![20]),
            Out::Eos
        ]
    );
}

#[test]
fn segment_end_commit_and_discont_close_a_batch() {
    let mut f = fixture(&[("max-batch-size", "10"), ("timeout", "0")], AUDIO_CAPS);
    assert_eq!(f.h.push(tagged(0, 3)), Ok(gst::FlowSuccess::Ok));
    assert!(f.h.push_event(SegmentEvent::Commit { id: 3 }.to_event()));
    assert_eq!(f.h.push(tagged(10, 3)), Ok(gst::FlowSuccess::Ok));
    assert!(f.h.push_event(SegmentEvent::End { id: 3 }.to_event()));
    f.push_all(&[20], 320);
    let mut discont = buffer(40, 320);
    discont
        .get_mut()
        .unwrap()
        .set_flags(gst::BufferFlags::DISCONT);
    assert_eq!(f.h.push(discont), Ok(gst::FlowSuccess::Ok));
    assert_eq!(f.h.push(tagged(50, 4)), Ok(gst::FlowSuccess::Ok));
    assert_eq!(
        f.finish(),
        vec![
            Out::Batch(vec![0]),
            Out::Batch(vec![10]),
            Out::Batch(vec![20]),
            Out::Batch(vec![40]),
            Out::Batch(vec![50]),
            Out::Eos
        ]
    );
}

#[test]
fn flush_clears_the_pending_batch() {
    let mut f = fixture(&[("max-batch-size", "10"), ("timeout", "0")], AUDIO_CAPS);
    f.push_all(&[0, 10], 320);
    assert!(f.h.push_event(gst::event::FlushStart::new()));
    assert!(f.h.push_event(gst::event::FlushStop::new(true)));
    f.h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
        gst::ClockTime,
    >::new()));
    f.push_all(&[100], 320);
    assert_eq!(f.finish(), vec![Out::Batch(vec![100]), Out::Eos]);
}

#[test]
fn latency_query_adds_the_timeout() {
    init();
    let pipeline =
        gst::parse::launch("audiotestsrc is-live=true ! batcher timeout=120 ! fakesink").unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(10),
        &[gst::MessageType::AsyncDone],
    )
    .expect("prerolls");
    let batcher = pipeline
        .downcast_ref::<gst::Bin>()
        .unwrap()
        .iterate_elements()
        .find(|e| e.factory().unwrap().name() == "batcher")
        .unwrap();
    let mut q = gst::query::Latency::new();
    assert!(batcher.static_pad("src").unwrap().query(&mut q));
    let (live, min, _) = q.result();
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(live);
    assert!(
        min >= gst::ClockTime::from_mseconds(120),
        "min latency {min} lacks the timeout"
    );
}

#[test]
fn adaptive_mode_shortens_the_wait_for_a_slow_stage() {
    // The downstream stage takes 60 ms per call; with a 100 ms budget a lone
    // buffer may wait at most ~40 ms instead of the 500 ms timeout.
    let mut f = fixture(
        &[
            ("max-batch-size", "100"),
            ("timeout", "500"),
            ("adaptive", "true"),
            ("latency-budget", "100"),
        ],
        AUDIO_CAPS,
    );
    f.h.element().unwrap().static_pad("src").unwrap().add_probe(
        gst::PadProbeType::BUFFER_LIST,
        |_, _| {
            std::thread::sleep(Duration::from_millis(60)); // the slow stage's per-call cost
            gst::PadProbeReturn::Ok
        },
    );
    f.push_all(&[0], 320);
    f.h.pull().unwrap(); // first call teaches the batcher the stage's cost
    let pushed = Instant::now();
    f.push_all(&[10], 320);
    f.h.pull().unwrap();
    let took = pushed.elapsed();
    assert!(
        took < Duration::from_millis(300),
        "waited {took:?}: the timeout was not shortened"
    );
}
