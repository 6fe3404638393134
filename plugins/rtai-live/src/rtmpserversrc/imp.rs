//! rtmpserversrc: a live source fed by an RTMP publisher (OBS, ffmpeg, rtmp2sink).
//!
//! The element registers a mount (application + stream name + keys) on the
//! process-wide listener for its `listen` address (crate::rtmp::server). The
//! connection task hands the publisher's media messages over a bounded channel;
//! `create()` frames each as an FLV tag (with a file header, a new segment and
//! DISCONT for every new publisher) so stock `flvdemux` reads the output.

use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::base_src::CreateSuccess;
use gst_base::subclass::prelude::*;
use tokio::sync::{mpsc, watch};

use crate::rtmp::flv::{self, Unwrapper};
use crate::rtmp::keys::KeySet;
use crate::rtmp::{Event, Limits, MountConfig, Registration, server};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "rtmpserversrc",
        gst::DebugColorFlags::empty(),
        Some("RTMP server source"),
    )
});

const DEFAULT_LISTEN: &str = "127.0.0.1:1935";
const DEFAULT_APP: &str = "live";
const DEFAULT_STREAM_NAME: &str = "";
const DEFAULT_AUTH_TIMEOUT_MS: u32 = 2000;
const DEFAULT_IDLE_TIMEOUT_MS: u32 = 2000;
const DEFAULT_EOS_ON_DISCONNECT: bool = true;
const DEFAULT_MAX_CONNECTIONS: u32 = 64;
const DEFAULT_HANDSHAKE_TIMEOUT_MS: u32 = 5000;
const DEFAULT_MAX_MESSAGE_SIZE: u32 = 8 * 1024 * 1024;
/// ffmpeg and OBS announce 4096; 64 KiB leaves room for encoders that send larger chunks.
const DEFAULT_MAX_CHUNK_SIZE: u32 = 64 * 1024;
/// RTMP's largest useful chunk size (a message's length is 24 bits).
const MAX_CHUNK_SIZE: u32 = 0xFF_FFFF;
/// Media messages queued between a publisher's connection and the streaming
/// thread; when full, the connection stops reading (TCP pushes back).
const QUEUE_LEN: usize = 512;

#[derive(Clone)]
struct Settings {
    listen: String,
    app: String,
    stream_name: String,
    stream_keys: Option<String>,
    stream_key_file: Option<String>,
    auth_url: Option<String>,
    auth_timeout_ms: u32,
    idle_timeout_ms: u32,
    eos_on_disconnect: bool,
    max_connections: u32,
    handshake_timeout_ms: u32,
    max_message_size: u32,
    max_chunk_size: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.into(),
            app: DEFAULT_APP.into(),
            stream_name: DEFAULT_STREAM_NAME.into(),
            stream_keys: None,
            stream_key_file: None,
            auth_url: None,
            auth_timeout_ms: DEFAULT_AUTH_TIMEOUT_MS,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            eos_on_disconnect: DEFAULT_EOS_ON_DISCONNECT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            handshake_timeout_ms: DEFAULT_HANDSHAKE_TIMEOUT_MS,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_chunk_size: DEFAULT_MAX_CHUNK_SIZE,
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("app", &self.app)
            .field("stream_name", &self.stream_name)
            .field(
                "stream_keys",
                &self.stream_keys.as_ref().map(|_| "<redacted>"),
            )
            .field("stream_key_file", &self.stream_key_file)
            .field(
                "auth_url",
                &self.auth_url.as_deref().map(rtai_core::secrets::redact_url),
            )
            .field("auth_timeout_ms", &self.auth_timeout_ms)
            .field("idle_timeout_ms", &self.idle_timeout_ms)
            .field("eos_on_disconnect", &self.eos_on_disconnect)
            .field("max_connections", &self.max_connections)
            .field("handshake_timeout_ms", &self.handshake_timeout_ms)
            .field("max_message_size", &self.max_message_size)
            .field("max_chunk_size", &self.max_chunk_size)
            .finish()
    }
}

struct State {
    registration: Registration,
    /// Taken by `create()` while it waits.
    rx: Option<mpsc::Receiver<Event>>,
}

/// What the streaming thread has pushed.
#[derive(Default)]
struct Stream {
    publisher: Option<u64>,
    stream: String,
    need_header: bool,
    unwrapper: Unwrapper,
    /// Output ms = unwrapped RTMP ms + offset (keeps the output monotonic across publishers).
    offset: i64,
    first_out: Option<u64>,
    last_out: Option<u64>,
    bytes_since_header: u64,
    eos_sent: bool,
    tags: u64,
}

pub struct RtmpServerSrc {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    stream: Mutex<Stream>,
    flushing: watch::Sender<bool>,
    bound_port: Mutex<u32>,
    /// The stream name of the current (or last) publisher.
    publish_name: Mutex<String>,
}

enum Next {
    Event(Event),
    Flushing,
    Closed,
}

impl RtmpServerSrc {
    fn next_event(&self) -> Next {
        let Some(mut rx) = self
            .state
            .lock()
            .unwrap()
            .as_mut()
            .and_then(|s| s.rx.take())
        else {
            return Next::Flushing;
        };
        let mut flushing = self.flushing.subscribe();
        let next = rtai_core::runtime::runtime().block_on(async {
            tokio::select! {
                biased;
                _ = flushing.wait_for(|f| *f) => Next::Flushing,
                ev = rx.recv() => ev.map_or(Next::Closed, Next::Event),
            }
        });
        if let Some(state) = self.state.lock().unwrap().as_mut() {
            state.rx = Some(rx);
        }
        next
    }

    /// After EOS went downstream, a returning publisher restarts the stream:
    /// flush (EOS state cleared downstream), a new stream-start, then its segment.
    fn restart_after_eos(&self) {
        let pad = self.obj().static_pad("src").expect("src pad");
        gst::debug!(
            CAT,
            imp = self,
            "a publisher returned after EOS: flushing downstream"
        );
        pad.push_event(gst::event::FlushStart::new());
        pad.push_event(gst::event::FlushStop::new(false));
        let id = pad
            .stream_id()
            .map(|s| s.to_string())
            .unwrap_or_else(|| pad.create_stream_id(&*self.obj(), Some("rtmp")).to_string());
        pad.push_event(
            gst::event::StreamStart::builder(&id)
                .group_id(gst::GroupId::next())
                .build(),
        );
    }

    fn on_stop(&self, st: &mut Stream, reason: &str) {
        st.publisher = None;
        if st.need_header {
            // It sent no media: there is no stream to end (and flvdemux errors on an
            // EOS before any data).
            gst::debug!(
                CAT,
                imp = self,
                "publisher of {:?} left without media ({reason})",
                st.stream
            );
            return;
        }
        let eos = self.settings.lock().unwrap().eos_on_disconnect;
        let pad = self.obj().static_pad("src").expect("src pad");
        if eos {
            gst::debug!(
                CAT,
                imp = self,
                "publisher of {:?} gone ({reason}): EOS",
                st.stream
            );
            st.eos_sent = true;
            pad.push_event(gst::event::Eos::new());
        } else {
            gst::debug!(
                CAT,
                imp = self,
                "publisher of {:?} gone ({reason}): waiting for the next",
                st.stream
            );
            let s = gst::Structure::builder("rtmp-publish-stop")
                .field("stream", st.stream.as_str())
                .field("reason", reason)
                .build();
            pad.push_event(gst::event::CustomDownstream::new(s));
        }
    }

    fn stats(&self) -> gst::Structure {
        let st = self.stream.lock().unwrap();
        let state = self.state.lock().unwrap();
        let mut b = gst::Structure::builder("rtmpserversrc-stats").field("tags", st.tags);
        if let Some(state) = state.as_ref() {
            let (connections, total, rejected) = state.registration.listener_stats();
            let m = state.registration.mount();
            use std::sync::atomic::Ordering::Relaxed;
            b = b
                .field("connections", connections)
                .field("connections-total", total)
                .field("connections-rejected", rejected)
                .field("publishers", m.publishing() as u32)
                .field("publishes", m.stats.publishes.load(Relaxed))
                .field("bytes", m.stats.bytes.load(Relaxed))
                .field("refused", m.stats.refused.load(Relaxed));
        } else {
            b = b
                .field("connections", 0u64)
                .field("connections-total", 0u64)
                .field("connections-rejected", 0u64)
                .field("publishers", 0u32)
                .field("publishes", 0u64)
                .field("bytes", 0u64)
                .field("refused", 0u64);
        }
        b.build()
    }
}

#[glib::object_subclass]
impl ObjectSubclass for RtmpServerSrc {
    const NAME: &'static str = "GstRtmpServerSrc";
    type Type = super::RtmpServerSrc;
    type ParentType = gst_base::PushSrc;

    fn new() -> Self {
        Self {
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(None),
            stream: Mutex::new(Stream::default()),
            flushing: watch::channel(false).0,
            bound_port: Mutex::new(0),
            publish_name: Mutex::new(String::new()),
        }
    }
}

fn ms(v: u32) -> Duration {
    Duration::from_millis(v as u64)
}

impl ObjectImpl for RtmpServerSrc {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("listen")
                    .nick("Listen")
                    .blurb("address:port to listen on; elements with the same address share one listener (port 0 picks a free port, see bound-port)")
                    .default_value(Some(DEFAULT_LISTEN))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("publish-name")
                    .nick("Publish name")
                    .blurb("Stream name of the current (or last) publisher, set (and notified, when it changes) as its publish starts, before its media; empty before the first (abrsink takes it as its stream name, for every new publisher)")
                    .read_only()
                    .build(),
                glib::ParamSpecUInt::builder("bound-port")
                    .nick("Bound port")
                    .blurb("The port actually listened on (useful with listen port 0)")
                    .maximum(65535)
                    .read_only()
                    .build(),
                glib::ParamSpecString::builder("app")
                    .nick("Application")
                    .blurb("RTMP application (the path of rtmp://host/APP/stream)")
                    .default_value(Some(DEFAULT_APP))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("stream-name")
                    .nick("Stream name")
                    .blurb("Take only this stream; empty: any one stream no other element on the listener takes")
                    .default_value(Some(DEFAULT_STREAM_NAME))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("stream-keys")
                    .nick("Stream keys")
                    .blurb("name=key,... pairs (key may be sha256:<hex>); a publish must send the key as its name or as ?key= (write-only, never logged)")
                    .write_only()
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("stream-key-file")
                    .nick("Stream key file")
                    .blurb("File with one 'name key' per line (key may be sha256:<hex>), re-read when it changes (write-only like every key setting)")
                    .write_only()
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("auth-url")
                    .nick("Auth URL")
                    .blurb("HTTP hook: POST JSON {app, stream, key, client}; 2xx accepts, anything else or a timeout refuses")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("auth-timeout")
                    .nick("Auth timeout")
                    .blurb("Milliseconds to wait for auth-url before refusing")
                    .minimum(10)
                    .maximum(60_000)
                    .default_value(DEFAULT_AUTH_TIMEOUT_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("idle-timeout")
                    .nick("Idle timeout")
                    .blurb("Milliseconds without data after which a publisher counts as gone and its stream ends")
                    .minimum(100)
                    .maximum(600_000)
                    .default_value(DEFAULT_IDLE_TIMEOUT_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("eos-on-disconnect")
                    .nick("EOS on disconnect")
                    .blurb("Send EOS when the publisher leaves (a returning publisher then flushes and restarts the stream); false: send a custom rtmp-publish-stop event and continue with the next publisher")
                    .default_value(DEFAULT_EOS_ON_DISCONNECT)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-connections")
                    .nick("Max connections")
                    .blurb("Connections the listener holds at once (more are closed at once); set by the first element on an address")
                    .minimum(1)
                    .maximum(100_000)
                    .default_value(DEFAULT_MAX_CONNECTIONS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("handshake-timeout")
                    .nick("Handshake timeout")
                    .blurb("Milliseconds a connection has from accept to an accepted publish (handshake, connect, publish)")
                    .minimum(100)
                    .maximum(600_000)
                    .default_value(DEFAULT_HANDSHAKE_TIMEOUT_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-message-size")
                    .nick("Max message size")
                    .blurb("Largest audio/video message in bytes; a larger one closes the connection")
                    .minimum(1024)
                    .maximum(flv::MAX_TAG_BODY as u32)
                    .default_value(DEFAULT_MAX_MESSAGE_SIZE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-chunk-size")
                    .nick("Max chunk size")
                    .blurb("Largest chunk size in bytes a publisher may announce (SetChunkSize); a larger one closes the connection; set by the first element on an address")
                    .minimum(128)
                    .maximum(MAX_CHUNK_SIZE)
                    .default_value(DEFAULT_MAX_CHUNK_SIZE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("connections (listener, now), connections-total, connections-rejected, publishers (0/1), publishes, bytes, refused, tags")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        let string = || {
            value
                .get::<Option<String>>()
                .expect("type checked upstream")
                .filter(|s| !s.is_empty())
        };
        match pspec.name() {
            "listen" => s.listen = string().unwrap_or_else(|| DEFAULT_LISTEN.into()),
            "app" => s.app = string().unwrap_or_else(|| DEFAULT_APP.into()),
            "stream-name" => s.stream_name = string().unwrap_or_default(),
            "stream-keys" => s.stream_keys = string(),
            "stream-key-file" => s.stream_key_file = string(),
            "auth-url" => s.auth_url = string(),
            "auth-timeout" => s.auth_timeout_ms = value.get().expect("type checked upstream"),
            "idle-timeout" => s.idle_timeout_ms = value.get().expect("type checked upstream"),
            "eos-on-disconnect" => {
                s.eos_on_disconnect = value.get().expect("type checked upstream")
            }
            "max-connections" => s.max_connections = value.get().expect("type checked upstream"),
            "handshake-timeout" => {
                s.handshake_timeout_ms = value.get().expect("type checked upstream")
            }
            "max-message-size" => s.max_message_size = value.get().expect("type checked upstream"),
            "max-chunk-size" => s.max_chunk_size = value.get().expect("type checked upstream"),
            other => unreachable!("no writable property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock().unwrap();
        match pspec.name() {
            "listen" => s.listen.to_value(),
            "app" => s.app.to_value(),
            "stream-name" => s.stream_name.to_value(),
            "auth-url" => s
                .auth_url
                .as_deref()
                .map(rtai_core::secrets::redact_url)
                .to_value(),
            "auth-timeout" => s.auth_timeout_ms.to_value(),
            "idle-timeout" => s.idle_timeout_ms.to_value(),
            "eos-on-disconnect" => s.eos_on_disconnect.to_value(),
            "max-connections" => s.max_connections.to_value(),
            "handshake-timeout" => s.handshake_timeout_ms.to_value(),
            "max-message-size" => s.max_message_size.to_value(),
            "max-chunk-size" => s.max_chunk_size.to_value(),
            "bound-port" => self.bound_port.lock().unwrap().to_value(),
            "publish-name" => self.publish_name.lock().unwrap().to_value(),
            "stats" => {
                drop(s);
                self.stats().to_value()
            }
            other => unreachable!("no readable property {other}"),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.set_live(true);
        obj.set_format(gst::Format::Time);
        obj.set_do_timestamp(false);
    }
}

impl GstObjectImpl for RtmpServerSrc {}

impl ElementImpl for RtmpServerSrc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "RTMP server source",
                "Source/Network",
                "Listens for RTMP publishers (OBS, ffmpeg, rtmp2sink), checks stream keys and outputs the published stream as FLV; \
                 elements on the same address share one listener, one stream each",
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
                    &gst::Caps::builder("video/x-flv").build(),
                )
                .expect("valid template"),
            ]
        });
        TEMPLATES.as_ref()
    }
}

impl BaseSrcImpl for RtmpServerSrc {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let s = self.settings.lock().unwrap().clone();
        gst::debug!(CAT, imp = self, "starting: {s:?}");
        let keys = match s.stream_keys.as_deref() {
            Some(list) => KeySet::parse_pairs(list).map_err(|e| {
                gst::error_msg!(
                    gst::ResourceError::Settings,
                    ("Invalid stream-keys"),
                    ["{e}"]
                )
            })?,
            None => KeySet::default(),
        };
        let config = MountConfig {
            app: s.app.clone(),
            stream_name: s.stream_name.clone(),
            keys,
            key_file: s.stream_key_file.as_ref().map(Into::into),
            auth_url: s.auth_url.clone(),
            auth_timeout: ms(s.auth_timeout_ms),
            idle_timeout: ms(s.idle_timeout_ms),
        };
        let limits = Limits {
            max_connections: s.max_connections,
            handshake_timeout: ms(s.handshake_timeout_ms),
            max_message_size: s.max_message_size,
            max_chunk_size: s.max_chunk_size,
        };
        let (tx, rx) = mpsc::channel(QUEUE_LEN);
        let weak = self.obj().downgrade();
        let notify = Box::new(move |structure: gst::Structure| {
            if let Some(el) = weak.upgrade() {
                let _ = el.post_message(gst::message::Element::builder(structure).src(&el).build());
            }
        });
        let registration =
            server::register(&s.listen, limits, config, tx, notify).map_err(|e| {
                gst::error_msg!(
                    gst::ResourceError::OpenRead,
                    ("Cannot listen for RTMP publishers"),
                    ["{e}"]
                )
            })?;
        if config_is_open(&s) {
            gst::info!(
                CAT,
                imp = self,
                "no stream-keys, stream-key-file or auth-url: any publisher of {}/{} is accepted",
                s.app,
                if s.stream_name.is_empty() {
                    "*"
                } else {
                    &s.stream_name
                }
            );
        }
        *self.bound_port.lock().unwrap() = registration.local_addr().port() as u32;
        *self.stream.lock().unwrap() = Stream::default();
        *self.state.lock().unwrap() = Some(State {
            registration,
            rx: Some(rx),
        });
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *self.state.lock().unwrap() = None;
        Ok(())
    }

    fn is_seekable(&self) -> bool {
        false
    }

    fn unlock(&self) -> Result<(), gst::ErrorMessage> {
        self.flushing.send_replace(true);
        Ok(())
    }

    fn unlock_stop(&self) -> Result<(), gst::ErrorMessage> {
        self.flushing.send_replace(false);
        Ok(())
    }
}

fn config_is_open(s: &Settings) -> bool {
    s.stream_keys.is_none() && s.stream_key_file.is_none() && s.auth_url.is_none()
}

impl PushSrcImpl for RtmpServerSrc {
    fn create(
        &self,
        _buffer: Option<&mut gst::BufferRef>,
    ) -> Result<CreateSuccess, gst::FlowError> {
        loop {
            let event = match self.next_event() {
                Next::Event(e) => e,
                Next::Flushing => return Err(gst::FlowError::Flushing),
                Next::Closed => return Err(gst::FlowError::Eos),
            };
            let mut st = self.stream.lock().unwrap();
            match event {
                Event::Start {
                    publisher,
                    stream,
                    client,
                } => {
                    gst::debug!(
                        CAT,
                        imp = self,
                        "publisher {publisher} of {stream:?} from {client}"
                    );
                    st.publisher = Some(publisher);
                    let renamed = {
                        let mut name = self.publish_name.lock().unwrap();
                        let renamed = *name != stream;
                        name.clone_from(&stream);
                        renamed
                    };
                    st.stream = stream;
                    st.need_header = true;
                    st.unwrapper = Unwrapper::default();
                    st.first_out = None;
                    // Handlers may read other properties (`stats` takes this lock).
                    drop(st);
                    if renamed {
                        self.obj().notify("publish-name");
                    }
                }
                Event::Tag {
                    publisher,
                    kind,
                    timestamp,
                    data,
                } if st.publisher == Some(publisher) => {
                    let ts = st.unwrapper.unwrap(timestamp);
                    let first_out = match st.first_out {
                        Some(f) => f,
                        None => {
                            if st.eos_sent {
                                st.eos_sent = false;
                                self.restart_after_eos();
                            }
                            // Continue after what the previous publisher sent.
                            st.offset = match st.last_out {
                                Some(last) if ts <= last => last as i64 + 1 - ts as i64,
                                _ => 0,
                            };
                            let first = (ts as i64 + st.offset) as u64;
                            st.first_out = Some(first);
                            let start = gst::ClockTime::from_mseconds(first);
                            let mut segment = gst::FormattedSegment::<gst::ClockTime>::new();
                            segment.set_start(start);
                            segment.set_time(start);
                            segment.set_position(start);
                            segment.set_base(
                                self.obj()
                                    .current_running_time()
                                    .unwrap_or(gst::ClockTime::ZERO),
                            );
                            gst::debug!(CAT, imp = self, "new segment {segment:?}");
                            if let Err(e) = self.obj().new_segment(segment.upcast_ref()) {
                                gst::warning!(CAT, imp = self, "cannot start a new segment: {e}");
                            }
                            first
                        }
                    };
                    let out = ((ts as i64 + st.offset).max(first_out as i64)) as u64;
                    st.last_out = Some(st.last_out.map_or(out, |l| l.max(out)));
                    let Some(tag) = flv::tag(kind, out as u32, &data) else {
                        continue;
                    };
                    let mut bytes = Vec::with_capacity(13 + tag.len());
                    let header = std::mem::take(&mut st.need_header);
                    if header {
                        bytes.extend_from_slice(&flv::file_header());
                        st.bytes_since_header = 0;
                    }
                    bytes.extend_from_slice(&tag);
                    let mut buffer = gst::Buffer::from_mut_slice(bytes);
                    {
                        let b = buffer.get_mut().expect("new buffer");
                        b.set_pts(gst::ClockTime::from_mseconds(out));
                        b.set_offset(st.bytes_since_header);
                        if header {
                            b.set_flags(gst::BufferFlags::DISCONT);
                        }
                    }
                    st.bytes_since_header += buffer.size() as u64;
                    st.tags += 1;
                    return Ok(CreateSuccess::NewBuffer(buffer));
                }
                Event::Stop { publisher, reason } if st.publisher == Some(publisher) => {
                    self.on_stop(&mut st, &reason);
                }
                _ => {}
            }
        }
    }
}
