//! grpcsink: sends its stream to a grpcsrc (or any client of
//! proto/rtai_stream.proto) over one bidirectional gRPC call.
//!
//! The streaming thread converts each buffer/event to a wire message and hands
//! it to the connection's channel; the call itself runs on the shared tokio
//! runtime. Credit-based flow control: the receiver reports the bytes it has
//! pushed downstream, and `render` waits while more than `max-inflight-bytes`
//! are unconfirmed, so a slow receiver slows the sender instead of growing
//! memory. Data messages are numbered; after a reconnect nothing is resent
//! (no duplicates) and the receiver reports the gap.
//!
//! Control events (segment start/commit/end/cancel, `rtai-control`) carry a
//! control id when the receiver acks them (its Hello says so): each waits in a
//! `rtai_core::control::RetryTracker`, is resent after 50 ms without an ack (at
//! most 3 times, then a `control-undelivered` warning), and its ack posts a
//! `control-ack` message with the round trip.

use std::pin::Pin;
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;
use rtai_core::control::{ControlMessage, RetryAction, RetryTracker};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::transport::{self, NetSettings, Role};
use crate::wire::{self, proto};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "grpcsink",
        gst::DebugColorFlags::empty(),
        Some("gRPC stream sender"),
    )
});

const DEFAULT_ROLE: Role = Role::Client;
const DEFAULT_MAX_INFLIGHT_BYTES: u64 = 16 * 1024 * 1024;
const DEFAULT_RECONNECT: bool = true;
const DEFAULT_STREAM_ID: &str = "default";
/// How long EOS waits for the receiver to confirm it pushed everything.
const EOS_ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, Clone)]
struct Settings {
    role: Role,
    net: NetSettings,
    max_inflight_bytes: u64,
    reconnect: bool,
    stream_id: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            role: DEFAULT_ROLE,
            net: NetSettings::default(),
            max_inflight_bytes: DEFAULT_MAX_INFLIGHT_BYTES,
            reconnect: DEFAULT_RECONNECT,
            stream_id: DEFAULT_STREAM_ID.into(),
        }
    }
}

/// What a call sends: messages, or the status that ends it.
type DownstreamTx = mpsc::UnboundedSender<Result<proto::Downstream, Status>>;

fn message(seq: u64, body: proto::downstream::Body) -> Result<proto::Downstream, Status> {
    Ok(proto::Downstream {
        seq,
        body: Some(body),
    })
}

struct Conn {
    id: u64,
    tx: DownstreamTx,
    sent_bytes: u64,
    consumed_bytes: u64,
    /// Set once the receiver's Hello arrived and unconfirmed messages were resent.
    ready: bool,
}

#[derive(Default)]
struct Stats {
    buffers: u64,
    bytes: u64,
    connections: u64,
    disconnects: u64,
    credit_waits: u64,
    control_acked: u64,
    control_retries: u64,
    control_undelivered: u64,
}

/// A control event waiting for its ack: resent as it was (same seq, same id).
#[derive(Clone)]
struct ControlPending {
    seq: u64,
    body: proto::downstream::Body,
    msg: ControlMessage,
}

#[derive(Default)]
struct Core {
    conn: Option<Conn>,
    next_conn_id: u64,
    /// Last data sequence number handed to a connection.
    last_seq: u64,
    acked_seq: u64,
    /// Sent but not yet confirmed (bounded by max-inflight-bytes): resent after a reconnect.
    unacked: std::collections::VecDeque<(u64, proto::downstream::Body, u64)>,
    stream_id: String,
    /// Replayed at the start of every connection: stream-start, caps, segment, latency.
    stream_start: Option<proto::downstream::Body>,
    caps: Option<proto::downstream::Body>,
    segment: Option<proto::downstream::Body>,
    latency: Option<proto::downstream::Body>,
    /// The receiver's downstream latency (Upstream.latency), nanoseconds.
    receiver_latency: Option<u64>,
    flushing: bool,
    /// EOS was confirmed by the receiver: the call is over, no reconnect.
    finished: bool,
    failure: Option<String>,
    /// Control events sent and not yet acked.
    control: RetryTracker<ControlPending>,
    /// The receiver's Hello said it acks control events.
    peer_acks: bool,
    stats: Stats,
}

/// The sender's side of the connection, shared by the streaming thread and the network tasks.
#[derive(Default)]
pub struct Sender {
    core: Mutex<Core>,
    changed: Condvar,
    /// Wakes the retry task (a control event was sent, a call became ready).
    control_wake: tokio::sync::Notify,
}

impl Sender {
    fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reset(&self, stream_id: &str) {
        *self.lock() = Core {
            stream_id: stream_id.into(),
            ..Core::default()
        };
    }

    /// A new call: Hello and the current state go first. Replaces an older call
    /// (ended with ABORTED); returns the new call's id and whether it replaced one.
    fn attach(&self, tx: DownstreamTx) -> (u64, bool) {
        let mut core = self.lock();
        let replaced = core.conn.take().is_some_and(|old| {
            let _ = old.tx.send(Err(Status::aborted(
                "another receiver took over this stream",
            )));
            !old.tx.is_closed()
        });
        core.next_conn_id += 1;
        let id = core.next_conn_id;
        let hello = proto::Hello {
            protocol_version: wire::PROTOCOL_VERSION,
            stream_id: core.stream_id.clone(),
            last_seq: core.last_seq,
            acked_seq: core.acked_seq,
            control_acks: false,
        };
        let _ = tx.send(message(0, proto::downstream::Body::Hello(hello)));
        for body in [&core.stream_start, &core.caps, &core.segment, &core.latency]
            .into_iter()
            .flatten()
        {
            let _ = tx.send(message(0, body.clone()));
        }
        core.conn = Some(Conn {
            id,
            tx,
            sent_bytes: 0,
            consumed_bytes: 0,
            ready: false,
        });
        core.stats.connections += 1;
        self.changed.notify_all();
        (id, replaced)
    }

    /// After the receiver's Hello: resend what it has not got and nobody confirmed,
    /// then let new data flow. Nothing it already has is sent again. Once per call:
    /// a second Hello would resend the window twice (and the receiver, dropping the
    /// copies, would never credit them: the sender would stall).
    fn resume(&self, id: u64, receiver_last_seq: u64, control_acks: bool) {
        let mut core = self.lock();
        if core.conn.as_ref().is_some_and(|c| c.id == id && c.ready) {
            return;
        }
        let from = core.acked_seq.max(receiver_last_seq);
        let resend: Vec<(u64, proto::downstream::Body, u64)> = core
            .unacked
            .iter()
            .filter(|(seq, _, _)| *seq > from)
            .cloned()
            .collect();
        let Some(conn) = core.conn.as_mut().filter(|c| c.id == id) else {
            return;
        };
        for (seq, body, size) in resend {
            conn.sent_bytes += size;
            let _ = conn.tx.send(message(seq, body));
        }
        // Control events not acked: out-of-band ones go again (a cancel sent while
        // no receiver was connected included), serialized ones the receiver already
        // has go again so that it acks them (copies are not pushed twice).
        let tx = conn.tx.clone();
        conn.ready = true;
        core.peer_acks = control_acks;
        let pending = core.control.resend_all(std::time::Instant::now());
        for (_, p) in &pending {
            if p.seq == 0 || p.seq <= from {
                let _ = tx.send(message(p.seq, p.body.clone()));
            }
        }
        if !control_acks {
            // This receiver never acks: nothing to wait for.
            core.control.drain();
        }
        self.changed.notify_all();
        self.control_wake.notify_one();
    }

    /// Ends call `id` (if it is still the current one) with `status`.
    fn end_call(&self, id: u64, status: Status) {
        let core = self.lock();
        if let Some(conn) = core.conn.as_ref().filter(|c| c.id == id) {
            let _ = conn.tx.send(Err(status));
        }
    }

    fn detach(&self, id: u64) {
        let mut core = self.lock();
        if core.conn.as_ref().is_some_and(|c| c.id == id) {
            core.conn = None;
            core.stats.disconnects += 1;
        }
        self.changed.notify_all();
    }

    fn fail(&self, message: String) {
        let mut core = self.lock();
        core.failure = Some(message);
        core.conn = None;
        self.changed.notify_all();
    }

    fn set_flushing(&self, flushing: bool) {
        self.lock().flushing = flushing;
        self.changed.notify_all();
    }

    /// A message from the receiver. Events go upstream through the sink pad.
    fn on_upstream(
        &self,
        id: u64,
        msg: proto::Upstream,
        element: &super::GrpcSink,
    ) -> Result<(), Status> {
        match msg.body {
            Some(proto::upstream::Body::Hello(hello)) => {
                transport::check_hello(&hello)?;
                if self
                    .lock()
                    .conn
                    .as_ref()
                    .is_some_and(|c| c.id == id && c.ready)
                {
                    // An older receiver sends Hello twice in pull mode: resuming twice
                    // would resend everything unconfirmed twice.
                    gst::debug!(CAT, obj = element, "ignoring a second Hello on one call");
                } else {
                    self.resume(id, hello.last_seq, hello.control_acks);
                }
            }
            Some(proto::upstream::Body::ControlAck(ack)) => {
                let acked = {
                    let mut core = self.lock();
                    let acked = core.control.ack(&ack.id, std::time::Instant::now());
                    if acked.is_some() {
                        core.stats.control_acked += 1;
                    }
                    acked
                };
                match acked {
                    Some(a) => {
                        gst::debug!(
                            CAT,
                            obj = element,
                            "control {} acked after {:?} ({} retries)",
                            a.id,
                            a.round_trip,
                            a.retries
                        );
                        let _ = element.post_message(a.item.msg.ack_message(
                            element,
                            "grpc",
                            a.round_trip,
                            a.retries,
                        ));
                    }
                    None => gst::debug!(
                        CAT,
                        obj = element,
                        "ignoring an ack for {:?}: not pending (a copy's ack)",
                        ack.id
                    ),
                }
            }
            Some(proto::upstream::Body::Credit(credit)) => {
                let mut core = self.lock();
                if let Some(conn) = core.conn.as_mut().filter(|c| c.id == id) {
                    conn.consumed_bytes = conn.consumed_bytes.max(credit.consumed_bytes);
                }
                core.acked_seq = core.acked_seq.max(credit.acked_seq);
                let acked = core.acked_seq;
                while core
                    .unacked
                    .front()
                    .is_some_and(|(seq, _, _)| *seq <= acked)
                {
                    core.unacked.pop_front();
                }
                self.changed.notify_all();
            }
            Some(proto::upstream::Body::Event(ev)) => match wire::event_from_wire(&ev) {
                Ok(event) => {
                    gst::debug!(
                        CAT,
                        obj = element,
                        "upstream event from the receiver: {event:?}"
                    );
                    let pad = element.static_pad("sink").expect("sink pad exists");
                    pad.push_event(event);
                }
                Err(e) => {
                    gst::warning!(
                        CAT,
                        obj = element,
                        "refusing a malformed upstream event, ending the call: {e}"
                    );
                    return Err(Status::invalid_argument(format!(
                        "malformed upstream event: {e}"
                    )));
                }
            },
            Some(proto::upstream::Body::Latency(l)) => {
                // u64::MAX is "none" on the wire.
                let min = (l.min != wire::NONE).then_some(l.min);
                gst::debug!(CAT, obj = element, "the receiver's latency: {min:?} ns");
                self.lock().receiver_latency = min;
            }
            None => {}
        }
        Ok(())
    }

    /// Sends a data message, waiting for a connection and (for buffers) for credit.
    fn send_data(
        &self,
        mut body: proto::downstream::Body,
        size: u64,
        max_inflight: Option<u64>,
        control: Option<ControlMessage>,
    ) -> Result<u64, gst::FlowError> {
        let mut core = self.lock();
        let mut waited = false;
        loop {
            if core.flushing {
                return Err(gst::FlowError::Flushing);
            }
            if core.failure.is_some() {
                return Err(gst::FlowError::Error);
            }
            if let Some(conn) = core.conn.as_ref().filter(|c| c.ready) {
                let inflight = conn.sent_bytes.saturating_sub(conn.consumed_bytes);
                // One message larger than the window may go when nothing is in flight.
                let fits = max_inflight.is_none_or(|max| inflight == 0 || inflight + size <= max);
                if fits {
                    break;
                }
            }
            if !waited {
                core.stats.credit_waits += 1;
                waited = true;
            }
            core = self.changed.wait(core).unwrap_or_else(|e| e.into_inner());
        }
        core.last_seq += 1;
        let seq = core.last_seq;
        if let Some(msg) = control {
            // Registered before it goes out: the ack may come back at once.
            self.track_control(&mut core, seq, &mut body, msg);
        }
        core.unacked.push_back((seq, body.clone(), size));
        let conn = core.conn.as_mut().expect("checked above");
        conn.sent_bytes += size;
        if conn.tx.send(message(seq, body)).is_err() {
            // The call ended under us; the message stays in `unacked` for the next call.
            core.conn = None;
        }
        Ok(seq)
    }

    /// Caps, segment, stream-start: remembered for reconnects and sent now if connected.
    fn send_state(&self, body: proto::downstream::Body) {
        let mut core = self.lock();
        match &body {
            proto::downstream::Body::Caps(_) => core.caps = Some(body.clone()),
            proto::downstream::Body::Segment(_) => core.segment = Some(body.clone()),
            proto::downstream::Body::Latency(_) => core.latency = Some(body.clone()),
            _ => core.stream_start = Some(body.clone()),
        }
        if let Some(conn) = &core.conn {
            let _ = conn.tx.send(message(0, body));
        }
    }

    /// Out-of-band: goes out at once, ahead of anything waiting for credit. A
    /// control event also waits for its ack (and goes out with the next call if
    /// no receiver is connected now).
    fn send_oob(&self, mut body: proto::downstream::Body, control: Option<ControlMessage>) -> bool {
        let mut core = self.lock();
        if let Some(msg) = control {
            self.track_control(&mut core, 0, &mut body, msg);
            // Before the receiver's Hello, resume() sends it (once) with what is pending.
            return match core.conn.as_ref().filter(|c| c.ready) {
                Some(conn) => conn.tx.send(message(0, body)).is_ok(),
                None => false,
            };
        }
        match &core.conn {
            Some(conn) => conn.tx.send(message(0, body)).is_ok(),
            None => false,
        }
    }

    /// Stamps `body` with the message's id and keeps it until its ack.
    fn track_control(
        &self,
        core: &mut Core,
        seq: u64,
        body: &mut proto::downstream::Body,
        msg: ControlMessage,
    ) {
        if let proto::downstream::Body::Event(ev) = body {
            ev.control_id = msg.id.clone();
        }
        let id = msg.id.clone();
        let pending = ControlPending {
            seq,
            body: body.clone(),
            msg,
        };
        if let Some(RetryAction::Undelivered { id, .. }) =
            core.control.sent(&id, pending, std::time::Instant::now())
        {
            gst::warning!(
                CAT,
                "control {id} dropped: too many pending control messages"
            );
            core.stats.control_undelivered += 1;
        }
        self.control_wake.notify_one();
    }

    /// When the next control retry is due (while a call is ready and acks).
    fn next_control_deadline(&self) -> Option<std::time::Instant> {
        let core = self.lock();
        // A call that ended (its stream dropped) counts no retries: the next call resends.
        let ready = core
            .conn
            .as_ref()
            .is_some_and(|c| c.ready && !c.tx.is_closed())
            && core.peer_acks;
        if ready {
            core.control.next_deadline()
        } else {
            None
        }
    }

    /// Resends what is due; returns what ran out of retries.
    fn control_due(&self) -> Vec<(ControlMessage, u32)> {
        let mut core = self.lock();
        let Some(tx) = core
            .conn
            .as_ref()
            .filter(|c| c.ready && !c.tx.is_closed())
            .map(|c| c.tx.clone())
        else {
            return Vec::new();
        };
        if !core.peer_acks {
            return Vec::new();
        }
        let mut undelivered = Vec::new();
        for action in core.control.due(std::time::Instant::now()) {
            match action {
                RetryAction::Resend { item, .. } => {
                    core.stats.control_retries += 1;
                    let _ = tx.send(message(item.seq, item.body));
                }
                RetryAction::Undelivered { item, attempts, .. } => {
                    core.stats.control_undelivered += 1;
                    undelivered.push((item.msg, attempts));
                }
            }
        }
        undelivered
    }

    /// Waits until the receiver confirmed `seq`, the connection is gone, or flushing.
    fn wait_acked(&self, seq: u64) -> bool {
        let deadline = std::time::Instant::now() + EOS_ACK_TIMEOUT;
        let mut core = self.lock();
        loop {
            if core.acked_seq >= seq {
                return true;
            }
            // A lost call is not the end: the next one resends what is unconfirmed.
            if core.flushing || core.failure.is_some() {
                return false;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return false;
            }
            core = self
                .changed
                .wait_timeout(core, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Resends control events without an ack in time; posts `control-undelivered`
/// for those whose retries ran out. Runs from start to stop.
async fn retry_control(sender: Arc<Sender>, element: glib::WeakRef<super::GrpcSink>) {
    loop {
        let wake = sender.control_wake.notified();
        match sender.next_control_deadline() {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => {}
                    _ = wake => continue,
                }
            }
            None => {
                wake.await;
                continue;
            }
        }
        let undelivered = sender.control_due();
        if undelivered.is_empty() {
            continue;
        }
        let Some(el) = element.upgrade() else { return };
        for (msg, attempts) in undelivered {
            gst::warning!(
                CAT,
                obj = el,
                "control {} undelivered after {attempts} attempts",
                msg.id
            );
            msg.post_undelivered(el.upcast_ref(), "grpc", attempts);
        }
    }
}

/// Tells the receiver this side's upstream latency (it adds its own for its LATENCY query).
fn send_upstream_latency(sender: &Sender, element: &super::GrpcSink) {
    let mut query = gst::query::Latency::new();
    let pad = element.static_pad("sink").expect("sink pad exists");
    if pad.peer_query(&mut query) {
        let (live, min, max) = query.result();
        let latency = proto::Latency {
            live,
            min: min.nseconds(),
            max: max.map_or(wire::NONE, |m| m.nseconds()),
        };
        sender.send_state(proto::downstream::Body::Latency(latency));
    }
}

/// The Pull endpoint a grpcsink in server role offers to receivers.
struct SinkService {
    sender: Arc<Sender>,
    element: glib::WeakRef<super::GrpcSink>,
}

type BoxStream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl proto::stream_bridge_server::StreamBridge for SinkService {
    type PushStream = BoxStream<proto::Upstream>;
    type PullStream = BoxStream<proto::Downstream>;

    async fn push(
        &self,
        _request: Request<Streaming<proto::Downstream>>,
    ) -> Result<Response<Self::PushStream>, Status> {
        Err(Status::unimplemented(
            "this endpoint is a grpcsink: receivers call Pull here; send streams to a grpcsrc",
        ))
    }

    async fn pull(
        &self,
        request: Request<Streaming<proto::Upstream>>,
    ) -> Result<Response<Self::PullStream>, Status> {
        let mut incoming = request.into_inner();
        let hello = match incoming.message().await?.and_then(|m| m.body) {
            Some(proto::upstream::Body::Hello(hello)) => hello,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message of a call must be Hello",
                ));
            }
        };
        transport::check_hello(&hello)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (id, replaced) = self.sender.attach(tx);
        if replaced && let Some(element) = self.element.upgrade() {
            // With auth-token set only a caller with the token gets here (TokenCheck).
            gst::element_warning!(
                element,
                gst::ResourceError::Busy,
                ("A new receiver took over the stream from the previous one"),
                [
                    "Pull call {id} (stream {:?}) replaced the receiver that was connected",
                    hello.stream_id
                ]
            );
        }
        self.sender.resume(id, hello.last_seq, hello.control_acks);
        let (sender, element) = (self.sender.clone(), self.element.clone());
        rtai_core::runtime::runtime().spawn(async move {
            while let Ok(Some(msg)) = incoming.message().await {
                let Some(element) = element.upgrade() else {
                    break;
                };
                if let Err(status) = sender.on_upstream(id, msg, &element) {
                    sender.end_call(id, status);
                    break;
                }
            }
            sender.detach(id);
        });
        let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The client role: dial, stream, and redial with backoff while `reconnect` is set.
async fn run_client(
    sender: Arc<Sender>,
    settings: Settings,
    element: glib::WeakRef<super::GrpcSink>,
) {
    let mut attempt = 0u32;
    loop {
        let outcome: Result<(), (String, bool)> = async {
            let mut client = transport::connect(&settings.net)
                .await
                .map_err(|e| (e, false))?;
            let (tx, rx) = mpsc::unbounded_channel();
            let (id, _) = sender.attach(tx);
            let result = async {
                let outgoing =
                    tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map_while(Result::ok);
                let response = client
                    .push(outgoing)
                    .await
                    .map_err(|s| transport::status_error(&s))?;
                attempt = 0;
                let mut incoming = response.into_inner();
                loop {
                    match incoming.message().await {
                        Ok(Some(msg)) => {
                            let Some(element) = element.upgrade() else {
                                return Ok(());
                            };
                            sender
                                .on_upstream(id, msg, &element)
                                .map_err(|s| transport::status_error(&s))?;
                        }
                        Ok(None) => return Err(("the receiver ended the call".to_string(), false)),
                        Err(s) => return Err(transport::status_error(&s)),
                    }
                }
            }
            .await;
            sender.detach(id);
            result
        }
        .await;
        let Some(el) = element.upgrade() else { return };
        let (message, permanent) = match outcome {
            Ok(()) => return,
            Err(_) if sender.lock().finished => return,
            Err(e) => e,
        };
        let message = transport::with_hint(&settings.net.uri, message);
        if permanent || !settings.reconnect {
            gst::element_error!(
                el,
                gst::ResourceError::Write,
                ("Stream to {} failed", settings.net.uri),
                ["{message}"]
            );
            sender.fail(message);
            return;
        }
        attempt += 1;
        if attempt == 1 {
            gst::element_warning!(
                el,
                gst::ResourceError::Write,
                ("Connection to {} lost, reconnecting", settings.net.uri),
                ["{message}"]
            );
        }
        gst::debug!(CAT, obj = el, "{message}; retry {attempt}");
        drop(el);
        tokio::time::sleep(transport::backoff(attempt)).await;
    }
}

#[derive(Default)]
pub struct GrpcSink {
    settings: Mutex<Settings>,
    sender: Arc<Sender>,
    running: Mutex<Option<transport::Running>>,
    /// The control retry task (start to stop).
    retry_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    bound_port: Mutex<u32>,
}

impl GrpcSink {
    /// The control message a protocol event stands for, if it is one.
    fn control_message(&self, event: &gst::Event) -> Option<ControlMessage> {
        let stream_id = self.settings.lock().unwrap().stream_id.clone();
        ControlMessage::from_event(event, Some(&stream_id))
    }

    fn max_inflight(&self) -> u64 {
        self.settings.lock().unwrap().max_inflight_bytes
    }

    fn stats(&self) -> gst::Structure {
        let core = self.sender.lock();
        let st = &core.stats;
        gst::Structure::builder("grpcsink-stats")
            .field("buffers", st.buffers)
            .field("bytes", st.bytes)
            .field("connections", st.connections)
            .field("disconnects", st.disconnects)
            .field("credit-waits", st.credit_waits)
            .field("connected", core.conn.is_some())
            .field("last-seq", core.last_seq)
            .field("acked-seq", core.acked_seq)
            .field(
                "receiver-latency",
                core.receiver_latency.unwrap_or(wire::NONE),
            )
            .field("control-pending", core.control.len() as u64)
            .field("control-acked", st.control_acked)
            .field("control-retries", st.control_retries)
            .field("control-undelivered", st.control_undelivered)
            .build()
    }
}

#[glib::object_subclass]
impl ObjectSubclass for GrpcSink {
    const NAME: &'static str = "GstGrpcSink";
    type Type = super::GrpcSink;
    type ParentType = gst_base::BaseSink;
}

impl ObjectImpl for GrpcSink {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let mut props = vec![
                glib::ParamSpecEnum::builder_with_default("mode", DEFAULT_ROLE)
                    .nick("Mode")
                    .blurb("client: dial the receiver at uri (it calls Push); server: listen and let receivers call Pull")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("max-inflight-bytes")
                    .nick("Max in-flight bytes")
                    .blurb("Payload bytes sent but not yet pushed downstream by the receiver before the sender waits")
                    .minimum(1024)
                    .maximum(1 << 32)
                    .default_value(DEFAULT_MAX_INFLIGHT_BYTES)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("reconnect")
                    .nick("Reconnect")
                    .blurb("Client mode: redial with backoff when the receiver goes away (false: a disconnect is an error)")
                    .default_value(DEFAULT_RECONNECT)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("stream-id")
                    .nick("Stream id")
                    .blurb("Names the stream to the receiver; a reconnect continues the same stream")
                    .default_value(Some(DEFAULT_STREAM_ID))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("buffers, bytes, connections, disconnects, credit-waits, connected, last-seq, acked-seq, receiver-latency (ns, u64::MAX = unknown), control-pending, control-acked, control-retries, control-undelivered")
                    .read_only()
                    .build(),
            ];
            props.extend(crate::net_properties());
            props
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = self.settings.lock().unwrap();
        match pspec.name() {
            "mode" => settings.role = value.get().expect("type checked upstream"),
            "max-inflight-bytes" => {
                settings.max_inflight_bytes = value.get().expect("type checked upstream");
                drop(settings);
                self.sender.changed.notify_all();
            }
            "reconnect" => settings.reconnect = value.get().expect("type checked upstream"),
            "stream-id" => {
                settings.stream_id = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .unwrap_or_else(|| DEFAULT_STREAM_ID.into())
            }
            name => crate::set_net_property(&mut settings.net, name, value),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = self.settings.lock().unwrap();
        match pspec.name() {
            "mode" => settings.role.to_value(),
            "max-inflight-bytes" => settings.max_inflight_bytes.to_value(),
            "reconnect" => settings.reconnect.to_value(),
            "stream-id" => settings.stream_id.to_value(),
            "stats" => {
                drop(settings);
                self.stats().to_value()
            }
            "bound-port" => self.bound_port.lock().unwrap().to_value(),
            name => crate::net_property(&settings.net, name),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        // A network sink sends as fast as the receiver takes; timing is the receiver's job.
        self.obj().set_sync(false);
    }
}

impl GstObjectImpl for GrpcSink {}

impl ElementImpl for GrpcSink {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "gRPC stream sink",
                "Sink/Network",
                "Sends buffers, caps, timestamps, metas and events to a grpcsrc over gRPC (client or server role), \
                 with credit-based flow control, reconnect, TLS and token auth",
                "rtai contributors",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &gst::Caps::new_any(),
                )
                .expect("valid template"),
            ]
        });
        TEMPLATES.as_ref()
    }
}

impl BaseSinkImpl for GrpcSink {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings.lock().unwrap().clone();
        gst::debug!(
            CAT,
            imp = self,
            "starting: {:?} {:?}",
            settings.role,
            settings.net
        );
        self.sender.reset(&settings.stream_id);
        *self.retry_task.lock().unwrap() = Some(
            rtai_core::runtime::runtime()
                .spawn(retry_control(self.sender.clone(), self.obj().downgrade())),
        );
        let running = match settings.role {
            Role::Server => {
                let service = SinkService {
                    sender: self.sender.clone(),
                    element: self.obj().downgrade(),
                };
                let weak = self.obj().downgrade();
                let serving = transport::serve(service, &settings.net, move |e| {
                    if let Some(el) = weak.upgrade() {
                        gst::element_error!(
                            el,
                            gst::ResourceError::Failed,
                            ("gRPC server failed"),
                            ["{e}"]
                        );
                    }
                })
                .map_err(|e| {
                    gst::error_msg!(
                        gst::ResourceError::OpenWrite,
                        ("Cannot serve the stream"),
                        ["{e}"]
                    )
                })?;
                *self.bound_port.lock().unwrap() = serving.local_addr.port() as u32;
                crate::warn_if_exposed(self.obj().upcast_ref(), &serving);
                transport::Running::Server(serving)
            }
            Role::Client => {
                let task = rtai_core::runtime::runtime().spawn(run_client(
                    self.sender.clone(),
                    settings,
                    self.obj().downgrade(),
                ));
                transport::Running::Client(task)
            }
        };
        *self.running.lock().unwrap() = Some(running);
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        self.sender.fail("stopped".into());
        *self.running.lock().unwrap() = None;
        if let Some(task) = self.retry_task.lock().unwrap().take() {
            task.abort();
        }
        Ok(())
    }

    fn unlock(&self) -> Result<(), gst::ErrorMessage> {
        self.sender.set_flushing(true);
        Ok(())
    }

    fn unlock_stop(&self) -> Result<(), gst::ErrorMessage> {
        self.sender.set_flushing(false);
        Ok(())
    }

    fn set_caps(&self, caps: &gst::Caps) -> Result<(), gst::LoggableError> {
        self.sender
            .send_state(proto::downstream::Body::Caps(caps.to_string()));
        // Upstream's latency is known once caps are: tell the receiver.
        send_upstream_latency(&self.sender, &self.obj());
        Ok(())
    }

    fn render(&self, buffer: &gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        let wire = wire::buffer_to_wire(buffer).map_err(|e| {
            gst::element_imp_error!(
                self,
                gst::StreamError::Failed,
                ("Cannot send a buffer"),
                ["{e}"]
            );
            gst::FlowError::Error
        })?;
        let size = wire.data.len() as u64;
        let max_message = self.settings.lock().unwrap().net.max_message_size as u64;
        // Room for the message's own fields (timestamps, metas) beside the payload.
        if size + 4096 > max_message {
            gst::element_imp_error!(
                self,
                gst::ResourceError::Write,
                ("A buffer of {size} bytes does not fit max-message-size ({max_message} bytes)"),
                ["raise max-message-size on both sides"]
            );
            return Err(gst::FlowError::Error);
        }
        let max_inflight = self.max_inflight();
        self.sender
            .send_data(
                proto::downstream::Body::Buffer(wire),
                size,
                Some(max_inflight),
                None,
            )
            .inspect_err(|err| {
                if *err == gst::FlowError::Error {
                    let reason = self.sender.lock().failure.clone().unwrap_or_default();
                    gst::element_imp_error!(
                        self,
                        gst::ResourceError::Write,
                        ("Cannot send to the receiver"),
                        ["{reason}"]
                    );
                }
            })?;
        let mut core = self.sender.lock();
        core.stats.buffers += 1;
        core.stats.bytes += size;
        Ok(gst::FlowSuccess::Ok)
    }

    fn event(&self, event: gst::Event) -> bool {
        use gst::EventView;
        match event.view() {
            EventView::Segment(s) => {
                self.sender
                    .send_state(proto::downstream::Body::Segment(wire::segment_to_wire(
                        s.segment(),
                    )))
            }
            EventView::StreamStart(_) => {
                if let Some(w) = wire::event_to_wire(&event) {
                    self.sender.send_state(proto::downstream::Body::Event(w));
                }
            }
            EventView::Eos(_) => {
                let w = wire::event_to_wire(&event).expect("EOS is carried");
                match self
                    .sender
                    .send_data(proto::downstream::Body::Event(w), 0, None, None)
                {
                    Ok(seq) => {
                        if self.sender.wait_acked(seq) {
                            // Everything arrived: end the call cleanly.
                            let mut core = self.sender.lock();
                            core.finished = true;
                            if let Some(id) = core.conn.as_ref().map(|c| c.id) {
                                drop(core);
                                self.sender.detach(id);
                            }
                        } else {
                            gst::warning!(CAT, imp = self, "EOS not confirmed by the receiver");
                        }
                    }
                    Err(err) => gst::debug!(CAT, imp = self, "EOS not sent: {err:?}"),
                }
            }
            EventView::FlushStart(_)
            | EventView::FlushStop(_)
            | EventView::CustomDownstreamOob(_) => {
                let control = self.control_message(&event);
                if let Some(w) = wire::event_to_wire(&event)
                    && !self
                        .sender
                        .send_oob(proto::downstream::Body::Event(w), control)
                {
                    gst::debug!(CAT, imp = self, "not connected: {event:?} not sent now");
                }
            }
            EventView::Caps(_) => {}
            _ => {
                let control = self.control_message(&event);
                if event.is_serialized()
                    && let Some(w) = wire::event_to_wire(&event)
                    && let Err(err) =
                        self.sender
                            .send_data(proto::downstream::Body::Event(w), 0, None, control)
                {
                    gst::debug!(CAT, imp = self, "{event:?} not sent: {err:?}");
                }
            }
        }
        self.parent_event(event)
    }
}
