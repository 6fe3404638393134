//! specvadgate driven through gst_check::Harness and a real pipeline on
//! generated audio: low noise, a voiced harmonic signal, and a click.

use gst::prelude::*;
use gst_check::Harness;
use rtai_core::{SegmentEvent, SegmentIdMeta};

mod synth;
use synth::*;

/// The script: 0.5 s quiet, 1 s voiced, 1 s quiet, a 30 ms click, 1 s quiet.
fn script() -> Vec<(Sound, u64)> {
    [
        (Sound::Quiet, 50),
        (Sound::Voiced, 100),
        (Sound::Quiet, 100),
        (Sound::Click, 3),
        (Sound::Quiet, 100),
    ]
    .into_iter()
    .flat_map(|(s, n)| std::iter::repeat_n(s, n as usize))
    .enumerate()
    .map(|(i, s)| (s, i as u64))
    .collect()
}

fn harness(props: &[(&str, &str)]) -> Harness {
    init();
    let mut builder = gst::ElementFactory::make("specvadgate");
    for (k, v) in props {
        builder = builder.property_from_str(k, v);
    }
    let mut h = Harness::with_element(&builder.build().unwrap(), Some("sink"), Some("src"));
    h.set_src_caps_str("audio/x-raw,format=S16LE,layout=interleaved,rate=16000,channels=1");
    h
}

fn push_script(h: &mut Harness, frames: &[(Sound, u64)]) {
    let mut seed = 1;
    for (sound, n) in frames {
        assert_eq!(
            h.push(frame(*sound, *n, &mut seed)),
            Ok(gst::FlowSuccess::Ok)
        );
    }
}

fn protocol_events(h: &mut Harness) -> Vec<SegmentEvent> {
    let mut out = Vec::new();
    while let Some(ev) = h.try_pull_event() {
        if let Some(p) = SegmentEvent::parse(&ev) {
            out.push(p);
        }
    }
    out
}

/// A segment's number within its stream: the id's low 32 bits (the high bits
/// name the stream, docs/protocol.md).
fn seq(id: u64) -> u64 {
    id & 0xffff_ffff
}

fn kinds(events: &[SegmentEvent]) -> Vec<(&'static str, u64)> {
    events
        .iter()
        .map(|e| match e {
            SegmentEvent::Start { id, .. } => ("start", seq(*id)),
            SegmentEvent::Commit { id } => ("commit", seq(*id)),
            SegmentEvent::End { id } => ("end", seq(*id)),
            SegmentEvent::Cancel { id, .. } => ("cancel", seq(*id)),
        })
        .collect()
}

#[test]
fn speech_commits_and_click_is_cancelled() {
    let mut h = harness(&[]);
    push_script(&mut h, &script());
    let events = protocol_events(&mut h);
    assert_eq!(
        kinds(&events),
        vec![
            ("start", 1),
            ("commit", 1),
            ("end", 1),
            ("start", 2),
            ("cancel", 2)
        ]
    );
    // The start event carries the lookback: 200 ms before the first voiced frame at 0.5 s.
    match events[0] {
        SegmentEvent::Start {
            running_time,
            lookback,
            ..
        } => {
            assert_eq!(lookback, gst::ClockTime::from_mseconds(200));
            assert_eq!(running_time, gst::ClockTime::from_mseconds(300));
        }
        _ => unreachable!(),
    }
}

#[test]
fn lookback_comes_first_and_every_segment_buffer_is_tagged() {
    let mut h = harness(&[]);
    let frames = script();
    push_script(&mut h, &frames[..60]); // 0.5 s quiet, then 100 ms voiced
    let mut pts = Vec::new();
    while let Some(b) = h.try_pull() {
        assert_eq!(
            SegmentIdMeta::get(&b).map(seq),
            Some(1),
            "buffer at {:?} lacks the segment id",
            b.pts()
        );
        pts.push(b.pts().unwrap());
    }
    let trigger = gst::ClockTime::from_mseconds(500);
    assert_eq!(
        pts.first().copied(),
        Some(gst::ClockTime::from_mseconds(300)),
        "lookback starts 200 ms early"
    );
    assert!(
        pts.iter().filter(|p| **p < trigger).count() == 20,
        "20 lookback buffers precede the trigger"
    );
    assert!(pts.windows(2).all(|w| w[0] < w[1]), "timestamps increase");
    assert_eq!(pts.len(), 30, "lookback (20) + live voiced (10)");
}

#[test]
fn idle_audio_is_dropped_with_gap_events() {
    let mut h = harness(&[]);
    push_script(&mut h, &script()[..50]);
    assert!(h.try_pull().is_none(), "no audio leaves while idle");
    let mut gaps = 0;
    let mut count_gaps = |h: &mut Harness| {
        while let Some(ev) = h.try_pull_event() {
            if let gst::EventView::Gap(g) = ev.view() {
                let (ts, dur) = g.get();
                assert_eq!(dur, Some(gst::ClockTime::from_mseconds(10)));
                assert_eq!(ts, gst::ClockTime::from_mseconds(10 * gaps));
                gaps += 1;
            }
        }
        gaps
    };
    // The last 200 ms wait in the lookback ring; they leave at EOS.
    assert_eq!(count_gaps(&mut h), 30);
    assert!(h.push_event(gst::event::Eos::new()));
    assert_eq!(count_gaps(&mut h), 50);
}

#[test]
fn idle_silence_keeps_timestamps_and_zeroes_samples() {
    let mut h = harness(&[("idle-output", "silence")]);
    // Idle audio leaves once it falls out of the 200 ms lookback ring.
    push_script(&mut h, &script()[..30]);
    for n in 0..10u64 {
        let b = h.pull().unwrap();
        assert_eq!(b.pts(), Some(gst::ClockTime::from_mseconds(10 * n)));
        assert!(b.map_readable().unwrap().iter().all(|x| *x == 0));
    }
}

#[test]
fn confirmed_mode_holds_audio_until_commit_and_hides_false_starts() {
    let mut h = harness(&[("mode", "confirmed")]);
    let frames = script();
    push_script(&mut h, &frames[..70]); // 200 ms of voice: not yet committed
    assert!(
        h.try_pull().is_none(),
        "confirmed mode forwards nothing before the commit"
    );
    push_script(&mut h, &frames[70..]);
    let first = h.pull().unwrap();
    assert_eq!(
        first.pts(),
        Some(gst::ClockTime::from_mseconds(300)),
        "held audio starts with the lookback"
    );
    let events = protocol_events(&mut h);
    assert_eq!(
        kinds(&events),
        vec![("start", 1), ("commit", 1), ("end", 1)],
        "the click never reaches downstream"
    );
}

#[test]
fn passthrough_mode_forwards_everything_unchanged() {
    let mut h = harness(&[("mode", "passthrough")]);
    let frames = script();
    push_script(&mut h, &frames);
    let mut n = 0;
    let mut seed = 1;
    while let Some(b) = h.try_pull() {
        let expected = frame(frames[n].0, frames[n].1, &mut seed);
        assert_eq!(
            b.map_readable().unwrap().as_slice(),
            expected.map_readable().unwrap().as_slice(),
            "bit-exact"
        );
        assert_eq!(SegmentIdMeta::get(&b), None);
        n += 1;
    }
    assert_eq!(n, frames.len());
    assert!(
        protocol_events(&mut h).is_empty(),
        "passthrough only reports"
    );
}

#[test]
fn stats_add_up() {
    let mut h = harness(&[]);
    push_script(&mut h, &script());
    let stats = h.element().unwrap().property::<gst::Structure>("stats");
    assert_eq!(
        stats.get::<u64>("frames-analysed").unwrap(),
        script().len() as u64
    );
    assert_eq!(stats.get::<u64>("speculative-starts").unwrap(), 2);
    assert_eq!(stats.get::<u64>("commits").unwrap(), 1);
    assert_eq!(stats.get::<u64>("cancels").unwrap(), 1);
    assert_eq!(stats.get::<f64>("acceptance-rate").unwrap(), 0.5);
    assert!(
        stats.get::<u64>("max-decision-time").unwrap()
            >= stats.get::<u64>("mean-decision-time").unwrap()
    );
}

#[test]
fn eos_closes_an_open_segment() {
    let mut h = harness(&[]);
    push_script(&mut h, &script()[..130]); // committed, still speaking
    assert!(h.push_event(gst::event::Eos::new()));
    assert_eq!(
        kinds(&protocol_events(&mut h)),
        vec![("start", 1), ("commit", 1), ("end", 1)]
    );
}

#[test]
fn caps_change_mid_segment_ends_it_and_reconfigures() {
    let mut h = harness(&[]);
    push_script(&mut h, &script()[..130]);
    h.set_src_caps_str("audio/x-raw,format=F32LE,layout=interleaved,rate=8000,channels=2");
    let events = protocol_events(&mut h);
    assert_eq!(
        kinds(&events),
        vec![("start", 1), ("commit", 1), ("end", 1)]
    );
    // F32 stereo at 8 kHz is analysed too: a loud stereo burst opens segment 2.
    assert_eq!(
        h.push(gst::Buffer::from_mut_slice(vec![0u8; 80 * 2 * 4 * 10])),
        Ok(gst::FlowSuccess::Ok)
    );
    let samples: Vec<u8> = (0..80 * 2)
        .flat_map(|i| (((i as f32) * 0.3).sin() * 0.5).to_le_bytes())
        .collect();
    assert_eq!(
        h.push(gst::Buffer::from_mut_slice(samples)),
        Ok(gst::FlowSuccess::Ok)
    );
    assert_eq!(kinds(&protocol_events(&mut h)), vec![("start", 2)]);
}

#[test]
fn bad_input_never_panics() {
    init();
    // Unsupported caps are refused.
    let mut h = Harness::new("specvadgate");
    h.set_src_caps_str("audio/x-raw,format=S8,layout=interleaved,rate=16000,channels=1");
    assert_eq!(
        h.push(gst::Buffer::with_size(160).unwrap()),
        Err(gst::FlowError::NotNegotiated)
    );
    // Empty buffers, a truncated sample and a discontinuity pass without harm.
    let mut h = harness(&[("idle-output", "passthrough")]);
    assert_eq!(h.push(gst::Buffer::new()), Ok(gst::FlowSuccess::Ok));
    assert_eq!(
        h.push(gst::Buffer::from_mut_slice(vec![1u8])),
        Ok(gst::FlowSuccess::Ok)
    );
    let mut b = frame(Sound::Quiet, 5, &mut 1);
    b.get_mut().unwrap().set_flags(gst::BufferFlags::DISCONT);
    assert_eq!(h.push(b), Ok(gst::FlowSuccess::Ok));
}

#[test]
fn bus_messages_name_each_decision() {
    init();
    let pipeline = gst::parse::launch(
        "appsrc name=src format=time caps=audio/x-raw,format=S16LE,layout=interleaved,rate=16000,channels=1 \
         ! specvadgate ! fakesink sync=false",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut seed = 1;
    for (sound, n) in script() {
        src.push_buffer(frame(sound, n, &mut seed)).unwrap();
    }
    src.end_of_stream().unwrap();
    let bus = pipeline.bus().unwrap();
    let mut names = Vec::new();
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(30)) {
        match msg.view() {
            gst::MessageView::Element(e) => {
                let s = e.structure().unwrap();
                if s.name().starts_with("speech-") {
                    let rt = s.get::<u64>("running-time").unwrap();
                    assert!(s.get::<u64>("decision-latency").is_ok());
                    names.push((
                        s.name().to_string(),
                        seq(s.get::<u64>("segment-id").unwrap()),
                        rt / 1_000_000,
                    ));
                }
            }
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{}", e.error()),
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    let expected: Vec<(String, u64)> = [
        ("speech-start", 1),
        ("speech-commit", 1),
        ("speech-end", 1),
        ("speech-start", 2),
        ("speech-cancel", 2),
    ]
    .into_iter()
    .map(|(n, i)| (n.to_string(), i))
    .collect();
    assert_eq!(
        names
            .iter()
            .map(|(n, i, _)| (n.clone(), *i))
            .collect::<Vec<_>>(),
        expected
    );
    assert_eq!(names[0].2, 500, "start: the first voiced sample at 500 ms");
    assert_eq!(names[2].2, 1500, "end: the last voiced sample at 1500 ms");
}

#[test]
fn webrtc_engine_commits_voice_and_cancels_the_click() {
    let mut h = harness(&[("engine", "webrtc")]);
    push_script(&mut h, &script());
    let events = protocol_events(&mut h);
    // The WebRTC VAD may fire while its noise model adapts at the start; the
    // gate must retract any such false start. Exactly the voiced second commits.
    let committed: Vec<u64> = events
        .iter()
        .filter(|e| matches!(e, SegmentEvent::Commit { .. }))
        .map(|e| e.id())
        .collect();
    assert_eq!(committed.len(), 1, "{events:?}");
    let id = committed[0];
    let start = events.iter().find_map(|e| match e {
        SegmentEvent::Start {
            id: i,
            running_time,
            ..
        } if *i == id => Some(*running_time),
        _ => None,
    });
    let start_ms = start.unwrap().mseconds();
    assert!(
        (290..=330).contains(&start_ms),
        "committed segment starts at {start_ms} ms (voice at 500 ms, 200 ms lookback)"
    );
    for e in &events {
        if let SegmentEvent::Start { id: i, .. } = e
            && *i != id
        {
            assert!(
                events.contains(&SegmentEvent::Cancel {
                    id: *i,
                    reason: "not enough voiced audio to commit".into()
                }),
                "{events:?}"
            );
        }
    }
    assert!(
        matches!(events.last(), Some(SegmentEvent::Cancel { id: i, .. }) if *i > id),
        "the click is cancelled: {events:?}"
    );
}

#[test]
fn webrtc_engine_handles_rates_it_must_resample() {
    init();
    let element = gst::ElementFactory::make("specvadgate")
        .property_from_str("engine", "webrtc")
        .build()
        .unwrap();
    let mut h = Harness::with_element(&element, Some("sink"), Some("src"));
    h.set_src_caps_str("audio/x-raw,format=F32LE,layout=interleaved,rate=44100,channels=2");
    // 0.3 s of silence, then 0.5 s of a stereo harmonic tone, in 10 ms buffers.
    for n in 0..80u64 {
        let samples: Vec<u8> = (0..441u64)
            .flat_map(|i| {
                let t = (n * 441 + i) as f32 / 44100.0;
                let v = if n < 30 {
                    0.0
                } else {
                    (1..=6)
                        .map(|k| {
                            (2.0 * std::f32::consts::PI * 150.0 * k as f32 * t).sin() / k as f32
                        })
                        .sum::<f32>()
                        * 0.2
                };
                [v.to_le_bytes(), v.to_le_bytes()].concat()
            })
            .collect();
        assert_eq!(
            h.push(gst::Buffer::from_mut_slice(samples)),
            Ok(gst::FlowSuccess::Ok)
        );
    }
    assert_eq!(
        kinds(&protocol_events(&mut h)),
        vec![("start", 1), ("commit", 1)]
    );
}

/// The click's cancel is out-of-band: it overtakes the click's buffers waiting
/// in a `queue`, so a downstream consumer that honours the segment-id meta
/// drops them all, while every buffer of the committed speech segment arrives.
#[test]
fn cancel_overtakes_a_queue_and_the_consumer_drops_the_false_start() {
    init();
    let pipeline = gst::parse::launch(
        "appsrc name=src format=time caps=audio/x-raw,format=S16LE,layout=interleaved,rate=16000,channels=1 \
         ! specvadgate ! queue name=q max-size-buffers=0 max-size-bytes=0 max-size-time=0 \
         ! fakesink name=sink sync=false",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let queue_src = pipeline.by_name("q").unwrap().static_pad("src").unwrap();
    // Hold every buffer in the queue until the cancel has gone past it.
    let hold = queue_src
        .add_probe(
            gst::PadProbeType::BLOCK | gst::PadProbeType::BUFFER,
            |_, _| gst::PadProbeReturn::Ok,
        )
        .unwrap();

    // The consumer: records what reaches it, in order, and drops cancelled segments.
    #[derive(Debug, PartialEq)]
    enum Seen {
        Cancel(u64),
        Buffer(Option<u64>),
        Dropped(u64),
    }
    let seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>> = Default::default();
    let (cancelled_tx, cancelled_rx) = std::sync::mpsc::channel();
    let sink_pad = pipeline
        .by_name("sink")
        .unwrap()
        .static_pad("sink")
        .unwrap();
    let tracker = std::sync::Mutex::new(rtai_core::CancelTracker::with_capacity(16));
    let seen_in_probe = seen.clone();
    sink_pad.add_probe(
        gst::PadProbeType::BUFFER
            | gst::PadProbeType::EVENT_DOWNSTREAM
            | gst::PadProbeType::EVENT_FLUSH,
        move |_, info| {
            let mut seen = seen_in_probe.lock().unwrap();
            if let Some(gst::PadProbeData::Event(ev)) = &info.data
                && let Some(SegmentEvent::Cancel { id, .. }) = SegmentEvent::parse(ev)
            {
                tracker.lock().unwrap().cancel(id);
                seen.push(Seen::Cancel(id));
                cancelled_tx.send(id).unwrap();
            } else if let Some(buffer) = info.buffer() {
                let id = SegmentIdMeta::get(buffer);
                if let Some(id) = id
                    && tracker.lock().unwrap().is_cancelled(id)
                {
                    seen.push(Seen::Dropped(id));
                    drop(info.take_buffer());
                    return gst::PadProbeReturn::Handled;
                }
                seen.push(Seen::Buffer(id));
            }
            gst::PadProbeReturn::Ok
        },
    );

    pipeline.set_state(gst::State::Playing).unwrap();
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    let mut seed = 1;
    for (sound, n) in script() {
        src.push_buffer(frame(sound, n, &mut seed)).unwrap();
    }
    src.end_of_stream().unwrap();
    let cancelled = cancelled_rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the cancel overtakes the blocked queue");
    queue_src.remove_probe(hold);
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(30),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .unwrap();
    assert!(matches!(msg.view(), gst::MessageView::Eos(_)), "{msg:?}");
    pipeline.set_state(gst::State::Null).unwrap();

    let seen = seen.lock().unwrap();
    let first_cancel = seen
        .iter()
        .position(|s| *s == Seen::Cancel(cancelled))
        .unwrap();
    assert!(
        seen[..first_cancel]
            .iter()
            .all(|s| !matches!(s, Seen::Buffer(_))),
        "the cancel arrived ahead of every queued buffer"
    );
    let dropped = seen
        .iter()
        .filter(|s| **s == Seen::Dropped(cancelled))
        .count();
    assert!(
        dropped >= 3,
        "the click's buffers (lookback + click) were queued and dropped: {dropped}"
    );
    assert!(
        !seen.contains(&Seen::Buffer(Some(cancelled))),
        "no buffer of the cancelled segment got through"
    );
    let speech = seen
        .iter()
        .filter(|s| matches!(s, Seen::Buffer(Some(id)) if *id != cancelled))
        .count();
    assert!(
        speech >= 100,
        "the committed speech segment arrived whole: {speech} buffers"
    );
}

#[test]
fn a_held_chord_cannot_commit_or_reopen_but_speech_after_it_commits() {
    // 0.5 s quiet, 0.8 s chord, 0.3 s quiet, 1 s voiced, 1 s quiet.
    let script: Vec<(Sound, u64)> = [
        (Sound::Quiet, 50),
        (Sound::Chord, 80),
        (Sound::Quiet, 30),
        (Sound::Voiced, 100),
        (Sound::Quiet, 100),
    ]
    .into_iter()
    .flat_map(|(s, n)| std::iter::repeat_n(s, n as usize))
    .enumerate()
    .map(|(i, s)| (s, i as u64))
    .collect();
    let mut h = harness(&[]);
    push_script(&mut h, &script);
    let events = protocol_events(&mut h);
    // The chord's abrupt onset opens a segment (its first frame is no clean tone
    // yet), the held chord cancels it and never reopens one; the voice commits.
    assert_eq!(
        kinds(&events),
        vec![
            ("start", 1),
            ("cancel", 1),
            ("start", 2),
            ("commit", 2),
            ("end", 2)
        ]
    );
    match events[2] {
        SegmentEvent::Start {
            running_time,
            lookback,
            ..
        } => {
            assert_eq!(
                running_time + lookback,
                gst::ClockTime::from_mseconds(1600),
                "segment 2 opens at the voice"
            );
        }
        _ => unreachable!(),
    }
    let stats = h.element().unwrap().property::<gst::Structure>("stats");
    assert!(stats.get::<u64>("tone-frames").unwrap() >= 50, "{stats}");

    // Without tone rejection the energy engine takes the chord for speech.
    let mut h = harness(&[("tone-threshold", "0")]);
    push_script(&mut h, &script);
    let without = kinds(&protocol_events(&mut h));
    assert_eq!(
        &without[..3],
        &[("start", 1), ("commit", 1), ("end", 1)],
        "{without:?}"
    );
    assert_eq!(
        h.element()
            .unwrap()
            .property::<gst::Structure>("stats")
            .get::<u64>("tone-frames")
            .unwrap(),
        0
    );
}
