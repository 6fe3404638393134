//! Every file in pipelines/ is a gst-launch description that parses and runs
//! to EOS; every script in gst-launch-examples/ runs in its short mode.
//!
//! A pipeline that ingests RTMP listens on `${RTAI_RTMP_LISTEN}` (a free loopback
//! port here) and names the path to publish in a `# rtai-publish: app/stream?key=…`
//! comment: the test then publishes 2 s of ffmpeg's test source to it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use gst::prelude::*;
use rtai_integration_tests::*;

const PIPELINE_TIMEOUT: Duration = Duration::from_secs(120);

fn files_in(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(workspace_dir().join(dir))
        .unwrap_or_else(|e| panic!("{dir}/ is readable: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

/// A pipeline file: comment lines start with `#`; the rest is one description.
fn description(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{} is readable: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join(" ")
        .replace("\\ ", " ")
        .replace("${RTAI_SPEECH}", &speech_wav().to_string_lossy())
        .replace("${RTAI_VIDEO}", &video_clip().to_string_lossy())
        .replace("${RTAI_RTMP_LISTEN}", "127.0.0.1:0")
}

/// The `# rtai-publish: PATH` comment of a pipeline file, if any.
fn publish_path(path: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(path).ok()?.lines().find_map(|l| {
        l.trim_start()
            .strip_prefix("# rtai-publish:")
            .map(|p| p.trim().to_string())
    })
}

/// Publishes 2 s of H.264 + AAC test source with ffmpeg to the pipeline's
/// rtmpserversrc, on the port it bound.
fn start_publisher(pipeline: &gst::Element, publish: &str) -> std::process::Child {
    let bin = pipeline.downcast_ref::<gst::Bin>().unwrap();
    let server = bin
        .iterate_recurse()
        .into_iter()
        .flatten()
        .find(|e| e.factory().is_some_and(|f| f.name() == "rtmpserversrc"))
        .expect("a pipeline with rtai-publish has an rtmpserversrc");
    let port: u32 = server.property("bound-port");
    assert_ne!(port, 0, "rtmpserversrc listens once started");
    rtai_core::testing::ffmpeg_rtmp(
        &format!("rtmp://127.0.0.1:{port}/{publish}"),
        2.0,
        "320x240",
        30,
        true,
    )
    .stdin(std::process::Stdio::null())
    .spawn()
    .expect("ffmpeg runs (scripts/setup.sh installs it)")
}

/// `${RTAI_VIDEO}` in a pipeline file: 20 frames of videotestsrc's ball in WebM, made once.
fn video_clip() -> std::path::PathBuf {
    static CLIP: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    CLIP.get_or_init(|| {
        init();
        let dir = std::env::temp_dir().join(format!("rtai-pipelines-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("clip.webm");
        let pipeline = gst::parse::launch(&format!(
            "videotestsrc num-buffers=20 pattern=ball ! video/x-raw,width=320,height=240,framerate=10/1 ! vp8enc deadline=1 ! webmmux ! filesink location={}",
            path.display()
        ))
        .unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let msg = pipeline.bus().unwrap().timed_pop_filtered(gst::ClockTime::from_seconds(60), &[gst::MessageType::Eos, gst::MessageType::Error]);
        pipeline.set_state(gst::State::Null).unwrap();
        assert!(msg.is_some_and(|m| m.type_() == gst::MessageType::Eos), "the test clip is written");
        path
    })
    .clone()
}

/// `${RTAI_SPEECH}` in a pipeline file: a speech clip (espeak-ng, with a click
/// and pauses) generated once per test run.
fn speech_wav() -> std::path::PathBuf {
    static WAV: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    WAV.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("rtai-pipelines-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let run = |cmd: &str, args: &[&str]| {
            let status = std::process::Command::new(cmd)
                .args(args)
                .current_dir(&dir)
                .status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "{cmd} {args:?} failed (scripts/setup.sh installs it)"
            );
        };
        run(
            "espeak-ng",
            &[
                "-s",
                "165",
                "-w",
                "raw.wav",
                "Turn the lights on in the kitchen, please.",
            ],
        );
        run(
            "sox",
            &[
                "-q",
                "-n",
                "-r",
                "22050",
                "-c",
                "1",
                "pause.wav",
                "trim",
                "0",
                "0.8",
            ],
        );
        run(
            "sox",
            &[
                "-q",
                "-n",
                "-r",
                "22050",
                "-c",
                "1",
                "click.wav",
                "synth",
                "0.03",
                "whitenoise",
                "vol",
                "0.7",
            ],
        );
        run(
            "sox",
            &[
                "-q",
                "pause.wav",
                "click.wav",
                "pause.wav",
                "raw.wav",
                "pause.wav",
                "speech.wav",
            ],
        );
        dir.join("speech.wav")
    })
    .clone()
}

#[test]
fn every_pipeline_file_runs_to_eos() {
    init();
    let files = files_in("pipelines", "launch");
    assert!(!files.is_empty(), "pipelines/ holds no .launch file");
    for path in files {
        let desc = description(&path);
        let pipeline = gst::parse::launch(&desc)
            .unwrap_or_else(|e| panic!("{}: does not parse: {e}", path.display()));
        let bus = pipeline.bus().unwrap();
        pipeline
            .set_state(gst::State::Playing)
            .unwrap_or_else(|e| panic!("{}: cannot play: {e}", path.display()));
        let publisher = publish_path(&path).map(|p| start_publisher(&pipeline, &p));
        let started = Instant::now();
        let outcome = bus.timed_pop_filtered(
            gst::ClockTime::from_seconds(PIPELINE_TIMEOUT.as_secs()),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        );
        pipeline.set_state(gst::State::Null).unwrap();
        if let Some(mut publisher) = publisher {
            let _ = publisher.kill();
            let _ = publisher.wait();
        }
        match outcome.as_ref().map(|m| m.view()) {
            Some(gst::MessageView::Eos(_)) => {
                eprintln!("{}: EOS after {:?}", path.display(), started.elapsed());
            }
            Some(gst::MessageView::Error(err)) => {
                panic!(
                    "{}: error {} ({:?})",
                    path.display(),
                    err.error(),
                    err.debug()
                )
            }
            _ => panic!("{}: no EOS within {PIPELINE_TIMEOUT:?}", path.display()),
        }
    }
}

#[test]
fn every_example_script_runs_in_short_mode() {
    let scripts = files_in("gst-launch-examples", "sh");
    assert!(!scripts.is_empty(), "gst-launch-examples/ holds no script");
    for script in scripts {
        let mut child = std::process::Command::new("bash")
            .arg(&script)
            .env("RTAI_EXAMPLE_SHORT", "1")
            .env("GST_PLUGIN_PATH", plugin_dir())
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("bash runs");
        let deadline = Instant::now() + PIPELINE_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "{} did not finish within {PIPELINE_TIMEOUT:?}",
                    script.display()
                );
            }
            // Polling a child process: there is no blocking wait with a timeout in std.
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.success(),
            "{} exited with {status}",
            script.display()
        );
    }
}
