//! cliprecorder end to end: live H.264 (videotestsrc ! x264enc ! h264parse) through the
//! recorder, markers posted on the bus as analyticssink posts them (or sent as events and
//! the `record` signal), clips read back from a local directory and from a real
//! S3-compatible server (moto's server mode, from PyPI: scripts/peers-moto.txt, installed
//! into .venv-moto by scripts/setup.sh) and checked with ffprobe.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gst::prelude::*;
use object_store::ObjectStoreExt;

const MS: u64 = 1_000_000;
/// x264enc key-int-max=15 at 30 fps.
const GOP: u64 = 500 * MS;
const FRAME: u64 = 33_333_334;
const PRE_ROLL_MS: u64 = 3000;
const POST_ROLL_MS: u64 = 500;

fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        gst::init().unwrap();
        gstrtairecord::plugin_register_static().unwrap();
    });
}

fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cliprecorder-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `ready` until it holds (a server process or a file: nothing to block on).
fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "{what} not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One raw HTTP/1.1 request; the status code (0: no connection).
fn http(port: u16, method: &str, path: &str) -> u16 {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).is_err() {
        return 0;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// moto's S3 server on 127.0.0.1 (in memory); killed on drop.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start(port: u16) -> Self {
        let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv-moto/bin/moto_server");
        assert!(
            bin.exists(),
            "{} is missing: scripts/setup.sh installs moto[server] (scripts/peers-moto.txt) into .venv-moto",
            bin.display()
        );
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut moto = Self { child, port };
        wait_until("moto server", Duration::from_secs(30), || {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto_server exited: {status}");
            }
            http(port, "GET", "/") == 200
        });
        moto
    }

    fn create_bucket(&self, bucket: &str) {
        assert_eq!(http(self.port, "PUT", &format!("/{bucket}")), 200);
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads an object back from the server.
fn get_object(endpoint: &str, bucket: &str, key: &str) -> Vec<u8> {
    rtai_core::runtime::ensure_tls_provider();
    let store = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .build()
        .unwrap();
    rtai_core::runtime::runtime().block_on(async {
        store
            .get(&object_store::path::Path::from(key))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec()
    })
}

struct Probe {
    duration: f64,
    /// (pts seconds, key frame) per packet in order.
    packets: Vec<(f64, bool)>,
}

fn ffprobe(path: &Path) -> Probe {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("ffprobe (Debian's ffmpeg package) runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let duration: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts_time,flags",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let packets = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (pts, flags) = l.split_once(',').unwrap();
            (pts.parse().unwrap(), flags.contains('K'))
        })
        .collect();
    Probe { duration, packets }
}

struct Rig {
    pipeline: gst::Pipeline,
    rec: gst::Element,
    analytics: gst::Element,
    bus: gst::Bus,
    backlog: std::cell::RefCell<Vec<gst::Message>>,
    /// Buffers that reached the sink after the recorder.
    passed: Arc<AtomicU64>,
}

impl Rig {
    /// Live 160x120 H.264 at 30 fps, a key frame every 15 frames, into `cliprecorder name=rec
    /// pre-roll=3000 post-roll=500 <props>`; `analytics` is an element that posts markers as
    /// analyticssink does.
    fn start(props: &str) -> Self {
        init();
        let pipeline = gst::parse::launch(&format!(
            "videotestsrc is-live=true pattern=ball ! video/x-raw,width=160,height=120,framerate=30/1 ! \
             x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 bframes=0 ! h264parse ! \
             cliprecorder name=rec pre-roll={PRE_ROLL_MS} post-roll={POST_ROLL_MS} {props} ! \
             fakesink name=sink sync=false  fakesink name=analytics async=false"
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let rec = pipeline.by_name("rec").unwrap();
        let analytics = pipeline.by_name("analytics").unwrap();
        let passed = Arc::new(AtomicU64::new(0));
        let p = passed.clone();
        pipeline
            .by_name("sink")
            .unwrap()
            .static_pad("sink")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                p.fetch_add(1, Ordering::Relaxed);
                gst::PadProbeReturn::Ok
            });
        let bus = pipeline.bus().unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let rig = Self {
            pipeline,
            rec,
            analytics,
            bus,
            backlog: Default::default(),
            passed,
        };
        // Until the ring holds its pre-roll.
        rig.wait_running_time(PRE_ROLL_MS * MS + GOP);
        rig
    }

    fn running_time(&self) -> u64 {
        let clock = self.pipeline.clock().unwrap();
        (clock.time() - self.pipeline.base_time().unwrap()).nseconds()
    }

    fn wait_running_time(&self, t: u64) {
        wait_until("running time", Duration::from_secs(30), || {
            self.pipeline.clock().is_some() && self.running_time() >= t
        });
    }

    /// Posts `rtai-clip-marker` from the `analytics` element, the fields analyticssink sets.
    fn post_marker(&self, start: u64, end: u64, reason: &str, source: &str) {
        let s = gst::Structure::builder("rtai-clip-marker")
            .field("stream", "sink_0")
            .field("source-id", "test/stream")
            .field("event-time", "2026-12-02T00:00:00.000Z")
            .field("start", start)
            .field("end", end)
            .field("clip-worthy-score", 0.9f64)
            .field("reason", reason)
            .field("source", source)
            .field("event-id", format!("clip-{source}"))
            .build();
        self.analytics
            .post_message(
                gst::message::Element::builder(s)
                    .src(&self.analytics)
                    .build(),
            )
            .unwrap();
    }

    /// The next message matching `pick` within `timeout`; others are kept for later waits.
    fn wait_for(
        &self,
        timeout: Duration,
        pick: impl Fn(&gst::Message) -> bool,
    ) -> Option<gst::Message> {
        let mut backlog = self.backlog.borrow_mut();
        if let Some(i) = backlog.iter().position(&pick) {
            return Some(backlog.remove(i));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let msg = self
                .bus
                .timed_pop(gst::ClockTime::from_nseconds(left.as_nanos() as u64))?;
            if let gst::MessageView::Error(e) = msg.view() {
                panic!("pipeline error: {} {:?}", e.error(), e.debug());
            }
            if pick(&msg) {
                return Some(msg);
            }
            backlog.push(msg);
        }
    }

    fn wait_recorded(&self, timeout: Duration) -> Option<gst::Structure> {
        self.wait_for(timeout, |m| {
            m.structure()
                .is_some_and(|s| s.name() == "rtai-clip-recorded")
        })
        .map(|m| m.structure().unwrap().to_owned())
    }

    fn wait_warning(&self, timeout: Duration) -> Option<String> {
        self.wait_for(timeout, |m| {
            matches!(m.view(), gst::MessageView::Warning(_))
        })
        .map(|m| match m.view() {
            gst::MessageView::Warning(w) => format!("{} {:?}", w.error(), w.debug()),
            _ => unreachable!(),
        })
    }

    fn stats(&self) -> gst::Structure {
        self.rec.property::<gst::Structure>("stats")
    }

    fn stop(self) {
        self.pipeline.set_state(gst::State::Null).unwrap();
    }
}

/// Checks a recorded clip against its marker: the message's bounds within one GOP of the
/// marker start and ending at its end + post-roll, and the file with ffprobe: key frame first,
/// duration matching the bounds.
fn check_clip(rec: &gst::Structure, file: &Path, marker_start: u64, marker_end: u64) {
    let start = rec.get::<u64>("start").unwrap();
    let end = rec.get::<u64>("end").unwrap();
    assert!(
        start <= marker_start,
        "clip starts {start} after the marker {marker_start}"
    );
    assert!(
        marker_start - start < GOP + FRAME,
        "clip starts {} ms before the marker: more than a GOP",
        (marker_start - start) / MS
    );
    let wanted_end = marker_end + POST_ROLL_MS * MS;
    assert!(
        end + FRAME >= wanted_end && end <= wanted_end + 2 * FRAME,
        "clip ends at {end}, wanted {wanted_end}"
    );
    let probe = ffprobe(file);
    assert!(!probe.packets.is_empty());
    assert!(probe.packets[0].1, "first packet is not a key frame");
    assert!(
        probe.packets[0].0.abs() < 0.001,
        "clip starts at {}",
        probe.packets[0].0
    );
    let secs = (end - start) as f64 / 1e9;
    assert!(
        (probe.duration - secs).abs() < 0.1,
        "ffprobe duration {} vs {secs}",
        probe.duration
    );
    assert_eq!(
        probe.packets.len() as u32,
        rec.get::<u32>("frames").unwrap(),
        "every frame in the file"
    );
}

#[test]
fn local_directory_clip_from_a_bus_marker_in_time() {
    let dir = temp_dir("local");
    let rig = Rig::start(&format!("location={}", dir.display()));
    // A marker ending now: the clip waits for the post-roll, then is written.
    let now = rig.running_time();
    let (start, end) = (now - 1500 * MS, now);
    let posted = Instant::now();
    rig.post_marker(start, end, "speech", "e1");
    let rec = rig
        .wait_recorded(Duration::from_millis(POST_ROLL_MS + 2000))
        .expect("clip in storage within post-roll + 2 s of the marker");
    let took = posted.elapsed();
    eprintln!("local clip in storage {took:?} after its marker (post-roll {POST_ROLL_MS} ms)");
    assert!(took < Duration::from_millis(POST_ROLL_MS + 2000));
    assert!(
        took >= Duration::from_millis(POST_ROLL_MS - 100),
        "not before the post-roll"
    );
    assert_eq!(rec.get::<&str>("storage").unwrap(), "local");
    assert_eq!(rec.get::<&str>("reason").unwrap(), "speech");
    assert_eq!(rec.get::<&str>("sources").unwrap(), "e1");
    assert_eq!(rec.get::<&str>("event-ids").unwrap(), "clip-e1");
    assert!(!rec.get::<bool>("truncated").unwrap());
    let path = PathBuf::from(rec.get::<&str>("location").unwrap());
    assert!(path.starts_with(std::path::absolute(&dir).unwrap()));
    assert_eq!(
        rec.get::<&str>("url").unwrap(),
        format!("file://{}", path.display())
    );
    assert_eq!(
        rec.get::<u64>("bytes").unwrap(),
        std::fs::metadata(&path).unwrap().len()
    );
    check_clip(&rec, &path, start, end);
    // Nothing half-written left behind.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(rig.passed.load(Ordering::Relaxed) > 0);
    rig.stop();
}

#[test]
fn overlapping_markers_from_bus_event_and_signal_make_one_clip() {
    let dir = temp_dir("merge");
    let rig = Rig::start(&format!(
        "location={} marker-source=analytics",
        dir.display()
    ));
    let now = rig.running_time();
    // Bus marker 2.5 s .. 2 s ago; an upstream event 1.8 .. 1.2 s ago (starts before the
    // first ends + post-roll); the record signal 1.0 s .. 0.5 s ago.
    rig.post_marker(now - 2500 * MS, now - 2000 * MS, "speech", "e1");
    let event = gst::event::CustomUpstream::new(
        gst::Structure::builder("rtai-clip-marker")
            .field("start", now - 1800 * MS)
            .field("end", now - 1200 * MS)
            .field("reason", "object_appear")
            .field("source", "e2")
            .build(),
    );
    assert!(rig.rec.static_pad("src").unwrap().send_event(event));
    let accepted = rig
        .rec
        .emit_by_name::<bool>("record", &[&(now - 1000 * MS), &(now - 500 * MS), &"scene"]);
    assert!(accepted);
    // A marker from another element is not taken (marker-source=analytics).
    let other = gst::Structure::builder("rtai-clip-marker")
        .field("start", now - 2900 * MS)
        .field("end", now - 2900 * MS)
        .build();
    let sink = rig.pipeline.by_name("sink").unwrap();
    sink.post_message(gst::message::Element::builder(other).src(&sink).build())
        .unwrap();

    let rec = rig.wait_recorded(Duration::from_secs(4)).expect("one clip");
    assert_eq!(rec.get::<u32>("markers").unwrap(), 3);
    assert_eq!(
        rec.get::<&str>("reason").unwrap(),
        "speech+object_appear+scene"
    );
    assert_eq!(rec.get::<&str>("sources").unwrap(), "e1,e2");
    check_clip(
        &rec,
        Path::new(rec.get::<&str>("location").unwrap()),
        now - 2500 * MS,
        now - 500 * MS,
    );
    // No second clip.
    assert!(rig.wait_recorded(Duration::from_millis(1500)).is_none());
    let stats = rig.stats();
    assert_eq!(stats.get::<u64>("merged-markers").unwrap(), 2);
    assert_eq!(stats.get::<u64>("recorded").unwrap(), 1);
    rig.stop();
}

#[test]
fn s3_clip_read_back_from_moto() {
    let moto = Moto::start(free_port());
    moto.create_bucket("clips");
    let spool = temp_dir("s3-spool");
    let rig = Rig::start(&format!(
        "location=s3://clips/cam1 spool-location={} s3-endpoint={} s3-access-key-id=test s3-secret-access-key=test s3-region=us-east-1",
        spool.display(),
        moto.endpoint()
    ));
    let now = rig.running_time();
    let (start, end) = (now - 1500 * MS, now - 1000 * MS);
    let posted = Instant::now();
    rig.post_marker(start, end, "object_appear", "e7");
    let rec = rig
        .wait_recorded(Duration::from_millis(POST_ROLL_MS + 2000))
        .expect("clip in object storage within post-roll + 2 s of the marker");
    let took = posted.elapsed();
    eprintln!("S3 clip in storage {took:?} after its marker (post-roll {POST_ROLL_MS} ms)");
    assert!(took < Duration::from_millis(POST_ROLL_MS + 2000));
    let key = rec.get::<&str>("location").unwrap().to_string();
    assert!(
        key.starts_with("cam1/rec-") && key.ends_with(".mp4"),
        "{key}"
    );
    assert_eq!(rec.get::<&str>("url").unwrap(), format!("s3://clips/{key}"));
    assert_eq!(
        rec.get::<&str>("http-url").unwrap(),
        format!("{}/clips/{key}", moto.endpoint())
    );
    let data = get_object(&moto.endpoint(), "clips", &key);
    assert_eq!(data.len() as u64, rec.get::<u64>("bytes").unwrap());
    let file = temp_dir("s3-read").join("clip.mp4");
    std::fs::write(&file, data).unwrap();
    check_clip(&rec, &file, start, end);
    // Uploaded clips leave the spool.
    assert_eq!(rig.stats().get::<u64>("spooled").unwrap(), 0);
    rig.stop();
}

#[test]
fn s3_down_mid_run_clips_spooled_and_uploaded_when_back() {
    let port = free_port();
    let moto = Moto::start(port);
    moto.create_bucket("clips");
    let spool = temp_dir("outage-spool");
    let rig = Rig::start(&format!(
        "location=s3://clips spool-location={} s3-endpoint={} s3-access-key-id=test s3-secret-access-key=test",
        spool.display(),
        moto.endpoint()
    ));
    let now = rig.running_time();
    rig.post_marker(now - 1000 * MS, now - 900 * MS, "speech", "before");
    let first = rig
        .wait_recorded(Duration::from_secs(3))
        .expect("first clip uploaded");
    assert_eq!(first.get::<&str>("sources").unwrap(), "before");

    // Storage goes away: two clips are made meanwhile.
    moto.stop();
    let now = rig.running_time();
    rig.post_marker(now - 1000 * MS, now - 900 * MS, "speech", "during1");
    let warning = rig
        .wait_warning(Duration::from_secs(5))
        .expect("a warning when storage is away");
    assert!(warning.contains("cannot upload clip"), "{warning}");
    assert!(warning.contains("retried"), "{warning}");
    rig.wait_running_time(rig.running_time() + 1200 * MS);
    let now = rig.running_time();
    rig.post_marker(now - 300 * MS, now - 200 * MS, "scene", "during2");
    wait_until("two clips spooled", Duration::from_secs(5), || {
        rig.stats().get::<u64>("spooled").unwrap() == 2
    });
    assert!(rig.wait_recorded(Duration::ZERO).is_none());
    let passed = rig.passed.load(Ordering::Relaxed);
    rig.wait_running_time(rig.running_time() + 300 * MS);
    assert!(
        rig.passed.load(Ordering::Relaxed) > passed,
        "the pipeline goes on"
    );

    // Storage is back (moto keeps nothing: the bucket is made again).
    let moto = Moto::start(port);
    moto.create_bucket("clips");
    let mut sources = Vec::new();
    for _ in 0..2 {
        let rec = rig
            .wait_recorded(Duration::from_secs(10))
            .expect("spooled clips uploaded once storage is back");
        let key = rec.get::<&str>("location").unwrap();
        let data = get_object(&moto.endpoint(), "clips", key);
        assert_eq!(data.len() as u64, rec.get::<u64>("bytes").unwrap());
        let file = temp_dir("outage-read").join("clip.mp4");
        std::fs::write(&file, data).unwrap();
        assert!(ffprobe(&file).packets[0].1);
        sources.push(rec.get::<String>("sources").unwrap());
    }
    sources.sort();
    assert_eq!(sources, ["during1", "during2"]);
    assert_eq!(rig.stats().get::<u64>("spooled").unwrap(), 0);
    rig.stop();
}

#[test]
fn clips_spooled_when_stopping_are_uploaded_at_the_next_start() {
    let port = free_port();
    let spool = temp_dir("restart-spool");
    let props = format!(
        "location=s3://clips spool-location={} s3-endpoint=http://127.0.0.1:{port} s3-access-key-id=test s3-secret-access-key=test stop-timeout=200",
        spool.display()
    );
    // No storage during the whole first run.
    let rig = Rig::start(&props);
    let now = rig.running_time();
    rig.post_marker(now - 1000 * MS, now - 900 * MS, "speech", "orphan");
    wait_until("clip spooled", Duration::from_secs(5), || {
        rig.stats().get::<u64>("spooled").unwrap() == 1
    });
    rig.stop();
    let spooled = |ext: &str| {
        std::fs::read_dir(spool.join("rec"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == ext)
            })
            .count()
    };
    assert_eq!((spooled("mp4"), spooled("info")), (1, 1), "kept on disk");

    let moto = Moto::start(port);
    moto.create_bucket("clips");
    let rig = Rig::start(&props);
    let rec = rig
        .wait_recorded(Duration::from_secs(10))
        .expect("the clip of the earlier run uploaded");
    assert_eq!(rec.get::<&str>("sources").unwrap(), "orphan");
    assert_eq!(rec.get::<&str>("reason").unwrap(), "speech");
    let data = get_object(
        &moto.endpoint(),
        "clips",
        rec.get::<&str>("location").unwrap(),
    );
    let file = temp_dir("restart-read").join("clip.mp4");
    std::fs::write(&file, data).unwrap();
    assert!(ffprobe(&file).packets[0].1);
    assert_eq!((spooled("mp4"), spooled("info")), (0, 0));
    rig.stop();
}

#[test]
fn bad_bucket_warns_and_pipeline_goes_on() {
    let moto = Moto::start(free_port());
    let spool = temp_dir("bad-spool");
    let rig = Rig::start(&format!(
        "location=s3://no-such-bucket/x spool-location={} s3-endpoint={} s3-access-key-id=test s3-secret-access-key=sekrit-9f3e1c",
        spool.display(),
        moto.endpoint()
    ));
    let now = rig.running_time();
    rig.post_marker(now - 1000 * MS, now - 900 * MS, "speech", "e1");
    let warning = rig
        .wait_warning(Duration::from_secs(5))
        .expect("a warning for the bad bucket");
    assert!(warning.contains("s3://no-such-bucket/x/"), "{warning}");
    assert!(
        !warning.contains("sekrit-9f3e1c"),
        "the secret key is never shown"
    );
    assert!(
        warning.contains("NoSuchBucket")
            || warning.contains("not found")
            || warning.contains("404"),
        "{warning}"
    );
    let passed = rig.passed.load(Ordering::Relaxed);
    rig.wait_running_time(rig.running_time() + 300 * MS);
    assert!(
        rig.passed.load(Ordering::Relaxed) > passed,
        "the pipeline goes on"
    );
    // The clip is kept for when the bucket exists.
    assert_eq!(rig.stats().get::<u64>("spooled").unwrap(), 1);
    moto.create_bucket("no-such-bucket");
    let rec = rig
        .wait_recorded(Duration::from_secs(5))
        .expect("uploaded once the bucket exists");
    assert!(rec.get::<&str>("location").unwrap().starts_with("x/"));
    rig.stop();
}

#[test]
fn unwritable_directory_warns_and_pipeline_goes_on() {
    let dir = temp_dir("unwritable");
    let rig = Rig::start(&format!("location={}", dir.display()));
    // The directory turns into a file under the running recorder: every write fails, as
    // on a full disk.
    std::fs::remove_dir(&dir).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    let now = rig.running_time();
    rig.post_marker(now - 1000 * MS, now - 900 * MS, "speech", "e1");
    let warning = rig
        .wait_warning(Duration::from_secs(5))
        .expect("a warning when the clip cannot be written");
    assert!(warning.contains("cannot write clip"), "{warning}");
    let passed = rig.passed.load(Ordering::Relaxed);
    rig.wait_running_time(rig.running_time() + 300 * MS);
    assert!(
        rig.passed.load(Ordering::Relaxed) > passed,
        "the pipeline goes on"
    );
    assert_eq!(rig.stats().get::<u64>("failed").unwrap(), 1);
    rig.stop();
    let _ = std::fs::remove_file(&dir);
}

/// The element alone in a Harness: buffers pass through untouched (the same buffers), the
/// ring keeps frames from the first key frame on, and markers arrive as downstream events and
/// through the `record` signal; malformed ones are counted and refused.
#[test]
fn harness_passthrough_markers_and_ring() {
    init();
    let dir = temp_dir("harness");
    let rec = gst::ElementFactory::make("cliprecorder")
        .property("location", dir.to_str().unwrap())
        .property("pre-roll", 1000u32)
        .property("post-roll", 0u32)
        .property("listen-bus", false)
        .build()
        .unwrap();
    let mut h = gst_check::Harness::with_element(&rec, Some("sink"), Some("src"));
    h.set_src_caps_str("video/x-h264, stream-format=byte-stream, alignment=au, width=160, height=120, framerate=10/1");
    h.play();

    let frame = |i: u64, key: bool| {
        let mut b = gst::Buffer::from_slice(vec![0u8, 0, 0, 1, 0x65, i as u8]);
        let bm = b.get_mut().unwrap();
        bm.set_pts(gst::ClockTime::from_mseconds(i * 100));
        bm.set_duration(gst::ClockTime::from_mseconds(100));
        if !key {
            bm.set_flags(gst::BufferFlags::DELTA_UNIT);
        }
        b
    };
    // A delta frame before any key frame cannot start a clip: not kept.
    let first = frame(0, false);
    let ptr = first.as_ptr();
    h.push(first).unwrap();
    assert_eq!(h.pull().unwrap().as_ptr(), ptr, "passed through as is");
    let stats = rec.property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("ring-frames").unwrap(), 0);
    for i in 1..30 {
        h.push(frame(i, i % 5 == 0)).unwrap();
        h.pull().unwrap();
    }
    // 1 s of pre-roll from a key frame: 2.0 s back to 1.5 s ... 2.9 s.
    let stats = rec.property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("ring-oldest").unwrap(), 1500 * MS);
    assert_eq!(stats.get::<u64>("ring-frames").unwrap(), 15);

    // A marker as a downstream event, one through the signal, malformed and reversed ones.
    assert!(
        h.push_event(gst::event::CustomDownstream::new(
            gst::Structure::builder("rtai-clip-marker")
                .field("start", 2200 * MS)
                .field("end", 2300 * MS)
                .field("reason", "scene")
                .build(),
        ))
    );
    assert!(rec.emit_by_name::<bool>("record", &[&(2250 * MS), &(2600 * MS), &"manual"]));
    assert!(!rec.emit_by_name::<bool>("record", &[&(2600 * MS), &(2500 * MS), &"reversed"]));
    assert!(
        h.push_event(gst::event::CustomDownstream::new(
            gst::Structure::builder("rtai-clip-marker")
                .field("start", "soon")
                .build(),
        ))
    );
    let stats = rec.property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("markers").unwrap(), 2);
    assert_eq!(stats.get::<u64>("merged-markers").unwrap(), 1);
    assert_eq!(stats.get::<u64>("invalid-markers").unwrap(), 2);
    assert_eq!(stats.get::<u64>("pending-clips").unwrap(), 1);
    // The frame after the merged end completes the clip.
    for i in 30..32 {
        h.push(frame(i, false)).unwrap();
        h.pull().unwrap();
    }
    let stats = rec.property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("clips").unwrap(), 1);
    assert_eq!(stats.get::<u64>("pending-clips").unwrap(), 0);
    // The event went on downstream.
    let mut forwarded = false;
    while let Some(ev) = h.try_pull_event() {
        forwarded |= ev
            .structure()
            .is_some_and(|s| s.name() == "rtai-clip-marker");
    }
    assert!(forwarded);
}

proptest::proptest! {
    /// Markers come from any element of the pipeline: whatever the field types and values,
    /// reading one never panics, refuses negative or missing times and bounds the text.
    #[test]
    fn markers_of_any_shape_are_read_or_refused(
        start in proptest::prelude::any::<i64>(),
        end in proptest::option::of(proptest::prelude::any::<i64>()),
        as_unsigned in proptest::prelude::any::<bool>(),
        reason in ".{0,600}",
        odd_type in proptest::prelude::any::<bool>(),
    ) {
        init();
        let mut b = gst::Structure::builder("rtai-clip-marker");
        b = if as_unsigned { b.field("start", start as u64) } else { b.field("start", start) };
        if let Some(end) = end {
            b = if odd_type { b.field("end", end.to_string()) } else { b.field("end", end) };
        }
        let s = b.field("reason", reason.as_str()).build();
        match gstrtairecord::cliprecorder::parse_marker(&s) {
            Ok(m) => {
                proptest::prop_assert!(as_unsigned || start >= 0);
                proptest::prop_assert!(m.reason.chars().count() <= 256);
                proptest::prop_assert!(!m.reason.is_empty());
                if end.is_none() {
                    proptest::prop_assert_eq!(m.end, m.start);
                }
            }
            Err(e) => proptest::prop_assert!(
                (!as_unsigned && start < 0) || (odd_type && end.is_some()) || end.is_some_and(|e| e < 0),
                "refused: {}", e
            ),
        }
    }
}
