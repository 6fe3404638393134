//! abrsink behind rtmpserversrc with `stream` left unset (issue 17): each
//! publisher gets its URLs under its publish name, from a real ffmpeg RTMP push.

use std::time::{Duration, Instant};

use gst::prelude::*;

mod common;
use common::*;

#[test]
fn unset_stream_takes_the_rtmp_publish_name() {
    // rtmpserversrc takes any stream name; abrsink has no `stream`.
    let rig = Rig::start(
        "rtmpserversrc name=src listen=127.0.0.1:0 eos-on-disconnect=false ! flvdemux name=d \
         d.video ! queue ! h264parse ! avdec_h264 ! queue ! abrsink name=abr ladder=240p:300 \
           listen=127.0.0.1:0 prefer-hardware=false \
         d.audio ! queue ! aacparse ! avdec_aac ! queue ! abr.audio",
    );
    let src = rig.pipeline.by_name("src").unwrap();
    let port = rig.port();
    assert_eq!(src.property::<String>("publish-name"), "");
    let _ffmpeg = Killed(ffmpeg_push(rig.port_of("src"), "live/studio-7", 20.0));
    let deadline = Instant::now() + Duration::from_secs(15);
    let master = loop {
        let r = get(port, "/hls/studio-7/master.m3u8");
        if r.status == 200 {
            break r.text();
        }
        assert!(
            Instant::now() < deadline,
            "no master playlist under the publish name: {} {}",
            r.status,
            r.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(master.contains("#EXT-X-STREAM-INF"), "{master}");
    assert_eq!(src.property::<String>("publish-name"), "studio-7");
    assert_eq!(rig.sink.property::<String>("stream"), "studio-7");
    // Not under the default name.
    assert_eq!(get(port, "/hls/live/master.m3u8").status, 404);
    assert_eq!(get(port, "/watch/studio-7").status, 200);
    let api = get(port, "/api/streams/studio-7");
    assert_eq!(api.status, 200, "{}", api.text());
    assert_eq!(api.json()["status"], "active", "{}", api.text());
}
