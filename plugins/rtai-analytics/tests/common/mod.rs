//! Shared test helpers: scripted metas, a tiny HTTP client, and real servers
//! (PostgreSQL, Redis from Debian's packages) started on loopback and stopped on drop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gst::prelude::*;

pub const MS: u64 = 1_000_000;
pub const S: u64 = 1_000_000_000;

/// Set once a process initialised GStreamer with [`init`] or [`init_from_file_with_tracer`]:
/// `true` for the latter. The two exclude each other (the plugin's types would
/// be registered twice, from two copies of its code).
static FROM_FILE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// GStreamer with the plugin registered statically from this test binary.
pub fn init() {
    let from_file = *FROM_FILE.get_or_init(|| {
        gst::init().unwrap();
        gstrtaianalytics::plugin_register_static().unwrap();
        false
    });
    assert!(!from_file, "this process loaded the plugin from its file");
}

/// GStreamer as a user runs the tracer: `GST_TRACERS=latencymetrics` set
/// before it initialises, and the plugin loaded from its file through
/// `GST_PLUGIN_PATH` into a fresh registry. The file is the one cargo built
/// with this test binary (next to it in `deps/`), so it is never stale; only
/// it is on the path (not the other plugins of `target/`).
pub fn init_from_file_with_tracer() {
    let from_file = *FROM_FILE.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let built = exe.parent().unwrap().join("libgstrtaianalytics.so");
        assert!(
            built.exists(),
            "{} is missing: cargo builds it with the tests",
            built.display()
        );
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rtai-analytics-plugin");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(&built, dir.join("libgstrtaianalytics.so")).unwrap();
        // SAFETY: runs once, before GStreamer or any other thread of this test reads the environment.
        unsafe {
            std::env::set_var("GST_PLUGIN_PATH", &dir);
            std::env::set_var("GST_REGISTRY", dir.join("registry.bin"));
            std::env::set_var("GST_TRACERS", "latencymetrics");
        }
        gst::init().unwrap();
        let plugin = gst::Registry::get()
            .find_plugin("rtaianalytics")
            .expect("the plugin file is found through GST_PLUGIN_PATH");
        assert!(
            plugin.filename().is_some_and(|f| f.starts_with(&dir)),
            "{:?}",
            plugin.filename()
        );
        assert!(
            plugin.is_loaded(),
            "GST_TRACERS made GStreamer load the plugin for its tracer"
        );
        true
    });
    assert!(from_file, "this process registered the plugin statically");
}

/// One message of a debug category: level, address of the object it is about (0: none), text.
pub type Logged = (gst::DebugLevel, usize, String);

/// Messages of the debug category `name` (up to DEBUG) from now on.
pub fn capture_log(name: &'static str) -> std::sync::Arc<std::sync::Mutex<Vec<Logged>>> {
    // Tests share the process' thresholds: every capture asks for the same level.
    gst::log::set_threshold_for_name(name, gst::DebugLevel::Debug);
    // Not on stderr too.
    gst::log::remove_default_log_function();
    let logged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = logged.clone();
    gst::log::add_log_function(move |cat, level, _file, _func, _line, obj, msg| {
        if cat.name() == name
            && let Some(m) = msg.get()
        {
            sink.lock().unwrap().push((
                level,
                obj.map_or(0, |o| o.as_ptr() as usize),
                m.to_string(),
            ));
        }
    });
    logged
}

/// The texts of `level` messages about `obj`.
pub fn logged_about(
    logged: &std::sync::Mutex<Vec<Logged>>,
    level: gst::DebugLevel,
    obj: &gst::Element,
) -> Vec<String> {
    let addr = obj.as_ptr() as usize;
    logged
        .lock()
        .unwrap()
        .iter()
        .filter(|(l, o, _)| *l == level && *o == addr)
        .map(|(_, _, m)| m.clone())
        .collect()
}

/// A detection to script: label, track id, confidence.
pub struct Det<'a>(pub &'a str, pub Option<i32>, pub f64);

/// Adds one ROI meta per detection, with the DL Streamer `detection` param
/// (and an `object_id` param for tracked ones).
pub fn add_detections(buffer: &mut gst::BufferRef, dets: &[Det]) {
    for (i, d) in dets.iter().enumerate() {
        let mut roi =
            gst_video::VideoRegionOfInterestMeta::add(buffer, d.0, (10 * i as u32, 10, 20, 20));
        roi.add_param(
            gst::Structure::builder("detection")
                .field("confidence", d.2)
                .field("label_id", i as i32)
                .field("label", d.0)
                .field("model_name", "scripted")
                .build(),
        );
        if let Some(id) = d.1 {
            roi.add_param(gst::Structure::builder("object_id").field("id", id).build());
        }
    }
}

pub fn video_frame(pts: u64, dets: &[Det]) -> gst::Buffer {
    let mut b = gst::Buffer::with_size(16).unwrap();
    {
        let b = b.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_nseconds(pts));
        b.set_duration(gst::ClockTime::from_mseconds(100));
        add_detections(b, dets);
    }
    b
}

/// 10 ms of 16 kHz S16LE mono at `amplitude` (0..1).
pub fn audio_frame(pts: u64, amplitude: f64) -> gst::Buffer {
    let samples: Vec<u8> = (0..160)
        .flat_map(|i| (((i as f64 * 0.3).sin() * amplitude * 32767.0) as i16).to_le_bytes())
        .collect();
    let mut b = gst::Buffer::from_slice(samples);
    {
        let b = b.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_nseconds(pts));
        b.set_duration(gst::ClockTime::from_mseconds(10));
    }
    b
}

pub fn text_buffer(pts: u64, text: &str, segment: Option<u64>) -> gst::Buffer {
    let mut b = gst::Buffer::from_slice(text.as_bytes().to_vec());
    {
        let b = b.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_nseconds(pts));
        b.set_duration(gst::ClockTime::from_mseconds(500));
        if let Some(id) = segment {
            rtai_core::SegmentIdMeta::set(b, id);
        }
    }
    b
}

/// Element messages of `name` on `bus` so far.
pub fn messages(bus: &gst::Bus, name: &str) -> Vec<gst::Structure> {
    let mut out = Vec::new();
    while let Some(msg) = bus.pop() {
        if let gst::MessageView::Element(e) = msg.view()
            && let Some(s) = e.structure()
            && s.name() == name
        {
            out.push(s.to_owned());
        }
    }
    out
}

/// Every message on `bus` so far.
pub fn drain(bus: &gst::Bus) -> Vec<gst::Message> {
    std::iter::from_fn(|| bus.pop()).collect()
}

/// The structures of element messages named `name` among `msgs`.
pub fn element_messages(msgs: &[gst::Message], name: &str) -> Vec<gst::Structure> {
    msgs.iter()
        .filter_map(|m| match m.view() {
            gst::MessageView::Element(e) => e
                .structure()
                .filter(|s| s.name() == name)
                .map(|s| s.to_owned()),
            _ => None,
        })
        .collect()
}

pub fn event_json(s: &gst::StructureRef) -> serde_json::Value {
    serde_json::from_str(s.get::<&str>("json").unwrap()).unwrap()
}

/// analyticssink in a pipeline with one test src pad per stream, pushed synchronously.
pub struct Rig {
    pub pipeline: gst::Pipeline,
    pub sink: gst::Element,
    pub srcs: Vec<gst::Pad>,
    pub bus: gst::Bus,
}

impl Rig {
    /// With the plugin registered statically ([`init`]).
    pub fn new(props: &[(&str, gst::glib::Value)], caps: &[&str]) -> Self {
        init();
        Self::build(props, caps, None)
    }

    /// In a process that initialised GStreamer itself; with `stage` (a
    /// one-element launch description), each test pad feeds the sink through
    /// such an element, named `stage0`, `stage1`, ….
    pub fn build(props: &[(&str, gst::glib::Value)], caps: &[&str], stage: Option<&str>) -> Self {
        let sink = gst::ElementFactory::make("analyticssink")
            .property("listen", "")
            .build()
            .unwrap();
        for (k, v) in props {
            sink.set_property_from_value(k, v);
        }
        let pipeline = gst::Pipeline::new();
        pipeline.add(&sink).unwrap();
        let mut srcs = Vec::new();
        for (i, _) in caps.iter().enumerate() {
            let sinkpad = sink.request_pad_simple("sink_%u").unwrap();
            let src = gst::Pad::builder(gst::PadDirection::Src)
                .name(format!("src{i}"))
                .build();
            src.set_active(true).unwrap();
            match stage {
                Some(description) => {
                    // One element, not a bin: the tracer measures plain elements only.
                    let element = gst::parse::launch(description).unwrap();
                    assert!(
                        !element.is::<gst::Bin>(),
                        "stage '{description}' is one element"
                    );
                    element.set_property("name", format!("stage{i}"));
                    pipeline.add(&element).unwrap();
                    src.link(&element.static_pad("sink").unwrap()).unwrap();
                    element.static_pad("src").unwrap().link(&sinkpad).unwrap();
                }
                None => {
                    src.link(&sinkpad).unwrap();
                }
            }
            srcs.push(src);
        }
        pipeline.set_state(gst::State::Playing).unwrap();
        for (src, caps) in srcs.iter().zip(caps) {
            assert!(src.push_event(gst::event::StreamStart::new(&format!(
                "test-{}",
                src.name()
            ))));
            assert!(src.push_event(gst::event::Caps::new(&caps.parse::<gst::Caps>().unwrap())));
            assert!(
                src.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
                    gst::ClockTime,
                >::new()))
            );
        }
        let bus = pipeline.bus().unwrap();
        Self {
            pipeline,
            sink,
            srcs,
            bus,
        }
    }

    pub fn push(&self, i: usize, buffer: gst::Buffer) {
        assert_eq!(self.srcs[i].push(buffer), Ok(gst::FlowSuccess::Ok));
    }

    pub fn event(&self, i: usize, event: gst::Event) {
        assert!(self.srcs[i].push_event(event));
    }

    pub fn eos(&self) {
        for src in &self.srcs {
            src.push_event(gst::event::Eos::new());
        }
    }

    pub fn stats(&self) -> gst::Structure {
        self.sink.property("stats")
    }

    pub fn addr(&self) -> String {
        self.sink
            .property::<Option<String>>("bound-address")
            .expect("the server runs")
    }

    pub fn stop(&self) {
        self.pipeline.set_state(gst::State::Null).unwrap();
    }

    /// Events posted so far (as JSON), in order.
    pub fn events(&self) -> Vec<serde_json::Value> {
        messages(&self.bus, "rtai-analytics-event")
            .iter()
            .map(|s| event_json(s))
            .collect()
    }
}

pub const VIDEO: &str = "video/x-raw,format=RGB,width=64,height=48,framerate=10/1";
pub const AUDIO: &str = "audio/x-raw,format=S16LE,rate=16000,channels=1,layout=interleaved";
pub const TEXT: &str = "text/x-raw,format=utf8";

/// 0–2 s: a car (track 1); 1 s: four people arrive at once (a count spike); 2 s on: empty.
pub fn scripted_video(rig: &Rig, pad: usize) {
    for n in 0..40u64 {
        let pts = n * 100 * MS;
        let mut dets = Vec::new();
        if n < 20 {
            dets.push(Det("car", Some(1), 0.9));
        }
        if (10..15).contains(&n) {
            for id in 2..6 {
                dets.push(Det("person", Some(id), 0.8));
            }
        }
        rig.push(pad, video_frame(pts, &dets));
    }
}

/// A plain HTTP/1.1 GET: (status, headers, body).
pub fn http_get(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    http_get_with_host(addr, path, Some(addr), headers)
}

/// A plain HTTP/1.1 GET to `addr` with `host` as its Host header (none: no Host header).
pub fn http_get_with_host(
    addr: &str,
    path: &str,
    host: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n");
    if let Some(host) = host {
        req.push_str(&format!("Host: {host}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, head.to_string(), body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// An open Server-Sent Events stream (HTTP/1.1, chunked or not).
pub struct Sse {
    reader: BufReader<TcpStream>,
    chunked: bool,
    /// Body bytes decoded from chunks and not yet returned as lines.
    body: Vec<u8>,
    ended: bool,
}

/// What reading an SSE stream gave.
#[derive(Debug, PartialEq)]
pub enum SseRead {
    /// `(event, data)`.
    Event(String, String),
    /// The server ended the response (the last chunk, or a close without chunking).
    End,
    /// Nothing within the read timeout: the stream is open but silent.
    TimedOut,
    /// The connection broke mid-response (or another I/O error).
    Broken(String),
}

impl Sse {
    pub fn open(addr: &str, path: &str) -> (u16, Self) {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n")
                    .as_bytes(),
            )
            .unwrap();
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).unwrap();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut chunked = false;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            chunked |= line.to_ascii_lowercase().starts_with("transfer-encoding:")
                && line.to_ascii_lowercase().contains("chunked");
        }
        (
            status,
            Self {
                reader,
                chunked,
                body: Vec::new(),
                ended: false,
            },
        )
    }

    /// The next line of the body (without its end), `None` at its end.
    fn body_line(&mut self) -> std::io::Result<Option<String>> {
        if !self.chunked {
            let mut line = String::new();
            return Ok((self.reader.read_line(&mut line)? > 0)
                .then(|| line.trim_end_matches(['\r', '\n']).to_string()));
        }
        loop {
            if let Some(nl) = self.body.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.body.drain(..=nl).collect();
                return Ok(Some(
                    String::from_utf8_lossy(&line)
                        .trim_end_matches(['\r', '\n'])
                        .to_string(),
                ));
            }
            if self.ended {
                return Ok(None);
            }
            let mut size = String::new();
            if self.reader.read_line(&mut size)? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed before the last chunk",
                ));
            }
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("bad chunk size {size:?}"),
                    )
                })?;
            let mut chunk = vec![0; n + 2];
            self.reader.read_exact(&mut chunk)?;
            if n == 0 {
                self.ended = true;
            } else {
                self.body.extend_from_slice(&chunk[..n]);
            }
        }
    }

    /// The next event, the end of the stream, or why neither came.
    /// Keep-alive comments are skipped.
    pub fn next(&mut self) -> SseRead {
        let mut event = None;
        let mut data = None;
        loop {
            let line = match self.body_line() {
                Ok(Some(line)) => line,
                Ok(None) => return SseRead::End,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return SseRead::TimedOut;
                }
                Err(e) => return SseRead::Broken(e.to_string()),
            };
            if let Some(e) = line.strip_prefix("event:") {
                event = Some(e.trim().to_string());
            } else if let Some(d) = line.strip_prefix("data:") {
                data = Some(d.trim().to_string());
            } else if line.is_empty()
                && let Some(data) = data.take()
            {
                return SseRead::Event(event.unwrap_or_default(), data);
            }
        }
    }

    /// The next `(event, data)`, or `None` when anything else came.
    pub fn next_event(&mut self) -> Option<(String, String)> {
        match self.next() {
            SseRead::Event(event, data) => Some((event, data)),
            _ => None,
        }
    }
}

// Shared with the other plugins' tests (rtai_core::testing); each test binary uses some.
#[allow(unused_imports)]
pub use rtai_core::testing::{Postgres, free_port, temp_dir, wait_until};

/// A redis-server from Debian's packages on 127.0.0.1, no persistence; killed on drop.
pub struct Redis {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Redis {
    pub fn start() -> Self {
        let port = free_port();
        let dir = temp_dir("redis");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
            ])
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/setup.sh installs redis-server)");
        wait_until("redis", Duration::from_secs(20), || {
            redis_cli(port, &["PING"]).trim() == "PONG"
        });
        Self { child, port, dir }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args)
    }
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default()
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The venv Python with prometheus_client (scripts/setup.sh), or python3.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("RTAI_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// Runs tests/python/`script` with `args` under [`python`], `stdin` written to
/// its standard input: its exit status and standard output.
pub fn run_python(script: &str, args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(python())
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/python")
                .join(script),
        )
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{script} does not start: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Runs tests/python/validate_events.py against docs/event-schema.json with
/// `args` (`api` with a page on `stdin`, or `redis URL STREAM`): its summary
/// (`count`, `event_ids`, `types`), after asserting every event is valid.
pub fn validate_events(args: &[&str], stdin: Option<&str>) -> serde_json::Value {
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/event-schema.json");
    let out = run_python(
        "validate_events.py",
        &[&[schema], args].concat(),
        stdin.unwrap_or(""),
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "not valid against docs/event-schema.json: {text}"
    );
    serde_json::from_str(&text).unwrap()
}
