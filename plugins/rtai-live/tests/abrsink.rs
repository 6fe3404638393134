//! abrsink end to end: a 720p test source → a 3-rung ladder → CMAF → HLS and
//! DASH served over HTTP. ffprobe checks every rendition (resolution, codec,
//! key frames at the same PTS in every rendition, segment durations); the
//! playlists, the MPD (parsed as XML), EOS (ENDLIST, static MPD), LL-HLS parts
//! with blocking reload, hostile requests, and two elements sharing one server.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use gst::prelude::*;

mod common;
use common::*;

fn extinf(playlist: &str) -> Vec<(f64, String)> {
    let lines: Vec<&str> = playlist.lines().collect();
    lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let d = l.strip_prefix("#EXTINF:")?.trim_end_matches(',');
            Some((d.parse().unwrap(), lines[i + 1].to_string()))
        })
        .collect()
}

fn attr<'a>(line: &'a str, name: &str) -> &'a str {
    let start = line
        .find(&format!("{name}="))
        .unwrap_or_else(|| panic!("{name} in {line}"))
        + name.len()
        + 1;
    let rest = &line[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        &quoted[..quoted.find('"').unwrap()]
    } else {
        rest.split(',').next().unwrap()
    }
}

struct Probe {
    width: u64,
    height: u64,
    codec: String,
    keyframes: Vec<f64>,
}

fn ffprobe(file: &Path) -> Probe {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .arg("stream=width,height,codec_name:packet=pts_time,flags")
        .args(["-of", "json"])
        .arg(file)
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stream = &v["streams"][0];
    let keyframes = v["packets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["flags"].as_str().unwrap_or("").starts_with('K'))
        .map(|p| p["pts_time"].as_str().unwrap().parse::<f64>().unwrap())
        .collect();
    Probe {
        width: stream["width"].as_u64().unwrap(),
        height: stream["height"].as_u64().unwrap(),
        codec: stream["codec_name"].as_str().unwrap().to_string(),
        keyframes,
    }
}

/// 720p30 for 5 s into the default-style ladder with a 360p rung: 1080p is
/// skipped, 720p/480p/360p built; everything checked after EOS (the server
/// keeps serving until the element stops).
#[test]
fn ladder_is_aligned_served_and_ended() {
    let rig = Rig::start(
        "videotestsrc num-buffers=150 pattern=ball ! video/x-raw,width=1280,height=720,framerate=30/1 \
         ! abrsink name=abr ladder=1080p:5000,720p:2800,480p:1400,360p:800 listen=127.0.0.1:0 \
           stream=cam1 playlist-length=10 prefer-hardware=false \
         audiotestsrc num-buffers=235 samplesperbuffer=1024 ! audio/x-raw,rate=48000 ! abr.audio",
    );
    let port = rig.port();
    assert_ne!(port, 0);
    rig.wait_eos(Duration::from_secs(60));
    assert_eq!(
        rig.sink.property::<String>("renditions"),
        "720p:1280x720:2800,480p:854x480:1400,360p:640x360:800,audio:aac:128"
    );

    // Master playlist.
    let master = get(port, "/hls/cam1/master.m3u8");
    assert_eq!(master.status, 200);
    assert_eq!(
        master.header("content-type").as_deref(),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(master.header("cache-control").as_deref(), Some("no-cache"));
    assert_eq!(
        master.header("access-control-allow-origin").as_deref(),
        Some("*")
    );
    let text = master.text();
    let inf: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("#EXT-X-STREAM-INF:"))
        .collect();
    assert_eq!(inf.len(), 3, "{text}");
    let mut expected = vec![(1280, 720), (854, 480), (640, 360)].into_iter();
    for line in &inf {
        let (w, h) = expected.next().unwrap();
        assert_eq!(attr(line, "RESOLUTION"), format!("{w}x{h}"));
        let bw: u64 = attr(line, "BANDWIDTH").parse().unwrap();
        let avg: u64 = attr(line, "AVERAGE-BANDWIDTH").parse().unwrap();
        assert!(avg > 0 && avg <= bw, "{line}");
        let codecs = attr(line, "CODECS");
        assert!(
            codecs.starts_with("avc1.") && codecs.ends_with(",mp4a.40.2"),
            "{line}"
        );
        // 4:2:0 profiles only (baseline 42, main 4D, high 64): what every browser decodes.
        assert!(
            ["avc1.42", "avc1.4D", "avc1.64"]
                .iter()
                .any(|p| codecs.starts_with(p)),
            "{line}"
        );
        assert_eq!(attr(line, "FRAME-RATE"), "30.000");
        assert_eq!(attr(line, "AUDIO"), "aac");
    }
    assert!(
        text.contains("#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aac\""),
        "{text}"
    );
    // A session id is handed out on every rendition URI.
    let session = text
        .lines()
        .find(|l| l.starts_with("720p/index.m3u8"))
        .and_then(|l| l.split_once("?session="))
        .map(|(_, s)| s.to_string());

    let dir = tempdir();
    let mut keyframes = Vec::new();
    for (name, w, h) in [("720p", 1280, 720), ("480p", 854, 480), ("360p", 640, 360)] {
        let q = session
            .as_ref()
            .map(|s| format!("?session={s}"))
            .unwrap_or_default();
        let playlist = get(port, &format!("/hls/cam1/{name}/index.m3u8{q}"));
        assert_eq!(playlist.status, 200);
        let p = playlist.text();
        assert!(p.ends_with("#EXT-X-ENDLIST\n"), "{p}");
        assert!(p.contains("#EXT-X-MAP:URI=\"init.mp4"), "{p}");
        let segs = extinf(&p);
        assert!(segs.len() >= 4, "{p}");
        // Every segment but the last (cut by EOS) within ±10 % of 1 s.
        for (d, uri) in &segs[..segs.len() - 1] {
            assert!((0.9..=1.1).contains(d), "{name} {uri}: {d} s\n{p}");
        }
        let init = get(port, &format!("/hls/cam1/{name}/init.mp4"));
        assert_eq!(init.status, 200);
        assert_eq!(init.header("content-type").as_deref(), Some("video/mp4"));
        let mut file = init.body.clone();
        for (_, uri) in &segs {
            let seg = get(port, &format!("/hls/cam1/{name}/{uri}"));
            assert_eq!(seg.status, 200, "{uri}");
            assert!(seg.header("cache-control").unwrap().contains("max-age"));
            file.extend_from_slice(&seg.body);
        }
        let path = dir.join(format!("{name}.mp4"));
        std::fs::write(&path, &file).unwrap();
        let probe = ffprobe(&path);
        assert_eq!((probe.width, probe.height), (w, h), "{name}");
        assert_eq!(probe.codec, "h264");
        assert!(
            probe.keyframes.len() >= segs.len(),
            "{name}: {:?}",
            probe.keyframes
        );
        keyframes.push((name, probe.keyframes));
    }
    // The same key frame times in every rendition (to the millisecond).
    let as_ms = |k: &Vec<f64>| {
        k.iter()
            .map(|t| (t * 1000.0).round() as i64)
            .collect::<BTreeSet<_>>()
    };
    let reference = as_ms(&keyframes[0].1);
    for (name, k) in &keyframes[1..] {
        assert_eq!(as_ms(k), reference, "{name} key frames differ from 720p");
    }
    println!("key frames (s) in all renditions: {:?}", keyframes[0].1);

    // Audio rendition.
    let audio = get(port, "/hls/cam1/audio/index.m3u8").text();
    assert!(
        audio.ends_with("#EXT-X-ENDLIST\n") && extinf(&audio).len() >= 4,
        "{audio}"
    );
    // Audio segments too are whole segments, not a one-frame sliver at each boundary
    // (cmafmux cut split requests between AAC frames into 0.981 s + 0.021 s).
    let audio_segs = extinf(&audio);
    for (d, uri) in &audio_segs[..audio_segs.len() - 1] {
        assert!((0.9..=1.1).contains(d), "audio {uri}: {d} s\n{audio}");
    }
    let a_init = get(port, "/hls/cam1/audio/init.mp4");
    assert_eq!(a_init.header("content-type").as_deref(), Some("audio/mp4"));

    // The MPD after EOS: static, parses, names what dash.js needs.
    let mpd = get(port, "/dash/cam1/manifest.mpd");
    assert_eq!(mpd.status, 200);
    assert_eq!(
        mpd.header("content-type").as_deref(),
        Some("application/dash+xml")
    );
    let xml = mpd.text();
    let doc = roxmltree::Document::parse(&xml).expect("the MPD is XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "MPD");
    assert_eq!(root.attribute("type"), Some("static"), "{xml}");
    assert!(root.attribute("mediaPresentationDuration").is_some());
    assert!(root.attribute("profiles").unwrap().contains("isoff-live"));
    let reps: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("Representation"))
        .collect();
    assert_eq!(reps.len(), 4, "{xml}");
    for rep in &reps {
        for a in ["id", "bandwidth", "codecs"] {
            assert!(rep.attribute(a).is_some(), "{a} on {rep:?}");
        }
        let template = rep
            .children()
            .find(|n| n.has_tag_name("SegmentTemplate"))
            .expect("a SegmentTemplate per Representation");
        for a in ["timescale", "initialization", "media", "startNumber"] {
            assert!(template.attribute(a).is_some(), "{a}");
        }
        let timeline: Vec<_> = template
            .descendants()
            .filter(|n| n.has_tag_name("S"))
            .collect();
        assert!(timeline.len() >= 4);
        // The DASH URLs resolve to the same segments as HLS.
        let id = rep.attribute("id").unwrap();
        let start: u64 = template.attribute("startNumber").unwrap().parse().unwrap();
        let media = template
            .attribute("media")
            .unwrap()
            .replace("$Number$", &start.to_string());
        let d = get(port, &format!("/dash/cam1/{media}"));
        let h = get(port, &format!("/hls/cam1/{id}/seg{start}.m4s"));
        assert_eq!(d.status, 200);
        assert_eq!(d.body, h.body);
    }
    for rep in reps.iter().filter(|r| r.attribute("width").is_some()) {
        assert!(rep.attribute("height").is_some() && rep.attribute("frameRate").is_some());
    }
}

/// Hostile and wrong requests get a 4xx and never a file from outside the stream.
#[test]
fn bad_requests_get_4xx() {
    let rig = Rig::start(
        "videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=30/1 \
         ! abrsink name=abr ladder=240p:300 listen=127.0.0.1:0 stream=s1 prefer-hardware=false",
    );
    let port = rig.port();
    // Served at all (waits for the first segment).
    assert_eq!(get(port, "/hls/s1/master.m3u8").status, 200);
    let huge = format!("/hls/s1/master.m3u8?session={}", "a".repeat(10_000));
    let cases = [
        "/hls/../../etc/passwd",
        "/hls/s1/../../../etc/passwd",
        "/hls/%2e%2e/%2e%2e/etc/passwd",
        "/hls/s1/%2e%2e/%2e%2e%2fetc%2fpasswd",
        "/hls/s1/240p/..%2f..%2f..%2fetc%2fpasswd",
        "/hls/s1/240p/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/hls/s1/..%5c..%5cetc%5cpasswd/index.m3u8",
        "/dash/s1/240p/..%2fmanifest.mpd",
        "/hls/nope/master.m3u8",
        "/dash/nope/manifest.mpd",
        "/watch/nope",
        "/hls/s1/1080p/index.m3u8",
        "/hls/s1/240p/seg999999.m4s",
        "/hls/s1/240p/seg-1.m4s",
        "/hls/s1/240p/index.m3u8?_HLS_msn=abc",
        "/static/..%2f..%2fCargo.toml",
        "/static/passwd",
        huge.as_str(),
    ];
    for path in cases {
        let r = get(port, path);
        assert!(
            (400..500).contains(&r.status),
            "{path}: status {} {}",
            r.status,
            r.text()
        );
        assert!(!r.text().contains("root:"), "{path} leaked a file");
    }
    assert_eq!(get(port, &huge).status, 414);
    // CORS preflight.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "OPTIONS /hls/s1/master.m3u8 HTTP/1.1\r\nHost: x\r\nOrigin: http://a\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 204"), "{raw}");
    assert!(
        raw.to_lowercase()
            .contains("access-control-allow-origin: *"),
        "{raw}"
    );
}

/// LL-HLS: parts, a preload hint, and a blocking reload that returns once the
/// asked-for part exists; a request too far ahead is refused.
#[test]
fn low_latency_parts_and_blocking_reload() {
    let rig = Rig::start(
        "videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=30/1 \
         ! abrsink name=abr ladder=240p:300 listen=127.0.0.1:0 stream=ll low-latency=true \
           part-duration=200 prefer-hardware=false",
    );
    let port = rig.port();
    let p = get(port, "/hls/ll/240p/index.m3u8").text();
    assert!(
        p.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES"),
        "{p}"
    );
    assert!(p.contains("#EXT-X-PART-INF:PART-TARGET=0.200"), "{p}");
    assert!(p.contains("#EXT-X-PART:DURATION="), "{p}");
    let hint = p
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\""))
        .expect("a preload hint")
        .trim_end_matches('"')
        .to_string();
    // part<msn>.<i>.m4s
    let (msn, part) = hint
        .strip_prefix("part")
        .and_then(|s| s.strip_suffix(".m4s"))
        .and_then(|s| s.split_once('.'))
        .unwrap();
    let t = Instant::now();
    let blocked = get(
        port,
        &format!("/hls/ll/240p/index.m3u8?_HLS_msn={msn}&_HLS_part={part}"),
    );
    let waited = t.elapsed();
    assert_eq!(blocked.status, 200);
    assert!(
        blocked
            .text()
            .contains(&format!("URI=\"part{msn}.{part}.m4s\"")),
        "the blocking reload returned without the part: {}",
        blocked.text()
    );
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    // The preload-hinted part itself is served (blocking until it exists).
    let next_part: usize = part.parse::<usize>().unwrap() + 1;
    let r = get(port, &format!("/hls/ll/240p/part{msn}.{next_part}.m4s"));
    assert!(r.status == 200 || r.status == 404, "{}", r.status);
    let far: u64 = msn.parse::<u64>().unwrap() + 50;
    assert_eq!(
        get(port, &format!("/hls/ll/240p/index.m3u8?_HLS_msn={far}")).status,
        400
    );
    // Parts of a segment concatenate to it: check the whole segment of the first complete msn.
    let p = get(port, "/hls/ll/240p/index.m3u8").text();
    let (_, first_seg) = extinf(&p)[0].clone();
    let seq: u64 = first_seg
        .trim_start_matches("seg")
        .trim_end_matches(".m4s")
        .parse()
        .unwrap();
    let seg = get(port, &format!("/hls/ll/240p/seg{seq}.m4s")).body;
    let mut joined = Vec::new();
    for i in 0.. {
        let r = get(port, &format!("/hls/ll/240p/part{seq}.{i}.m4s"));
        if r.status != 200 {
            break;
        }
        joined.extend_from_slice(&r.body);
    }
    assert_eq!(joined, seg, "parts of seg{seq} do not add up to it");
}

/// Two elements with the same `listen` share one server; the second name is
/// served next to the first; a duplicate name is refused at start.
#[test]
fn elements_share_one_server() {
    let a = Rig::start(
        "videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=30/1 \
         ! abrsink name=abr ladder=240p:300 listen=127.0.0.1:0 stream=one prefer-hardware=false",
    );
    let port = a.port();
    let b = Rig::start(&format!(
        "videotestsrc is-live=true pattern=snow ! video/x-raw,width=320,height=240,framerate=30/1 \
         ! abrsink name=abr ladder=240p:300 listen=127.0.0.1:{port} stream=two prefer-hardware=false"
    ));
    assert_eq!(b.port(), port);
    assert_eq!(get(port, "/hls/one/master.m3u8").status, 200);
    assert_eq!(get(port, "/hls/two/master.m3u8").status, 200);
    let page = get(port, "/watch/two");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("/hls/\" + stream") || page.text().contains("\"two\""));
    // Same name on the same server: the state change fails with a clear error.
    start_fails_with(
        &format!("videotestsrc ! abrsink name=abr listen=127.0.0.1:{port} stream=one"),
        "already served",
    );
    // A bad ladder is refused with a clear error.
    start_fails_with(
        "videotestsrc ! abrsink ladder=720p listen=127.0.0.1:0",
        "invalid ladder",
    );
    drop(a);
    drop(b);
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("abrsink-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Starting `description` fails, with an error message containing `text`.
fn start_fails_with(description: &str, text: &str) {
    init();
    let pipeline = gst::parse::launch(description).unwrap();
    assert!(pipeline.set_state(gst::State::Playing).is_err());
    let error = rtai_core::testing::next_error(&pipeline.bus().unwrap(), Duration::from_secs(5));
    assert!(error.to_string().contains(text), "{error}");
    let _ = pipeline.set_state(gst::State::Null);
}

/// Runs play.mjs on `url`: the page's JSON report.
fn play(url: &str) -> serde_json::Value {
    player_script("play.mjs", &[url, "1.5"])
}

/// The chromium tests run one at a time: on 2 cores a second browser and
/// ladder would starve the one measured (a stall is then the machine's, not
/// the player's).
static CHROMIUM: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn chromium_alone() -> std::sync::MutexGuard<'static, ()> {
    CHROMIUM.lock().unwrap_or_else(|e| e.into_inner())
}

/// hls.js and dash.js in Debian's chromium (playwright-core) play a live
/// 720p stream with a 2-rung ladder from abrsink's player page: first frame
/// (requestVideoFrameCallback) within 2 s of opening the page (1 s segments),
/// playback advancing, no failed request, nothing fetched from another origin.
/// Prints start → first playable playlist, page open → first frame and the
/// players' distance from live.
#[test]
fn hls_js_and_dash_js_play_in_chromium() {
    player_deps();
    let _alone = chromium_alone();
    let started = Instant::now();
    let rig = Rig::start(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width=1280,height=720,framerate=30/1 \
         ! abrsink name=abr ladder=720p:2800,480p:1400 listen=127.0.0.1:0 stream=web prefer-hardware=false \
         audiotestsrc is-live=true ! abr.audio",
    );
    let port = rig.port();
    // The master playlist request is held until every rendition has a segment.
    let master = get(port, "/hls/web/master.m3u8");
    assert_eq!(master.status, 200);
    let first_playable = started.elapsed();
    println!(
        "start → first playable playlist: {:.2} s (1 s segments)",
        first_playable.as_secs_f64()
    );
    for (player, query) in [("hls.js", ""), ("dash.js", "?dash=1")] {
        let shown = play(&format!("http://127.0.0.1:{port}/watch/web{query}"));
        assert_eq!(shown["errors"], serde_json::json!([]), "{player}: {shown}");
        assert_eq!(
            shown["foreignRequests"],
            serde_json::json!([]),
            "{player}: {shown}"
        );
        let first_frame = shown["firstFrameMs"].as_f64().unwrap();
        println!(
            "{player}: page open → first frame {first_frame:.0} ms, {} s behind live",
            shown["latency"]
        );
        assert!(
            first_frame < 2000.0,
            "{player}: first frame after {first_frame} ms"
        );
        if player == "hls.js" {
            assert_eq!(shown["levels"], 2, "hls.js sees both renditions: {shown}");
        }
    }
}

/// LL-HLS in chromium: hls.js (lowLatencyMode) on `low-latency=true` starts
/// within 1.5 s and plays closer to live. A 404 for a preload-hinted part that
/// never came (the segment ended first: audio parts are not multiples of the
/// part target) is allowed; nothing else may fail.
#[test]
fn ll_hls_plays_in_chromium() {
    player_deps();
    let _alone = chromium_alone();
    let rig = Rig::start(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width=1280,height=720,framerate=30/1 \
         ! abrsink name=abr ladder=720p:2800,480p:1400 listen=127.0.0.1:0 stream=ll low-latency=true \
           prefer-hardware=false \
         audiotestsrc is-live=true ! abr.audio",
    );
    let port = rig.port();
    assert_eq!(get(port, "/hls/ll/master.m3u8").status, 200);
    let shown = play(&format!("http://127.0.0.1:{port}/watch/ll"));
    let errors: Vec<&str> = shown["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .filter(|e| !(e.starts_with("404 ") && e.contains("/part") && e.ends_with(".m4s")))
        .collect();
    assert!(errors.is_empty(), "{shown}");
    assert_eq!(shown["foreignRequests"], serde_json::json!([]), "{shown}");
    let first_frame = shown["firstFrameMs"].as_f64().unwrap();
    println!(
        "hls.js LL-HLS: page open → first frame {first_frame:.0} ms, {} s behind live",
        shown["latency"]
    );
    assert!(first_frame < 1500.0, "first frame after {first_frame} ms");
}

/// An ffmpeg RTMP publisher into rtmpserversrc (keep-alive mode) → abrsink: the
/// stream is served; when the publisher is killed the playlists end
/// (EXT-X-ENDLIST) within 2 s although the decoders never see another frame;
/// a returning publisher makes the same URLs live again.
#[test]
fn rtmp_publisher_killed_ends_the_playlists() {
    let rig = Rig::start(
        "rtmpserversrc name=src listen=127.0.0.1:0 stream-name=cam eos-on-disconnect=false ! flvdemux name=d \
         d.video ! queue ! h264parse ! avdec_h264 ! queue ! abrsink name=abr ladder=360p:800,240p:300 \
           listen=127.0.0.1:0 stream=cam prefer-hardware=false \
         d.audio ! queue ! aacparse ! avdec_aac ! queue ! abr.audio",
    );
    let rtmp_port = rig.port_of("src");
    let port = rig.port();
    let t0 = Instant::now();
    let mut ffmpeg = ffmpeg_publish(
        &format!("rtmp://127.0.0.1:{rtmp_port}/live/cam"),
        20.0,
        "640x360",
    );
    let master = get(port, "/hls/cam/master.m3u8");
    assert_eq!(master.status, 200, "{}", master.text());
    println!(
        "RTMP publish → first playable playlist: {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(master.text().matches("#EXT-X-STREAM-INF").count(), 2);
    assert!(
        !get(port, "/hls/cam/360p/index.m3u8")
            .text()
            .contains("ENDLIST")
    );
    ffmpeg.kill().unwrap();
    let killed = Instant::now();
    ffmpeg.wait().unwrap();
    let deadline = killed + Duration::from_secs(2);
    loop {
        let p = get(port, "/hls/cam/360p/index.m3u8").text();
        if p.ends_with("#EXT-X-ENDLIST\n") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no ENDLIST 2 s after the publisher was killed:\n{p}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "publisher killed → ENDLIST: {} ms",
        killed.elapsed().as_millis()
    );
    let xml = get(port, "/dash/cam/manifest.mpd").text();
    assert!(xml.contains("type=\"static\""), "{xml}");
    let last_seq = extinf(&get(port, "/hls/cam/360p/index.m3u8").text())
        .last()
        .map(|(_, uri)| uri.clone())
        .unwrap();

    // The publisher comes back (OBS reconnecting): the same URLs go live again,
    // with new segment numbers.
    let mut again = ffmpeg_publish(
        &format!("rtmp://127.0.0.1:{rtmp_port}/live/cam"),
        20.0,
        "640x360",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let p = loop {
        let p = get(port, "/hls/cam/360p/index.m3u8").text();
        if !p.contains("ENDLIST") && !extinf(&p).is_empty() {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "the stream did not restart:\n{p}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        !p.contains(&last_seq),
        "segment numbers reused after the restart:\n{p}"
    );
    assert_eq!(get(port, "/hls/cam/master.m3u8").status, 200);
    again.kill().unwrap();
    again.wait().unwrap();
}

/// Quality switching: hls.js in chromium plays the master playlist of a live
/// 3-rung ladder (480p:1400/360p:800/240p:300, 1 s segments) starting on the
/// top rung, joining after 5 segments; once it plays there with 2.5 s
/// buffered, playwright routing holds each top-rung segment for size × 8 / 120
/// kbit/s: every such download takes longer than the second of media it
/// carries (asserted), so the bandwidth falls below what the rung really needs
/// (the ball pattern's 480p segments are ~21 KB, ~170 kbit/s) and far below
/// its BANDWIDTH. hls.js must switch down (LEVEL_SWITCHED to a lower level,
/// now playing) within 12 s with no `waiting` event, no BUFFER_STALLED_ERROR,
/// no failed request, currentTime never stuck for 500 ms and advancing
/// through the 2 s watched after the switch. Prints throttle → switch
/// decision and throttle → lower level playing.
#[test]
fn hls_js_switches_down_without_stall_in_chromium() {
    player_deps();
    let _alone = chromium_alone();
    let rig = Rig::start(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width=854,height=480,framerate=30/1 \
         ! abrsink name=abr ladder=480p:1400,360p:800,240p:300 listen=127.0.0.1:0 stream=sw \
           prefer-hardware=false \
         audiotestsrc is-live=true ! abr.audio",
    );
    let port = rig.port();
    assert_eq!(get(port, "/hls/sw/master.m3u8").status, 200);
    // A viewer joining a running stream: hls.js starts 3 segments behind the live
    // edge, so it has ~3 s buffered to switch within (a 1 s old stream gives it 1 s).
    let deadline = Instant::now() + Duration::from_secs(15);
    while extinf(&get(port, "/hls/sw/480p/index.m3u8").text()).len() < 5 {
        assert!(
            Instant::now() < deadline,
            "fewer than 5 segments after 15 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = player_script(
        "switch.mjs",
        &[
            &format!("http://127.0.0.1:{port}/hls/sw/master.m3u8"),
            "120",
            "2",
        ],
    );
    println!("{r}");
    assert_eq!(r["top"], 2, "three levels: {r}");
    let throttled = r["throttled"].as_array().unwrap();
    assert!(!throttled.is_empty(), "no top-rung segment was slowed: {r}");
    // Slower than real time: the rung cannot be sustained at this bandwidth.
    for t in throttled {
        assert!(t["holdMs"].as_f64().unwrap() > 1000.0, "{t}");
    }
    assert!(r["switchedTo"].as_i64().unwrap() < 2, "{r}");
    assert_eq!(r["waiting"], 0, "playback stalled (waiting): {r}");
    assert_eq!(r["stalls"], 0, "BUFFER_STALLED_ERROR: {r}");
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    assert_eq!(r["failed"], serde_json::json!([]), "{r}");
    assert!(r["stuckMs"].as_f64().unwrap() < 500.0, "{r}");
    assert!(
        r["advancedAfterSwitch"].as_f64().unwrap() >= 1.5,
        "playback did not keep advancing: {r}"
    );
    println!(
        "hls.js switch down: throttle → decision {} ms, → lower level playing {:.0} ms",
        r["decidedMs"],
        r["switchedMs"].as_f64().unwrap()
    );
}
