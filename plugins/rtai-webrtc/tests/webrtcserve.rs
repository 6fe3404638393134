//! webrtcserve with real WebRTC peers in the test process: receive-only
//! `webrtcbin`s that join over WHEP (HTTP on loopback) or the JSON WebSocket
//! protocol, depayload and decode what they get. Proves one encoder for all
//! viewers, leave/join, a stalled viewer not stalling the others, and that
//! bad signalling input gets an `error` to that client only.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use gst::prelude::*;
use gstrtaiwebrtc::testing::{WhepViewer, h264_offer_caps, http, link_h264_receiver, whep_post};
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(15);

/// `videotestsrc ! 320x240@30 ! x264enc ! webrtcserve` on an ephemeral loopback port.
struct Serve {
    pipeline: gst::Pipeline,
    serve: gst::Element,
    bus: gst::Bus,
    addr: String,
    /// One served stream at a time in this binary: the timing assertions
    /// (first frame < 1 s in chromium) must not compete with the other tests' peers.
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Serve {
    fn start(props: &str) -> Self {
        Self::launch(&format!(
            "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 \
             ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 bframes=0 \
             ! video/x-h264,profile=constrained-baseline ! webrtcserve name=serve listen=127.0.0.1:0 {props}"
        ))
    }

    /// A pipeline description with a `webrtcserve name=serve`, PLAYING until its track is active.
    fn launch(description: &str) -> Self {
        static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        init();
        let pipeline = gst::parse::launch(description)
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        let serve = pipeline.by_name("serve").unwrap();
        let (bus, addr) = play_until_track_active(&pipeline, &serve, T);
        assert!(addr.starts_with("127.0.0.1:"), "{addr}");
        Self {
            pipeline,
            serve,
            bus,
            addr,
            _serial: serial,
        }
    }

    /// Leaf encoders anywhere in the pipeline (bins such as rtencodebin do not count, their encoder does).
    fn encoders(&self) -> usize {
        self.pipeline
            .iterate_recurse()
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| !e.is::<gst::Bin>())
            .filter(|e| {
                e.factory()
                    .and_then(|f| {
                        f.metadata(gst::ELEMENT_METADATA_KLASS)
                            .map(|k| k.contains("Encoder") && k.contains("Video"))
                    })
                    .unwrap_or(false)
            })
            .count()
    }

    fn wait_message(&self, name: &str) -> gst::Structure {
        let msg = wait_for(&self.bus, T, name, |m| element_message(m, name).is_some());
        element_message(&msg, name).unwrap()
    }

    fn viewer_stats(&self, id: &str) -> gst::Structure {
        let stats = self.serve.property::<gst::Structure>("stats");
        let list = stats.get::<gst::Array>("viewer-stats").unwrap();
        list.iter()
            .map(|v| v.get::<gst::Structure>().unwrap())
            .find(|s| s.get::<String>("viewer").unwrap() == id)
            .unwrap_or_else(|| panic!("no viewer {id} in {stats}"))
    }

    fn stop(&self) {
        self.pipeline.set_state(gst::State::Null).unwrap();
    }
}

/// A receive-only webrtcbin peer (gstrtaiwebrtc::testing) that decodes H.264
/// and counts frames.
struct Peer {
    viewer: WhepViewer,
    frames: Arc<AtomicU64>,
}

impl std::ops::Deref for Peer {
    type Target = WhepViewer;
    fn deref(&self) -> &WhepViewer {
        &self.viewer
    }
}

impl Peer {
    /// `payload`: the payload type this peer offers (webrtcserve must follow it).
    fn new(payload: i32) -> Self {
        init();
        let frames = Arc::new(AtomicU64::new(0));
        let counter = frames.clone();
        let viewer = WhepViewer::new(&h264_offer_caps(payload, true), move |pipeline, pad| {
            let sink = gst_app::AppSink::builder().sync(false).build();
            let counter = counter.clone();
            sink.set_callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |s| {
                        let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
                        assert_eq!((info.width(), info.height()), (320, 240));
                        counter.fetch_add(1, Ordering::SeqCst);
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            );
            link_h264_receiver(pipeline, pad, true, sink.upcast());
        });
        Self { viewer, frames }
    }

    fn frames(&self) -> u64 {
        self.frames.load(Ordering::SeqCst)
    }

    fn wait_frames(&self, at_least: u64) {
        wait_until(T, &format!("{at_least} decoded frames"), || {
            self.frames() >= at_least
        });
    }
}

/// Joins `serve` over WHEP; returns the peer and its session path (Location).
fn whep_join(serve: &Serve, payload: i32) -> (Peer, String) {
    let peer = Peer::new(payload);
    let (answer, location) = peer.whep_join(&serve.addr);
    assert!(answer.contains("m=video"), "{answer}");
    assert!(answer.contains("packetization-mode=1"), "{answer}");
    (peer, location)
}

#[test]
fn whep_viewers_share_one_encoder_and_leave_and_join() {
    let serve = Serve::start("");
    // Different payload types: the shared payloader's packets are rewritten per viewer.
    let (a, a_path) = whep_join(&serve, 102);
    let (b, _b_path) = whep_join(&serve, 96);
    a.wait_frames(30);
    b.wait_frames(30);
    assert_eq!(serve.encoders(), 1, "one encode for all viewers");
    // Leave: DELETE ends A's session only.
    let (status, _, _) = http(&serve.addr, "DELETE", &a_path, &[], "");
    assert_eq!(status, 200);
    let gone = serve.wait_message("peer_disconnected");
    assert_eq!(gone.get::<String>("reason").unwrap(), "leave");
    assert_eq!(
        format!("/whep/{}", gone.get::<String>("viewer").unwrap()),
        a_path
    );
    assert!(gone.get::<u64>("frames-sent").unwrap() >= 30, "{gone}");
    assert!(gone.get::<u64>("bytes-sent").unwrap() > 0);
    let (status, _, _) = http(&serve.addr, "DELETE", &a_path, &[], "");
    assert_eq!(status, 404, "a session ends once");
    let before = b.frames();
    b.wait_frames(before + 30);
    // Join again.
    let (c, _) = whep_join(&serve, 102);
    c.wait_frames(30);
    assert_eq!(serve.encoders(), 1);
    assert_eq!(
        serve
            .serve
            .property::<gst::Structure>("stats")
            .get::<u32>("viewers")
            .unwrap(),
        2
    );
    drop((a, b, c));
    serve.stop();
}

#[test]
fn a_stalled_viewer_does_not_stall_the_other() {
    let serve = Serve::start("queue-packets=50");
    let (a, a_path) = whep_join(&serve, 96);
    let (b, _) = whep_join(&serve, 96);
    a.wait_frames(10);
    b.wait_frames(10);
    // A's branch stops reading (as a send that never returns would).
    let a_id = a_path.trim_start_matches("/whep/").to_string();
    let webrtc_a = serve
        .serve
        .downcast_ref::<gst::Bin>()
        .unwrap()
        .by_name(&format!("webrtc-{a_id}"))
        .unwrap();
    let blocked = webrtc_a
        .static_pad("sink_0")
        .unwrap()
        .add_probe(gst::PadProbeType::BLOCK_DOWNSTREAM, |_, _| {
            gst::PadProbeReturn::Ok
        })
        .unwrap();
    let before = b.frames();
    b.wait_frames(before + 60);
    wait_until(T, "A's queue dropping", || {
        serve.viewer_stats(&a_id).get::<u64>("dropped").unwrap() > 0
    });
    webrtc_a.static_pad("sink_0").unwrap().remove_probe(blocked);
    drop((a, b));
    serve.stop();
}

/// The webrtcbin of the viewer behind `path` (a WHEP Location).
fn viewer_webrtcbin(serve: &Serve, path: &str) -> gst::Element {
    let id = path.trim_start_matches("/whep/");
    serve
        .serve
        .downcast_ref::<gst::Bin>()
        .unwrap()
        .by_name(&format!("webrtc-{id}"))
        .unwrap()
}

#[test]
fn a_fatal_flow_in_one_viewer_drops_that_viewer_only() {
    let serve = Serve::start("");
    let (a, a_path) = whep_join(&serve, 96);
    let (b, _) = whep_join(&serve, 96);
    a.wait_frames(10);
    b.wait_frames(10);
    // A's webrtcbin refuses what it gets, as a renegotiation to another codec
    // would: every push into it returns not-negotiated.
    viewer_webrtcbin(&serve, &a_path)
        .static_pad("sink_0")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, |_, info| {
            info.flow_res = Err(gst::FlowError::NotNegotiated);
            gst::PadProbeReturn::Handled
        })
        .unwrap();
    // A is dropped with the flow as the reason (wait_message fails on any bus error).
    let gone = serve.wait_message("peer_disconnected");
    assert_eq!(
        format!("/whep/{}", gone.get::<String>("viewer").unwrap()),
        a_path
    );
    assert_eq!(gone.get::<String>("reason").unwrap(), "not-negotiated");
    // B keeps receiving from the same encoder and nothing stopped upstream.
    let before = b.frames();
    b.wait_frames(before + 60);
    assert_eq!(
        serve
            .serve
            .property::<gst::Structure>("stats")
            .get::<u32>("viewers")
            .unwrap(),
        1
    );
    while let Some(m) = serve.bus.pop() {
        assert!(
            !matches!(m.view(), gst::MessageView::Error(_)),
            "an error reached the bus: {m:?}"
        );
    }
    // A new viewer joins the same stream.
    let (c, _) = whep_join(&serve, 96);
    c.wait_frames(10);
    drop((a, b, c));
    serve.stop();
}

/// The child half of the test below: a registry with this collection's plugins only.
const CHILD: &str = "RTAI_WEBRTC_TEST_NO_CORE";

#[test]
fn without_coreelements_webrtcserve_errors_instead_of_panicking() {
    if std::env::var_os(CHILD).is_some() {
        init();
        assert!(
            gst::ElementFactory::find("tee").is_none(),
            "the child's registry must lack coreelements"
        );
        let serve = gst::ElementFactory::make("webrtcserve").build().unwrap();
        let pipeline = gst::Pipeline::new();
        pipeline.add(&serve).unwrap();
        assert!(pipeline.set_state(gst::State::Ready).is_err());
        let error =
            rtai_core::testing::next_error(&pipeline.bus().unwrap(), Duration::from_secs(5));
        assert!(error.matches(gst::CoreError::MissingPlugin), "{error:?}");
        assert!(error.message().contains("coreelements"), "{error:?}");
        println!("child-ok: {error}");
        return;
    }
    let empty = std::env::temp_dir().join(format!("rtai-webrtc-no-system-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "without_coreelements_webrtcserve_errors_instead_of_panicking",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("GST_PLUGIN_SYSTEM_PATH_1_0", &empty)
        .env("GST_PLUGIN_SYSTEM_PATH", &empty)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir(&empty);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("child-ok:"),
        "the child failed ({:?}):\n{stdout}\n{stderr}",
        out.status
    );
}

#[test]
fn raw_input_is_encoded_once_and_a_joining_viewer_gets_a_key_frame_at_once() {
    // A 20 s GOP: only the joining viewer's key-unit request can bring a key frame soon.
    let serve = Serve::launch(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 \
         ! webrtcserve name=serve listen=127.0.0.1:0 key-frame-interval=600 bitrate=500",
    );
    let (a, _) = whep_join(&serve, 96);
    a.wait_frames(45);
    // The encode is rtencodebin's (one leaf encoder in the whole pipeline).
    assert_eq!(serve.encoders(), 1);
    let (b, _) = whep_join(&serve, 96);
    let joined = std::time::Instant::now();
    b.wait_frames(1);
    let first = joined.elapsed();
    println!(
        "raw input: first decoded frame {} ms after the WHEP answer (GOP 20 s)",
        first.as_millis()
    );
    assert!(
        first < Duration::from_secs(3),
        "the joining viewer waited {first:?} for a key frame"
    );
    b.wait_frames(30);
    drop((a, b));
    serve.stop();
}

#[test]
fn whep_refuses_bad_offers_with_a_clear_status() {
    let serve = Serve::start("max-viewers=1");
    let post =
        |body: &str, ct: &str| http(&serve.addr, "POST", "/whep", &[("Content-Type", ct)], body);
    let (s, _, body) = post("garbage", "application/sdp");
    assert_eq!(s, 400, "{body}");
    let audio_only = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";
    let (s, _, body) = post(audio_only, "application/sdp");
    assert_eq!(s, 400);
    assert!(body.contains("no video"), "{body}");
    let (s, _, _) = post("v=0", "text/plain");
    assert_eq!(s, 415);
    let (s, _, _) = http(&serve.addr, "DELETE", "/whep/whep-999", &[], "");
    assert_eq!(s, 404);
    let (_a, _) = whep_join(&serve, 96);
    let extra = Peer::new(96);
    let (s, _, body) = post(&extra.gathered_offer(), "application/sdp");
    assert_eq!(s, 503, "max-viewers=1: {body}");
    serve.stop();
}

#[test]
fn auth_token_is_required_when_set() {
    let serve = Serve::start("auth-token=s3cret");
    let (s, _, _) = http(&serve.addr, "GET", "/", &[], "");
    assert_eq!(s, 401);
    let (s, _, page) = http(&serve.addr, "GET", "/?token=s3cret", &[], "");
    assert_eq!(s, 200);
    assert!(page.contains("ffmpeg-bot"));
    let (s, _, _) = http(
        &serve.addr,
        "POST",
        "/whep",
        &[
            ("Content-Type", "application/sdp"),
            ("Authorization", "Bearer nope"),
        ],
        "v=0",
    );
    assert_eq!(s, 401);
    let stats = serve.serve.property::<gst::Structure>("stats").to_string();
    assert!(!stats.contains("s3cret"));
    serve.stop();
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(addr: &str) -> Ws {
    tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap()
        .0
}

async fn ws_send(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.to_string().into()))
        .await
        .unwrap();
}

/// The next JSON text message (with a deadline).
async fn ws_next(ws: &mut Ws) -> serde_json::Value {
    loop {
        let msg = tokio::time::timeout(T, ws.next())
            .await
            .expect("a signalling message in time")
            .expect("the socket is open")
            .unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// Joins over the WebSocket protocol: join → offer → answer, candidates both ways.
async fn ws_join(serve: &Serve) -> (Ws, Peer) {
    let mut ws = ws_connect(&serve.addr).await;
    ws_send(&mut ws, r#"{"type":"join","peer_id":"ffmpeg-bot"}"#).await;
    let offer = loop {
        let m = ws_next(&mut ws).await;
        if m["type"] == "offer" {
            break m;
        }
        assert_eq!(m["type"], "ice_candidate", "{m}");
    };
    assert_eq!(offer["peer_id"], "ffmpeg-bot");
    let sdp = offer["sdp"].as_str().unwrap();
    assert!(sdp.contains("packetization-mode=1"), "{sdp}");
    assert!(sdp.contains("rtx/90000"), "RTX is offered: {sdp}");
    let peer = Peer::new(96);
    // Our candidates go to the server as they are found.
    let (cand_tx, mut cand_rx) = tokio::sync::mpsc::unbounded_channel::<(u32, String)>();
    peer.webrtc.connect("on-ice-candidate", false, move |v| {
        let _ = cand_tx.send((v[1].get::<u32>().unwrap(), v[2].get::<String>().unwrap()));
        None
    });
    peer.set_remote(gst_webrtc::WebRTCSDPType::Offer, sdp);
    let answer = peer.answer();
    ws_send(
        &mut ws,
        &serde_json::json!({"type": "answer", "sdp": answer}).to_string(),
    )
    .await;
    // Relay candidates both ways until frames arrive.
    let deadline = tokio::time::Instant::now() + T;
    while peer.frames() < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no frames over the WebSocket join: {}",
            serve.serve.property::<gst::Structure>("stats")
        );
        tokio::select! {
            Some((mline, c)) = cand_rx.recv() => {
                ws_send(&mut ws, &serde_json::json!({"type": "ice_candidate", "candidate": c, "sdpMLineIndex": mline, "peer_id": "ffmpeg-bot"}).to_string()).await;
            }
            m = tokio::time::timeout(Duration::from_millis(50), ws.next()) => {
                if let Ok(Some(Ok(Message::Text(t)))) = m {
                    let m: serde_json::Value = serde_json::from_str(&t).unwrap();
                    assert_eq!(m["type"], "ice_candidate", "{m}");
                    peer.webrtc.emit_by_name::<()>("add-ice-candidate", &[&(m["sdpMLineIndex"].as_u64().unwrap() as u32), &m["candidate"].as_str().unwrap()]);
                }
            }
        }
    }
    (ws, peer)
}

#[test]
fn websocket_join_receives_frames_and_bad_input_gets_errors_to_that_client_only() {
    let serve = Serve::start("");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut a, peer_a) = ws_join(&serve).await;
        let mut b = ws_connect(&serve.addr).await;
        let deep = format!(r#"{{"type":"join","x":{}{}}}"#, "[".repeat(64), "]".repeat(64));
        let no_video_offer = serde_json::json!({"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n"}).to_string();
        let table: Vec<(&str, String, &str)> = vec![
            ("malformed JSON", "{not json".into(), "malformed"),
            ("unknown type", r#"{"type":"dance"}"#.into(), "unknown message type"),
            ("too deep", deep, "nested deeper"),
            ("SDP garbage", r#"{"type":"offer","sdp":"garbage"}"#.into(), "does not parse"),
            ("offer without video", no_video_offer, "no video"),
            ("answer before join", r#"{"type":"answer","sdp":"v=0"}"#.into(), "join first"),
            (
                "candidate for an unknown peer",
                r#"{"type":"ice_candidate","candidate":"candidate:1 1 UDP 1 127.0.0.1 9 typ host","sdpMLineIndex":0,"peer_id":"someone-else"}"#.into(),
                "unknown peer",
            ),
            (
                "candidate without a session",
                r#"{"type":"ice_candidate","candidate":"candidate:1 1 UDP 1 127.0.0.1 9 typ host","sdpMLineIndex":0}"#.into(),
                "unknown session",
            ),
            ("join another peer", r#"{"type":"join","peer_id":"nobody"}"#.into(), "unknown peer"),
            ("leave before join", r#"{"type":"leave"}"#.into(), "not joined"),
        ];
        for (what, text, expect) in &table {
            ws_send(&mut b, text).await;
            let m = ws_next(&mut b).await;
            assert_eq!(m["type"], "error", "{what}: {m}");
            assert!(
                m["message"].as_str().unwrap().contains(expect),
                "{what}: {m}"
            );
        }
        // A flood: the excess gets one error, then is ignored.
        for _ in 0..200 {
            ws_send(&mut b, r#"{"type":"leave"}"#).await;
        }
        let mut flood_error = false;
        for _ in 0..200 {
            let m = ws_next(&mut b).await;
            assert_eq!(m["type"], "error");
            if m["message"].as_str().unwrap().contains("too many messages") {
                flood_error = true;
                break;
            }
        }
        assert!(flood_error, "a flood is answered with an error");
        // A got nothing of this and still receives frames.
        let before = peer_a.frames();
        let deadline = tokio::time::Instant::now() + T;
        while peer_a.frames() < before + 30 {
            assert!(tokio::time::Instant::now() < deadline, "A stalled");
            if let Ok(Some(Ok(Message::Text(t)))) =
                tokio::time::timeout(Duration::from_millis(50), a.next()).await
            {
                let m: serde_json::Value = serde_json::from_str(&t).unwrap();
                assert_ne!(m["type"], "error", "A got someone else's error: {m}");
            }
        }
        // Leave over the socket ends A's viewer.
        ws_send(&mut a, r#"{"type":"leave"}"#).await;
    });
    let gone = serve.wait_message("peer_disconnected");
    assert_eq!(gone.get::<String>("reason").unwrap(), "leave");
    serve.stop();
}

#[test]
fn a_joining_viewer_asks_ffmpegsrc_for_a_key_frame() {
    let serve = Serve::launch(&format!(
        "ffmpegsrc name=src command=\"{}\" ! webrtcserve name=serve listen=127.0.0.1:0",
        lavfi_command("320x240", 30, "")
    ));
    let src = serve.pipeline.by_name("src").unwrap();
    let requests = || {
        src.property::<gst::Structure>("stats")
            .get::<u64>("key-unit-requests")
            .unwrap()
    };
    assert_eq!(requests(), 0);
    let (a, _) = whep_join(&serve, 96);
    a.wait_frames(10);
    // The request went up through the tee, payloader and parser to ffmpegsrc,
    // which counts it (ffmpeg makes the next key frame with its GOP).
    wait_until(T, "ffmpegsrc seeing the key-unit request", || {
        requests() >= 1
    });
    let (b, _) = whep_join(&serve, 96);
    b.wait_frames(10);
    wait_until(T, "the second viewer's request", || requests() >= 2);
    drop((a, b));
    serve.stop();
}

/// Runs tests/peers/aiortc_peer.py (aiortc from .venv-aiortc) against `serve`;
/// returns its exit success and its JSON line.
fn aiortc(serve: &Serve, mode: &str, frames: u32, timeout_s: u32) -> (bool, serde_json::Value) {
    let out = aiortc_peer("aiortc_peer.py")
        .args([
            mode,
            &format!("http://{}", serve.addr),
            &frames.to_string(),
            &timeout_s.to_string(),
        ])
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_else(|| {
        panic!(
            "aiortc printed nothing: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), serde_json::from_str(line).unwrap())
}

#[test]
fn aiortc_receives_and_decodes_over_whep_and_the_websocket() {
    let serve = Serve::start("");
    let (ok, whep) = aiortc(&serve, "whep", 30, 15);
    assert!(ok, "aiortc over WHEP: {whep}");
    assert_eq!(whep["frames"], 30);
    assert_eq!(
        (whep["width"].as_u64(), whep["height"].as_u64()),
        (Some(320), Some(240))
    );
    assert!(
        whep["mean_luma"].as_f64().unwrap() > 10.0,
        "a picture, not black: {whep}"
    );
    assert_eq!(whep["delete_status"], 200);
    let gone = serve.wait_message("peer_disconnected");
    assert_eq!(gone.get::<String>("reason").unwrap(), "leave");
    assert!(gone.get::<u64>("frames-sent").unwrap() >= 30, "{gone}");
    let (ok, ws) = aiortc(&serve, "ws", 30, 15);
    assert!(ok, "aiortc over the WebSocket: {ws}");
    assert_eq!(ws["frames"], 30);
    assert!(
        ws["remote_candidates"].as_u64().unwrap() > 0,
        "trickled candidates: {ws}"
    );
    let gone = serve.wait_message("peer_disconnected");
    assert!(gone.get::<u64>("frames-sent").unwrap() >= 30, "{gone}");
    println!(
        "aiortc first decoded frame: WHEP {} ms, WebSocket {} ms after start",
        whep["first_frame_ms"], ws["first_frame_ms"]
    );
    serve.stop();
}

#[test]
fn a_dtls_failure_in_one_viewer_does_not_stop_the_stream() {
    let serve = Serve::start("");
    let (b, _) = whep_join(&serve, 96);
    b.wait_frames(10);
    // aiortc as the DTLS client offers ECDSA ciphers only; GStreamer 1.22's
    // DTLS certificate is RSA: dtlsdec posts an error ("no shared cipher").
    let (ok, failed) = aiortc(&serve, "ws-dtls-client", 10, 4);
    assert!(!ok, "this handshake cannot succeed: {failed}");
    let gone = serve.wait_message("peer_disconnected");
    assert!(
        gone.get::<String>("viewer").unwrap().starts_with("ws-"),
        "{gone}"
    );
    // B goes on and no error reached the pipeline (wait_message fails on one).
    let before = b.frames();
    b.wait_frames(before + 60);
    while let Some(m) = serve.bus.pop() {
        assert!(
            !matches!(m.view(), gst::MessageView::Error(_)),
            "an error reached the bus: {m:?}"
        );
    }
    assert_eq!(serve.pipeline.current_state(), gst::State::Playing);
    drop(b);
    serve.stop();
}

/// The player page in Debian's chromium (tests/browser/viewers.mjs through
/// playwright-core): 2 viewers and their first frame under 1 s after the join (the
/// time since page open is printed too), then
/// more viewers (`RTAI_WEBRTC_CHROMIUM_VIEWERS`, default 8, the issue's count:
/// at 320x240 ~1 s more than 6 on a 2-core machine; scripts/webrtcserve-browsers.sh
/// runs longer windows),
/// a leave/join, and a frozen viewer (its renderer SIGSTOPped) that does not slow the others;
/// one encoder throughout.
#[test]
fn chromium_viewers_first_frame_more_viewers_rejoin_and_a_frozen_one() {
    use std::io::{BufRead, BufReader};
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
    assert!(
        std::path::Path::new(dir)
            .join("node_modules/playwright-core")
            .exists(),
        "playwright-core is missing: scripts/setup.sh runs `npm ci` in {dir}"
    );
    let n: usize = std::env::var("RTAI_WEBRTC_CHROMIUM_VIEWERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let window_ms = std::env::var("RTAI_WEBRTC_CHROMIUM_WINDOW_MS").unwrap_or("1500".into());
    let serve = Serve::start("");
    let viewers = || {
        serve
            .serve
            .property::<gst::Structure>("stats")
            .get::<u32>("viewers")
            .unwrap() as usize
    };
    let mut node = std::process::Command::new("node")
        .arg(format!("{dir}/viewers.mjs"))
        .arg(format!("http://{}/", serve.addr))
        .arg(n.to_string())
        .arg(&window_ms)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node runs");
    let mut stdin = node.stdin.take().unwrap();
    let mut out = BufReader::new(node.stdout.take().unwrap());
    let mut next = |expect: &str| -> serde_json::Value {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("not a JSON step: {line:?}"));
        assert_eq!(v["step"], expect, "{v}");
        println!("chromium {expect}: {v}");
        v
    };
    let two = next("two");
    assert_eq!(two["resolution"], serde_json::json!([320, 240]));
    for ms in two["firstFrameMs"].as_array().unwrap() {
        let ms = ms.as_u64().unwrap();
        assert!(ms < 1000, "first frame {ms} ms after the join: {two}");
    }
    assert_eq!(viewers(), 2);
    assert_eq!(serve.encoders(), 1);
    writeln!(stdin).unwrap();
    let more = next("more");
    assert_eq!(more["viewers"], n);
    assert!(
        more["fps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f.as_f64().unwrap() > 0.0),
        "{more}"
    );
    assert_eq!(viewers(), n);
    assert_eq!(serve.encoders(), 1, "one encode for {n} viewers");
    writeln!(stdin).unwrap();
    let rejoin = next("rejoin");
    assert!(rejoin["rejoinFirstFrameMs"].as_u64().is_some(), "{rejoin}");
    wait_until(T, "the left viewer removed and the new one counted", || {
        viewers() == n
            && serve
                .serve
                .property::<gst::Structure>("stats")
                .get::<u64>("connected-total")
                .unwrap()
                > n as u64
    });
    writeln!(stdin).unwrap();
    // The last viewer's renderer is stopped (SIGSTOP): a browser that reads nothing.
    let per_viewer = || -> Vec<(String, u64, u64)> {
        let stats = serve.serve.property::<gst::Structure>("stats");
        stats
            .get::<gst::Array>("viewer-stats")
            .unwrap()
            .iter()
            .map(|v| v.get::<gst::Structure>().unwrap())
            .map(|s| {
                (
                    s.get::<String>("viewer").unwrap(),
                    s.get::<u64>("frames-sent").unwrap(),
                    s.get::<u64>("dropped").unwrap(),
                )
            })
            .collect()
    };
    next("freezing");
    let at_freeze = per_viewer();
    writeln!(stdin).unwrap();
    let frozen = next("frozen");
    let at_end = per_viewer();
    println!(
        "server viewers: {} when the freeze began, {} at its end",
        at_freeze.len(),
        at_end.len()
    );
    // The server side: every branch kept sending during the freeze (UDP gives
    // no back-pressure, so a frozen browser's branch neither blocks nor fills
    // its leaky queue; only a blocked send does, see a_stalled_viewer_…).
    for (id, sent, dropped) in &at_end {
        if let Some((_, s0, d0)) = at_freeze.iter().find(|(v, _, _)| v == id) {
            println!(
                "server during the freeze: {id} sent {} frames, dropped {}",
                sent - s0,
                dropped - d0
            );
            assert!(sent > s0, "{id} stopped sending during the freeze");
        }
    }
    writeln!(stdin).unwrap();
    let thawed = next("thawed");
    drop(stdin);
    let status = node.wait().unwrap();
    assert!(status.success());
    assert_eq!(thawed["errors"], serde_json::json!([]), "{thawed}");
    let base = frozen["baseline"].as_array().unwrap();
    let during = frozen["during"].as_array().unwrap();
    let f = frozen["frozen"].as_u64().unwrap() as usize;
    for i in (0..n).filter(|&i| i != f) {
        let (b, d) = (base[i].as_f64().unwrap(), during[i].as_f64().unwrap());
        assert!(
            d >= 5.0 && d >= 0.5 * b,
            "viewer {i} slowed from {b} to {d} fps while viewer {f} was frozen: {frozen}"
        );
    }
    // The frozen viewer decodes again once thawed.
    assert!(
        thawed["after"][f].as_f64().unwrap() > 0.0,
        "the thawed viewer does not decode: {thawed}"
    );
    serve.stop();
}

#[test]
fn whep_patch_trickles_the_clients_candidates() {
    let serve = Serve::start("");
    let peer = Peer::new(96);
    let (tx, rx) = std::sync::mpsc::channel::<(u32, String)>();
    let tx = std::sync::Mutex::new(tx);
    peer.webrtc.connect("on-ice-candidate", false, move |v| {
        let _ = tx
            .lock()
            .unwrap()
            .send((v[1].get::<u32>().unwrap(), v[2].get::<String>().unwrap()));
        None
    });
    // The offer goes before gathering: its candidates follow in PATCH requests.
    let offer = peer.offer();
    assert!(!offer.contains("a=candidate"), "{offer}");
    let (answer, location) = whep_post(&serve.addr, &offer);
    peer.set_remote(gst_webrtc::WebRTCSDPType::Answer, &answer);
    // The offer's own ICE credentials: a trickle fragment repeats them.
    let attr = |name: &str| {
        offer
            .lines()
            .find_map(|l| l.trim_end().strip_prefix(name))
            .unwrap()
            .to_string()
    };
    let (ufrag, pwd) = (attr("a=ice-ufrag:"), attr("a=ice-pwd:"));
    let frag_with = |ufrag: &str, pwd: &str, c: &str| {
        format!(
            "a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:video0\r\na={c}\r\n"
        )
    };
    let frag = |c: &str| frag_with(&ufrag, &pwd, c);
    let patch_with =
        |body: &str, headers: &[(&str, &str)]| http(&serve.addr, "PATCH", &location, headers, body);
    let patch = |body: &str, ct: &str| patch_with(body, &[("Content-Type", ct)]).0;
    let mut sent = 0;
    let deadline = std::time::Instant::now() + T;
    while peer.frames() < 10 {
        assert!(
            std::time::Instant::now() < deadline,
            "no frames after {sent} trickled candidates"
        );
        if let Ok((_, c)) = rx.recv_timeout(Duration::from_millis(50)) {
            assert_eq!(patch(&frag(&c), "application/trickle-ice-sdpfrag"), 204);
            sent += 1;
        }
    }
    assert!(sent > 0, "candidates went by PATCH");
    assert_eq!(
        patch(
            &frag("candidate:1 1 UDP 1 127.0.0.1 9 typ host"),
            "text/plain"
        ),
        415
    );
    assert_eq!(
        patch("a=candidate:garbage", "application/trickle-ice-sdpfrag"),
        400
    );
    assert_eq!(
        http(
            &serve.addr,
            "PATCH",
            "/whep/whep-999",
            &[("Content-Type", "application/trickle-ice-sdpfrag")],
            "",
        )
        .0,
        404
    );
    // An ICE restart (RFC 9725 § 4.3.2: new credentials, If-Match: *): webrtcbin
    // 1.22 cannot restart ICE, so 422 (the WHEP draft's answer for a session with
    // trickle ICE but no ICE restart), and the session goes on untouched.
    let restart = frag_with(
        "newufrag",
        "newpasswordnewpassword1",
        "candidate:1 1 UDP 1 127.0.0.1 9 typ host",
    );
    let ct = ("Content-Type", "application/trickle-ice-sdpfrag");
    let (status, _, body) = patch_with(&restart, &[ct, ("If-Match", "*")]);
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("ICE restarts are not supported"), "{body}");
    // New credentials without If-Match are a restart too.
    assert_eq!(patch_with(&restart, &[ct]).0, 422);
    let before = peer.frames();
    peer.wait_frames(before + 10);
    // The trickle of the current ICE session still works after the refusals.
    assert_eq!(
        patch(&frag("candidate:1 1 UDP 1 127.0.0.1 9 typ host"), ct.1),
        204
    );
    drop(peer);
    serve.stop();
}
