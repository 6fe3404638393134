//! abrsink behind rtmpserversrc with `stream` left unset (issue 17): each
//! publisher gets its URLs under its publish name, from a real ffmpeg RTMP push.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use gst::prelude::*;

fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstrtailive::plugin_register_static().unwrap();
        gstrtaiencode::plugin_register_static().unwrap();
    });
}

/// A raw HTTP/1.1 GET: status and body.
fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn unset_stream_takes_the_rtmp_publish_name() {
    init();
    // rtmpserversrc takes any stream name; abrsink has no `stream`.
    let pipeline = gst::parse::launch(
        "rtmpserversrc name=src listen=127.0.0.1:0 eos-on-disconnect=false ! flvdemux name=d \
         d.video ! queue ! h264parse ! avdec_h264 ! queue ! abrsink name=abr ladder=240p:300 \
           listen=127.0.0.1:0 prefer-hardware=false \
         d.audio ! queue ! aacparse ! avdec_aac ! queue ! abr.audio",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let abr = pipeline.by_name("abr").unwrap();
    let src = pipeline.by_name("src").unwrap();
    let port = abr.property::<u32>("bound-port") as u16;
    let rtmp_port = src.property::<u32>("bound-port");
    assert_eq!(src.property::<String>("publish-name"), "");
    let ffmpeg = Killed(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440", "-t", "20"])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
            ])
            .args([
                "-g", "30", "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "flv",
            ])
            .arg(format!("rtmp://127.0.0.1:{rtmp_port}/live/studio-7"))
            .spawn()
            .expect("ffmpeg runs"),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let master = loop {
        let (status, body) = get(port, "/hls/studio-7/master.m3u8");
        if status == 200 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no master playlist under the publish name: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(master.contains("#EXT-X-STREAM-INF"), "{master}");
    assert_eq!(src.property::<String>("publish-name"), "studio-7");
    assert_eq!(abr.property::<String>("stream"), "studio-7");
    // Not under the default name.
    assert_eq!(get(port, "/hls/live/master.m3u8").0, 404);
    assert_eq!(get(port, "/watch/studio-7").0, 200);
    let (status, api) = get(port, "/api/streams/studio-7");
    assert_eq!(status, 200, "{api}");
    let api: serde_json::Value = serde_json::from_str(&api).unwrap();
    assert_eq!(api["status"], "active", "{api}");
    drop(ffmpeg);
    pipeline.set_state(gst::State::Null).unwrap();
}
