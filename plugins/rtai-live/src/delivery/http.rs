//! Delivery's HTTP routes: the JSON API, the WebSocket status feed,
//! Prometheus `/metrics` and the operator page `/ops`. Everything a client
//! sends is bounded: stream names (1–64 safe characters), queries (4 KiB,
//! each parameter once, numbers of at most 16 digits), WebSocket frames
//! (4 KiB; the feed takes no messages: anything but ping/pong/close closes it
//! with 1008). With an auth token set, all but `/metrics` need it.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::db::{self, HistoryQuery};
use super::metrics;
use super::state::{Change, LeaveError, valid_name, valid_session_id};
use super::{CAT, Delivery};
use rtai_core::http_auth::{MAX_QUERY_LEN, presented_token, token_matches};

/// Largest WebSocket message or frame taken from a client.
pub const MAX_WS_MESSAGE: usize = 4096;
/// Most points `/api/streams/{stream}/metrics` returns.
pub const MAX_HISTORY_POINTS: u32 = 10_000;
const DEFAULT_HISTORY_POINTS: u32 = 3_600;
const DEFAULT_HISTORY_MS: i64 = 3_600_000;

const INDEX_HTML: &str = include_str!("ops/index.html");
const APP_JS: &str = include_str!("ops/app.js");
const STYLE_CSS: &str = include_str!("ops/style.css");

/// The operator page with its script and style inlined: one request.
static OPS_PAGE: LazyLock<String> = LazyLock::new(|| {
    INDEX_HTML
        .replacen(
            r#"<link rel="stylesheet" href="style.css">"#,
            &format!("<style>\n{STYLE_CSS}</style>"),
            1,
        )
        .replacen(
            r#"<script src="app.js"></script>"#,
            &format!("<script>\n{APP_JS}</script>"),
            1,
        )
});

pub fn router(delivery: Arc<Delivery>) -> Router {
    let protected = Router::new()
        .route("/ops", get(ops))
        .route("/api/streams", get(streams))
        .route("/api/streams/{stream}", get(stream))
        .route("/api/streams/{stream}/viewers", get(viewers))
        .route("/api/streams/{stream}/metrics", get(history))
        .route("/ws/streams/{stream}", get(ws))
        .route_layer(middleware::from_fn_with_state(delivery.clone(), auth));
    Router::new()
        .route("/metrics", get(prometheus))
        // Not behind the token: the player has none; the session id (128
        // random bits, handed to that player only) is what it presents.
        .route(
            "/api/streams/{stream}/sessions/{session}/leave",
            post(leave),
        )
        .merge(protected)
        .with_state(delivery)
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": msg.into() }))).into_response()
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn auth(State(d): State<Arc<Delivery>>, request: Request, next: Next) -> Response {
    if let Some(token) = &d.config.auth_token {
        let authorization = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let presented = presented_token(authorization, request.uri().query());
        if !token_matches(token, presented.as_deref()) {
            let mut resp = error(
                StatusCode::UNAUTHORIZED,
                "a bearer token is required (Authorization: Bearer … or ?access_token=)",
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"rtai\""),
            );
            return resp;
        }
    }
    if request
        .uri()
        .query()
        .is_some_and(|q| q.len() > MAX_QUERY_LEN)
    {
        return error(
            StatusCode::URI_TOO_LONG,
            format!("query longer than {MAX_QUERY_LEN} bytes"),
        );
    }
    next.run(request).await
}

async fn prometheus(State(d): State<Arc<Delivery>>) -> Response {
    no_store(
        (
            [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
            metrics::encode(&d),
        )
            .into_response(),
    )
}

async fn ops(State(d): State<Arc<Delivery>>) -> Response {
    let config = json!({
        "hls_js": d.config.hls_js_path,
        "master": d.config.master_playlist_path,
    });
    let page = OPS_PAGE.replacen(
        "/*RTAI_OPS_CONFIG*/{}",
        // `</` cannot close the script from inside a JSON string.
        &config.to_string().replace("</", "<\\/"),
        1,
    );
    no_store(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response())
}

fn checked(stream: &str) -> Result<(), Box<Response>> {
    if valid_name(stream) {
        Ok(())
    } else {
        Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "a stream name is 1-64 of A-Z a-z 0-9 _ - .",
        )))
    }
}

async fn streams(State(d): State<Arc<Delivery>>) -> Response {
    let list = d.with_streams(|streams, now, rules| {
        let mut v: Vec<Value> = streams
            .map
            .values()
            .map(|s| s.summary(now, rules))
            .collect();
        v.sort_by(|a, b| a["stream"].as_str().cmp(&b["stream"].as_str()));
        v
    });
    no_store(axum::Json(json!({ "streams": list })).into_response())
}

async fn stream(State(d): State<Arc<Delivery>>, Path(stream): Path<String>) -> Response {
    if let Err(r) = checked(&stream) {
        return *r;
    }
    match d.with_streams(|s, now, rules| s.get(&stream).map(|s| s.detail(now, rules))) {
        Some(v) => no_store(axum::Json(v).into_response()),
        None => error(StatusCode::NOT_FOUND, "no such stream"),
    }
}

async fn viewers(State(d): State<Arc<Delivery>>, Path(stream): Path<String>) -> Response {
    if let Err(r) = checked(&stream) {
        return *r;
    }
    let v = d.with_streams(|s, now, _| {
        s.get(&stream).map(|s| {
            let mut sessions: Vec<_> = s.sessions.values().collect();
            sessions.sort_by_key(|x| (x.joined_ms, x.id.clone()));
            json!({
                "stream": stream,
                "viewers": sessions.len(),
                "viewers_per_rendition": s.viewers_per_rendition(),
                "sessions": sessions.iter().map(|x| x.json(now)).collect::<Vec<_>>(),
            })
        })
    });
    match v {
        Some(v) => no_store(axum::Json(v).into_response()),
        None => error(StatusCode::NOT_FOUND, "no such stream"),
    }
}

/// `POST /api/streams/{stream}/sessions/{session}/leave`: the watch page's
/// `pagehide` beacon. 204 ended, 404 unknown stream or session (or already
/// gone), 400 a bad name or id. The body (if any) is not read.
async fn leave(
    State(d): State<Arc<Delivery>>,
    Path((stream, session)): Path<(String, String)>,
) -> Response {
    if let Err(r) = checked(&stream) {
        return *r;
    }
    if !valid_session_id(&session) {
        return error(
            StatusCode::BAD_REQUEST,
            "a session id is 32 lowercase hex digits",
        );
    }
    match d.leave_session(&stream, &session) {
        Ok(()) => no_store(StatusCode::NO_CONTENT.into_response()),
        Err(LeaveError::NoStream) => error(StatusCode::NOT_FOUND, "no such stream"),
        Err(LeaveError::NoSession) => error(StatusCode::NOT_FOUND, "no such session"),
    }
}

/// An integer of at most 16 digits (and a sign).
fn small_int(v: &str) -> Option<i64> {
    let digits = v.strip_prefix('-').unwrap_or(v);
    if digits.is_empty() || digits.len() > 16 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// `since` and `until` (ms since the Unix epoch; a negative `since` is that
/// many seconds before `now_ms`), `limit` (1..=10000) and `access_token`
/// (checked by the auth layer), each at most once. Default: the last hour,
/// 3600 points.
pub fn parse_history_query(raw: Option<&str>, now_ms: i64) -> Result<HistoryQuery, String> {
    let raw = raw.unwrap_or("");
    if raw.len() > MAX_QUERY_LEN {
        return Err(format!("query longer than {MAX_QUERY_LEN} bytes"));
    }
    let mut q = HistoryQuery {
        since_ms: now_ms - DEFAULT_HISTORY_MS,
        until_ms: now_ms,
        limit: DEFAULT_HISTORY_POINTS,
    };
    let mut seen = [false; 3];
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        let slot = match &*k {
            "since" => 0,
            "until" => 1,
            "limit" => 2,
            "access_token" => continue,
            other => {
                return Err(format!(
                    "unknown parameter '{}'",
                    other.chars().take(32).collect::<String>()
                ));
            }
        };
        if std::mem::replace(&mut seen[slot], true) {
            return Err(format!("'{k}' given twice"));
        }
        let n = small_int(&v)
            .ok_or_else(|| format!("'{k}' must be an integer of at most 16 digits"))?;
        match slot {
            0 if n < 0 => q.since_ms = now_ms.saturating_add(n.saturating_mul(1000)),
            0 => q.since_ms = n,
            1 if n < 0 => return Err("'until' must not be negative".into()),
            1 => q.until_ms = n,
            _ => {
                if !(1..=i64::from(MAX_HISTORY_POINTS)).contains(&n) {
                    return Err(format!("'limit' must be 1..={MAX_HISTORY_POINTS}"));
                }
                q.limit = n as u32;
            }
        }
    }
    if q.since_ms > q.until_ms {
        return Err("'since' is after 'until'".into());
    }
    Ok(q)
}

async fn history(
    State(d): State<Arc<Delivery>>,
    Path(stream): Path<String>,
    uri: axum::http::Uri,
) -> Response {
    if let Err(r) = checked(&stream) {
        return *r;
    }
    let q = match parse_history_query(uri.query(), rtai_core::store::now_ms()) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let db = match tokio::time::timeout(Duration::from_secs(10), d.store.get()).await {
        Ok(Ok(db)) => db,
        Ok(Err(e)) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("store unavailable: {e}"),
            );
        }
        Err(_) => return error(StatusCode::SERVICE_UNAVAILABLE, "store not open yet"),
    };
    match db::history(db, &stream, &q).await {
        Ok(v) => no_store(axum::Json(v).into_response()),
        Err(e) => {
            gst::warning!(CAT, "history query failed: {e}");
            error(StatusCode::SERVICE_UNAVAILABLE, "history query failed")
        }
    }
}

async fn ws(
    State(d): State<Arc<Delivery>>,
    Path(stream): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Response {
    if let Err(r) = checked(&stream) {
        return *r;
    }
    if d.with_streams(|s, _, _| s.get(&stream).is_none()) {
        return error(StatusCode::NOT_FOUND, "no such stream");
    }
    upgrade
        .max_message_size(MAX_WS_MESSAGE)
        .max_frame_size(MAX_WS_MESSAGE)
        .on_upgrade(move |socket| feed(d, stream, socket))
}

/// The live feed of one stream: its status and stats at once, then every
/// message published for it. The client only listens.
async fn feed(d: Arc<Delivery>, stream: String, mut socket: WebSocket) {
    let mut rx = d.subscribe(&stream);
    let first = d.with_streams(|s, now, rules| {
        s.get(&stream).map(|s| {
            (
                s.status_message(),
                s.stats_message(now, rtai_core::store::now_ms(), rules),
            )
        })
    });
    let Some((status, stats)) = first else {
        return;
    };
    for m in [status, stats] {
        if socket
            .send(Message::Text(m.to_string().into()))
            .await
            .is_err()
        {
            return;
        }
    }
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Ok(text) => {
                    if socket.send(Message::Text((&*text).into())).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    gst::debug!(CAT, "a WebSocket client of {stream} skipped {n} messages");
                }
                Err(RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => return,
                Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                    let _ = socket
                        .send(Message::Close(Some(CloseFrame {
                            code: close_code::POLICY,
                            reason: "this feed takes no messages".into(),
                        })))
                        .await;
                    return;
                }
                // Too big, not UTF-8, protocol errors: the connection is gone.
                Some(Err(e)) => {
                    gst::debug!(CAT, "WebSocket client of {stream} dropped: {e}");
                    return;
                }
            },
        }
    }
}

/// What the live feed of a stream says about a change (per-second rows go
/// out as `stats` from the tick instead).
pub fn feed_message(change: &Change) -> Option<Value> {
    Some(match change {
        Change::StreamStarted { stream, .. } => {
            json!({ "type": "status", "stream": stream, "status": "active", "error": null })
        }
        Change::StreamEnded { stream, status, .. } => json!({
            "type": "status",
            "stream": stream,
            "status": status.as_str(),
            "error": match status { super::state::Status::Error(e) => Some(e.clone()), _ => None },
        }),
        Change::Session {
            stream,
            session,
            left_ms,
            reason,
        } => json!({
            "type": "session",
            "stream": stream,
            "event": if left_ms.is_some() { "left" } else if session.requests == 0 { "joined" } else { "updated" },
            "reason": reason,
            "session": session.id,
            "rendition": session.rendition,
            "stalls": session.stalls,
            "switches": session.switches,
        }),
        Change::Switch {
            stream,
            session,
            at_ms,
            from,
            to,
        } => json!({
            "type": "switch",
            "stream": stream,
            "session": session,
            "t": at_ms,
            "from": from,
            "to": to,
        }),
        Change::Second { .. } => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_query_table() {
        let now = 10_000_000;
        let q = parse_history_query(None, now).unwrap();
        assert_eq!(
            (q.since_ms, q.until_ms, q.limit),
            (now - 3_600_000, now, 3600)
        );
        let q = parse_history_query(Some("since=-60&limit=5&access_token=x"), now).unwrap();
        assert_eq!((q.since_ms, q.limit), (now - 60_000, 5));
        let q = parse_history_query(Some("since=5&until=6"), now).unwrap();
        assert_eq!((q.since_ms, q.until_ms), (5, 6));
        for bad in [
            "since=x",
            "since=1&since=2",
            "limit=0",
            "limit=10001",
            "until=-1",
            "since=7&until=6",
            "since=12345678901234567",
            "what=1",
            "since=",
        ] {
            assert!(parse_history_query(Some(bad), now).is_err(), "{bad}");
        }
        let huge = format!("since=1&x={}", "a".repeat(MAX_QUERY_LEN));
        assert!(parse_history_query(Some(&huge), now).is_err());
    }

    #[test]
    fn ops_page_inlines_its_script_style_and_config_slot() {
        assert!(OPS_PAGE.contains("<style>") && OPS_PAGE.contains("<script>"));
        assert!(!OPS_PAGE.contains(r#"src="app.js""#));
        assert!(OPS_PAGE.contains("/*RTAI_OPS_CONFIG*/{}"));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn history_query_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..5000)) {
                let raw = String::from_utf8_lossy(&bytes);
                if let Ok(q) = parse_history_query(Some(&raw), 1_000_000) {
                    prop_assert!(q.since_ms <= q.until_ms);
                    prop_assert!((1..=MAX_HISTORY_POINTS).contains(&q.limit));
                }
            }

            #[test]
            fn numbers_round_trip(since in 0i64..10_000_000_000_000, extra in 0i64..1_000_000, limit in 1u32..=10_000) {
                let q = parse_history_query(Some(&format!("since={since}&until={}&limit={limit}", since + extra)), 0).unwrap();
                prop_assert_eq!((q.since_ms, q.until_ms, q.limit), (since, since + extra, limit));
            }
        }
    }
}
