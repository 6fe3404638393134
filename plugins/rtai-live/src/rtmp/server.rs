//! Listeners, connections and mounts.
//!
//! One tokio listener per bound address serves every element of the process that
//! listens there ([`register`]). Each element registers a [`Mount`]: its RTMP
//! application, its stream name (empty: any one stream no named mount claims), its
//! keys, and a bounded channel to its streaming thread. A connection runs the
//! rml_rtmp handshake and server session, authorises `publish` against the mount
//! that would take the stream, then forwards the media messages (already FLV tag
//! bodies) to that mount. A publish no mount can take, or with a wrong key, is
//! refused with `NetStream.Publish.BadName`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use rml_rtmp::chunk_io::ChunkDeserializer;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::RtmpMessage;
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult, StreamMetadata,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;

use super::flv::TagKind;
use super::keys::{KeyFile, KeySet, split_publish_name};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "rtairtmpserver",
        gst::DebugColorFlags::empty(),
        Some("rtai RTMP server (listeners, sessions, stream keys)"),
    )
});

/// Bytes a connection may send before its publish is accepted (handshake and
/// commands need a few KiB).
const MAX_BYTES_BEFORE_PUBLISH: u64 = 256 * 1024;
/// Failed attempts from one address before it is throttled.
const FREE_FAILURES: u32 = 3;
const MAX_THROTTLE: Duration = Duration::from_secs(60);
const READ_SIZE: usize = 64 * 1024;

/// Listener-wide limits, set by the first element that listens on an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: u32,
    pub handshake_timeout: Duration,
    pub max_message_size: u32,
    pub max_chunk_size: u32,
}

/// What an element asks of the server.
#[derive(Clone)]
pub struct MountConfig {
    pub app: String,
    pub stream_name: String,
    pub keys: KeySet,
    pub key_file: Option<PathBuf>,
    pub auth_url: Option<String>,
    pub auth_timeout: Duration,
    pub idle_timeout: Duration,
}

impl std::fmt::Debug for MountConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountConfig")
            .field("app", &self.app)
            .field("stream_name", &self.stream_name)
            .field("keys", &self.keys)
            .field("key_file", &self.key_file)
            .field(
                "auth_url",
                &self.auth_url.as_deref().map(rtai_core::secrets::redact_url),
            )
            .field("auth_timeout", &self.auth_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

/// What a mount's element receives, in order.
#[derive(Debug)]
pub enum Event {
    /// A publisher was accepted; its tags follow.
    Start {
        publisher: u64,
        stream: String,
        client: SocketAddr,
    },
    /// One media message of `publisher` (an FLV tag body) with its RTMP timestamp.
    Tag {
        publisher: u64,
        kind: TagKind,
        timestamp: u32,
        data: Bytes,
    },
    /// `publisher` ended (`reason` as in `rtmp-publish-stop`).
    Stop { publisher: u64, reason: String },
}

/// Posts a bus message on the mount's element.
pub type Notify = Box<dyn Fn(gst::Structure) + Send + Sync>;

#[derive(Default)]
pub struct MountStats {
    pub publishes: AtomicU64,
    pub bytes: AtomicU64,
    pub refused: AtomicU64,
}

struct Current {
    id: u64,
    stream: String,
    kick: watch::Sender<bool>,
}

pub struct Mount {
    config: MountConfig,
    key_file: Mutex<Option<KeyFile>>,
    tx: mpsc::Sender<Event>,
    notify: Notify,
    current: Mutex<Option<Current>>,
    pub stats: MountStats,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

static NEXT_PUBLISHER: AtomicU64 = AtomicU64::new(1);

impl Mount {
    fn is_open(&self) -> bool {
        self.config.keys.is_empty()
            && self.config.key_file.is_none()
            && self.config.auth_url.is_none()
    }

    /// The keys of the property and the (re-read if changed) key file.
    fn local_keys(&self) -> KeySet {
        let mut keys = self.config.keys.clone();
        if let Some(file) = lock(&self.key_file).as_mut() {
            let path = file.path().to_path_buf();
            let (file_keys, error) = file.keys();
            keys.extend(file_keys);
            if let Some(e) = error {
                gst::warning!(CAT, "{}: {e}", path.display());
            }
        }
        keys
    }

    /// Whether this mount takes stream `name` among `mounts` (a named mount takes
    /// its name; the unnamed one any name no other mount of the app claims).
    fn accepts(&self, name: &str, mounts: &[Arc<Mount>]) -> bool {
        self.config.stream_name == name
            || (self.config.stream_name.is_empty()
                && !mounts.iter().any(|m| m.config.stream_name == name))
    }

    fn is_current(&self, id: u64) -> bool {
        lock(&self.current).as_ref().is_some_and(|c| c.id == id)
    }

    /// Makes `stream` this mount's publisher. A publisher of the same stream that
    /// is still connected (OBS reconnecting before its old TCP connection died)
    /// is replaced; another stream while one is live is refused.
    async fn attach(
        &self,
        stream: &str,
        client: SocketAddr,
    ) -> Result<(u64, watch::Receiver<bool>), &'static str> {
        let (kick_tx, kick_rx) = watch::channel(false);
        let id = NEXT_PUBLISHER.fetch_add(1, Ordering::Relaxed);
        {
            let mut current = lock(&self.current);
            if let Some(c) = current.as_ref()
                && c.stream != stream
            {
                return Err("busy");
            }
            if let Some(old) = current.take() {
                let _ = old.kick.send(true);
            }
            *current = Some(Current {
                id,
                stream: stream.to_string(),
                kick: kick_tx,
            });
        }
        self.stats.publishes.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .tx
            .send(Event::Start {
                publisher: id,
                stream: stream.to_string(),
                client,
            })
            .await;
        Ok((id, kick_rx))
    }

    async fn detach(&self, id: u64, reason: &str) {
        {
            let mut current = lock(&self.current);
            if current.as_ref().is_some_and(|c| c.id == id) {
                *current = None;
            }
        }
        let _ = self
            .tx
            .send(Event::Stop {
                publisher: id,
                reason: reason.to_string(),
            })
            .await;
    }

    /// Whether a publisher is attached now.
    pub fn publishing(&self) -> bool {
        lock(&self.current).is_some()
    }

    /// Ends the current publisher's connection (the element is stopping).
    fn kick(&self) {
        if let Some(c) = lock(&self.current).take() {
            let _ = c.kick.send(true);
        }
    }

    fn post(&self, s: gst::Structure) {
        (self.notify)(s)
    }
}

#[derive(Default)]
struct Throttle {
    /// Address → (failures in a row, throttled until).
    failures: HashMap<IpAddr, (u32, Option<Instant>)>,
}

impl Throttle {
    fn blocked(&self, ip: IpAddr) -> bool {
        self.failures
            .get(&ip)
            .and_then(|(_, until)| *until)
            .is_some_and(|until| until > Instant::now())
    }

    fn fail(&mut self, ip: IpAddr) {
        let now = Instant::now();
        if self.failures.len() > 4096 {
            self.failures
                .retain(|_, (_, until)| until.is_some_and(|u| u > now));
        }
        let entry = self.failures.entry(ip).or_insert((0, None));
        entry.0 += 1;
        if entry.0 >= FREE_FAILURES {
            let exp = (entry.0 - FREE_FAILURES).min(6);
            entry.1 = Some(now + (Duration::from_secs(1) * (1 << exp)).min(MAX_THROTTLE));
        }
    }

    fn succeed(&mut self, ip: IpAddr) {
        self.failures.remove(&ip);
    }
}

#[derive(Default)]
pub struct ListenerStats {
    pub connections: AtomicU64,
    pub connections_total: AtomicU64,
    pub connections_rejected: AtomicU64,
}

struct Shared {
    limits: Limits,
    mounts: Mutex<Vec<Arc<Mount>>>,
    throttle: Mutex<Throttle>,
    stats: ListenerStats,
}

impl Shared {
    fn mounts_for(&self, app: &str) -> Vec<Arc<Mount>> {
        lock(&self.mounts)
            .iter()
            .filter(|m| m.config.app == app)
            .cloned()
            .collect()
    }

    fn post_all(&self, s: &gst::Structure) {
        for m in lock(&self.mounts).iter() {
            m.stats.refused.fetch_add(1, Ordering::Relaxed);
            m.post(s.clone());
        }
    }
}

struct Listener {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
    _shutdown: watch::Sender<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.accept.abort();
        let mut reg = lock(&LISTENERS);
        if reg.get(&self.addr).is_some_and(|w| w.strong_count() == 0) {
            reg.remove(&self.addr);
        }
        gst::debug!(CAT, "listener on {} closed", self.addr);
    }
}

static LISTENERS: LazyLock<Mutex<HashMap<SocketAddr, Weak<Listener>>>> =
    LazyLock::new(Default::default);

/// An element's place on a listener; dropping it unregisters the mount, ends its
/// publisher's connection and closes the listener if it was the last.
pub struct Registration {
    listener: Arc<Listener>,
    mount: Arc<Mount>,
}

impl Registration {
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.addr
    }

    pub fn mount(&self) -> &Mount {
        &self.mount
    }

    pub fn listener_stats(&self) -> (u64, u64, u64) {
        let s = &self.listener.shared.stats;
        (
            s.connections.load(Ordering::Relaxed),
            s.connections_total.load(Ordering::Relaxed),
            s.connections_rejected.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.listener.shared.mounts).retain(|m| !Arc::ptr_eq(m, &self.mount));
        self.mount.kick();
    }
}

/// Registers a mount on the listener for `listen` (created and bound if none is
/// running there; port 0 always binds a new one). Fails if the address cannot be
/// bound or another mount already has the same application and stream name.
pub fn register(
    listen: &str,
    limits: Limits,
    config: MountConfig,
    tx: mpsc::Sender<Event>,
    notify: Notify,
) -> Result<Registration, String> {
    let addr = std::net::ToSocketAddrs::to_socket_addrs(listen)
        .map_err(|e| format!("invalid listen address {listen:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("listen address {listen:?} resolves to nothing"))?;
    let mut reg = lock(&LISTENERS);
    let existing = (addr.port() != 0)
        .then(|| reg.get(&addr).and_then(Weak::upgrade))
        .flatten();
    let listener = match existing {
        Some(l) => {
            if l.shared.limits != limits {
                gst::debug!(
                    CAT,
                    "{addr}: the listener keeps the limits of the first element ({:?})",
                    l.shared.limits
                );
            }
            l
        }
        None => {
            let std_listener = std::net::TcpListener::bind(addr)
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            std_listener
                .set_nonblocking(true)
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            let bound = std_listener
                .local_addr()
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            let runtime = rtai_core::runtime::runtime();
            let _guard = runtime.enter();
            let tokio_listener = TcpListener::from_std(std_listener)
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            let shared = Arc::new(Shared {
                limits: limits.clone(),
                mounts: Mutex::new(Vec::new()),
                throttle: Mutex::new(Throttle::default()),
                stats: ListenerStats::default(),
            });
            let (shutdown_tx, shutdown_rx) = watch::channel(());
            let accept = runtime.spawn(accept_loop(tokio_listener, shared.clone(), shutdown_rx));
            let l = Arc::new(Listener {
                addr: bound,
                shared,
                accept,
                _shutdown: shutdown_tx,
            });
            reg.insert(bound, Arc::downgrade(&l));
            gst::debug!(CAT, "listening on {bound} ({limits:?})");
            l
        }
    };
    drop(reg);
    let mut mounts = lock(&listener.shared.mounts);
    if mounts
        .iter()
        .any(|m| m.config.app == config.app && m.config.stream_name == config.stream_name)
    {
        return Err(format!(
            "another element on {} already takes application {:?} stream {:?}",
            listener.addr, config.app, config.stream_name
        ));
    }
    let key_file = config.key_file.clone().map(KeyFile::new);
    let mount = Arc::new(Mount {
        config,
        key_file: Mutex::new(key_file),
        tx,
        notify,
        current: Mutex::new(None),
        stats: MountStats::default(),
    });
    mounts.push(mount.clone());
    drop(mounts);
    Ok(Registration { listener, mount })
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(shared.limits.max_connections as usize));
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        let (socket, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: wait a little, keep serving.
                gst::debug!(CAT, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            gst::debug!(CAT, "{peer}: closed at once, max-connections reached");
            shared
                .stats
                .connections_rejected
                .fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let _ = socket.set_nodelay(true);
        shared.stats.connections.fetch_add(1, Ordering::Relaxed);
        shared
            .stats
            .connections_total
            .fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut conn = Connection {
                shared: shared.clone(),
                peer,
                app: None,
                publish: None,
                received: 0,
            };
            let outcome = tokio::select! {
                r = conn.run(socket) => r,
                _ = shutdown.changed() => Err("server-stopped".to_string()),
            };
            let reason = match outcome {
                Ok(reason) => reason,
                Err(reason) => {
                    gst::debug!(CAT, "{peer}: closing: {reason}");
                    reason
                }
            };
            conn.finish(&reason).await;
            drop(permit);
            shared.stats.connections.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

struct Publish {
    mount: Arc<Mount>,
    id: u64,
    app: String,
    stream: String,
    started: Instant,
    bytes: u64,
    start_posted: bool,
    metadata: Option<StreamMetadata>,
    video_codec: Option<u8>,
    audio_codec: Option<u8>,
    kick: watch::Receiver<bool>,
}

struct Connection {
    shared: Arc<Shared>,
    peer: SocketAddr,
    app: Option<String>,
    publish: Option<Publish>,
    received: u64,
}

/// What to do after a batch of session results.
enum Next {
    Continue,
    /// Close after the responses written so far (a refusal), with this reason.
    Close(String),
}

fn video_codec_name(id: u32) -> &'static str {
    match id {
        2 => "sorenson-h263",
        3 => "screen-video",
        4 => "vp6",
        5 => "vp6-alpha",
        6 => "screen-video-2",
        7 => "h264",
        _ => "unknown",
    }
}

fn audio_codec_name(id: u32) -> &'static str {
    match id {
        0 | 3 => "pcm",
        1 => "adpcm",
        2 | 14 => "mp3",
        4..=6 => "nellymoser",
        7 => "alaw",
        8 => "mulaw",
        10 => "aac",
        11 => "speex",
        _ => "unknown",
    }
}

/// Runs `f` on the session; a panic inside rml_rtmp (it indexes some AMF values
/// without checking) becomes an error that closes this connection only.
/// Follows a connection's chunk stream to refuse a chunk size over the limit before the
/// session sees it: rml_rtmp 0.8 applies a peer's SetChunkSize inside `ServerSession` and
/// reports nothing (its `ClientChunkSizeChanged` event is never raised). A second
/// deserializer of the same crate, given the same bytes and the same chunk sizes, splits
/// the stream exactly as the session does.
struct ChunkSizeGuard {
    max: u32,
    chunks: ChunkDeserializer,
}

impl ChunkSizeGuard {
    fn new(max: u32) -> Self {
        Self {
            max,
            chunks: ChunkDeserializer::new(),
        }
    }

    /// Err(reason) when `bytes` complete a SetChunkSize over the limit, or do not parse.
    fn check(&mut self, bytes: &[u8]) -> Result<(), String> {
        let mut next = bytes;
        while let Some(payload) = guarded("chunk stream", || self.chunks.get_next_message(next))? {
            next = &[];
            // Only control messages of type 1 are decoded; media passes untouched.
            if payload.type_id != SET_CHUNK_SIZE {
                continue;
            }
            if let RtmpMessage::SetChunkSize { size } =
                guarded("SetChunkSize", || payload.to_rtmp_message())?
            {
                if size > self.max {
                    return Err(format!(
                        "chunk-size-too-large: {size} bytes (max-chunk-size {})",
                        self.max
                    ));
                }
                guarded("SetChunkSize", || {
                    self.chunks.set_max_chunk_size(size as usize)
                })?;
            }
        }
        Ok(())
    }
}

/// RTMP's message type of SetChunkSize.
const SET_CHUNK_SIZE: u8 = 1;

fn guarded<T, E: std::fmt::Display>(
    what: &str,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, String> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("malformed {what}: {e}")),
        Err(_) => Err(format!("malformed {what} (the parser gave up)")),
    }
}

impl Connection {
    async fn read(
        &mut self,
        socket: &mut TcpStream,
        buf: &mut [u8],
        deadline: Option<Instant>,
        idle: Duration,
    ) -> Result<usize, String> {
        let until = deadline.unwrap_or_else(|| Instant::now() + idle);
        let kicked = async {
            match self.publish.as_mut() {
                Some(p) => {
                    let _ = p.kick.wait_for(|k| *k).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let n = tokio::select! {
            r = tokio::time::timeout_at(until, socket.read(buf)) => match r {
                Err(_) if deadline.is_some() => return Err("handshake-timeout".into()),
                Err(_) => return Err("idle-timeout".into()),
                Ok(Err(e)) => return Err(format!("disconnected ({e})")),
                Ok(Ok(0)) => return Err("disconnected".into()),
                Ok(Ok(n)) => n,
            },
            _ = kicked => return Err("replaced".into()),
        };
        self.received += n as u64;
        if self.publish.is_none() && self.received > MAX_BYTES_BEFORE_PUBLISH {
            return Err(format!(
                "{} bytes before a publish was accepted (limit {MAX_BYTES_BEFORE_PUBLISH})",
                self.received
            ));
        }
        Ok(n)
    }

    /// Ok: a regular end (its reason); Err: the connection failed (its reason).
    async fn run(&mut self, mut socket: TcpStream) -> Result<String, String> {
        let limits = self.shared.limits.clone();
        let deadline = Instant::now() + limits.handshake_timeout;
        let mut buf = vec![0u8; READ_SIZE];
        let mut handshake = Handshake::new(PeerType::Server);
        let leftover = loop {
            let n = self
                .read(&mut socket, &mut buf, Some(deadline), Duration::ZERO)
                .await?;
            match guarded("handshake", || handshake.process_bytes(&buf[..n]))? {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    write(&mut socket, &response_bytes).await?;
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    write(&mut socket, &response_bytes).await?;
                    break remaining_bytes;
                }
            }
        };
        let mut config = ServerSessionConfig::new();
        config.chunk_size = 4096;
        let (mut session, results) =
            guarded("session start", || ServerSession::new(config.clone()))?;
        if let Next::Close(r) = self.handle(&mut socket, &mut session, results).await? {
            return Ok(r);
        }
        let mut chunk_sizes = ChunkSizeGuard::new(limits.max_chunk_size);
        let mut input = leftover;
        loop {
            if !input.is_empty() {
                chunk_sizes.check(&input)?;
                let results = guarded("chunk stream", || session.handle_input(&input))?;
                if let Next::Close(r) = self.handle(&mut socket, &mut session, results).await? {
                    return Ok(r);
                }
            }
            let (deadline, idle) = match &self.publish {
                Some(p) => (None, p.mount.config.idle_timeout),
                None => (Some(deadline), Duration::ZERO),
            };
            let n = self.read(&mut socket, &mut buf, deadline, idle).await?;
            input.clear();
            input.extend_from_slice(&buf[..n]);
        }
    }

    async fn handle(
        &mut self,
        socket: &mut TcpStream,
        session: &mut ServerSession,
        results: Vec<ServerSessionResult>,
    ) -> Result<Next, String> {
        let mut pending: std::collections::VecDeque<ServerSessionResult> = results.into();
        while let Some(result) = pending.pop_front() {
            match result {
                ServerSessionResult::OutboundResponse(packet) => {
                    write(socket, &packet.bytes).await?;
                }
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
                ServerSessionResult::RaisedEvent(event) => {
                    match self.on_event(socket, session, event, &mut pending).await? {
                        Next::Continue => {}
                        close => {
                            // Deliver the refusal before closing.
                            while let Some(ServerSessionResult::OutboundResponse(p)) =
                                pending.pop_front()
                            {
                                write(socket, &p.bytes).await?;
                            }
                            let _ = socket.flush().await;
                            return Ok(close);
                        }
                    }
                }
            }
        }
        Ok(Next::Continue)
    }

    async fn on_event(
        &mut self,
        _socket: &mut TcpStream,
        session: &mut ServerSession,
        event: ServerSessionEvent,
        pending: &mut std::collections::VecDeque<ServerSessionResult>,
    ) -> Result<Next, String> {
        match event {
            ServerSessionEvent::ConnectionRequested {
                request_id,
                app_name,
            } => {
                if self.shared.mounts_for(&app_name).is_empty() {
                    let results = guarded("connect", || {
                        session.reject_request(
                            request_id,
                            "NetConnection.Connect.Rejected",
                            "no stream is served on this application",
                        )
                    })?;
                    pending.extend(results);
                    self.refused(&app_name, "", "unknown-application", None);
                    return Ok(Next::Close("unknown-application".into()));
                }
                self.app = Some(app_name);
                pending.extend(guarded("connect", || session.accept_request(request_id))?);
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                app_name,
                stream_key,
                ..
            } => {
                if self.publish.is_some() {
                    pending.extend(guarded("publish", || {
                        session.reject_request(
                            request_id,
                            "NetStream.Publish.BadName",
                            "one publish per connection",
                        )
                    })?);
                    return Ok(Next::Continue);
                }
                match authorize(&self.shared, &app_name, &stream_key, self.peer).await {
                    Ok((mount, stream)) => match mount.attach(&stream, self.peer).await {
                        Ok((id, kick)) => {
                            gst::debug!(CAT, "{}: publishing {app_name}/{stream}", self.peer);
                            self.publish = Some(Publish {
                                mount,
                                id,
                                app: app_name,
                                stream,
                                started: Instant::now(),
                                bytes: 0,
                                start_posted: false,
                                metadata: None,
                                video_codec: None,
                                audio_codec: None,
                                kick,
                            });
                            pending
                                .extend(guarded("publish", || session.accept_request(request_id))?);
                        }
                        Err(reason) => {
                            return self.refuse(
                                session,
                                request_id,
                                &app_name,
                                &stream,
                                reason,
                                Some(mount),
                                pending,
                            );
                        }
                    },
                    Err(refusal) => {
                        return self.refuse(
                            session,
                            request_id,
                            &app_name,
                            &refusal.stream,
                            &refusal.reason,
                            refusal.mount,
                            pending,
                        );
                    }
                }
            }
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                if let Some(p) = self.publish.as_mut() {
                    p.metadata = Some(metadata);
                    self.post_start();
                }
            }
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => return self.media(TagKind::Video, data, timestamp.value).await,
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => return self.media(TagKind::Audio, data, timestamp.value).await,
            ServerSessionEvent::PublishStreamFinished { .. } => {
                if let Some(p) = self.publish.take() {
                    self.stopped(p, "unpublished").await;
                }
            }
            ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                pending.extend(guarded("play", || {
                    session.reject_request(
                        request_id,
                        "NetStream.Play.Failed",
                        "this server only accepts publishers",
                    )
                })?);
                return Ok(Next::Close("play-refused".into()));
            }
            _ => {}
        }
        Ok(Next::Continue)
    }

    #[allow(clippy::too_many_arguments)]
    fn refuse(
        &mut self,
        session: &mut ServerSession,
        request_id: u32,
        app: &str,
        stream: &str,
        reason: &str,
        mount: Option<Arc<Mount>>,
        pending: &mut std::collections::VecDeque<ServerSessionResult>,
    ) -> Result<Next, String> {
        gst::debug!(CAT, "{}: publish refused: {reason}", self.peer);
        pending.extend(guarded("publish", || {
            session.reject_request(request_id, "NetStream.Publish.BadName", reason)
        })?);
        self.refused(app, stream, reason, mount);
        Ok(Next::Close(format!("refused: {reason}")))
    }

    fn refused(&self, app: &str, stream: &str, reason: &str, mount: Option<Arc<Mount>>) {
        let s = gst::Structure::builder("rtmp-publish-refused")
            .field("stream", stream)
            .field("app", app)
            .field("client", self.peer.to_string())
            .field("reason", reason)
            .build();
        match mount {
            Some(m) => {
                m.stats.refused.fetch_add(1, Ordering::Relaxed);
                m.post(s);
            }
            None => self.shared.post_all(&s),
        }
    }

    async fn media(&mut self, kind: TagKind, data: Bytes, timestamp: u32) -> Result<Next, String> {
        let max = self.shared.limits.max_message_size as usize;
        let Some(p) = self.publish.as_mut() else {
            return Ok(Next::Continue);
        };
        if data.len() > max {
            return Err(format!(
                "message-too-large: {} bytes (max-message-size {max})",
                data.len()
            ));
        }
        if let Some(&first) = data.first() {
            match kind {
                TagKind::Video if first & 0x80 != 0 => {
                    let fourcc: String = data
                        .get(1..5)
                        .map(|f| {
                            f.iter()
                                .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
                                .collect()
                        })
                        .unwrap_or_default();
                    return Err(format!(
                        "unsupported-codec: Enhanced RTMP video (FourCC {fourcc}) is not supported, publish H.264"
                    ));
                }
                TagKind::Video => p.video_codec = p.video_codec.or(Some(first & 0x0f)),
                TagKind::Audio => p.audio_codec = p.audio_codec.or(Some(first >> 4)),
            }
        }
        p.bytes += data.len() as u64;
        p.mount
            .stats
            .bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        let (id, mount) = (p.id, p.mount.clone());
        if !p.start_posted && p.video_codec.is_some() && p.audio_codec.is_some()
            || p.started.elapsed() > Duration::from_secs(1)
        {
            self.post_start();
        }
        if !mount.is_current(id) {
            return Err("replaced".into());
        }
        // Waits while the element's queue is full: TCP pushes back on the publisher.
        let _ = mount
            .tx
            .send(Event::Tag {
                publisher: id,
                kind,
                timestamp,
                data,
            })
            .await;
        Ok(Next::Continue)
    }

    fn post_start(&mut self) {
        let Some(p) = self.publish.as_mut() else {
            return;
        };
        if p.start_posted {
            return;
        }
        p.start_posted = true;
        let md = p.metadata.clone().unwrap_or_else(StreamMetadata::new);
        let video = md
            .video_codec_id
            .or(p.video_codec.map(u32::from))
            .map(video_codec_name)
            .unwrap_or("none");
        let audio = md
            .audio_codec_id
            .or(p.audio_codec.map(u32::from))
            .map(audio_codec_name)
            .unwrap_or("none");
        let mut s = gst::Structure::builder("rtmp-publish-start")
            .field("stream", p.stream.as_str())
            .field("app", p.app.as_str())
            .field("client", self.peer.to_string())
            .field("video-codec", video)
            .field("audio-codec", audio)
            .build();
        if let Some(w) = md.video_width {
            s.set("width", w);
        }
        if let Some(h) = md.video_height {
            s.set("height", h);
        }
        if let Some(f) = md.video_frame_rate {
            s.set("framerate", f as f64);
        }
        if let Some(r) = md.audio_sample_rate {
            s.set("audio-rate", r);
        }
        if let Some(e) = md.encoder.as_deref() {
            s.set("encoder", e);
        }
        p.mount.post(s);
    }

    async fn stopped(&mut self, p: Publish, reason: &str) {
        let s = gst::Structure::builder("rtmp-publish-stop")
            .field("stream", p.stream.as_str())
            .field("app", p.app.as_str())
            .field("client", self.peer.to_string())
            .field("reason", reason)
            .field("bytes", p.bytes)
            .field(
                "duration",
                gst::ClockTime::from_nseconds(p.started.elapsed().as_nanos() as u64),
            )
            .build();
        // Posted before the element hears of the end, so the message precedes its EOS.
        p.mount.post(s);
        p.mount.detach(p.id, reason).await;
    }

    async fn finish(&mut self, reason: &str) {
        if let Some(p) = self.publish.take() {
            let reason = if reason.starts_with("disconnected") {
                "disconnected"
            } else {
                reason
            };
            self.stopped(p, reason).await;
        }
    }
}

async fn write(socket: &mut TcpStream, bytes: &[u8]) -> Result<(), String> {
    socket
        .write_all(bytes)
        .await
        .map_err(|e| format!("disconnected ({e})"))
}

struct Refusal {
    reason: String,
    /// The stream as reported: empty when the publish name may be a key.
    stream: String,
    mount: Option<Arc<Mount>>,
}

fn by_name(mounts: &[Arc<Mount>], name: &str) -> Option<Arc<Mount>> {
    mounts
        .iter()
        .find(|m| m.config.stream_name == name)
        .or_else(|| mounts.iter().find(|m| m.config.stream_name.is_empty()))
        .cloned()
}

/// Decides a publish: the mount and stream name it goes to, or why not.
async fn authorize(
    shared: &Shared,
    app: &str,
    publish: &str,
    peer: SocketAddr,
) -> Result<(Arc<Mount>, String), Refusal> {
    let mounts = shared.mounts_for(app);
    let (name, key) = split_publish_name(publish);
    let reported = if key.is_some() {
        name.clone()
    } else {
        String::new()
    };
    let refusal = |reason: &str, mount: Option<Arc<Mount>>| Refusal {
        reason: reason.to_string(),
        stream: reported.clone(),
        mount,
    };
    if lock(&shared.throttle).blocked(peer.ip()) {
        return Err(refusal("throttled", by_name(&mounts, &name)));
    }
    let outcome = match key {
        Some(key) => match by_name(&mounts, &name) {
            None => Err(refusal("no-element", None)),
            Some(m) => match check(&m, app, &name, &key, peer).await {
                Ok(()) => Ok((m, name)),
                Err(reason) => Err(refusal(&reason, Some(m))),
            },
        },
        None => 'bare: {
            // An element without keys takes the name as it is.
            if let Some(m) = by_name(&mounts, &name)
                && m.is_open()
            {
                break 'bare Ok((m, name));
            }
            // Otherwise the name is a key (OBS: rtmp://host/live + stream key).
            for m in &mounts {
                if let Some(stream) = m
                    .local_keys()
                    .streams_for_key(&name)
                    .into_iter()
                    .find(|s| m.accepts(s, &mounts))
                {
                    break 'bare Ok((m.clone(), stream));
                }
            }
            let mut reason = "bad-key".to_string();
            let mut hook_mount = None;
            for m in mounts.iter().filter(|m| m.config.auth_url.is_some()) {
                match ask_hook(m, app, "", &name, peer).await {
                    Ok(stream) => {
                        let stream = stream.unwrap_or_default();
                        if m.accepts(&stream, &mounts) {
                            break 'bare Ok((m.clone(), stream));
                        }
                    }
                    Err(r) => {
                        reason = r;
                        hook_mount = Some(m.clone());
                    }
                }
            }
            Err(refusal(
                &reason,
                hook_mount.or_else(|| (mounts.len() == 1).then(|| mounts[0].clone())),
            ))
        }
    };
    match &outcome {
        Ok(_) => lock(&shared.throttle).succeed(peer.ip()),
        Err(r) if r.reason != "no-element" => lock(&shared.throttle).fail(peer.ip()),
        Err(_) => {}
    }
    outcome
}

/// Checks `key` for stream `name` on `mount`: its keys, then its hook.
async fn check(
    mount: &Mount,
    app: &str,
    name: &str,
    key: &str,
    peer: SocketAddr,
) -> Result<(), String> {
    if mount.is_open() || mount.local_keys().verify(name, key) {
        return Ok(());
    }
    if mount.config.auth_url.is_some() {
        return ask_hook(mount, app, name, key, peer).await.map(|_| ());
    }
    Err("bad-key".into())
}

static HTTP: LazyLock<reqwest::Client> = LazyLock::new(|| {
    rtai_core::runtime::ensure_tls_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client builds (the TLS provider is installed)")
});

/// POSTs `{app, stream, key, client}` to the mount's auth-url. 2xx accepts (an
/// optional JSON body `{"stream": ...}` names the stream of a key-only publish);
/// anything else, an error or the timeout refuses.
async fn ask_hook(
    mount: &Mount,
    app: &str,
    stream: &str,
    key: &str,
    peer: SocketAddr,
) -> Result<Option<String>, String> {
    let Some(url) = mount.config.auth_url.as_deref() else {
        return Err("bad-key".into());
    };
    let body = serde_json::json!({
        "app": app,
        "stream": stream,
        "key": key,
        "client": peer.ip().to_string(),
    });
    let request = async {
        let response = HTTP.post(url).json(&body).send().await.map_err(|e| {
            gst::debug!(
                CAT,
                "auth-url {} failed: {}",
                rtai_core::secrets::redact_url(url),
                if e.is_connect() {
                    "cannot connect"
                } else {
                    "request failed"
                }
            );
            "auth-error".to_string()
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("auth-refused (HTTP {})", status.as_u16()));
        }
        let bytes = response.bytes().await.unwrap_or_default();
        let stream = (bytes.len() <= 64 * 1024)
            .then(|| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .flatten()
            .and_then(|v| v.get("stream")?.as_str().map(str::to_string));
        Ok(stream)
    };
    match tokio::time::timeout(mount.config.auth_timeout, request).await {
        Ok(r) => r,
        Err(_) => Err("auth-timeout".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rml_rtmp::chunk_io::ChunkSerializer;
    use rml_rtmp::messages::MessagePayload;
    use rml_rtmp::time::RtmpTimestamp;

    fn session() -> ServerSession {
        ServerSession::new(ServerSessionConfig::new()).unwrap().0
    }

    fn message(type_id: u8, data: &[u8]) -> Vec<u8> {
        ChunkSerializer::new()
            .serialize(
                &MessagePayload {
                    timestamp: RtmpTimestamp::new(0),
                    type_id,
                    message_stream_id: 0,
                    data: Bytes::copy_from_slice(data),
                },
                true,
                false,
            )
            .unwrap()
            .bytes
    }

    #[test]
    fn chunk_size_guard_follows_the_stream_and_refuses_large_sizes() {
        let mut ser = ChunkSerializer::new();
        // 4096 is allowed; a 10 KB message chunked at 4096 must then parse in step.
        let mut allowed = ser
            .set_max_chunk_size(4096, RtmpTimestamp::new(0))
            .unwrap()
            .bytes;
        let media = MessagePayload {
            timestamp: RtmpTimestamp::new(0),
            type_id: 9,
            message_stream_id: 1,
            data: Bytes::from(vec![0x17; 10_000]),
        };
        allowed.extend(ser.serialize(&media, false, false).unwrap().bytes);
        let too_large = ser
            .set_max_chunk_size(65_536, RtmpTimestamp::new(0))
            .unwrap()
            .bytes;

        // Fed whole and fed a byte at a time: the same verdicts.
        let mut whole = ChunkSizeGuard::new(4096);
        assert_eq!(whole.check(&allowed), Ok(()));
        let refused = whole.check(&too_large).unwrap_err();
        assert!(
            refused.starts_with("chunk-size-too-large: 65536"),
            "{refused}"
        );
        let mut bytewise = ChunkSizeGuard::new(4096);
        for b in &allowed {
            assert_eq!(bytewise.check(std::slice::from_ref(b)), Ok(()));
        }
        let verdicts: Vec<_> = too_large
            .iter()
            .map(|b| bytewise.check(std::slice::from_ref(b)))
            .collect();
        assert!(verdicts[..verdicts.len() - 1].iter().all(|v| v.is_ok()));
        assert!(verdicts.last().unwrap().is_err());
    }

    #[test]
    fn rml_rtmp_panics_become_errors() {
        // `@setDataFrame` without arguments: rml_rtmp 0.8 indexes an empty Vec.
        let input = message(18, &[&[0x02, 0x00, 0x0d][..], b"@setDataFrame"].concat());
        let mut s = session();
        let r = guarded("chunk stream", || s.handle_input(&input));
        assert!(r.is_err());
        // A command whose AMF string runs past the end.
        let mut s = session();
        assert!(
            guarded("chunk stream", || s
                .handle_input(&message(20, &[2, 0xff, 0xff, b'x'])))
            .is_err()
        );
    }

    proptest! {
        #[test]
        fn random_chunk_streams_end_in_results_or_errors(
            data in proptest::collection::vec(any::<u8>(), 0..4096),
            split in 1usize..512,
        ) {
            let mut s = session();
            for piece in data.chunks(split) {
                if guarded("chunk stream", || s.handle_input(piece)).is_err() {
                    break;
                }
            }
        }

        #[test]
        fn random_handshakes_end_in_results_or_errors(data in proptest::collection::vec(any::<u8>(), 0..8192)) {
            let mut hs = Handshake::new(PeerType::Server);
            let _ = guarded("handshake", || hs.process_bytes(&data));
        }

        #[test]
        fn throttle_blocks_after_three_failures(failures in 0u32..8) {
            let mut t = Throttle::default();
            let ip: IpAddr = "10.0.0.1".parse().unwrap();
            for _ in 0..failures {
                t.fail(ip);
            }
            prop_assert_eq!(t.blocked(ip), failures >= FREE_FAILURES);
            t.succeed(ip);
            prop_assert!(!t.blocked(ip));
        }
    }
}
