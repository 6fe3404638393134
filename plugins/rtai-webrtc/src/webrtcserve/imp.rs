//! webrtcserve: `sink` → (`rtencodebin` if raw) → parser → payloader → `tee`
//! → per viewer `queue leaky=downstream` → `webrtcbin`. The chain after the
//! sink is built when the first caps arrive (the codec decides the payloader);
//! viewers are added and removed by the signalling server while the stream
//! runs, without touching the others.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use tokio::sync::{mpsc, watch};

use super::server::{Ctx, Server};
use super::signalling::ServerMessage;
use super::viewer::{Viewer, ViewerConfig};

pub static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "webrtcserve",
        gst::DebugColorFlags::empty(),
        Some("One encode to many WebRTC viewers"),
    )
});

const DEFAULT_LISTEN: &str = "127.0.0.1:3000";
const DEFAULT_PEER_ID: &str = "ffmpeg-bot";
const DEFAULT_MAX_VIEWERS: u32 = 16;
const DEFAULT_QUEUE_PACKETS: u32 = 300;
const DEFAULT_BITRATE: u32 = 2000;
const DEFAULT_KEY_FRAME_INTERVAL: u32 = 60;
/// Local candidates held for one WebSocket viewer until its offer/answer is sent.
const MAX_HELD_CANDIDATES: usize = 64;
/// Names of the elements of a viewer's branch (see viewer.rs).
const VIEWER_PREFIXES: [&str; 3] = ["queue-", "guard-", "webrtc-"];
/// What state changes say when the bin cannot be built (a reduced registry).
const MISSING_CORE: &str = "webrtcserve needs GStreamer's `identity` and `tee` elements (the coreelements plugin of GStreamer core), and the registry has not got them";
/// How long a joining viewer waits for the stream's first caps.
const CAPS_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
struct Settings {
    listen: String,
    peer_id: String,
    auth_token: Option<String>,
    max_viewers: u32,
    stun_server: Option<String>,
    turn_server: Option<String>,
    queue_packets: u32,
    bitrate: u32,
    key_frame_interval: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.into(),
            peer_id: DEFAULT_PEER_ID.into(),
            auth_token: None,
            max_viewers: DEFAULT_MAX_VIEWERS,
            stun_server: None,
            turn_server: None,
            queue_packets: DEFAULT_QUEUE_PACKETS,
            bitrate: DEFAULT_BITRATE,
            key_frame_interval: DEFAULT_KEY_FRAME_INTERVAL,
        }
    }
}

struct Entry {
    viewer: Arc<Viewer>,
    /// The signalling client to tell when the viewer goes (WebSocket viewers).
    client: Option<mpsc::Sender<String>>,
}

struct State {
    server: Server,
}

pub struct WebRtcServe {
    sinkpad: gst::GhostPad,
    /// `identity` and `tee` from coreelements: None when the registry lacks
    /// them (the bin then refuses READY with an error instead of panicking).
    entry: Option<gst::Element>,
    tee: Option<gst::Element>,
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    viewers: Mutex<HashMap<String, Entry>>,
    /// The payloader's caps once the stream runs (what viewers are offered).
    rtp_caps: watch::Sender<Option<gst::Caps>>,
    chain: Mutex<Vec<gst::Element>>,
    next_id: AtomicU64,
    connected_total: AtomicU64,
}

impl WebRtcServe {
    /// This bin's child that is `obj` or holds it.
    fn direct_child_of(&self, obj: &gst::Object) -> Option<gst::Object> {
        let me = self.obj();
        let mut cur = obj.clone();
        loop {
            let parent = cur.parent()?;
            if parent == *me.upcast_ref::<gst::Object>() {
                return Some(cur);
            }
            cur = parent;
        }
    }

    /// The entry element and the tee, or the error naming what is missing.
    fn core(&self) -> Result<(&gst::Element, &gst::Element), String> {
        match (&self.entry, &self.tee) {
            (Some(entry), Some(tee)) => Ok((entry, tee)),
            _ => Err(MISSING_CORE.into()),
        }
    }

    fn post(&self, s: gst::Structure) {
        let obj = self.obj();
        let _ = obj.post_message(gst::message::Element::builder(s).src(&*obj).build());
    }

    /// Builds the chain for `caps` between the entry element and the tee.
    fn build_chain(&self, caps: &gst::CapsRef) -> Result<(), String> {
        let name = caps
            .structure(0)
            .map(|s| s.name().to_string())
            .unwrap_or_default();
        let (entry, tee) = self.core()?;
        let (bitrate, key_frame_interval) = {
            let s = self.settings.lock().unwrap();
            (s.bitrate, s.key_frame_interval)
        };
        let make = |f: &str| {
            gst::ElementFactory::make(f)
                .build()
                .map_err(|_| format!("the `{f}` element is missing"))
        };
        let mut chain = Vec::new();
        match name.as_str() {
            "video/x-raw" | "video/x-h264" => {
                if name == "video/x-raw" {
                    let enc = make("rtencodebin")?;
                    enc.set_property("bitrate", bitrate);
                    enc.set_property("key-frame-interval", key_frame_interval);
                    chain.push(enc);
                    let f = make("capsfilter")?;
                    f.set_property(
                        "caps",
                        gst::Caps::builder("video/x-h264")
                            .field("profile", "constrained-baseline")
                            .build(),
                    );
                    chain.push(f);
                }
                let parse = make("h264parse")?;
                parse.set_property("config-interval", -1i32);
                chain.push(parse);
                let pay = make("rtph264pay")?;
                pay.set_property("config-interval", -1i32);
                pay.set_property_from_str("aggregate-mode", "zero-latency");
                chain.push(pay);
            }
            "video/x-vp8" => {
                let pay = make("rtpvp8pay")?;
                pay.set_property_from_str("picture-id-mode", "15-bit");
                chain.push(pay);
            }
            "video/x-av1" => chain.push(make("rtav1pay")?),
            other => return Err(format!("cannot serve `{other}`")),
        }
        let Some(pay) = chain.last() else {
            return Err("no payloader".into());
        };
        pay.set_property("pt", 96u32);
        pay.set_property("mtu", 1200u32);
        let obj = self.obj();
        obj.add_many(&chain).map_err(|e| e.to_string())?;
        let mut all = vec![entry.clone()];
        all.extend(chain.iter().cloned());
        all.push(tee.clone());
        gst::Element::link_many(&all).map_err(|e| format!("cannot link the chain: {e}"))?;
        for e in &chain {
            e.sync_state_with_parent().map_err(|e| e.to_string())?;
        }
        gst::info!(
            CAT,
            imp = self,
            "serving {name} through {} elements",
            chain.len()
        );
        *self.chain.lock().unwrap() = chain;
        Ok(())
    }

    fn settings(&self) -> Settings {
        self.settings.lock().unwrap().clone()
    }

    /// Adds a viewer branch (`prefix` names its origin: ws or whep).
    pub async fn add_viewer(
        &self,
        prefix: &str,
        client: Option<mpsc::Sender<String>>,
    ) -> Result<Arc<Viewer>, String> {
        let settings = self.settings();
        let (_, tee) = self.core()?;
        if self.viewers.lock().unwrap().len() >= settings.max_viewers as usize {
            return Err(format!(
                "this server takes at most {} viewers",
                settings.max_viewers
            ));
        }
        let mut rx = self.rtp_caps.subscribe();
        let caps = match tokio::time::timeout(CAPS_WAIT, rx.wait_for(|c| c.is_some())).await {
            Ok(Ok(c)) => c.clone().unwrap(),
            _ => return Err("the stream has not started yet".into()),
        };
        let id = format!("{prefix}-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let config = ViewerConfig {
            stun_server: settings.stun_server.as_deref(),
            turn_server: settings.turn_server.as_deref(),
            queue_packets: settings.queue_packets,
            rtp_caps: &caps,
        };
        let obj = self.obj();
        let viewer = Arc::new(Viewer::add(obj.upcast_ref(), tee, &id, &config)?);
        // A fatal flow return inside this viewer's branch drops this viewer only.
        let weak = obj.downgrade();
        let vid = id.clone();
        viewer.guard.set_on_fatal(move |flow| {
            let Some(obj) = weak.upgrade() else { return };
            let vid = vid.clone();
            rtai_core::runtime::runtime().spawn(async move {
                obj.imp()
                    .remove_viewer(&vid, super::guard::flow_name(flow))
                    .await;
            });
        });
        if let Some(tx) = &client {
            let tx = tx.clone();
            let peer_id = settings.peer_id.clone();
            let held = viewer.held_candidates.clone();
            viewer
                .webrtcbin
                .connect("on-ice-candidate", false, move |args| {
                    let mline = args[1].get::<u32>().unwrap_or(0);
                    let candidate = args[2].get::<String>().unwrap_or_default();
                    let text = ServerMessage::IceCandidate {
                        candidate,
                        sdp_mline_index: mline,
                        peer_id: peer_id.clone(),
                    }
                    .to_json();
                    // Gathering starts with set-local-description, before the
                    // offer/answer is sent: hold candidates until it is.
                    let mut held = held.lock().unwrap();
                    match held.as_mut() {
                        Some(list) if list.len() < MAX_HELD_CANDIDATES => list.push(text),
                        Some(_) => {}
                        None => {
                            let _ = tx.try_send(text);
                        }
                    }
                    None
                });
        }
        let weak = obj.downgrade();
        let vid = id.clone();
        viewer
            .webrtcbin
            .connect_notify(Some("connection-state"), move |w, _| {
                let state = w.property::<gst_webrtc::WebRTCPeerConnectionState>("connection-state");
                let Some(obj) = weak.upgrade() else { return };
                match state {
                    gst_webrtc::WebRTCPeerConnectionState::Connected => {
                        obj.imp().connected_total.fetch_add(1, Ordering::Relaxed);
                        gst::info!(CAT, obj = obj, "peer_connected: {vid}");
                        obj.imp().post(
                            gst::Structure::builder("peer_connected")
                                .field("viewer", &vid)
                                .build(),
                        );
                    }
                    gst_webrtc::WebRTCPeerConnectionState::Failed
                    | gst_webrtc::WebRTCPeerConnectionState::Closed => {
                        let reason = if state == gst_webrtc::WebRTCPeerConnectionState::Failed {
                            "ice-failed"
                        } else {
                            "closed"
                        };
                        let vid = vid.clone();
                        rtai_core::runtime::runtime().spawn(async move {
                            obj.imp().remove_viewer(&vid, reason).await;
                        });
                    }
                    _ => {}
                }
            });
        gst::info!(CAT, imp = self, "viewer {id} added");
        self.viewers.lock().unwrap().insert(
            id,
            Entry {
                viewer: viewer.clone(),
                client,
            },
        );
        Ok(viewer)
    }

    /// The viewer of this id, if it is still there.
    pub fn viewer(&self, id: &str) -> Option<Arc<Viewer>> {
        self.viewers
            .lock()
            .unwrap()
            .get(id)
            .map(|e| e.viewer.clone())
    }

    fn viewer_structure(name: &str, v: &Viewer, reason: Option<&str>) -> gst::Structure {
        let c = &v.counters;
        let mut b = gst::Structure::builder(name)
            .field("viewer", &v.id)
            .field("packets-sent", c.packets_out.load(Ordering::Relaxed))
            .field("frames-sent", c.frames_out.load(Ordering::Relaxed))
            .field("bytes-sent", c.bytes_out.load(Ordering::Relaxed))
            .field("dropped", c.dropped(v.queued()));
        if let Some(r) = reason {
            b = b.field("reason", r);
        }
        b.build()
    }

    /// Removes a viewer; false if there was none of that id.
    pub async fn remove_viewer(&self, id: &str, reason: &str) -> bool {
        let Some(entry) = self.viewers.lock().unwrap().remove(id) else {
            return false;
        };
        let s = Self::viewer_structure("peer_disconnected", &entry.viewer, Some(reason));
        gst::info!(CAT, imp = self, "peer_disconnected: {s}");
        if let Some(client) = &entry.client {
            let _ = client.try_send(
                ServerMessage::Leave {
                    peer_id: self.settings().peer_id,
                    reason: reason.into(),
                }
                .to_json(),
            );
        }
        let bin = self.obj().clone();
        let Some(tee) = self.tee.clone() else {
            return true;
        };
        let viewer = entry.viewer;
        // State changes of webrtcbin may block briefly: off the async workers.
        let _ = tokio::task::spawn_blocking(move || viewer.remove(bin.upcast_ref(), &tee)).await;
        self.post(s);
        true
    }

    fn stats(&self) -> gst::Structure {
        let viewers: Vec<glib::SendValue> = self
            .viewers
            .lock()
            .unwrap()
            .values()
            .map(|e| Self::viewer_structure("viewer", &e.viewer, None).to_send_value())
            .collect();
        let address = self
            .state
            .lock()
            .unwrap()
            .as_ref()
            .map(|s| s.server.addr.to_string())
            .unwrap_or_default();
        gst::Structure::builder("webrtcserve-stats")
            .field("address", address)
            .field("viewers", viewers.len() as u32)
            .field(
                "connected-total",
                self.connected_total.load(Ordering::Relaxed),
            )
            .field("viewer-stats", gst::Array::from_values(viewers))
            .build()
    }

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings();
        let server = Server::start(
            &settings.listen,
            Ctx {
                element: self.obj().downgrade(),
                peer_id: settings.peer_id.clone(),
                token: settings.auth_token.clone(),
            },
        )
        .map_err(|e| gst::error_msg!(gst::ResourceError::OpenRead, ("{e}")))?;
        gst::info!(
            CAT,
            imp = self,
            "signalling on http://{}/ (WebSocket /ws, WHEP /whep), peer id {}",
            server.addr,
            settings.peer_id
        );
        *self.state.lock().unwrap() = Some(State { server });
        Ok(())
    }

    fn stop(&self) {
        self.state.lock().unwrap().take();
        let ids: Vec<String> = self.viewers.lock().unwrap().keys().cloned().collect();
        for id in ids {
            let entry = self.viewers.lock().unwrap().remove(&id);
            if let (Some(entry), Some(tee)) = (entry, &self.tee) {
                entry.viewer.remove(self.obj().upcast_ref(), tee);
            }
        }
        let chain = std::mem::take(&mut *self.chain.lock().unwrap());
        for e in &chain {
            let _ = e.set_state(gst::State::Null);
        }
        let _ = self.obj().remove_many(&chain);
        self.rtp_caps.send_replace(None);
    }
}

#[glib::object_subclass]
impl ObjectSubclass for WebRtcServe {
    const NAME: &'static str = "GstWebRtcServe";
    type Type = super::WebRtcServe;
    type ParentType = gst::Bin;

    fn with_class(klass: &Self::Class) -> Self {
        let entry = gst::ElementFactory::make("identity")
            .name("entry")
            .build()
            .ok();
        let tee = gst::ElementFactory::make("tee")
            .name("tee")
            .property("allow-not-linked", true)
            .build()
            .ok();
        let sinkpad =
            gst::GhostPad::builder_from_template(&klass.pad_template("sink").unwrap()).build();
        Self {
            sinkpad,
            entry,
            tee,
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(None),
            viewers: Mutex::new(HashMap::new()),
            rtp_caps: watch::Sender::new(None),
            chain: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            connected_total: AtomicU64::new(0),
        }
    }
}

impl ObjectImpl for WebRtcServe {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("listen")
                    .nick("Listen address")
                    .blurb("host:port of the signalling server (player page /, WebSocket /ws, WHEP /whep); 0.0.0.0:3000 exposes it to the network")
                    .default_value(Some(DEFAULT_LISTEN))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("peer-id")
                    .nick("Peer id")
                    .blurb("The server-side peer's id that clients join")
                    .default_value(Some(DEFAULT_PEER_ID))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("auth-token")
                    .nick("Auth token")
                    .blurb("If set, every request needs `Authorization: Bearer <token>` or `?token=<token>` (write-only)")
                    .write_only()
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-viewers")
                    .nick("Max viewers")
                    .blurb("Most viewers at once; more are refused with an error")
                    .minimum(1)
                    .maximum(1000)
                    .default_value(DEFAULT_MAX_VIEWERS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("stun-server")
                    .nick("STUN server")
                    .blurb("stun://host:port for new viewers (none by default: loopback and LAN need none)")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("turn-server")
                    .nick("TURN server")
                    .blurb("turn(s)://user:password@host:port for new viewers (write-only: it holds credentials)")
                    .write_only()
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("queue-packets")
                    .nick("Queue packets")
                    .blurb("RTP packets each viewer's leaky queue holds before it drops the oldest")
                    .minimum(10)
                    .maximum(100_000)
                    .default_value(DEFAULT_QUEUE_PACKETS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("bitrate")
                    .nick("Bitrate")
                    .blurb("kbit/s of the one encode when the input is raw video (rtencodebin)")
                    .minimum(1)
                    .maximum(1_000_000)
                    .default_value(DEFAULT_BITRATE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("key-frame-interval")
                    .nick("Key frame interval")
                    .blurb("Most frames between key frames of the one encode when the input is raw video (rtencodebin); a joining viewer asks for a key frame at once anyway")
                    .minimum(1)
                    .maximum(100_000)
                    .default_value(DEFAULT_KEY_FRAME_INTERVAL)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("address, viewers, connected-total, viewer-stats (per viewer: packets-sent, frames-sent, bytes-sent, dropped)")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        let text = || {
            value
                .get::<Option<String>>()
                .expect("type checked upstream")
                .filter(|s| !s.is_empty())
        };
        match pspec.name() {
            "listen" => s.listen = text().unwrap_or_else(|| DEFAULT_LISTEN.into()),
            "peer-id" => s.peer_id = text().unwrap_or_else(|| DEFAULT_PEER_ID.into()),
            "auth-token" => s.auth_token = text(),
            "max-viewers" => s.max_viewers = value.get().expect("type checked upstream"),
            "stun-server" => s.stun_server = text(),
            "turn-server" => s.turn_server = text(),
            "queue-packets" => s.queue_packets = value.get().expect("type checked upstream"),
            "bitrate" => s.bitrate = value.get().expect("type checked upstream"),
            "key-frame-interval" => {
                s.key_frame_interval = value.get().expect("type checked upstream")
            }
            other => unreachable!("unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        if pspec.name() == "stats" {
            return self.stats().to_value();
        }
        let s = self.settings.lock().unwrap();
        match pspec.name() {
            "listen" => s.listen.to_value(),
            "peer-id" => s.peer_id.to_value(),
            "max-viewers" => s.max_viewers.to_value(),
            "stun-server" => s.stun_server.to_value(),
            "queue-packets" => s.queue_packets.to_value(),
            "bitrate" => s.bitrate.to_value(),
            "key-frame-interval" => s.key_frame_interval.to_value(),
            other => unreachable!("unknown or write-only property {other}"),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add_pad(&self.sinkpad).unwrap();
        let Ok((entry, tee)) = self.core() else {
            // Reported as an error when the bin is set to READY.
            gst::warning!(CAT, imp = self, "{MISSING_CORE}");
            return;
        };
        obj.add_many([entry, tee]).unwrap();
        self.sinkpad
            .set_target(Some(&entry.static_pad("sink").unwrap()))
            .unwrap();
        // The first caps decide the chain.
        let weak = obj.downgrade();
        entry.static_pad("src").unwrap().add_probe(
            gst::PadProbeType::EVENT_DOWNSTREAM,
            move |pad, info| {
                let Some(gst::PadProbeData::Event(event)) = &info.data else {
                    return gst::PadProbeReturn::Ok;
                };
                let gst::EventView::Caps(caps) = event.view() else {
                    return gst::PadProbeReturn::Ok;
                };
                let Some(obj) = weak.upgrade() else {
                    return gst::PadProbeReturn::Ok;
                };
                if pad.is_linked() {
                    return gst::PadProbeReturn::Ok;
                }
                if let Err(e) = obj.imp().build_chain(caps.caps()) {
                    gst::element_error!(obj, gst::StreamError::Format, ("{e}"));
                    return gst::PadProbeReturn::Drop;
                }
                gst::PadProbeReturn::Ok
            },
        );
        // The payloader's caps are what viewers get; the first buffer makes the track active.
        let weak = obj.downgrade();
        tee.static_pad("sink").unwrap().add_probe(
            gst::PadProbeType::EVENT_DOWNSTREAM | gst::PadProbeType::BUFFER,
            move |_, info| {
                let Some(obj) = weak.upgrade() else {
                    return gst::PadProbeReturn::Ok;
                };
                let imp = obj.imp();
                match &info.data {
                    Some(gst::PadProbeData::Event(event)) => {
                        if let gst::EventView::Caps(caps) = event.view() {
                            imp.rtp_caps.send_replace(Some(caps.caps_owned()));
                        }
                    }
                    Some(gst::PadProbeData::Buffer(_)) => {
                        let caps = imp.rtp_caps.borrow().clone();
                        gst::info!(CAT, obj = obj, "track_active: {caps:?}");
                        imp.post(
                            gst::Structure::builder("track_active")
                                .field("caps", caps)
                                .build(),
                        );
                        return gst::PadProbeReturn::Remove;
                    }
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            },
        );
    }
}

impl GstObjectImpl for WebRtcServe {}

impl ElementImpl for WebRtcServe {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "WebRTC server for many viewers",
                "Sink/Network/WebRTC",
                "Serves one stream to many browsers over WebRTC with one shared encode: a built-in signalling server (player page, JSON WebSocket, WHEP), one webrtcbin per viewer behind a leaky queue, key-frame requests upstream",
                "rtai contributors",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let mut caps = gst::Caps::new_empty();
            {
                let caps = caps.get_mut().unwrap();
                caps.append(
                    gst::Caps::builder("video/x-h264")
                        .field("stream-format", gst::List::new(["byte-stream", "avc"]))
                        .build(),
                );
                for name in ["video/x-vp8", "video/x-av1", "video/x-raw"] {
                    caps.append(gst::Caps::new_empty_simple(name));
                }
            }
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &caps,
                )
                .unwrap(),
            ]
        });
        PAD_TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::NullToReady
            && let Err(e) = self.core()
        {
            gst::element_imp_error!(self, gst::CoreError::MissingPlugin, ("{e}"));
            return Err(gst::StateChangeError);
        }
        if transition == gst::StateChange::ReadyToPaused
            && let Err(e) = self.start()
        {
            self.post_error_message(e);
            return Err(gst::StateChangeError);
        }
        let ret = self.parent_change_state(transition);
        if transition == gst::StateChange::PausedToReady {
            self.stop();
        }
        ret
    }
}

impl BinImpl for WebRtcServe {
    fn handle_message(&self, message: gst::Message) {
        // An error inside one viewer's branch removes that viewer only, and
        // never reaches the pipeline: also when the viewer is already being
        // removed (a DTLS failure sets the connection state to failed, which
        // removes the viewer, before dtlsdec's error message comes up).
        if let gst::MessageView::Error(err) = message.view()
            && let Some(src) = message.src()
            && let Some(child) = self.direct_child_of(src)
            && VIEWER_PREFIXES.iter().any(|p| child.name().starts_with(p))
        {
            let viewers = self.viewers.lock().unwrap();
            let hit = viewers.iter().find(|(_, e)| {
                let v = &e.viewer;
                [&v.queue, v.guard.upcast_ref(), &v.webrtcbin]
                    .iter()
                    .any(|el| child == *el.upcast_ref::<gst::Object>())
            });
            let id = hit.map(|(id, _)| id.clone());
            drop(viewers);
            gst::warning!(
                CAT,
                imp = self,
                "viewer branch {} failed: {} ({:?})",
                child.name(),
                err.error(),
                err.debug()
            );
            if let Some(id) = id {
                let obj = self.obj().clone();
                rtai_core::runtime::runtime().spawn(async move {
                    obj.imp().remove_viewer(&id, "error").await;
                });
            }
            return;
        }
        self.parent_handle_message(message)
    }
}
