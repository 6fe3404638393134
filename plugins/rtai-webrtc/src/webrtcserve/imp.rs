//! webrtcserve: `sink` → (`rtencodebin` if raw) → parser → payloader → `tee`
//! → per viewer `queue leaky=downstream` → `webrtcbin`. The chain after the
//! sink is built when the first caps arrive (the codec decides the payloader);
//! viewers are added and removed by the signalling server while the stream
//! runs, without touching the others.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use tokio::sync::{mpsc, watch};

use rtai_core::control::{ControlMessage, ControlType};
use rtai_core::{InferenceResult, SegmentIdMeta};

use super::Mode;
use super::datachannel::{self, ChannelEvents};
use super::server::{Ctx, Server};
use super::signalling::ServerMessage;
use super::talk::{Mixer, Talker};
use super::viewer::{SendRecv, Viewer, ViewerConfig};

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
const DEFAULT_MODE: Mode = Mode::SendOnly;
const DEFAULT_AUDIO_LATENCY: u32 = 100;
const DEFAULT_CONTROL_RELIABLE: bool = true;
/// Segment starts remembered (announced segments).
const STARTED_WINDOW: usize = 1024;
/// Longest transcript text sent in one message (bytes; the message stays
/// under rtai_core::control::MAX_MESSAGE_BYTES).
const MAX_TEXT_BYTES: usize = 8 * 1024;
/// The control message type of text buffers on the `control` pad.
pub const TYPE_TRANSCRIPT: &str = "x-transcript";
/// Local candidates held for one WebSocket viewer until its offer/answer is sent.
const MAX_HELD_CANDIDATES: usize = 64;
/// Names of the elements of a viewer's branch (see viewer.rs).
const VIEWER_PREFIXES: [&str; 4] = ["queue-", "guard-", "webrtc-", "talk-"];
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
    mode: Mode,
    audio_latency: u32,
    control_reliable: bool,
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
            mode: DEFAULT_MODE,
            audio_latency: DEFAULT_AUDIO_LATENCY,
            control_reliable: DEFAULT_CONTROL_RELIABLE,
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

/// Order keeping of outbound control messages: a cancel goes out at once and
/// never before its segment's start. A cancel is out of band and may overtake
/// its start queued upstream (inferclient queues serialized events behind its
/// results): then a `speech-start` made from the cancel (`payload
/// {"synthesized": true}`, no running time) goes first, and the real start,
/// when it comes, is not sent again.
#[derive(Default)]
struct Outbound {
    started: VecDeque<u64>,
    started_set: HashSet<u64>,
}

impl Outbound {
    /// Remembers `id` as announced; false if it was already.
    fn start(&mut self, id: u64) -> bool {
        if !self.started_set.insert(id) {
            return false;
        }
        self.started.push_back(id);
        while self.started.len() > STARTED_WINDOW {
            if let Some(old) = self.started.pop_front() {
                self.started_set.remove(&old);
            }
        }
        true
    }

    /// What to send now for `msg`, in order.
    fn order(&mut self, msg: ControlMessage) -> Vec<ControlMessage> {
        let Some(segment) = msg.segment_id else {
            return vec![msg];
        };
        match msg.control_type() {
            // A start announced already (by its cancel) is not sent twice.
            Some(ControlType::SpeechStart) if !self.start(segment) => Vec::new(),
            Some(ControlType::SpeechCancel) if self.start(segment) => {
                let mut start = ControlMessage::new(rtai_core::control::TYPE_SPEECH_START);
                start.segment_id = Some(segment);
                start.stream = msg.stream.clone();
                start.payload = Some(serde_json::json!({ "synthesized": true }));
                vec![start, msg]
            }
            _ => vec![msg],
        }
    }
}

/// The element side of the viewers' `control` channels.
struct Events {
    element: glib::WeakRef<super::WebRtcServe>,
}

impl ChannelEvents for Events {
    fn received(&self, viewer: &str, msg: ControlMessage) {
        let Some(el) = self.element.upgrade() else {
            return;
        };
        let mut m = msg.received_message(&el, datachannel::TRANSPORT);
        m.make_mut().structure_mut().set("viewer", viewer);
        let _ = el.post_message(m);
        // Pushed from a task of its own, in order: never from webrtcbin's
        // thread (an element upstream may answer an interrupt with a cancel
        // that comes back into the control pad and out on this channel).
        let tx = el.imp().upstream.lock().unwrap().clone();
        if let Some(tx) = tx {
            let _ = tx.send(msg);
        }
    }

    fn acked(&self, viewer: &str, msg: &ControlMessage, round_trip: Duration, retries: u32) {
        if let Some(el) = self.element.upgrade() {
            let mut m = msg.ack_message(&el, datachannel::TRANSPORT, round_trip, retries);
            m.make_mut().structure_mut().set("viewer", viewer);
            let _ = el.post_message(m);
        }
    }

    fn undelivered(&self, viewer: &str, msg: &ControlMessage, attempts: u32) {
        if let Some(el) = self.element.upgrade() {
            let mut details = msg.undelivered_details(datachannel::TRANSPORT, attempts);
            details.set("viewer", viewer);
            gst::element_warning!(
                el,
                gst::ResourceError::Write,
                ("Control message {} ({}) undelivered", msg.id, msg.kind),
                ["no ack from viewer {viewer} over the data channel after {attempts} attempts"],
                details: details
            );
        }
    }
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
    /// The `control` request pad (send-recv: control messages out, the
    /// viewers' messages as upstream events).
    control_pad: Mutex<Option<gst::Pad>>,
    /// The `audio_src` request pad and the mixer behind it.
    audio_pad: Mutex<Option<gst::GhostPad>>,
    mixer: Mutex<Option<Mixer>>,
    /// Serialises outbound control messages (one order on every channel).
    outbound: Mutex<Outbound>,
    /// The viewers' messages on their way upstream of the `control` pad (a
    /// task on the shared runtime pushes them in order; set while started).
    upstream: Mutex<Option<mpsc::UnboundedSender<ControlMessage>>>,
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
        // send-recv with nothing linked to `sink`: voice only (no video m-line).
        let voice_only = settings.mode == Mode::SendRecv && !self.sinkpad.is_linked();
        let caps = if voice_only {
            None
        } else {
            let mut rx = self.rtp_caps.subscribe();
            match tokio::time::timeout(CAPS_WAIT, rx.wait_for(|c| c.is_some())).await {
                Ok(Ok(c)) => c.clone(),
                _ => return Err("the stream has not started yet".into()),
            }
        };
        let id = format!("{prefix}-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let obj = self.obj();
        let send_recv = (settings.mode == Mode::SendRecv).then(|| SendRecv {
            reliable: settings.control_reliable,
            latency_ms: settings.audio_latency,
            events: Arc::new(Events {
                element: obj.downgrade(),
            }),
        });
        let config = ViewerConfig {
            stun_server: settings.stun_server.as_deref(),
            turn_server: settings.turn_server.as_deref(),
            queue_packets: settings.queue_packets,
            rtp_caps: caps.as_ref(),
            send_recv,
        };
        let viewer = Arc::new(Viewer::add(obj.upcast_ref(), tee, &id, &config)?);
        if viewer.send_recv.is_some() {
            self.hook_send_recv(&viewer);
        }
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

    /// send-recv: the viewer's microphone track goes to the mixer, the
    /// `control` channel it announces (offer flows) is taken.
    fn hook_send_recv(&self, viewer: &Arc<Viewer>) {
        let weak_el = self.obj().downgrade();
        let weak_v = Arc::downgrade(viewer);
        viewer.webrtcbin.connect_pad_added(move |_, pad| {
            let (Some(el), Some(v)) = (weak_el.upgrade(), weak_v.upgrade()) else {
                return;
            };
            if pad.direction() != gst::PadDirection::Src {
                return;
            }
            el.imp().add_talker(&v, pad);
        });
        let weak_v = Arc::downgrade(viewer);
        datachannel::on_announced(&viewer.webrtcbin, move |channel| {
            if let Some(v) = weak_v.upgrade() {
                v.attach_control(channel);
            }
        });
    }

    /// Decodes a viewer's incoming track into the mixer (audio only: anything
    /// else is swallowed so webrtcbin never sees not-linked).
    fn add_talker(&self, viewer: &Viewer, pad: &gst::Pad) {
        let kind = pad
            .property::<Option<gst_webrtc::WebRTCRTPTransceiver>>("transceiver")
            .map(|t| t.property::<gst_webrtc::WebRTCKind>("kind"));
        let mut slot = viewer.talker.lock().unwrap();
        if slot.removed || slot.talker.is_some() || kind != Some(gst_webrtc::WebRTCKind::Audio) {
            gst::debug!(
                CAT,
                imp = self,
                "viewer {}: ignoring track {} ({kind:?})",
                viewer.id,
                pad.name()
            );
            pad.add_probe(
                gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
                |_, _| gst::PadProbeReturn::Drop,
            );
            return;
        }
        let mixer = self.mixer.lock().unwrap();
        match Talker::add(
            self.obj().upcast_ref(),
            &viewer.id,
            pad,
            mixer.as_ref().map(|m| &m.mixer),
        ) {
            Ok(t) => {
                gst::info!(CAT, imp = self, "viewer {}: microphone in", viewer.id);
                slot.talker = Some(t);
            }
            Err(e) => gst::warning!(
                CAT,
                imp = self,
                "viewer {}: cannot decode its microphone: {e}",
                viewer.id
            ),
        }
    }

    /// The open-or-opening `control` channels of all viewers.
    fn channels(&self) -> Vec<Arc<super::datachannel::ControlChannel>> {
        self.viewers
            .lock()
            .unwrap()
            .values()
            .filter_map(|e| e.viewer.control_channel())
            .collect()
    }

    /// Sends a control message to every viewer's `control` channel.
    fn publish_control(&self, msg: ControlMessage) {
        // Held while sending: one order on every channel.
        let mut out = self.outbound.lock().unwrap();
        let batch = out.order(msg);
        if batch.is_empty() {
            return;
        }
        let channels = self.channels();
        for m in &batch {
            gst::debug!(
                CAT,
                imp = self,
                "control out to {} viewers: {}",
                channels.len(),
                m.to_json()
            );
            for ch in &channels {
                ch.publish(m);
            }
        }
    }

    /// A viewer's message as an upstream custom event from the `control` pad.
    fn push_upstream(&self, msg: &ControlMessage) {
        let pad = self.control_pad.lock().unwrap().clone();
        let Some(pad) = pad else {
            gst::debug!(
                CAT,
                imp = self,
                "{} {}: no `control` pad to send it upstream",
                msg.kind,
                msg.id
            );
            return;
        };
        if !pad.push_event(msg.to_upstream_event()) {
            gst::debug!(
                CAT,
                imp = self,
                "{} {}: nobody upstream of `control` handled it",
                msg.kind,
                msg.id
            );
        }
    }

    /// An event reaching the `control` pad: a control message when it is one.
    fn control_event(&self, event: gst::Event) -> bool {
        if let Some(msg) = ControlMessage::from_event(&event, None) {
            self.publish_control(msg);
        }
        true
    }

    /// A buffer reaching the `control` pad: text becomes an `x-transcript`.
    fn control_chain(
        &self,
        pad: &gst::Pad,
        buffer: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let is_text = pad
            .current_caps()
            .and_then(|c| c.structure(0).map(|s| s.name() == "text/x-raw"))
            .unwrap_or(false);
        if !is_text {
            return Ok(gst::FlowSuccess::Ok);
        }
        let result = InferenceResult::get(&buffer);
        let text = match buffer.map_readable() {
            Ok(map) => String::from_utf8_lossy(&map)
                .trim_end_matches('\0')
                .trim()
                .to_string(),
            Err(_) => String::new(),
        };
        let text = if text.is_empty() {
            result
                .as_ref()
                .map(|r| r.text.trim().to_string())
                .unwrap_or_default()
        } else {
            text
        };
        if text.is_empty() {
            return Ok(gst::FlowSuccess::Ok);
        }
        let mut cut = text.len().min(MAX_TEXT_BYTES);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut msg = ControlMessage::new(TYPE_TRANSCRIPT);
        msg.segment_id = SegmentIdMeta::get(&buffer)
            .or(result.as_ref().and_then(|r| r.segment_id))
            .filter(|s| *s <= rtai_core::control::MAX_SEGMENT_ID);
        if let Some(rt) = pad.sticky_event::<gst::event::Segment>(0).and_then(|s| {
            s.segment()
                .downcast_ref::<gst::ClockTime>()
                .and_then(|seg| seg.to_running_time(buffer.pts()))
        }) {
            msg.running_time = Some(rt.nseconds());
        }
        msg.payload = Some(serde_json::json!({ "text": &text[..cut] }));
        self.publish_control(msg);
        Ok(gst::FlowSuccess::Ok)
    }

    fn remove_talker(&self, viewer: &Viewer, talker: Option<Talker>) {
        if let Some(t) = talker {
            let mixer = self.mixer.lock().unwrap();
            t.remove(self.obj().upcast_ref(), mixer.as_ref().map(|m| &m.mixer));
        }
        gst::debug!(CAT, imp = self, "viewer {}: talker removed", viewer.id);
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
        if let Some(ch) = v.control_channel() {
            b = b
                .field("control-open", ch.is_open())
                .field("control-pending", ch.pending() as u32)
                .field("control-refused", ch.refused());
        }
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
        let talker = {
            let mut slot = viewer.talker.lock().unwrap();
            slot.removed = true;
            slot.talker.take()
        };
        // State changes of webrtcbin may block briefly: off the async workers.
        let _ = tokio::task::spawn_blocking(move || {
            viewer.remove(bin.upcast_ref(), &tee);
            bin.imp().remove_talker(&viewer, talker);
        })
        .await;
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
        let (tx, mut rx) = mpsc::unbounded_channel::<ControlMessage>();
        let weak = self.obj().downgrade();
        rtai_core::runtime::runtime().spawn(async move {
            while let Some(msg) = rx.recv().await {
                let Some(el) = weak.upgrade() else { return };
                el.imp().push_upstream(&msg);
            }
        });
        *self.upstream.lock().unwrap() = Some(tx);
        Ok(())
    }

    fn stop(&self) {
        self.state.lock().unwrap().take();
        self.upstream.lock().unwrap().take();
        let ids: Vec<String> = self.viewers.lock().unwrap().keys().cloned().collect();
        for id in ids {
            let entry = self.viewers.lock().unwrap().remove(&id);
            if let (Some(entry), Some(tee)) = (entry, &self.tee) {
                let talker = {
                    let mut slot = entry.viewer.talker.lock().unwrap();
                    slot.removed = true;
                    slot.talker.take()
                };
                entry.viewer.remove(self.obj().upcast_ref(), tee);
                self.remove_talker(&entry.viewer, talker);
            }
        }
        let chain = std::mem::take(&mut *self.chain.lock().unwrap());
        for e in &chain {
            let _ = e.set_state(gst::State::Null);
        }
        let _ = self.obj().remove_many(&chain);
        self.rtp_caps.send_replace(None);
        *self.outbound.lock().unwrap() = Outbound::default();
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
            control_pad: Mutex::new(None),
            audio_pad: Mutex::new(None),
            mixer: Mutex::new(None),
            outbound: Mutex::new(Outbound::default()),
            upstream: Mutex::new(None),
        }
    }
}

impl ObjectImpl for WebRtcServe {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("listen")
                    .nick("Listen address")
                    .blurb("host:port of the signalling server (player page /, voice page /voice, WebSocket /ws, WHEP /whep); 0.0.0.0:3000 exposes it to the network")
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
                glib::ParamSpecEnum::builder_with_default("mode", DEFAULT_MODE)
                    .nick("Mode")
                    .blurb("send-only: viewers receive the stream; send-recv: each viewer also sends its microphone (Opus, decoded and mixed out of the audio_src request pad) and gets a `control` data channel (rtai control messages both ways, see the control request pad)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("audio-latency")
                    .nick("Audio latency")
                    .blurb("send-recv: jitter-buffer latency (ms) of the viewers' microphones; audio_src runs this much (plus 40 ms) behind")
                    .minimum(10)
                    .maximum(2000)
                    .default_value(DEFAULT_AUDIO_LATENCY)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("control-reliable")
                    .nick("Control channel reliable")
                    .blurb("send-recv: the `control` data channel the server creates is ordered and reliable; false makes it unordered with no retransmissions (ordered=false, max-retransmits=0: the acks and retries alone deliver). A channel the viewer creates keeps its own options")
                    .default_value(DEFAULT_CONTROL_RELIABLE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("address, viewers, connected-total, viewer-stats (per viewer: packets-sent, frames-sent, bytes-sent, dropped; send-recv: control-open, control-pending (sent, not acked yet), control-refused (bad or rate-limited messages from the viewer))")
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
            "mode" => s.mode = value.get().expect("type checked upstream"),
            "audio-latency" => s.audio_latency = value.get().expect("type checked upstream"),
            "control-reliable" => s.control_reliable = value.get().expect("type checked upstream"),
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
            "mode" => s.mode.to_value(),
            "audio-latency" => s.audio_latency.to_value(),
            "control-reliable" => s.control_reliable.to_value(),
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
                "Serves one stream to many browsers over WebRTC with one shared encode: a built-in signalling server (player page, JSON WebSocket, WHEP), one webrtcbin per viewer behind a leaky queue, key-frame requests upstream; mode=send-recv also takes each viewer's microphone (audio_src) and talks rtai control messages on a data channel (control pad)",
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
                gst::PadTemplate::new(
                    "audio_src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Request,
                    &super::talk::caps(),
                )
                .unwrap(),
                gst::PadTemplate::new(
                    "control",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Request,
                    &gst::Caps::new_any(),
                )
                .unwrap(),
            ]
        });
        PAD_TEMPLATES.as_ref()
    }

    fn request_new_pad(
        &self,
        templ: &gst::PadTemplate,
        _name: Option<&str>,
        _caps: Option<&gst::Caps>,
    ) -> Option<gst::Pad> {
        let obj = self.obj();
        let active = obj.current_state() > gst::State::Ready;
        match templ.name_template().to_string().as_str() {
            "audio_src" => {
                let mut slot = self.audio_pad.lock().unwrap();
                if slot.is_some() {
                    gst::warning!(CAT, imp = self, "audio_src was requested already");
                    return None;
                }
                let latency = gst::ClockTime::from_mseconds(self.settings().audio_latency as u64);
                let mixer = match Mixer::build(obj.upcast_ref(), latency) {
                    Ok(m) => m,
                    Err(e) => {
                        gst::element_imp_error!(self, gst::CoreError::MissingPlugin, ("{e}"));
                        return None;
                    }
                };
                let pad = gst::GhostPad::builder_from_template(templ)
                    .name("audio_src")
                    .build();
                pad.set_target(Some(&mixer.src)).ok()?;
                if active {
                    let _ = pad.set_active(true);
                }
                obj.add_pad(&pad).ok()?;
                // Viewers already talking join the new mixer.
                for e in self.viewers.lock().unwrap().values() {
                    if let Some(t) = e.viewer.talker.lock().unwrap().talker.as_mut()
                        && let Err(err) = t.attach(&mixer.mixer)
                    {
                        gst::warning!(CAT, imp = self, "viewer {}: {err}", e.viewer.id);
                    }
                }
                *self.mixer.lock().unwrap() = Some(mixer);
                *slot = Some(pad.clone());
                Some(pad.upcast())
            }
            "control" => {
                let mut slot = self.control_pad.lock().unwrap();
                if slot.is_some() {
                    gst::warning!(CAT, imp = self, "control was requested already");
                    return None;
                }
                let pad = gst::Pad::builder_from_template(templ)
                    .name("control")
                    .chain_function(|pad, parent, buffer| {
                        WebRtcServe::catch_panic_pad_function(
                            parent,
                            || Err(gst::FlowError::Error),
                            |imp| imp.control_chain(pad, buffer),
                        )
                    })
                    .event_function(|_, parent, event| {
                        WebRtcServe::catch_panic_pad_function(
                            parent,
                            || false,
                            |imp| imp.control_event(event),
                        )
                    })
                    .build();
                if active {
                    let _ = pad.set_active(true);
                }
                obj.add_pad(&pad).ok()?;
                *slot = Some(pad.clone());
                Some(pad)
            }
            _ => None,
        }
    }

    fn release_pad(&self, pad: &gst::Pad) {
        let obj = self.obj();
        if self.control_pad.lock().unwrap().as_ref() == Some(pad) {
            self.control_pad.lock().unwrap().take();
            let _ = pad.set_active(false);
            let _ = obj.remove_pad(pad);
            return;
        }
        let is_audio = self
            .audio_pad
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|p| p.upcast_ref::<gst::Pad>() == pad);
        if is_audio {
            self.audio_pad.lock().unwrap().take();
            let mixer = self.mixer.lock().unwrap().take();
            if let Some(mixer) = mixer {
                for e in self.viewers.lock().unwrap().values() {
                    if let Some(t) = e.viewer.talker.lock().unwrap().talker.as_mut() {
                        t.detach(&mixer.mixer);
                    }
                }
                let _ = pad.set_active(false);
                let _ = obj.remove_pad(pad);
                mixer.remove(obj.upcast_ref());
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn msg(kind: &str, segment: u64) -> ControlMessage {
        let mut m = ControlMessage::new(kind);
        m.segment_id = Some(segment);
        m
    }

    #[test]
    fn a_cancel_that_overtook_its_start_goes_at_once_after_a_made_up_start() {
        let mut out = Outbound::default();
        let start1 = out.order(msg("speech-start", 1));
        assert_eq!(start1.len(), 1);
        let cancel1 = out.order(msg("speech-cancel", 1));
        assert_eq!(cancel1.len(), 1, "its start went first: the cancel alone");
        // The cancel overtook its start (out of band past a queue).
        let cancel2 = out.order(msg("speech-cancel", 2));
        let kinds: Vec<&str> = cancel2.iter().map(|m| m.kind.as_str()).collect();
        assert_eq!(kinds, ["speech-start", "speech-cancel"]);
        assert_eq!(cancel2[0].segment_id, Some(2));
        assert_eq!(
            cancel2[0].payload,
            Some(serde_json::json!({"synthesized": true}))
        );
        // The real start comes later: not sent twice.
        assert!(out.order(msg("speech-start", 2)).is_empty());
        // Messages without a segment pass.
        assert_eq!(out.order(ControlMessage::new("x-note")).len(), 1);
    }

    proptest! {
        /// Whatever the order in which starts, cancels and other messages reach
        /// the pad: nothing waits, every message goes out once except a start
        /// already announced, and every cancel has its segment's start before it.
        #[test]
        fn cancels_never_precede_their_start_and_nothing_waits(
            events in prop::collection::vec((0u8..4, 0u64..6), 1..80)
        ) {
            let mut out = Outbound::default();
            let mut sent: Vec<ControlMessage> = Vec::new();
            let mut announced = HashSet::new();
            for (kind, segment) in events {
                let kind = ["speech-start", "speech-cancel", "speech-commit", "x-note"][kind as usize];
                let m = msg(kind, segment);
                let batch = out.order(m.clone());
                if kind == "speech-start" && announced.contains(&segment) {
                    prop_assert!(batch.is_empty());
                } else {
                    prop_assert_eq!(&batch.last().unwrap().id, &m.id, "sent at once");
                }
                if kind == "speech-start" || kind == "speech-cancel" {
                    announced.insert(segment);
                }
                sent.extend(batch);
            }
            for (i, m) in sent.iter().enumerate() {
                if m.kind == "speech-cancel" {
                    prop_assert!(sent[..i]
                        .iter()
                        .any(|s| s.kind == "speech-start" && s.segment_id == m.segment_id));
                }
            }
            let starts: Vec<u64> = sent
                .iter()
                .filter(|m| m.kind == "speech-start")
                .filter_map(|m| m.segment_id)
                .collect();
            let unique: HashSet<u64> = starts.iter().copied().collect();
            prop_assert_eq!(starts.len(), unique.len(), "one start per segment");
        }
    }
}
