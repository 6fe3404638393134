//! webrtcserve's HTTP server on the shared tokio runtime: the player page at
//! `/`, JSON signalling on the WebSocket `/ws`, WHEP at `POST /whep` and
//! `DELETE /whep/{id}`. The optional token is checked on every route
//! (`Authorization: Bearer <token>` or `?token=`), in constant time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use futures_util::{SinkExt, StreamExt};
use gst::glib;
use gst::subclass::prelude::*;
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, watch};

use super::imp::CAT;
use super::signalling::{self, ClientMessage, ServerMessage};
use super::viewer::Viewer;

const PAGE: &str = include_str!("page.html");
/// The send-recv page: microphone, control messages shown and acked, Interrupt.
const VOICE_PAGE: &str = include_str!("voice.html");
/// The WebSocket join both pages use (in place of their `/*__JOIN_JS__*/`).
const JOIN_JS: &str = include_str!("join.js");
/// Messages a client may send per second before it gets errors instead of service.
const RATE_PER_SECOND: u32 = 50;
/// Messages queued towards one WebSocket client.
const OUTBOX: usize = 64;

#[derive(Clone)]
pub struct Ctx {
    pub element: glib::WeakRef<super::WebRtcServe>,
    pub peer_id: String,
    pub token: Option<String>,
}

pub struct Server {
    pub addr: SocketAddr,
    closing: watch::Sender<bool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.closing.send(true);
    }
}

impl Server {
    pub fn start(listen: &str, ctx: Ctx) -> Result<Self, String> {
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
        let (closing, mut closing_rx) = watch::channel(false);
        let app = Router::new()
            .route("/", get(page))
            .route("/voice", get(voice_page))
            .route("/ws", get(ws))
            .route("/whep", post(whep_post))
            .route("/whep/{id}", delete(whep_delete).patch(whep_patch))
            .layer(DefaultBodyLimit::max(signalling::MAX_SDP_BYTES))
            .with_state(Arc::new(ctx));
        rt.spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = closing_rx.wait_for(|c| *c).await;
                })
                .await;
        });
        Ok(Self { addr, closing })
    }
}

fn authorized(
    ctx: &Ctx,
    headers: &HeaderMap,
    query: &std::collections::HashMap<String, String>,
) -> bool {
    let Some(token) = &ctx.token else {
        return true;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
        .or_else(|| query.get("token").cloned())
        .unwrap_or_default();
    bool::from(given.as_bytes().ct_eq(token.as_bytes()))
}

type Q = Query<std::collections::HashMap<String, String>>;

async fn page(State(ctx): State<Arc<Ctx>>, headers: HeaderMap, Query(q): Q) -> Response {
    html_page(&ctx, &headers, &q, PAGE)
}

async fn voice_page(State(ctx): State<Arc<Ctx>>, headers: HeaderMap, Query(q): Q) -> Response {
    html_page(&ctx, &headers, &q, VOICE_PAGE)
}

/// `template` with the join script and the peer id filled in (quotes, tags and
/// escapes removed).
fn html_page(
    ctx: &Ctx,
    headers: &HeaderMap,
    q: &std::collections::HashMap<String, String>,
    template: &str,
) -> Response {
    if !authorized(ctx, headers, q) {
        return (StatusCode::UNAUTHORIZED, "a valid token is needed").into_response();
    }
    Html(template.replace("/*__JOIN_JS__*/", JOIN_JS).replace(
        "__PEER_ID__",
        &ctx.peer_id.replace(['"', '<', '>', '\\'], ""),
    ))
    .into_response()
}

/// The token and the content type of a request with a body (WHEP POST and
/// PATCH): the response (401, 415) to send instead, if any.
fn check_body(
    ctx: &Ctx,
    headers: &HeaderMap,
    q: &std::collections::HashMap<String, String>,
    content_type: &str,
    expected: &'static str,
) -> Option<Response> {
    if !authorized(ctx, headers, q) {
        return Some((StatusCode::UNAUTHORIZED, "a valid token is needed").into_response());
    }
    let given = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !given.starts_with(content_type) {
        return Some((StatusCode::UNSUPPORTED_MEDIA_TYPE, expected).into_response());
    }
    None
}

async fn whep_post(
    State(ctx): State<Arc<Ctx>>,
    headers: HeaderMap,
    Query(q): Q,
    body: axum::body::Bytes,
) -> Response {
    if let Some(refused) = check_body(
        &ctx,
        &headers,
        &q,
        "application/sdp",
        "an application/sdp offer is expected",
    ) {
        return refused;
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return (StatusCode::BAD_REQUEST, "the SDP is not UTF-8").into_response();
    };
    let sdp = match signalling::parse_sdp(text) {
        Ok(sdp) => sdp,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let Some(element) = ctx.element.upgrade() else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let imp = element.imp();
    let viewer = match imp.add_viewer("whep", None).await {
        Ok(v) => v,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
    };
    let answer = async {
        viewer
            .set_remote(gst_webrtc::WebRTCSDPType::Offer, sdp)
            .await?;
        viewer.create_answer(true).await
    }
    .await;
    match answer.and_then(|a| viewer.start_flow().map(|_| a)) {
        Ok(answer) => (
            StatusCode::CREATED,
            [
                (header::CONTENT_TYPE, "application/sdp".to_string()),
                (header::LOCATION, format!("/whep/{}", viewer.id)),
            ],
            answer,
        )
            .into_response(),
        Err(e) => {
            imp.remove_viewer(&viewer.id, "bad offer").await;
            (StatusCode::BAD_REQUEST, e).into_response()
        }
    }
}

async fn whep_delete(
    State(ctx): State<Arc<Ctx>>,
    headers: HeaderMap,
    Query(q): Q,
    Path(id): Path<String>,
) -> Response {
    if !authorized(&ctx, &headers, &q) {
        return (StatusCode::UNAUTHORIZED, "a valid token is needed").into_response();
    }
    let Some(element) = ctx.element.upgrade() else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    if !id.starts_with("whep-") || !element.imp().remove_viewer(&id, "leave").await {
        return (StatusCode::NOT_FOUND, "no such session").into_response();
    }
    StatusCode::OK.into_response()
}

/// WHEP trickle ICE (RFC 9725): the client's candidates for its session.
async fn whep_patch(
    State(ctx): State<Arc<Ctx>>,
    headers: HeaderMap,
    Query(q): Q,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(refused) = check_body(
        &ctx,
        &headers,
        &q,
        "application/trickle-ice-sdpfrag",
        "an application/trickle-ice-sdpfrag body is expected",
    ) {
        return refused;
    }
    let Some(element) = ctx.element.upgrade() else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let Some(viewer) = id
        .starts_with("whep-")
        .then(|| element.imp().viewer(&id))
        .flatten()
    else {
        return (StatusCode::NOT_FOUND, "no such session").into_response();
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return (StatusCode::BAD_REQUEST, "the fragment is not UTF-8").into_response();
    };
    match signalling::parse_sdpfrag(text) {
        Ok(_) if ice_restart(&headers, text, &viewer.webrtcbin) => (
            // WHEP (draft-ietf-wish-whep, as RFC 9725 § 4.3.1 for WHIP): a session that
            // supports trickle ICE but not ICE restarts answers 422 to a restart PATCH.
            // GStreamer 1.22's webrtcbin cannot restart ICE (no libnice stream restart).
            StatusCode::UNPROCESSABLE_ENTITY,
            "ICE restarts are not supported (trickle ICE only): end this session (DELETE) and POST a new offer",
        )
            .into_response(),
        Ok(candidates) => {
            for (mline, c) in &candidates {
                viewer.add_ice_candidate(*mline, c);
            }
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

/// An ICE restart PATCH (RFC 9725 § 4.3.2): `If-Match: *`, or an `a=ice-ufrag` other
/// than the one of the session's remote description. `frag` has passed
/// `parse_sdpfrag` (bounded, known lines only).
fn ice_restart(headers: &HeaderMap, frag: &str, webrtcbin: &gst::Element) -> bool {
    use gst::prelude::ObjectExt;
    if headers
        .get(header::IF_MATCH)
        .is_some_and(|v| v.as_bytes().trim_ascii() == b"*")
    {
        return true;
    }
    let Some(ufrag) = frag
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
    else {
        return false;
    };
    let Some(remote) =
        webrtcbin.property::<Option<gst_webrtc::WebRTCSessionDescription>>("remote-description")
    else {
        return false;
    };
    let sdp = remote.sdp();
    let current = sdp
        .attribute_val("ice-ufrag")
        .or_else(|| sdp.media(0).and_then(|m| m.attribute_val("ice-ufrag")));
    current.is_some_and(|c| c != ufrag.trim())
}

async fn ws(
    State(ctx): State<Arc<Ctx>>,
    headers: HeaderMap,
    Query(q): Q,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !authorized(&ctx, &headers, &q) {
        return (StatusCode::UNAUTHORIZED, "a valid token is needed").into_response();
    }
    upgrade
        .max_message_size(signalling::MAX_MESSAGE_BYTES + 1)
        .max_frame_size(signalling::MAX_MESSAGE_BYTES + 1)
        .on_failed_upgrade(|_| ())
        .on_upgrade(move |socket| client(socket, ctx))
}

/// One signalling client: at most one viewer, errors to this client only.
async fn client(socket: WebSocket, ctx: Arc<Ctx>) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<String>(OUTBOX);
    let writer = tokio::spawn(async move {
        while let Some(text) = rx.recv().await {
            if sink.send(Message::Text(text.into())).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut viewer: Option<Arc<Viewer>> = None;
    let mut window = Instant::now();
    let mut in_window = 0u32;
    while let Some(Ok(msg)) = stream.next().await {
        let text = match msg {
            Message::Text(t) => t.to_string(),
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Binary(_) => {
                let _ = tx
                    .try_send(ServerMessage::error("binary messages are not signalling").to_json());
                continue;
            }
        };
        if window.elapsed() >= Duration::from_secs(1) {
            window = Instant::now();
            in_window = 0;
        }
        in_window += 1;
        if in_window > RATE_PER_SECOND {
            if in_window == RATE_PER_SECOND + 1 {
                let _ = tx
                    .send(
                        ServerMessage::error(format!(
                            "too many messages: more than {RATE_PER_SECOND} per second are ignored"
                        ))
                        .to_json(),
                    )
                    .await;
            }
            if in_window > RATE_PER_SECOND * 20 {
                break;
            }
            continue;
        }
        let reply = match signalling::parse(&text) {
            Ok(m) => {
                gst::debug!(CAT, "signalling message {m:?}");
                handle(&ctx, m, &mut viewer, &tx).await
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = reply {
            gst::debug!(CAT, "signalling error reply: {e}");
            // Errors wait for room in this client's outbox: a flooding client
            // slows itself down, nobody else.
            let _ = tx.send(ServerMessage::error(e).to_json()).await;
        }
    }
    if let (Some(v), Some(element)) = (viewer, ctx.element.upgrade()) {
        element
            .imp()
            .remove_viewer(&v.id, "signalling connection closed")
            .await;
    }
    drop(tx);
    let _ = writer.await;
}

async fn handle(
    ctx: &Ctx,
    msg: ClientMessage,
    viewer: &mut Option<Arc<Viewer>>,
    tx: &mpsc::Sender<String>,
) -> Result<(), String> {
    let element = ctx.element.upgrade().ok_or("the element is gone")?;
    let imp = element.imp();
    let check_peer = |p: &Option<String>| match p {
        Some(p) if *p != ctx.peer_id => Err(format!(
            "unknown peer `{p}`: this server is `{}`",
            ctx.peer_id
        )),
        _ => Ok(()),
    };
    match msg {
        ClientMessage::Join { peer_id } => {
            check_peer(&peer_id)?;
            if viewer.is_some() {
                return Err("already joined: send leave first".into());
            }
            let v = imp.add_viewer("ws", Some(tx.clone())).await?;
            *viewer = Some(v.clone());
            match v.create_offer().await {
                Ok(sdp) => {
                    let _ = tx
                        .send(
                            ServerMessage::Offer {
                                sdp,
                                peer_id: ctx.peer_id.clone(),
                            }
                            .to_json(),
                        )
                        .await;
                    // The candidates found meanwhile follow the offer, never precede it.
                    for c in v.release_candidates() {
                        let _ = tx.send(c).await;
                    }
                    Ok(())
                }
                Err(e) => {
                    imp.remove_viewer(&v.id, "offer failed").await;
                    *viewer = None;
                    Err(e)
                }
            }
        }
        ClientMessage::Offer { sdp } => {
            let parsed = signalling::parse_sdp(&sdp)?;
            if viewer.is_some() {
                return Err("already joined: send leave first".into());
            }
            let v = imp.add_viewer("ws", Some(tx.clone())).await?;
            *viewer = Some(v.clone());
            let answer = async {
                v.set_remote(gst_webrtc::WebRTCSDPType::Offer, parsed)
                    .await?;
                let answer = v.create_answer(false).await?;
                v.start_flow()?;
                Ok::<_, String>(answer)
            }
            .await;
            match answer {
                Ok(sdp) => {
                    let _ = tx
                        .send(
                            ServerMessage::Answer {
                                sdp,
                                peer_id: ctx.peer_id.clone(),
                            }
                            .to_json(),
                        )
                        .await;
                    for c in v.release_candidates() {
                        let _ = tx.send(c).await;
                    }
                    Ok(())
                }
                Err(e) => {
                    imp.remove_viewer(&v.id, "bad offer").await;
                    *viewer = None;
                    Err(e)
                }
            }
        }
        ClientMessage::Answer { sdp } => {
            let v = viewer.as_ref().ok_or("no offer to answer: join first")?;
            // A voice-only viewer (send-recv without video) answers audio only.
            let kind = if v.has_video() { "video" } else { "audio" };
            let parsed = signalling::parse_sdp_for(&sdp, kind)?;
            v.set_remote(gst_webrtc::WebRTCSDPType::Answer, parsed)
                .await?;
            v.start_flow()
        }
        ClientMessage::IceCandidate {
            candidate,
            sdp_mline_index,
            peer_id,
        } => {
            check_peer(&peer_id)?;
            let v = viewer
                .as_ref()
                .ok_or("candidate for an unknown session: join first")?;
            v.add_ice_candidate(sdp_mline_index, &candidate);
            Ok(())
        }
        ClientMessage::Leave => {
            let v = viewer.take().ok_or("not joined")?;
            imp.remove_viewer(&v.id, "leave").await;
            Ok(())
        }
    }
}
