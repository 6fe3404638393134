//! abrsink's `database` and `auth-token` properties (issue 17), through
//! `gst-launch-1.0` processes as a user runs them: the viewer history of a
//! stream survives a restart of the process on the same SQLite file, the token
//! guards `/ops`, `/api` and `/ws` (media, `/watch` and `/metrics` stay open),
//! and the token is never readable (property, gst-inspect).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gst::prelude::*;
use serde_json::Value;

mod common;
use common::{gst_command, poll};

const TOKEN: &str = "tok-Zq8s3cret";

struct Launched(Child);

impl Launched {
    /// `gst-launch-1.0 -e` with abrsink on `port`, history in `database`.
    fn start(port: u16, database: &Path) -> Launched {
        let child = gst_command("gst-launch-1.0")
            .args(["-e", "videotestsrc", "is-live=true", "!"])
            .args(["video/x-raw,width=320,height=240,framerate=30/1", "!"])
            .args(["abrsink", "ladder=240p:300", "prefer-hardware=false"])
            .arg(format!("listen=127.0.0.1:{port}"))
            .arg(format!("database={}", database.display()))
            .arg(format!("auth-token={TOKEN}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gst-launch-1.0 runs");
        Launched(child)
    }

    /// SIGINT: `-e` sends EOS, then the pipeline stops (NULL) and the process exits.
    fn interrupt(mut self) -> String {
        let pid = self.0.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "gst-launch did not exit on SIGINT"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut out = String::new();
        self.0
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        self.0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert!(status.success(), "{status}: {out}");
        out
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A raw HTTP/1.1 GET with extra header lines: status and body (None: no answer).
fn get(port: u16, path: &str, headers: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

fn bearer() -> String {
    format!("Authorization: Bearer {TOKEN}\r\n")
}

fn get_json(port: u16, path: &str) -> Value {
    let (status, body) = get(port, path, &bearer()).expect("an answer");
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The session id the master playlist hands out, and its rendition playlist's path.
fn join(port: u16) -> (String, String) {
    let (status, master) = get(port, "/hls/live/master.m3u8", "").unwrap();
    assert_eq!(status, 200, "{master}");
    let uri = master
        .lines()
        .find(|l| l.starts_with("240p/"))
        .expect("the rendition URI")
        .to_string();
    let id = uri.split("session=").nth(1).unwrap().to_string();
    assert_eq!(id.len(), 32, "{uri}");
    (id, format!("/hls/live/{uri}"))
}

#[test]
fn history_survives_a_gst_launch_restart_and_the_token_guards_the_api() {
    let dir = rtai_core::testing::temp_dir("abrsink-store");
    let database = dir.join("live.sqlite");
    let port = rtai_core::testing::free_port();

    let first = Launched::start(port, &database);
    poll("the master playlist", Duration::from_secs(30), || {
        get(port, "/hls/live/master.m3u8", "").filter(|(s, _)| *s == 200)
    });
    // The token: required on /ops, /api and /ws; a wrong one is refused too.
    for path in [
        "/ops",
        "/api/streams",
        "/api/streams/live",
        "/api/streams/live/viewers",
        "/api/streams/live/metrics?since=-3600",
        "/ws/streams/live",
    ] {
        let (status, body) = get(port, path, "").unwrap();
        assert_eq!(status, 401, "{path} without a token: {body}");
        assert!(!body.contains(TOKEN));
        let (status, _) = get(port, path, "Authorization: Bearer wrong\r\n").unwrap();
        assert_eq!(status, 401, "{path} with a wrong token");
    }
    for path in ["/ops", "/api/streams", "/api/streams/live"] {
        assert_eq!(get(port, path, &bearer()).unwrap().0, 200, "{path}");
        let q = if path.contains('?') { '&' } else { '?' };
        let with_query = format!("{path}{q}access_token={TOKEN}");
        assert_eq!(get(port, &with_query, "").unwrap().0, 200, "{with_query}");
    }
    // Players and Prometheus need no token.
    assert_eq!(get(port, "/metrics", "").unwrap().0, 200);
    assert_eq!(get(port, "/watch/live", "").unwrap().0, 200);

    // A viewer watches until two per-second rows with it are stored.
    let (id, playlist) = join(port);
    let before_restart = poll(
        "2 stored points with a viewer",
        Duration::from_secs(20),
        || {
            assert_eq!(get(port, &playlist, "").unwrap().0, 200);
            let h = get_json(port, "/api/streams/live/metrics?since=-3600&limit=1000");
            let points = h["points"].as_array().unwrap();
            (points.iter().filter(|p| p["viewers"] == 1).count() >= 2).then_some(points.len())
        },
    );
    let out = first.interrupt();
    assert!(!out.contains(TOKEN), "gst-launch printed the token: {out}");

    // A new process on the same file: nothing live yet, the history is there.
    let second = Launched::start(port, &database);
    poll("the second server", Duration::from_secs(30), || {
        get(port, "/api/streams", &bearer()).filter(|(s, _)| *s == 200)
    });
    let h = get_json(port, "/api/streams/live/metrics?since=-3600&limit=1000");
    let points = h["points"].as_array().unwrap();
    assert!(
        points.len() >= before_restart,
        "{} points after the restart, {before_restart} before: {h}",
        points.len()
    );
    assert!(
        points.iter().filter(|p| p["viewers"] == 1).count() >= 2,
        "{h}"
    );
    let session = h["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id.as_str())
        .unwrap_or_else(|| panic!("session {id} not in the history: {h}"));
    assert_eq!(session["rendition"], "240p", "{session}");
    assert!(session["bytes"].as_i64().unwrap() > 0, "{session}");
    // The stream of the first run is recorded as ended.
    assert!(h["totals"]["sessions"].as_i64().unwrap() >= 1, "{h}");
    // And the token still guards the second run.
    assert_eq!(
        get(port, "/api/streams/live/metrics?since=-3600", "")
            .unwrap()
            .0,
        401
    );
    second.interrupt();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_token_is_write_only_and_the_database_password_is_hidden() {
    // gst-inspect shows the property as writable only, with no value.
    let out = gst_command("gst-inspect-1.0")
        .arg("abrsink")
        .output()
        .expect("gst-inspect-1.0 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let section: String = text
        .split("\n  ")
        .skip_while(|l| !l.starts_with("auth-token "))
        .take(3)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(section.contains("flags: writable"), "{section}");
    assert!(!section.contains("readable"), "{section}");
    assert!(text.contains("database "), "{text}");

    gst::init().unwrap();
    gstrtailive::plugin_register_static().unwrap();
    let abr = gst::ElementFactory::make("abrsink").build().unwrap();
    abr.set_property("auth-token", TOKEN);
    abr.set_property("database", "postgres://app:pg-s3cret@127.0.0.1/live");
    let pspec = abr.find_property("auth-token").unwrap();
    assert!(!pspec.flags().contains(gst::glib::ParamFlags::READABLE));
    assert_eq!(
        abr.property::<String>("database"),
        "postgres://app:***@127.0.0.1/live"
    );
}

#[test]
fn an_unusable_database_fails_the_start_without_showing_its_password() {
    gst::init().unwrap();
    gstrtailive::plugin_register_static().unwrap();
    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make("videotestsrc").build().unwrap();
    let abr = gst::ElementFactory::make("abrsink")
        .property("listen", "127.0.0.1:0")
        // Nothing listens on port 1.
        .property(
            "database",
            "postgres://app:pg-s3cret@127.0.0.1:1/live?connect_timeout=2",
        )
        .build()
        .unwrap();
    pipeline.add_many([&src, &abr]).unwrap();
    src.link(&abr).unwrap();
    assert!(pipeline.set_state(gst::State::Paused).is_err());
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(gst::ClockTime::from_seconds(5), &[gst::MessageType::Error])
        .expect("an error message");
    let gst::MessageView::Error(e) = msg.view() else {
        unreachable!()
    };
    let text = format!("{} {:?}", e.error(), e.debug());
    assert!(text.contains("delivery database"), "{text}");
    assert!(!text.contains("pg-s3cret"), "{text}");
    pipeline.set_state(gst::State::Null).unwrap();
}
