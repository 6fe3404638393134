//! The HTTP server of `analyticssink` (and of `latencymetrics` alone with its
//! `listen` parameter): `/metrics`, `/healthz`, `/api/events`,
//! `/api/events/stream` (SSE), `/api/latency`, `/api/summary` and the embedded
//! dashboard at `/`.
//!
//! It depends on the store, the event data, the metrics registry and two small
//! interfaces ([`Reporter`] for its warnings, [`LatencySource`] for
//! `/api/latency`), not on the element or the tracer.
//!
//! Exposure: without `auth-token`, a bind beyond loopback is warned about, and
//! every request must name this server in its Host header as a local client
//! does (`127.0.0.1`, `localhost`, `[::1]` or the bound address, with the bound
//! port): a web page whose name an attacker re-points at 127.0.0.1 (DNS
//! rebinding) sends its own name and gets 403.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use tokio::sync::{broadcast, watch};
use tokio_stream::wrappers::BroadcastStream;

use crate::metrics::{CONTENT_TYPE, METRICS};

// Shared by analyticssink's server and the latencymetrics tracer's `/metrics`.
static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "rtaianalyticshttp",
        gst::DebugColorFlags::empty(),
        Some("rtai analytics HTTP server"),
    )
});
use crate::event::EventKind;
use crate::report::Reporter;
use crate::store::{EventFilter, Store};

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");
const STYLESHEET_LINK: &str = r#"<link rel="stylesheet" href="style.css">"#;
const SCRIPT_TAG: &str = r#"<script src="app.js"></script>"#;

/// `/` with the script and style inlined: with `auth-token` set, the browser's
/// own requests for `app.js`/`style.css` would carry no token and get 401, and
/// the page is the one request that holds it (`?access_token=`).
static DASHBOARD_PAGE: LazyLock<String> = LazyLock::new(|| {
    INDEX_HTML
        .replacen(STYLESHEET_LINK, &format!("<style>\n{STYLE_CSS}</style>"), 1)
        .replacen(SCRIPT_TAG, &format!("<script>\n{APP_JS}</script>"), 1)
});

/// Largest page `/api/events` returns.
pub const MAX_PAGE: u32 = 1000;
const DEFAULT_PAGE: u32 = 100;
pub use rtai_core::http_auth::MAX_QUERY_LEN;
/// Longest filter value (`stream`, `source`).
pub const MAX_FILTER_LEN: usize = 256;

/// Per-pad latencies for `/api/latency` (the `latencymetrics` tracer provides them).
pub trait LatencySource: Send + Sync + 'static {
    fn pads(&self) -> serde_json::Value;
}

/// Totals the dashboard shows next to the live feed.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Summary {
    pub detections_per_class: std::collections::BTreeMap<String, u64>,
    pub events_per_type: std::collections::BTreeMap<String, u64>,
    /// The latest clip markers (newest last), at most [`Summary::MAX_CLIPS`].
    pub clip_markers: std::collections::VecDeque<serde_json::Value>,
    /// Clip files recorded to a local directory (cliprecorder's `rtai-clip-recorded`),
    /// by file name, served under `/clips/{name}`: only names listed here are served.
    #[serde(skip)]
    pub clip_files: std::collections::BTreeMap<String, std::path::PathBuf>,
}

impl Summary {
    pub const MAX_CLIPS: usize = 50;
}

/// What an `analyticssink` serves besides `/metrics`.
pub struct SinkApi {
    pub element: String,
    pub pipeline: String,
    pub store: Store,
    pub live: broadcast::Sender<Arc<str>>,
    pub summary: Arc<Mutex<Summary>>,
    /// Control messages over SSE (`rtai_core::control_http`), under `/api/control`.
    pub control: Option<Arc<rtai_core::control_http::ControlHub>>,
}

#[derive(Clone)]
pub struct AppState {
    sink: Option<Arc<SinkApi>>,
    token: Option<Arc<str>>,
    latency: Option<Arc<dyn LatencySource>>,
    closing: watch::Receiver<bool>,
    /// The bound address, for the Host check (set by [`Server::start`]).
    bound: SocketAddr,
}

impl AppState {
    /// Only `/metrics`, `/healthz` and `/api/latency` (the tracer's own server).
    pub fn metrics_only(latency: Option<Arc<dyn LatencySource>>) -> Self {
        Self {
            sink: None,
            token: None,
            latency,
            closing: watch::channel(false).1,
            bound: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }

    pub fn sink(
        api: Arc<SinkApi>,
        token: Option<String>,
        latency: Option<Arc<dyn LatencySource>>,
    ) -> Self {
        Self {
            sink: Some(api),
            token: token.filter(|t| !t.is_empty()).map(Arc::from),
            latency,
            closing: watch::channel(false).1,
            bound: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

pub use rtai_core::http_auth::{exposed, host_allowed};

/// A running server; stopped when dropped.
pub struct Server {
    addr: SocketAddr,
    closing: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Binds `listen` (host:port; port 0 picks a free one) and serves in the
    /// shared runtime. A bind beyond loopback without a token is a warning to `reporter`.
    pub fn start(
        listen: &str,
        mut state: AppState,
        reporter: &dyn Reporter,
    ) -> Result<Self, String> {
        let std_listener = std::net::TcpListener::bind(listen)
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| e.to_string())?;
        let addr = std_listener.local_addr().map_err(|e| e.to_string())?;
        if exposed(&addr, state.token.is_some()) {
            reporter.warning(&format!(
                "the HTTP server on {addr} is reachable beyond this host without a token: \
                 anyone who can connect reads the events and metrics. Set auth-token (and \
                 put TLS in front), or listen on 127.0.0.1. Requests are only answered for \
                 address literals and localhost in the Host header (DNS rebinding)"
            ));
        }
        state.bound = addr;
        let rt = rtai_core::runtime::runtime();
        let _guard = rt.enter();
        let listener =
            tokio::net::TcpListener::from_std(std_listener).map_err(|e| e.to_string())?;
        let (closing, closing_rx) = watch::channel(false);
        state.closing = closing_rx.clone();
        let app = router(state);
        let mut shutdown_rx = closing_rx;
        let task = rt.spawn(async move {
            let serve = axum::serve(
                listener,
                // The client address: the control routes rate-limit per client.
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = shutdown_rx.wait_for(|c| *c).await;
            });
            if let Err(err) = serve.await {
                gst::warning!(CAT, "HTTP server on {addr} stopped: {err}");
            }
        });
        Ok(Self {
            addr,
            closing,
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.closing.send(true);
        if let Some(task) = self.task.take() {
            // Live feeds end on `closing`; a client that keeps a request open
            // longer than this is cut off.
            rtai_core::runtime::runtime().spawn(async move {
                let abort = task.abort_handle();
                if tokio::time::timeout(Duration::from_secs(2), task)
                    .await
                    .is_err()
                {
                    abort.abort();
                }
            });
        }
    }
}

fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/", get(index))
        .route(
            "/app.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    APP_JS,
                )
            }),
        )
        .route(
            "/style.css",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                    STYLE_CSS,
                )
            }),
        )
        .route("/api/events", get(events))
        .route("/api/events/stream", get(events_stream))
        .route("/api/latency", get(latency))
        .route("/api/summary", get(summary))
        .route("/clips/{name}", get(clip_file));
    let protected = match state.sink.as_ref().and_then(|s| s.control.as_ref()) {
        Some(hub) => protected.merge(hub.router()),
        None => protected,
    }
    .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .merge(protected)
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .layer(middleware::from_fn_with_state(state.clone(), check_host))
        .with_state(state)
}

/// Without a token, only requests naming this server as a local client does
/// ([`host_allowed`]) are served.
async fn check_host(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.token.is_none() {
        let host = request
            .headers()
            .get(header::HOST)
            .map(|h| h.to_str().unwrap_or("\u{fffd}"));
        match host {
            None => {
                return (StatusCode::BAD_REQUEST, "a Host header is required\n").into_response();
            }
            Some(host) if !host_allowed(host, state.bound) => {
                gst::debug!(CAT, "refused a request for Host {host:?} (no token set)");
                return (
                    StatusCode::FORBIDDEN,
                    "this server answers requests for 127.0.0.1, localhost and [::1] with its port only \
                     (set auth-token to serve other names)\n",
                )
                    .into_response();
            }
            Some(_) => {}
        }
    }
    next.run(request).await
}

/// The bearer token of a request (`rtai_core::http_auth::presented_token`).
pub fn presented_token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    rtai_core::http_auth::presented_token(authorization, query)
}

async fn auth(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let presented = presented_token(request.headers(), request.uri().query());
        if !rtai_core::http_auth::token_matches(token, presented.as_deref()) {
            let mut resp = (
                StatusCode::UNAUTHORIZED,
                "a bearer token is required (Authorization: Bearer …)\n",
            )
                .into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"rtai\""),
            );
            return resp;
        }
    }
    next.run(request).await
}

async fn metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], METRICS.encode())
}

/// 200 while the server runs (the element is between READY and NULL).
async fn healthz(State(state): State<AppState>) -> Response {
    let body = match &state.sink {
        Some(sink) => serde_json::json!({
            "status": "ok",
            "element": sink.element,
            "pipeline": sink.pipeline,
        }),
        None => serde_json::json!({ "status": "ok" }),
    };
    axum::Json(body).into_response()
}

async fn index(State(state): State<AppState>) -> Response {
    if state.sink.is_none() {
        return (StatusCode::NOT_FOUND, "only /metrics is served here\n").into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        DASHBOARD_PAGE.as_str(),
    )
        .into_response()
}

fn bad_request(msg: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(serde_json::json!({ "error": msg.into() })),
    )
        .into_response()
}

/// The parameters of `/api/events`, parsed from its raw query string:
/// `type`, `stream`, `source`, `since`, `until` (event time, ms since the Unix
/// epoch, inclusive), `limit`, `offset`, `order` (`asc`, the default, or
/// `desc`) and `access_token` (checked by the auth layer). Each at most once;
/// the error is the message of a 400 reply.
pub fn parse_events_query(raw: Option<&str>) -> Result<EventFilter, String> {
    let raw = raw.unwrap_or("");
    if raw.len() > MAX_QUERY_LEN {
        return Err(format!("query longer than {MAX_QUERY_LEN} bytes"));
    }
    let mut f = EventFilter {
        limit: DEFAULT_PAGE,
        ..EventFilter::default()
    };
    let mut seen: Vec<String> = Vec::new();
    for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
        if seen.iter().any(|k| *k == key) {
            return Err(format!("parameter '{key}' given twice"));
        }
        let int = |what: &str| -> Result<i64, String> {
            value
                .parse::<i64>()
                .map_err(|_| format!("{what} must be an integer, not '{}'", clip(&value)))
        };
        match key.as_ref() {
            "type" => {
                f.kind = Some(EventKind::parse(&value).ok_or_else(|| {
                    format!(
                        "unknown type '{}' (one of {})",
                        clip(&value),
                        EventKind::names()
                    )
                })?)
            }
            "stream" | "source" => {
                if value.len() > MAX_FILTER_LEN {
                    return Err(format!("{key} longer than {MAX_FILTER_LEN} bytes"));
                }
                if key == "stream" {
                    f.stream = Some(value.to_string());
                } else {
                    f.source_id = Some(value.to_string());
                }
            }
            "since" => f.since_ms = Some(int("since")?),
            "until" => f.until_ms = Some(int("until")?),
            "limit" => {
                f.limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|l| (1..=MAX_PAGE).contains(l))
                    .ok_or_else(|| format!("limit must be 1..={MAX_PAGE}"))?
            }
            // The databases take a signed 64-bit OFFSET: beyond it is the client's mistake, not a 503.
            "offset" => {
                f.offset = value
                    .parse::<u64>()
                    .ok()
                    .filter(|o| *o <= i64::MAX as u64)
                    .ok_or_else(|| format!("offset must be 0..={}", i64::MAX))?
            }
            "order" => {
                f.descending = match value.as_ref() {
                    "asc" => false,
                    "desc" => true,
                    other => {
                        return Err(format!("order must be asc or desc, not '{}'", clip(other)));
                    }
                }
            }
            "access_token" => {}
            other => return Err(format!("unknown parameter '{}'", clip(other))),
        }
        seen.push(key.into_owned());
    }
    if let (Some(s), Some(u)) = (f.since_ms, f.until_ms)
        && s > u
    {
        return Err("since is after until".into());
    }
    Ok(f)
}

/// The `type` filter of `/api/events/stream` (and `access_token`).
pub fn parse_stream_query(raw: Option<&str>) -> Result<Option<EventKind>, String> {
    let raw = raw.unwrap_or("");
    if raw.len() > MAX_QUERY_LEN {
        return Err(format!("query longer than {MAX_QUERY_LEN} bytes"));
    }
    let mut kind = None;
    for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
        match key.as_ref() {
            "type" if kind.is_none() => {
                kind = Some(
                    EventKind::parse(&value)
                        .ok_or_else(|| format!("unknown type '{}'", clip(&value)))?,
                )
            }
            "access_token" => {}
            other => return Err(format!("unexpected parameter '{}'", clip(other))),
        }
    }
    Ok(kind)
}

/// At most 64 characters of what a client sent, for an error message.
fn clip(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

async fn events(State(state): State<AppState>, uri: axum::http::Uri) -> Response {
    let Some(sink) = &state.sink else {
        return (StatusCode::NOT_FOUND, "no analyticssink\n").into_response();
    };
    let filter = match parse_events_query(uri.query()) {
        Ok(f) => f,
        Err(msg) => return bad_request(msg),
    };
    match sink.store.query(&filter).await {
        Ok(page) => axum::Json(page).into_response(),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "error": err })),
        )
            .into_response(),
    }
}

async fn events_stream(State(state): State<AppState>, uri: axum::http::Uri) -> Response {
    let Some(sink) = &state.sink else {
        return (StatusCode::NOT_FOUND, "no analyticssink\n").into_response();
    };
    let kind = match parse_stream_query(uri.query()) {
        Ok(k) => k.map(|k| k.as_str().to_string()),
        Err(msg) => return bad_request(msg),
    };
    let mut closing = state.closing.clone();
    let stream = BroadcastStream::new(sink.live.subscribe())
        .filter_map(move |item| {
            let kind = kind.clone();
            async move {
                match item {
                    Ok(json) => {
                        let ty = serde_json::from_str::<serde_json::Value>(&json)
                            .ok()
                            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(String::from))
                            .unwrap_or_default();
                        if kind.as_ref().is_some_and(|k| *k != ty) {
                            return None;
                        }
                        Some(Ok::<_, Infallible>(
                            SseEvent::default().event(ty).data(json.as_ref()),
                        ))
                    }
                    // A slow client missed events: tell it, so it can re-read /api/events.
                    Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                        Some(Ok(SseEvent::default().event("lagged").data(n.to_string())))
                    }
                }
            }
        })
        .take_until(async move {
            let _ = closing.wait_for(|c| *c).await;
        });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn latency(State(state): State<AppState>) -> Response {
    let pads = state
        .latency
        .as_ref()
        .map_or(serde_json::json!([]), |l| l.pads());
    axum::Json(serde_json::json!({ "pads": pads })).into_response()
}

async fn summary(State(state): State<AppState>) -> Response {
    let Some(sink) = &state.sink else {
        return (StatusCode::NOT_FOUND, "no analyticssink\n").into_response();
    };
    let summary = sink.summary.lock().unwrap().clone();
    axum::Json(serde_json::json!({ "element": sink.element, "pipeline": sink.pipeline, "summary": summary }))
        .into_response()
}

/// Largest clip file served (bytes): clips are seconds of video.
const MAX_CLIP_BYTES: u64 = 512 * 1024 * 1024;

/// A clip recorded to a local directory, as `video/mp4`; 404 for any name that is
/// not a recorded clip's (no path is ever built from the request).
async fn clip_file(
    State(state): State<AppState>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    let Some(sink) = &state.sink else {
        return (StatusCode::NOT_FOUND, "no analyticssink\n").into_response();
    };
    let Some(path) = sink.summary.lock().unwrap().clip_files.get(&name).cloned() else {
        return (StatusCode::NOT_FOUND, "no such clip\n").into_response();
    };
    // Off the async workers: a file read blocks.
    let read = tokio::task::spawn_blocking(move || match std::fs::metadata(&path) {
        Ok(m) if m.len() <= MAX_CLIP_BYTES => {
            std::fs::read(&path).map_err(|_| StatusCode::NOT_FOUND)
        }
        Ok(_) => Err(StatusCode::PAYLOAD_TOO_LARGE),
        Err(_) => Err(StatusCode::NOT_FOUND),
    })
    .await
    .unwrap_or(Err(StatusCode::INTERNAL_SERVER_ERROR));
    match read {
        Ok(bytes) => ([(header::CONTENT_TYPE, "video/mp4")], bytes).into_response(),
        Err(code) => (code, "clip not available\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashboard_page_inlines_its_script_and_style() {
        assert!(
            INDEX_HTML.contains(STYLESHEET_LINK) && INDEX_HTML.contains(SCRIPT_TAG),
            "index.html references both files"
        );
        // The inlined texts must not end their element early.
        assert!(!APP_JS.to_ascii_lowercase().contains("</script"));
        assert!(!STYLE_CSS.to_ascii_lowercase().contains("</style"));
        let page = DASHBOARD_PAGE.as_str();
        assert!(
            !page.contains(STYLESHEET_LINK) && !page.contains(SCRIPT_TAG),
            "{page}"
        );
        assert!(page.contains(APP_JS) && page.contains(STYLE_CSS));
        assert!(
            page.find(STYLE_CSS) < page.find("<body>") && page.find(APP_JS) > page.find("</main>")
        );
    }

    #[test]
    fn the_token_comes_from_the_header_or_the_decoded_query() {
        let mut bearer = HeaderMap::new();
        bearer.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer  s3cret "),
        );
        assert_eq!(
            presented_token(&bearer, Some("access_token=other")).as_deref(),
            Some("s3cret"),
            "the header wins"
        );
        let none = HeaderMap::new();
        for (query, want) in [
            (Some("access_token=a%20b%2Bc"), Some("a b+c")),
            (Some("x=1&access_token=a+b"), Some("a b")),
            (Some("access_token="), Some("")),
            (Some("access_tokens=x&token=y"), None),
            (Some(""), None),
            (None, None),
        ] {
            assert_eq!(presented_token(&none, query).as_deref(), want, "{query:?}");
        }
    }

    #[test]
    fn query_validation_table() {
        let ok = |q: &str| parse_events_query(Some(q)).unwrap_or_else(|e| panic!("{q}: {e}"));
        let bad = |q: &str| assert!(parse_events_query(Some(q)).is_err(), "{q}");
        assert_eq!(parse_events_query(None).unwrap().limit, DEFAULT_PAGE);
        let f = ok("type=speech&limit=10&since=1&until=2&stream=sink_0&source=p%2Fcam&order=desc");
        assert_eq!(
            (f.kind, f.limit, f.since_ms, f.until_ms, f.descending),
            (Some(EventKind::Speech), 10, Some(1), Some(2), true)
        );
        assert_eq!(
            (f.stream.as_deref(), f.source_id.as_deref()),
            (Some("sink_0"), Some("p/cam"))
        );
        assert_eq!(ok("type=object-appear").kind, Some(EventKind::ObjectAppear));
        assert_eq!(ok("type=object_appear").kind, Some(EventKind::ObjectAppear));
        assert_eq!(ok("access_token=x&limit=5").limit, 5);
        assert_eq!(ok("offset=9223372036854775807").offset, i64::MAX as u64);
        for q in [
            "type=nope",
            "limit=0",
            "limit=1001",
            "limit=ten",
            "limit=-1",
            "since=5&until=4",
            "offset=-1",
            "offset=9223372036854775808",
            "offset=18446744073709551616",
            "order=sideways",
            "bogus=1",
            "limit=1&limit=2",
            "since=1e3",
        ] {
            bad(q);
        }
        bad(&format!("stream={}", "s".repeat(MAX_FILTER_LEN + 1)));
        bad(&format!("limit=1&x={}", "a".repeat(MAX_QUERY_LEN)));
        assert_eq!(
            parse_stream_query(Some("type=clip")).unwrap(),
            Some(EventKind::Clip)
        );
        assert_eq!(parse_stream_query(None).unwrap(), None);
        assert!(parse_stream_query(Some("type=nope")).is_err());
        assert!(parse_stream_query(Some("other=1")).is_err());
    }

    #[test]
    fn host_check_table() {
        let lo: SocketAddr = "127.0.0.1:9464".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:9464".parse().unwrap();
        let lan: SocketAddr = "192.168.1.5:9464".parse().unwrap();
        for (host, bound, want) in [
            ("127.0.0.1:9464", lo, true),
            ("localhost:9464", lo, true),
            ("LOCALHOST:9464", lo, true),
            ("[::1]:9464", lo, true),
            ("127.0.0.2:9464", lo, true),
            ("192.168.1.5:9464", lan, true),
            ("10.1.2.3:9464", any, true),
            ("[fe80::1]:9464", any, true),
            ("10.1.2.3:9464", lo, false),
            ("evil.example:9464", lo, false),
            ("evil.example:9464", any, false),
            ("localhost.evil.example:9464", lo, false),
            ("127.0.0.1.nip.io:9464", lo, false),
            ("127.0.0.1:80", lo, false),
            ("127.0.0.1", lo, false),
            ("127.0.0.1:", lo, false),
            ("127.0.0.1:+9464", lo, false),
            ("127.0.0.1:9464@evil", lo, false),
            ("::1:9464", lo, false),
            ("[::1]9464", lo, false),
            ("[::1", lo, false),
            ("", lo, false),
            ("0x7f.1:9464", lo, false),
        ] {
            assert_eq!(host_allowed(host, bound), want, "{host} on {bound}");
        }
        let port80: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert!(host_allowed("localhost", port80));
        assert!(exposed(&any, false) && exposed(&lan, false));
        assert!(!exposed(&any, true) && !exposed(&lo, false));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;
        use rtai_core::http_auth::{MAX_TOKEN_LEN, split_host_port};

        /// A value as a client may spell it: digits, signs, huge numbers,
        /// percent escapes (valid, invalid, of NUL and of non-UTF-8 bytes), long runs.
        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                any::<u64>().prop_map(|n| n.to_string()),
                "[0-9]{19,40}",
                "[-+]?[0-9]{0,5}",
                "(%[0-9A-Fa-f]{2}|%[G-Zg-z]{0,2}|[a-z_+&=-]){0,12}",
                Just("%00".to_string()),
                Just("%FF%FE".to_string()),
                Just("asc".to_string()),
                Just("desc".to_string()),
                Just("object_appear".to_string()),
                Just("object-leave".to_string()),
                (1usize..20_000).prop_map(|n| "9".repeat(n)),
                (1usize..10_000).prop_map(|n| "%41".repeat(n)),
                ".{0,40}",
            ]
        }

        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("type"),
                Just("stream"),
                Just("source"),
                Just("since"),
                Just("until"),
                Just("limit"),
                Just("offset"),
                Just("order"),
                Just("access_token"),
            ]
            .prop_map(String::from)
            .boxed()
            .prop_union("[a-z%_]{0,8}".boxed())
        }

        fn query() -> impl Strategy<Value = String> {
            prop::collection::vec((key(), value(), any::<bool>()), 0..12).prop_map(|pairs| {
                pairs
                    .into_iter()
                    .map(|(k, v, with_eq)| if with_eq { format!("{k}={v}") } else { k })
                    .collect::<Vec<_>>()
                    .join("&")
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// Whatever the query, parsing returns, and what it accepts is in range.
            #[test]
            fn events_query_never_panics_and_accepts_only_valid_filters(q in query()) {
                if let Ok(f) = parse_events_query(Some(&q)) {
                    prop_assert!(q.len() <= MAX_QUERY_LEN);
                    prop_assert!((1..=MAX_PAGE).contains(&f.limit));
                    prop_assert!(f.offset <= i64::MAX as u64);
                    if let (Some(s), Some(u)) = (f.since_ms, f.until_ms) {
                        prop_assert!(s <= u);
                    }
                    prop_assert!(f.stream.as_ref().is_none_or(|s| s.len() <= MAX_FILTER_LEN));
                    prop_assert!(f.source_id.as_ref().is_none_or(|s| s.len() <= MAX_FILTER_LEN));
                }
                let _ = parse_stream_query(Some(&q));
            }

            /// Arbitrary bytes (as a lossy string) never panic either.
            #[test]
            fn events_query_takes_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..6000)) {
                let q = String::from_utf8_lossy(&bytes);
                let _ = parse_events_query(Some(&q));
                let _ = parse_stream_query(Some(&q));
                let _ = presented_token(&HeaderMap::new(), Some(&q));
            }

            /// A well-formed filter round-trips through its query string.
            #[test]
            fn valid_filters_round_trip(
                limit in 1..=MAX_PAGE,
                offset in 0..=i64::MAX as u64,
                since in any::<i64>(),
                span in 0..=i64::MAX,
                stream in "\\PC{0,40}",
                desc in any::<bool>(),
            ) {
                let until = since.saturating_add(span);
                let stream_enc: String = form_urlencoded::byte_serialize(stream.as_bytes()).collect();
                let q = format!(
                    "limit={limit}&offset={offset}&since={since}&until={until}&stream={stream_enc}&order={}",
                    if desc { "desc" } else { "asc" }
                );
                let f = parse_events_query(Some(&q)).unwrap();
                prop_assert_eq!(
                    (f.limit, f.offset, f.since_ms, f.until_ms, f.stream.as_deref(), f.descending),
                    (limit, offset, Some(since), Some(until), Some(stream.as_str()), desc)
                );
            }

            /// The token from either place: any printable token round-trips
            /// (percent-encoded in the query), huge ones are not looked at.
            #[test]
            fn tokens_round_trip_and_huge_ones_are_ignored(
                token in "[!-~]{1,64}",
                pad in 0usize..3000,
                lower in any::<bool>(),
            ) {
                let enc: String = form_urlencoded::byte_serialize(token.as_bytes()).collect();
                let q = format!("limit=1&access_token={enc}");
                prop_assert_eq!(presented_token(&HeaderMap::new(), Some(&q)), Some(token.clone()));
                let mut h = HeaderMap::new();
                let scheme = if lower { "bearer" } else { "Bearer" };
                h.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("{scheme} {token}")).unwrap());
                prop_assert_eq!(presented_token(&h, None), Some(token.clone()));
                let huge = format!("{token}{}", "x".repeat(MAX_TOKEN_LEN + pad));
                let mut h = HeaderMap::new();
                h.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {huge}")).unwrap());
                prop_assert_eq!(presented_token(&h, None), None);
                let huge_enc: String = form_urlencoded::byte_serialize(huge.as_bytes()).collect();
                let q = format!("access_token={huge_enc}");
                prop_assert_eq!(presented_token(&HeaderMap::new(), Some(&q)), None);
            }

            /// The Host check never panics and only passes the bound port.
            #[test]
            fn host_check_takes_any_string(host in ".{0,300}", port in any::<u16>()) {
                let bound = SocketAddr::from(([127, 0, 0, 1], port));
                if host_allowed(&host, bound) {
                    let (_, p) = split_host_port(&host).unwrap();
                    prop_assert_eq!(p.unwrap_or(80), port);
                }
            }
        }
    }
}
