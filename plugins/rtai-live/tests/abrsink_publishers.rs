//! abrsink behind one rtmpserversrc with `stream` unset, against real ffmpeg
//! RTMP pushes (issue 17): a second publisher of another name ends the first
//! stream (ENDLIST, WebSocket `ended`) and is served under its own name; a
//! video-only publisher (`ffmpeg -an`) with the `audio` pad linked is served
//! without an audio rendition.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use gst::prelude::*;

mod common;
use common::*;

const PIPELINE: &str = "rtmpserversrc name=src listen=127.0.0.1:0 eos-on-disconnect=false ! flvdemux name=d \
     d.video ! queue ! h264parse ! avdec_h264 ! queue ! abrsink name=abr ladder=240p:300 \
       listen=127.0.0.1:0 prefer-hardware=false \
     d.audio ! queue ! aacparse ! avdec_aac ! queue ! abr.audio";

/// The master playlist of `stream` once servable.
fn master(port: u16, stream: &str) -> String {
    poll(
        &format!("master playlist of {stream}"),
        Duration::from_secs(20),
        || {
            try_get(port, &format!("/hls/{stream}/master.m3u8"))
                .filter(|r| r.status == 200)
                .map(|r| r.text())
        },
    )
}

/// The first message of the WebSocket status feed of `stream` that `pred` accepts.
async fn ws_wait(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    timeout: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> Option<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .ok()??
            .ok()?;
        if let Ok(text) = msg.to_text()
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(text)
            && pred(&v)
        {
            return Some(v);
        }
    }
}

#[test]
fn a_second_publisher_of_another_name_ends_the_first_and_gets_its_own_urls() {
    let rig = Rig::start(PIPELINE);
    let src = rig.pipeline.by_name("src").unwrap();
    let port = rig.port();
    let rtmp = rig.port_of("src");
    let names = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = names.clone();
    src.connect_notify(Some("publish-name"), move |src, _| {
        seen.lock()
            .unwrap()
            .push(src.property::<String>("publish-name"));
    });
    let stream_notified = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = stream_notified.clone();
    rig.sink.connect_notify(Some("stream"), move |abr, _| {
        seen.lock().unwrap().push(abr.property::<String>("stream"));
    });

    let first = Killed(ffmpeg_push(rtmp, "live/first", 30.0));
    let m = master(port, "first");
    assert!(m.contains("#EXT-X-STREAM-INF"), "{m}");
    assert_eq!(rig.sink.property::<String>("stream"), "first");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut ws, _) = rt
        .block_on(tokio_tungstenite::connect_async(format!(
            "ws://127.0.0.1:{port}/ws/streams/first"
        )))
        .unwrap();
    // The first publisher leaves: its stream ends at once.
    let left = Instant::now();
    drop(first);
    let ended = rt.block_on(ws_wait(&mut ws, Duration::from_secs(5), |v| {
        v["type"] == "status" && v["status"] == "ended"
    }));
    assert!(
        ended.is_some(),
        "no `ended` on the first stream's WebSocket"
    );
    println!(
        "first publisher killed → WebSocket ended: {:?}",
        left.elapsed()
    );
    let playlist = get(port, "/hls/first/240p/index.m3u8").text();
    assert!(playlist.contains("#EXT-X-ENDLIST"), "{playlist}");

    // A second publisher with another name: served under that name.
    let started = Instant::now();
    let _second = Killed(ffmpeg_push(rtmp, "live/second", 30.0));
    let m = master(port, "second");
    println!(
        "second publish → its master playlist: {:?}",
        started.elapsed()
    );
    assert!(m.contains("#EXT-X-STREAM-INF"), "{m}");
    assert!(m.contains("AUDIO=\"aac\""), "{m}");
    assert_eq!(src.property::<String>("publish-name"), "second");
    assert_eq!(*names.lock().unwrap(), ["first", "second"]);
    assert_eq!(rig.sink.property::<String>("stream"), "second");
    assert_eq!(stream_notified.lock().unwrap().last().unwrap(), "second");
    let api = get(port, "/api/streams/second").json();
    assert_eq!(api["status"], "active", "{api}");
    // Its own segments, live (no ENDLIST), and a segment is served.
    let uri = m
        .lines()
        .find(|l| l.starts_with("240p/"))
        .unwrap()
        .to_string();
    let playlist = get(port, &format!("/hls/second/{uri}")).text();
    assert!(!playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
    let seg = playlist
        .lines()
        .find(|l| l.starts_with("seg"))
        .unwrap_or_else(|| panic!("no segment: {playlist}"));
    let r = get(port, &format!("/hls/second/240p/{seg}"));
    assert_eq!(r.status, 200);
    assert!(!r.body.is_empty());
    // The first stream stays ended, under its own name.
    let playlist = get(port, "/hls/first/240p/index.m3u8").text();
    assert!(playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
    assert_eq!(get(port, "/api/streams/first").json()["status"], "ended");
    let all = get(port, "/api/streams").json();
    let listed = all.to_string();
    assert!(
        listed.contains("\"first\"") && listed.contains("\"second\""),
        "{all}"
    );
}

#[test]
fn a_video_only_publisher_is_served_without_audio() {
    let rig = Rig::start(PIPELINE);
    let port = rig.port();
    let url = format!("rtmp://127.0.0.1:{}/live/cam", rig.port_of("src"));
    let started = Instant::now();
    let ffmpeg = Killed(
        rtai_core::testing::ffmpeg_rtmp(&url, 30.0, "320x240", 30, false)
            .spawn()
            .expect("ffmpeg runs"),
    );
    let m = master(port, "cam");
    println!(
        "video-only publish → master playlist: {:?}",
        started.elapsed()
    );
    assert!(m.contains("#EXT-X-STREAM-INF"), "{m}");
    assert!(!m.contains("TYPE=AUDIO"), "{m}");
    assert!(!m.contains("AUDIO="), "{m}");
    assert!(!m.contains("mp4a"), "{m}");
    assert_eq!(get(port, "/hls/cam/audio/index.m3u8").status, 404);
    let renditions = rig.sink.property::<String>("renditions");
    assert!(!renditions.contains("audio"), "{renditions}");
    let mpd = get(port, "/dash/cam/manifest.mpd").text();
    let doc = roxmltree::Document::parse(&mpd).unwrap();
    let sets: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("AdaptationSet"))
        .collect();
    assert_eq!(sets.len(), 1, "{mpd}");
    assert!(!mpd.contains("audio/mp4"), "{mpd}");
    // The video plays on: its playlist grows.
    let uri = m.lines().find(|l| l.starts_with("240p/")).unwrap();
    let count = |p: &str| p.lines().filter(|l| l.starts_with("#EXTINF")).count();
    let before = count(&get(port, &format!("/hls/cam/{uri}")).text());
    poll("one more segment", Duration::from_secs(10), || {
        (count(&get(port, &format!("/hls/cam/{uri}")).text()) > before).then_some(())
    });
    // The publisher leaves: the stream ends (ENDLIST) as one with audio does.
    drop(ffmpeg);
    poll("ENDLIST", Duration::from_secs(5), || {
        get(port, "/hls/cam/240p/index.m3u8")
            .text()
            .contains("#EXT-X-ENDLIST")
            .then_some(())
    });
}
