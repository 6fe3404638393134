//! abrsink against stock GStreamer 1.22 HLS, measured in the same run:
//!
//! - CPU of the 3-rung ladder (1080p/720p/480p, one 1080p30 live source, x264
//!   ultrafast/zerolatency through rtencodebin, CMAF, HLS+DASH served) against
//!   three independent stock pipelines `videotestsrc ! videoscale ! x264enc !
//!   h264parse ! hlssink2` (same source, sizes, bitrates and x264 settings):
//!   process CPU seconds per second of stream;
//! - startup: PLAYING → first playable playlist (every rendition has a segment:
//!   abrsink's master playlist answers; hlssink2's playlist lists a segment),
//!   1 s segments, 720p30 live source, median of 3.
//!
//! Run: `cargo build --release -p gst-plugin-rtai-live -p gst-plugin-rtai-encode && cargo bench -p rtai-benches --bench abrsink`

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use gst::prelude::*;
use rtai_benches::{figure, ratio};

const CPU_SECONDS: u64 = 8;
const LADDER: [(u32, u32, u32); 3] = [(1920, 1080, 5000), (1280, 720, 2800), (854, 480, 1400)];

/// User + system CPU seconds of this process (/proc/self/stat, clock ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

fn run_for(pipeline: &gst::Pipeline, seconds: u64, before_stop: impl FnOnce()) -> f64 {
    let c0 = cpu_seconds();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    if let Some(msg) = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(seconds),
        &[gst::MessageType::Error],
    ) && let gst::MessageView::Error(e) = msg.view()
    {
        panic!("{} ({:?})", e.error(), e.debug());
    }
    let cpu = cpu_seconds() - c0;
    before_stop();
    pipeline.set_state(gst::State::Null).unwrap();
    cpu / seconds as f64
}

fn launch(description: &str) -> gst::Pipeline {
    gst::parse::launch(description)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap()
}

fn x264(kbps: u32) -> String {
    format!("x264enc tune=zerolatency speed-preset=ultrafast bitrate={kbps} key-int-max=30")
}

fn stock_ladder(dir: &std::path::Path) -> gst::Pipeline {
    let mut chains = Vec::new();
    for (w, h, kbps) in LADDER {
        let d = dir.join(format!("{h}p"));
        std::fs::create_dir_all(&d).unwrap();
        chains.push(format!(
            "videotestsrc is-live=true pattern=ball ! video/x-raw,width=1920,height=1080,framerate=30/1,format=I420 \
             ! videoscale ! video/x-raw,width={w},height={h} ! {} ! h264parse \
             ! hlssink2 target-duration=1 max-files=10 playlist-length=6 \
               location={}/seg%05d.ts playlist-location={}/index.m3u8",
            x264(kbps),
            d.display(),
            d.display()
        ));
    }
    launch(&chains.join(" "))
}

fn get(port: u16, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    raw
}

/// Segments written so far by a rendition (media sequence + listed).
fn segments_written(playlist: &str) -> u64 {
    let seq: u64 = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    seq + playlist.matches("#EXTINF").count() as u64
}

fn get_status(port: u16, path: &str) -> u16 {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    raw.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn abrsink_startup() -> f64 {
    let p = launch(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width=1280,height=720,framerate=30/1 \
         ! abrsink name=abr listen=127.0.0.1:0 stream=bench prefer-hardware=false",
    );
    let t0 = Instant::now();
    p.set_state(gst::State::Playing).unwrap();
    let port = p.by_name("abr").unwrap().property::<u32>("bound-port") as u16;
    // The master playlist request is held until every rendition has a segment.
    let status = get_status(port, "/hls/bench/master.m3u8");
    let t = t0.elapsed().as_secs_f64();
    assert_eq!(status, 200);
    p.set_state(gst::State::Null).unwrap();
    t
}

fn hlssink2_startup(dir: &std::path::Path) -> f64 {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let playlist = dir.join("index.m3u8");
    let p = launch(&format!(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width=1280,height=720,framerate=30/1,format=I420 \
         ! {} ! h264parse ! hlssink2 target-duration=1 location={}/seg%05d.ts playlist-location={}",
        x264(2800),
        dir.display(),
        playlist.display()
    ));
    let t0 = Instant::now();
    p.set_state(gst::State::Playing).unwrap();
    let deadline = t0 + Duration::from_secs(20);
    loop {
        if std::fs::read_to_string(&playlist).is_ok_and(|t| t.contains("#EXTINF")) {
            break;
        }
        assert!(Instant::now() < deadline, "hlssink2 wrote no playlist");
        std::thread::sleep(Duration::from_millis(5));
    }
    let t = t0.elapsed().as_secs_f64();
    p.set_state(gst::State::Null).unwrap();
    t
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    rtai_benches::init();
    let tmp = std::env::temp_dir().join(format!("abrsink-bench-{}", std::process::id()));

    // Startup first (an idle machine), alternating.
    let mut abr = Vec::new();
    let mut stock = Vec::new();
    for _ in 0..3 {
        abr.push(abrsink_startup());
        stock.push(hlssink2_startup(&tmp.join("startup")));
    }
    let (abr, stock) = (median(abr), median(stock));
    figure(
        "abrsink 720p30 (720p+480p rungs) → master playable",
        abr,
        "s",
    );
    figure(
        "stock x264enc ! hlssink2 720p30 → playlist playable",
        stock,
        "s",
    );
    ratio(
        "startup abrsink vs stock hlssink2 (1 s segments)",
        abr,
        stock,
        "s",
    );

    // CPU of the 3-rung ladder from a 1080p30 source.
    let ours = launch(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width=1920,height=1080,framerate=30/1 \
         ! abrsink name=abr listen=127.0.0.1:0 stream=cpu prefer-hardware=false dash=true",
    );
    let sink = ours.by_name("abr").unwrap();
    let ours_cpu = run_for(&ours, CPU_SECONDS, || {
        // Every rung kept up with the live source (one segment per second).
        let port = sink.property::<u32>("bound-port") as u16;
        for rung in ["1080p", "720p", "480p"] {
            let n = segments_written(&get(port, &format!("/hls/cpu/{rung}/index.m3u8")));
            figure(
                &format!("abrsink {rung} segments in {CPU_SECONDS} s"),
                n as f64,
                "",
            );
            assert!(n + 2 >= CPU_SECONDS, "{rung} fell behind: {n} segments");
        }
    });
    let theirs = stock_ladder(&tmp.join("cpu"));
    let theirs_cpu = run_for(&theirs, CPU_SECONDS, || {
        for (_, h, _) in LADDER {
            let p = std::fs::read_to_string(tmp.join(format!("cpu/{h}p/index.m3u8")))
                .unwrap_or_default();
            figure(
                &format!("hlssink2 {h}p segments in {CPU_SECONDS} s"),
                segments_written(&p) as f64,
                "",
            );
        }
    });
    figure("abrsink 3-rung ladder, 1080p30 source", ours_cpu, "CPU s/s");
    figure(
        "3 x stock videotestsrc ! x264enc ! hlssink2",
        theirs_cpu,
        "CPU s/s",
    );
    ratio(
        "CPU abrsink ladder vs 3 stock pipelines",
        ours_cpu,
        theirs_cpu,
        "CPU s/s",
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
