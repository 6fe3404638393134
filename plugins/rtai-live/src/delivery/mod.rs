//! Viewer and operator side of live delivery (issues 17 and 26): viewer
//! sessions, per-stream status and rates, the JSON API, the WebSocket status
//! feed, Prometheus `/metrics`, the operator page `/ops`, and their storage in
//! the shared SQL store (`rtai_core::store`: SQLite by default, PostgreSQL by URL).
//!
//! One [`Delivery`] per HTTP server, shared through an `Arc`: the element that
//! packages and serves media (`abrsink`) tells it what happens (streams
//! starting and ending, ingress bytes, segments, media requests) and merges
//! [`Delivery::router`] into its own axum router. See docs/delivery.md.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use rtai_core::store::now_ms;
use tokio::sync::{broadcast, mpsc};

mod db;
mod http;
mod metrics;
pub mod state;

use state::{Change, Rules, Status, Streams};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "rtaidelivery",
        gst::DebugColorFlags::empty(),
        Some("rtai live delivery: sessions, API, WebSocket, metrics"),
    )
});

/// Writes waiting for the store; more are dropped and counted.
const WRITE_QUEUE: usize = 16_384;
/// Messages a slow WebSocket client may fall behind by before it skips some.
const FEED_BACKLOG: usize = 256;
/// Session rows that changed are written every this many seconds.
const SESSION_FLUSH_TICKS: u64 = 5;

/// One rendition of a stream's ladder, as the master playlist lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RenditionInfo {
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// Peak bits per second (`BANDWIDTH`).
    pub bandwidth: u64,
    /// RFC 6381 codecs string (`CODECS`).
    pub codecs: String,
}

/// How a stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// The input ended (EOS, publisher left).
    Ended,
    /// The pipeline failed; the text is shown to operators.
    Error(String),
}

/// Settings of a [`Delivery`].
#[derive(Clone)]
pub struct DeliveryConfig {
    /// Where sessions and per-second metrics are kept: `None` or empty for an
    /// in-memory SQLite database, a path for a SQLite file, a `postgres://` URL.
    pub store_url: Option<String>,
    /// When set, `/ops`, `/api/*` and `/ws/*` need it (`Authorization: Bearer`
    /// or `?access_token=`).
    pub auth_token: Option<String>,
    /// Target duration assumed before a stream's first segment is written
    /// (afterwards: the longest segment written, rounded up to 1 ms).
    pub default_target_duration: Duration,
    /// A session left after no request for this many target durations.
    pub leave_after: f64,
    /// A gap of more than this many target durations between two requests of
    /// a session counts as a stall.
    pub stall_after: f64,
    /// URL path of hls.js, for the preview on `/ops` (served by abrsink).
    pub hls_js_path: String,
    /// URL of a stream's master playlist; `{stream}` is replaced.
    pub master_playlist_path: String,
}

/// By hand: the token and a database URL's password must not reach a log through `{:?}`.
impl std::fmt::Debug for DeliveryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryConfig")
            .field(
                "store_url",
                &self.store_url.as_deref().map(rtai_core::secrets::redact),
            )
            .field("auth_token", &self.auth_token.as_ref().map(|_| "***"))
            .field("default_target_duration", &self.default_target_duration)
            .field("leave_after", &self.leave_after)
            .field("stall_after", &self.stall_after)
            .field("hls_js_path", &self.hls_js_path)
            .field("master_playlist_path", &self.master_playlist_path)
            .finish()
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            store_url: None,
            auth_token: None,
            default_target_duration: Duration::from_secs(1),
            leave_after: 3.0,
            stall_after: 1.5,
            hls_js_path: "/static/hls.min.js".into(),
            master_playlist_path: "/hls/{stream}/master.m3u8".into(),
        }
    }
}

/// The viewer/operator side of one delivery server.
pub struct Delivery {
    config: DeliveryConfig,
    rules: Rules,
    streams: Mutex<Streams>,
    /// One live feed per stream (WebSocket subscribers).
    feeds: Mutex<HashMap<String, broadcast::Sender<Arc<str>>>>,
    writes: mpsc::Sender<db::Write>,
    store: Arc<db::StoreSlot>,
    /// Writes dropped because the queue was full.
    pub(crate) write_dropped: AtomicU64,
}

impl Delivery {
    /// A delivery with default settings and `store_url` (see [`DeliveryConfig::store_url`]).
    pub fn new(store_url: Option<String>) -> Arc<Delivery> {
        Self::with_config(DeliveryConfig {
            store_url,
            ..DeliveryConfig::default()
        })
    }

    /// Starts the store writer and the once-a-second tick in the shared runtime.
    pub fn with_config(config: DeliveryConfig) -> Arc<Delivery> {
        let rules = Rules {
            default_target: config
                .default_target_duration
                .max(Duration::from_millis(10)),
            leave_after: config.leave_after.clamp(1.0, 1000.0),
            stall_after: config.stall_after.clamp(1.0, 1000.0),
        };
        let store = Arc::new(db::StoreSlot::new(
            config.store_url.clone().unwrap_or_default(),
        ));
        let (writes, rx) = mpsc::channel(WRITE_QUEUE);
        let delivery = Arc::new(Delivery {
            config,
            rules,
            streams: Mutex::new(Streams::default()),
            feeds: Mutex::new(HashMap::new()),
            writes,
            store: store.clone(),
            write_dropped: AtomicU64::new(0),
        });
        let rt = rtai_core::runtime::runtime();
        rt.spawn(db::run_writer(store, rx));
        rt.spawn(tick(Arc::downgrade(&delivery)));
        delivery
    }

    pub fn config(&self) -> &DeliveryConfig {
        &self.config
    }

    /// `/api/streams…`, `/ws/streams/{stream}`, `/metrics`, `/ops`.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        http::router(self.clone())
    }

    /// Waits until everything reported so far is in the store (or the store
    /// failed); at most `timeout`.
    pub async fn flush(&self, timeout: Duration) -> Result<(), String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.writes
            .send(db::Write::Flush(tx))
            .await
            .map_err(|_| "the store writer stopped".to_string())?;
        tokio::time::timeout(timeout, rx)
            .await
            .map_err(|_| "the store did not catch up in time".to_string())?
            .map_err(|_| "the store writer stopped".to_string())?
    }

    /// The store's backend (`sqlite`, `postgresql`) once open, or why it failed.
    pub async fn store_backend(&self) -> Result<&'static str, String> {
        self.store.get().await.map(|db| db.backend_name())
    }

    fn now(&self) -> (Instant, i64) {
        (Instant::now(), now_ms())
    }

    /// Hands changes to the store and the live feeds.
    fn dispatch(&self, changes: Vec<Change>) {
        for change in changes {
            if let Some(msg) = http::feed_message(&change) {
                self.publish(change.stream(), msg);
            }
            if self.writes.try_send(db::Write::Change(change)).is_err() {
                self.write_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn publish(&self, stream: &str, msg: serde_json::Value) {
        let feeds = self.feeds.lock().unwrap();
        if let Some(tx) = feeds.get(stream) {
            let _ = tx.send(Arc::from(msg.to_string()));
        }
    }

    pub(crate) fn subscribe(&self, stream: &str) -> broadcast::Receiver<Arc<str>> {
        let mut feeds = self.feeds.lock().unwrap();
        feeds.retain(|_, tx| tx.receiver_count() > 0);
        feeds
            .entry(stream.to_string())
            .or_insert_with(|| broadcast::channel(FEED_BACKLOG).0)
            .subscribe()
    }

    /// The state after ending sessions that went quiet, for a read.
    pub(crate) fn with_streams<R>(&self, f: impl FnOnce(&Streams, Instant, &Rules) -> R) -> R {
        let (now, now_ms) = self.now();
        let mut changes = Vec::new();
        let r = {
            let mut streams = self.streams.lock().unwrap();
            streams.sweep(&self.rules, now, now_ms, &mut changes);
            f(&streams, now, &self.rules)
        };
        self.dispatch(changes);
        r
    }

    fn update(&self, f: impl FnOnce(&mut Streams, Instant, i64, &mut Vec<Change>)) {
        let (now, now_ms) = self.now();
        let mut changes = Vec::new();
        {
            let mut streams = self.streams.lock().unwrap();
            f(&mut streams, now, now_ms, &mut changes);
        }
        self.dispatch(changes);
    }

    pub fn stream_started(
        &self,
        stream: &str,
        renditions: Vec<RenditionInfo>,
        publisher: Option<String>,
    ) {
        if !state::valid_name(stream) {
            gst::warning!(
                CAT,
                "stream name {:?} not tracked (1-64 of A-Z a-z 0-9 _ - .)",
                stream.chars().take(80).collect::<String>()
            );
        }
        self.update(|s, now, ms, out| {
            s.stream_started(stream, renditions, publisher, now, ms, out)
        });
    }

    pub fn stream_ended(&self, stream: &str, end: StreamEnd) {
        let status = match end {
            StreamEnd::Ended => Status::Ended,
            StreamEnd::Error(e) => Status::Error(e),
        };
        self.update(|s, _, ms, out| {
            s.stream_ended(stream, status, ms, out);
        });
    }

    /// Bytes of input received (e.g. from the RTMP publisher).
    pub fn ingress_bytes(&self, stream: &str, n: u64) {
        self.update(|s, now, ms, _| s.ingress_bytes(stream, n, now, ms));
    }

    pub fn segment_written(&self, stream: &str, rendition: &str, duration: Duration, bytes: u64) {
        self.update(|s, now, ms, _| s.segment_written(stream, rendition, duration, bytes, now, ms));
    }

    pub fn encoder_fps(&self, stream: &str, rendition: &str, fps: f64) {
        self.update(|s, now, ms, _| s.encoder_fps(stream, rendition, fps, now, ms));
    }

    /// A new playback session (the master playlist was requested without a
    /// session id); the id to put in the master playlist's URLs: 32 lowercase
    /// hex digits, or empty when the stream is unknown or has too many sessions.
    pub fn new_session(&self, stream: &str, remote: Option<SocketAddr>) -> String {
        let mut id = String::new();
        self.update(|s, now, ms, out| id = s.new_session(stream, remote, now, ms, out));
        id
    }

    /// The player of `session` closed (the watch page's `pagehide` beacon):
    /// the session leaves now (reason `closed`) instead of after
    /// `leave_after` target durations of silence. Its requests still in
    /// flight are then counted without a session.
    pub fn leave_session(&self, stream: &str, session: &str) -> Result<(), state::LeaveError> {
        let mut r = Err(state::LeaveError::NoStream);
        self.update(|s, now, ms, out| r = s.leave(stream, session, now, ms, out));
        r
    }

    /// A media request served (playlist, segment, part, init segment) with
    /// `bytes` of body. An unknown but well-formed session id joins again.
    pub fn media_request(
        &self,
        stream: &str,
        session: Option<&str>,
        rendition: Option<&str>,
        bytes: u64,
    ) {
        let rules = self.rules;
        self.update(|s, now, ms, out| {
            s.media_request(stream, session, rendition, bytes, &rules, now, ms, out)
        });
    }

    /// A media request answered with an error status (4xx/5xx): counted in
    /// the error rate.
    pub fn request_failed(
        &self,
        stream: &str,
        _session: Option<&str>,
        rendition: Option<&str>,
        status: u16,
    ) {
        gst::trace!(CAT, "request of {stream} failed with {status}");
        self.update(|s, _, _, _| s.request_failed(stream, rendition));
    }
}

/// Once a second: sessions that went quiet leave, rates are computed, a
/// metrics row per stream goes to the store and a `stats` message to the feed.
async fn tick(delivery: Weak<Delivery>) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        interval.tick().await;
        let Some(d) = delivery.upgrade() else {
            return;
        };
        n += 1;
        let (now, now_ms) = d.now();
        let mut changes = Vec::new();
        let stats: Vec<(String, serde_json::Value)> = {
            let mut streams = d.streams.lock().unwrap();
            streams.sweep(&d.rules, now, now_ms, &mut changes);
            streams.tick(
                now,
                now_ms,
                n.is_multiple_of(SESSION_FLUSH_TICKS),
                &mut changes,
            );
            streams
                .map
                .values()
                .map(|s| (s.name.clone(), s.stats_message(now, now_ms, &d.rules)))
                .collect()
        };
        d.dispatch(changes);
        for (stream, msg) in stats {
            d.publish(&stream, msg);
        }
    }
}
