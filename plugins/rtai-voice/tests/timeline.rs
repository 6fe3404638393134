//! specvadgate's output timeline and latency: every input range leaves exactly
//! once (as a buffer or a GAP), in order, in every mode × idle-output; the
//! LATENCY query covers the audio the gate holds back; upstream GAP events
//! advance the state machine; an identical CAPS event does not end a segment;
//! decisions carry the running time of the frame that decided them.

use std::sync::{Arc, Mutex};

use gst::prelude::*;
use gst_check::Harness;
use rtai_core::SegmentEvent;

const RATE: u64 = 16_000;
const CAPS: &str = "audio/x-raw,format=S16LE,layout=interleaved,rate=16000,channels=1";

fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstrtaivoice::plugin_register_static().unwrap();
    });
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Sound {
    Quiet,
    Voiced,
    Click,
}

/// `ms` of `sound` starting at `start_ms`, S16LE mono, PTS and (optionally) duration set.
fn audio(sound: Sound, start_ms: u64, ms: u64, with_duration: bool, seed: &mut u32) -> gst::Buffer {
    let n0 = start_ms * RATE / 1000;
    let n = ms * RATE / 1000;
    let mut bytes = Vec::with_capacity(n as usize * 2);
    for i in n0..n0 + n {
        let t = i as f64 / RATE as f64;
        *seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let noise = (*seed >> 8) as f64 / (1u32 << 24) as f64 * 2.0 - 1.0;
        let v = match sound {
            Sound::Quiet => 0.001 * noise,
            Sound::Click => 0.7 * noise,
            Sound::Voiced => {
                (1..=6)
                    .map(|h| (2.0 * std::f64::consts::PI * 150.0 * h as f64 * t).sin() / h as f64)
                    .sum::<f64>()
                    * 0.2
            }
        };
        bytes.extend_from_slice(&((v * 32767.0) as i16).to_le_bytes());
    }
    let mut buffer = gst::Buffer::from_mut_slice(bytes);
    let b = buffer.get_mut().unwrap();
    b.set_pts(gst::ClockTime::from_mseconds(start_ms));
    if with_duration {
        b.set_duration(gst::ClockTime::from_mseconds(ms));
    }
    buffer
}

/// 0.5 s quiet, 1 s voiced, 1 s quiet, a 30 ms click, 1 s quiet, in `chunk_ms` buffers.
fn script(chunk_ms: u64) -> Vec<(Sound, u64, u64)> {
    let parts = [
        (Sound::Quiet, 500),
        (Sound::Voiced, 1000),
        (Sound::Quiet, 1000),
        (Sound::Click, 30),
        (Sound::Quiet, 1000),
    ];
    let mut out = Vec::new();
    let mut t = 0;
    for (sound, len) in parts {
        let end = t + len;
        while t < end {
            let ms = chunk_ms.min(end - t);
            out.push((sound, t, ms));
            t += ms;
        }
    }
    out
}

const SCRIPT_MS: u64 = 3530;

/// What left the gate's source pad, in order.
#[derive(Debug, Clone, PartialEq)]
enum Out {
    Buffer(u64, u64),
    Gap(u64, u64),
    Segment(SegmentEvent),
}

fn harness(props: &[(&str, &str)]) -> (Harness, Arc<Mutex<Vec<Out>>>) {
    init();
    let mut builder = gst::ElementFactory::make("specvadgate");
    for (k, v) in props {
        builder = builder.property_from_str(k, v);
    }
    let element = builder.build().unwrap();
    let out: Arc<Mutex<Vec<Out>>> = Arc::default();
    let record = out.clone();
    element.static_pad("src").unwrap().add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            let mut out = record.lock().unwrap();
            match &info.data {
                Some(gst::PadProbeData::Buffer(b)) => out.push(Out::Buffer(
                    b.pts().unwrap().nseconds(),
                    b.duration().map_or(0, |d| d.nseconds()),
                )),
                Some(gst::PadProbeData::Event(e)) => {
                    if let gst::EventView::Gap(g) = e.view() {
                        let (ts, dur) = g.get();
                        out.push(Out::Gap(ts.nseconds(), dur.map_or(0, |d| d.nseconds())));
                    } else if let Some(s) = SegmentEvent::parse(e) {
                        out.push(Out::Segment(s));
                    }
                }
                _ => {}
            }
            gst::PadProbeReturn::Ok
        },
    );
    let mut h = Harness::with_element(&element, Some("sink"), Some("src"));
    h.set_src_caps_str(CAPS);
    (h, out)
}

fn push(h: &mut Harness, parts: &[(Sound, u64, u64)], with_duration: bool) {
    let mut seed = 1;
    for (sound, start, ms) in parts {
        assert_eq!(
            h.push(audio(*sound, *start, *ms, with_duration, &mut seed)),
            Ok(gst::FlowSuccess::Ok)
        );
    }
}

/// Asserts that buffers and GAPs tile [0, end_ns) exactly, in order.
fn assert_tiles(out: &[Out], end_ns: u64, what: &str) {
    let mut t = 0u64;
    for o in out {
        let (start, dur) = match o {
            Out::Buffer(s, d) | Out::Gap(s, d) => (*s, *d),
            Out::Segment(_) => continue,
        };
        assert_eq!(
            start, t,
            "{what}: {o:?} does not start where the output stood ({t} ns): {out:?}"
        );
        t = start + dur;
    }
    assert_eq!(t, end_ns, "{what}: the output stops at {t} ns: {out:?}");
}

fn segment_kinds(out: &[Out]) -> Vec<&'static str> {
    out.iter()
        .filter_map(|o| match o {
            Out::Segment(SegmentEvent::Start { .. }) => Some("start"),
            Out::Segment(SegmentEvent::Commit { .. }) => Some("commit"),
            Out::Segment(SegmentEvent::End { .. }) => Some("end"),
            Out::Segment(SegmentEvent::Cancel { .. }) => Some("cancel"),
            _ => None,
        })
        .collect()
}

#[test]
fn every_input_range_leaves_exactly_once_in_every_mode_and_idle_output() {
    for mode in ["speculative", "confirmed", "passthrough"] {
        for idle in ["drop", "silence", "passthrough"] {
            for chunk in [10, 40] {
                let (mut h, out) = harness(&[("mode", mode), ("idle-output", idle)]);
                push(&mut h, &script(chunk), true);
                assert!(h.push_event(gst::event::Eos::new()));
                let out = out.lock().unwrap();
                let what = format!("mode={mode} idle-output={idle} {chunk} ms buffers");
                assert_tiles(&out, SCRIPT_MS * 1_000_000, &what);
                let kinds = segment_kinds(&out);
                match mode {
                    "speculative" => {
                        assert_eq!(
                            kinds,
                            ["start", "commit", "end", "start", "cancel"],
                            "{what}"
                        )
                    }
                    "confirmed" => assert_eq!(kinds, ["start", "commit", "end"], "{what}"),
                    _ => assert!(kinds.is_empty(), "{what}"),
                }
            }
        }
    }
}

#[test]
fn the_ring_trims_buffers_without_duration_by_sample_count() {
    let (mut h, out) = harness(&[]);
    // appsrc's default: PTS but no duration.
    push(&mut h, &script(10)[..60], false);
    let out = out.lock().unwrap();
    let start = out.iter().find_map(|o| match o {
        Out::Segment(SegmentEvent::Start {
            running_time,
            lookback,
            ..
        }) => Some((*running_time, *lookback)),
        _ => None,
    });
    assert_eq!(
        start,
        Some((
            gst::ClockTime::from_mseconds(300),
            gst::ClockTime::from_mseconds(200)
        )),
        "the lookback holds 200 ms, not the whole idle stream"
    );
    let gaps = out.iter().filter(|o| matches!(o, Out::Gap(..))).count();
    assert_eq!(
        gaps, 30,
        "the 300 ms that fell out of the ring left as GAPs"
    );
}

fn latency(h: &Harness) -> (bool, gst::ClockTime, Option<gst::ClockTime>) {
    let mut q = gst::query::Latency::new();
    assert!(
        h.element()
            .unwrap()
            .static_pad("src")
            .unwrap()
            .query(&mut q)
    );
    q.result()
}

#[test]
fn latency_query_reports_the_audio_held_back() {
    let ms = gst::ClockTime::from_mseconds;
    for (props, expected) in [
        (vec![], ms(200)),
        (vec![("lookback", "300")], ms(300)),
        (vec![("mode", "confirmed")], ms(200 + 250)),
        (
            vec![
                ("mode", "confirmed"),
                ("commit-time", "400"),
                ("lookback", "100"),
            ],
            ms(100 + 400),
        ),
        (vec![("mode", "passthrough")], ms(0)),
    ] {
        let (mut h, _) = harness(&props);
        h.set_upstream_latency(ms(20));
        let (live, min, max) = latency(&h);
        assert!(live, "{props:?}");
        assert_eq!(min, ms(20) + expected, "{props:?}");
        assert_eq!(
            max, None,
            "{props:?}: upstream's unlimited maximum stays unlimited"
        );
    }
}

#[test]
fn upstream_gap_events_end_a_segment() {
    let (mut h, out) = harness(&[]);
    // 0.5 s quiet, 0.5 s voiced, then only GAPs (Opus DTX) for a second.
    push(&mut h, &script(10)[..100], true);
    for k in 0..50u64 {
        assert!(
            h.push_event(
                gst::event::Gap::builder(gst::ClockTime::from_mseconds(1000 + 20 * k))
                    .duration(gst::ClockTime::from_mseconds(20))
                    .build()
            )
        );
    }
    let out = out.lock().unwrap();
    assert_eq!(segment_kinds(&out), ["start", "commit", "end"], "{out:?}");
    // The GAPs are forwarded in place: the timeline stays whole up to 2 s.
    assert_tiles(
        &out.iter()
            .filter(|o| match o {
                Out::Buffer(s, _) | Out::Gap(s, _) => *s < 2_000_000_000,
                _ => true,
            })
            .cloned()
            .collect::<Vec<_>>(),
        // The last 200 ms still sit in the lookback ring.
        1_800_000_000,
        "GAPs",
    );
}

#[test]
fn an_identical_caps_event_does_not_end_the_segment() {
    let (mut h, out) = harness(&[]);
    push(&mut h, &script(10)[..100], true);
    assert!(h.push_event(gst::event::Caps::new(&gst::Caps::from_str_ok(CAPS))));
    push(&mut h, &script(10)[100..120], true);
    assert_eq!(segment_kinds(&out.lock().unwrap()), ["start", "commit"]);
}

trait FromStrOk {
    fn from_str_ok(s: &str) -> Self;
}
impl FromStrOk for gst::Caps {
    fn from_str_ok(s: &str) -> Self {
        s.parse().unwrap()
    }
}

#[test]
fn decisions_carry_the_running_time_of_the_deciding_frame() {
    init();
    let (mut h, _) = harness(&[]);
    let element = h.element().unwrap();
    let bus = gst::Bus::new();
    element.set_bus(Some(&bus));
    // 100 ms buffers: the decision falls inside a buffer, not at its end.
    push(&mut h, &script(100), true);
    let mut times = Vec::new();
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Element]) {
        let s = msg.structure().unwrap();
        if s.name().starts_with("speech-") {
            times.push((
                s.name().to_string(),
                s.get::<u64>("running-time").unwrap() / 1_000_000,
            ));
        }
    }
    let times: Vec<(&str, u64)> = times.iter().map(|(n, t)| (n.as_str(), *t)).collect();
    // Voice at 500 ms: commit after 25 frames of 10 ms, at 750 ms. Click at
    // 2500 ms: cancelled 25 frames later, at 2750 ms.
    assert_eq!(
        times,
        [
            ("speech-start", 500),
            ("speech-commit", 750),
            ("speech-end", 1500),
            ("speech-start", 2500),
            ("speech-cancel", 2750)
        ]
    );
}

/// A live, paced stream through stock elements that need a whole, monotonic
/// timeline and honest latency: `audiorate` (drops overlaps, fills holes),
/// `identity check-imperfect-timestamp=true`, `audiomixer` (an aggregator
/// with a deadline) and a clock-synced sink. Nothing may be dropped, filled
/// or reported late, in speculative and confirmed mode. (The sink's processing
/// deadline is 0: with its default 20 ms, `audiomixer`'s own latency answer
/// sometimes leaves too little max latency and basesink warns, gate or not.)
#[test]
fn a_live_stream_through_audiorate_audiomixer_and_a_synced_sink_loses_nothing() {
    init();
    for mode in ["speculative", "confirmed"] {
        let pipeline = gst::parse::launch(&format!(
            "appsrc name=src is-live=true format=time caps={CAPS} \
             ! specvadgate mode={mode} ! audiorate name=rate \
             ! identity name=check check-imperfect-timestamp=true \
             ! audiomixer ! fakesink name=sink sync=true processing-deadline=0"
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let src = pipeline
            .by_name("src")
            .unwrap()
            .downcast::<gst_app::AppSrc>()
            .unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let bus = pipeline.bus().unwrap();
        // Wait until PLAYING so the clock and base time are known.
        let clock = loop {
            let msg = bus
                .timed_pop_filtered(
                    gst::ClockTime::from_seconds(10),
                    &[gst::MessageType::StateChanged, gst::MessageType::Error],
                )
                .expect("the pipeline reaches PLAYING");
            if let gst::MessageView::Error(e) = msg.view() {
                panic!("{mode}: {}", e.error());
            }
            if let Some(clock) = pipeline.clock()
                && pipeline.current_state() == gst::State::Playing
            {
                break clock;
            }
        };
        let base = pipeline.base_time().unwrap();
        // A short stream: 0.3 s quiet, 0.5 s voiced, 0.6 s quiet, a click, 0.4 s quiet.
        let parts: Vec<(Sound, u64, u64)> = [
            (Sound::Quiet, 30),
            (Sound::Voiced, 50),
            (Sound::Quiet, 60),
            (Sound::Click, 3),
            (Sound::Quiet, 40),
        ]
        .into_iter()
        .flat_map(|(s, n)| std::iter::repeat_n(s, n))
        .enumerate()
        .map(|(i, s)| (s, 10 * i as u64, 10))
        .collect();
        let mut seed = 1;
        for (sound, start, ms) in &parts {
            // Pace like a capture device: a buffer leaves when its last sample was recorded.
            let due = base + gst::ClockTime::from_mseconds(start + ms);
            let _ = clock.new_single_shot_id(due).wait();
            src.push_buffer(audio(*sound, *start, *ms, false, &mut seed))
                .unwrap();
        }
        src.end_of_stream().unwrap();
        for msg in bus.iter_timed(gst::ClockTime::from_seconds(20)) {
            match msg.view() {
                gst::MessageView::Eos(_) => break,
                gst::MessageView::Error(e) => panic!("{mode}: {} {:?}", e.error(), e.debug()),
                gst::MessageView::Warning(w) => {
                    panic!("{mode}: warning {} {:?}", w.error(), w.debug())
                }
                gst::MessageView::Qos(q) => panic!("{mode}: late buffer dropped: {q:?}"),
                gst::MessageView::Element(e) => {
                    let s = e.structure().unwrap();
                    assert!(
                        !s.name().starts_with("imperfect"),
                        "{mode}: identity saw an imperfect timestamp: {s}"
                    );
                }
                _ => {}
            }
        }
        let rate = pipeline.by_name("rate").unwrap();
        assert_eq!(
            rate.property::<u64>("drop"),
            0,
            "{mode}: audiorate dropped overlapping samples"
        );
        let stats = pipeline
            .by_name("sink")
            .unwrap()
            .property::<gst::Structure>("stats");
        assert_eq!(stats.get::<u64>("dropped").unwrap(), 0, "{mode}: {stats}");
        assert!(stats.get::<u64>("rendered").unwrap() > 0, "{mode}: {stats}");
        pipeline.set_state(gst::State::Null).unwrap();
    }
}
