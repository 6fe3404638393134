//! ffmpegsrc with real ffmpeg (lavfi test patterns): frames decode, the
//! lifecycle messages come in order, a killed child is restarted within the
//! backoff and frames flow again, exhausted restarts and bad commands are
//! clear errors naming the command and its stderr, and no child outlives stop.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use gst::prelude::*;

struct Rig {
    pipeline: gst::Pipeline,
    src: gst::Element,
    decoded: Arc<AtomicU64>,
    bus: gst::Bus,
}

impl Rig {
    /// `ffmpegsrc command=… ! h264parse ! avdec_h264 ! appsink`, PLAYING.
    fn start(command: &str, max_restarts: i32, backoff_ms: u32) -> Self {
        init();
        let pipeline = gst::Pipeline::new();
        let src = gst::ElementFactory::make("ffmpegsrc")
            .property("command", command)
            .property("max-restarts", max_restarts)
            .property("restart-backoff", backoff_ms)
            .build()
            .unwrap();
        let parse = gst::ElementFactory::make("h264parse").build().unwrap();
        let dec = gst::ElementFactory::make("avdec_h264").build().unwrap();
        let sink = gst_app::AppSink::builder()
            .caps(&gst::Caps::builder("video/x-raw").build())
            .sync(false)
            .build();
        let decoded = Arc::new(AtomicU64::new(0));
        let counter = decoded.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
                    assert_eq!((info.width(), info.height()), (160, 120));
                    counter.fetch_add(1, Ordering::SeqCst);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        pipeline
            .add_many([&src, &parse, &dec, sink.upcast_ref()])
            .unwrap();
        gst::Element::link_many([&src, &parse, &dec, sink.upcast_ref()]).unwrap();
        let bus = pipeline.bus().unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        Self {
            pipeline,
            src,
            decoded,
            bus,
        }
    }

    fn stats(&self) -> gst::Structure {
        self.src.property::<gst::Structure>("stats")
    }

    fn wait_decoded(&self, at_least: u64, timeout: Duration) {
        wait_until(timeout, &format!("{at_least} decoded frames"), || {
            self.decoded.load(Ordering::SeqCst) >= at_least
        });
    }

    /// The next `name` element message from ffmpegsrc.
    fn wait_message(&self, name: &str, timeout: Duration) -> gst::Structure {
        let msg = wait_for(&self.bus, timeout, name, |m| {
            element_message(m, name).is_some()
        });
        element_message(&msg, name).unwrap()
    }

    /// The first error message's text and debug string.
    fn wait_error(&self, timeout: Duration) -> String {
        let msg = wait_for(&self.bus, timeout, "an error", |m| {
            matches!(m.view(), gst::MessageView::Error(_))
        });
        let gst::MessageView::Error(e) = msg.view() else {
            unreachable!()
        };
        assert_eq!(
            msg.src().map(|s| s.name().to_string()),
            Some(self.src.name().to_string()),
            "the error comes from ffmpegsrc"
        );
        e.error().to_string()
    }

    fn stop(&self) {
        self.pipeline.set_state(gst::State::Null).unwrap();
    }
}

#[test]
fn lavfi_frames_decode_and_lifecycle_messages_come_in_order() {
    let rig = Rig::start(&lavfi_command("160x120", 30, ""), 0, 100);
    let spawned = rig.wait_message("ffmpeg_spawned", Duration::from_secs(10));
    let pid = spawned.get::<u32>("pid").unwrap();
    assert!(pid > 0);
    assert_eq!(spawned.get::<u32>("restart").unwrap(), 0);
    assert!(
        spawned
            .get::<String>("command")
            .unwrap()
            .contains("testsrc2")
    );
    let first = rig.wait_message("first_frame_ingested", Duration::from_secs(10));
    assert_eq!(first.get::<u32>("pid").unwrap(), pid);
    rig.wait_decoded(30, Duration::from_secs(10));
    let stats = rig.stats();
    assert!(stats.get::<u64>("bytes").unwrap() > 0);
    assert!(stats.get::<u64>("frames").unwrap() >= 30, "{stats}");
    assert_eq!(stats.get::<u32>("restarts").unwrap(), 0);
    assert_eq!(stats.get::<u32>("pid").unwrap(), pid);
    assert!(process_exists(pid));
    rig.stop();
    assert!(
        !process_exists(pid),
        "the child (pid {pid}) is killed and reaped on stop"
    );
}

#[test]
fn a_killed_child_restarts_within_the_backoff_and_frames_resume() {
    const BACKOFF_MS: u32 = 300;
    let rig = Rig::start(&lavfi_command("160x120", 30, ""), 2, BACKOFF_MS);
    let pid = rig
        .wait_message("ffmpeg_spawned", Duration::from_secs(10))
        .get::<u32>("pid")
        .unwrap();
    rig.wait_decoded(15, Duration::from_secs(10));
    // SIGKILL mid-stream.
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let at_kill = Instant::now();
    let respawned = rig.wait_message("ffmpeg_spawned", Duration::from_secs(10));
    let restart_delay = at_kill.elapsed();
    let new_pid = respawned.get::<u32>("pid").unwrap();
    assert_ne!(new_pid, pid);
    assert_eq!(respawned.get::<u32>("restart").unwrap(), 1);
    assert!(
        restart_delay < Duration::from_millis(BACKOFF_MS as u64 + 1500),
        "restarted {restart_delay:?} after the kill (backoff {BACKOFF_MS} ms)"
    );
    assert!(
        !process_exists(pid),
        "the killed child (pid {pid}) was reaped, not left a zombie"
    );
    let before = rig.decoded.load(Ordering::SeqCst);
    rig.wait_message("first_frame_ingested", Duration::from_secs(10));
    rig.wait_decoded(before + 15, Duration::from_secs(10));
    assert_eq!(rig.stats().get::<u32>("restarts").unwrap(), 1);
    rig.stop();
    assert!(!process_exists(new_pid));
}

#[test]
fn exhausted_restarts_are_an_error_naming_the_command() {
    // Each child writes 10 frames and exits: one restart is allowed.
    let command = lavfi_command("160x120", 30, "-frames:v 10");
    let rig = Rig::start(&command, 1, 50);
    rig.wait_message("ffmpeg_spawned", Duration::from_secs(10));
    let second = rig.wait_message("ffmpeg_spawned", Duration::from_secs(10));
    assert_eq!(second.get::<u32>("restart").unwrap(), 1);
    let error = rig.wait_error(Duration::from_secs(10));
    assert!(error.contains(&command), "{error}");
    assert!(error.contains("max-restarts=1"), "{error}");
    assert_eq!(rig.stats().get::<u32>("restarts").unwrap(), 1);
    assert!(rig.decoded.load(Ordering::SeqCst) >= 10);
    rig.stop();
}

#[test]
fn a_clean_exit_without_restarts_is_end_of_stream() {
    let rig = Rig::start(&lavfi_command("160x120", 30, "-frames:v 10"), 0, 50);
    wait_for(&rig.bus, Duration::from_secs(10), "EOS", |m| {
        matches!(m.view(), gst::MessageView::Eos(_))
    });
    assert_eq!(rig.decoded.load(Ordering::SeqCst), 10);
    rig.stop();
}

#[test]
fn a_bad_command_is_an_error_with_its_stderr() {
    let command = "ffmpeg -hide_banner -nostdin -f lavfi -i no_such_filter_xyz -f h264 -";
    let rig = Rig::start(command, 3, 50);
    let error = rig.wait_error(Duration::from_secs(10));
    assert!(error.contains(command), "{error}");
    assert!(
        error.contains("No such filter"),
        "stderr is quoted: {error}"
    );
    assert!(error.contains("before writing any output"), "{error}");
    assert_eq!(rig.stats().get::<u32>("restarts").unwrap(), 0);
    rig.stop();
}

#[test]
fn a_missing_program_is_an_error_naming_it() {
    let rig = Rig::start("/nonexistent/ffmpeg -f h264 -", 3, 50);
    let error = rig.wait_error(Duration::from_secs(10));
    assert!(
        error.contains("cannot start `/nonexistent/ffmpeg -f h264 -`"),
        "{error}"
    );
    rig.stop();
}

#[test]
fn an_unsplittable_command_fails_the_state_change() {
    init();
    let pipeline = gst::parse::launch("ffmpegsrc name=src ! fakesink").unwrap();
    let src = pipeline
        .downcast_ref::<gst::Bin>()
        .unwrap()
        .by_name("src")
        .unwrap();
    src.set_property("command", "ffmpeg 'unterminated");
    assert!(pipeline.set_state(gst::State::Playing).is_err());
    let bus = pipeline.bus().unwrap();
    let msg = wait_for(&bus, Duration::from_secs(5), "an error", |m| {
        matches!(m.view(), gst::MessageView::Error(_))
    });
    let gst::MessageView::Error(e) = msg.view() else {
        unreachable!()
    };
    assert!(
        e.error().to_string().contains("a quote is not closed"),
        "{}",
        e.error()
    );
    pipeline.set_state(gst::State::Null).unwrap();
}

/// Xvfb on a free display number, killed and reaped on drop.
struct Xvfb {
    child: std::process::Child,
    display: String,
}

impl Xvfb {
    fn start(size: &str) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new("Xvfb")
            .args(["-displayfd", "1", "-nolisten", "tcp", "-screen", "0", size])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("Xvfb runs (scripts/setup.sh installs xvfb)");
        // Xvfb writes the display number once it accepts clients.
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let n: u32 = line.trim().parse().expect("Xvfb reports its display");
        Self {
            child,
            display: format!(":{n}"),
        }
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_default_command_captures_an_xvfb_desktop() {
    init();
    let xvfb = Xvfb::start("160x120x24");
    // The default arguments with the display of this test's Xvfb.
    let default = gst::ElementFactory::make("ffmpegsrc")
        .build()
        .unwrap()
        .property::<String>("command");
    assert!(default.contains("x11grab") && default.contains("$DISPLAY"));
    let rig = Rig::start(&default.replace("$DISPLAY", &xvfb.display), 0, 100);
    rig.wait_message("first_frame_ingested", Duration::from_secs(10));
    rig.wait_decoded(15, Duration::from_secs(10));
    rig.stop();
}
