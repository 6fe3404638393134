//! prosodymeter through gst_check::Harness (protocol events in, the
//! rtai-prosody event before each segment's end) and behind specvadgate on
//! espeak-ng speech: higher voices, faster speech and louder speech measure
//! higher pitch, rate and level.

use std::process::Command;

use gst::prelude::*;
use gst_check::Harness;
use rtai_core::SegmentEvent;
use rtai_core::prosody::Prosody;

const RATE: u32 = 16_000;

fn init() {
    use std::sync::Once;
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstrtaivoice::plugin_register_static().unwrap();
    });
}

/// A voice-like 10 ms S16 buffer: f0 with 6 harmonics, at running time `n` × 10 ms.
fn voiced(f0: f64, n: u64, amp: f64) -> gst::Buffer {
    let len = (RATE / 100) as usize;
    let mut data = Vec::with_capacity(len * 2);
    for i in 0..len {
        let t = (n as usize * len + i) as f64 / RATE as f64;
        let s: f64 = (1..=6)
            .map(|h| (2.0 * std::f64::consts::PI * f0 * h as f64 * t).sin() / h as f64)
            .sum();
        data.extend_from_slice(&((amp * s / 2.0 * 32767.0) as i16).to_le_bytes());
    }
    let mut b = gst::Buffer::from_mut_slice(data);
    {
        let b = b.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_mseconds(10 * n));
        b.set_duration(gst::ClockTime::from_mseconds(10));
    }
    b
}

fn harness() -> Harness {
    init();
    let mut h = Harness::new("prosodymeter");
    h.set_src_caps_str("audio/x-raw,format=S16LE,layout=interleaved,rate=16000,channels=1");
    h
}

/// Custom events pulled from the harness, as protocol or prosody structures' names.
fn pulled(h: &mut Harness) -> Vec<(String, Option<Prosody>)> {
    let mut out = Vec::new();
    while let Some(ev) = h.try_pull_event() {
        if let Some(s) = ev.structure()
            && s.name().starts_with("rtai-")
        {
            out.push((s.name().to_string(), Prosody::parse(&ev)));
        }
    }
    out
}

#[test]
fn the_prosody_event_precedes_the_segment_end_and_audio_is_unchanged() {
    let mut h = harness();
    let start = SegmentEvent::Start {
        id: 42,
        running_time: gst::ClockTime::ZERO,
        lookback: gst::ClockTime::ZERO,
    };
    assert!(h.push_event(start.to_event()));
    for n in 0..100 {
        let b = voiced(200.0, n, 0.5);
        let before = b.map_readable().unwrap().to_vec();
        h.push(b).unwrap();
        let out = h.pull().unwrap();
        assert_eq!(out.map_readable().unwrap().as_slice(), before.as_slice());
    }
    assert!(h.push_event(SegmentEvent::End { id: 42 }.to_event()));
    let events = pulled(&mut h);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["rtai-segment-start", "rtai-prosody", "rtai-segment-end"]
    );
    let p = events[1].1.clone().unwrap();
    assert_eq!(p.segment_id, 42);
    assert!((p.f0_mean - 200.0).abs() < 2.0, "{p:?}");
    assert!((p.duration as f64 / 1e9 - 1.0).abs() < 0.02, "{p:?}");
    assert!(p.voiced_ratio > 0.9);
    let stats = h.element().unwrap().property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("measured").unwrap(), 1);

    // A cancelled segment is not measured; an end without a start neither.
    let start = SegmentEvent::Start {
        id: 43,
        running_time: gst::ClockTime::from_seconds(1),
        lookback: gst::ClockTime::ZERO,
    };
    assert!(h.push_event(start.to_event()));
    for n in 100..130 {
        h.push(voiced(150.0, n, 0.5)).unwrap();
    }
    assert!(
        h.push_event(
            SegmentEvent::Cancel {
                id: 43,
                reason: "test".into()
            }
            .to_event()
        )
    );
    assert!(h.push_event(SegmentEvent::End { id: 43 }.to_event()));
    assert!(h.push_event(SegmentEvent::End { id: 99 }.to_event()));
    let events = pulled(&mut h);
    assert!(
        events.iter().all(|(n, _)| n != "rtai-prosody"),
        "{events:?}"
    );
    let stats = h.element().unwrap().property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("measured").unwrap(), 1);
    assert_eq!(stats.get::<u64>("cancelled").unwrap(), 1);
}

#[test]
fn max_duration_bounds_the_kept_audio() {
    let mut h = harness();
    h.element().unwrap().set_property("max-duration", 300u32);
    let start = SegmentEvent::Start {
        id: 1,
        running_time: gst::ClockTime::ZERO,
        lookback: gst::ClockTime::ZERO,
    };
    assert!(h.push_event(start.to_event()));
    for n in 0..200 {
        h.push(voiced(120.0, n, 0.3)).unwrap();
    }
    assert!(h.push_event(SegmentEvent::End { id: 1 }.to_event()));
    let p = pulled(&mut h)
        .into_iter()
        .find_map(|(_, p)| p)
        .expect("a prosody event");
    assert_eq!(p.duration, 300_000_000, "{p:?}");
}

/// espeak-ng `text` with extra arguments at 16 kHz mono S16 WAV (sox), `vol` scaled.
fn espeak(dir: &std::path::Path, name: &str, text: &str, args: &[&str], vol: f64) -> String {
    let raw = dir.join(format!("{name}-raw.wav"));
    let out = dir.join(format!("{name}.wav"));
    let st = Command::new("espeak-ng")
        .args(args)
        .arg("-w")
        .arg(&raw)
        .arg(text)
        .status()
        .expect("espeak-ng runs (scripts/setup.sh installs it)");
    assert!(st.success());
    // Half a second of silence around the speech, as a VAD needs.
    let st = Command::new("sox")
        .arg(&raw)
        .args(["-r", "16000", "-c", "1", "-b", "16"])
        .arg(&out)
        .args(["vol", &vol.to_string(), "pad", "0.5", "0.8"])
        .status()
        .expect("sox runs");
    assert!(st.success());
    out.to_string_lossy().into_owned()
}

/// Every `prosody` message of the file through specvadgate and prosodymeter.
fn measure(path: &str) -> Vec<Prosody> {
    init();
    let pipeline = gst::parse::launch(&format!(
        "filesrc location={path} ! wavparse ! audioconvert ! audio/x-raw,format=S16LE,rate=16000,channels=1 \
         ! specvadgate stop-time=600 ! prosodymeter name=p ! fakesink"
    ))
    .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let mut out = Vec::new();
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(30)) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{e:?}"),
            gst::MessageView::Element(e) => {
                if let Some(p) = e.structure().and_then(Prosody::from_structure) {
                    out.push(p);
                }
            }
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    out
}

/// The one segment of a single-utterance file.
fn one(path: &str) -> Prosody {
    let all = measure(path);
    assert_eq!(all.len(), 1, "one segment expected in {path}: {all:?}");
    all.into_iter().next().unwrap()
}

#[test]
fn espeak_speech_pitch_rate_and_level_are_measured_relative_to_each_other() {
    let dir = std::env::temp_dir().join(format!("prosodymeter-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = "one two three four five six seven eight nine ten";
    let base = one(&espeak(
        &dir,
        "base",
        text,
        &["-v", "en-us", "-s", "150"],
        1.0,
    ));
    eprintln!("base: {base:?}");
    // Ten words, eleven syllables ("seven" has two).
    assert!((8..=14).contains(&base.syllables), "{base:?}");
    assert!((70.0..250.0).contains(&base.f0_mean), "{base:?}");
    assert!(base.f0_max > base.f0_min);

    let high = one(&espeak(
        &dir,
        "high",
        text,
        &["-v", "en-us", "-s", "150", "-p", "90"],
        1.0,
    ));
    let low = one(&espeak(
        &dir,
        "low",
        text,
        &["-v", "en-us", "-s", "150", "-p", "10"],
        1.0,
    ));
    eprintln!("high: {high:?}\nlow: {low:?}");
    assert!(high.f0_mean > 1.3 * low.f0_mean, "{high:?} vs {low:?}");

    let fast = one(&espeak(
        &dir,
        "fast",
        text,
        &["-v", "en-us", "-s", "260"],
        1.0,
    ));
    let slow = one(&espeak(
        &dir,
        "slow",
        text,
        &["-v", "en-us", "-s", "110"],
        1.0,
    ));
    eprintln!("fast: {fast:?}\nslow: {slow:?}");
    assert!(fast.rate > 1.8 * slow.rate, "{fast:?} vs {slow:?}");
    // espeak-ng -s is words per minute: 150 wpm of these words is ~2.75 syllables/s.
    assert!((2.0..4.0).contains(&base.rate), "{base:?}");

    let quiet = one(&espeak(
        &dir,
        "quiet",
        text,
        &["-v", "en-us", "-s", "150"],
        0.25,
    ));
    let diff = base.level_db - quiet.level_db;
    assert!((diff - 12.04).abs() < 1.5, "level {diff} dB apart");
    let _ = std::fs::remove_dir_all(&dir);
}
