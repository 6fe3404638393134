//! The demo as a person runs it (issue 24): `scripts/agent/agent.sh --duration 24` (what
//! `scripts/demo.sh --duration 24` runs, without setup.sh) on the generated scene, watched in
//! Debian's chromium through playwright-core while it runs. The dashboard must show a
//! detection of a real class of the real detector (NudeNet's FACE_FEMALE on the astronaut's
//! face), a transcript from pocketsphinx and a recorded clip that plays; /api/events must hold
//! them; the summary printed at the end must name the stored clips, which ffprobe reads.
//! A screenshot is saved to target/tmp/agent-dashboard.png.
//!
//! Needs the release plugins (cargo build --release --workspace), the Python peers
//! (.venv-mlserver, .venv-runpod, .venv with nudenet and scikit-image), ffmpeg, espeak-ng,
//! sox, node and chromium, as scripts/setup.sh installs them. About 60 s.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rtai_integration_tests::workspace_dir;

const DURATION_S: u32 = 24;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_agent_demo_shows_detections_transcripts_and_clips_in_chromium() {
    let root = workspace_dir();
    let dashboard_dir = root.join("plugins/rtai-analytics/tests/dashboard");
    assert!(
        dashboard_dir.join("node_modules/playwright-core").exists(),
        "playwright-core is missing: scripts/setup.sh installs it"
    );
    let work = root.join(format!("target/tmp/agent-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let port = free_port();
    let started = Instant::now();
    let mut agent = Command::new("bash")
        .arg(root.join("scripts/agent/agent.sh"))
        .args(["--duration", &DURATION_S.to_string()])
        .args(["--size", "640x360", "--port", &port.to_string()])
        .env("RTAI_AGENT_WORK", &work)
        .env("GST_PLUGIN_PATH", root.join("target/release"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash runs the agent");
    let screenshot = root.join("target/tmp/agent-dashboard.png");
    let node = Command::new("node")
        .arg(dashboard_dir.join("agent.mjs"))
        .arg(format!("http://127.0.0.1:{port}/"))
        .arg("FACE_FEMALE")
        .arg("90")
        .arg(&screenshot)
        .output()
        .expect("node runs");
    // The agent ends by itself after --duration; a hung one is killed.
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = agent.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = agent.kill();
            panic!("the agent did not end within 120 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut out = String::new();
    agent
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    agent
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    eprintln!("agent ({:.0?}):\n{out}\n{err}", started.elapsed());
    let gst_log = std::fs::read_to_string(work.join("gst.log")).unwrap_or_default();
    assert!(
        node.status.success(),
        "the dashboard check failed: {}\n{}\ngst.log: {gst_log}",
        String::from_utf8_lossy(&node.stdout),
        String::from_utf8_lossy(&node.stderr)
    );
    assert!(status.success(), "the agent failed: {gst_log}");
    println!("screenshot: {}", screenshot.display());

    let shown: serde_json::Value = serde_json::from_slice(
        node.stdout
            .split(|b| *b == b'\n')
            .find(|l| l.starts_with(b"{"))
            .expect("the page's JSON line"),
    )
    .unwrap();
    assert_eq!(shown["errors"], serde_json::json!([]), "page errors");
    // A real class of the real detector, from the model's labels, with its model name.
    let faces: Vec<&serde_json::Value> = shown["appear"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["label"] == "FACE_FEMALE")
        .collect();
    assert!(!faces.is_empty(), "{:#?}", shown["appear"]);
    assert_eq!(faces[0]["data"]["model"], "nudenet");
    assert!(faces[0]["confidence"].as_f64().unwrap() >= 0.4);
    // Transcripts from pocketsphinx with prosody; the scripted lines start "help is on the way".
    let speech = shown["speech"].as_array().unwrap();
    let texts: Vec<&str> = speech.iter().filter_map(|e| e["text"].as_str()).collect();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("help") || t.contains("way")),
        "{texts:?}"
    );
    assert!(
        speech
            .iter()
            .any(|e| e["data"]["prosody"]["f0_mean_hz"].as_f64().unwrap_or(0.0) > 60.0),
        "{speech:#?}"
    );
    // At least one clip event stored, and a recorded clip the page plays.
    assert!(!shown["clips"].as_array().unwrap().is_empty());
    let video = &shown["clipVideo"];
    assert_eq!(video["status"], 200);
    assert_eq!(video["contentType"], "video/mp4");
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(640), Some(360))
    );
    assert!(video["duration"].as_f64().unwrap() > 1.0, "{video}");
    let recorded = shown["summary"]["summary"]["clip_markers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["data"]["url"]
                .as_str()
                .is_some_and(|u| u.starts_with("file://"))
        })
        .count();
    assert!(recorded >= 1, "{:#?}", shown["summary"]);

    // The summary names the stored clips; each is a real MP4.
    let clips: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| l.ends_with("bytes)") && l.contains(".mp4"))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert!(out.contains("clips stored in"), "{out}");
    assert!(!clips.is_empty(), "{out}");
    for clip in &clips {
        assert!(Path::new(clip).exists(), "{clip}");
        let probe = Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "format=duration",
                "-of",
                "csv=p=0",
            ])
            .arg(clip)
            .output()
            .unwrap();
        let secs: f64 = String::from_utf8_lossy(&probe.stdout)
            .trim()
            .parse()
            .unwrap_or(0.0);
        assert!(secs > 1.0, "{clip}: {secs} s");
    }
    assert!(out.contains("transcript: "), "{out}");
    let _ = std::fs::remove_dir_all(&work);
}
