//! ffmpegsrc: runs a command (by default ffmpeg capturing the X11 desktop to
//! H.264 Annex-B on stdout) as a child process and pushes what it writes as a
//! live `video/x-h264,stream-format=byte-stream,alignment=none` stream.
//!
//! A supervisor task on the shared tokio runtime owns the child: it reads
//! stdout asynchronously into a bounded channel that `create()` drains (the
//! streaming thread never touches the pipe), forwards stderr lines to the
//! debug log while keeping the last ones for error messages, restarts a child
//! that exits with a doubling backoff up to `max-restarts` consecutive times,
//! and kills and reaps the child on stop (no zombie is left behind).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::base_src::CreateSuccess;
use gst_base::subclass::prelude::*;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot, watch};

use crate::cmdline;
use crate::h264scan::PictureCounter;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "ffmpegsrc",
        gst::DebugColorFlags::empty(),
        Some("ffmpeg child process as a live H.264 source"),
    )
});

/// ffmpeg capturing `$DISPLAY` at 30 fps, low-latency x264 (no B-frames, a key
/// frame every half second, parameter sets before each), raw Annex-B on stdout.
/// ffmpeg cannot make a key frame on demand, so the GOP is what a joining
/// viewer waits at most: short, at some bitrate cost on a still desktop.
pub const DEFAULT_COMMAND: &str = "ffmpeg -hide_banner -nostdin -loglevel warning \
-f x11grab -framerate 30 -draw_mouse 1 -i $DISPLAY \
-c:v libx264 -preset ultrafast -tune zerolatency -profile:v baseline -pix_fmt yuv420p \
-g 15 -bf 0 -x264-params repeat-headers=1 -f h264 -";
const DEFAULT_MAX_RESTARTS: i32 = 5;
const DEFAULT_RESTART_BACKOFF_MS: u32 = 500;
/// The backoff doubles after each consecutive failure, up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// A child that delivered data for this long resets the consecutive-failure count.
const HEALTHY_RUN: Duration = Duration::from_secs(30);
/// stdout is read in chunks of at most this many bytes.
const CHUNK: usize = 64 * 1024;
/// Chunks waiting for the streaming thread; the child is not read further while full.
const CHANNEL_DEPTH: usize = 64;
/// stderr lines kept for error messages, and the longest line kept.
const STDERR_LINES: usize = 12;
const STDERR_LINE_MAX: usize = 400;
/// How long stop waits for the child to be killed and reaped.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
struct Settings {
    command: String,
    max_restarts: i32,
    restart_backoff_ms: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            command: DEFAULT_COMMAND.into(),
            max_restarts: DEFAULT_MAX_RESTARTS,
            restart_backoff_ms: DEFAULT_RESTART_BACKOFF_MS,
        }
    }
}

#[derive(Default)]
struct Counters {
    bytes: AtomicU64,
    frames: AtomicU64,
    restarts: AtomicU32,
    pid: AtomicU32,
    /// Upstream force-key-unit requests seen (ffmpeg cannot honour them).
    key_unit_requests: AtomicU64,
}

enum Item {
    Data { data: Vec<u8>, discont: bool },
    Eos,
    Error(String),
}

struct State {
    shutdown: Option<oneshot::Sender<()>>,
    /// Disconnects when the supervisor task has ended (its sender is dropped).
    done: std::sync::mpsc::Receiver<()>,
}

pub struct FfmpegSrc {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    rx: Mutex<Option<mpsc::Receiver<Item>>>,
    counters: Arc<Counters>,
    flushing: watch::Sender<bool>,
}

/// What the supervisor needs, all `Send`.
struct Supervisor {
    element: glib::WeakRef<super::FfmpegSrc>,
    args: Vec<String>,
    command: String,
    max_restarts: i32,
    backoff: Duration,
    counters: Arc<Counters>,
    tx: mpsc::Sender<Item>,
}

impl Supervisor {
    fn post(&self, structure: gst::Structure) {
        if let Some(element) = self.element.upgrade() {
            let _ = element.post_message(
                gst::message::Element::builder(structure)
                    .src(&element)
                    .build(),
            );
        }
    }

    fn error_text(&self, what: &str, stderr: &Mutex<VecDeque<String>>) -> String {
        let lines = stderr.lock().unwrap();
        if lines.is_empty() {
            format!("`{}` {what} (no stderr output)", self.command)
        } else {
            let tail: Vec<&str> = lines.iter().map(String::as_str).collect();
            format!(
                "`{}` {what}; last stderr lines:\n{}",
                self.command,
                tail.join("\n")
            )
        }
    }

    /// Runs children until shutdown, the receiver is gone, or the restarts run out.
    async fn run(self, mut shutdown: oneshot::Receiver<()>) {
        let mut failures: i32 = 0;
        let mut spawn_index: u32 = 0;
        let mut ever_produced = false;
        loop {
            let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
            let mut child = match tokio::process::Command::new(&self.args[0])
                .args(&self.args[1..])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
            {
                Ok(child) => child,
                Err(e) => {
                    let _ = self
                        .tx
                        .send(Item::Error(format!("cannot start `{}`: {e}", self.command)))
                        .await;
                    return;
                }
            };
            let pid = child.id().unwrap_or(0);
            self.counters.pid.store(pid, Ordering::Relaxed);
            if let Some(element) = self.element.upgrade() {
                gst::info!(
                    CAT,
                    obj = element,
                    "ffmpeg_spawned: pid {pid}, restart {spawn_index}"
                );
            }
            self.post(
                gst::Structure::builder("ffmpeg_spawned")
                    .field("pid", pid)
                    .field("restart", spawn_index)
                    .field("command", &self.command)
                    .build(),
            );
            let stderr_task = child.stderr.take().map(|stderr| {
                let tail = stderr_tail.clone();
                let element = self.element.clone();
                tokio::spawn(read_stderr(stderr, tail, element))
            });
            let mut stdout = child.stdout.take().expect("stdout is piped");
            let started = Instant::now();
            let mut produced = false;
            let mut pictures = PictureCounter::new();
            let mut buf = vec![0u8; CHUNK];
            // Read until EOF; a shutdown or a gone receiver kills the child.
            let stopped = loop {
                let n = tokio::select! {
                    _ = &mut shutdown => break true,
                    n = stdout.read(&mut buf) => n,
                };
                let n = match n {
                    Ok(0) | Err(_) => break false,
                    Ok(n) => n,
                };
                self.counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
                let before = pictures.pictures();
                let new = pictures.push(&buf[..n]);
                self.counters.frames.fetch_add(new, Ordering::Relaxed);
                if before == 0 && new > 0 {
                    if let Some(element) = self.element.upgrade() {
                        gst::info!(CAT, obj = element, "first_frame_ingested: pid {pid}");
                    }
                    self.post(
                        gst::Structure::builder("first_frame_ingested")
                            .field("pid", pid)
                            .field("restart", spawn_index)
                            .field(
                                "delay-ms",
                                started.elapsed().as_millis().min(u64::MAX as u128) as u64,
                            )
                            .build(),
                    );
                }
                let item = Item::Data {
                    data: buf[..n].to_vec(),
                    discont: !produced,
                };
                produced = true;
                ever_produced = true;
                let sent = tokio::select! {
                    _ = &mut shutdown => break true,
                    r = self.tx.send(item) => r,
                };
                if sent.is_err() {
                    break true;
                }
            };
            // Kill (a no-op if it exited) and reap: no zombie.
            let _ = child.start_kill();
            let status = child.wait().await;
            if let Some(task) = stderr_task {
                let _ = task.await;
            }
            self.counters.pid.store(0, Ordering::Relaxed);
            if stopped {
                return;
            }
            let status_text = match &status {
                Ok(s) => s.to_string(),
                Err(e) => format!("an unknown status ({e})"),
            };
            if produced && started.elapsed() >= HEALTHY_RUN {
                failures = 0;
            }
            let may_restart =
                ever_produced && (self.max_restarts < 0 || failures < self.max_restarts);
            if !may_restart {
                let item = if !ever_produced {
                    Item::Error(self.error_text(
                        &format!("exited with {status_text} before writing any output"),
                        &stderr_tail,
                    ))
                } else if self.max_restarts == 0 && status.as_ref().is_ok_and(|s| s.success()) {
                    Item::Eos
                } else {
                    Item::Error(self.error_text(
                        &format!(
                            "exited with {status_text}; gave up after {failures} restarts (max-restarts={})",
                            self.max_restarts
                        ),
                        &stderr_tail,
                    ))
                };
                let _ = self.tx.send(item).await;
                return;
            }
            let backoff = self
                .backoff
                .saturating_mul(1u32 << failures.clamp(0, 16))
                .min(MAX_BACKOFF);
            failures += 1;
            spawn_index += 1;
            self.counters.restarts.fetch_add(1, Ordering::Relaxed);
            if let Some(element) = self.element.upgrade() {
                gst::warning!(
                    CAT,
                    obj = element,
                    "`{}` exited with {status_text}; restart {failures} in {backoff:?}",
                    self.command
                );
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(backoff) => {}
            }
        }
    }
}

/// Forwards stderr to the debug log line by line (bounded line length) and
/// keeps the last lines.
async fn read_stderr(
    mut stderr: tokio::process::ChildStderr,
    tail: Arc<Mutex<VecDeque<String>>>,
    element: glib::WeakRef<super::FfmpegSrc>,
) {
    let mut buf = [0u8; 4096];
    let mut line: Vec<u8> = Vec::new();
    let finish = |line: &mut Vec<u8>| {
        if line.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(line).trim_end().to_string();
        line.clear();
        if text.is_empty() {
            return;
        }
        if let Some(element) = element.upgrade() {
            gst::debug!(CAT, obj = element, "stderr: {text}");
        }
        let mut tail = tail.lock().unwrap();
        if tail.len() == STDERR_LINES {
            tail.pop_front();
        }
        tail.push_back(text);
    };
    loop {
        let n = match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' || b == b'\r' {
                finish(&mut line);
            } else if line.len() < STDERR_LINE_MAX {
                line.push(b);
            }
        }
    }
    finish(&mut line);
}

#[glib::object_subclass]
impl ObjectSubclass for FfmpegSrc {
    const NAME: &'static str = "GstFfmpegSrc";
    type Type = super::FfmpegSrc;
    type ParentType = gst_base::PushSrc;

    fn new() -> Self {
        Self {
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(None),
            rx: Mutex::new(None),
            counters: Arc::new(Counters::default()),
            flushing: watch::Sender::new(false),
        }
    }
}

impl ObjectImpl for FfmpegSrc {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("command")
                    .nick("Command")
                    .blurb("Program and arguments in one string, split like a shell does (quotes, backslash, $VAR and ${VAR} from the environment; no shell runs); must write H.264 Annex-B to stdout")
                    .default_value(Some(DEFAULT_COMMAND))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecInt::builder("max-restarts")
                    .nick("Max restarts")
                    .blurb("Consecutive restarts of a child that exits after producing output (-1 = forever); a child that never wrote anything is an error at once")
                    .minimum(-1)
                    .maximum(1000)
                    .default_value(DEFAULT_MAX_RESTARTS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("restart-backoff")
                    .nick("Restart backoff")
                    .blurb("Wait before the first restart in ms; doubles after each consecutive failure, up to 8 s")
                    .minimum(0)
                    .maximum(60_000)
                    .default_value(DEFAULT_RESTART_BACKOFF_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("bytes (read from stdout), frames (pictures seen), restarts, pid (0 when no child runs), key-unit-requests (upstream key-frame requests, which ffmpeg cannot honour: the GOP decides)")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        match pspec.name() {
            "command" => {
                s.command = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .unwrap_or_else(|| DEFAULT_COMMAND.into())
            }
            "max-restarts" => s.max_restarts = value.get().expect("type checked upstream"),
            "restart-backoff" => s.restart_backoff_ms = value.get().expect("type checked upstream"),
            other => unreachable!("unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock().unwrap();
        match pspec.name() {
            "command" => s.command.to_value(),
            "max-restarts" => s.max_restarts.to_value(),
            "restart-backoff" => s.restart_backoff_ms.to_value(),
            "stats" => {
                let c = &self.counters;
                gst::Structure::builder("ffmpegsrc-stats")
                    .field("bytes", c.bytes.load(Ordering::Relaxed))
                    .field("frames", c.frames.load(Ordering::Relaxed))
                    .field("restarts", c.restarts.load(Ordering::Relaxed))
                    .field("pid", c.pid.load(Ordering::Relaxed))
                    .field(
                        "key-unit-requests",
                        c.key_unit_requests.load(Ordering::Relaxed),
                    )
                    .build()
                    .to_value()
            }
            other => unreachable!("unknown property {other}"),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.set_live(true);
        obj.set_format(gst::Format::Time);
    }
}

impl GstObjectImpl for FfmpegSrc {}

impl ElementImpl for FfmpegSrc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "FFmpeg child process source",
                "Source/Video",
                "Runs a command (default: ffmpeg capturing the X11 desktop with low-latency x264) and pushes the H.264 Annex-B it writes to stdout as a live stream; restarts it with backoff, stderr to the debug log",
                "rtai contributors",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst::Caps::builder("video/x-h264")
                .field("stream-format", "byte-stream")
                .field("alignment", "none")
                .build();
            vec![
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &caps,
                )
                .unwrap(),
            ]
        });
        PAD_TEMPLATES.as_ref()
    }
}

impl BaseSrcImpl for FfmpegSrc {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings.lock().unwrap().clone();
        let args = cmdline::split(&settings.command).map_err(|e| {
            gst::error_msg!(
                gst::ResourceError::Settings,
                (
                    "command `{}` cannot be split into arguments: {e}",
                    settings.command
                )
            )
        })?;
        for c in [&self.counters.bytes, &self.counters.frames] {
            c.store(0, Ordering::Relaxed);
        }
        self.counters.restarts.store(0, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let supervisor = Supervisor {
            element: self.obj().downgrade(),
            args,
            command: settings.command.clone(),
            max_restarts: settings.max_restarts,
            backoff: Duration::from_millis(settings.restart_backoff_ms as u64),
            counters: self.counters.clone(),
            tx,
        };
        rtai_core::runtime::runtime().spawn(async move {
            let _done = done_tx;
            supervisor.run(shutdown_rx).await;
        });
        *self.rx.lock().unwrap() = Some(rx);
        *self.state.lock().unwrap() = Some(State {
            shutdown: Some(shutdown_tx),
            done: done_rx,
        });
        gst::info!(CAT, imp = self, "started `{}`", settings.command);
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        let state = self.state.lock().unwrap().take();
        if let Some(mut state) = state {
            if let Some(shutdown) = state.shutdown.take() {
                let _ = shutdown.send(());
            }
            // The supervisor kills and reaps the child before it ends.
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                state.done.recv_timeout(STOP_TIMEOUT)
            {
                gst::warning!(
                    CAT,
                    imp = self,
                    "the child was not reaped within {STOP_TIMEOUT:?}"
                );
            }
        }
        *self.rx.lock().unwrap() = None;
        Ok(())
    }

    fn event(&self, event: &gst::Event) -> bool {
        if gst_video::UpstreamForceKeyUnitEvent::parse(event).is_ok() {
            let n = self
                .counters
                .key_unit_requests
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            // Handled as far as it can be: the next key frame comes with the GOP (-g).
            gst::info!(
                CAT,
                imp = self,
                "key frame requested ({n} so far): ffmpeg cannot make one on demand, the next comes with its GOP"
            );
            return true;
        }
        self.parent_event(event)
    }

    fn is_seekable(&self) -> bool {
        false
    }

    fn unlock(&self) -> Result<(), gst::ErrorMessage> {
        self.flushing.send_replace(true);
        Ok(())
    }

    fn unlock_stop(&self) -> Result<(), gst::ErrorMessage> {
        self.flushing.send_replace(false);
        Ok(())
    }
}

impl PushSrcImpl for FfmpegSrc {
    fn create(
        &self,
        _buffer: Option<&mut gst::BufferRef>,
    ) -> Result<CreateSuccess, gst::FlowError> {
        let mut guard = self.rx.lock().unwrap();
        let rx = guard.as_mut().ok_or(gst::FlowError::Flushing)?;
        let mut flushing = self.flushing.subscribe();
        // Waits on the channel only; the child is read on the runtime.
        let item = rtai_core::runtime::runtime().block_on(async {
            tokio::select! {
                biased;
                _ = flushing.wait_for(|f| *f) => None,
                item = rx.recv() => Some(item),
            }
        });
        match item {
            None => Err(gst::FlowError::Flushing),
            Some(None) | Some(Some(Item::Eos)) => {
                gst::info!(CAT, imp = self, "the command ended: end of stream");
                Err(gst::FlowError::Eos)
            }
            Some(Some(Item::Error(text))) => {
                gst::element_imp_error!(self, gst::ResourceError::Failed, ("{text}"));
                Err(gst::FlowError::Error)
            }
            Some(Some(Item::Data { data, discont })) => {
                let obj = self.obj();
                let pts = obj
                    .clock()
                    .map(|clock| clock.time())
                    .zip(obj.base_time())
                    .map(|(now, base)| now.saturating_sub(base));
                let mut buffer = gst::Buffer::from_mut_slice(data);
                {
                    let b = buffer.get_mut().unwrap();
                    b.set_pts(pts);
                    if discont {
                        b.set_flags(gst::BufferFlags::DISCONT);
                    }
                }
                Ok(CreateSuccess::NewBuffer(buffer))
            }
        }
    }
}
