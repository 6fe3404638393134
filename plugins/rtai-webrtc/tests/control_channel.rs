//! webrtcserve mode=send-recv with aiortc viewers (tests/peers/aiortc_control.py,
//! .venv-aiortc): the viewer's microphone (a 440 Hz tone) comes out of
//! `audio_src`, and rtai control messages travel on the data channel `control`
//! both ways with acks, retries and dedupe (docs/protocol.md).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use gst::prelude::*;
use rtai_core::SegmentEvent;
use rtai_core::control::{ControlAckInfo, ControlMessage};
use serde_json::json;

const T: Duration = Duration::from_secs(20);

/// (pts, samples) of each buffer out of audio_src.
type Pcm = Vec<(gst::ClockTime, Vec<i16>)>;

/// `videotestsrc ! x264enc ! webrtcserve mode=send-recv`, `audio_src` into an
/// appsink, an appsrc (text) into the `control` pad; upstream events reaching
/// the appsrc are collected.
struct Serve {
    pipeline: gst::Pipeline,
    serve: gst::Element,
    bus: gst::Bus,
    addr: String,
    ctl: gst_app::AppSrc,
    audio: Arc<Mutex<Pcm>>,
    upstream: Arc<Mutex<Vec<ControlMessage>>>,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Serve {
    fn start(props: &str) -> Self {
        Self::launch(props, true, true)
    }

    /// `audio`: with `audio_src` linked from the start (else see `link_audio`).
    /// `video`: a video stream on `sink` (else a voice-only server).
    fn launch(props: &str, audio: bool, video: bool) -> Self {
        // One stream at a time: aiortc and x264 on 2 cores.
        static SERIAL: Mutex<()> = Mutex::new(());
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        init();
        let pipeline = gst::parse::launch(&format!(
            "{} webrtcserve name=serve listen=127.0.0.1:0 mode=send-recv {props} \
             {} appsrc name=ctl is-live=true format=time caps=text/x-raw,format=utf8 ! serve.control",
            if video {
                "videotestsrc is-live=true ! video/x-raw,width=160,height=120,framerate=15/1 \
                 ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 bframes=0 \
                 ! video/x-h264,profile=constrained-baseline !"
            } else {
                ""
            },
            if audio {
                "serve.audio_src ! appsink name=audio sync=false"
            } else {
                ""
            }
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let serve = pipeline.by_name("serve").unwrap();
        let ctl = pipeline
            .by_name("ctl")
            .unwrap()
            .downcast::<gst_app::AppSrc>()
            .unwrap();
        let upstream = Arc::new(Mutex::new(Vec::new()));
        let up = upstream.clone();
        ctl.static_pad("src").unwrap().add_probe(
            gst::PadProbeType::EVENT_UPSTREAM,
            move |_, info| {
                if let Some(gst::PadProbeData::Event(e)) = &info.data
                    && let Some(m) = ControlMessage::from_event(e, None)
                {
                    up.lock().unwrap().push(m);
                }
                gst::PadProbeReturn::Ok
            },
        );
        let audio = Arc::new(Mutex::new(Vec::new()));
        if let Some(sink) = pipeline.by_name("audio") {
            collect_audio(sink.downcast_ref().unwrap(), audio.clone());
        }
        let (bus, addr) = if video {
            play_until_track_active(&pipeline, &serve, T)
        } else {
            pipeline.set_state(gst::State::Playing).unwrap();
            let addr = gstrtaiwebrtc::testing::listening_address(&serve, T);
            (pipeline.bus().unwrap(), addr)
        };
        Self {
            pipeline,
            serve,
            bus,
            addr,
            ctl,
            audio,
            upstream,
            _serial: serial,
        }
    }

    /// Requests `audio_src` now (the stream runs) into an appsink.
    fn link_audio(&self) {
        let sink = gst_app::AppSink::builder().sync(false).build();
        collect_audio(&sink, self.audio.clone());
        self.pipeline.add(&sink).unwrap();
        let pad = self.serve.request_pad_simple("audio_src").unwrap();
        pad.link(&sink.static_pad("sink").unwrap()).unwrap();
        sink.sync_state_with_parent().unwrap();
    }

    /// The samples of audio_src's last `buffers` buffers (or all there are), in order.
    fn last_pcm(&self, buffers: usize) -> Vec<i16> {
        let audio = self.audio.lock().unwrap();
        audio[audio.len().saturating_sub(buffers)..]
            .iter()
            .flat_map(|(_, p)| p.iter().copied())
            .collect()
    }

    /// Waits until audio_src's last 10 buffers all carry a tone (RMS over 1000).
    fn wait_for_tone(&self, what: &str) {
        wait_until(T, what, || {
            let audio = self.audio.lock().unwrap();
            audio.len() >= 10 && audio.iter().rev().take(10).all(|(_, p)| tone(p).1 > 1000.0)
        });
    }

    /// Sends a control event towards the `control` pad as specvadgate would
    /// behind a queue: serialized events in order with the text buffers
    /// (appsrc queues them), out-of-band ones (cancel) at once, overtaking.
    fn push(&self, event: gst::Event) {
        if event.is_serialized() {
            assert!(self.ctl.send_event(event));
        } else {
            assert!(self.ctl.static_pad("src").unwrap().push_event(event));
        }
    }

    /// `x-seq` messages (payload `{"n": 0..count}`), `gap` apart; their ids.
    fn push_seq(&self, count: usize, gap: Duration) -> Vec<String> {
        (0..count)
            .map(|n| {
                let mut m = ControlMessage::new("x-seq");
                m.payload = Some(json!({ "n": n }));
                self.push(m.to_event());
                std::thread::sleep(gap);
                m.id
            })
            .collect()
    }

    fn push_text(&self, text: &str, segment: Option<u64>) {
        let mut b = gst::Buffer::from_slice(text.as_bytes().to_vec());
        if let Some(id) = segment {
            rtai_core::SegmentIdMeta::set(b.get_mut().unwrap(), id);
        }
        self.ctl.push_buffer(b).unwrap();
    }

    /// Bus messages until `done` says so (errors fail the test).
    fn collect(
        &self,
        what: &str,
        mut done: impl FnMut(&[gst::Message]) -> bool,
    ) -> Vec<gst::Message> {
        let deadline = Instant::now() + T;
        let mut out = Vec::new();
        while !done(&out) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out waiting for {what}");
            if let Some(m) = self.bus.timed_pop(gst::ClockTime::from_mseconds(50)) {
                if let gst::MessageView::Error(e) = m.view() {
                    panic!("error: {} ({:?})", e.error(), e.debug());
                }
                out.push(m);
            }
        }
        out
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn collect_audio(sink: &gst_app::AppSink, audio: Arc<Mutex<Pcm>>) {
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let buffer = sample.buffer().unwrap();
                let map = buffer.map_readable().unwrap();
                let pcm = map
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]))
                    .collect();
                audio.lock().unwrap().push((buffer.pts().unwrap(), pcm));
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
}

/// One aiortc control peer; `start` returns once its channel is open.
struct Peer {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Peer {
    fn start(serve: &Serve, mode: &str, config: serde_json::Value) -> Self {
        let mut child = aiortc_peer("aiortc_control.py")
            .args([mode, &format!("http://{}", serve.addr), &config.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let peer = Self { child, lines };
        assert_eq!(peer.next()["ready"], true);
        peer
    }

    fn next(&self) -> serde_json::Value {
        let line = self
            .lines
            .recv_timeout(T)
            .expect("the aiortc peer printed nothing in time");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(v.get("error").is_none(), "aiortc peer failed: {v}");
        v
    }

    fn result(mut self) -> serde_json::Value {
        let v = self.next();
        assert!(self.child.wait().unwrap().success(), "{v}");
        v
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn segment(kind: &str, id: u64) -> gst::Event {
    match kind {
        "start" => SegmentEvent::Start {
            id,
            running_time: gst::ClockTime::from_mseconds(100),
            lookback: gst::ClockTime::from_mseconds(200),
        },
        "commit" => SegmentEvent::Commit { id },
        "end" => SegmentEvent::End { id },
        "cancel" => SegmentEvent::Cancel {
            id,
            reason: "click".into(),
        },
        _ => unreachable!(),
    }
    .to_event()
}

fn acks(messages: &[gst::Message]) -> Vec<(ControlAckInfo, String)> {
    messages
        .iter()
        .filter_map(|m| {
            let info = ControlAckInfo::parse(m)?;
            let viewer = element_message(m, "control-ack")?
                .get::<String>("viewer")
                .ok()?;
            Some((info, viewer))
        })
        .collect()
}

fn undelivered(messages: &[gst::Message]) -> Vec<gst::Structure> {
    messages
        .iter()
        .filter_map(|m| match m.view() {
            gst::MessageView::Warning(w) => w
                .details()
                .filter(|d| d.name() == "control-undelivered")
                .map(|d| d.to_owned()),
            _ => None,
        })
        .collect()
}

fn ids(result: &serde_json::Value) -> Vec<String> {
    result["received"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

/// Relative power of `freq` in `pcm` at 48 kHz (Goertzel), 0..~1 for a full-scale sine.
fn power_at(pcm: &[i16], freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / 48_000.0;
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in pcm {
        let s0 = x as f64 / 32768.0 + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let n = pcm.len().max(1) as f64;
    (s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2) * 4.0 / (n * n)
}

/// The dominant frequency (zero crossings) and RMS of `pcm` at 48 kHz.
fn tone(pcm: &[i16]) -> (f64, f64) {
    let crossings = pcm.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
    let secs = pcm.len() as f64 / 48_000.0;
    let rms =
        (pcm.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / pcm.len().max(1) as f64).sqrt();
    (crossings as f64 / 2.0 / secs, rms)
}

#[test]
fn microphone_out_of_audio_src_and_control_messages_both_ways_with_acks() {
    let serve = Serve::start("");
    // Before anyone joined: audio_src is already a live stream of silence.
    wait_until(T, "silence on audio_src", || {
        serve.audio.lock().unwrap().len() >= 20
    });
    {
        let audio = serve.audio.lock().unwrap();
        assert!(audio.iter().all(|(_, pcm)| pcm.iter().all(|&s| s == 0)));
        assert!(
            audio.windows(2).all(|w| w[1].0 > w[0].0),
            "timestamps increase"
        );
    }
    let peer = Peer::start(
        &serve,
        "whep",
        json!({
            "expect": 7,
            // Sent three times (two copies the peer sends as if it missed the ack).
            "send": [{"id": "peer-int-1", "type": "interrupt", "payload": {"why": "barge-in"}, "_resend": 2}],
            "linger": 2.0,
        }),
    );
    let t0 = Instant::now();
    let seg = 7u64 << 32 | 1;
    let seg2 = 7u64 << 32 | 2;
    serve.push(segment("start", seg));
    serve.push(segment("commit", seg));
    serve.push_text("hello world", Some(seg));
    serve.push(segment("end", seg));
    let mut custom = ControlMessage::new("x-note");
    custom.payload = Some(json!({"n": 1}));
    serve.push(custom.to_event());
    serve.push(segment("start", seg2));
    serve.push(segment("cancel", seg2));
    let messages = serve.collect("7 acks and the interrupt's control-received", |m| {
        acks(m).len() >= 7
            && m.iter()
                .any(|m| element_message(m, "control-received").is_some())
    });
    let elapsed = t0.elapsed();
    // The tone, while the peer is still there (it lingers 2 s).
    serve.wait_for_tone("the tone on audio_src");
    {
        let audio = serve.audio.lock().unwrap();
        assert!(
            audio.windows(2).all(|w| w[1].0 > w[0].0),
            "timestamps increase"
        );
    }
    let pcm = serve.last_pcm(10);
    let (freq, rms) = tone(&pcm);
    println!("audio_src: {freq:.0} Hz, RMS {rms:.0}");
    assert!((freq - 440.0).abs() < 20.0, "440 Hz, got {freq:.0}");
    let result = peer.result();
    // The viewer left (DELETE): audio_src goes on, back to silence, with no gap.
    let before = serve.audio.lock().unwrap().len();
    wait_until(T, "silence after the viewer left", || {
        let audio = serve.audio.lock().unwrap();
        audio.len() > before + 30
            && audio
                .iter()
                .rev()
                .take(10)
                .all(|(_, p)| p.iter().all(|&s| s == 0))
    });
    {
        let audio = serve.audio.lock().unwrap();
        // Each buffer starts where the previous one ended (its samples at 48 kHz).
        let gaps: Vec<i64> = audio
            .windows(2)
            .map(|w| {
                let end = w[0].0.nseconds() + w[0].1.len() as u64 * 1_000_000_000 / 48_000;
                w[1].0.nseconds() as i64 - end as i64
            })
            .filter(|gap| gap.abs() > 100_000)
            .collect();
        assert!(
            gaps.is_empty(),
            "audio_src is contiguous all along: gaps {gaps:?} ns"
        );
        println!("audio_src: {} buffers back to back, no gap", audio.len());
    }
    let received: Vec<(String, Option<u64>)> = result["received"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["type"].as_str().unwrap().to_string(),
                m["segment_id"].as_u64(),
            )
        })
        .collect();
    // The serialized ones in the order of the pad (appsrc's queue).
    let serialized: Vec<(String, Option<u64>)> = received
        .iter()
        .filter(|(_, s)| *s != Some(seg2))
        .cloned()
        .collect();
    let expected: Vec<(String, Option<u64>)> = [
        ("speech-start", Some(seg)),
        ("speech-commit", Some(seg)),
        ("x-transcript", Some(seg)),
        ("speech-end", Some(seg)),
        ("x-note", None),
    ]
    .iter()
    .map(|(t, s)| (t.to_string(), *s))
    .collect();
    assert_eq!(serialized, expected, "in order, once each: {result}");
    // The cancel (out of band) overtook appsrc's queue, its start too: it went at
    // once behind a start made from it, and the real start was not sent again.
    let second: Vec<&serde_json::Value> = result["received"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["segment_id"].as_u64() == Some(seg2))
        .collect();
    assert_eq!(second.len(), 2, "{result}");
    assert_eq!(second[0]["type"], "speech-start");
    assert_eq!(second[1]["type"], "speech-cancel");
    println!(
        "second segment: {} (synthesized: {})",
        second[0]["id"], second[0]["payload"]["synthesized"]
    );
    let transcript = result["received"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["type"] == "x-transcript")
        .unwrap();
    assert_eq!(transcript["payload"]["text"], "hello world");
    // Copies (a resend when an ack took over 50 ms on a loaded machine) are
    // deduped by the peer: `received` holds first copies only, checked above.
    println!("copies the peer deduped: {}", result["copies"]);
    let acked = acks(&messages);
    let ids: Vec<&str> = result["received"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for id in &ids {
        assert!(
            acked
                .iter()
                .any(|(a, _)| a.id == *id && a.transport == "webrtc"),
            "no control-ack for {id}"
        );
    }
    let mut rtts: Vec<Duration> = acked.iter().map(|(a, _)| a.round_trip).collect();
    rtts.sort();
    println!(
        "data-channel ack round trip: min {:?}, median {:?}, max {:?} ({} messages in {elapsed:?})",
        rtts[0],
        rtts[rtts.len() / 2],
        rtts[rtts.len() - 1],
        rtts.len()
    );
    // The interrupt: once upstream of the control pad, though sent three times; every copy acked.
    wait_until(T, "the interrupt upstream of the control pad", || {
        serve
            .upstream
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.kind == "interrupt")
    });
    let upstream = serve.upstream.lock().unwrap().clone();
    let interrupts: Vec<_> = upstream.iter().filter(|m| m.kind == "interrupt").collect();
    assert_eq!(interrupts.len(), 1, "{upstream:?}");
    assert_eq!(interrupts[0].id, "peer-int-1");
    assert_eq!(interrupts[0].payload, Some(json!({"why": "barge-in"})));
    let peer_acks = result["acks"].as_array().unwrap();
    assert!(
        peer_acks.iter().filter(|a| *a == "peer-int-1").count() >= 1,
        "{result}"
    );
    let received_msgs: Vec<_> = messages
        .iter()
        .filter_map(|m| element_message(m, "control-received"))
        .collect();
    assert_eq!(received_msgs.len(), 1, "{received_msgs:?}");
    assert_eq!(received_msgs[0].get::<String>("id").unwrap(), "peer-int-1");
}

#[test]
fn bad_input_gets_errors_to_that_viewer_only_while_another_keeps_receiving() {
    let serve = Serve::start("");
    let good = Peer::start(&serve, "whep", json!({"expect": 10, "linger": 0.5}));
    let big = format!(
        r#"{{"id":"big","type":"x-big","payload":"{}"}}"#,
        "a".repeat(20_000)
    );
    let deep = format!(
        r#"{{"id":"deep","type":"x-deep","payload":{}1{}}}"#,
        "[".repeat(20),
        "]".repeat(20)
    );
    let bad = Peer::start(
        &serve,
        "ws",
        json!({
            "send_raw": ["{", "[1,2]", r#"{"id":"b1","type":"shout"}"#,
                         r#"{"id":"b2","type":"speech-start"}"#, big, deep],
            "flood": 300,
            "linger": 1.0,
        }),
    );
    let pushed = serve.push_seq(10, Duration::from_millis(30));
    let good = good.result();
    let bad = bad.result();
    // The bad viewer's counters when it left (an error message would fail here).
    let messages = serve.collect("the bad viewer gone", |m| {
        m.iter().any(|m| {
            element_message(m, "peer_disconnected")
                .is_some_and(|s| s.get::<String>("viewer").unwrap().starts_with("ws-"))
        })
    });
    let gone = messages
        .iter()
        .filter_map(|m| element_message(m, "peer_disconnected"))
        .find(|s| s.get::<String>("viewer").unwrap().starts_with("ws-"))
        .unwrap();
    let refused = gone
        .get::<u64>("control-refused")
        .unwrap_or_else(|_| panic!("no control-refused in {gone}"));
    assert!(
        refused >= 200,
        "6 bad messages and most of the flood refused: {gone}"
    );
    assert_eq!(
        ids(&good),
        pushed,
        "the good viewer got all, in order: {good}"
    );
    assert_eq!(good["errors"], json!([]), "{good}");
    let codes: Vec<(&str, Option<&str>)> = bad["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["error"].as_str().unwrap(), e["id"].as_str()))
        .collect();
    for expected in [
        ("malformed", None),
        ("unknown-type", Some("b1")),
        ("invalid", Some("b2")),
        ("too-large", None),
        ("too-deep", None),
    ] {
        assert!(codes.contains(&expected), "{expected:?} not in {codes:?}");
    }
    assert_eq!(
        codes.iter().filter(|c| c.0 == "malformed").count(),
        2,
        "{codes:?}"
    );
    // The flood: one rate-limited error per burst over the rate (the excess
    // is ignored silently; a message let through by the refilled bucket ends
    // the burst), some accepted and acked.
    let limited = codes.iter().filter(|c| c.0 == "rate-limited").count();
    assert!((1..=10).contains(&limited), "{codes:?}");
    let flood_acked = bad["acks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a.as_str().unwrap().starts_with("flood-"))
        .count();
    let delivered = messages
        .iter()
        .filter_map(|m| element_message(m, "control-received"))
        .filter(|s| s.get::<String>("type").unwrap() == "x-flood")
        .count();
    println!("flood of 300: {delivered} delivered and {flood_acked} acked, {codes:?}");
    assert!(
        (40..300).contains(&delivered),
        "{delivered} of 300 delivered"
    );
    assert_eq!(flood_acked, delivered);
}

#[test]
fn unreliable_channel_and_lost_acks_still_deliver_exactly_once_and_silence_is_reported() {
    let serve = Serve::start("control-reliable=false");
    // Drops 30 % of its acks: the server resends, the peer dedupes.
    let lossy = Peer::start(
        &serve,
        "ws",
        json!({"expect": 40, "drop_acks": 0.3, "linger": 1.0}),
    );
    // Never acks: every message is resent 3 times, then reported undelivered.
    let silent = Peer::start(
        &serve,
        "whep",
        json!({"expect": 40, "ack": false, "linger": 1.0}),
    );
    let pushed = serve.push_seq(40, Duration::from_millis(5));
    let t0 = Instant::now();
    let messages = serve.collect("every message settled for both viewers", |m| {
        let lossy_settled = acks(m).iter().filter(|(_, v)| v.starts_with("ws-")).count()
            + undelivered(m)
                .iter()
                .filter(|d| d.get::<String>("viewer").unwrap().starts_with("ws-"))
                .count();
        let silent_settled = undelivered(m)
            .iter()
            .filter(|d| d.get::<String>("viewer").unwrap().starts_with("whep-"))
            .count();
        lossy_settled >= 40 && silent_settled >= 40
    });
    println!("settled {:?} after the last push", t0.elapsed());
    let lossy = lossy.result();
    let silent = silent.result();
    // The server-made channel is unordered with no retransmissions.
    assert_eq!(lossy["ordered"], false, "{lossy}");
    assert_eq!(lossy["max_retransmits"], 0, "{lossy}");
    // Exactly once at the receiver, every message, despite the resends.
    let mut got = ids(&lossy);
    got.sort();
    let mut want = pushed.clone();
    want.sort();
    assert_eq!(got, want, "{lossy}");
    assert!(lossy["acks_dropped"].as_u64().unwrap() > 0, "{lossy}");
    assert!(
        lossy["copies"].as_u64().unwrap() > 0,
        "resent copies were deduped: {lossy}"
    );
    let lossy_acks: Vec<_> = acks(&messages)
        .into_iter()
        .filter(|(_, v)| v.starts_with("ws-"))
        .collect();
    let retried = lossy_acks.iter().filter(|(a, _)| a.retries > 0).count();
    println!(
        "lossy viewer: {} acked ({retried} after a retry), {} acks dropped, {} copies deduped",
        lossy_acks.len(),
        lossy["acks_dropped"],
        lossy["copies"]
    );
    assert!(
        retried > 0,
        "some acks were lost, so some messages were resent"
    );
    assert!(lossy_acks.len() >= 30, "most acked: {}", lossy_acks.len());
    // The silent viewer: 40 warnings naming each message, after 4 attempts.
    let silent_undelivered: Vec<_> = undelivered(&messages)
        .into_iter()
        .filter(|d| d.get::<String>("viewer").unwrap().starts_with("whep-"))
        .collect();
    let mut named: Vec<String> = silent_undelivered
        .iter()
        .map(|d| {
            assert_eq!(d.get::<u32>("attempts").unwrap(), 4);
            assert_eq!(d.get::<String>("transport").unwrap(), "webrtc");
            d.get::<String>("id").unwrap()
        })
        .collect();
    named.sort();
    assert_eq!(named, want);
    let mut got = ids(&silent);
    got.sort();
    assert_eq!(got, want, "{silent}");
    assert_eq!(silent["copies"], 40 * 3, "three resends each: {silent}");
}

#[test]
fn audio_src_requested_while_a_viewer_talks_gets_its_voice() {
    // No audio_src at first: the viewer's decoded microphone is swallowed, no error.
    let serve = Serve::launch("", false, true);
    let peer = Peer::start(&serve, "whep", json!({"linger": 4.0}));
    serve.collect("the viewer connected", |m| {
        m.iter()
            .any(|m| element_message(m, "peer_connected").is_some())
    });
    serve.link_audio();
    serve.wait_for_tone("the tone on the late audio_src");
    let pcm = serve.last_pcm(10);
    let (freq, _) = tone(&pcm);
    assert!((freq - 440.0).abs() < 20.0, "440 Hz, got {freq:.0}");
    peer.result();
}

#[test]
fn two_talkers_are_mixed_and_one_leaving_does_not_stop_the_other() {
    let serve = Serve::start("");
    let a = Peer::start(&serve, "whep", json!({"freq": 440.0, "linger": 2.0}));
    let b = Peer::start(&serve, "whep", json!({"freq": 660.0, "linger": 6.0}));
    // The last 200 ms of audio_src, in order.
    let last = || serve.last_pcm(20);
    wait_until(T, "both tones mixed", || {
        let pcm = last();
        power_at(&pcm, 440.0) > 0.01 && power_at(&pcm, 660.0) > 0.01
    });
    let pcm = last();
    println!(
        "both talking: power 440 Hz {:.3}, 660 Hz {:.3}, 550 Hz {:.4}",
        power_at(&pcm, 440.0),
        power_at(&pcm, 660.0),
        power_at(&pcm, 550.0)
    );
    a.result();
    serve.collect("the first talker gone", |m| {
        m.iter()
            .any(|m| element_message(m, "peer_disconnected").is_some())
    });
    let gone_at = serve.audio.lock().unwrap().len();
    wait_until(T, "the second talker alone", || {
        let pcm = last();
        serve.audio.lock().unwrap().len() > gone_at + 30
            && power_at(&pcm, 440.0) < 0.001
            && power_at(&pcm, 660.0) > 0.01
    });
    let pcm = last();
    println!(
        "after the first left: power 440 Hz {:.4}, 660 Hz {:.3}",
        power_at(&pcm, 440.0),
        power_at(&pcm, 660.0)
    );
    b.result();
    let audio = serve.audio.lock().unwrap();
    let gaps = audio
        .windows(2)
        .filter(|w| {
            let end = w[0].0.nseconds() + w[0].1.len() as u64 * 1_000_000_000 / 48_000;
            (w[1].0.nseconds() as i64 - end as i64).abs() > 100_000
        })
        .count();
    assert_eq!(gaps, 0, "audio_src contiguous through joins and leaves");
}

#[test]
fn voice_only_without_video_microphone_and_control_channel() {
    // send-recv with nothing on `sink`: viewers join with audio and the channel only.
    let serve = Serve::launch("", true, false);
    let peer = Peer::start(&serve, "ws", json!({"expect": 2, "linger": 1.5}));
    let seg = 9u64 << 32 | 1;
    serve.push(segment("start", seg));
    serve.push(segment("commit", seg));
    serve.wait_for_tone("the tone of a voice-only viewer");
    let result = peer.result();
    let kinds: Vec<&str> = result["received"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["speech-start", "speech-commit"], "{result}");
}
