//! Faults that involve another process: hostile input from a Python grpcio peer
//! (the element under attack runs in a child process, so a crash is a child's
//! exit status, not a dead test binary), receivers killed and restarted, and a
//! peer stopped with SIGSTOP (HTTP/2 keepalive).
//!
//! The children are this test binary run again with `RTAI_GRPC_CHILD` set: the
//! ignored test `child` runs one pipeline and talks to the parent on stdout
//! (`PORT n`, `SEQ n`, `EOS`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gst::prelude::*;

fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstrtaigrpc::plugin_register_static().unwrap();
    });
}

/// A child process of this test binary running one pipeline (see `child`).
struct Peer {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Peer {
    fn spawn(kind: &str, env: &[(&str, String)]) -> Peer {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "child",
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("RTAI_GRPC_CHILD", kind)
        .stdout(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("the test binary runs again");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Peer { child, lines }
    }

    /// The next line starting with `prefix` (its rest), or None at the deadline or exit.
    fn next(&self, prefix: &str, deadline: Instant) -> Option<String> {
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    // The first line follows libtest's "test child ... " on the same line.
                    if let Some(i) = line.find(prefix) {
                        return Some(line[i + prefix.len()..].trim().to_string());
                    }
                }
                Err(_) => return None,
            }
        }
    }

    fn port(&self) -> u32 {
        self.next("PORT ", Instant::now() + Duration::from_secs(30))
            .expect("the child reports its port")
            .parse()
            .unwrap()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    /// Waits for the child's exit; panics with its status if it did not succeed.
    fn wait_success(mut self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{what}: the child exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "{what}: the child did not exit");
            // Draining the lines doubles as the wait (the reader ends at exit).
            let _ = self.lines.recv_timeout(Duration::from_millis(100));
        }
    }
}

impl Peer {
    /// SIGKILL, then every line the process wrote before it died.
    fn kill_and_drain(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut lines = Vec::new();
        // The reader thread ends at the pipe's EOF, which the death of the process brings.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(10)) {
            lines.push(line);
        }
        lines
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn say(line: String) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The first 8 bytes of a buffer as the sequence number the parent wrote there.
fn seq_of(buffer: &gst::BufferRef) -> Option<u64> {
    let map = buffer.map_readable().ok()?;
    Some(u64::from_le_bytes(map.get(..8)?.try_into().ok()?))
}

/// Runs in a child process (ignored in a normal run). Kinds:
/// - `src`: `grpcsrc listen=127.0.0.1:0 $RTAI_GRPC_PROPS ! fakesink`, prints `SEQ n` per buffer;
/// - `sink`: 12 GRAY8 frames `! grpcsink mode=server listen=127.0.0.1:0`;
/// - `pull`: `grpcsrc mode=client uri=$RTAI_GRPC_URI ! fakesink`, prints `SEQ n` per buffer;
/// - `send`: a live 50 fps `videotestsrc ! grpcsink uri=$RTAI_GRPC_URI` (runs until killed).
///
/// Prints `PORT n` once listening and `EOS` at the end of the stream, then exits.
#[test]
#[ignore]
fn child() {
    let Ok(kind) = std::env::var("RTAI_GRPC_CHILD") else {
        return;
    };
    init();
    let props = std::env::var("RTAI_GRPC_PROPS").unwrap_or_default();
    let desc = match kind.as_str() {
        "src" => {
            format!("grpcsrc name=bridge listen=127.0.0.1:0 {props} ! fakesink name=out sync=false")
        }
        "sink" => format!(
            "videotestsrc num-buffers=12 ! video/x-raw,format=GRAY8,width=16,height=8,framerate=10/1 \
             ! grpcsink name=bridge mode=server listen=127.0.0.1:0 {props}"
        ),
        "send" => format!(
            "videotestsrc is-live=true pattern=ball ! video/x-raw,width=64,height=48,framerate=50/1 \
             ! grpcsink name=bridge uri={} {props}",
            std::env::var("RTAI_GRPC_URI").unwrap()
        ),
        "pull" => format!(
            "grpcsrc name=bridge mode=client uri={} {props} ! fakesink name=out sync=false",
            std::env::var("RTAI_GRPC_URI").unwrap()
        ),
        other => panic!("no child kind {other}"),
    };
    let pipeline = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    if let Some(out) = pipeline.by_name("out") {
        out.static_pad("sink")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, |_, info| {
                if let Some(b) = info.buffer() {
                    say(format!("SEQ {}", seq_of(b).unwrap_or(u64::MAX)));
                }
                gst::PadProbeReturn::Ok
            });
    }
    pipeline.set_state(gst::State::Playing).unwrap();
    if kind != "pull" && kind != "send" {
        let port = pipeline
            .by_name("bridge")
            .unwrap()
            .property::<u32>("bound-port");
        say(format!("PORT {port}"));
    }
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(120),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("the child's stream ends");
    if let gst::MessageView::Error(e) = msg.view() {
        panic!("child error: {} {:?}", e.error(), e.debug());
    }
    pipeline.set_state(gst::State::Null).unwrap();
    say("EOS".into());
}

/// The venv Python that scripts/setup.sh prepares (grpcio, grpcio-tools).
fn python() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("RTAI_PYTHON") {
        return p.into();
    }
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|d| d.join(".venv/bin/python"))
        .find(|p| p.is_file())
        .expect("no .venv/bin/python: run scripts/setup.sh (installs grpcio and grpcio-tools)")
}

/// Runs tests/python/grpc_peer.py to its end; its stdout.
fn python_peer(args: &[&str]) -> String {
    let out = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/grpc_peer.py"
        ))
        .args(args)
        .output()
        .expect("python runs");
    assert!(out.status.success(), "the Python peer failed: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

const DEPTH: &str = "100000";

#[test]
fn deeply_nested_strings_from_python_are_refused_and_grpcsrc_carries_the_next_stream() {
    let rx = Peer::spawn("src", &[]);
    let target = format!("127.0.0.1:{}", rx.port());
    let codes = python_peer(&["hostile-push", &target, DEPTH]);
    for case in [
        "caps",
        "event",
        "oob_event",
        "tag",
        "roi_param",
        "custom_meta",
        "huge_caps",
    ] {
        assert!(
            codes.contains(&format!("\"{case}\": \"INVALID_ARGUMENT\"")),
            "{case} is refused with INVALID_ARGUMENT (UNAVAILABLE: the receiver died): {codes}"
        );
    }
    // The same process then carries a normal stream to its end.
    let summary = python_peer(&["push", &target, "5"]);
    assert!(summary.contains("\"acked_seq\": 6"), "{summary}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buffers = 0;
    while rx.next("SEQ ", deadline).is_some() {
        buffers += 1;
        if buffers == 5 {
            break;
        }
    }
    assert_eq!(buffers, 5, "the normal stream arrived");
    assert!(rx.next("EOS", deadline).is_some(), "EOS arrived");
    rx.wait_success("grpcsrc under hostile input");
}

#[test]
fn deeply_nested_upstream_event_is_refused_and_grpcsink_serves_the_next_receiver() {
    let tx = Peer::spawn("sink", &[]);
    let target = format!("127.0.0.1:{}", tx.port());
    let code = python_peer(&["hostile-pull", &target, DEPTH]);
    assert!(
        code.contains("\"upstream_event\": \"INVALID_ARGUMENT\""),
        "{code}"
    );
    let summary = python_peer(&["pull", &target]);
    assert!(summary.contains("\"buffers\": 12"), "{summary}");
    assert!(summary.contains("\"eos\": true"), "{summary}");
    assert!(
        tx.next("EOS", Instant::now() + Duration::from_secs(30))
            .is_some()
    );
    tx.wait_success("grpcsink under hostile input");
}

/// A buffer of `size` bytes numbered `seq` (first 8 bytes) with a matching PTS.
fn numbered(seq: u64, size: usize) -> gst::Buffer {
    let mut data = vec![(seq % 251) as u8; size];
    data[..8].copy_from_slice(&seq.to_le_bytes());
    let mut buffer = gst::Buffer::from_mut_slice(data);
    let b = buffer.get_mut().unwrap();
    b.set_pts(gst::ClockTime::from_mseconds(seq * 10));
    b.set_duration(gst::ClockTime::from_mseconds(10));
    buffer
}

/// Pull mode (grpcsink serves, grpcsrc dials) with the receiver process killed
/// (SIGKILL) and restarted 20 times while large buffers flow: every receiver gets
/// an increasing run of numbers (no duplicates), each restart continues where the
/// last confirmed buffer was (no loss; what was pushed but not yet confirmed when
/// the process died is sent again, at most one window), and the stream never stalls.
#[test]
fn pull_mode_survives_twenty_receiver_kills_without_duplicates_stall_or_loss() {
    init();
    const SIZE: usize = 256 * 1024;
    const WINDOW: u64 = 1024 * 1024;
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src format=time block=true max-bytes={SIZE} caps=application/x-rtai-test \
         ! grpcsink name=sink mode=server listen=127.0.0.1:0 max-inflight-bytes={WINDOW}"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let appsrc = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let port = pipeline
        .by_name("sink")
        .unwrap()
        .property::<u32>("bound-port");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let (appsrc, stop) = (appsrc.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seq = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if appsrc.push_buffer(numbered(seq, SIZE)).is_err() {
                    break;
                }
                seq += 1;
            }
            appsrc.end_of_stream().unwrap();
            seq
        })
    };
    let uri = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let mut runs: Vec<Vec<u64>> = Vec::new();
    for _ in 0..20 {
        let rx = Peer::spawn("pull", &[("RTAI_GRPC_URI", uri.clone())]);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        // Each receiver must get at least 8 new buffers (2 windows) before it is killed.
        while got.len() < 8 {
            match rx.next("SEQ ", deadline) {
                Some(s) => got.push(s.parse::<u64>().unwrap()),
                None => panic!(
                    "receiver {} stalled after {got:?} (runs so far: {:?})",
                    runs.len(),
                    runs.iter()
                        .map(|r| (r[0], r[r.len() - 1]))
                        .collect::<Vec<_>>()
                ),
            }
        }
        // What it printed before SIGKILL counts too: it may have pushed (and confirmed) more.
        for line in rx.kill_and_drain() {
            if let Some(i) = line.find("SEQ ") {
                got.push(line[i + 4..].trim().parse().unwrap());
            }
        }
        runs.push(got);
    }
    // The last receiver takes the stream to its end.
    let last = Peer::spawn("pull", &[("RTAI_GRPC_URI", uri)]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = vec![
        last.next("SEQ ", deadline)
            .expect("the last receiver gets data")
            .parse::<u64>()
            .unwrap(),
    ];
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let total = producer.join().unwrap();
    loop {
        let line = last
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the last receiver reaches EOS");
        if let Some(i) = line.find("SEQ ") {
            got.push(line[i + 4..].trim().parse().unwrap());
        } else if line.ends_with("EOS") {
            break;
        }
    }
    runs.push(got);
    last.wait_success("the last receiver");
    // The receiver stopped right after EOS; its confirmation still reached the sender
    // (not the sender's 30 s timeout).
    pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(gst::ClockTime::from_seconds(5), &[gst::MessageType::Eos])
        .expect("the sender's EOS was confirmed at once");
    pipeline.set_state(gst::State::Null).unwrap();
    let window_buffers = WINDOW / SIZE as u64 + 1;
    let mut next = 0u64;
    for (i, run) in runs.iter().enumerate() {
        assert!(
            run.windows(2).all(|w| w[1] == w[0] + 1),
            "receiver {i}: consecutive, no duplicates, no holes: {run:?}"
        );
        assert!(
            run[0] <= next,
            "receiver {i} starts at {} but {next} was never delivered",
            run[0]
        );
        assert!(
            next - run[0] <= window_buffers,
            "receiver {i} got {} again: more than the one window that can be unconfirmed at a kill",
            next - run[0]
        );
        next = run[run.len() - 1] + 1;
    }
    assert_eq!(next, total, "every buffer was delivered");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

/// A receiver process stopped with SIGSTOP (a dead peer that never closes its
/// socket): the sender's HTTP/2 keepalive notices within about a second and it
/// reconnects; after SIGCONT the stream continues to the same receiver.
#[test]
fn keepalive_detects_a_stopped_receiver_and_the_stream_resumes() {
    init();
    let rx = Peer::spawn(
        "src",
        &[(
            "RTAI_GRPC_PROPS",
            "keepalive-interval=200 keepalive-timeout=500".into(),
        )],
    );
    let port = rx.port();
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src format=time is-live=true block=true max-bytes=4096 caps=application/x-rtai-test \
         ! grpcsink name=sink uri=http://127.0.0.1:{port} keepalive-interval=200 keepalive-timeout=500"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let appsrc = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pushed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let producer = {
        let (appsrc, stop, pushed) = (appsrc.clone(), stop.clone(), pushed.clone());
        std::thread::spawn(move || {
            let mut seq = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if appsrc.push_buffer(numbered(seq, 1024)).is_err() {
                    break;
                }
                seq += 1;
                pushed.store(seq, std::sync::atomic::Ordering::SeqCst);
                // The pace of a live source (this thread is the source, not a wait).
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = appsrc.end_of_stream();
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    for _ in 0..5 {
        rx.next("SEQ ", deadline).expect("buffers arrive");
    }
    rx.signal("-STOP");
    let stopped_at = Instant::now();
    let bus = pipeline.bus().unwrap();
    let warning = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(10),
            &[gst::MessageType::Warning, gst::MessageType::Error],
        )
        .expect("the sender notices the stopped receiver");
    let gst::MessageView::Warning(w) = warning.view() else {
        panic!("{warning:?}")
    };
    assert!(w.error().to_string().contains("lost"), "{}", w.error());
    let detected = stopped_at.elapsed();
    rx.signal("-CONT");
    // Whatever the stopped process had buffered may arrive; then data pushed after SIGCONT.
    let before = Instant::now();
    let resumed_at = pushed.load(std::sync::atomic::Ordering::SeqCst) + 1;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seq: u64 = rx
            .next("SEQ ", deadline)
            .expect("the stream resumes after SIGCONT")
            .parse()
            .unwrap();
        if seq >= resumed_at {
            break;
        }
    }
    let connections = pipeline
        .by_name("sink")
        .unwrap()
        .property::<gst::Structure>("stats")
        .get::<u64>("connections")
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    producer.join().unwrap();
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(
        detected < Duration::from_secs(5),
        "detected after {detected:?}"
    );
    assert!(
        connections >= 2,
        "a new call after the outage: {connections}"
    );
    eprintln!(
        "stopped receiver detected after {detected:?}, resumed in {:?}",
        before.elapsed()
    );
}

/// The other role: a sender process stopped with SIGSTOP. The receiver (server)
/// notices through its own keepalive and drops the dead call; after SIGCONT the
/// sender finds its call gone, reconnects, and buffers flow again.
#[test]
fn keepalive_lets_the_server_drop_a_stopped_sender_and_it_reconnects_after_sigcont() {
    init();
    let receiver = gst::parse::launch(
        "grpcsrc name=src listen=127.0.0.1:0 keepalive-interval=200 keepalive-timeout=500 \
         ! fakesink name=out sync=false",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = receiver.by_name("src").unwrap();
    let buffers = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    {
        let buffers = buffers.clone();
        receiver
            .by_name("out")
            .unwrap()
            .static_pad("sink")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                buffers.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                gst::PadProbeReturn::Ok
            });
    }
    receiver.set_state(gst::State::Playing).unwrap();
    let port = src.property::<u32>("bound-port");
    let tx = Peer::spawn(
        "send",
        &[
            ("RTAI_GRPC_URI", format!("http://127.0.0.1:{port}")),
            (
                "RTAI_GRPC_PROPS",
                "keepalive-interval=200 keepalive-timeout=500".into(),
            ),
        ],
    );
    let stats = |field: &str| {
        src.property::<gst::Structure>("stats")
            .get::<bool>(field)
            .unwrap()
    };
    let wait = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let count = || buffers.load(std::sync::atomic::Ordering::SeqCst);
    wait("buffers arrive", &|| count() >= 10);
    tx.signal("-STOP");
    let stopped_at = Instant::now();
    wait("the receiver drops the stopped sender's call", &|| {
        !stats("connected")
    });
    let detected = stopped_at.elapsed();
    tx.signal("-CONT");
    let before = count();
    wait("the sender reconnects and buffers flow again", &|| {
        stats("connected") && count() >= before + 10
    });
    let connections = src
        .property::<gst::Structure>("stats")
        .get::<u64>("connections")
        .unwrap();
    receiver.set_state(gst::State::Null).unwrap();
    assert!(
        detected < Duration::from_secs(5),
        "detected after {detected:?}"
    );
    assert!(connections >= 2, "a new call after SIGCONT: {connections}");
    eprintln!("stopped sender dropped by the server after {detected:?}");
}
