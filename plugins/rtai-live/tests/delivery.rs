//! Live delivery's viewer/operator side (issues 17 and 26), driven directly
//! through `Delivery` with a simulated stream and simulated viewers, read
//! back by real HTTP and WebSocket clients on loopback: exact session counts
//! in `/metrics`, `/api` and the WebSocket, sessions leaving, `ended` on the
//! feed, quality switches, history in SQLite across a restart and in
//! PostgreSQL, hostile input, and the alert rules' metric names. The operator
//! page in chromium against a real push, real players and a server process
//! restart: tests/watch_viewers.rs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use gstrtailive::delivery::{Delivery, DeliveryConfig, RenditionInfo, StreamEnd};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// The target duration of the simulated stream (its segment length).
const TARGET: Duration = Duration::from_millis(1000);
/// How often a simulated viewer requests something (well under the stall gap).
const REQUEST_EVERY: Duration = Duration::from_millis(200);

fn ladder() -> Vec<RenditionInfo> {
    [
        ("1080p", 1920, 1080, 5_000_000),
        ("720p", 1280, 720, 2_800_000),
        ("480p", 854, 480, 1_400_000),
    ]
    .into_iter()
    .map(|(name, width, height, bandwidth)| RenditionInfo {
        name: name.into(),
        width,
        height,
        bandwidth,
        codecs: "avc1.64001f,mp4a.40.2".into(),
    })
    .collect()
}

struct Server {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(delivery: &Arc<Delivery>) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = delivery.router();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server { addr, task }
}

fn config(store_url: Option<String>) -> DeliveryConfig {
    DeliveryConfig {
        store_url,
        default_target_duration: TARGET,
        ..DeliveryConfig::default()
    }
}

/// A publisher: input bytes every 100 ms, a segment per rendition every target duration.
fn publish(d: &Arc<Delivery>, stream: &str) -> tokio::task::JoinHandle<()> {
    d.stream_started(stream, ladder(), Some("127.0.0.1:50000".into()));
    let (d, stream) = (d.clone(), stream.to_string());
    tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            d.ingress_bytes(&stream, 62_500);
            if n.is_multiple_of(10) {
                for r in ["1080p", "720p", "480p"] {
                    d.segment_written(&stream, r, TARGET, 300_000);
                    d.encoder_fps(&stream, r, 30.0);
                }
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// A viewer: joins, then fetches `rendition` every [`REQUEST_EVERY`] until aborted.
fn view(d: &Arc<Delivery>, stream: &str, rendition: &str) -> (String, tokio::task::JoinHandle<()>) {
    let id = d.new_session(stream, Some("127.0.0.1:40000".parse().unwrap()));
    assert_eq!(id.len(), 32, "a session id");
    let (d2, stream, rendition, id2) = (
        d.clone(),
        stream.to_string(),
        rendition.to_string(),
        id.clone(),
    );
    let task = tokio::spawn(async move {
        d2.media_request(&stream, Some(&id2), None, 1_000);
        loop {
            d2.media_request(&stream, Some(&id2), Some(&rendition), 50_000);
            tokio::time::sleep(REQUEST_EVERY).await;
        }
    });
    (id, task)
}

fn client() -> reqwest::Client {
    rtai_core::runtime::ensure_tls_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let r = client()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = get(addr, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The value of the series `name{labels}` in a Prometheus text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

async fn poll<T>(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws(addr: SocketAddr, stream: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/streams/{stream}"))
        .await
        .unwrap();
    ws
}

/// The next JSON message of the feed that `pred` accepts, before `deadline`.
async fn ws_until(ws: &mut Ws, deadline: Instant, pred: impl Fn(&Value) -> bool) -> Option<Value> {
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if pred(&v) {
                    return Some(v);
                }
            }
            Ok(Some(Ok(_))) => {}
            _ => return None,
        }
    }
}

async fn counts(addr: SocketAddr) -> (f64, f64, u64, usize) {
    let (_, metrics) = get(addr, "/metrics").await;
    let viewers = sample(&metrics, "rtai_delivery_viewers{stream=\"live\"}").unwrap();
    let sessions = sample(&metrics, "rtai_delivery_sessions_total{stream=\"live\"}").unwrap();
    let api = get_json(addr, "/api/streams/live").await["viewers"]
        .as_u64()
        .unwrap();
    let list = get_json(addr, "/api/streams/live/viewers").await["sessions"]
        .as_array()
        .unwrap()
        .len();
    (viewers, sessions, api, list)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_viewers_counted_exactly_and_five_leaving_reflected() {
    let d = Delivery::with_config(config(None));
    let server = serve(&d).await;
    let publisher = publish(&d, "live");
    let mut feed = ws(server.addr, "live").await;
    let first = ws_until(&mut feed, Instant::now() + Duration::from_secs(2), |_| true)
        .await
        .unwrap();
    assert_eq!(
        (first["type"].as_str(), first["status"].as_str()),
        (Some("status"), Some("active"))
    );

    let viewers: Vec<_> = (0..10)
        .map(|i| view(&d, "live", ["1080p", "720p", "480p"][i % 3]))
        .collect();
    assert_eq!(counts(server.addr).await, (10.0, 10.0, 10, 10));
    // A viewer joins before its first media request names its rendition: a stats
    // tick between the two counts it without one, so wait for a tick after all of them.
    let stats = ws_until(&mut feed, Instant::now() + Duration::from_secs(3), |v| {
        v["type"] == "stats"
            && v["viewers"] == 10
            && v["renditions"]["1080p"] == 4
            && v["renditions"]["720p"] == 3
            && v["renditions"]["480p"] == 3
    })
    .await
    .expect("the WebSocket says 10 viewers, each on a rendition");
    assert_eq!(stats["renditions"]["1080p"], 4);
    assert_eq!(stats["renditions"]["720p"], 3);
    assert_eq!(stats["renditions"]["480p"], 3);
    assert!(stats["ingress_bps"].as_f64().unwrap() > 0.0);
    assert!(stats["egress_bps"].as_f64().unwrap() > 0.0);

    // Five close: they stop requesting. They leave after 3 target durations
    // of silence (the session rule of issue 17).
    let closed = Instant::now();
    for (_, task) in &viewers[..5] {
        task.abort();
    }
    let left_after = poll(
        "5 viewers in /metrics",
        3 * TARGET + Duration::from_secs(2),
        async || (counts(server.addr).await == (5.0, 10.0, 5, 5)).then(|| closed.elapsed()),
    )
    .await;
    assert!(
        left_after >= 3 * TARGET - REQUEST_EVERY,
        "left after {left_after:?}: sooner than 3 target durations of silence"
    );
    ws_until(
        &mut feed,
        closed + 3 * TARGET + Duration::from_secs(2),
        |v| v["type"] == "stats" && v["viewers"] == 5,
    )
    .await
    .expect("the WebSocket says 5 viewers");
    // No stalls: every viewer asked well within 1.5 target durations.
    let (_, metrics) = get(server.addr, "/metrics").await;
    let stalls: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("rtai_delivery_stalls_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(stalls, 0.0, "{metrics}");
    eprintln!(
        "5 of 10 viewers gone from /metrics and /api {left_after:?} after they stopped (target {TARGET:?})"
    );
    publisher.abort();
    for (_, t) in viewers {
        t.abort();
    }
}

async fn post(addr: SocketAddr, path: &str) -> (u16, String) {
    let r = client()
        .post(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The watch page's `pagehide` beacon: closed players leave at once (the 3×
/// rule stays for players that vanish silently); bad input is a 4xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_players_leave_at_once_by_their_beacon() {
    let d = Delivery::with_config(config(None));
    let server = serve(&d).await;
    let publisher = publish(&d, "live");
    let mut feed = ws(server.addr, "live").await;
    let viewers: Vec<_> = (0..6)
        .map(|i| view(&d, "live", ["1080p", "720p", "480p"][i % 3]))
        .collect();
    assert_eq!(counts(server.addr).await, (6.0, 6.0, 6, 6));

    let closed = Instant::now();
    for (id, task) in &viewers[..3] {
        task.abort();
        let (status, body) = post(
            server.addr,
            &format!("/api/streams/live/sessions/{id}/leave"),
        )
        .await;
        assert_eq!(status, 204, "{body}");
    }
    // Reflected at once, far within 2 target durations.
    assert_eq!(counts(server.addr).await, (3.0, 6.0, 3, 3));
    let took = closed.elapsed();
    assert!(took < 2 * TARGET, "took {took:?}");
    for (id, _) in &viewers[..3] {
        let left = ws_until(&mut feed, Instant::now() + Duration::from_secs(2), |v| {
            v["type"] == "session" && v["event"] == "left" && v["session"] == id.as_str()
        })
        .await
        .expect("the WebSocket says the session left");
        assert_eq!(left["reason"], "closed");
    }
    // A request still in flight when the page closed does not join again.
    d.media_request("live", Some(&viewers[0].0), Some("1080p"), 1_000);
    assert_eq!(counts(server.addr).await, (3.0, 6.0, 3, 3));
    let ids: Vec<String> = get_json(server.addr, "/api/streams/live/viewers").await["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    for (id, _) in &viewers[3..] {
        assert!(ids.contains(id), "{id} still watching: {ids:?}");
    }

    // Gone, unknown, malformed, wrong method.
    let gone = &viewers[0].0;
    let unknown = "0123456789abcdef0123456789abcdef";
    for (method_post, path, want) in [
        (
            true,
            format!("/api/streams/live/sessions/{gone}/leave"),
            404,
        ),
        (
            true,
            format!("/api/streams/live/sessions/{unknown}/leave"),
            404,
        ),
        (
            true,
            format!("/api/streams/other/sessions/{unknown}/leave"),
            404,
        ),
        (
            true,
            "/api/streams/live/sessions/nothex/leave".to_string(),
            400,
        ),
        (
            true,
            format!("/api/streams/live/sessions/{}/leave", "A".repeat(32)),
            400,
        ),
        (
            true,
            format!("/api/streams/live/sessions/{}/leave", "a".repeat(5000)),
            400,
        ),
        (
            true,
            format!("/api/streams/..%2F..%2Fetc/sessions/{unknown}/leave"),
            400,
        ),
        (
            true,
            format!("/api/streams/{}/sessions/{unknown}/leave", "x".repeat(65)),
            400,
        ),
        (
            false,
            format!("/api/streams/live/sessions/{}/leave", viewers[3].0),
            405,
        ),
    ] {
        let (status, body) = if method_post {
            post(server.addr, &path).await
        } else {
            get(server.addr, &path).await
        };
        assert_eq!(status, want, "{path}: {body}");
    }
    assert_eq!(counts(server.addr).await, (3.0, 6.0, 3, 3));

    // The others, vanishing silently, still leave by the 3× rule.
    let silent = Instant::now();
    for (_, task) in &viewers[3..] {
        task.abort();
    }
    let after = poll(
        "the silent viewers leaving",
        3 * TARGET + Duration::from_secs(2),
        async || (counts(server.addr).await == (0.0, 6.0, 0, 0)).then(|| silent.elapsed()),
    )
    .await;
    assert!(after >= 3 * TARGET - REQUEST_EVERY, "left after {after:?}");
    let left = ws_until(&mut feed, Instant::now() + Duration::from_secs(2), |v| {
        v["type"] == "session" && v["event"] == "left" && v["session"] == viewers[3].0.as_str()
    })
    .await
    .expect("the WebSocket says the silent session left");
    assert_eq!(left["reason"], "timeout");
    publisher.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_end_reaches_the_websocket_at_once_and_a_switch_is_recorded() {
    let d = Delivery::with_config(config(None));
    let server = serve(&d).await;
    let publisher = publish(&d, "live");
    let mut feed = ws(server.addr, "live").await;
    let (id, task) = view(&d, "live", "1080p");
    tokio::time::sleep(REQUEST_EVERY).await;
    task.abort();
    // The viewer's player switches down.
    d.media_request("live", Some(&id), Some("480p"), 10_000);
    let switch = ws_until(&mut feed, Instant::now() + Duration::from_secs(2), |v| {
        v["type"] == "switch"
    })
    .await
    .expect("a switch message");
    assert_eq!(
        (switch["from"].as_str(), switch["to"].as_str()),
        (Some("1080p"), Some("480p"))
    );
    assert_eq!(switch["session"].as_str(), Some(id.as_str()));
    let v = get_json(server.addr, "/api/streams/live/viewers").await;
    assert_eq!(v["sessions"][0]["switches"], 1);
    assert_eq!(v["sessions"][0]["rendition"], "480p");
    let (_, metrics) = get(server.addr, "/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            "rtai_delivery_rendition_switches_total{stream=\"live\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "rtai_delivery_rendition_viewers{stream=\"live\",rendition=\"480p\"}"
        ),
        Some(1.0)
    );

    publisher.abort();
    let ended = Instant::now();
    d.stream_ended("live", StreamEnd::Ended);
    let msg = ws_until(&mut feed, ended + Duration::from_secs(2), |v| {
        v["type"] == "status"
    })
    .await
    .expect("`ended` on the WebSocket within 2 s");
    assert_eq!(msg["status"], "ended");
    eprintln!(
        "`ended` on the WebSocket {:?} after stream_ended",
        ended.elapsed()
    );
    assert_eq!(
        get_json(server.addr, "/api/streams/live").await["status"],
        "ended"
    );
    let (_, metrics) = get(server.addr, "/metrics").await;
    assert_eq!(
        sample(&metrics, "rtai_delivery_stream_active{stream=\"live\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&metrics, "paths{name=\"live\",state=\"notReady\"}"),
        Some(1.0)
    );

    // An error says so, with its text.
    d.stream_started("cam", ladder(), None);
    let mut feed = ws(server.addr, "cam").await;
    d.stream_ended("cam", StreamEnd::Error("encoder failed".into()));
    let msg = ws_until(&mut feed, Instant::now() + Duration::from_secs(2), |v| {
        v["type"] == "status" && v["status"] != "active"
    })
    .await
    .unwrap();
    assert_eq!(
        (msg["status"].as_str(), msg["error"].as_str()),
        (Some("error"), Some("encoder failed"))
    );
}

/// Runs a stream with viewers and a switch against `store_url`, then reads
/// the history back from a second Delivery on the same store.
async fn history_round_trip(store_url: String) {
    let d = Delivery::with_config(config(Some(store_url.clone())));
    d.store_backend().await.unwrap();
    let publisher = publish(&d, "live");
    let (id, task) = view(&d, "live", "720p");
    let (_, task2) = view(&d, "live", "480p");
    // Two ticks, so two per-second rows with 2 viewers.
    let server = serve(&d).await;
    poll("2 points stored", Duration::from_secs(5), async || {
        d.flush(Duration::from_secs(5)).await.unwrap();
        let h = get_json(server.addr, "/api/streams/live/metrics?since=-3600").await;
        (h["points"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["viewers"] == 2)
            .count()
            >= 2)
            .then_some(())
    })
    .await;
    task.abort();
    d.media_request("live", Some(&id), Some("1080p"), 1);
    d.stream_ended("live", StreamEnd::Ended);
    d.flush(Duration::from_secs(5)).await.unwrap();
    publisher.abort();
    task2.abort();
    drop(server);
    drop(d);

    let d2 = Delivery::with_config(config(Some(store_url)));
    let server = serve(&d2).await;
    // Nothing in memory: the stream is unknown to the live API ...
    assert_eq!(get(server.addr, "/api/streams/live").await.0, 404);
    // ... and its last hour comes from the store.
    let h = get_json(
        server.addr,
        "/api/streams/live/metrics?since=-3600&limit=100",
    )
    .await;
    let points = h["points"].as_array().unwrap();
    assert!(
        points.iter().filter(|p| p["viewers"] == 2).count() >= 2,
        "{h}"
    );
    let with_renditions = points.iter().find(|p| p["viewers"] == 2).unwrap();
    assert_eq!(with_renditions["renditions"]["720p"], 1);
    assert_eq!(with_renditions["renditions"]["480p"], 1);
    assert!(
        points
            .windows(2)
            .all(|w| w[0]["t"].as_i64() <= w[1]["t"].as_i64())
    );
    assert_eq!(h["totals"]["sessions"], 2);
    let s = h["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id.as_str())
        .unwrap();
    assert_eq!(
        (s["rendition"].as_str(), s["switches"].as_i64()),
        (Some("1080p"), Some(1))
    );
    let sw = &h["switches"][0];
    assert_eq!(
        (sw["from"].as_str(), sw["to"].as_str()),
        (Some("720p"), Some("1080p"))
    );
    // A window before any data is empty.
    let h = get_json(server.addr, "/api/streams/live/metrics?since=0&until=1").await;
    assert_eq!(h["points"].as_array().unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_survives_a_restart_with_sqlite() {
    let dir = rtai_core::testing::temp_dir("delivery-sqlite");
    history_round_trip(dir.join("delivery.sqlite").to_str().unwrap().to_string()).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_in_postgresql_by_url() {
    let pg = tokio::task::spawn_blocking(rtai_core::testing::Postgres::start)
        .await
        .unwrap();
    let url = pg.create_database("delivery");
    history_round_trip(url.clone()).await;
    let tables = pg.psql(&url, "SELECT count(*) FROM rtai_delivery_sessions");
    assert_eq!(tables.trim(), "2");
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_4xx_and_websocket_garbage_closes() {
    let d = Delivery::with_config(config(None));
    let server = serve(&d).await;
    let publisher = publish(&d, "live");
    let addr = server.addr;
    for (path, want) in [
        ("/api/streams/nope", 404),
        ("/api/streams/..%2F..%2Fetc%2Fpasswd", 400),
        ("/api/streams/%00", 400),
        (&format!("/api/streams/{}", "a".repeat(65)), 400),
        ("/api/streams/nope/viewers", 404),
        ("/api/streams/live/metrics?since=abc", 400),
        ("/api/streams/live/metrics?since=1&since=2", 400),
        ("/api/streams/live/metrics?limit=99999999999999999999", 400),
        (
            &format!("/api/streams/live/metrics?since=1&x={}", "a".repeat(5000)),
            414,
        ),
        // A WebSocket route asked without the upgrade.
        ("/ws/streams/live", 400),
    ] {
        let (status, body) = get(addr, path).await;
        if path == "/ws/streams/live" {
            assert!((400..500).contains(&status), "{path}: {status} {body}");
        } else {
            assert_eq!(status, want, "{}: {body}", &path[..path.len().min(80)]);
        }
    }
    // A WebSocket handshake for an unknown stream or a bad name.
    for (stream, want) in [("nope", 404), ("..", 400)] {
        match tokio_tungstenite::connect_async(format!("ws://{addr}/ws/streams/{stream}")).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status().as_u16(), want)
            }
            other => panic!("{stream}: {:?}", other.map(|_| ())),
        }
    }
    // Text to a feed that takes none: closed with 1008 (policy).
    let mut feed = ws(addr, "live").await;
    feed.send(Message::Text("{\"subscribe\": \"everything\"}".into()))
        .await
        .unwrap();
    let closed = poll_close(&mut feed).await;
    assert_eq!(closed, Some(1008));
    // A message over 4 KiB: the connection is dropped (1009 or a reset).
    let mut feed = ws(addr, "live").await;
    let _ = feed
        .send(Message::Binary(vec![0u8; 64 * 1024].into()))
        .await;
    let closed = poll_close(&mut feed).await;
    assert!(
        matches!(closed, None | Some(1009) | Some(1008) | Some(1002)),
        "{closed:?}"
    );
    // Random bytes on a raw connection to the WS route: a 4xx or a close, never a feed.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"GET /ws/streams/live HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 99\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 4"), "{head}");
    // The server still serves.
    assert_eq!(get(addr, "/api/streams/live").await.0, 200);
    publisher.abort();
}

/// The close code the server sends, `None` when the connection just ends.
async fn poll_close(ws: &mut Ws) -> Option<u16> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("closed within 5 s");
        match tokio::time::timeout(left, ws.next())
            .await
            .expect("closed within 5 s")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_guards_ops_api_and_ws_but_not_metrics() {
    let d = Delivery::with_config(DeliveryConfig {
        auth_token: Some("s3cret".into()),
        ..config(None)
    });
    let server = serve(&d).await;
    d.stream_started("live", ladder(), None);
    let addr = server.addr;
    for path in [
        "/ops",
        "/api/streams",
        "/api/streams/live",
        "/api/streams/live/metrics",
        "/ws/streams/live",
    ] {
        assert_eq!(get(addr, path).await.0, 401, "{path}");
        assert_eq!(
            get(addr, &format!("{path}?access_token=wrong")).await.0,
            401,
            "{path}"
        );
    }
    assert_eq!(get(addr, "/metrics").await.0, 200);
    let (status, page) = get(addr, "/ops?access_token=s3cret").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("/static/hls.min.js") && page.contains("<canvas"),
        "the page with its config"
    );
    let r = client()
        .get(format!("http://{addr}/api/streams"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (mut feed, _) = tokio_tungstenite::connect_async(format!(
        "ws://{addr}/ws/streams/live?access_token=s3cret"
    ))
    .await
    .unwrap();
    let first = ws_until(&mut feed, Instant::now() + Duration::from_secs(2), |_| true)
        .await
        .unwrap();
    assert_eq!(first["status"], "active");
}

/// Metric names used in a PromQL expression: identifiers that are not
/// functions, keywords, label names, durations or strings.
fn promql_metric_names(expr: &str) -> Vec<String> {
    const WORDS: &[&str] = &[
        "sum",
        "by",
        "without",
        "rate",
        "irate",
        "increase",
        "delta",
        "and",
        "or",
        "unless",
        "on",
        "ignoring",
        "offset",
        "group_left",
        "group_right",
        "max",
        "min",
        "avg",
        "count",
        "bool",
        "clamp_min",
        "clamp_max",
        "max_over_time",
        "min_over_time",
        "avg_over_time",
        "absent",
        "time",
        "vector",
        "scalar",
    ];
    let mut names = Vec::new();
    let b = expr.as_bytes();
    let (mut i, mut depth_brace, mut depth_bracket) = (0, 0, 0);
    while i < b.len() {
        let c = b[i];
        match c {
            b'{' => depth_brace += 1,
            b'}' => depth_brace -= 1,
            b'[' => depth_bracket += 1,
            b']' => depth_bracket -= 1,
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += 1;
                }
            }
            _ if (c.is_ascii_alphabetic() || c == b'_')
                && depth_brace == 0
                && depth_bracket == 0 =>
            {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':')
                {
                    i += 1;
                }
                let word = &expr[start..i];
                let next = expr[i..].trim_start();
                let after_by = expr[..start].trim_end().ends_with(['(']) && {
                    let before = expr[..start].trim_end().trim_end_matches('(').trim_end();
                    [
                        "by",
                        "without",
                        "on",
                        "ignoring",
                        "group_left",
                        "group_right",
                    ]
                    .iter()
                    .any(|k| before.ends_with(k))
                };
                if !WORDS.contains(&word) && !next.starts_with('(') && !after_by {
                    names.push(word.to_string());
                }
                continue;
            }
            // Numbers, durations (5m) and exponents (1e-9) are not names.
            _ if c.is_ascii_digit() => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_parse_and_use_only_exported_metrics() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/alerts/live-streaming.rules.yml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).expect("the rules are YAML");
    let groups = docs[0]["groups"].as_vec().expect("groups");
    let d = Delivery::with_config(config(None));
    d.stream_started("live", ladder(), None);
    d.segment_written("live", "720p", TARGET, 1);
    let server = serve(&d).await;
    let (_, metrics) = get(server.addr, "/metrics").await;
    let exported: std::collections::HashSet<&str> = metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap())
        .collect();
    let mut alerts = Vec::new();
    for g in groups {
        assert!(g["name"].as_str().is_some(), "every group has a name");
        for rule in g["rules"].as_vec().expect("rules") {
            let alert = rule["alert"].as_str().expect("an alerting rule");
            let expr = rule["expr"].as_str().expect("an expr");
            assert!(
                rule["labels"]["severity"].as_str().is_some(),
                "{alert}: severity"
            );
            assert!(
                rule["annotations"]["summary"].as_str().is_some(),
                "{alert}: summary"
            );
            let names = promql_metric_names(expr);
            assert!(!names.is_empty(), "{alert}: no metric in {expr}");
            for n in names {
                assert!(
                    exported.contains(n.as_str()),
                    "{alert} uses {n}, which /metrics does not export"
                );
            }
            alerts.push(alert.to_string());
        }
    }
    for want in [
        "LiveStreamErrorRateHigh",
        "LiveStreamStallRateHigh",
        "LiveStreamViewersDropped",
        "LiveStreamIngressStopped",
    ] {
        assert!(alerts.iter().any(|a| a == want), "{want} in {alerts:?}");
    }
    // The extractor sees what it must (and would catch a misspelt name).
    assert_eq!(
        promql_metric_names(
            "sum by (stream) (rate(a_total{x=\"y\"}[5m])) / on(stream) b > 0.01 and c offset 1m > 1e-9"
        ),
        vec!["a_total", "b", "c"]
    );
}
