//! analyticssink driven through its request pads with scripted metas, segment
//! events and text; storage checked in SQLite files and a real PostgreSQL
//! server, publishing in a real Redis, the HTTP API over loopback, and
//! /metrics parsed by prometheus_client's parser.

mod common;

use std::time::Duration;

use common::*;
use gst::prelude::*;
use rtai_core::{InferenceResult, SegmentEvent};

fn of_type<'a>(events: &'a [serde_json::Value], t: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["type"] == t).collect()
}

#[test]
fn object_events_and_scores_from_scripted_metas() {
    let rig = Rig::new(
        &[
            ("clip-threshold", 0.6f64.to_value()),
            ("clip-padding", 500u32.to_value()),
        ],
        &[VIDEO],
    );
    scripted_video(&rig, 0);
    rig.eos();
    let all = drain(&rig.bus);
    rig.stop();
    assert!(
        all.iter().any(|m| m.type_() == gst::MessageType::Eos),
        "the sink posts EOS once every pad is at EOS"
    );
    let events = element_messages(&all, "rtai-analytics-event")
        .iter()
        .map(|s| event_json(s))
        .collect::<Vec<_>>();
    let clips = element_messages(&all, "rtai-clip-marker");

    let appear = of_type(&events, "object_appear");
    let leave = of_type(&events, "object_leave");
    assert_eq!(appear.len(), 5, "car + 4 people: {events:#?}");
    assert_eq!(leave.len(), 5);
    let car = appear.iter().find(|e| e["label"] == "car").unwrap();
    assert_eq!(
        (
            car["track_id"].as_i64(),
            car["start_ns"].as_u64(),
            car["stream"].as_str()
        ),
        (Some(1), Some(0), Some("sink_0"))
    );
    assert_eq!(car["confidence"], 0.9);
    // A new class at 0.9 confidence: 0.7 × (0.5 + 0.45) = 0.665.
    assert_eq!(car["clip_worthy_score"], 0.665);
    assert_eq!(car["data"]["model"], "scripted");
    let people: Vec<_> = appear.iter().filter(|e| e["label"] == "person").collect();
    // person is new and the count spiked from 1 to 5: 1 − 0.3 × 0.5 = 0.85, × 0.9 = 0.765.
    assert!(
        people.iter().all(|p| p["clip_worthy_score"] == 0.765),
        "{people:#?}"
    );
    assert!(people.iter().all(|p| p["start_ns"] == 1_000_000_000u64));
    let person_leave = leave.iter().find(|e| e["track_id"] == 2).unwrap();
    assert_eq!(
        (
            person_leave["start_ns"].as_u64(),
            person_leave["end_ns"].as_u64()
        ),
        (Some(S), Some(S + 400 * MS))
    );
    assert_eq!(person_leave["data"]["frames"], 5);
    // Clip markers: one for the car at 0 s, one for the people (car's clip ends at 0.5 s).
    let clip_events = of_type(&events, "clip");
    assert_eq!(clip_events.len(), 2, "{clip_events:#?}");
    assert_eq!(
        (
            clip_events[0]["start_ns"].as_u64(),
            clip_events[0]["end_ns"].as_u64()
        ),
        (Some(0), Some(500 * MS))
    );
    assert_eq!(
        (
            clip_events[1]["start_ns"].as_u64(),
            clip_events[1]["end_ns"].as_u64()
        ),
        (Some(500 * MS), Some(1500 * MS))
    );
    assert_eq!(clip_events[1]["data"]["reason"], "object_appear");
    assert_eq!(clips.len(), 2);
    assert_eq!(
        clips[1].get::<&str>("source").unwrap(),
        clip_events[1]["data"]["source"].as_str().unwrap()
    );
    let stats = rig.stats();
    assert_eq!(
        stats.get::<u64>("events").ok(),
        None,
        "stats are empty once stopped"
    );
}

#[test]
fn clip_markers_are_posted_with_running_times() {
    let rig = Rig::new(
        &[
            ("clip-threshold", 0.6f64.to_value()),
            ("clip-padding", 500u32.to_value()),
            ("post-messages", false.to_value()),
        ],
        &[VIDEO],
    );
    scripted_video(&rig, 0);
    rig.eos();
    let clips = messages(&rig.bus, "rtai-clip-marker");
    assert!(
        messages(&rig.bus, "rtai-analytics-event").is_empty(),
        "post-messages=false"
    );
    rig.stop();
    let ranges: Vec<(u64, u64, f64)> = clips
        .iter()
        .map(|c| {
            (
                c.get("start").unwrap(),
                c.get("end").unwrap(),
                c.get("clip-worthy-score").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ranges,
        vec![(0, 500 * MS, 0.665), (500 * MS, 1500 * MS, 0.765)]
    );
    assert!(
        clips
            .iter()
            .all(|c| c.get::<&str>("stream").unwrap() == "sink_0")
    );
}

#[test]
fn malformed_metas_are_ignored_with_a_debug_log() {
    init();
    let log = capture_log("analyticssink");
    let rig = Rig::new(&[], &[VIDEO]);
    let mut b = video_frame(0, &[Det("car", Some(1), 0.9)]);
    {
        let b = b.get_mut().unwrap();
        let bad = [
            gst::Structure::builder("detection")
                .field("confidence", "high")
                .build(),
            gst::Structure::builder("detection")
                .field("confidence", 3.0f64)
                .build(),
            gst::Structure::builder("detection")
                .field("confidence", 0.5f64)
                .field("label_id", "seven")
                .build(),
            gst::Structure::builder("detection")
                .field("confidence", f64::NAN)
                .build(),
            gst::Structure::builder("detection").build(),
        ];
        for s in bad {
            let mut roi = gst_video::VideoRegionOfInterestMeta::add(b, "bad", (0, 0, 1, 1));
            roi.add_param(s);
        }
        let mut roi = gst_video::VideoRegionOfInterestMeta::add(b, "dog", (0, 0, 1, 1));
        roi.add_param(
            gst::Structure::builder("detection")
                .field("confidence", 0.5f64)
                .build(),
        );
        roi.add_param(
            gst::Structure::builder("object_id")
                .field("id", "x")
                .build(),
        );
        // Not a detection at all (an encoder ROI hint): neither counted nor malformed.
        gst_video::VideoRegionOfInterestMeta::add(b, "roi-hint", (0, 0, 1, 1));
        // A result meta with a wrong field type.
        let mut m =
            gst::meta::CustomMeta::add(b, rtai_core::inference::INFERENCE_META_NAME).unwrap();
        m.mut_structure().set("kind", 5i32);
    }
    rig.push(0, b);
    let stats = rig.stats();
    let events = rig.events();
    rig.eos();
    rig.stop();
    assert_eq!(stats.get::<u64>("malformed").unwrap(), 7, "{stats}");
    let appear = of_type(&events, "object_appear");
    assert_eq!(appear.len(), 1, "only the good car: {events:#?}");
    assert_eq!(appear[0]["label"], "car");
    let pad = rig.sink.static_pad("sink_0").unwrap();
    let addr = pad.as_ptr() as usize;
    let logged: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(l, o, _)| *l == gst::DebugLevel::Debug && *o == addr)
        .map(|(_, _, m)| m.clone())
        .collect();
    assert_eq!(
        logged
            .iter()
            .filter(|m| m.contains("ignoring malformed meta"))
            .count(),
        7,
        "{logged:#?}"
    );
    assert!(
        logged
            .iter()
            .any(|m| m.contains("confidence 3 outside 0..1")),
        "{logged:#?}"
    );
}

/// Speech on an audio pad (protocol events) and its transcript on a text pad.
#[test]
fn speech_segments_get_their_transcripts_and_scores() {
    let rig = Rig::new(&[("keywords", "fire,help".to_value())], &[AUDIO, TEXT]);
    let seg = |e: SegmentEvent| e.to_event();
    // Segment 1: 1.0–3.0 s, committed, transcript with a keyword spoken fast.
    rig.event(
        0,
        seg(SegmentEvent::Start {
            id: 1,
            running_time: gst::ClockTime::from_seconds(1),
            lookback: gst::ClockTime::ZERO,
        }),
    );
    for n in 100..300u64 {
        if n == 125 {
            rig.event(0, seg(SegmentEvent::Commit { id: 1 }));
        }
        rig.push(0, audio_frame(n * 10 * MS, 0.3));
    }
    rig.event(0, seg(SegmentEvent::End { id: 1 }));
    // Segment 2: a false start, cancelled: no event.
    rig.event(
        0,
        seg(SegmentEvent::Start {
            id: 2,
            running_time: gst::ClockTime::from_seconds(4),
            lookback: gst::ClockTime::ZERO,
        }),
    );
    rig.push(0, audio_frame(4 * S, 0.5));
    rig.event(
        0,
        seg(SegmentEvent::Cancel {
            id: 2,
            reason: "click".into(),
        }),
    );
    assert!(
        of_type(&rig.events(), "speech").is_empty(),
        "segment 1 waits for its transcript"
    );
    rig.push(
        1,
        text_buffer(
            3 * S,
            "help there is a fire in the kitchen right now call someone",
            Some(1),
        ),
    );
    let events = rig.events();
    rig.eos();
    rig.stop();
    let speech = of_type(&events, "speech");
    assert_eq!(speech.len(), 1, "{events:#?}");
    let s = speech[0];
    assert_eq!(
        (
            s["stream"].as_str(),
            s["start_ns"].as_u64(),
            s["end_ns"].as_u64()
        ),
        (Some("sink_0"), Some(S), Some(3 * S))
    );
    assert_eq!(
        s["text"],
        "help there is a fire in the kitchen right now call someone"
    );
    assert_eq!(
        s["data"]["signals"]["keyword"],
        serde_json::json!(["fire", "help"])
    );
    // 0.3 amplitude sine: about −13.5 dBFS.
    let level = s["data"]["level_dbfs"].as_f64().unwrap();
    assert!((-14.0..-13.0).contains(&level), "{level}");
    assert_eq!(s["data"]["words_per_second"], 6.0);
    assert_eq!(s["clip_worthy_score"], 0.88);
    assert_eq!(of_type(&events, "clip").len(), 1);
}

/// The demo's shape: inferclient (output=text) forwards specvadgate's segment
/// events and prosodymeter's `rtai-prosody` events on the transcript pad. The
/// second segment is an octave higher, 10 dB louder and twice as fast as the
/// speaker's first: every prosody signal is 1 and it makes a clip; a malformed
/// prosody event is counted and ignored.
#[test]
fn prosody_against_the_speakers_baseline_raises_the_score() {
    let rig = Rig::new(&[("transcript-wait", 5000u32.to_value())], &[TEXT]);
    let prosody = |id: u64, f0: f64, level: f64, rate: f64| {
        rtai_core::prosody::Prosody {
            segment_id: id,
            duration: 2 * S,
            f0_mean: f0,
            f0_min: 0.9 * f0,
            f0_max: 1.1 * f0,
            level_db: level,
            syllables: (2.0 * rate) as u32,
            rate,
            voiced_ratio: 0.6,
        }
        .to_event()
    };
    for (id, f0, level, rate) in [(1u64, 110.0, -30.0, 3.0), (2, 220.0, -20.0, 6.0)] {
        let start = id * 10 * S;
        rig.event(
            0,
            SegmentEvent::Start {
                id,
                running_time: gst::ClockTime::from_nseconds(start),
                lookback: gst::ClockTime::ZERO,
            }
            .to_event(),
        );
        rig.event(0, SegmentEvent::Commit { id }.to_event());
        rig.event(0, prosody(id, f0, level, rate));
        rig.push(0, text_buffer(start, "the weather is fine", Some(id)));
        rig.event(0, SegmentEvent::End { id }.to_event());
    }
    let bad = gst::Structure::builder("rtai-prosody")
        .field("segment-id", 2u64)
        .build();
    rig.event(0, gst::event::CustomDownstream::new(bad));
    let events = rig.events();
    let malformed = rig
        .sink
        .property::<gst::Structure>("stats")
        .get::<u64>("malformed")
        .unwrap();
    rig.eos();
    rig.stop();
    let speech = of_type(&events, "speech");
    assert_eq!(speech.len(), 2, "{events:#?}");
    assert_eq!(speech[0]["clip_worthy_score"], 0.0, "the baseline itself");
    let excited = speech[1];
    assert_eq!(
        excited["data"]["signals"],
        serde_json::json!({"keyword": [], "energy": 1.0, "rate": 1.0, "pitch": 1.0})
    );
    assert_eq!(excited["data"]["prosody"]["f0_mean_hz"], 220.0);
    assert_eq!(excited["data"]["prosody"]["syllables_per_second"], 6.0);
    assert_eq!(excited["clip_worthy_score"], 0.784);
    let clips = of_type(&events, "clip");
    assert_eq!(clips.len(), 1);
    assert_eq!(clips[0]["data"]["source"], excited["event_id"]);
    assert_eq!(malformed, 1);
}

#[test]
fn a_segment_without_transcript_is_emitted_after_the_wait() {
    let rig = Rig::new(&[("transcript-wait", 100u32.to_value())], &[AUDIO]);
    rig.event(
        0,
        SegmentEvent::Start {
            id: 9,
            running_time: gst::ClockTime::ZERO,
            lookback: gst::ClockTime::ZERO,
        }
        .to_event(),
    );
    for n in 0..50u64 {
        rig.push(0, audio_frame(n * 10 * MS, 0.1));
    }
    rig.event(0, SegmentEvent::End { id: 9 }.to_event());
    // The element's timer emits it; wait for the bus message.
    let msg = rig
        .bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(5),
            &[gst::MessageType::Element],
        )
        .expect("speech event");
    let s = event_json(msg.structure().unwrap());
    rig.eos();
    rig.stop();
    assert_eq!(
        (s["type"].as_str(), s["end_ns"].as_u64(), s["text"].as_str()),
        (Some("speech"), Some(500 * MS), None)
    );
}

#[test]
fn captions_and_result_metas_become_scene_events_and_round_trip_metrics() {
    let rig = Rig::new(&[("listen", "127.0.0.1:0".to_value())], &[VIDEO, TEXT]);
    let mut b = video_frame(0, &[]);
    InferenceResult {
        kind: "caption".into(),
        text: "a red car drives past a fire truck".into(),
        model: Some("vlm-test".into()),
        confidence: None,
        round_trip: Some(250 * MS),
        segment_id: None,
    }
    .attach(b.get_mut().unwrap());
    rig.push(0, b);
    rig.push(1, text_buffer(S, "an empty street", None));
    rig.push(1, text_buffer(2 * S, "an empty street", None));
    let events = rig.events();
    let (_, _, metrics) = http_get(&rig.addr(), "/metrics", &[]);
    rig.eos();
    rig.stop();
    let scenes = of_type(&events, "scene");
    assert_eq!(
        scenes.len(),
        2,
        "repeated captions are one event: {events:#?}"
    );
    assert_eq!(
        scenes[0]["data"]["signals"]["keyword"],
        serde_json::json!(["fire"])
    );
    assert_eq!(scenes[0]["data"]["model"], "vlm-test");
    assert!(
        metrics.contains("rtai_inference_round_trip_seconds_bucket{element=\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("model=\"vlm-test\",le=\"0.256\"} 1"),
        "{metrics}"
    );
}

fn count_rows(events: &[serde_json::Value]) -> usize {
    events.len()
}

#[test]
fn sqlite_holds_the_events_after_a_run() {
    let dir = temp_dir("sqlite");
    let db = dir.join("events.sqlite");
    let rig = Rig::new(
        &[
            ("database", db.to_str().unwrap().to_value()),
            ("batch-size", 3u32.to_value()),
        ],
        &[VIDEO],
    );
    scripted_video(&rig, 0);
    rig.eos();
    let events = rig.events();
    rig.stop();
    let conn = rusqlite::Connection::open(&db).unwrap();
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM rtai_events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n as usize, count_rows(&events));
    let migrations: i64 = conn
        .query_row("SELECT MAX(version) FROM rtai_schema_migrations", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(migrations, 3);
    let (label, track, score, data): (String, i64, f64, String) = conn
        .query_row("SELECT label, track_id, clip_worthy_score, data FROM rtai_events WHERE type = 'object_appear' ORDER BY id LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap();
    assert_eq!((label.as_str(), track, score), ("car", 1, 0.665));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&data).unwrap()["signals"]["new_class"],
        true
    );
    // A second run on the same file migrates nothing and appends.
    let rig = Rig::new(&[("database", db.to_str().unwrap().to_value())], &[VIDEO]);
    rig.push(0, video_frame(0, &[Det("bus", Some(7), 0.7)]));
    rig.eos();
    rig.stop();
    let n2: i64 = conn
        .query_row("SELECT COUNT(*) FROM rtai_events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n2, n + 2, "bus appear + leave");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn postgresql_holds_the_events_and_writes_survive_an_outage() {
    init();
    let log = capture_log("analyticssink");
    let mut pg = Postgres::start();
    let url = pg.create_database("rtai_events_test");
    let rig = Rig::new(
        &[
            ("database", url.to_value()),
            ("batch-size", 4u32.to_value()),
        ],
        &[VIDEO],
    );
    scripted_video(&rig, 0);
    // The server goes away mid-run: the pipeline keeps flowing, writes fail and are retried.
    let written_before = rig.stats().get::<u64>("events").unwrap();
    pg.stop();
    for n in 40..60u64 {
        rig.push(
            0,
            video_frame(n * 100 * MS, &[Det("truck", Some(100 + n as i32), 0.6)]),
        );
    }
    let failures_seen = {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let f = rig.stats().get::<u64>("write-failures").unwrap();
            if f > 0 || std::time::Instant::now() > deadline {
                break f;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert!(failures_seen > 0, "writes failed while the server was down");
    let warnings = logged_about(&log, gst::DebugLevel::Warning, &rig.sink);
    assert!(
        warnings
            .iter()
            .any(|m| m.contains("events failed (attempt 1)") && m.contains("PostgreSQL")),
        "a warning on the element: {warnings:#?}"
    );
    pg.restart();
    rig.eos();
    let events = rig.events();
    rig.stop();
    let stats_rows = pg.psql(
        &url,
        "SELECT COUNT(*), COUNT(DISTINCT event_key) FROM rtai_events",
    );
    let (rows, keys) = stats_rows.trim().split_once('|').unwrap();
    assert_eq!(
        rows.parse::<usize>().unwrap(),
        events.len(),
        "every event written once after the outage (before: {written_before})"
    );
    assert_eq!(rows, keys, "no duplicates from retried batches");
    let car = pg.psql(&url, "SELECT label, track_id, start_ns, clip_worthy_score FROM rtai_events WHERE type = 'object_appear' ORDER BY id LIMIT 1");
    assert_eq!(car.trim(), "car|1|0|0.665");
    let version = pg.psql(&url, "SELECT MAX(version) FROM rtai_schema_migrations");
    assert_eq!(version.trim(), "3");
    // Debian's PostgreSQL has no TimescaleDB: migration 3 leaves a plain table with the
    // (event_key, wall_ms) key the inserts' ON CONFLICT names (a hypertable's keys).
    let timescale = pg.psql(
        &url,
        "SELECT COUNT(*) FROM pg_available_extensions WHERE name = 'timescaledb'",
    );
    assert_eq!(timescale.trim(), "0");
    let key = pg.psql(
        &url,
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'rtai_events_key_wall'",
    );
    assert!(
        key.contains("UNIQUE INDEX") && key.contains("(event_key, wall_ms)"),
        "{key}"
    );
    let trucks = pg.psql(
        &url,
        "SELECT COUNT(*) FROM rtai_events WHERE label = 'truck' AND type = 'object_appear'",
    );
    assert_eq!(trucks.trim(), "20");
}

#[test]
fn redis_stream_gets_every_event() {
    let redis = Redis::start();
    let rig = Rig::new(
        &[
            ("redis-url", redis.url().to_value()),
            ("redis-stream", "rtai:test".to_value()),
        ],
        &[VIDEO],
    );
    scripted_video(&rig, 0);
    rig.eos();
    let events = rig.events();
    rig.stop();
    let len: usize = redis.cli(&["XLEN", "rtai:test"]).trim().parse().unwrap();
    assert_eq!(len, events.len());
    let first = redis.cli(&["XRANGE", "rtai:test", "-", "+", "COUNT", "1"]);
    assert!(first.contains("object_appear"), "{first}");
    let json_line = first.lines().find(|l| l.starts_with('{')).unwrap();
    let ev: serde_json::Value = serde_json::from_str(json_line).unwrap();
    assert_eq!(ev["event_id"], events[0]["event_id"]);
}

/// Redis being away is logged as warnings on the element (its debug category,
/// not stderr), without the URL's password; the pipeline keeps flowing.
#[test]
fn redis_failures_are_warnings_on_the_element() {
    init();
    let log = capture_log("analyticssink");
    // Port 1 on loopback refuses.
    let rig = Rig::new(
        &[("redis-url", "redis://:t0ken-pw@127.0.0.1:1/0".to_value())],
        &[VIDEO],
    );
    rig.push(0, video_frame(0, &[Det("cat", Some(1), 0.9)]));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while rig.stats().get::<u64>("redis-failures").unwrap() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no Redis failure counted: {}",
            rig.stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let warnings = logged_about(&log, gst::DebugLevel::Warning, &rig.sink);
    rig.eos();
    rig.stop();
    assert!(
        warnings
            .iter()
            .any(|m| m.contains("cannot connect to Redis")),
        "{warnings:#?}"
    );
    let all = log.lock().unwrap();
    assert!(
        !all.iter().any(|(_, _, m)| m.contains("t0ken-pw")),
        "{all:#?}"
    );
}

#[test]
fn redis_stream_is_capped() {
    let redis = Redis::start();
    let rig = Rig::new(
        &[
            ("redis-url", redis.url().to_value()),
            ("redis-stream", "capped".to_value()),
            ("redis-max-len", 10u32.to_value()),
        ],
        &[VIDEO],
    );
    for n in 0..300u64 {
        rig.push(0, video_frame(n * 2 * S, &[Det("x", Some(n as i32), 0.5)]));
    }
    rig.eos();
    rig.stop();
    let len: usize = redis.cli(&["XLEN", "capped"]).trim().parse().unwrap();
    // MAXLEN ~ trims in whole macro nodes (100 entries by default).
    assert!((10..=200).contains(&len), "{len}");
}

#[test]
fn metrics_parse_with_prometheus_client() {
    let rig = Rig::new(&[("listen", "127.0.0.1:0".to_value())], &[VIDEO, AUDIO]);
    scripted_video(&rig, 0);
    rig.event(
        1,
        SegmentEvent::Start {
            id: 1,
            running_time: gst::ClockTime::ZERO,
            lookback: gst::ClockTime::ZERO,
        }
        .to_event(),
    );
    rig.event(
        1,
        SegmentEvent::Cancel {
            id: 1,
            reason: "x".into(),
        }
        .to_event(),
    );
    let (status, head, body) = http_get(&rig.addr(), "/metrics", &[]);
    let element = rig.sink.name().to_string();
    rig.eos();
    rig.stop();
    assert_eq!(status, 200);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let out = run_python("parse_metrics.py", &[], &body);
    assert!(
        out.status.success(),
        "prometheus_client could not parse:\n{body}"
    );
    let families: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sample = |family: &str, labels: serde_json::Value| -> Option<f64> {
        families[family]["samples"].as_array()?.iter().find(|s| {
            labels
                .as_object()
                .unwrap()
                .iter()
                .all(|(k, v)| s[1][k] == *v)
        })?[2]
            .as_f64()
    };
    // The parser strips _total from counter family names.
    assert_eq!(families["rtai_analytics_events"]["type"], "counter");
    assert_eq!(
        sample(
            "rtai_analytics_events",
            serde_json::json!({"element": element, "stream": "sink_0", "type": "object_appear"})
        ),
        Some(5.0)
    );
    // 20 frames of car, 5 frames of 4 people.
    assert_eq!(
        sample(
            "rtai_analytics_detections",
            serde_json::json!({"element": element, "class": "car", "pad": "sink_0"})
        ),
        Some(20.0)
    );
    assert_eq!(
        sample(
            "rtai_analytics_detections",
            serde_json::json!({"element": element, "class": "person"})
        ),
        Some(20.0)
    );
    assert_eq!(
        sample(
            "rtai_vad_segment_events",
            serde_json::json!({"element": element, "kind": "cancel", "stream": "sink_1"})
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            "rtai_vad_segment_events",
            serde_json::json!({"element": element, "kind": "start", "stream": "sink_1"})
        ),
        Some(1.0)
    );
    assert_eq!(
        families["rtai_analytics_write_queue_depth"]["type"],
        "gauge"
    );
    for name in families.as_object().unwrap().keys() {
        assert!(name.starts_with("rtai_"), "{name}");
    }
}

#[test]
fn sse_feed_receives_live_events() {
    let rig = Rig::new(&[("listen", "127.0.0.1:0".to_value())], &[VIDEO]);
    let addr = rig.addr();
    let (status, mut all) = Sse::open(&addr, "/api/events/stream");
    assert_eq!(status, 200);
    let (status, mut leaves_only) = Sse::open(&addr, "/api/events/stream?type=object-leave");
    assert_eq!(status, 200);
    rig.push(0, video_frame(0, &[Det("cat", Some(3), 0.75)]));
    let (event, data) = all.next_event().expect("a live event");
    assert_eq!(event, "object_appear");
    let ev: serde_json::Value = serde_json::from_str(&data).unwrap();
    assert_eq!(
        (ev["label"].as_str(), ev["track_id"].as_i64()),
        (Some("cat"), Some(3))
    );
    rig.push(0, video_frame(5 * S, &[]));
    let (event, data) = leaves_only.next_event().expect("the filtered feed's event");
    assert_eq!(event, "object_leave");
    assert!(data.contains("\"cat\""));
    rig.eos();
    rig.stop();
    // Both feeds end when the sink stops: the response's last chunk, not a read
    // timeout or a cut connection. The unfiltered feed still holds the leave.
    let rest = |sse: &mut Sse| -> Vec<String> {
        let mut events = Vec::new();
        loop {
            match sse.next() {
                SseRead::Event(event, _) => events.push(event),
                SseRead::End => return events,
                other => panic!("the feed did not end cleanly: {other:?} after {events:?}"),
            }
        }
    };
    assert_eq!(rest(&mut all), ["object_leave"]);
    assert_eq!(rest(&mut leaves_only), Vec::<String>::new());
}

#[test]
fn api_events_pages_and_filters() {
    let rig = Rig::new(&[("listen", "127.0.0.1:0".to_value())], &[VIDEO]);
    scripted_video(&rig, 0);
    rig.push(0, video_frame(10 * S, &[]));
    let addr = rig.addr();
    let events = rig.events();
    // The writer is asynchronous: wait until everything is stored.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while rig.stats().get::<u64>("rows-written").unwrap() < events.len() as u64 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let get = |path: &str| -> serde_json::Value {
        let (status, _, body) = http_get(&addr, path, &[]);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    };
    let page = get("/api/events?limit=3");
    assert_eq!(page["total"].as_u64().unwrap() as usize, events.len());
    assert_eq!(page["events"].as_array().unwrap().len(), 3);
    assert_eq!(page["next_offset"], 3);
    assert_eq!(page["events"][0]["event_id"], events[0]["event_id"]);
    let last = get(&format!("/api/events?limit=3&offset={}", events.len() - 1));
    assert_eq!(last["events"].as_array().unwrap().len(), 1);
    assert_eq!(last["next_offset"], serde_json::Value::Null);
    let leaves = get("/api/events?type=object-leave&stream=sink_0");
    assert_eq!(leaves["total"], 5);
    let newest = get("/api/events?order=desc&limit=1");
    assert_eq!(
        newest["events"][0]["event_id"],
        events.last().unwrap()["event_id"]
    );
    let future = get("/api/events?since=99999999999999");
    assert_eq!(future["total"], 0);
    let none_other = get("/api/events?stream=sink_9");
    assert_eq!(none_other["total"], 0);
    rig.eos();
    rig.stop();
}

#[test]
fn bad_requests_get_4xx() {
    let rig = Rig::new(&[("listen", "127.0.0.1:0".to_value())], &[VIDEO]);
    let addr = rig.addr();
    for (path, want) in [
        ("/api/events?type=explosion", 400),
        ("/api/events?limit=0", 400),
        ("/api/events?limit=100000", 400),
        ("/api/events?limit=ten", 400),
        ("/api/events?since=5&until=4", 400),
        ("/api/events?offset=-1", 400),
        // Beyond the databases' signed 64-bit OFFSET, and beyond u64.
        ("/api/events?offset=9223372036854775808", 400),
        ("/api/events?offset=18446744073709551615", 400),
        ("/api/events?offset=18446744073709551616", 400),
        ("/api/events?offset=9223372036854775807", 200),
        ("/api/events?order=sideways", 400),
        ("/api/events?bogus=1", 400),
        ("/api/events/stream?type=nope", 400),
        ("/nope", 404),
        ("/api/nope", 404),
    ] {
        let (status, _, body) = http_get(&addr, path, &[]);
        assert_eq!(status, want, "{path}: {body}");
    }
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    use std::io::{Read, Write};
    stream.write_all(format!("POST /api/events HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 405"), "{reply}");
    rig.stop();
}

#[test]
fn token_is_enforced_except_for_metrics() {
    let rig = Rig::new(
        &[
            ("listen", "127.0.0.1:0".to_value()),
            ("auth-token", "s3cret token".to_value()),
        ],
        &[VIDEO],
    );
    let pspec = rig.sink.find_property("auth-token").unwrap();
    assert!(
        !pspec.flags().contains(gst::glib::ParamFlags::READABLE),
        "the token is write-only"
    );
    let addr = rig.addr();
    for path in [
        "/",
        "/app.js",
        "/style.css",
        "/api/events",
        "/api/summary",
        "/api/latency",
        "/api/events/stream",
    ] {
        let (status, head, _) = http_get(&addr, path, &[]);
        assert_eq!(status, 401, "{path}");
        assert!(
            head.to_ascii_lowercase()
                .contains("www-authenticate: bearer")
        );
        let (status, _, _) = http_get(&addr, path, &[("Authorization", "Bearer wrong")]);
        assert_eq!(status, 401, "{path}");
    }
    let (status, _, body) = http_get(
        &addr,
        "/api/events",
        &[("Authorization", "Bearer s3cret token")],
    );
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = http_get(&addr, "/?access_token=s3cret%20token", &[]);
    assert_eq!(status, 200);
    assert!(body.contains("<canvas id=\"latency-chart\""));
    let (status, _, _) = http_get(&addr, "/metrics", &[]);
    assert_eq!(status, 200, "/metrics stays open for scrapers");
    rig.stop();
}

/// With a token the dashboard still works: the page carries its script and
/// style inline (a browser would fetch separate files without the token), and
/// the separate files, too, need the token.
#[test]
fn dashboard_page_and_assets_load_with_the_token_only() {
    let rig = Rig::new(
        &[
            ("listen", "127.0.0.1:0".to_value()),
            ("auth-token", "s3cret token".to_value()),
        ],
        &[VIDEO],
    );
    let addr = rig.addr();
    let (status, head, page) = http_get(&addr, "/?access_token=s3cret%20token", &[]);
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("text/html"), "{head}");
    // Everything the page needs is in it: no script, stylesheet or image from a URL.
    assert!(
        !page.contains("<script src") && !page.contains("rel=\"stylesheet\""),
        "{page}"
    );
    let script = page
        .split_once("<script>")
        .and_then(|(_, rest)| rest.split_once("</script>"))
        .expect("an inline script")
        .0;
    assert!(
        script.contains("function drawBars") && script.contains("new EventSource(withToken("),
        "the dashboard's script is inlined"
    );
    let style = page
        .split_once("<style>")
        .and_then(|(_, rest)| rest.split_once("</style>"))
        .expect("an inline style")
        .0;
    assert!(style.contains(".panel"), "the dashboard's style is inlined");
    let (status, _, _) = http_get(&addr, "/", &[]);
    assert_eq!(status, 401, "the page needs the token");
    for (path, content_type, needle) in [
        ("/app.js", "text/javascript", "function drawBars"),
        ("/style.css", "text/css", ".panel"),
    ] {
        let (status, _, _) = http_get(&addr, path, &[]);
        assert_eq!(status, 401, "{path} without the token");
        let (status, _, _) = http_get(&addr, &format!("{path}?access_token=wrong"), &[]);
        assert_eq!(status, 401, "{path} with a wrong token");
        for (query, headers) in [
            ("?access_token=s3cret%20token", &[][..]),
            ("", &[("Authorization", "Bearer s3cret token")][..]),
        ] {
            let (status, head, body) = http_get(&addr, &format!("{path}{query}"), headers);
            assert_eq!(status, 200, "{path}{query} {headers:?}");
            assert!(head.contains(content_type), "{head}");
            assert!(body.contains(needle), "{path}: {body}");
        }
    }
    rig.stop();
}

#[test]
fn unusable_database_is_a_clear_error() {
    init();
    let sink = gst::ElementFactory::make("analyticssink")
        .property("listen", "")
        .property("database", "/nonexistent-dir/x/events.sqlite")
        .build()
        .unwrap();
    let pipeline = gst::Pipeline::new();
    pipeline.add(&sink).unwrap();
    assert!(pipeline.set_state(gst::State::Playing).is_err());
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(gst::ClockTime::from_seconds(1), &[gst::MessageType::Error])
        .unwrap();
    let gst::MessageView::Error(err) = msg.view() else {
        unreachable!()
    };
    assert!(
        err.error().to_string().contains("analytics database"),
        "{}",
        err.error()
    );
    pipeline.set_state(gst::State::Null).unwrap();
}

#[test]
fn busy_port_is_a_clear_error() {
    init();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sink = gst::ElementFactory::make("analyticssink")
        .property("listen", taken.local_addr().unwrap().to_string())
        .build()
        .unwrap();
    let pipeline = gst::Pipeline::new();
    pipeline.add(&sink).unwrap();
    assert!(pipeline.set_state(gst::State::Playing).is_err());
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(gst::ClockTime::from_seconds(1), &[gst::MessageType::Error])
        .unwrap();
    let gst::MessageView::Error(err) = msg.view() else {
        unreachable!()
    };
    assert!(
        err.error().to_string().contains("HTTP server"),
        "{}",
        err.error()
    );
    pipeline.set_state(gst::State::Null).unwrap();
}

#[test]
fn database_and_redis_passwords_never_show() {
    init();
    // (database, as read back, redis-url, as read back). Port 1 on loopback
    // refuses: every start fails with an error message.
    let cases = [
        (
            "postgres://app:s3cret-pw@127.0.0.1:1/events",
            "postgres://app:***@127.0.0.1:1/events",
            "redis://:t0ken-pw@127.0.0.1:1/0",
            "redis://:***@127.0.0.1:1/0",
        ),
        (
            "postgres://app@127.0.0.1:1/events?connect_timeout=2&password=s3cret-pw",
            "postgres://***@127.0.0.1:1/events?connect_timeout=2&password=***",
            "redis://127.0.0.1:1/0?token=t0ken-pw",
            "redis://127.0.0.1:1/0?token=***",
        ),
        (
            "host=127.0.0.1 port=1 user=app password=s3cret-pw dbname=events",
            "host=127.0.0.1 port=1 user=app password=*** dbname=events",
            "redis://app:t0ken-pw@127.0.0.1:1",
            "redis://app:***@127.0.0.1:1",
        ),
        (
            "host=127.0.0.1 port=1 password='s3cret-pw",
            "(an unparsable connection string, not shown)",
            "redis://t0ken-pw@127.0.0.1:1",
            "redis://***@127.0.0.1:1",
        ),
    ];
    for (database, shown, redis, redis_shown) in cases {
        let sink = gst::ElementFactory::make("analyticssink")
            .property("listen", "")
            .property("database", database)
            .property("redis-url", redis)
            .build()
            .unwrap();
        assert_eq!(sink.property::<String>("database"), shown);
        assert_eq!(
            sink.property::<Option<String>>("redis-url").as_deref(),
            Some(redis_shown)
        );
        let pipeline = gst::Pipeline::new();
        pipeline.add(&sink).unwrap();
        assert!(
            pipeline.set_state(gst::State::Playing).is_err(),
            "{database}"
        );
        let msg = pipeline
            .bus()
            .unwrap()
            .timed_pop_filtered(gst::ClockTime::from_seconds(10), &[gst::MessageType::Error])
            .unwrap();
        let gst::MessageView::Error(err) = msg.view() else {
            unreachable!()
        };
        let text = format!("{} {:?}", err.error(), err.debug());
        // key=value strings are PostgreSQL's, not SQLite file names.
        assert!(
            text.contains("analytics database") && text.contains("PostgreSQL"),
            "{text}"
        );
        assert!(
            !text.contains("s3cret-pw") && !text.contains("t0ken-pw"),
            "{text}"
        );
        assert!(
            !std::path::Path::new(database).exists(),
            "no SQLite file named {database}"
        );
        pipeline.set_state(gst::State::Null).unwrap();
    }
}

/// PostgreSQL refuses NUL inside text, and transcripts and captions come from
/// remote servers: such an event is dropped and counted, warned about once,
/// and the events queued with and after it are all stored.
#[test]
fn a_poison_event_is_dropped_and_the_events_around_it_are_stored() {
    init();
    let log = capture_log("analyticssink");
    let pg = Postgres::start();
    let url = pg.create_database("rtai_poison_test");
    let rig = Rig::new(
        &[
            ("database", url.to_value()),
            ("batch-size", 4u32.to_value()),
        ],
        &[TEXT, VIDEO],
    );
    rig.push(0, text_buffer(0, "a caption with a \0 inside", None));
    scripted_video(&rig, 1);
    rig.push(0, text_buffer(5 * S, "another \0 one, other words", None));
    rig.push(1, video_frame(10 * S, &[Det("bus", Some(9), 0.8)]));
    let events = rig.events();
    let poison: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["text"].as_str().is_some_and(|t| t.contains('\0')))
        .collect();
    assert_eq!(poison.len(), 2, "{events:#?}");
    let good = events.len() - poison.len();
    // While the element runs: the writer must not be stuck on the poison.
    wait_until(
        "the events around the poison",
        Duration::from_secs(15),
        || rig.stats().get::<u64>("rows-written").unwrap() == good as u64,
    );
    let stats = rig.stats();
    assert_eq!(stats.get::<u64>("rejected").unwrap(), 2, "{stats}");
    assert_eq!(stats.get::<u64>("write-queue").unwrap(), 0, "{stats}");
    let warnings = logged_about(&log, gst::DebugLevel::Warning, &rig.sink);
    let rejected: Vec<&String> = warnings.iter().filter(|m| m.contains("rejected")).collect();
    assert_eq!(rejected.len(), 1, "warned once: {warnings:#?}");
    assert!(
        rejected[0].contains("22021"),
        "names the SQLSTATE: {rejected:?}"
    );
    rig.eos();
    // The tracks still open leave at EOS.
    let at_eos = rig.events().len();
    rig.stop();
    let rows = pg.psql(&url, "SELECT COUNT(*) FROM rtai_events");
    assert_eq!(rows.trim().parse::<usize>().unwrap(), good + at_eos);
    let json = pg.psql(&url, "SELECT DISTINCT jsonb_typeof(data) FROM rtai_events");
    assert_eq!(json.trim(), "object", "data is JSONB");
    let buses = pg.psql(
        &url,
        "SELECT COUNT(*) FROM rtai_events WHERE label = 'bus' AND type = 'object_appear'",
    );
    assert_eq!(
        buses.trim(),
        "1",
        "the event after the second poison is stored"
    );
}

/// Without a token a browser page on another origin could reach the server
/// through DNS rebinding (a name of the attacker's that resolves to
/// 127.0.0.1): requests whose Host is not the loopback address and port the
/// server is bound to are refused. A token protects on its own.
#[test]
fn without_a_token_foreign_host_headers_are_refused() {
    let rig = Rig::new(&[("listen", "127.0.0.1:0".to_value())], &[VIDEO]);
    let addr = rig.addr();
    let port = addr.rsplit_once(':').unwrap().1;
    for path in ["/", "/api/summary", "/metrics", "/healthz"] {
        for host in [
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("LocalHost:{port}"),
            format!("[::1]:{port}"),
        ] {
            let (status, _, body) = http_get_with_host(&addr, path, Some(&host), &[]);
            assert_eq!(status, 200, "{path} Host: {host}: {body}");
        }
        for host in [
            "evil.example".to_string(),
            format!("evil.example:{port}"),
            format!("127.0.0.1.nip.io:{port}"),
            format!("localhost.evil.example:{port}"),
            "127.0.0.1:1".to_string(),
            "localhost".to_string(),
            format!("127.0.0.1:{port}@evil.example"),
            String::new(),
        ] {
            let (status, _, body) = http_get_with_host(&addr, path, Some(&host), &[]);
            assert!(
                status == 403 || status == 421,
                "{path} Host: {host:?} got {status}: {body}"
            );
        }
        let (status, _, _) = http_get_with_host(&addr, path, None, &[]);
        assert!(
            (400..500).contains(&status),
            "{path} without Host: {status}"
        );
    }
    rig.stop();
    // With a token, the token decides.
    let rig = Rig::new(
        &[
            ("listen", "127.0.0.1:0".to_value()),
            ("auth-token", "tok".to_value()),
        ],
        &[VIDEO],
    );
    let addr = rig.addr();
    let (status, _, body) = http_get_with_host(
        &addr,
        "/api/summary",
        Some("evil.example"),
        &[("Authorization", "Bearer tok")],
    );
    assert_eq!(status, 200, "{body}");
    rig.stop();
}

/// Scrapers see every series of an element from its start, at 0 (as
/// Prometheus exporters do), labelled with the pipeline's name; `/healthz`
/// answers while the element runs.
#[test]
fn metrics_start_at_zero_with_a_pipeline_label_and_healthz_answers() {
    let rig = Rig::new(&[("listen", "127.0.0.1:0".to_value())], &[VIDEO, TEXT]);
    let addr = rig.addr();
    let element = rig.sink.name().to_string();
    let pipeline = rig.pipeline.name().to_string();
    let (status, _, body) = http_get(&addr, "/metrics", &[]);
    assert_eq!(status, 200);
    let at_zero = |family: &str, labels: &[(&str, &str)]| {
        let found = body.lines().filter(|l| !l.starts_with('#')).any(|line| {
            let Some((name_labels, value)) = line.rsplit_once(' ') else {
                return false;
            };
            let (name, rest) = name_labels.split_once('{').unwrap_or((name_labels, ""));
            name == family
                && value == "0"
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        });
        assert!(found, "{family} {labels:?} at 0 in:\n{body}");
    };
    let el = ("element", element.as_str());
    let pl = ("pipeline", pipeline.as_str());
    for stream in ["sink_0", "sink_1"] {
        for kind in ["object_appear", "object_leave", "speech", "scene", "clip"] {
            at_zero(
                "rtai_analytics_events_total",
                &[el, pl, ("stream", stream), ("type", kind)],
            );
        }
        at_zero(
            "rtai_analytics_malformed_metas_total",
            &[el, pl, ("stream", stream)],
        );
        at_zero(
            "rtai_analytics_clip_markers_total",
            &[el, pl, ("stream", stream)],
        );
        for kind in ["start", "commit", "end", "cancel"] {
            at_zero(
                "rtai_vad_segment_events_total",
                &[el, pl, ("stream", stream), ("kind", kind)],
            );
        }
    }
    at_zero("rtai_analytics_write_queue_depth", &[el, pl]);
    at_zero(
        "rtai_analytics_storage_rows_written_total",
        &[el, pl, ("backend", "sqlite")],
    );
    at_zero(
        "rtai_analytics_storage_write_failures_total",
        &[el, pl, ("backend", "sqlite")],
    );
    for reason in ["storage_queue_full", "storage", "rejected"] {
        at_zero(
            "rtai_analytics_events_dropped_total",
            &[el, pl, ("reason", reason)],
        );
    }
    let (status, head, body) = http_get(&addr, "/healthz", &[]);
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("application/json"), "{head}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["element"], element.as_str());
    assert_eq!(health["pipeline"], pipeline.as_str());
    rig.stop();
}

/// Every kind of event, as a Python consumer of the Redis stream and a client
/// of /api/events see them, is valid against docs/event-schema.json; ids are
/// UUIDs, the source id names the pipeline and the stream, the event time is
/// when the event happened on the pipeline clock, in UTC.
#[test]
fn events_follow_the_published_schema_in_redis_and_the_api() {
    let redis = Redis::start();
    let rig = Rig::new(
        &[
            ("listen", "127.0.0.1:0".to_value()),
            ("redis-url", redis.url().to_value()),
            ("redis-stream", "rtai:schema".to_value()),
            ("keywords", "fire".to_value()),
        ],
        &[VIDEO, AUDIO, TEXT],
    );
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    scripted_video(&rig, 0);
    rig.event(
        1,
        SegmentEvent::Start {
            id: 4,
            running_time: gst::ClockTime::ZERO,
            lookback: gst::ClockTime::ZERO,
        }
        .to_event(),
    );
    for n in 0..100u64 {
        rig.push(1, audio_frame(n * 10 * MS, 0.5));
    }
    rig.event(1, SegmentEvent::Commit { id: 4 }.to_event());
    rig.event(1, SegmentEvent::End { id: 4 }.to_event());
    rig.push(2, text_buffer(0, "fire in the hall", Some(4)));
    rig.push(2, text_buffer(2 * S, "a quiet street at night", None));
    rig.eos();
    let events = rig.events();
    let addr = rig.addr();
    wait_until("every event stored", Duration::from_secs(15), || {
        rig.stats().get::<u64>("rows-written").unwrap() == events.len() as u64
            && rig.stats().get::<u64>("redis-published").unwrap() == events.len() as u64
    });
    let pipeline = rig.pipeline.name().to_string();
    let mut types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    types.sort();
    types.dedup();
    assert_eq!(
        types,
        ["clip", "object_appear", "object_leave", "scene", "speech"],
        "every type is checked"
    );
    for e in &events {
        let stream = e["stream"].as_str().unwrap();
        let pad = rig.sink.static_pad(stream).unwrap();
        let src = pad.peer().unwrap();
        assert_eq!(
            e["source_id"],
            format!("{pipeline}/test-{}", src.name()),
            "the stream id of the pad's stream-start: {e}"
        );
        assert_eq!(e["pipeline"], pipeline.as_str());
        assert_eq!(e["time_source"], "clock", "{e}");
        // Running time through the pipeline clock: base time + start, in UTC.
        let start_ms = e["start_ns"].as_i64().unwrap() / 1_000_000;
        let t = e["event_time_ms"].as_i64().unwrap();
        assert!(
            (t - start_ms - before).abs() < 5_000,
            "event time {t} for running time {start_ms} ms, pipeline started at ~{before}: {e}"
        );
    }
    let consumer = validate_events(&["redis", &redis.url(), "rtai:schema"], None);
    assert_eq!(consumer["count"], events.len(), "{consumer}");
    let posted: Vec<&serde_json::Value> = events.iter().map(|e| &e["event_id"]).collect();
    let consumed: Vec<&serde_json::Value> =
        consumer["event_ids"].as_array().unwrap().iter().collect();
    assert_eq!(consumed, posted, "the consumer reads every event, in order");
    let (status, _, body) = http_get(&addr, "/api/events?limit=1000", &[]);
    assert_eq!(status, 200, "{body}");
    let api = validate_events(&["api"], Some(&body));
    assert_eq!(api["count"], events.len(), "{api}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        page["events"].as_array().unwrap(),
        &events,
        "/api/events returns the events as they were published"
    );
    rig.stop();
}

/// A SQLite file written before the event schema (migration 1 only, kebab-case
/// types) is migrated in place: its rows come back from /api/events valid
/// against docs/event-schema.json, as schema version 1, next to new ones.
#[test]
fn a_schema_1_database_is_migrated_and_served_valid() {
    let dir = temp_dir("schema1");
    let db = dir.join("old.sqlite");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE rtai_schema_migrations (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL);
             INSERT INTO rtai_schema_migrations VALUES (1, 0);
             CREATE TABLE rtai_events (
                id INTEGER PRIMARY KEY AUTOINCREMENT, event_key TEXT NOT NULL UNIQUE,
                element TEXT NOT NULL, stream TEXT NOT NULL, type TEXT NOT NULL,
                start_ns BIGINT NOT NULL, end_ns BIGINT, wall_ms BIGINT NOT NULL,
                confidence DOUBLE PRECISION, clip_worthy_score DOUBLE PRECISION NOT NULL,
                label TEXT, track_id BIGINT, text TEXT, data TEXT NOT NULL);
             INSERT INTO rtai_events (event_key, element, stream, type, start_ns, end_ns, wall_ms,
                confidence, clip_worthy_score, label, track_id, text, data)
             VALUES ('run-1', 'old', 'sink_0', 'object-appear', 0, NULL, 1764000000000,
                0.9, 0.5, 'car', 1, NULL, '{\"signals\":{\"new_class\":true}}');",
        )
        .unwrap();
    }
    let rig = Rig::new(
        &[
            ("listen", "127.0.0.1:0".to_value()),
            ("database", db.to_str().unwrap().to_value()),
        ],
        &[VIDEO],
    );
    rig.push(0, video_frame(0, &[Det("bus", Some(7), 0.7)]));
    let new = rig.events();
    wait_until("the new event stored", Duration::from_secs(10), || {
        rig.stats().get::<u64>("rows-written").unwrap() == new.len() as u64
    });
    let (status, _, body) = http_get(&rig.addr(), "/api/events?type=object_appear", &[]);
    assert_eq!(status, 200, "{body}");
    let api = validate_events(&["api"], Some(&body));
    assert_eq!(api["count"], 2, "{api}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    let old = &page["events"][0];
    assert_eq!(
        (
            old["schema_version"].as_i64(),
            old["type"].as_str(),
            old["event_time"].as_str(),
            old["source_id"].as_str(),
            old["time_source"].as_str()
        ),
        (
            Some(1),
            Some("object_appear"),
            Some("2025-11-24T16:00:00.000Z"),
            Some("sink_0"),
            Some("wall")
        ),
        "{old}"
    );
    assert_eq!(page["events"][1]["schema_version"], 2);
    rig.eos();
    rig.stop();
    let _ = std::fs::remove_dir_all(dir);
}

/// A `timestamp/x-unix` reference timestamp on the buffers (capture time, as
/// RTSP sources attach from RTCP sender reports) gives the event time; the
/// pipeline clock does not replace it afterwards.
#[test]
fn reference_timestamps_give_the_event_time() {
    let rig = Rig::new(&[], &[VIDEO]);
    // 2026-12-02T06:50:00.000Z at running time 1 s.
    let capture_ns: u64 = 1_796_194_200_000 * 1_000_000;
    let mut frame = video_frame(S, &[Det("car", Some(1), 0.9)]);
    gst::ReferenceTimestampMeta::add(
        frame.get_mut().unwrap(),
        &gst::Caps::new_empty_simple("timestamp/x-unix"),
        gst::ClockTime::from_nseconds(capture_ns),
        gst::ClockTime::NONE,
    );
    rig.push(0, frame);
    // A later frame without one: its events still map through the reference.
    rig.push(0, video_frame(S + 250 * MS, &[Det("bus", Some(2), 0.9)]));
    let events = rig.events();
    let appear = of_type(&events, "object_appear");
    assert_eq!(appear.len(), 2, "{events:#?}");
    assert_eq!(
        (
            appear[0]["event_time"].as_str(),
            appear[0]["time_source"].as_str()
        ),
        (Some("2026-12-02T06:50:00.000Z"), Some("reference"))
    );
    assert_eq!(
        (
            appear[1]["event_time"].as_str(),
            appear[1]["time_source"].as_str()
        ),
        (Some("2026-12-02T06:50:00.250Z"), Some("reference"))
    );
    rig.eos();
    rig.stop();
}
