//! Peers the inferclient tests start on loopback (MLServer, the runpod SDK's
//! local API, fixtures), killed on drop, the paths they run from, and the
//! audio the tests send.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use rtai_core::testing::free_port;

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn peers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers")
}

pub fn http(port: u16, method: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_whitespace().nth(1)?.parse().ok()
}

/// A server process, killed on drop.
pub struct Peer {
    pub child: Child,
    pub port: u16,
    /// MLServer's gRPC port (0 for the others).
    pub grpc_port: u16,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    /// Waits until `ready` says the server answers (it loads models first).
    pub fn wait_ready(mut self, what: &str, ready: impl Fn(u16) -> bool) -> Self {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !ready(self.port) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{what} exited with {status} before it was ready");
            }
            assert!(Instant::now() < deadline, "{what} not ready within 90 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        self
    }

    pub fn mlserver() -> Self {
        let venv = workspace().join(".venv-mlserver/bin");
        assert!(
            venv.join("mlserver").exists(),
            "MLServer is missing: scripts/setup.sh installs it into .venv-mlserver"
        );
        let (port, grpc_port) = (free_port(), free_port());
        let child = Command::new(venv.join("mlserver"))
            .arg("start")
            .arg(peers().join("mlserver"))
            // The NudeNet detector's runtime is the one the demo serves (scripts/peers/nudenet).
            .env(
                "PYTHONPATH",
                std::env::join_paths([peers().join("mlserver"), nudenet_fixture()]).unwrap(),
            )
            .env("MLSERVER_HOST", "127.0.0.1")
            .env("MLSERVER_HTTP_PORT", port.to_string())
            .env("MLSERVER_GRPC_PORT", grpc_port.to_string())
            .env("MLSERVER_METRICS_PORT", free_port().to_string())
            .env("MLSERVER_METRICS_ENDPOINT", "")
            .env("MLSERVER_PARALLEL_WORKERS", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mlserver starts");
        Peer {
            child,
            port,
            grpc_port,
        }
        .wait_ready("MLServer", |p| {
            [
                "ball",
                "slow",
                "broken",
                "text",
                "cls",
                "detraw",
                "faces",
                "faces-fp16",
                "faces-u8",
                "faces-jpeg",
                "ball-split",
            ]
            .iter()
            .all(|m| http(p, "GET", &format!("/v2/models/{m}/ready")) == Some(200))
        })
    }

    pub fn runpod() -> Self {
        let python = workspace().join(".venv-runpod/bin/python");
        assert!(
            python.exists(),
            "the runpod SDK is missing: scripts/setup.sh installs it into .venv-runpod"
        );
        let port = free_port();
        let child = Command::new(python)
            .arg(peers().join("runpod_handler.py"))
            .args([
                "--rp_serve_api",
                "--rp_api_host",
                "127.0.0.1",
                "--rp_api_port",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the runpod handler starts");
        // The local API has no health route; its OpenAPI page answers once it serves.
        Peer {
            child,
            port,
            grpc_port: 0,
        }
        .wait_ready("runpod local API", |p| {
            http(p, "GET", "/openapi.json") == Some(200)
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The MLServer fixture that serves NudeNet's YOLOv8n detector raw (scripts/peers/nudenet).
pub fn nudenet_fixture() -> PathBuf {
    workspace().join("scripts/peers/nudenet")
}

/// 10 ms of 16 kHz S16LE mono speech-ish samples carrying segment `id`.
pub fn audio(pts_ms: u64, id: u64) -> gst::Buffer {
    let mut b = plain_audio(pts_ms);
    rtai_core::SegmentIdMeta::set(b.make_mut(), id);
    b
}

/// 10 ms of 16 kHz S16LE mono without a segment.
pub fn plain_audio(pts_ms: u64) -> gst::Buffer {
    let samples: Vec<u8> = (0..160)
        .flat_map(|i| (((i as f64 * 0.2).sin() * 8000.0) as i16).to_le_bytes())
        .collect();
    let mut b = gst::Buffer::from_slice(samples);
    {
        let b = b.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_mseconds(pts_ms));
        b.set_duration(gst::ClockTime::from_mseconds(10));
    }
    b
}
