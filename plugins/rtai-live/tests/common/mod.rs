//! Shared helpers: an ingest pipeline (rtmpserversrc ! flvdemux ! h264parse !
//! avdec_h264 ! appsink) that records decoded frames and bus messages, a
//! running pipeline with an abrsink (`Rig`), a raw HTTP/1.1 GET, and real
//! ffmpeg publishers.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;

pub fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstrtailive::plugin_register_static().unwrap();
        gstrtaiencode::plugin_register_static().unwrap();
    });
}

/// A response as it came over the wire.
pub struct Reply {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("JSON ({e}): {}", self.text()))
    }
}

/// A raw HTTP/1.1 GET on loopback (the path is sent exactly as given, `..` included).
pub fn get(port: u16, path: &str) -> Reply {
    try_get(port, path).unwrap_or_else(|| panic!("GET {path} on port {port}: no complete answer"))
}

/// [`get`], or None when nothing (complete) answers: a server starting or gone.
pub fn try_get(port: u16, path: &str) -> Option<Reply> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some(Reply {
        status,
        headers: head,
        body: raw[split + 4..].to_vec(),
    })
}

/// A directory holding only this build's rtailive and rtaiencode plugins (the
/// files cargo built with this test binary), for `GST_PLUGIN_PATH`.
pub fn plugin_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let deps = exe.parent().unwrap();
        let name = exe.file_name().unwrap().to_string_lossy().into_owned();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("rtai-live-plugins-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for lib in ["libgstrtailive.so", "libgstrtaiencode.so"] {
            let built = deps.join(lib);
            assert!(built.exists(), "{} is missing", built.display());
            std::os::unix::fs::symlink(&built, dir.join(lib)).unwrap();
        }
        dir
    })
    .clone()
}

/// `program` (gst-launch-1.0, gst-inspect-1.0) on [`plugin_dir`]'s plugins
/// only, with its own registry; no stdin.
pub fn gst_command(program: &str) -> Command {
    let dir = plugin_dir();
    let mut c = Command::new(program);
    c.env("GST_PLUGIN_PATH", &dir)
        .env("GST_REGISTRY", dir.join("registry.bin"))
        .stdin(Stdio::null());
    c
}

/// `f()` every 50 ms until it returns something, for at most `timeout`.
pub fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The player scripts (node, playwright-core, hls.js, dash.js) and their node_modules.
pub const PLAYER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/player");

/// The npm packages the player scripts need are installed.
pub fn player_deps() {
    for package in ["playwright-core", "hls.js", "dashjs"] {
        assert!(
            Path::new(PLAYER_DIR)
                .join("node_modules")
                .join(package)
                .exists(),
            "{package} is missing: scripts/setup.sh runs `npm ci` in {PLAYER_DIR}"
        );
    }
}

/// Runs `node tests/player/{script} args…` to its end: the JSON line it
/// printed (a failure panics with what it said).
pub fn player_script<S: AsRef<std::ffi::OsStr>>(script: &str, args: &[S]) -> serde_json::Value {
    let out = Command::new("node")
        .arg(Path::new(PLAYER_DIR).join(script))
        .args(args)
        .output()
        .expect("node runs");
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "{script}: {line} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{script}: {e}: {line}"))
}

/// A playing pipeline (parse-launch `description`) with an abrsink named `abr`;
/// set to NULL on drop.
pub struct Rig {
    pub pipeline: gst::Pipeline,
    pub sink: gst::Element,
}

impl Rig {
    pub fn start(description: &str) -> Rig {
        init();
        let pipeline = gst::parse::launch(description)
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        let sink = pipeline.by_name("abr").unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        Rig { pipeline, sink }
    }

    /// abrsink's HTTP port.
    pub fn port(&self) -> u16 {
        self.sink.property::<u32>("bound-port") as u16
    }

    /// The `bound-port` of the element `name` (e.g. an rtmpserversrc).
    pub fn port_of(&self, name: &str) -> u16 {
        self.pipeline
            .by_name(name)
            .unwrap()
            .property::<u32>("bound-port") as u16
    }

    /// Waits for EOS (or fails on an error) within `timeout`.
    pub fn wait_eos(&self, timeout: Duration) {
        let bus = self.pipeline.bus().unwrap();
        let msg = bus
            .timed_pop_filtered(
                gst::ClockTime::from_nseconds(timeout.as_nanos() as u64),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            )
            .expect("EOS in time");
        if let gst::MessageView::Error(e) = msg.view() {
            panic!("pipeline error: {} ({:?})", e.error(), e.debug());
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

#[derive(Default)]
pub struct Seen {
    pub pts: Vec<gst::ClockTime>,
    pub widths: Vec<i32>,
    pub messages: Vec<gst::Structure>,
    /// EOS events that reached the video appsink.
    pub eos: usize,
}

pub struct Ingest {
    pub pipeline: gst::Pipeline,
    pub src: gst::Element,
    pub seen: Arc<Mutex<Seen>>,
}

impl Ingest {
    /// `props` are set on rtmpserversrc before the pipeline starts (not through
    /// parse-launch, which logs property values).
    pub fn start(props: &[(&str, &dyn ToValue)]) -> Ingest {
        init();
        let pipeline = gst::parse::launch(
            "rtmpserversrc name=src listen=127.0.0.1:0 ! flvdemux name=d \
             d.video ! queue name=vq ! h264parse ! avdec_h264 ! appsink name=v sync=false async=false \
             d.audio ! queue ! fakesink sync=false async=false",
        )
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let src = pipeline.by_name("src").unwrap();
        for (name, value) in props {
            src.set_property_from_value(name, &value.to_value());
        }
        Self::with_pipeline(pipeline, src)
    }

    pub fn with_pipeline(pipeline: gst::Pipeline, src: gst::Element) -> Ingest {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let appsink = pipeline
            .by_name("v")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        let s = seen.clone();
        let e = seen.clone();
        appsink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .eos(move |_| e.lock().unwrap().eos += 1)
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let mut seen = s.lock().unwrap();
                    if let Some(pts) = sample.buffer().and_then(|b| b.pts()) {
                        seen.pts.push(pts);
                    }
                    if let Some(w) = sample
                        .caps()
                        .and_then(|c| c.structure(0))
                        .and_then(|st| st.get::<i32>("width").ok())
                    {
                        seen.widths.push(w);
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        let bus = pipeline.bus().unwrap();
        let s = seen.clone();
        bus.set_sync_handler(move |_, msg| {
            match msg.view() {
                gst::MessageView::Element(e) => {
                    if let Some(st) = e.structure()
                        && st.name().starts_with("rtmp-")
                    {
                        s.lock().unwrap().messages.push(st.to_owned());
                    }
                }
                gst::MessageView::Error(e) => {
                    eprintln!("pipeline error: {} ({:?})", e.error(), e.debug());
                }
                _ => {}
            }
            gst::BusSyncReply::Drop
        });
        pipeline.set_state(gst::State::Playing).unwrap();
        Ingest {
            pipeline,
            src,
            seen,
        }
    }

    pub fn port(&self) -> u16 {
        self.src.property::<u32>("bound-port") as u16
    }

    pub fn url(&self, name: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{name}", self.port())
    }

    pub fn frames(&self) -> usize {
        self.seen.lock().unwrap().pts.len()
    }

    /// Waits until `f` holds, up to `timeout`; true if it did.
    pub fn wait(&self, timeout: Duration, f: impl Fn(&Seen) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if f(&self.seen.lock().unwrap()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        f(&self.seen.lock().unwrap())
    }

    pub fn messages(&self, name: &str) -> Vec<gst::Structure> {
        self.seen
            .lock()
            .unwrap()
            .messages
            .iter()
            .filter(|m| m.name() == name)
            .cloned()
            .collect()
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

pub fn assert_monotonic(pts: &[gst::ClockTime]) {
    for w in pts.windows(2) {
        assert!(
            w[1] > w[0],
            "timestamps not monotonic: {} then {}",
            w[0],
            w[1]
        );
    }
}

/// ffmpeg publishing `seconds` of 30 fps test video at `size` (+ a sine)
/// with libx264/aac in real time to `url` (stderr piped: [`stderr_of`]).
pub fn ffmpeg_publish(url: &str, seconds: f64, size: &str) -> Child {
    rtai_core::testing::ffmpeg_rtmp(url, seconds, size, 30, true)
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg runs (Debian package ffmpeg)")
}

/// [`ffmpeg_publish`] of 320x240 to `rtmp://127.0.0.1:{port}/{path}`
/// (`path`: `app/stream[?key=…]`).
pub fn ffmpeg_push(port: u16, path: &str, seconds: f64) -> Child {
    ffmpeg_publish(
        &format!("rtmp://127.0.0.1:{port}/{path}"),
        seconds,
        "320x240",
    )
}

/// A child killed and reaped on drop (a publisher a failing test leaves behind).
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn wait_exit(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ffmpeg did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn stderr_of(child: &mut Child) -> String {
    use std::io::Read;
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}
