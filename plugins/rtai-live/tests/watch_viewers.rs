//! The live proof of issues 17 and 26 against the real thing, in one browser
//! run: a `gst-launch-1.0` process (rtmpserversrc → abrsink with a SQLite
//! `database` and an `auth-token`, which `/ops`, `/api` and `/ws` then need)
//! gets a live ffmpeg RTMP push; Debian's chromium (playwright-core,
//! tests/player/viewers.mjs) opens ten hls.js `/watch` pages and the operator
//! page `/ops`:
//! - the ten are counted exactly in `/api`, `/metrics` and the WebSocket, and
//!   closing five (their `pagehide` beacon) is reflected in all three within
//!   2 × target duration;
//! - `/ops` opened with five viewers shows them (its row and its detail) in
//!   under 2 s; a screenshot has the three charts drawn; closing two more
//!   shows 3 within 2 × target duration; a viewer's hls.js switched to the
//!   other rendition is listed among its switches within a target duration;
//! - the publisher killed (SIGKILL to ffmpeg) turns the stream's row to
//!   `ended` within 2 s;
//! - the server process killed (SIGKILL) and started again on the same file:
//!   `/api/streams/{stream}/metrics?since=` still has the 10, 5 and 3 viewer
//!   seconds and the ten sessions, and `/ops` draws that stored hour.
//!
//! The source is small (160x120, 10 fps, no audio, rungs 120p and 90p) so that
//! ten pages decoding at once stay cheap on 2 cores and their beacons go out on
//! time.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::*;

/// abrsink's segment duration here: the target duration.
const TARGET: Duration = Duration::from_secs(1);
const STREAM: &str = "crowd";
/// Pages opened, closed first (issue 17), closed with /ops open (issue 26).
const PAGES: usize = 10;
const CLOSE: usize = 5;
const OPS_CLOSE: usize = 2;
/// The server's `auth-token`: `/ops`, `/api` and `/ws` need it, players do not.
const TOKEN: &str = "ops-Zq8s3cret";

/// `path` with the token (`access_token=`, as the page passes it on).
fn authed(path: &str) -> String {
    let q = if path.contains('?') { '&' } else { '?' };
    format!("{path}{q}access_token={TOKEN}")
}

/// `gst-launch-1.0` serving `STREAM` on `http` from an RTMP publisher on
/// `rtmp`, its history in `database`; killed (SIGKILL) on drop. The idle
/// timeout is 15 s, not 2: on a loaded machine (load average 17+ on 2 cores)
/// ffmpeg was starved for 2 s now and then and its stream ended mid-test (a
/// killed publisher's socket closes at once: `ended` does not wait for it).
struct Server(Child);

impl Server {
    fn start(http: u16, rtmp: u16, database: &Path, log: &Path) -> Server {
        let description = format!(
            "rtmpserversrc listen=127.0.0.1:{rtmp} stream-name={STREAM} eos-on-disconnect=false \
               idle-timeout=15000 \
             ! flvdemux name=d d.video ! queue ! h264parse ! avdec_h264 ! queue \
             ! abrsink ladder=120p:150,90p:100 prefer-hardware=false listen=127.0.0.1:{http} \
               stream={STREAM} database={} auth-token={TOKEN}",
            database.display()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = gst_command("gst-launch-1.0")
            // -m: bus messages (rtmp-publish-start/stop with the reason) into the log.
            .arg("-m")
            .args(description.split_whitespace())
            // Warnings into the log, for a failure's post-mortem.
            .env("GST_DEBUG", "2")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("gst-launch-1.0 runs");
        rtai_core::testing::wait_until("the delivery server", Duration::from_secs(30), || {
            try_get(http, &authed("/api/streams")).is_some_and(|r| r.status == 200)
        });
        Server(child)
    }

    /// SIGKILL: no EOS, no flush, no clean stop.
    fn kill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// viewers.mjs's stdout, one JSON line a stage.
struct Stages(mpsc::Receiver<String>);

impl Stages {
    fn next(&self, stage: &str) -> Value {
        let line = self
            .0
            .recv_timeout(Duration::from_secs(90))
            .unwrap_or_else(|_| panic!("viewers.mjs said nothing for the {stage} stage"));
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["stage"], stage, "{v}");
        v
    }
}

fn ms(v: &Value) -> Duration {
    Duration::from_millis(v.as_u64().unwrap_or_else(|| panic!("a time: {v}")))
}

fn ids(v: &Value) -> Vec<String> {
    let mut ids: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// Every closed page's session left by its `pagehide` beacon (reason
/// `closed`), not by the 3 × target duration silence rule.
fn assert_left_by_beacon(stage: &Value) {
    for left in stage["left"].as_array().unwrap() {
        assert_eq!(left["reason"], "closed", "{stage}");
    }
}

#[test]
fn rtmp_push_watch_pages_ops_page_publisher_killed_and_history_after_a_restart() {
    player_deps();
    let tmp = rtai_core::testing::temp_dir("watch-viewers");
    let (database, log) = (tmp.join("live.sqlite"), tmp.join("gst-launch.log"));
    let (http, rtmp) = (
        rtai_core::testing::free_port(),
        rtai_core::testing::free_port(),
    );
    let server = Server::start(http, rtmp, &database, &log);
    let t0 = Instant::now();
    let ffmpeg = Killed(
        rtai_core::testing::ffmpeg_rtmp(
            &format!("rtmp://127.0.0.1:{rtmp}/live/{STREAM}"),
            300.0,
            "160x120",
            10,
            false,
        )
        .stderr(std::fs::File::create(tmp.join("ffmpeg.log")).unwrap())
        .spawn()
        .expect("ffmpeg runs"),
    );
    rtai_core::testing::wait_until("the pushed stream", Duration::from_secs(20), || {
        get(http, &authed(&format!("/api/streams/{STREAM}"))).status == 200
    });
    println!(
        "RTMP push → stream served: {:.2} s",
        t0.elapsed().as_secs_f64()
    );

    let shot = tmp.join("ops.png");
    let mut node = Killed(
        std::process::Command::new("node")
            .arg(Path::new(PLAYER_DIR).join("viewers.mjs"))
            .arg(format!("http://127.0.0.1:{http}/watch/{STREAM}"))
            .args([PAGES, CLOSE, OPS_CLOSE].map(|n| n.to_string()))
            .arg(&shot)
            .arg(ffmpeg.0.id().to_string())
            .arg(TOKEN)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node runs"),
    );
    let (tx, rx) = mpsc::channel();
    let stdout = std::io::BufReader::new(node.0.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let error = line.contains("\"error\"");
            if error {
                eprintln!("viewers.mjs: {line}");
            }
            let _ = tx.send(line);
        }
    });
    let stages = Stages(rx);

    // Issue 17: ten pages counted exactly, five closed within 2 × target duration.
    let v = stages.next("viewers");
    assert_eq!(v["errors"], serde_json::json!([]), "{v}");
    assert_eq!(
        (v["counted"].as_u64(), v["after"].as_u64()),
        (Some(10), Some(5)),
        "{v}"
    );
    let sessions = ids(&v["sessions"]);
    assert_eq!(
        sessions
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        PAGES,
        "one session per page: {v}"
    );
    let open: Vec<String> = {
        let mut open: Vec<String> = v["sessions"].as_array().unwrap()[CLOSE..]
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        open.sort();
        open
    };
    assert_eq!(
        ids(&v["remaining"]),
        open,
        "the pages still open are the viewers: {v}"
    );
    let closed = ms(&v["closeToCountMs"]);
    println!(
        "{PAGES} hls.js pages (first frame, ms: {}) counted in /api, /metrics and the WebSocket; \
         {CLOSE} closed → counted {closed:?} later (each view, ms: {}; target {TARGET:?}; \
         each session left after: {})",
        v["firstFrameMs"], v["reached"], v["left"]
    );
    assert_left_by_beacon(&v);
    assert!(
        closed < 2 * TARGET,
        "closing was reflected after {closed:?}"
    );

    // Issue 26: /ops with five viewers, two more closed, charts drawn.
    let v = stages.next("ops");
    assert_eq!(v["errors"], serde_json::json!([]), "{v}");
    assert_eq!(v["opsErrors"], serde_json::json!([]), "{v}");
    let (loaded, shown) = (ms(&v["loadedMs"]), ms(&v["shownMs"]));
    assert_eq!(v["views"], 3, "{v}");
    println!(
        "/ops: {} viewers shown {loaded:?} after opening it; {OPS_CLOSE} closed → 3 shown {shown:?} \
         later (API/metrics/WebSocket, ms: {}; sessions left after: {}); chart pixels {}",
        PAGES - CLOSE,
        v["viewsReached"],
        v["left"],
        v["chartPixels"]
    );
    assert_left_by_beacon(&v);
    assert!(
        loaded < Duration::from_secs(2),
        "/ops showed 5 after {loaded:?}"
    );
    assert!(shown < 2 * TARGET, "/ops showed 3 after {shown:?}");
    let switched = ms(&v["switchShownMs"]);
    println!(
        "a viewer's hls.js switched to {} → /ops lists the switch {switched:?} later",
        v["switchTo"]
    );
    assert!(
        switched < TARGET,
        "/ops showed the switch after {switched:?}"
    );
    for chart in ["chart-viewers", "chart-bitrate", "chart-renditions"] {
        assert!(v["drawn"][chart].as_u64().unwrap() >= 2, "{chart}: {v}");
        // A line across the chart, not just the legend text.
        assert!(
            v["chartPixels"][chart].as_u64().unwrap() > 200,
            "{chart}: {v}"
        );
    }

    // The publisher killed mid-stream.
    let v = stages.next("ended");
    assert_eq!(v["statusBefore"], "active", "{v}");
    let ended = ms(&v["endedMs"]);
    println!("publisher killed → /ops row `ended`: {ended:?}");
    assert!(ended < Duration::from_secs(2), "`ended` after {ended:?}");
    let status = get(http, &authed(&format!("/api/streams/{STREAM}"))).json();
    assert_eq!(status["status"], "ended", "{status}");

    // The server process killed and started again on the same SQLite file.
    let t = Instant::now();
    server.kill();
    let server = Server::start(http, rtmp, &database, &log);
    println!(
        "server killed (SIGKILL) and started again: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    // Nothing live: the stream is unknown to the live API ...
    assert_eq!(
        get(http, &authed(&format!("/api/streams/{STREAM}"))).status,
        404
    );
    // ... and its last hour comes from the store.
    let h = get(
        http,
        &authed(&format!(
            "/api/streams/{STREAM}/metrics?since=-3600&limit=1000"
        )),
    )
    .json();
    let points = h["points"].as_array().unwrap();
    for viewers in [PAGES, PAGES - CLOSE, PAGES - CLOSE - OPS_CLOSE] {
        assert!(
            points.iter().any(|p| p["viewers"] == viewers),
            "no stored second with {viewers} viewers: {h}"
        );
    }
    let stored: Vec<String> = {
        let mut s: Vec<String> = h["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
        s.sort();
        s
    };
    assert_eq!(stored, sessions, "the ten sessions in the store: {h}");
    // Behind the token, like the API.
    assert_eq!(get(http, &format!("/ops?stream={STREAM}")).status, 401);
    let ops = get(http, &authed(&format!("/ops?stream={STREAM}")));
    assert_eq!(ops.status, 200);
    assert!(ops.text().contains("chart-viewers"), "{}", ops.text());
    node.0
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"restarted\n")
        .unwrap();
    let v = stages.next("history");
    println!(
        "after the restart /ops drew the stored hour {}: {}",
        v["historyMs"], v["note"]
    );
    assert!(v["points"].as_u64().unwrap() >= points.len() as u64, "{v}");
    assert!(
        v["historyPixels"]["chart-viewers"].as_u64().unwrap() > 200,
        "{v}"
    );
    let exit = wait_exit(&mut node.0, Duration::from_secs(20));
    assert!(exit.success(), "viewers.mjs: {exit}");
    drop(server);
    let _ = std::fs::remove_dir_all(tmp);
}
