//! What voice-agent stacks (Pipecat, LiveKit) expect of a VAD: split long
//! speech, a minimum volume, probability and level with every decision and on
//! the buffers, the segment's duration at its end, action signals, and the
//! Silero engine found without configuration and shared across gates.

mod corpus;

use gst::prelude::*;
use gst_check::Harness;
use rtai_core::{SegmentEvent, SegmentIdMeta};

mod synth;
use synth::*;

/// 0.5 s quiet, `voiced_ms` voiced, 1 s quiet.
fn script(voiced_ms: u64) -> Vec<Sound> {
    let mut s = vec![Sound::Quiet; 50];
    s.extend(std::iter::repeat_n(
        Sound::Voiced,
        (voiced_ms / 10) as usize,
    ));
    s.extend(std::iter::repeat_n(Sound::Quiet, 100));
    s
}

fn harness(props: &[(&str, &str)]) -> (Harness, gst::Bus) {
    init();
    let mut builder = gst::ElementFactory::make("specvadgate");
    for (k, v) in props {
        builder = builder.property_from_str(k, v);
    }
    let element = builder.build().unwrap();
    let bus = gst::Bus::new();
    element.set_bus(Some(&bus));
    let mut h = Harness::with_element(&element, Some("sink"), Some("src"));
    h.set_src_caps_str(CAPS);
    (h, bus)
}

fn push(h: &mut Harness, sounds: &[Sound], from: usize) {
    let mut seed = 1;
    for (i, s) in sounds.iter().enumerate().skip(from) {
        assert_eq!(
            h.push(frame(*s, i as u64, &mut seed)),
            Ok(gst::FlowSuccess::Ok)
        );
    }
}

fn messages(bus: &gst::Bus) -> Vec<gst::Structure> {
    let mut out = Vec::new();
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Element]) {
        let s = msg.structure().unwrap().to_owned();
        if s.name().starts_with("speech-") {
            out.push(s);
        }
    }
    out
}

fn names(msgs: &[gst::Structure]) -> Vec<&str> {
    msgs.iter().map(|s| s.name().as_str()).collect()
}

#[test]
fn max_speech_duration_splits_long_speech() {
    let (mut h, bus) = harness(&[("max-speech-duration", "400")]);
    push(&mut h, &script(1000), 0);
    let msgs = messages(&bus);
    assert_eq!(
        names(&msgs),
        [
            "speech-start",
            "speech-commit",
            "speech-end",
            "speech-start",
            "speech-commit",
            "speech-end",
            "speech-start",
            "speech-commit",
            "speech-end"
        ]
    );
    let ends: Vec<(u64, bool)> = msgs
        .iter()
        .filter(|s| s.name() == "speech-end")
        .map(|s| {
            (
                s.get::<u64>("duration").unwrap() / 1_000_000,
                s.get::<bool>("forced").unwrap(),
            )
        })
        .collect();
    // 500–900 ms and 900–1300 ms are split at 400 ms; the rest ends in silence.
    assert_eq!(ends, [(400, true), (400, true), (200, false)]);
    // Without the limit: one segment of 1 s.
    let (mut h, bus) = harness(&[]);
    push(&mut h, &script(1000), 0);
    let msgs = messages(&bus);
    let end = msgs.iter().find(|s| s.name() == "speech-end").unwrap();
    assert_eq!(end.get::<u64>("duration").unwrap(), 1_000_000_000);
    assert!(!end.get::<bool>("forced").unwrap());
}

#[test]
fn min_volume_keeps_quiet_voice_out() {
    // The voiced signal is about -17 dBFS.
    let (mut h, bus) = harness(&[("min-volume", "-10")]);
    push(&mut h, &script(1000), 0);
    assert!(messages(&bus).is_empty(), "below min-volume nothing opens");
    let (mut h, bus) = harness(&[("min-volume", "-30")]);
    push(&mut h, &script(1000), 0);
    assert_eq!(
        names(&messages(&bus)),
        ["speech-start", "speech-commit", "speech-end"]
    );
}

#[test]
fn decisions_and_buffers_carry_probability_and_level() {
    let (mut h, bus) = harness(&[]);
    push(&mut h, &script(1000), 0);
    let msgs = messages(&bus);
    let start = &msgs[0];
    assert_eq!(start.get::<f64>("probability").unwrap(), 1.0, "{start}");
    let level = start.get::<f64>("level").unwrap();
    assert!((-25.0..-10.0).contains(&level), "{start}");
    let mut voiced = 0;
    while let Some(b) = h.try_pull() {
        let (p, level) =
            SegmentIdMeta::voice(&b).expect("segment buffers carry the voice measures");
        if b.pts().unwrap() >= gst::ClockTime::from_mseconds(500)
            && b.pts().unwrap() < gst::ClockTime::from_mseconds(1500)
        {
            assert_eq!(p, 1.0);
            assert!(level > -25.0, "{level}");
            voiced += 1;
        } else {
            assert!(level < -50.0, "lookback and hangover are quiet: {level}");
        }
    }
    assert_eq!(voiced, 100);
}

#[test]
fn force_end_and_reset_signals_end_the_open_segment() {
    for signal in ["force-end", "reset"] {
        let (mut h, bus) = harness(&[]);
        let sounds = script(1000);
        push(&mut h, &sounds[..100], 0); // committed, still speaking
        h.element().unwrap().emit_by_name::<()>(signal, &[]);
        let msgs = messages(&bus);
        assert_eq!(
            names(&msgs),
            ["speech-start", "speech-commit", "speech-end"],
            "{signal}"
        );
        assert!(msgs[2].get::<bool>("forced").unwrap());
        let mut ended = false;
        while let Some(ev) = h.try_pull_event() {
            ended |= matches!(SegmentEvent::parse(&ev), Some(SegmentEvent::End { .. }));
        }
        assert!(ended, "{signal}: the end event went downstream");
        // The gate carries on: speech opens a new segment (after `reset` the
        // engine relearns the room first).
        push(&mut h, &sounds, 100);
        let mut seed = 7;
        for n in 250..300u64 {
            assert_eq!(
                h.push(frame(Sound::Voiced, n, &mut seed)),
                Ok(gst::FlowSuccess::Ok)
            );
        }
        assert!(names(&messages(&bus)).contains(&"speech-start"), "{signal}");
    }
}

/// Four concurrent Silero gates, batched through the shared model or each
/// with its own session, decide exactly alike (per-session state in the batch).
#[test]
fn silero_shared_batches_decide_like_private_sessions() {
    init();
    let c = corpus::build(4).expect("espeak-ng and sox generate the corpus");
    let props = corpus::silero_properties();
    let run = |shared: bool| -> (Vec<Vec<(String, u64)>>, u64, u64) {
        let threads: Vec<_> = (0..4)
            .map(|k| {
                let audio: Vec<i16> = c.samples[k * 8000..].to_vec();
                let props = props.clone();
                std::thread::spawn(move || {
                    let mut builder =
                        gst::ElementFactory::make("specvadgate").property("silero-shared", shared);
                    for (key, v) in &props {
                        builder = builder.property_from_str(key, v);
                    }
                    let element = builder.build().unwrap();
                    let bus = gst::Bus::new();
                    element.set_bus(Some(&bus));
                    let mut h = Harness::with_element(&element, Some("sink"), Some("src"));
                    h.set_src_caps_str(CAPS);
                    for (i, chunk) in audio.chunks(320).enumerate() {
                        let bytes: Vec<u8> = chunk.iter().flat_map(|s| s.to_le_bytes()).collect();
                        let mut b = gst::Buffer::from_mut_slice(bytes);
                        b.get_mut()
                            .unwrap()
                            .set_pts(gst::ClockTime::from_mseconds(20 * i as u64));
                        assert_eq!(h.push(b), Ok(gst::FlowSuccess::Ok));
                    }
                    let stats = element.property::<gst::Structure>("stats");
                    let decisions: Vec<(String, u64)> = messages(&bus)
                        .iter()
                        .map(|s| (s.name().to_string(), s.get::<u64>("running-time").unwrap()))
                        .collect();
                    (
                        decisions,
                        stats.get::<u64>("silero-batches").unwrap(),
                        stats.get::<u64>("silero-windows").unwrap(),
                    )
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let batches = results.iter().map(|r| r.1).max().unwrap();
        let windows = results.iter().map(|r| r.2).max().unwrap();
        (results.into_iter().map(|r| r.0).collect(), batches, windows)
    };
    let (private, private_batches, private_windows) = run(false);
    let (shared, shared_batches, shared_windows) = run(true);
    assert!(private.iter().all(|d| d.len() >= 3), "{private:?}");
    assert_eq!(shared, private, "batched inference changed a decision");
    assert_eq!(
        private_batches, private_windows,
        "a private session runs one window per call"
    );
    assert!(
        shared_windows > private_windows,
        "one model ran the windows of every gate: {shared_windows} vs {private_windows} of the longest"
    );
    eprintln!(
        "shared model: {shared_windows} windows in {shared_batches} batches (private: {private_batches})"
    );
    assert!(shared_batches <= shared_windows);
}
