//! Control messages over HTTP (feature `control-http`): a [`ControlHub`] that
//! any embedded server of the collection mounts as an axum router
//! (analyticssink's `listen` server does; webrtcserve could):
//!
//! - `GET /api/control/stream`: Server-Sent Events, one control message (JSON,
//!   `rtai_core::control` wire form) per event, each with an SSE `id`; a client
//!   that reconnects with `Last-Event-ID` (or `?last_event_id=`) gets what it
//!   missed from a bounded replay log.
//! - `POST /api/control/ack` with `{"ack":"<id>"}`: confirms a message; the
//!   hub's [`ControlHandler::acked`] gets the round trip.
//! - `POST /api/control` with a control message: handed to
//!   [`ControlHandler::received`] (first copy only) and answered with its ack.
//!
//! Bad input (malformed JSON, unknown types, oversized bodies, a client over its
//! rate) gets a 4xx with an error reply (`control::error_json`); the hub and the
//! pipeline go on. Messages the pipeline publishes without an ack within 50 ms
//! are sent again (a new SSE event, same message id) at most 3 times, then
//! reported to [`ControlHandler::undelivered`]. [`ControlHub::receive`] and
//! [`ControlHub::publish`] do not depend on HTTP: other transports (a WebRTC
//! data channel) can use the same hub logic.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use tokio::sync::broadcast;

use crate::control::{
    self, ControlError, ControlMessage, Deduper, Inbound, RateLimiter, RetryAction, RetryDriven,
    RetryTimer, RetryTracker,
};

/// Events kept for `Last-Event-ID` resume.
pub const REPLAY_LOG: usize = 1024;
/// Clients (addresses) whose rate is tracked; beyond it the table starts again.
const MAX_CLIENTS: usize = 4096;

/// What the element behind the hub does with messages.
pub trait ControlHandler: Send + Sync + 'static {
    /// A client sent `msg` (first copy; copies are acked, not handed over again).
    fn received(&self, msg: ControlMessage);
    /// A published message was acked.
    fn acked(&self, msg: &ControlMessage, round_trip: Duration, retries: u32);
    /// A published message got no ack after `attempts` sends.
    fn undelivered(&self, msg: &ControlMessage, attempts: u32);
}

/// Limits of one hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Messages per second a client may send (POST /api/control and acks)...
    pub rate: f64,
    /// ...with bursts of this many.
    pub burst: f64,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            rate: control::DEFAULT_RATE,
            burst: control::DEFAULT_BURST,
        }
    }
}

struct HubState {
    next_event_id: u64,
    log: VecDeque<(u64, Arc<str>)>,
    tracker: RetryTracker<ControlMessage>,
    deduper: Deduper,
    limiters: HashMap<IpAddr, RateLimiter>,
    refused: u64,
}

/// The control endpoint of one element (see the module documentation).
pub struct ControlHub {
    state: Mutex<HubState>,
    live: broadcast::Sender<(u64, Arc<str>)>,
    handler: Arc<dyn ControlHandler>,
    config: HubConfig,
    retry: RetryTimer,
}

impl ControlHub {
    /// A hub whose retries run on the shared runtime until it is dropped or closed.
    pub fn new(handler: Arc<dyn ControlHandler>, config: HubConfig) -> Arc<Self> {
        let (live, _) = broadcast::channel(REPLAY_LOG);
        let hub = Arc::new(Self {
            state: Mutex::new(HubState {
                next_event_id: 1,
                log: VecDeque::new(),
                tracker: RetryTracker::default(),
                deduper: Deduper::default(),
                limiters: HashMap::new(),
                refused: 0,
            }),
            live,
            handler,
            config,
            retry: RetryTimer::default(),
        });
        control::spawn_retries(&hub);
        hub
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the SSE streams and the retry task (the server is going away).
    pub fn close(&self) {
        self.retry.close();
    }

    /// Sends `msg` to every connected stream (a new SSE id) and waits for its ack.
    pub fn publish(&self, msg: ControlMessage) {
        let mut st = self.lock();
        let now = Instant::now();
        if let Some(RetryAction::Undelivered { item, attempts, .. }) =
            st.tracker.sent(&msg.id, msg.clone(), now)
        {
            self.handler.undelivered(&item, attempts);
        }
        self.emit(&mut st, &msg);
        drop(st);
        self.retry.notify();
    }

    fn emit(&self, st: &mut HubState, msg: &ControlMessage) {
        let id = st.next_event_id;
        st.next_event_id += 1;
        let data: Arc<str> = Arc::from(msg.to_json());
        st.log.push_back((id, data.clone()));
        while st.log.len() > REPLAY_LOG {
            st.log.pop_front();
        }
        // No subscriber is fine: the retries and the replay log cover late clients.
        let _ = self.live.send((id, data));
    }

    /// An ack from a client: `false` when `id` is not pending (late copy, unknown).
    pub fn ack(&self, id: &str) -> bool {
        let acked = self.lock().tracker.ack(id, Instant::now());
        match acked {
            Some(a) => {
                self.handler.acked(&a.item, a.round_trip, a.retries);
                true
            }
            None => false,
        }
    }

    /// One message from `client` (any transport): rate-limited, bounded, parsed.
    /// A control message goes to the handler (first copy) and the answer is its
    /// ack; an ack confirms a published message and the answer is empty.
    pub fn receive(&self, client: IpAddr, bytes: &[u8]) -> Result<Option<String>, ControlError> {
        {
            let mut st = self.lock();
            if st.limiters.len() >= MAX_CLIENTS && !st.limiters.contains_key(&client) {
                st.limiters.clear();
            }
            let now = Instant::now();
            let (rate, burst) = (self.config.rate, self.config.burst);
            let limiter = st
                .limiters
                .entry(client)
                .or_insert_with(|| RateLimiter::new(rate, burst, now));
            if let Err(e) = limiter.check(now) {
                st.refused += 1;
                return Err(e);
            }
        }
        match control::parse(bytes) {
            Ok(Inbound::Message(msg)) => {
                let first = self.lock().deduper.first_time(&msg.id);
                let ack = control::ack_json(&msg.id);
                if first {
                    self.handler.received(msg);
                }
                Ok(Some(ack))
            }
            Ok(Inbound::Ack(id)) => {
                self.ack(&id);
                Ok(None)
            }
            Err(e) => {
                self.lock().refused += 1;
                Err(e)
            }
        }
    }

    /// Counts a request refused outside [`ControlHub::receive`]; its error reply.
    fn refuse(&self, err: &ControlError) -> Response {
        self.lock().refused += 1;
        refusal(err)
    }

    /// Messages published and not yet acked.
    pub fn pending(&self) -> usize {
        self.lock().tracker.len()
    }

    /// Requests refused so far (bad input, rate).
    pub fn refused(&self) -> u64 {
        self.lock().refused
    }

    /// The routes, for any server's router (state-free: `Router<S>` for any `S`).
    pub fn router<S: Clone + Send + Sync + 'static>(self: &Arc<Self>) -> Router<S> {
        Router::new()
            .route("/api/control/stream", get(stream))
            .route("/api/control/ack", post(post_ack))
            .route("/api/control", post(post_message))
            .with_state(self.clone())
    }
}

impl RetryDriven for ControlHub {
    fn retry_timer(&self) -> &RetryTimer {
        &self.retry
    }

    /// Resends due messages, reports undelivered ones; the next deadline.
    fn retry_due(&self) -> Option<Instant> {
        let mut st = self.lock();
        let mut undelivered = Vec::new();
        for action in st.tracker.due(Instant::now()) {
            match action {
                RetryAction::Resend { item, .. } => self.emit(&mut st, &item),
                RetryAction::Undelivered { item, attempts, .. } => {
                    undelivered.push((item, attempts))
                }
            }
        }
        let next = st.tracker.next_deadline();
        drop(st);
        for (msg, attempts) in undelivered {
            self.handler.undelivered(&msg, attempts);
        }
        next
    }
}

fn client_of(request: &Request) -> IpAddr {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

fn refusal(err: &ControlError) -> Response {
    let status = match err {
        ControlError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        ControlError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ControlError::UnknownType(_) | ControlError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        ControlError::TooDeep | ControlError::Malformed(_) => StatusCode::BAD_REQUEST,
    };
    json_response(status, control::error_json(err, None))
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The body, at most one control message long.
async fn body_of(request: Request) -> Result<(IpAddr, axum::body::Bytes), ControlError> {
    let client = client_of(&request);
    axum::body::to_bytes(request.into_body(), control::MAX_MESSAGE_BYTES)
        .await
        .map(|b| (client, b))
        .map_err(|_| ControlError::TooLarge(control::MAX_MESSAGE_BYTES + 1))
}

async fn post_message(State(hub): State<Arc<ControlHub>>, request: Request) -> Response {
    let (client, body) = match body_of(request).await {
        Ok(b) => b,
        Err(e) => return hub.refuse(&e),
    };
    match hub.receive(client, &body) {
        Ok(Some(ack)) => json_response(StatusCode::OK, ack),
        Ok(None) => hub.refuse(&ControlError::Invalid(
            "an ack goes to /api/control/ack".into(),
        )),
        Err(e) => refusal(&e),
    }
}

async fn post_ack(State(hub): State<Arc<ControlHub>>, request: Request) -> Response {
    let (client, body) = match body_of(request).await {
        Ok(b) => b,
        Err(e) => return hub.refuse(&e),
    };
    // Acks count against the client's rate too, and must be acks.
    if let Ok(Inbound::Message(_)) = control::parse(&body) {
        return hub.refuse(&ControlError::Invalid(
            "a control message goes to /api/control".into(),
        ));
    }
    match hub.receive(client, &body) {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => refusal(&e),
    }
}

/// `Last-Event-ID` header, else `?last_event_id=`.
fn last_event_id(headers: &HeaderMap, query: Option<&str>) -> Option<u64> {
    if let Some(v) = headers.get("last-event-id") {
        return v.to_str().ok()?.trim().parse().ok();
    }
    let query = query.filter(|q| q.len() <= 1024)?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "last_event_id")
        .and_then(|(_, v)| v.parse().ok())
}

async fn stream(
    State(hub): State<Arc<ControlHub>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let last = last_event_id(&headers, uri.query());
    let (replay, rx, mut closing) = {
        let st = hub.lock();
        let replay: Vec<(u64, Arc<str>)> = match last {
            Some(l) => st.log.iter().filter(|(id, _)| *id > l).cloned().collect(),
            None => Vec::new(),
        };
        // Subscribed under the lock: nothing falls between the replay and the live feed.
        (replay, hub.live.subscribe(), hub.retry.closing())
    };
    let after = replay.last().map(|(id, _)| *id).or(last).unwrap_or(0);
    let live = tokio_stream::wrappers::BroadcastStream::new(rx).filter_map(move |r| async move {
        match r {
            Ok((id, data)) if id > after => Some((id, data)),
            // A client too slow for the feed misses events; its next reconnect resumes.
            _ => None,
        }
    });
    let closed = async move {
        let _ = closing.wait_for(|c| *c).await;
    };
    let events = futures_util::stream::iter(replay)
        .chain(live)
        .take_until(closed)
        .map(|(id, data)| Ok::<_, Infallible>(SseEvent::default().id(id.to_string()).data(&*data)));
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}
