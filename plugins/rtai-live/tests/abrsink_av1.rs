//! abrsink with `video-codec=av1` (issue 17): every rung encoded to AV1 by
//! rtencodebin, packaged by cmafmux as CMAF, served as HLS and DASH with a
//! full `av01.P.LLT.DD` CODECS string (from the init segment's `av1C`);
//! ffprobe reads AV1 at each rung's size with a key frame at the same PTS at
//! the start of a segment in every rung; dash.js plays it in chromium.

use std::path::Path;
use std::process::Command;

use gst::prelude::*;

mod common;
use common::*;

#[test]
fn av1_ladder_is_served_as_cmaf() {
    let rig = Rig::start(
        "videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=30/1 \
           ! abrsink name=abr ladder=240p:300,180p:200 listen=127.0.0.1:0 stream=av video-codec=av1 \
             prefer-hardware=false \
         audiotestsrc is-live=true ! abr.audio",
    );
    let port = rig.port();
    let master = get(port, "/hls/av/master.m3u8");
    assert_eq!(master.status, 200, "{}", master.text());
    let m = master.text();
    println!("{m}");
    assert!(m.contains("CODECS=\"av01.0."), "{m}");
    let dir = rtai_core::testing::temp_dir("abrsink-av1");
    // The same segment number in both rungs: AV1, the rung's size, a key frame first, same PTS.
    let playlist = get(port, "/hls/av/180p/index.m3u8").text();
    let seg = playlist
        .lines()
        .rfind(|l| l.starts_with("seg"))
        .unwrap()
        .to_string();
    let mut first_pts = Vec::new();
    for (rung, size) in [("240p", "320,240"), ("180p", "240,180")] {
        let init = get(port, &format!("/hls/av/{rung}/init.mp4"));
        let media = get(port, &format!("/hls/av/{rung}/{seg}"));
        assert_eq!(media.status, 200, "{rung}/{seg}");
        let file = dir.join(format!("{rung}.mp4"));
        std::fs::write(&file, [init.body, media.body].concat()).unwrap();
        let probe = |entries: &str, extra: &[&str]| {
            let out = Command::new("ffprobe")
                .args([
                    "-v",
                    "error",
                    "-select_streams",
                    "v:0",
                    "-show_entries",
                    entries,
                ])
                .args(extra)
                .args(["-of", "csv=p=0"])
                .arg(&file)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        assert_eq!(
            probe("stream=codec_name,width,height", &[]),
            format!("av1,{size}"),
            "{rung}"
        );
        let first = probe("packet=pts,flags", &["-read_intervals", "%+#1"]);
        let (pts, flags) = first.split_once(',').unwrap();
        assert!(flags.starts_with('K'), "{rung}/{seg} starts with {first}");
        first_pts.push(pts.to_string());
    }
    assert_eq!(
        first_pts[0], first_pts[1],
        "key frames aligned across rungs"
    );
    let mpd = get(port, "/dash/av/manifest.mpd").text();
    assert!(mpd.contains("codecs=\"av01.0."), "{mpd}");
    let _ = std::fs::remove_dir_all(dir);

    // dash.js in chromium plays it (MSE with AV1) as one session.
    let player_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/player");
    assert!(
        Path::new(player_dir).join("node_modules/dashjs").exists(),
        "dash.js/playwright-core are missing: scripts/setup.sh runs `npm ci` in {player_dir}"
    );
    // (hls.js 1.7 renders no frame of this AV1 ladder: docs/abrsink.md, limits.)
    let out = Command::new("node")
        .arg(format!("{player_dir}/dash_session.mjs"))
        .arg(format!("http://127.0.0.1:{port}/watch/av?dash=1"))
        .arg(format!("http://127.0.0.1:{port}/api/streams/av/viewers"))
        .arg("2")
        .output()
        .expect("node runs");
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "{line} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["errors"], serde_json::json!([]), "{v}");
    // The page's session watched a video rung (the test's own requests above are sessions too).
    let page = v["viewersOpen"]["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == v["session"])
        .unwrap_or_else(|| panic!("the page's session is not counted: {v}"));
    assert!(
        page["rendition"] == "240p" || page["rendition"] == "180p",
        "{page}"
    );
    println!(
        "dash.js plays the AV1 ladder: first frame {} ms",
        v["firstFrameMs"]
    );
}

#[test]
fn another_codec_fails_the_start_with_a_clear_error() {
    init();
    let abr = gst::ElementFactory::make("abrsink")
        .property("listen", "127.0.0.1:0")
        .property("video-codec", "vp9")
        .build()
        .unwrap();
    let bus = gst::Bus::new();
    abr.set_bus(Some(&bus));
    assert!(abr.set_state(gst::State::Ready).is_err());
    let error = rtai_core::testing::next_error(&bus, std::time::Duration::from_secs(5));
    assert!(
        error
            .to_string()
            .contains("invalid video-codec \"vp9\": one of h264, av1"),
        "{error}"
    );
    abr.set_state(gst::State::Null).unwrap();
}
