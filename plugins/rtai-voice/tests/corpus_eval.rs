//! specvadgate on the labelled corpus (tests/corpus): per engine, speech
//! recall, speculative acceptance, false starts and false commits on
//! non-speech, and the added latency of the first forwarded speech sample.

mod corpus;

use gst::prelude::*;

#[derive(Debug, Default, Clone)]
struct Segment {
    start_ns: u64,
    end_ns: Option<u64>,
    committed: bool,
    cancelled: bool,
}

#[derive(Debug)]
pub struct Report {
    engine: String,
    recall: f64,
    acceptance: f64,
    starts: usize,
    false_starts: usize,
    false_commits: usize,
    non_speech: usize,
    mean_first_sample_latency_ms: f64,
    /// The non-speech bursts that opened a segment, by kind.
    false_start_kinds: Vec<String>,
}

fn run(engine: &str, props: &[(&str, String)], c: &corpus::Corpus) -> Report {
    // The voiced 10 ms frames that open a segment (the gate's effective start-frames).
    let prop = |k: &str| props.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
    let mut start_frames: u64 = prop("start-frames").map_or(1, |v| v.parse().unwrap());
    if engine == "silero" {
        let min_speech: u64 = prop("silero-min-speech").map_or(100, |v| v.parse().unwrap());
        start_frames = start_frames.max(min_speech.div_ceil(10));
    }
    let pipeline = gst::parse::launch(
        "appsrc name=src format=time caps=audio/x-raw,format=S16LE,layout=interleaved,rate=16000,channels=1 \
         ! specvadgate name=gate ! fakesink sync=false",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let gate = pipeline.by_name("gate").unwrap();
    for (k, v) in props {
        gate.set_property_from_str(k, v);
    }
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    src.set_property("max-bytes", 0u64);
    pipeline.set_state(gst::State::Playing).unwrap();
    // 20 ms buffers, as a capture source would deliver.
    for (i, chunk) in c.samples.chunks(320).enumerate() {
        let bytes: Vec<u8> = chunk.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut buffer = gst::Buffer::from_mut_slice(bytes);
        let b = buffer.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_mseconds(20 * i as u64));
        b.set_duration(gst::ClockTime::from_mseconds(20));
        src.push_buffer(buffer).unwrap();
    }
    src.end_of_stream().unwrap();
    let mut segments: std::collections::BTreeMap<u64, Segment> = Default::default();
    for msg in pipeline
        .bus()
        .unwrap()
        .iter_timed(gst::ClockTime::from_seconds(60))
    {
        match msg.view() {
            gst::MessageView::Element(e) => {
                let s = e.structure().unwrap();
                let (Ok(id), Ok(rt)) = (s.get::<u64>("segment-id"), s.get::<u64>("running-time"))
                else {
                    continue;
                };
                let seg = segments.entry(id).or_default();
                match s.name().as_str() {
                    "speech-start" => seg.start_ns = rt,
                    "speech-commit" => seg.committed = true,
                    "speech-cancel" => {
                        seg.cancelled = true;
                        seg.end_ns = Some(rt);
                    }
                    "speech-end" => seg.end_ns = Some(rt),
                    _ => {}
                }
            }
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{}", e.error()),
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();

    let overlaps = |seg: &Segment, l: &corpus::Label| {
        let end = seg.end_ns.unwrap_or(u64::MAX);
        seg.start_ns < l.end_ns() && end > l.start_ns()
    };
    let speech: Vec<&corpus::Label> = c.labels.iter().filter(|l| l.kind.is_speech()).collect();
    let other: Vec<&corpus::Label> = c.labels.iter().filter(|l| !l.kind.is_speech()).collect();
    let mut latencies = Vec::new();
    let recalled = speech
        .iter()
        .filter(|l| {
            let hit = segments
                .values()
                .filter(|s| s.committed && overlaps(s, l))
                .min_by_key(|s| s.start_ns);
            if let Some(s) = hit {
                // Speculative forwarding: the first voiced sample leaves with the start
                // decision, once the opening run of voiced 10 ms frames is analysed.
                latencies.push(
                    (s.start_ns + start_frames * 10_000_000).saturating_sub(l.start_ns()) as f64
                        / 1e6,
                );
            }
            hit.is_some()
        })
        .count();
    let false_started: Vec<&&corpus::Label> = other
        .iter()
        .filter(|l| segments.values().any(|s| overlaps(s, l)))
        .collect();
    let false_starts = false_started.len();
    let false_start_kinds = false_started.iter().map(|l| l.what.clone()).collect();
    let false_commits = other
        .iter()
        .filter(|l| {
            segments
                .values()
                .any(|s| s.committed && overlaps(s, l) && !speech.iter().any(|sp| overlaps(s, sp)))
        })
        .count();
    let starts = segments.len();
    let commits = segments.values().filter(|s| s.committed).count();
    Report {
        engine: engine.into(),
        recall: recalled as f64 / speech.len() as f64,
        acceptance: if starts > 0 {
            commits as f64 / starts as f64
        } else {
            0.0
        },
        starts,
        false_starts,
        false_commits,
        non_speech: other.len(),
        mean_first_sample_latency_ms: latencies.iter().sum::<f64>() / latencies.len().max(1) as f64,
        false_start_kinds,
    }
}

/// Runs every engine on `c` and prints the table.
fn evaluate(name: &str, c: &corpus::Corpus) -> Vec<Report> {
    println!(
        "\n{name}: {} utterances, {} non-speech sounds, {:.1} s\n{:<8} {:>7} {:>10} {:>6} {:>12} {:>13} {:>16}",
        c.labels.iter().filter(|l| l.kind.is_speech()).count(),
        c.labels.iter().filter(|l| !l.kind.is_speech()).count(),
        c.samples.len() as f64 / corpus::RATE as f64,
        "engine",
        "recall",
        "acceptance",
        "starts",
        "false starts",
        "false commits",
        "first out (ms)"
    );
    let mut reports = Vec::new();
    let engines = [
        ("energy", vec![("engine", "energy".to_string())]),
        ("webrtc", vec![("engine", "webrtc".to_string())]),
        ("silero", {
            let mut props = corpus::silero_properties();
            // Development only: extra silero properties, `name=value;name=value`.
            if let Ok(extra) = std::env::var("RTAI_DEV_SILERO_PROPS") {
                for kv in extra.split(';').filter(|kv| !kv.is_empty()) {
                    let (k, v) = kv.split_once('=').expect("name=value");
                    props.push((Box::leak(k.to_string().into_boxed_str()), v.to_string()));
                }
            }
            props
        }),
    ];
    for (engine, props) in &engines {
        let r = run(engine, props, c);
        println!(
            "{:<8} {:>7.3} {:>10.3} {:>6} {:>9}/{:<2} {:>10}/{:<2} {:>16.1}",
            r.engine,
            r.recall,
            r.acceptance,
            r.starts,
            r.false_starts,
            r.non_speech,
            r.false_commits,
            r.non_speech,
            r.mean_first_sample_latency_ms
        );
        println!(
            "         false starts on: {}",
            if r.false_start_kinds.is_empty() {
                "-".into()
            } else {
                r.false_start_kinds.join(", ")
            }
        );
        reports.push(r);
    }
    reports
}

/// Development corpus only (analysis of a change; never the held-out corpus):
/// `cargo test --release -p gst-plugin-rtai-voice --test corpus_eval dev -- --ignored --nocapture`.
#[test]
#[ignore]
fn dev_corpus_report() {
    gst::init().unwrap();
    gstrtaivoice::plugin_register_static().unwrap();
    let tuning = corpus::build(12).expect("espeak-ng and sox generate the corpus");
    evaluate("tuning corpus", &tuning);
    let dev = corpus::build_dev(21).expect("espeak-ng and sox generate the dev corpus");
    evaluate("dev corpus", &dev);
}

#[test]
fn corpus_report_per_engine() {
    gst::init().unwrap();
    gstrtaivoice::plugin_register_static().unwrap();
    let c = corpus::build(12).expect("espeak-ng and sox generate the corpus");
    if let Ok(path) = std::env::var("RTAI_CORPUS_DUMP") {
        // For offline analysis: raw S16LE 16 kHz mono, and the labels beside it.
        let bytes: Vec<u8> = c.samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        std::fs::write(&path, bytes).expect("corpus dump written");
        let labels: String = c
            .labels
            .iter()
            .map(|l| format!("{}\t{}\t{}\n", l.start, l.end, l.what))
            .collect();
        std::fs::write(format!("{path}.labels"), labels).expect("corpus labels written");
    }
    let reports = evaluate("tuning corpus", &c);
    // The held-out corpus (other voices, sentences, seed and noises: music, TV
    // chatter, door slams, keyboard, breathing) was never used for tuning.
    let held_out =
        corpus::build_held_out(15).expect("espeak-ng and sox generate the held-out corpus");
    let held_out_reports = evaluate("held-out corpus", &held_out);
    for r in &held_out_reports {
        if r.engine == "silero" {
            assert!(
                r.recall >= 0.98,
                "held-out: silero recall {:.3} below 0.98",
                r.recall
            );
            // The target. Measured 1.000 (15 starts, 15 commits) with
            // silero-min-speech=100, chosen on the tuning and dev corpora only; 0.944
            // before it (music, TV chatter and breathing opened segments).
            assert!(
                r.acceptance >= 0.95,
                "held-out: silero acceptance {:.3} below 0.95 ({:?})",
                r.acceptance,
                r.false_start_kinds
            );
        }
    }
    for r in &reports {
        assert!(
            r.recall >= 0.98,
            "{}: speech recall {:.3} below 0.98",
            r.engine,
            r.recall
        );
        let (min_acceptance, max_false_commits, max_onset_ms) = match r.engine.as_str() {
            "energy" => (0.65, 6, 32.0),
            "webrtc" => (0.62, 6, 32.0),
            // The target: acceptance ≥ 95 % with the silero engine.
            _ => (0.95, 0, 200.0),
        };
        assert!(
            r.acceptance >= min_acceptance,
            "{}: acceptance {:.3} below {min_acceptance}",
            r.engine,
            r.acceptance
        );
        assert!(
            r.false_commits <= max_false_commits,
            "{}: committed {} non-speech bursts ({:?})",
            r.engine,
            r.false_commits,
            r.false_start_kinds
        );
        assert!(
            r.mean_first_sample_latency_ms <= max_onset_ms,
            "{}: first speech sample after {:.1} ms",
            r.engine,
            r.mean_first_sample_latency_ms
        );
    }
}
