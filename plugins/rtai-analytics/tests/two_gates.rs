//! Two specvadgates feeding one analyticssink: each gate numbers its segments
//! from 1, so their ids differ only in the per-stream tag that
//! `rtai_core::protocol::new_segment_id_base` gives each gate. A cancel from
//! one gate must not drop the other gate's committed speech, whether the gates
//! reach the sink on their own pads or funnelled into one.

mod common;

use common::*;
use rtai_core::SegmentEvent;

fn of_type<'a>(events: &'a [serde_json::Value], t: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["type"] == t).collect()
}

/// Gate A: segment `a` (1.0–2.0 s) committed with a transcript. Gate B: segment
/// `b` (1.2–1.5 s) opened and cancelled, interleaved with A's audio. `pad_of`
/// says which of the rig's audio pads each gate uses (the text pad is last).
fn two_gates(a: u64, b: u64, pad_of: [usize; 2], rig: &Rig) -> Vec<serde_json::Value> {
    let text_pad = rig.srcs.len() - 1;
    let start = |id: u64, ms: u64| {
        SegmentEvent::Start {
            id,
            running_time: gst::ClockTime::from_mseconds(ms),
            lookback: gst::ClockTime::ZERO,
        }
        .to_event()
    };
    rig.event(pad_of[0], start(a, 1000));
    for n in 100..200u64 {
        match n {
            120 => rig.event(pad_of[1], start(b, 1200)),
            125 => rig.event(pad_of[0], SegmentEvent::Commit { id: a }.to_event()),
            150 => rig.event(
                pad_of[1],
                SegmentEvent::Cancel {
                    id: b,
                    reason: "click".into(),
                }
                .to_event(),
            ),
            _ => {}
        }
        rig.push(pad_of[0], audio_frame(n * 10 * MS, 0.3));
        if (120..150).contains(&n) && pad_of[1] != pad_of[0] {
            rig.push(pad_of[1], audio_frame(n * 10 * MS, 0.5));
        }
    }
    rig.event(pad_of[0], SegmentEvent::End { id: a }.to_event());
    rig.push(
        text_pad,
        text_buffer(2 * S, "call me back in ten minutes", Some(a)),
    );
    let events = rig.events();
    rig.eos();
    rig.stop();
    events
}

#[test]
fn two_gates_into_one_analyticssink_keep_their_segments_apart() {
    // Each gate's ids: its own tag above the same sequence numbers.
    let (tag_a, tag_b) = (
        rtai_core::protocol::new_segment_id_base(),
        rtai_core::protocol::new_segment_id_base(),
    );
    let (a, b) = (tag_a | 1, tag_b | 1);
    assert_ne!(a, b, "two gates' first segments have different ids");
    for (layout, pad_of, caps) in [
        ("own pads", [0, 1], &[AUDIO, AUDIO, TEXT][..]),
        ("one funnelled pad", [0, 0], &[AUDIO, TEXT][..]),
    ] {
        let rig = Rig::new(&[], caps);
        let events = two_gates(a, b, pad_of, &rig);
        let speech = of_type(&events, "speech");
        assert_eq!(speech.len(), 1, "{layout}: {events:#?}");
        assert_eq!(
            speech[0]["text"], "call me back in ten minutes",
            "{layout}: gate A's segment keeps its transcript"
        );
        assert_eq!(
            (speech[0]["start_ns"].as_u64(), speech[0]["end_ns"].as_u64()),
            (Some(S), Some(2 * S)),
            "{layout}"
        );
    }
}
