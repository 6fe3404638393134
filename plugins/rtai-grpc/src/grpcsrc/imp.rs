//! grpcsrc: receives a stream from a grpcsink (or any client of
//! proto/rtai_stream.proto) and pushes it downstream as it was sent.
//!
//! The network side (tokio) turns wire messages into items in a queue; the
//! source pad's task pushes them and reports the bytes it pushed back to the
//! sender as credit. Out-of-band events (cancel, flush) skip the queue. Data
//! messages are numbered: duplicates are dropped, and a gap (messages lost in
//! a reconnect) marks the next buffer DISCONT, is filled with a GAP event and
//! reported with a warning on the bus.
//!
//! Control events (segment start/commit/end/cancel, `rtai-control`) carry a
//! control id: once pushed downstream the receiver acks it back upstream
//! (`Upstream.control_ack`), and a copy the sender resent is acked again but
//! not pushed again (`rtai_core::control::Deduper`).

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use rtai_core::control::{ControlMessage, Deduper};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::transport::{self, NetSettings, Role};
use crate::wire::{self, proto};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "grpcsrc",
        gst::DebugColorFlags::empty(),
        Some("gRPC stream receiver"),
    )
});

const DEFAULT_ROLE: Role = Role::Server;
const DEFAULT_IS_LIVE: bool = false;
const DEFAULT_LATENCY_MS: u32 = 0;
const DEFAULT_RECONNECT: bool = true;
const DEFAULT_MAX_QUEUE_BYTES: u64 = 64 * 1024 * 1024;
/// How long stopping after EOS waits for the sender to end the call (it does once it
/// has the confirmation of EOS).
const EOS_LINGER: std::time::Duration = std::time::Duration::from_secs(1);
/// What a queued item costs beside its payload: events and state count too.
const ITEM_COST: u64 = 256;
const DEFAULT_DROP_CONTROL_ACKS: u32 = 0;

#[derive(Debug, Clone)]
struct Settings {
    role: Role,
    net: NetSettings,
    is_live: bool,
    latency_ms: u32,
    reconnect: bool,
    max_queue_bytes: u64,
    drop_control_acks: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            role: DEFAULT_ROLE,
            net: NetSettings::default(),
            is_live: DEFAULT_IS_LIVE,
            latency_ms: DEFAULT_LATENCY_MS,
            reconnect: DEFAULT_RECONNECT,
            max_queue_bytes: DEFAULT_MAX_QUEUE_BYTES,
            drop_control_acks: DEFAULT_DROP_CONTROL_ACKS,
        }
    }
}

enum Item {
    StreamStart(gst::Event),
    Caps(gst::Caps),
    Segment(gst::Segment),
    Buffer(gst::Buffer),
    Event(gst::Event),
}

struct Queued {
    item: Item,
    seq: u64,
    bytes: u64,
    conn: u64,
    /// A control event: acked once pushed.
    control_id: Option<String>,
}

type UpstreamTx = mpsc::UnboundedSender<Result<proto::Upstream, Status>>;

struct Conn {
    id: u64,
    stream_id: String,
    tx: UpstreamTx,
    consumed_bytes: u64,
}

#[derive(Default)]
struct Stats {
    buffers: u64,
    bytes: u64,
    connections: u64,
    duplicates: u64,
    gaps: u64,
    lost_messages: u64,
    rejected: u64,
    control_acks: u64,
    control_duplicates: u64,
    control_acks_dropped: u64,
}

#[derive(Default)]
struct Core {
    queue: VecDeque<Queued>,
    /// What `queue` costs: payload bytes plus ITEM_COST per item.
    queued_bytes: u64,
    max_queue_bytes: u64,
    /// The last data message the task pushed downstream.
    pushed_seq: u64,
    /// The stream id of the last call attached.
    stream_id: Option<String>,
    conn: Option<Conn>,
    next_conn_id: u64,
    last_seq: u64,
    /// Messages lost before the next buffer (reported on it).
    pending_gap: u64,
    /// Joined a running stream at this message (reported on the next buffer).
    joined_at: Option<u64>,
    flushing: bool,
    stopped: bool,
    /// EOS arrived: a call that ends now is finished, not lost.
    eos_received: bool,
    /// The sender's upstream latency (min, ns).
    sender_latency: Option<u64>,
    /// The pipeline latency downstream of us (the LATENCY event), ns: sent upstream.
    downstream_latency: Option<u64>,
    /// Control ids pushed or queued: copies are acked, not pushed again.
    control_seen: Deduper,
    /// Fault injection (`drop-control-acks`): acks to drop per id, and those dropped.
    drop_control_acks: u32,
    acks_dropped: HashMap<String, u32>,
    stats: Stats,
}

#[derive(Default)]
pub struct Receiver {
    core: Mutex<Core>,
    changed: Condvar,
    /// Woken when the queue shrinks (the network side waits for room).
    room: tokio::sync::Notify,
}

impl Receiver {
    fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new call from (or to) a sender, after its Hello. One stream at a time:
    /// the same stream id replaces a stale call, another id is refused. After EOS
    /// only the same stream reconnecting is taken (to confirm what it sent); a new
    /// stream is refused: this element pushed EOS and takes no more data until it
    /// goes to READY. `send_hello`: false when this side already sent its Hello
    /// (client mode sends it first).
    fn attach(
        &self,
        tx: UpstreamTx,
        hello: &proto::Hello,
        send_hello: bool,
    ) -> Result<u64, Status> {
        transport::check_hello(hello)?;
        if hello.stream_id.len() > wire::MAX_NAME_BYTES {
            return Err(Status::invalid_argument(format!(
                "stream id of {} bytes; at most {} are accepted",
                hello.stream_id.len(),
                wire::MAX_NAME_BYTES
            )));
        }
        let mut core = self.lock();
        if core.stopped {
            return Err(Status::unavailable("grpcsrc is stopping"));
        }
        if core.eos_received {
            let same_stream = core.stream_id.as_deref() == Some(hello.stream_id.as_str());
            if hello.last_seq == 0 || !same_stream || hello.last_seq > core.last_seq {
                core.stats.rejected += 1;
                return Err(Status::failed_precondition(
                    "this grpcsrc already received EOS and ended its stream; \
                     it takes a new stream after going to READY (or restarting)",
                ));
            }
        }
        if let Some(current) = core
            .conn
            .as_ref()
            .filter(|c| c.stream_id != hello.stream_id && !c.tx.is_closed())
            .map(|c| c.stream_id.clone())
        {
            core.stats.rejected += 1;
            return Err(Status::already_exists(format!(
                "this grpcsrc is receiving stream {current:?}; stream {:?} refused",
                hello.stream_id
            )));
        }
        if hello.last_seq == 0 {
            // A fresh sender: its numbering starts again.
            core.last_seq = 0;
            core.pushed_seq = 0;
        } else if core.last_seq == 0 && hello.acked_seq > 0 {
            // A fresh receiver joining a running stream: the sender resends what no
            // receiver confirmed; what came before went to a previous receiver.
            core.joined_at = Some(hello.acked_seq + 1);
            core.last_seq = hello.acked_seq;
        }
        core.next_conn_id += 1;
        let id = core.next_conn_id;
        let our_hello = proto::Hello {
            protocol_version: wire::PROTOCOL_VERSION,
            stream_id: hello.stream_id.clone(),
            last_seq: core.last_seq,
            acked_seq: 0,
            control_acks: true,
        };
        if send_hello {
            let _ = tx.send(Ok(proto::Upstream {
                body: Some(proto::upstream::Body::Hello(our_hello)),
            }));
        }
        // What was pushed already (perhaps on a call that ended before its credit went out).
        if core.pushed_seq > 0 {
            let _ = tx.send(Ok(proto::Upstream {
                body: Some(proto::upstream::Body::Credit(proto::Credit {
                    acked_seq: core.pushed_seq,
                    consumed_bytes: 0,
                })),
            }));
        }
        if let Some(min) = core.downstream_latency {
            let _ = tx.send(Ok(upstream_latency(min)));
        }
        if let Some(old) = core.conn.take() {
            // The replaced call ends now; its task can no longer enqueue (conn id checks).
            let _ = old.tx.send(Err(Status::aborted(
                "replaced by a newer call for the same stream",
            )));
        }
        core.stream_id = Some(hello.stream_id.clone());
        core.conn = Some(Conn {
            id,
            stream_id: hello.stream_id.clone(),
            tx,
            consumed_bytes: 0,
        });
        core.stats.connections += 1;
        Ok(id)
    }

    fn detach(&self, id: u64) {
        let mut core = self.lock();
        if core.conn.as_ref().is_some_and(|c| c.id == id) {
            core.conn = None;
            self.changed.notify_all();
        }
    }

    fn enqueue(&self, core: &mut Core, item: Item, seq: u64, bytes: u64, conn: u64) {
        core.queued_bytes += bytes + ITEM_COST;
        core.queue.push_back(Queued {
            item,
            seq,
            bytes,
            conn,
            control_id: None,
        });
        self.changed.notify_all();
    }

    /// One message from the sender. An error ends the call with that status.
    fn on_downstream(
        &self,
        id: u64,
        msg: proto::Downstream,
        element: &super::GrpcSrc,
    ) -> Result<(), Status> {
        let bad = |e: wire::WireError| Status::invalid_argument(e.to_string());
        let Some(body) = msg.body else {
            return Err(Status::invalid_argument("message without a body"));
        };
        let mut core = self.lock();
        if core.conn.as_ref().is_none_or(|c| c.id != id) {
            // A newer call for this stream took over (or the element stopped).
            return Err(Status::aborted(
                "this call was replaced by a newer one for the same stream",
            ));
        }
        let control_id = match &body {
            proto::downstream::Body::Event(ev) if !ev.control_id.is_empty() => {
                if ev.control_id.len() > rtai_core::control::MAX_ID_BYTES {
                    return Err(Status::invalid_argument(format!(
                        "control id of {} bytes; at most {} are accepted",
                        ev.control_id.len(),
                        rtai_core::control::MAX_ID_BYTES
                    )));
                }
                Some(ev.control_id.clone())
            }
            _ => None,
        };
        if let Some(cid) = &control_id
            && ((msg.seq > 0 && msg.seq <= core.last_seq) || core.control_seen.contains(cid))
        {
            // A copy the sender resent (its ack was lost or late): pushed (or
            // queued) already. Ack it again once it is out of the queue.
            core.stats.control_duplicates += 1;
            if !core
                .queue
                .iter()
                .any(|q| q.control_id.as_deref() == Some(cid))
            {
                send_control_ack(&mut core, cid);
            }
            return Ok(());
        }
        if msg.seq > 0 {
            if msg.seq <= core.last_seq {
                core.stats.duplicates += 1;
                // Credit the copy's bytes: the sender counted them as in flight.
                if let proto::downstream::Body::Buffer(b) = &body {
                    let pushed_seq = core.pushed_seq;
                    if let Some(conn) = core.conn.as_mut() {
                        conn.consumed_bytes += b.data.len() as u64;
                        let credit = proto::Credit {
                            acked_seq: pushed_seq,
                            consumed_bytes: conn.consumed_bytes,
                        };
                        let _ = conn.tx.send(Ok(proto::Upstream {
                            body: Some(proto::upstream::Body::Credit(credit)),
                        }));
                    }
                }
                return Ok(());
            }
            if msg.seq > core.last_seq + 1 {
                core.pending_gap += msg.seq - core.last_seq - 1;
            }
            core.last_seq = msg.seq;
        }
        match body {
            proto::downstream::Body::Hello(_) => {
                return Err(Status::invalid_argument("Hello sent twice"));
            }
            proto::downstream::Body::Caps(caps) => {
                let caps = wire::caps_from_wire(&caps).map_err(bad)?;
                self.enqueue(&mut core, Item::Caps(caps), msg.seq, 0, id);
            }
            proto::downstream::Body::Segment(segment) => {
                let segment = wire::segment_from_wire(&segment).map_err(bad)?;
                self.enqueue(&mut core, Item::Segment(segment), msg.seq, 0, id);
            }
            proto::downstream::Body::Buffer(buffer) => {
                let bytes = buffer.data.len() as u64;
                let buffer = wire::buffer_from_wire(buffer).map_err(bad)?;
                self.enqueue(&mut core, Item::Buffer(buffer), msg.seq, bytes, id);
            }
            proto::downstream::Body::Latency(l) => {
                // u64::MAX is "none" on the wire: no latency to add.
                let min = if l.min == wire::NONE { 0 } else { l.min };
                let changed = core.sender_latency != Some(min);
                core.sender_latency = Some(min);
                drop(core);
                if changed && element.imp().settings.lock().unwrap().is_live {
                    // The pipeline asks everyone's latency again and reconfigures.
                    let _ =
                        element.post_message(gst::message::Latency::builder().src(element).build());
                }
            }
            proto::downstream::Body::Event(ev) => {
                let event = wire::event_from_wire(&ev).map_err(bad)?;
                if let Some(cid) = &control_id {
                    core.control_seen.first_time(cid);
                    let mut m = ControlMessage::from_event(&event, core.stream_id.as_deref());
                    if let Some(mut m) = m.take() {
                        m.id = cid.clone();
                        // Not under the receiver's lock: a bus sync handler may read stats.
                        element.call_async(move |el| {
                            let _ = el.post_message(m.received_message(el, "grpc"));
                        });
                    }
                }
                match event.type_() {
                    gst::EventType::StreamStart => {
                        self.enqueue(&mut core, Item::StreamStart(event), msg.seq, 0, id)
                    }
                    gst::EventType::FlushStart => {
                        core.flushing = true;
                        core.queue.clear();
                        core.queued_bytes = 0;
                        self.changed.notify_all();
                        self.room.notify_waiters();
                        drop(core);
                        element.imp().srcpad.push_event(event);
                    }
                    gst::EventType::FlushStop => {
                        core.queue.clear();
                        core.queued_bytes = 0;
                        self.room.notify_waiters();
                        core.flushing = false;
                        drop(core);
                        element.imp().srcpad.push_event(event);
                        element.imp().start_task();
                    }
                    // Out of band: ahead of everything queued.
                    gst::EventType::CustomDownstreamOob => {
                        drop(core);
                        element.imp().srcpad.push_event(event);
                        if let Some(cid) = &control_id {
                            send_control_ack(&mut self.lock(), cid);
                        }
                    }
                    _ => {
                        core.eos_received |= event.type_() == gst::EventType::Eos;
                        self.enqueue(&mut core, Item::Event(event), msg.seq, 0, id);
                        if let Some(q) = core.queue.back_mut() {
                            q.control_id = control_id;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// After the task pushed an item: tell the sender (flow control and acks).
    /// Bytes count on the call that brought them; the ack goes to the current call.
    fn consumed(&self, queued: &Queued) {
        let mut core = self.lock();
        if let Some(cid) = &queued.control_id {
            send_control_ack(&mut core, cid);
        }
        core.pushed_seq = core.pushed_seq.max(queued.seq);
        let acked_seq = core.pushed_seq;
        if let Some(conn) = core.conn.as_mut() {
            if conn.id == queued.conn {
                conn.consumed_bytes += queued.bytes;
            }
            let credit = proto::Credit {
                acked_seq,
                consumed_bytes: conn.consumed_bytes,
            };
            let _ = conn.tx.send(Ok(proto::Upstream {
                body: Some(proto::upstream::Body::Credit(credit)),
            }));
        }
    }

    /// Waits until the queue is below max-queue-bytes (or the element stops or
    /// flushes). Meanwhile this call is not read: HTTP/2 flow control holds the
    /// sender back, whether or not it respects our credit.
    async fn wait_for_room(&self) {
        loop {
            let room = self.room.notified();
            {
                let core = self.lock();
                if core.queued_bytes < core.max_queue_bytes || core.stopped || core.flushing {
                    return;
                }
            }
            room.await;
        }
    }

    /// The downstream latency changed: tell the sender.
    fn set_downstream_latency(&self, min: u64) {
        let mut core = self.lock();
        core.downstream_latency = Some(min);
        if let Some(conn) = &core.conn {
            let _ = conn.tx.send(Ok(upstream_latency(min)));
        }
    }

    fn send_upstream_event(&self, event: &gst::Event) -> bool {
        let Some(wire) = wire::event_to_wire(event) else {
            return false;
        };
        let core = self.lock();
        core.conn.as_ref().is_some_and(|c| {
            c.tx.send(Ok(proto::Upstream {
                body: Some(proto::upstream::Body::Event(wire)),
            }))
            .is_ok()
        })
    }
}

/// Acks control message `id` to the sender (unless `drop-control-acks` says to drop it).
fn send_control_ack(core: &mut Core, id: &str) {
    if core.drop_control_acks > 0 {
        if core.acks_dropped.len() >= rtai_core::control::DEDUPE_WINDOW {
            core.acks_dropped.clear();
        }
        let dropped = core.acks_dropped.entry(id.to_string()).or_insert(0);
        if *dropped < core.drop_control_acks {
            *dropped += 1;
            core.stats.control_acks_dropped += 1;
            return;
        }
    }
    core.stats.control_acks += 1;
    if let Some(conn) = &core.conn {
        let _ = conn.tx.send(Ok(proto::Upstream {
            body: Some(proto::upstream::Body::ControlAck(proto::ControlAck {
                id: id.to_string(),
            })),
        }));
    }
}

fn upstream_latency(min: u64) -> proto::Upstream {
    proto::Upstream {
        body: Some(proto::upstream::Body::Latency(proto::Latency {
            live: true,
            min,
            max: wire::NONE,
        })),
    }
}

/// Reads a call's messages into the receiver until it ends; reports why it ended.
async fn receive<S>(
    receiver: Arc<Receiver>,
    id: u64,
    mut incoming: S,
    tx: UpstreamTx,
    element: glib::WeakRef<super::GrpcSrc>,
) -> Result<(), Status>
where
    S: tokio_stream::Stream<Item = Result<proto::Downstream, Status>> + Unpin,
{
    let result = loop {
        receiver.wait_for_room().await;
        match incoming.next().await {
            Some(Ok(msg)) => {
                let Some(el) = element.upgrade() else {
                    break Ok(());
                };
                if let Err(status) = receiver.on_downstream(id, msg, &el) {
                    if status.code() == tonic::Code::Aborted {
                        // Replaced by a newer call: not the sender's data's fault.
                        gst::debug!(CAT, obj = el, "call {id}: {}", status.message());
                        let _ = tx.send(Err(status.clone()));
                        break Err(status);
                    }
                    gst::warning!(
                        CAT,
                        obj = el,
                        "refusing a stream message: {}",
                        status.message()
                    );
                    gst::element_warning!(
                        el,
                        gst::StreamError::Decode,
                        ("Refused a malformed stream message"),
                        ["{}", status.message()]
                    );
                    let _ = tx.send(Err(status.clone()));
                    break Err(status);
                }
            }
            Some(Err(status)) => {
                // Decoding errors (oversized, malformed protobuf) end the call; tell the client why.
                if let Some(el) = element.upgrade() {
                    gst::element_warning!(
                        el,
                        gst::StreamError::Decode,
                        ("Refused a stream message"),
                        ["{}", status.message()]
                    );
                }
                let _ = tx.send(Err(status.clone()));
                break Err(status);
            }
            None => break Ok(()),
        }
        if receiver.lock().stopped {
            break Err(Status::unavailable("grpcsrc stopped"));
        }
    };
    receiver.detach(id);
    result
}

/// The Push endpoint a grpcsrc in server role offers to senders.
struct SrcService {
    receiver: Arc<Receiver>,
    element: glib::WeakRef<super::GrpcSrc>,
}

type BoxStream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl proto::stream_bridge_server::StreamBridge for SrcService {
    type PushStream = BoxStream<proto::Upstream>;
    type PullStream = BoxStream<proto::Downstream>;

    async fn push(
        &self,
        request: Request<Streaming<proto::Downstream>>,
    ) -> Result<Response<Self::PushStream>, Status> {
        let mut incoming = request.into_inner();
        let hello = match incoming.message().await?.and_then(|m| m.body) {
            Some(proto::downstream::Body::Hello(hello)) => hello,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message of a call must be Hello",
                ));
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.receiver.attach(tx.clone(), &hello, true)?;
        let (receiver, element) = (self.receiver.clone(), self.element.clone());
        rtai_core::runtime::runtime().spawn(async move {
            let _ = receive(receiver, id, incoming, tx, element).await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
        )))
    }

    async fn pull(
        &self,
        _request: Request<Streaming<proto::Upstream>>,
    ) -> Result<Response<Self::PullStream>, Status> {
        Err(Status::unimplemented(
            "this endpoint is a grpcsrc: senders call Push here; pull streams from a grpcsink in server mode",
        ))
    }
}

/// The client role: dial a grpcsink in server mode and pull its stream.
async fn run_client(
    receiver: Arc<Receiver>,
    settings: Settings,
    element: glib::WeakRef<super::GrpcSrc>,
) {
    let mut attempt = 0u32;
    loop {
        let outcome: Result<(), (String, bool)> = async {
            let mut client = transport::connect(&settings.net)
                .await
                .map_err(|e| (e, false))?;
            let (tx, rx) = mpsc::unbounded_channel::<Result<proto::Upstream, Status>>();
            let last_seq = receiver.lock().last_seq;
            let hello = proto::Hello {
                protocol_version: wire::PROTOCOL_VERSION,
                stream_id: String::new(),
                last_seq,
                acked_seq: 0,
                control_acks: true,
            };
            let _ = tx.send(Ok(proto::Upstream {
                body: Some(proto::upstream::Body::Hello(hello)),
            }));
            let outgoing =
                tokio_stream::wrappers::UnboundedReceiverStream::new(rx).filter_map(|m| m.ok());
            let response = client
                .pull(outgoing)
                .await
                .map_err(|s| transport::status_error(&s))?;
            let mut incoming = response.into_inner();
            let sender_hello = match incoming
                .message()
                .await
                .map_err(|s| transport::status_error(&s))?
                .and_then(|m| m.body)
            {
                Some(proto::downstream::Body::Hello(h)) => h,
                _ => return Err(("the sender did not start with Hello".to_string(), true)),
            };
            // Our Hello went first: attach() must not send another (the sender
            // would resume twice).
            let id = receiver
                .attach(tx.clone(), &sender_hello, false)
                .map_err(|s| transport::status_error(&s))?;
            attempt = 0;
            match receive(receiver.clone(), id, incoming, tx, element.clone()).await {
                Ok(()) => Err(("the sender ended the call".to_string(), false)),
                Err(s) => Err(transport::status_error(&s)),
            }
        }
        .await;
        let Some(el) = element.upgrade() else { return };
        let Err((message, permanent)) = outcome else {
            return;
        };
        if receiver.lock().stopped || receiver.lock().eos_received {
            return;
        }
        let message = transport::with_hint(&settings.net.uri, message);
        if permanent || !settings.reconnect {
            gst::element_error!(
                el,
                gst::ResourceError::Read,
                ("Stream from {} failed", settings.net.uri),
                ["{message}"]
            );
            return;
        }
        attempt += 1;
        if attempt == 1 {
            gst::element_warning!(
                el,
                gst::ResourceError::Read,
                ("Connection to {} lost, reconnecting", settings.net.uri),
                ["{message}"]
            );
        }
        drop(el);
        tokio::time::sleep(transport::backoff(attempt)).await;
    }
}

/// What the task has pushed so far (sticky events it must send first).
#[derive(Default)]
struct PushState {
    stream_started: bool,
    caps: Option<gst::Caps>,
    segment: Option<gst::Segment>,
    segment_pushed: bool,
    /// Live mode: sender running time → our running time, fixed at the first buffer.
    live_offset: Option<i64>,
    last_end: Option<gst::ClockTime>,
}

pub struct GrpcSrc {
    pub(super) srcpad: gst::Pad,
    settings: Mutex<Settings>,
    receiver: Arc<Receiver>,
    running: Mutex<Option<transport::Running>>,
    push_state: Mutex<PushState>,
    bound_port: Mutex<u32>,
}

impl GrpcSrc {
    pub(super) fn start_task(&self) {
        let this = self.ref_counted();
        if let Err(e) = self.srcpad.start_task(move || this.push_next()) {
            gst::error!(CAT, imp = self, "cannot start the push thread: {e}");
        }
    }

    fn push_next(&self) {
        let queued = {
            let mut core = self.receiver.lock();
            loop {
                if core.flushing || core.stopped {
                    drop(core);
                    let _ = self.srcpad.pause_task();
                    return;
                }
                if let Some(q) = core.queue.pop_front() {
                    core.queued_bytes = core.queued_bytes.saturating_sub(q.bytes + ITEM_COST);
                    self.receiver.room.notify_waiters();
                    break q;
                }
                core = self
                    .receiver
                    .changed
                    .wait(core)
                    .unwrap_or_else(|e| e.into_inner());
            }
        };
        let mut eos = false;
        let flow = match &queued.item {
            Item::StreamStart(ev) => {
                self.push_state.lock().unwrap().stream_started = true;
                self.srcpad.push_event(ev.clone());
                Ok(gst::FlowSuccess::Ok)
            }
            Item::Caps(caps) => {
                self.ensure_stream_start();
                let mut ps = self.push_state.lock().unwrap();
                if ps.caps.as_ref() != Some(caps) {
                    ps.caps = Some(caps.clone());
                    drop(ps);
                    self.srcpad.push_event(gst::event::Caps::new(caps));
                }
                Ok(gst::FlowSuccess::Ok)
            }
            Item::Segment(segment) => {
                let mut ps = self.push_state.lock().unwrap();
                ps.segment = Some(segment.clone());
                ps.segment_pushed = false;
                ps.live_offset = None;
                Ok(gst::FlowSuccess::Ok)
            }
            Item::Buffer(buffer) => self.push_buffer(buffer.clone()),
            Item::Event(ev) => {
                self.ensure_stream_start();
                eos = ev.type_() == gst::EventType::Eos;
                if eos || ev.type_() == gst::EventType::Gap {
                    self.ensure_segment(None);
                }
                self.srcpad.push_event(ev.clone());
                Ok(gst::FlowSuccess::Ok)
            }
        };
        // Confirm only what really went downstream: the rest is resent to whoever comes next.
        if flow.is_ok() {
            self.receiver.consumed(&queued);
        }
        match flow {
            Ok(_) if !eos => {}
            Ok(_) => {
                let _ = self.srcpad.pause_task();
            }
            Err(gst::FlowError::Flushing) => {
                let _ = self.srcpad.pause_task();
            }
            Err(err) => {
                let _ = self.srcpad.pause_task();
                if err == gst::FlowError::Eos {
                    return;
                }
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Failed,
                    ("Internal data stream error"),
                    ["streaming stopped, reason {err:?}"]
                );
                self.srcpad.push_event(gst::event::Eos::new());
            }
        }
    }

    fn ensure_stream_start(&self) {
        let mut ps = self.push_state.lock().unwrap();
        if !ps.stream_started {
            ps.stream_started = true;
            drop(ps);
            // A client that did not send one (another language's) still gets a valid stream.
            let id = self
                .srcpad
                .create_stream_id(&*self.obj(), Some("grpc"))
                .to_string();
            self.srcpad.push_event(gst::event::StreamStart::new(&id));
        }
    }

    /// Pushes the segment before the first buffer, mapped to our clock when live.
    fn ensure_segment(&self, first: Option<&gst::Buffer>) {
        let is_live = self.settings.lock().unwrap().is_live;
        let mut ps = self.push_state.lock().unwrap();
        if ps.segment_pushed {
            return;
        }
        let mut segment = ps
            .segment
            .clone()
            .unwrap_or_else(|| gst::FormattedSegment::<gst::ClockTime>::new().upcast());
        if is_live
            && let Some(buffer) = first
            && let Some(seg) = segment.downcast_ref::<gst::ClockTime>()
            && let Some(sender_rt) = buffer.pts().and_then(|pts| seg.to_running_time(pts))
            && let Some(our_rt) = self.obj().current_running_time()
        {
            // The first buffer plays now (+ latency); later ones keep their spacing.
            let offset = our_rt.nseconds() as i64 - sender_rt.nseconds() as i64;
            if let Ok(mut s) = segment.clone().downcast::<gst::ClockTime>() {
                if s.offset_running_time(offset).is_ok() {
                    segment = s.upcast();
                }
                ps.live_offset = Some(offset);
            }
        }
        ps.segment_pushed = true;
        drop(ps);
        self.srcpad.push_event(gst::event::Segment::new(&segment));
    }

    fn push_buffer(&self, mut buffer: gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        self.ensure_stream_start();
        self.ensure_segment(Some(&buffer));
        let (gap, joined_at) = {
            let mut core = self.receiver.lock();
            (std::mem::take(&mut core.pending_gap), core.joined_at.take())
        };
        if let Some(first) = joined_at {
            gst::element_imp_warning!(
                self,
                gst::StreamError::Failed,
                (
                    "Joined a running stream at message {first}: the {} messages before it went to a previous receiver",
                    first - 1
                ),
                ["first buffer here {:?}", buffer.pts()]
            );
            self.receiver.lock().stats.gaps += 1;
            buffer.make_mut().set_flags(gst::BufferFlags::DISCONT);
        }
        if gap > 0 {
            let last_end = self.push_state.lock().unwrap().last_end;
            gst::element_imp_warning!(
                self,
                gst::StreamError::Failed,
                ("{gap} stream messages were lost while reconnecting"),
                ["gap before buffer {:?}", buffer.pts()]
            );
            {
                let mut core = self.receiver.lock();
                core.stats.gaps += 1;
                core.stats.lost_messages += gap;
            }
            if let (Some(end), Some(pts)) = (last_end, buffer.pts())
                && pts > end
            {
                self.srcpad
                    .push_event(gst::event::Gap::builder(end).duration(pts - end).build());
            }
            buffer.make_mut().set_flags(gst::BufferFlags::DISCONT);
        }
        if let Some(end) = buffer
            .pts()
            .map(|p| p + buffer.duration().unwrap_or(gst::ClockTime::ZERO))
        {
            self.push_state.lock().unwrap().last_end = Some(end);
        }
        let size = buffer.size() as u64;
        let flow = self.srcpad.push(buffer);
        let mut core = self.receiver.lock();
        core.stats.buffers += 1;
        core.stats.bytes += size;
        flow
    }

    fn stats(&self) -> gst::Structure {
        let core = self.receiver.lock();
        let st = &core.stats;
        gst::Structure::builder("grpcsrc-stats")
            .field("buffers", st.buffers)
            .field("bytes", st.bytes)
            .field("connections", st.connections)
            .field("duplicates", st.duplicates)
            .field("gaps", st.gaps)
            .field("lost-messages", st.lost_messages)
            .field("rejected", st.rejected)
            .field("connected", core.conn.is_some())
            .field("queued", core.queue.len() as u32)
            .field("queued-bytes", core.queued_bytes)
            .field("control-acks", st.control_acks)
            .field("control-duplicates", st.control_duplicates)
            .field("control-acks-dropped", st.control_acks_dropped)
            .build()
    }

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings.lock().unwrap().clone();
        gst::debug!(
            CAT,
            imp = self,
            "starting: {:?} {:?}",
            settings.role,
            settings.net
        );
        *self.receiver.lock() = Core {
            max_queue_bytes: settings.max_queue_bytes,
            drop_control_acks: settings.drop_control_acks,
            ..Core::default()
        };
        *self.push_state.lock().unwrap() = PushState::default();
        let running = match settings.role {
            Role::Server => {
                let service = SrcService {
                    receiver: self.receiver.clone(),
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
                        gst::ResourceError::OpenRead,
                        ("Cannot receive the stream"),
                        ["{e}"]
                    )
                })?;
                *self.bound_port.lock().unwrap() = serving.local_addr.port() as u32;
                crate::warn_if_exposed(self.obj().upcast_ref(), &serving);
                transport::Running::Server(serving)
            }
            Role::Client => transport::Running::Client(rtai_core::runtime::runtime().spawn(
                run_client(self.receiver.clone(), settings, self.obj().downgrade()),
            )),
        };
        *self.running.lock().unwrap() = Some(running);
        Ok(())
    }

    fn stop(&self) {
        {
            let mut core = self.receiver.lock();
            // After EOS the last credit (the confirmation of EOS) may still be on its
            // way: give the sender a moment to receive it and end the call, or it
            // waits for it until its own timeout.
            let deadline = std::time::Instant::now() + EOS_LINGER;
            while core.eos_received && core.pushed_seq >= core.last_seq && core.conn.is_some() {
                let now = std::time::Instant::now();
                if now >= deadline {
                    break;
                }
                core = self
                    .receiver
                    .changed
                    .wait_timeout(core, deadline - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            core.stopped = true;
            if let Some(conn) = core.conn.take() {
                // Ends the sender's call now, so it reconnects (to our successor) at once.
                let _ = conn
                    .tx
                    .send(Err(Status::unavailable("the receiver stopped")));
            }
            core.queue.clear();
            core.queued_bytes = 0;
            self.receiver.changed.notify_all();
            self.receiver.room.notify_waiters();
        }
        *self.running.lock().unwrap() = None;
    }

    fn src_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        match event.type_() {
            gst::EventType::CustomUpstream | gst::EventType::Qos => {
                self.receiver.send_upstream_event(&event)
            }
            gst::EventType::Seek => {
                gst::debug!(CAT, obj = pad, "a live network stream cannot seek");
                false
            }
            gst::EventType::Latency => {
                if let gst::EventView::Latency(l) = event.view() {
                    self.receiver.set_downstream_latency(l.latency().nseconds());
                }
                gst::Pad::event_default(pad, Some(&*self.obj()), event)
            }
            _ => gst::Pad::event_default(pad, Some(&*self.obj()), event),
        }
    }

    fn src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        match query.view_mut() {
            gst::QueryViewMut::Latency(q) => {
                let settings = self.settings.lock().unwrap().clone();
                let sender_min = self.receiver.lock().sender_latency.unwrap_or(0);
                // Saturating: a sender can claim any u64; u64::MAX itself is "none".
                let min = (settings.latency_ms as u64 * 1_000_000)
                    .saturating_add(sender_min)
                    .min(gst::ClockTime::MAX.nseconds());
                q.set(
                    settings.is_live,
                    gst::ClockTime::from_nseconds(min),
                    gst::ClockTime::NONE,
                );
                true
            }
            gst::QueryViewMut::Scheduling(q) => {
                q.set(gst::SchedulingFlags::SEQUENTIAL, 1, -1, 0);
                q.add_scheduling_modes([gst::PadMode::Push]);
                true
            }
            _ => gst::Pad::query_default(pad, Some(&*self.obj()), query),
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for GrpcSrc {
    const NAME: &'static str = "GstGrpcSrc";
    type Type = super::GrpcSrc;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let srcpad =
            gst::Pad::builder_from_template(&klass.pad_template("src").expect("template exists"))
                .event_function(|pad, parent, event| {
                    GrpcSrc::catch_panic_pad_function(
                        parent,
                        || false,
                        |imp| imp.src_event(pad, event),
                    )
                })
                .query_function(|pad, parent, query| {
                    GrpcSrc::catch_panic_pad_function(
                        parent,
                        || false,
                        |imp| imp.src_query(pad, query),
                    )
                })
                .activatemode_function(|_pad, parent, _mode, active| {
                    GrpcSrc::catch_panic_pad_function(
                        parent,
                        || Err(gst::loggable_error!(CAT, "panic in activation")),
                        |imp| {
                            if active {
                                imp.receiver.lock().flushing = false;
                                imp.start_task();
                                Ok(())
                            } else {
                                imp.receiver.lock().flushing = true;
                                imp.receiver.changed.notify_all();
                                imp.srcpad.stop_task().map_err(|e| {
                                    gst::loggable_error!(CAT, "cannot stop the push thread: {e}")
                                })
                            }
                        },
                    )
                })
                .build();
        Self {
            srcpad,
            settings: Mutex::new(Settings::default()),
            receiver: Arc::new(Receiver::default()),
            running: Mutex::new(None),
            push_state: Mutex::new(PushState::default()),
            bound_port: Mutex::new(0),
        }
    }
}

impl ObjectImpl for GrpcSrc {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let mut props = vec![
                glib::ParamSpecEnum::builder_with_default("mode", DEFAULT_ROLE)
                    .nick("Mode")
                    .blurb("server: listen and let senders call Push; client: dial a grpcsink in server mode at uri and call Pull")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("is-live")
                    .nick("Is live")
                    .blurb("Act as a live source: timestamps are mapped so the first buffer's running time is its arrival time")
                    .default_value(DEFAULT_IS_LIVE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("latency")
                    .nick("Latency")
                    .blurb("Network latency (ms) to add to the sender's in the LATENCY query")
                    .maximum(60_000)
                    .default_value(DEFAULT_LATENCY_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("reconnect")
                    .nick("Reconnect")
                    .blurb("Client mode: redial with backoff when the sender goes away (false: a disconnect is an error)")
                    .default_value(DEFAULT_RECONNECT)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("max-queue-bytes")
                    .nick("Max queue bytes")
                    .blurb("Bytes received but not yet pushed downstream (payload + 256 per item, events too) before the receiver stops reading the call")
                    .minimum(64 * 1024)
                    .maximum(1 << 32)
                    .default_value(DEFAULT_MAX_QUEUE_BYTES)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("drop-control-acks")
                    .nick("Drop control acks")
                    .blurb("Fault injection for tests: drop the first N acks of every control message (the sender retries; 0 = off)")
                    .maximum(1000)
                    .default_value(DEFAULT_DROP_CONTROL_ACKS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("buffers, bytes, connections, duplicates, gaps, lost-messages, rejected, connected, queued, queued-bytes, control-acks, control-duplicates, control-acks-dropped")
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
            "is-live" => settings.is_live = value.get().expect("type checked upstream"),
            "latency" => settings.latency_ms = value.get().expect("type checked upstream"),
            "reconnect" => settings.reconnect = value.get().expect("type checked upstream"),
            "max-queue-bytes" => {
                settings.max_queue_bytes = value.get().expect("type checked upstream")
            }
            "drop-control-acks" => {
                settings.drop_control_acks = value.get().expect("type checked upstream");
                self.receiver.lock().drop_control_acks = settings.drop_control_acks;
            }
            name => crate::set_net_property(&mut settings.net, name, value),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = self.settings.lock().unwrap();
        match pspec.name() {
            "mode" => settings.role.to_value(),
            "is-live" => settings.is_live.to_value(),
            "latency" => settings.latency_ms.to_value(),
            "reconnect" => settings.reconnect.to_value(),
            "max-queue-bytes" => settings.max_queue_bytes.to_value(),
            "drop-control-acks" => settings.drop_control_acks.to_value(),
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
        let obj = self.obj();
        obj.add_pad(&self.srcpad).expect("src pad is new");
        obj.set_element_flags(gst::ElementFlags::SOURCE);
    }
}

impl GstObjectImpl for GrpcSrc {}

impl ElementImpl for GrpcSrc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "gRPC stream source",
                "Source/Network",
                "Receives buffers, caps, timestamps, metas and events from a grpcsink over gRPC (server or client role), \
                 with flow control, duplicate suppression and gap reporting",
                "rtai contributors",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            vec![
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &gst::Caps::new_any(),
                )
                .expect("valid template"),
            ]
        });
        TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::ReadyToPaused
            && let Err(err) = self.start()
        {
            self.post_error_message(err);
            return Err(gst::StateChangeError);
        }
        let mut success = self.parent_change_state(transition)?;
        match transition {
            gst::StateChange::PausedToReady => self.stop(),
            gst::StateChange::ReadyToPaused | gst::StateChange::PlayingToPaused
                if self.settings.lock().unwrap().is_live =>
            {
                success = gst::StateChangeSuccess::NoPreroll;
            }
            _ => {}
        }
        Ok(success)
    }
}
