//! The HTTP server of `analyticssink` (and of `latencymetrics` alone with its
//! `listen` parameter): `/metrics`, `/api/events`, `/api/events/stream` (SSE),
//! `/api/latency`, `/api/summary` and the embedded dashboard at `/`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use serde::Deserialize;
use subtle::ConstantTimeEq;
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

/// Totals the dashboard shows next to the live feed.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Summary {
    pub detections_per_class: std::collections::BTreeMap<String, u64>,
    pub events_per_type: std::collections::BTreeMap<String, u64>,
    /// The latest clip markers (newest last), at most [`Summary::MAX_CLIPS`].
    pub clip_markers: std::collections::VecDeque<serde_json::Value>,
}

impl Summary {
    pub const MAX_CLIPS: usize = 50;
}

/// What an `analyticssink` serves besides `/metrics`.
pub struct SinkApi {
    pub element: String,
    pub store: Store,
    pub live: broadcast::Sender<Arc<str>>,
    pub summary: Arc<Mutex<Summary>>,
}

#[derive(Clone)]
pub struct AppState {
    sink: Option<Arc<SinkApi>>,
    token: Option<Arc<str>>,
    closing: watch::Receiver<bool>,
}

impl AppState {
    /// Only `/metrics` (the tracer's own server).
    pub fn metrics_only() -> Self {
        Self {
            sink: None,
            token: None,
            closing: watch::channel(false).1,
        }
    }

    pub fn sink(api: Arc<SinkApi>, token: Option<String>) -> Self {
        Self {
            sink: Some(api),
            token: token.filter(|t| !t.is_empty()).map(Arc::from),
            closing: watch::channel(false).1,
        }
    }
}

/// A running server; stopped when dropped.
pub struct Server {
    addr: SocketAddr,
    closing: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Binds `listen` (host:port; port 0 picks a free one) and serves in the shared runtime.
    pub fn start(listen: &str, mut state: AppState) -> Result<Self, String> {
        let std_listener = std::net::TcpListener::bind(listen)
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| e.to_string())?;
        let addr = std_listener.local_addr().map_err(|e| e.to_string())?;
        let rt = rtai_core::runtime::runtime();
        let _guard = rt.enter();
        let listener =
            tokio::net::TcpListener::from_std(std_listener).map_err(|e| e.to_string())?;
        let (closing, closing_rx) = watch::channel(false);
        state.closing = closing_rx.clone();
        let app = router(state);
        let mut shutdown_rx = closing_rx;
        let task = rt.spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
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
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/metrics", get(metrics))
        .merge(protected)
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(state)
}

/// The bearer token from `Authorization: Bearer …` or, for the browser's
/// EventSource which cannot set headers, the `access_token` query parameter (RFC 6750).
fn presented_token<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(t) = v.strip_prefix("Bearer ")
    {
        return Some(t.trim().to_string());
    }
    query.and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v.into_owned())
    })
}

async fn auth(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let presented = presented_token(request.headers(), request.uri().query());
        if !presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(token.as_bytes()))) {
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

/// Query parameters of `/api/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub stream: Option<String>,
    /// Wall clock, ms since the Unix epoch, inclusive.
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub limit: Option<u32>,
    pub offset: Option<u64>,
    /// `asc` (oldest first, the default) or `desc`.
    pub order: Option<String>,
    #[allow(dead_code)]
    pub access_token: Option<String>,
}

impl EventsQuery {
    /// Checks the parameters; the error is the message for a 400 reply.
    pub fn filter(&self) -> Result<EventFilter, String> {
        if let Some(kind) = &self.kind
            && !crate::analyticssink::events::EventKind::ALL
                .iter()
                .any(|k| k.as_str() == kind)
        {
            return Err(format!(
                "unknown type '{kind}' (one of {})",
                crate::analyticssink::events::EventKind::ALL
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let limit = self.limit.unwrap_or(DEFAULT_PAGE);
        if limit == 0 || limit > MAX_PAGE {
            return Err(format!("limit must be 1..={MAX_PAGE}"));
        }
        if let (Some(s), Some(u)) = (self.since, self.until)
            && s > u
        {
            return Err("since is after until".into());
        }
        // The databases take a signed 64-bit OFFSET: beyond it is the client's mistake, not a 503.
        let offset = self.offset.unwrap_or(0);
        if offset > i64::MAX as u64 {
            return Err(format!("offset must be at most {}", i64::MAX));
        }
        let descending = match self.order.as_deref() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(other) => return Err(format!("order must be asc or desc, not '{other}'")),
        };
        Ok(EventFilter {
            descending,
            kind: self.kind.clone(),
            stream: self.stream.clone(),
            since_ms: self.since,
            until_ms: self.until,
            limit,
            offset,
        })
    }
}

async fn events(
    State(state): State<AppState>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(sink) = &state.sink else {
        return (StatusCode::NOT_FOUND, "no analyticssink\n").into_response();
    };
    let query = match query {
        Ok(Query(q)) => q,
        Err(err) => return bad_request(err.body_text()),
    };
    let filter = match query.filter() {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[allow(dead_code)]
    access_token: Option<String>,
}

async fn events_stream(
    State(state): State<AppState>,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(sink) = &state.sink else {
        return (StatusCode::NOT_FOUND, "no analyticssink\n").into_response();
    };
    let kind = match query {
        Ok(Query(q)) => q.kind,
        Err(err) => return bad_request(err.body_text()),
    };
    if let Some(k) = &kind
        && !crate::analyticssink::events::EventKind::ALL
            .iter()
            .any(|x| x.as_str() == k)
    {
        return bad_request(format!("unknown type '{k}'"));
    }
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

async fn latency() -> Response {
    axum::Json(serde_json::json!({ "pads": crate::latencymetrics::snapshot() })).into_response()
}

async fn summary(State(state): State<AppState>) -> Response {
    let Some(sink) = &state.sink else {
        return (StatusCode::NOT_FOUND, "no analyticssink\n").into_response();
    };
    let summary = sink.summary.lock().unwrap().clone();
    axum::Json(serde_json::json!({ "element": sink.element, "summary": summary })).into_response()
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
        let q = |kind: Option<&str>, limit: Option<u32>, since: Option<i64>, until: Option<i64>| {
            EventsQuery {
                kind: kind.map(String::from),
                stream: None,
                since,
                until,
                limit,
                offset: None,
                order: None,
                access_token: None,
            }
        };
        assert!(q(None, None, None, None).filter().is_ok());
        assert!(
            q(Some("speech"), Some(10), Some(1), Some(2))
                .filter()
                .is_ok()
        );
        assert!(q(Some("nope"), None, None, None).filter().is_err());
        assert!(q(None, Some(0), None, None).filter().is_err());
        assert!(q(None, Some(MAX_PAGE + 1), None, None).filter().is_err());
        assert!(q(None, None, Some(5), Some(4)).filter().is_err());
        let at = |offset: u64| {
            EventsQuery {
                offset: Some(offset),
                ..q(None, None, None, None)
            }
            .filter()
        };
        assert_eq!(at(i64::MAX as u64).unwrap().offset, i64::MAX as u64);
        assert!(at(i64::MAX as u64 + 1).is_err());
        assert!(at(u64::MAX).is_err());
    }
}
