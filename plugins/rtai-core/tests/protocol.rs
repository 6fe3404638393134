use gst::prelude::*;
use rtai_core::protocol::*;

fn init() {
    gst::init().unwrap();
    SegmentIdMeta::register();
}

#[test]
fn segment_events_round_trip() {
    init();
    let events = [
        SegmentEvent::Start {
            id: 7,
            running_time: gst::ClockTime::from_mseconds(1234),
            lookback: gst::ClockTime::from_mseconds(200),
        },
        SegmentEvent::Commit { id: 7 },
        SegmentEvent::End { id: u64::MAX },
        SegmentEvent::Cancel {
            id: 9,
            reason: "no speech after 250 ms".into(),
        },
    ];
    for ev in events {
        let gst_event = ev.to_event();
        assert_eq!(
            SegmentEvent::parse(&gst_event),
            Some(ev.clone()),
            "{gst_event:?}"
        );
    }
}

#[test]
fn cancel_is_out_of_band_and_others_serialized() {
    init();
    let cancel = SegmentEvent::Cancel {
        id: 1,
        reason: String::new(),
    }
    .to_event();
    assert_eq!(cancel.type_(), gst::EventType::CustomDownstreamOob);
    assert!(!cancel.is_serialized());
    for ev in [SegmentEvent::Commit { id: 1 }, SegmentEvent::End { id: 1 }] {
        let e = ev.to_event();
        assert_eq!(e.type_(), gst::EventType::CustomDownstream);
        assert!(e.is_serialized());
    }
}

#[test]
fn malformed_and_foreign_structures_are_ignored() {
    init();
    let cases = [
        gst::Structure::builder("rtai-segment-start")
            .field("segment-id", 1u64)
            .build(), // missing fields
        gst::Structure::builder("rtai-segment-commit")
            .field("segment-id", "seven")
            .build(), // wrong type
        gst::Structure::builder("rtai-segment-commit")
            .field("segment-id", 7i32)
            .build(), // wrong int type
        gst::Structure::builder("rtai-segment-bogus")
            .field("segment-id", 7u64)
            .build(), // unknown kind
        gst::Structure::builder("GstForceKeyUnit")
            .field("all-headers", true)
            .build(), // someone else's
        gst::Structure::new_empty("rtai-segment-end"),
    ];
    for s in cases {
        assert_eq!(SegmentEvent::from_structure(&s), None, "{s}");
        assert_eq!(
            SegmentEvent::parse(&gst::event::CustomDownstream::new(s)),
            None
        );
    }
    assert_eq!(SegmentEvent::parse(&gst::event::Eos::new()), None);
    // A cancel without reason still parses: the reason is optional information.
    let s = gst::Structure::builder(EVENT_CANCEL)
        .field("segment-id", 3u64)
        .build();
    assert_eq!(
        SegmentEvent::from_structure(&s),
        Some(SegmentEvent::Cancel {
            id: 3,
            reason: String::new()
        })
    );
}

#[test]
fn cancel_ack_round_trips_through_a_bus_message() {
    init();
    let element = gst::ElementFactory::make("identity")
        .name("stage")
        .build()
        .unwrap();
    let ack = CancelAck {
        element: "stage".into(),
        id: 42,
        buffers_dropped: 5,
        requests_aborted: 1,
        latency: gst::ClockTime::from_useconds(350),
    };
    let msg = ack.to_message(&element);
    assert_eq!(
        msg.src().map(|s| s.name().to_string()).as_deref(),
        Some("stage")
    );
    assert_eq!(CancelAck::parse(&msg), Some(ack));
    let other = gst::message::Element::builder(
        gst::Structure::builder("cancel-ack")
            .field("segment-id", 1u64)
            .build(),
    )
    .build();
    assert_eq!(CancelAck::parse(&other), None);
    assert_eq!(CancelAck::parse(&gst::message::Eos::new()), None);
}

#[test]
fn segment_meta_survives_copies_and_can_be_replaced() {
    init();
    let mut buffer = gst::Buffer::with_size(16).unwrap();
    assert_eq!(SegmentIdMeta::get(&buffer), None);
    SegmentIdMeta::set(buffer.get_mut().unwrap(), 11);
    assert_eq!(SegmentIdMeta::get(&buffer), Some(11));
    SegmentIdMeta::set(buffer.get_mut().unwrap(), 12);
    assert_eq!(SegmentIdMeta::get(&buffer), Some(12));
    let copy = buffer.copy_deep().unwrap();
    assert_eq!(SegmentIdMeta::get(&copy), Some(12));
}

#[test]
fn cancel_tracker_drops_cancelled_buffers_and_is_bounded() {
    init();
    let mut tracker = CancelTracker::with_capacity(2);
    let mut buffer = gst::Buffer::new();
    SegmentIdMeta::set(buffer.get_mut().unwrap(), 1);
    assert!(!tracker.should_drop(&buffer));
    assert!(tracker.cancel(1));
    assert!(!tracker.cancel(1));
    assert!(tracker.should_drop(&buffer));
    assert!(
        !tracker.should_drop(&gst::Buffer::new()),
        "untagged buffers always pass"
    );
    tracker.cancel(2);
    tracker.cancel(3);
    assert!(
        !tracker.is_cancelled(1),
        "oldest id forgotten past capacity"
    );
    assert!(tracker.is_cancelled(2) && tracker.is_cancelled(3));
}

#[test]
fn segment_id_bases_differ_and_ids_stay_exact_in_json() {
    use rtai_core::protocol::{SEGMENT_SEQ_BITS, new_segment_id_base};
    let bases: Vec<u64> = (0..10_000).map(|_| new_segment_id_base()).collect();
    let mut unique = bases.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), bases.len(), "every stream gets its own base");
    for base in bases {
        assert_eq!(
            base & ((1 << SEGMENT_SEQ_BITS) - 1),
            0,
            "the low bits are the sequence"
        );
        assert!(base > 0, "never the legacy range 1, 2, 3...");
        let last = base | u32::MAX as u64;
        assert!(last < 1 << 53, "{last} is not exact as a JavaScript number");
    }
}

#[test]
fn segment_meta_carries_probability_and_level() {
    init();
    let mut buffer = gst::Buffer::new();
    SegmentIdMeta::set_voice(buffer.get_mut().unwrap(), 0.9, -20.0);
    assert_eq!(
        SegmentIdMeta::voice(&buffer),
        None,
        "no meta, nothing added"
    );
    SegmentIdMeta::set(buffer.get_mut().unwrap(), 5);
    SegmentIdMeta::set_voice(buffer.get_mut().unwrap(), 0.9, -20.0);
    assert_eq!(SegmentIdMeta::voice(&buffer), Some((0.9, -20.0)));
    assert_eq!(SegmentIdMeta::get(&buffer), Some(5));
}
