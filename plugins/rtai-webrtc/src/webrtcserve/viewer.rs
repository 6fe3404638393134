//! One viewer's branch: `tee` request pad → `queue leaky=downstream` →
//! (payload-type rewrite probe) → flow guard → `webrtcbin` with one send-only video
//! transceiver (NACK/RTX on). Offer/answer run through promises awaited on the
//! tokio runtime; counters come from pad probes on the queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use gst_webrtc::gst_sdp;

use super::datachannel::{self, ChannelEvents, ControlChannel};
use super::guard::FlowGuard;
use super::talk::Talker;

/// Per-viewer counters (RTP packets and bytes through the queue).
#[derive(Default)]
pub struct Counters {
    pub packets_in: AtomicU64,
    pub packets_out: AtomicU64,
    pub frames_out: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Payload type the viewer negotiated (0: as the payloader sends).
    pub payload_type: AtomicU32,
}

impl Counters {
    pub fn dropped(&self, queued: u64) -> u64 {
        self.packets_in
            .load(Ordering::Relaxed)
            .saturating_sub(self.packets_out.load(Ordering::Relaxed))
            .saturating_sub(queued)
    }
}

pub struct Viewer {
    pub id: String,
    pub queue: gst::Element,
    /// Keeps this viewer's fatal flow returns away from the tee.
    pub guard: FlowGuard,
    pub webrtcbin: gst::Element,
    /// None for a voice-only viewer (send-recv with nothing on `sink`).
    pub tee_pad: Option<gst::Pad>,
    /// The receive-only Opus transceiver of a send-recv viewer.
    audio: Option<gst_webrtc::WebRTCRTPTransceiver>,
    pub counters: Arc<Counters>,
    /// Local ICE candidates (signalling messages) found before the session
    /// description was sent; None once it was (candidates then go at once).
    pub held_candidates: Arc<std::sync::Mutex<Option<Vec<String>>>>,
    /// send-recv mode: the viewer's microphone and `control` data channel.
    pub send_recv: Option<SendRecv>,
    /// The `control` channel, once created (WebSocket join) or announced (offers).
    pub control: std::sync::Mutex<Option<Arc<ControlChannel>>>,
    /// The microphone's decoding branch, once its track arrived; `removed`
    /// set under this lock stops a late track from adding one.
    pub talker: std::sync::Mutex<TalkerSlot>,
}

#[derive(Default)]
pub struct TalkerSlot {
    pub talker: Option<Talker>,
    pub removed: bool,
}

/// What a send-recv viewer needs.
#[derive(Clone)]
pub struct SendRecv {
    /// Reliable and ordered `control` channel (else unordered, no retransmits).
    pub reliable: bool,
    /// Jitter-buffer latency of the incoming audio.
    pub latency_ms: u32,
    pub events: Arc<dyn ChannelEvents>,
}

/// The audio a send-recv viewer may send: Opus (what browsers send).
pub fn opus_caps(payload: Option<u32>) -> gst::Caps {
    let mut b = gst::Caps::builder("application/x-rtp")
        .field("media", "audio")
        .field("encoding-name", "OPUS")
        .field("clock-rate", 48_000i32)
        .field("encoding-params", "2");
    if let Some(pt) = payload {
        b = b.field("payload", pt as i32);
    }
    b.build()
}

pub struct ViewerConfig<'a> {
    pub stun_server: Option<&'a str>,
    pub turn_server: Option<&'a str>,
    pub queue_packets: u32,
    /// The payloader's caps (what the transceiver offers/answers); None: no
    /// video (a voice-only send-recv viewer).
    pub rtp_caps: Option<&'a gst::Caps>,
    pub send_recv: Option<SendRecv>,
}

fn make(factory: &str, name: &str) -> Result<gst::Element, String> {
    gst::ElementFactory::make(factory)
        .name(name)
        .build()
        .map_err(|_| format!("the `{factory}` element is missing"))
}

/// The codec preferences: the payloader's caps without the fields a browser's
/// offer decides (payload type, SSRC, sequence and timestamp offsets).
pub fn codec_preferences(rtp_caps: &gst::Caps, payload: Option<u32>) -> gst::Caps {
    let mut caps = rtp_caps.copy();
    for s in caps.make_mut().iter_mut() {
        for f in [
            "ssrc",
            "timestamp-offset",
            "seqnum-offset",
            "sprop-parameter-sets",
            "a-framerate",
            // The SDP's profile-level-id says it (a `profile` field from the
            // encoder would refuse an offer whose H.264 is plain baseline).
            "profile",
        ] {
            s.remove_field(f);
        }
        if s.get::<&str>("encoding-name").ok() == Some("H264") {
            s.set("packetization-mode", "1");
            s.set("profile-level-id", "42e01f");
            s.set("level-asymmetry-allowed", "1");
        }
        match payload {
            Some(pt) => s.set("payload", pt as i32),
            None => s.remove_field("payload"),
        }
    }
    caps
}

impl Viewer {
    /// Adds the branch to `bin` (PLAYING with it) fed from `tee`.
    pub fn add(
        bin: &gst::Bin,
        tee: &gst::Element,
        id: &str,
        config: &ViewerConfig<'_>,
    ) -> Result<Self, String> {
        let queue = make("queue", &format!("queue-{id}"))?;
        queue.set_property_from_str("leaky", "downstream");
        queue.set_property("max-size-buffers", config.queue_packets);
        queue.set_property("max-size-bytes", 0u32);
        queue.set_property("max-size-time", 0u64);
        let webrtcbin = make("webrtcbin", &format!("webrtc-{id}"))?;
        webrtcbin.set_property_from_str("bundle-policy", "max-bundle");
        if let Some(stun) = config.stun_server {
            webrtcbin.set_property("stun-server", stun);
        }
        if let Some(turn) = config.turn_server {
            webrtcbin.set_property("turn-server", turn);
        }
        let guard = FlowGuard::new(&format!("guard-{id}"));
        bin.add_many([&queue, guard.upcast_ref(), &webrtcbin])
            .map_err(|e| format!("cannot add the viewer's elements: {e}"))?;
        let sinkpad = match config.rtp_caps {
            Some(rtp_caps) => {
                let sinkpad = webrtcbin
                    .request_pad_simple("sink_%u")
                    .ok_or("webrtcbin gave no sink pad")?;
                let transceiver =
                    sinkpad.property::<gst_webrtc::WebRTCRTPTransceiver>("transceiver");
                transceiver.set_property(
                    "direction",
                    gst_webrtc::WebRTCRTPTransceiverDirection::Sendonly,
                );
                transceiver.set_property("do-nack", true);
                transceiver.set_property(
                    "codec-preferences",
                    codec_preferences(rtp_caps, Some(payload_of(rtp_caps))),
                );
                Some(sinkpad)
            }
            None => None,
        };
        let audio = config.send_recv.as_ref().map(|sr| {
            webrtcbin.set_property("latency", sr.latency_ms);
            // The viewer's microphone: receive-only from the server's view.
            webrtcbin.emit_by_name::<gst_webrtc::WebRTCRTPTransceiver>(
                "add-transceiver",
                &[
                    &gst_webrtc::WebRTCRTPTransceiverDirection::Recvonly,
                    &opus_caps(Some(111)),
                ],
            )
        });
        let counters = Arc::new(Counters::default());
        let qsink = queue.static_pad("sink").unwrap();
        let c = counters.clone();
        // rtph264pay pushes a frame's fragments as one buffer list: count its packets.
        qsink.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |_, info| {
                let n = match &info.data {
                    Some(gst::PadProbeData::BufferList(list)) => list.len() as u64,
                    _ => 1,
                };
                c.packets_in.fetch_add(n, Ordering::Relaxed);
                gst::PadProbeReturn::Ok
            },
        );
        let qsrc = queue.static_pad("src").unwrap();
        let c = counters.clone();
        qsrc.add_probe(
            gst::PadProbeType::BUFFER
                | gst::PadProbeType::BUFFER_LIST
                | gst::PadProbeType::EVENT_DOWNSTREAM
                | gst::PadProbeType::QUERY_DOWNSTREAM,
            move |_, info| {
                let pt = c.payload_type.load(Ordering::Relaxed);
                match &mut info.data {
                    // The shared stream's caps are rewritten here (payload type,
                    // profile-level-id) before webrtcbin sees them: answer the
                    // caps queries for webrtcbin, or its codec preferences would
                    // refuse the payloader's own caps.
                    Some(gst::PadProbeData::Query(query)) => match query.view_mut() {
                        gst::QueryViewMut::AcceptCaps(q) => {
                            q.set_result(true);
                            return gst::PadProbeReturn::Handled;
                        }
                        gst::QueryViewMut::Caps(q) => {
                            let caps = q.filter_owned().unwrap_or_else(|| {
                                gst::Caps::new_empty_simple("application/x-rtp")
                            });
                            q.set_result(&caps);
                            return gst::PadProbeReturn::Handled;
                        }
                        _ => {}
                    },
                    Some(gst::PadProbeData::Buffer(buffer)) => {
                        c.packets_out.fetch_add(1, Ordering::Relaxed);
                        c.bytes_out
                            .fetch_add(buffer.size() as u64, Ordering::Relaxed);
                        rewrite_rtp(buffer, pt, &c);
                    }
                    // Every packet of a list gets the viewer's payload type too
                    // (a list left alone reached the viewer with the payloader's).
                    Some(gst::PadProbeData::BufferList(list)) => {
                        list.make_mut().foreach_mut(|mut buffer, _| {
                            c.packets_out.fetch_add(1, Ordering::Relaxed);
                            c.bytes_out
                                .fetch_add(buffer.size() as u64, Ordering::Relaxed);
                            rewrite_rtp(&mut buffer, pt, &c);
                            std::ops::ControlFlow::Continue(Some(buffer))
                        });
                    }
                    Some(gst::PadProbeData::Event(event)) => {
                        if let gst::EventView::Caps(caps) = event.view() {
                            let mut caps = caps.caps().copy();
                            for s in caps.make_mut().iter_mut() {
                                if pt != 0 {
                                    s.set("payload", pt as i32);
                                }
                                // What the transceiver offered/answered (the
                                // stream is constrained baseline; the level is
                                // not a decoder limit in browsers).
                                if s.get::<&str>("encoding-name").ok() == Some("H264") {
                                    s.set("profile-level-id", "42e01f");
                                    s.set("level-asymmetry-allowed", "1");
                                }
                            }
                            *event = gst::event::Caps::new(&caps);
                        }
                    }
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            },
        );
        qsrc.link(&guard.static_pad("sink").unwrap())
            .map_err(|e| format!("cannot link the queue to the guard: {e}"))?;
        // A voice-only viewer keeps its (idle) queue and guard, fed by nothing.
        let tee_pad = match &sinkpad {
            Some(sinkpad) => {
                guard
                    .static_pad("src")
                    .unwrap()
                    .link(sinkpad)
                    .map_err(|e| format!("cannot link the guard to webrtcbin: {e}"))?;
                Some(
                    tee.request_pad_simple("src_%u")
                        .ok_or("the tee gave no pad")?,
                )
            }
            None => None,
        };
        queue.sync_state_with_parent().map_err(|e| e.to_string())?;
        guard.sync_state_with_parent().map_err(|e| e.to_string())?;
        webrtcbin
            .sync_state_with_parent()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            id: id.to_string(),
            queue,
            guard,
            webrtcbin,
            tee_pad,
            audio,
            counters,
            held_candidates: Arc::new(std::sync::Mutex::new(Some(Vec::new()))),
            send_recv: config.send_recv.clone(),
            control: std::sync::Mutex::new(None),
            talker: std::sync::Mutex::new(TalkerSlot::default()),
        })
    }

    /// Takes `channel` as this viewer's `control` channel (the first one only).
    pub fn attach_control(&self, channel: gst_webrtc::WebRTCDataChannel) {
        let Some(sr) = &self.send_recv else { return };
        let mut slot = self.control.lock().unwrap();
        if slot.is_none() {
            *slot = Some(ControlChannel::attach(&self.id, channel, sr.events.clone()));
        }
    }

    /// The `control` channel, if there is one.
    pub fn control_channel(&self) -> Option<Arc<ControlChannel>> {
        self.control.lock().unwrap().clone()
    }

    /// False for a voice-only viewer (send-recv with nothing on `sink`).
    pub fn has_video(&self) -> bool {
        self.tee_pad.is_some()
    }

    /// The candidates held until now; later ones are sent at once.
    pub fn release_candidates(&self) -> Vec<String> {
        self.held_candidates
            .lock()
            .unwrap()
            .take()
            .unwrap_or_default()
    }

    /// Starts the flow into this viewer, once offer and answer settled the
    /// payload type (the first caps webrtcbin sees are then the negotiated ones).
    pub fn start_flow(&self) -> Result<(), String> {
        let qsink = self.queue.static_pad("sink").unwrap();
        let Some(tee_pad) = &self.tee_pad else {
            return Ok(());
        };
        if tee_pad.is_linked() {
            return Ok(());
        }
        tee_pad
            .link(&qsink)
            .map_err(|e| format!("cannot link the tee to the viewer: {e}"))?;
        self.request_key_frame();
        Ok(())
    }

    /// Asks upstream for a key frame (new viewer, PLI/FIR are forwarded by webrtcbin itself).
    pub fn request_key_frame(&self) {
        let event = gst_video_force_key_unit();
        let _ = self.queue.static_pad("sink").unwrap().push_event(event);
    }

    pub async fn create_offer(&self) -> Result<String, String> {
        if let Some(sr) = &self.send_recv
            && self.control_channel().is_none()
        {
            let channel = datachannel::create(&self.webrtcbin, sr.reliable)?;
            self.attach_control(channel);
        }
        let reply = promise(|p| {
            self.webrtcbin
                .emit_by_name::<()>("create-offer", &[&None::<gst::Structure>, p])
        })
        .await?;
        let offer = reply
            .value("offer")
            .map_err(|_| "webrtcbin made no offer".to_string())?
            .get::<gst_webrtc::WebRTCSessionDescription>()
            .map_err(|_| "webrtcbin made no offer".to_string())?;
        promise(|p| {
            self.webrtcbin
                .emit_by_name::<()>("set-local-description", &[&offer, p])
        })
        .await?;
        offer.sdp().as_text().map_err(|e| e.to_string())
    }

    pub async fn set_remote(
        &self,
        kind: gst_webrtc::WebRTCSDPType,
        sdp: gst_sdp::SDPMessage,
    ) -> Result<(), String> {
        // The viewer's payload type for our codec: the probe rewrites to it.
        if kind == gst_webrtc::WebRTCSDPType::Offer
            && self.has_video()
            && let Some(pt) = offered_payload(&sdp, &self.encoding_name())
        {
            self.counters.payload_type.store(pt, Ordering::Relaxed);
            let transceiver = self.transceiver();
            let prefs = transceiver.property::<gst::Caps>("codec-preferences");
            transceiver.set_property("codec-preferences", codec_preferences(&prefs, Some(pt)));
        }
        // The microphone's payload type as the viewer's offer has it.
        if kind == gst_webrtc::WebRTCSDPType::Offer
            && let Some(t) = &self.audio
            && let Some(pt) = offered_payload_in(&sdp, "audio", "OPUS")
        {
            t.set_property("codec-preferences", opus_caps(Some(pt)));
        }
        let desc = gst_webrtc::WebRTCSessionDescription::new(kind, sdp);
        let reply = promise(|p| {
            self.webrtcbin
                .emit_by_name::<()>("set-remote-description", &[&desc, p])
        })
        .await?;
        if let Ok(err) = reply.get::<glib::Error>("error") {
            return Err(err.to_string());
        }
        Ok(())
    }

    /// Answers a remote offer already set; waits for ICE gathering when `gather`.
    pub async fn create_answer(&self, gather: bool) -> Result<String, String> {
        let reply = promise(|p| {
            self.webrtcbin
                .emit_by_name::<()>("create-answer", &[&None::<gst::Structure>, p])
        })
        .await?;
        let answer = reply
            .value("answer")
            .ok()
            .and_then(|v| v.get::<gst_webrtc::WebRTCSessionDescription>().ok())
            .ok_or_else(|| {
                reply
                    .get::<glib::Error>("error")
                    .map(|e| e.to_string())
                    .unwrap_or_else(|_| "webrtcbin cannot answer this offer".into())
            })?;
        if self.has_video()
            && !answer
                .sdp()
                .medias()
                .any(|m| m.port() != 0 && m.media() == Some("video"))
        {
            return Err(
                "no video codec of the offer can be sent (H.264 packetization-mode=1 is needed)"
                    .into(),
            );
        }
        promise(|p| {
            self.webrtcbin
                .emit_by_name::<()>("set-local-description", &[&answer, p])
        })
        .await?;
        if gather {
            self.gathered(Duration::from_secs(5)).await;
            if let Some(local) = self
                .webrtcbin
                .property::<Option<gst_webrtc::WebRTCSessionDescription>>("local-description")
            {
                return local.sdp().as_text().map_err(|e| e.to_string());
            }
        }
        answer.sdp().as_text().map_err(|e| e.to_string())
    }

    /// Waits until ICE gathering completes (or the timeout).
    async fn gathered(&self, timeout: Duration) {
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let done = |w: &gst::Element| {
            w.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state")
                == gst_webrtc::WebRTCICEGatheringState::Complete
        };
        let id = self
            .webrtcbin
            .connect_notify(Some("ice-gathering-state"), move |w, _| {
                if done(w) {
                    let _ = tx.send(true);
                }
            });
        if !done(&self.webrtcbin) {
            let _ = tokio::time::timeout(timeout, rx.wait_for(|d| *d)).await;
        }
        self.webrtcbin.disconnect(id);
    }

    pub fn add_ice_candidate(&self, mline: u32, candidate: &str) {
        self.webrtcbin
            .emit_by_name::<()>("add-ice-candidate", &[&mline, &candidate]);
    }

    fn transceiver(&self) -> gst_webrtc::WebRTCRTPTransceiver {
        self.webrtcbin
            .emit_by_name::<Option<gst_webrtc::WebRTCRTPTransceiver>>("get-transceiver", &[&0i32])
            .expect("the viewer's transceiver exists")
    }

    fn encoding_name(&self) -> String {
        self.transceiver()
            .property::<Option<gst::Caps>>("codec-preferences")
            .and_then(|c| {
                c.structure(0)
                    .and_then(|s| s.get::<String>("encoding-name").ok())
            })
            .unwrap_or_default()
    }

    /// Unlinks and removes the branch (the tee keeps feeding the others).
    pub fn remove(&self, bin: &gst::Bin, tee: &gst::Element) {
        if let Some(ch) = self.control.lock().unwrap().take() {
            ch.close();
        }
        if let Some(tee_pad) = &self.tee_pad {
            if tee_pad.is_linked() {
                let _ = tee_pad.unlink(&self.queue.static_pad("sink").unwrap());
            }
            tee.release_request_pad(tee_pad);
        }
        let _ = self.webrtcbin.set_state(gst::State::Null);
        let _ = self.guard.set_state(gst::State::Null);
        let _ = self.queue.set_state(gst::State::Null);
        let _ = bin.remove_many([&self.queue, self.guard.upcast_ref(), &self.webrtcbin]);
    }

    /// Current queue level in packets.
    pub fn queued(&self) -> u64 {
        self.queue.property::<u32>("current-level-buffers") as u64
    }
}

fn payload_of(caps: &gst::Caps) -> u32 {
    caps.structure(0)
        .and_then(|s| s.get::<i32>("payload").ok())
        .unwrap_or(96) as u32
}

/// The payload type the offer uses for `encoding` (H.264: packetization-mode=1 only).
pub fn offered_payload(sdp: &gst_sdp::SDPMessageRef, encoding: &str) -> Option<u32> {
    offered_payload_in(sdp, "video", encoding)
}

/// The payload type the offer's `kind` m-lines use for `encoding`.
pub fn offered_payload_in(sdp: &gst_sdp::SDPMessageRef, kind: &str, encoding: &str) -> Option<u32> {
    let mut fallback = None;
    for media in sdp.medias().filter(|m| m.media() == Some(kind)) {
        for i in 0..media.formats_len() {
            let Some(pt) = media.format(i).and_then(|f| f.parse::<u32>().ok()) else {
                continue;
            };
            let Some(caps) = media.caps_from_media(pt as i32) else {
                continue;
            };
            let Some(s) = caps.structure(0) else { continue };
            if !s
                .get::<&str>("encoding-name")
                .is_ok_and(|e| e.eq_ignore_ascii_case(encoding))
            {
                continue;
            }
            if encoding.eq_ignore_ascii_case("H264") {
                if s.get::<&str>("packetization-mode").ok() != Some("1") {
                    continue;
                }
                // Constrained baseline first (what is sent), any other profile after.
                // GStreamer's SDP parser may give it as profile-level-id, `profile` or both.
                let level_id = s.get::<&str>("profile-level-id").unwrap_or("");
                let constrained = level_id.to_ascii_lowercase().starts_with("42e0")
                    || s.get::<&str>("profile").ok() == Some("constrained-baseline");
                if !constrained {
                    fallback.get_or_insert(pt);
                    continue;
                }
            }
            return Some(pt);
        }
    }
    fallback
}

/// Sets the RTP payload type of a packet shared with other viewers (copies it first).
fn rewrite_rtp(buffer: &mut gst::Buffer, pt: u32, c: &Counters) {
    let Ok(map) = buffer.map_readable() else {
        return;
    };
    if map.len() < 12 {
        return;
    }
    if map[1] & 0x80 != 0 {
        c.frames_out.fetch_add(1, Ordering::Relaxed);
    }
    let current = (map[1] & 0x7f) as u32;
    drop(map);
    if pt == 0 || pt == current || pt > 127 {
        return;
    }
    let b = buffer.make_mut();
    if let Ok(mut map) = b.map_writable() {
        map[1] = (map[1] & 0x80) | pt as u8;
    }
}

fn gst_video_force_key_unit() -> gst::Event {
    gst_video::UpstreamForceKeyUnitEvent::builder()
        .all_headers(true)
        .build()
}

/// Runs `emit` with a promise and awaits its reply on the tokio runtime.
pub async fn promise(emit: impl FnOnce(&gst::Promise)) -> Result<gst::Structure, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let promise = gst::Promise::with_change_func(move |reply| {
        let _ = tx.send(match reply {
            Ok(Some(s)) => Ok(s.to_owned()),
            Ok(None) => Ok(gst::Structure::new_empty("empty")),
            Err(e) => Err(format!("webrtcbin did not reply: {e:?}")),
        });
    });
    emit(&promise);
    match tokio::time::timeout(Duration::from_secs(10), rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err("webrtcbin dropped the request".into()),
        Err(_) => Err("webrtcbin did not reply within 10 s".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An offer as aiortc makes it: VP8 first, then H.264 baseline, then constrained baseline.
    const AIORTC_OFFER: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 97 98 99 100 101 102\r\nc=IN IP4 0.0.0.0\r\na=recvonly\r\na=mid:0\r\n\
a=rtpmap:97 VP8/90000\r\na=rtpmap:98 rtx/90000\r\na=fmtp:98 apt=97\r\n\
a=rtpmap:99 H264/90000\r\na=fmtp:99 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n\
a=rtpmap:100 rtx/90000\r\na=fmtp:100 apt=99\r\n\
a=rtpmap:101 H264/90000\r\na=fmtp:101 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:102 rtx/90000\r\na=fmtp:102 apt=101\r\n";

    #[test]
    fn the_constrained_baseline_payload_is_chosen_over_baseline() {
        gst::init().unwrap();
        let sdp = gst_sdp::SDPMessage::parse_buffer(AIORTC_OFFER.as_bytes()).unwrap();
        assert_eq!(offered_payload(&sdp, "H264"), Some(101));
        assert_eq!(offered_payload(&sdp, "VP8"), Some(97));
        let baseline_only = AIORTC_OFFER.replace("42e01f", "42001f");
        let sdp = gst_sdp::SDPMessage::parse_buffer(baseline_only.as_bytes()).unwrap();
        assert_eq!(
            offered_payload(&sdp, "H264"),
            Some(99),
            "baseline as a fallback"
        );
        let mode0 = AIORTC_OFFER.replace("packetization-mode=1", "packetization-mode=0");
        let sdp = gst_sdp::SDPMessage::parse_buffer(mode0.as_bytes()).unwrap();
        assert_eq!(offered_payload(&sdp, "H264"), None, "mode 1 only");
    }

    #[test]
    fn preferences_carry_no_encoder_profile() {
        gst::init().unwrap();
        let caps = gst::Caps::builder("application/x-rtp")
            .field("media", "video")
            .field("encoding-name", "H264")
            .field("profile", "constrained-baseline")
            .field("ssrc", 1u32)
            .field("payload", 96i32)
            .build();
        let prefs = codec_preferences(&caps, Some(101));
        let s = prefs.structure(0).unwrap();
        assert!(!s.has_field("profile") && !s.has_field("ssrc"));
        assert_eq!(s.get::<i32>("payload").unwrap(), 101);
        assert_eq!(s.get::<&str>("packetization-mode").unwrap(), "1");
    }
}
