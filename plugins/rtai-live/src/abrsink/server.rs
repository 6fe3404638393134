//! abrsink's HTTP server on the shared tokio runtime: HLS (multivariant and
//! media playlists, init segments, segments, LL-HLS parts with blocking reload),
//! DASH (MPD over the same segments), a player page and its hls.js/dash.js, plus
//! the routes of [`crate::delivery::Delivery`] (sessions, API, WebSocket, metrics).
//!
//! Every abrsink in a process with the same `listen` address shares one server
//! (a registry keyed by the bound address, as rtmpserversrc shares its RTMP
//! listener); each registers its stream name there.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use tokio::sync::watch;

use super::store::{self, StreamMedia};
use crate::delivery::{Delivery, DeliveryConfig};

/// Longest query string accepted (session ids and LL-HLS directives are short).
pub const MAX_QUERY: usize = 512;
/// How long a request may wait for media that is about to exist (a master
/// playlist before the first segments, a blocking playlist reload, a preload hint).
const MAX_WAIT_MASTER: Duration = Duration::from_secs(15);

const PLAYER: &str = include_str!("player.html");

pub struct Server {
    pub addr: SocketAddr,
    streams: Mutex<HashMap<String, Arc<StreamMedia>>>,
    pub delivery: Arc<Delivery>,
    _closing: watch::Sender<bool>,
}

static SERVERS: LazyLock<Mutex<HashMap<SocketAddr, Weak<Server>>>> =
    LazyLock::new(Default::default);

/// A stream's place on a server; dropping it removes the stream (its URLs then
/// answer 404) and stops the server if it was the last.
pub struct Registration {
    pub server: Arc<Server>,
    stream: String,
    /// The previous publisher's ended stream, still served (ENDLIST, static
    /// MPD) under its name until the next change of name or the element stops.
    retired: Option<String>,
}

impl Registration {
    /// Serves the same media under `to` instead (before it started: an
    /// upstream rtmpserversrc's publish name); an error if `to` is taken.
    pub fn rename(&mut self, to: &str) -> Result<(), String> {
        if !valid_name(to) {
            return Err(format!(
                "invalid stream name {to:?}: 1 to 64 of A-Z a-z 0-9 _ -"
            ));
        }
        let mut streams = self.server.streams.lock().unwrap();
        if streams.contains_key(to) {
            return Err(format!(
                "stream {to:?} is already served on {}",
                self.server.addr
            ));
        }
        if let Some(media) = streams.remove(&self.stream) {
            streams.insert(to.to_string(), media);
        }
        self.stream = to.to_string();
        Ok(())
    }
}

impl Registration {
    /// Serves `media` (a new publisher) under its own name; the current stream
    /// stays served, ended, under its name (the one kept before is dropped).
    pub fn replace(&mut self, media: Arc<StreamMedia>) -> Result<(), String> {
        let to = media.name.clone();
        if !valid_name(&to) {
            return Err(format!(
                "invalid stream name {to:?}: 1 to 64 of A-Z a-z 0-9 _ -"
            ));
        }
        let mut streams = self.server.streams.lock().unwrap();
        if streams.contains_key(&to) && self.retired.as_deref() != Some(to.as_str()) {
            return Err(format!(
                "stream {to:?} is already served on {}",
                self.server.addr
            ));
        }
        if let Some(old) = self.retired.take() {
            streams.remove(&old);
        }
        streams.insert(to.clone(), media);
        self.retired = Some(std::mem::replace(&mut self.stream, to));
        Ok(())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut streams = self.server.streams.lock().unwrap();
        streams.remove(&self.stream);
        if let Some(old) = &self.retired {
            streams.remove(old);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let mut reg = SERVERS.lock().unwrap();
        if reg.get(&self.addr).is_some_and(|w| w.strong_count() == 0) {
            reg.remove(&self.addr);
        }
    }
}

/// Stream and rendition names: 1..=64 of `[A-Za-z0-9_-]` (nothing else reaches a lookup).
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Registers `media` under its name on the server for `listen` (bound now if
/// none runs there; port 0 always binds a new one).
pub fn register(
    listen: &str,
    media: Arc<StreamMedia>,
    config: DeliveryConfig,
) -> Result<Registration, String> {
    let addr = std::net::ToSocketAddrs::to_socket_addrs(listen)
        .map_err(|e| format!("invalid listen address {listen:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("listen address {listen:?} resolves to nothing"))?;
    let mut reg = SERVERS.lock().unwrap();
    let existing = (addr.port() != 0)
        .then(|| reg.get(&addr).and_then(Weak::upgrade))
        .flatten();
    let server = match existing {
        Some(s) => {
            shares_config(&s, &config)?;
            s
        }
        None => {
            let server = start(addr, config)?;
            reg.insert(server.addr, Arc::downgrade(&server));
            server
        }
    };
    drop(reg);
    let mut streams = server.streams.lock().unwrap();
    if streams.contains_key(&media.name) {
        return Err(format!(
            "stream {:?} is already served on {}",
            media.name, server.addr
        ));
    }
    let stream = media.name.clone();
    streams.insert(stream.clone(), media);
    drop(streams);
    Ok(Registration {
        server,
        stream,
        retired: None,
    })
}

/// A second abrsink on a running server keeps that server's store and token:
/// leaving `database`/`auth-token` unset inherits them, setting another value
/// is an error (a token set on a server running without one would protect nothing).
fn shares_config(server: &Server, config: &DeliveryConfig) -> Result<(), String> {
    let running = server.delivery.config();
    if config.store_url.is_some() && config.store_url != running.store_url {
        return Err(format!(
            "the HTTP server on {} already keeps its history in another database \
             (every abrsink sharing a listen address must set the same database, or none)",
            server.addr
        ));
    }
    if config.auth_token.is_some() && config.auth_token != running.auth_token {
        return Err(format!(
            "the HTTP server on {} already runs with another auth-token \
             (every abrsink sharing a listen address must set the same auth-token, or none)",
            server.addr
        ));
    }
    Ok(())
}

fn start(addr: SocketAddr, config: DeliveryConfig) -> Result<Arc<Server>, String> {
    let std_listener =
        std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = std_listener
        .local_addr()
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let rt = rtai_core::runtime::runtime();
    let _guard = rt.enter();
    let listener = tokio::net::TcpListener::from_std(std_listener)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let delivery = Delivery::with_config(config);
    let (closing, mut closing_rx) = watch::channel(false);
    let server = Arc::new(Server {
        addr: bound,
        streams: Mutex::new(HashMap::new()),
        delivery: delivery.clone(),
        _closing: closing,
    });
    let app = Router::new()
        .route("/hls/{stream}/master.m3u8", get(master))
        .route("/hls/{stream}/{rendition}/{file}", get(media_file))
        .route("/dash/{stream}/manifest.mpd", get(manifest))
        .route("/dash/{stream}/{rendition}/{file}", get(media_file))
        .route("/watch/{stream}", get(watch_page))
        .route("/static/{file}", get(static_file))
        .with_state(Arc::downgrade(&server))
        .merge(delivery.router())
        .layer(middleware::from_fn(guard));
    rt.spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = closing_rx.wait_for(|c| *c).await;
        })
        .await;
    });
    Ok(server)
}

/// Bounded query strings, CORS for players (and its preflight).
async fn guard(req: Request, next: Next) -> Response {
    if req.uri().query().is_some_and(|q| q.len() > MAX_QUERY) {
        return cors(
            (
                StatusCode::URI_TOO_LONG,
                format!("query strings are limited to {MAX_QUERY} bytes"),
            )
                .into_response(),
        );
    }
    if req.method() == Method::OPTIONS {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("*"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        return cors(r);
    }
    cors(next.run(req).await)
}

fn cors(mut r: Response) -> Response {
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}

type Q = Query<HashMap<String, String>>;
type Srv = State<Weak<Server>>;

fn session_of(q: &HashMap<String, String>) -> Option<&str> {
    q.get("session")
        .map(String::as_str)
        .filter(|s| valid_name(s))
}

impl Server {
    fn stream(&self, name: &str) -> Option<Arc<StreamMedia>> {
        if !valid_name(name) {
            return None;
        }
        self.streams.lock().unwrap().get(name).cloned()
    }
}

fn error(status: StatusCode, text: &'static str) -> Response {
    (status, text).into_response()
}

fn body(content_type: &'static str, cache: &'static str, data: impl Into<Body>) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, cache),
        ],
        data.into(),
    )
        .into_response()
}

const NO_CACHE: &str = "no-cache";
const LONG_CACHE: &str = "public, max-age=86400";
const M3U8: &str = "application/vnd.apple.mpegurl";

/// Waits until `ready` holds for the stream's media or `wait` passes.
async fn wait_until(
    media: &StreamMedia,
    wait: Duration,
    mut ready: impl FnMut(&store::Inner) -> bool,
) -> bool {
    let mut rx = media.subscribe();
    let deadline = Instant::now() + wait;
    loop {
        {
            let inner = media.inner.lock().unwrap();
            if ready(&inner) {
                return true;
            }
            if inner.ended {
                return false;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
            return false;
        }
    }
}

async fn master(
    State(server): Srv,
    Path(stream): Path<String>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Query(q): Q,
) -> Response {
    let Some(server) = server.upgrade() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "server stopping");
    };
    let Some(media) = server.stream(&stream) else {
        return error(StatusCode::NOT_FOUND, "no such stream");
    };
    let ready = wait_until(&media, MAX_WAIT_MASTER, |i| {
        store::master_playlist(i, None).is_some()
    })
    .await;
    let session = match session_of(&q) {
        Some(s) => s.to_string(),
        None => server.delivery.new_session(&stream, Some(remote)),
    };
    let session = Some(session.as_str()).filter(|s| valid_name(s));
    let text = {
        let inner = media.inner.lock().unwrap();
        store::master_playlist(&inner, session)
    };
    match (ready, text) {
        (_, Some(text)) => {
            server
                .delivery
                .media_request(&stream, session, None, text.len() as u64);
            body(M3U8, NO_CACHE, text)
        }
        _ => {
            server.delivery.request_failed(&stream, session, None, 503);
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the stream has no media yet",
            )
        }
    }
}

async fn manifest(
    State(server): Srv,
    Path(stream): Path<String>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Query(q): Q,
) -> Response {
    let Some(server) = server.upgrade() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "server stopping");
    };
    let Some(media) = server.stream(&stream) else {
        return error(StatusCode::NOT_FOUND, "no such stream");
    };
    if !media.cfg.dash {
        return error(
            StatusCode::NOT_FOUND,
            "DASH is off for this stream (dash=false)",
        );
    }
    wait_until(&media, MAX_WAIT_MASTER, |i| {
        store::master_playlist(i, None).is_some()
    })
    .await;
    // As the master playlist: the first request gets a session id, which the
    // MPD's segment templates and Location (its refreshes) carry.
    let session = match session_of(&q) {
        Some(s) => s.to_string(),
        None => server.delivery.new_session(&stream, Some(remote)),
    };
    let session = Some(session.as_str()).filter(|s| valid_name(s));
    let text = {
        let inner = media.inner.lock().unwrap();
        store::mpd(&inner, &media.cfg, SystemTime::now(), session)
    };
    match text {
        Some(text) => {
            server
                .delivery
                .media_request(&stream, session, None, text.len() as u64);
            body("application/dash+xml", NO_CACHE, text)
        }
        None => {
            server.delivery.request_failed(&stream, session, None, 503);
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the stream has no media yet",
            )
        }
    }
}

/// What a rendition URL names.
#[derive(Debug, PartialEq, Eq)]
pub enum File {
    Playlist,
    Init,
    Segment(u64),
    Part(u64, usize),
}

fn number<T: std::str::FromStr>(s: &str) -> Option<T> {
    (!s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// `index.m3u8`, `init.mp4`, `seg<N>.m4s`, `part<N>.<I>.m4s`; nothing else.
pub fn parse_file(file: &str) -> Option<File> {
    match file {
        "index.m3u8" => return Some(File::Playlist),
        "init.mp4" => return Some(File::Init),
        _ => {}
    }
    let stem = file.strip_suffix(".m4s")?;
    if let Some(n) = stem.strip_prefix("seg") {
        return number(n).map(File::Segment);
    }
    let (n, i) = stem.strip_prefix("part")?.split_once('.')?;
    Some(File::Part(number(n)?, number(i)?))
}

async fn media_file(
    State(server): Srv,
    Path((stream, rendition, file)): Path<(String, String, String)>,
    Query(q): Q,
) -> Response {
    let Some(server) = server.upgrade() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "server stopping");
    };
    let Some(media) = server.stream(&stream) else {
        return error(StatusCode::NOT_FOUND, "no such stream");
    };
    let session = session_of(&q);
    let Some(file) = parse_file(&file).filter(|_| valid_name(&rendition)) else {
        server.delivery.request_failed(&stream, session, None, 404);
        return error(StatusCode::NOT_FOUND, "no such file");
    };
    // Before the input's caps the video renditions do not exist yet: wait for them.
    wait_until(&media, MAX_WAIT_MASTER, |i| {
        i.renditions
            .iter()
            .any(|r| matches!(r.kind, store::Kind::Video { .. }))
    })
    .await;
    let is_video = {
        let inner = media.inner.lock().unwrap();
        inner
            .renditions
            .iter()
            .find(|r| r.name == rendition)
            .map(|r| matches!(r.kind, store::Kind::Video { .. }))
    };
    let Some(is_video) = is_video else {
        server.delivery.request_failed(&stream, session, None, 404);
        return error(StatusCode::NOT_FOUND, "no such rendition");
    };
    let response = serve_file(&media, &rendition, file, &q, session, is_video).await;
    let status = response.status();
    if status.is_success() {
        let bytes = axum::body::HttpBody::size_hint(response.body())
            .exact()
            .unwrap_or(0);
        server
            .delivery
            .media_request(&stream, session, Some(&rendition), bytes);
    } else {
        server
            .delivery
            .request_failed(&stream, session, Some(&rendition), status.as_u16());
    }
    response
}

/// The blocking wait of LL-HLS: about three target durations.
fn block_limit(media: &StreamMedia) -> Duration {
    media.cfg.segment_duration * 3 + Duration::from_millis(500)
}

async fn serve_file(
    media: &StreamMedia,
    rendition: &str,
    file: File,
    q: &HashMap<String, String>,
    session: Option<&str>,
    is_video: bool,
) -> Response {
    let find = |inner: &store::Inner| -> Option<usize> {
        inner.renditions.iter().position(|r| r.name == rendition)
    };
    match file {
        File::Playlist => {
            let msn = match q.get("_HLS_msn").map(|v| number::<u64>(v)) {
                None => None,
                Some(Some(n)) => Some(n),
                Some(None) => return error(StatusCode::BAD_REQUEST, "bad _HLS_msn"),
            };
            let part = match q.get("_HLS_part").map(|v| number::<usize>(v)) {
                None => None,
                Some(Some(n)) => Some(n),
                Some(None) => return error(StatusCode::BAD_REQUEST, "bad _HLS_part"),
            };
            if part.is_some() && msn.is_none() {
                return error(StatusCode::BAD_REQUEST, "_HLS_part needs _HLS_msn");
            }
            if let Some(msn) = msn.filter(|_| media.cfg.low_latency) {
                let too_far = {
                    let inner = media.inner.lock().unwrap();
                    find(&inner)
                        .map(|i| msn > inner.renditions[i].next_msn() + 2)
                        .unwrap_or(true)
                };
                if too_far {
                    return error(StatusCode::BAD_REQUEST, "_HLS_msn is too far ahead");
                }
                wait_until(media, block_limit(media), |inner| {
                    find(inner).is_some_and(|i| inner.renditions[i].has(msn, part))
                })
                .await;
            } else {
                // The first playlist of a stream: wait for its first segment.
                wait_until(media, MAX_WAIT_MASTER, |inner| {
                    find(inner).is_some_and(|i| !inner.renditions[i].segments.is_empty())
                })
                .await;
            }
            let inner = media.inner.lock().unwrap();
            let Some(i) = find(&inner) else {
                return error(StatusCode::NOT_FOUND, "no such rendition");
            };
            let text =
                store::media_playlist(&inner.renditions[i], &media.cfg, inner.ended, session);
            body(M3U8, NO_CACHE, text)
        }
        File::Init => {
            wait_until(media, MAX_WAIT_MASTER, |inner| {
                find(inner).is_some_and(|i| inner.renditions[i].init.is_some())
            })
            .await;
            let inner = media.inner.lock().unwrap();
            match find(&inner).and_then(|i| inner.renditions[i].init.clone()) {
                Some(init) => body(
                    if is_video { "video/mp4" } else { "audio/mp4" },
                    LONG_CACHE,
                    init,
                ),
                None => error(StatusCode::NOT_FOUND, "no init segment yet"),
            }
        }
        File::Segment(seq) => match media.segment(rendition, seq) {
            Some(data) => body(segment_type(is_video), LONG_CACHE, data),
            None => error(StatusCode::NOT_FOUND, "no such segment"),
        },
        File::Part(seq, idx) => {
            if !media.cfg.low_latency {
                return error(StatusCode::NOT_FOUND, "parts need low-latency=true");
            }
            // A preload hint (the next part) is answered when it exists.
            let expected = {
                let inner = media.inner.lock().unwrap();
                find(&inner).is_some_and(|i| {
                    let r = &inner.renditions[i];
                    (seq == r.next_msn() && idx <= 20) || (seq == r.next_msn() + 1 && idx == 0)
                })
            };
            if expected {
                wait_until(media, block_limit(media), |inner| {
                    find(inner).is_some_and(|i| inner.renditions[i].part(seq, idx).is_some())
                })
                .await;
            }
            let inner = media.inner.lock().unwrap();
            match find(&inner).and_then(|i| inner.renditions[i].part(seq, idx)) {
                Some(data) => body(segment_type(is_video), LONG_CACHE, data),
                None => error(StatusCode::NOT_FOUND, "no such part"),
            }
        }
    }
}

fn segment_type(is_video: bool) -> &'static str {
    if is_video {
        "video/iso.segment"
    } else {
        "audio/iso.segment"
    }
}

async fn watch_page(State(server): Srv, Path(stream): Path<String>) -> Response {
    let Some(server) = server.upgrade() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "server stopping");
    };
    if server.stream(&stream).is_none() {
        return error(StatusCode::NOT_FOUND, "no such stream");
    }
    body(
        "text/html; charset=utf-8",
        NO_CACHE,
        PLAYER.replace("__STREAM__", &stream),
    )
}

/// Where hls.js and dash.js are read from: `$RTAI_PLAYER_JS_DIR` (a
/// node_modules directory), else the one scripts/setup.sh installs for the tests.
fn js_path(file: &str) -> Option<PathBuf> {
    let rel = match file {
        "hls.min.js" => "hls.js/dist/hls.min.js",
        "dash.all.min.js" => "dashjs/dist/dash.all.min.js",
        _ => return None,
    };
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("RTAI_PLAYER_JS_DIR") {
        dirs.push(d.into());
    }
    dirs.push(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/player/node_modules").into());
    dirs.into_iter().map(|d| d.join(rel)).find(|p| p.is_file())
}

async fn static_file(Path(file): Path<String>) -> Response {
    static CACHE: OnceLock<Mutex<HashMap<String, Bytes>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(b) = cache.lock().unwrap().get(&file) {
        return body("text/javascript", LONG_CACHE, b.clone());
    }
    let Some(path) = js_path(&file) else {
        return error(
            StatusCode::NOT_FOUND,
            "no such file (hls.js/dash.js: set RTAI_PLAYER_JS_DIR to a node_modules directory)",
        );
    };
    // Read once (then cached): a few hundred KiB.
    match std::fs::read(&path) {
        Ok(data) => {
            let b = Bytes::from(data);
            cache.lock().unwrap().insert(file, b.clone());
            body("text/javascript", LONG_CACHE, b)
        }
        Err(_) => error(StatusCode::NOT_FOUND, "cannot read the player script"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn file_names() {
        assert_eq!(parse_file("index.m3u8"), Some(File::Playlist));
        assert_eq!(parse_file("seg12.m4s"), Some(File::Segment(12)));
        assert_eq!(parse_file("part3.4.m4s"), Some(File::Part(3, 4)));
        assert_eq!(parse_file("seg-1.m4s"), None);
        assert_eq!(parse_file("seg+1.m4s"), None);
        assert_eq!(parse_file("../init.mp4"), None);
        assert_eq!(parse_file("seg99999999999999999999.m4s"), None);
        assert!(!valid_name(".."));
        assert!(!valid_name("a/b"));
        assert!(valid_name("cam_1-x"));
    }

    proptest! {
        #[test]
        fn names_never_panic(s in ".{0,100}") {
            let _ = parse_file(&s);
            if valid_name(&s) {
                prop_assert!(!s.contains('.') && !s.contains('/'));
            }
        }
    }
}
