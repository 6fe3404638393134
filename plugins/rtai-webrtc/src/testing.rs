//! Test and benchmark helpers (`testing` feature): a receive-only `webrtcbin`
//! viewer that joins webrtcserve over WHEP, and one HTTP/1.1 request on
//! loopback. Shared by this crate's tests and `benches/` instead of copies.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use gst::prelude::*;

/// How long the helpers wait for ICE gathering or an HTTP reply.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// The RTP caps a viewer offers for H.264 (packetization-mode 1; the
/// constrained-baseline profile-level-id if `profile_level_id`).
pub fn h264_offer_caps(payload: i32, profile_level_id: bool) -> gst::Caps {
    let mut caps = gst::Caps::builder("application/x-rtp")
        .field("media", "video")
        .field("encoding-name", "H264")
        .field("payload", payload)
        .field("clock-rate", 90000i32)
        .field("packetization-mode", "1");
    if profile_level_id {
        caps = caps.field("profile-level-id", "42e01f");
    }
    caps.build()
}

/// Links `rtph264depay ! h264parse [! avdec_h264] ! sink` into `pipeline` behind
/// `pad` (a webrtcbin src pad) and brings them to the pipeline's state.
pub fn link_h264_receiver(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    decode: bool,
    sink: gst::Element,
) {
    let make = |f: &str| gst::ElementFactory::make(f).build().unwrap();
    let mut chain = vec![make("rtph264depay"), make("h264parse")];
    if decode {
        chain.push(make("avdec_h264"));
    }
    chain.push(sink);
    pipeline.add_many(&chain).unwrap();
    gst::Element::link_many(&chain).unwrap();
    for e in &chain {
        e.sync_state_with_parent().unwrap();
    }
    pad.link(&chain[0].static_pad("sink").unwrap()).unwrap();
}

/// A receive-only `webrtcbin` in its own pipeline; `on_pad` links each src pad
/// it adds (see [`link_h264_receiver`]).
pub struct WhepViewer {
    pub pipeline: gst::Pipeline,
    pub webrtc: gst::Element,
}

impl WhepViewer {
    pub fn new(
        offer_caps: &gst::Caps,
        on_pad: impl Fn(&gst::Pipeline, &gst::Pad) + Send + Sync + 'static,
    ) -> Self {
        let pipeline = gst::Pipeline::new();
        let webrtc = gst::ElementFactory::make("webrtcbin")
            .property_from_str("bundle-policy", "max-bundle")
            .build()
            .unwrap();
        pipeline.add(&webrtc).unwrap();
        webrtc.emit_by_name::<gst_webrtc::WebRTCRTPTransceiver>(
            "add-transceiver",
            &[
                &gst_webrtc::WebRTCRTPTransceiverDirection::Recvonly,
                offer_caps,
            ],
        );
        let pipe = pipeline.downgrade();
        webrtc.connect_pad_added(move |_, pad| {
            if pad.direction() != gst::PadDirection::Src {
                return;
            }
            if let Some(pipeline) = pipe.upgrade() {
                on_pad(&pipeline, pad);
            }
        });
        pipeline.set_state(gst::State::Playing).unwrap();
        Self { pipeline, webrtc }
    }

    /// A new offer, set as the local description (candidates follow by trickle).
    pub fn offer(&self) -> String {
        create_local(&self.webrtc, "create-offer", "offer")
    }

    /// An answer to the remote offer, set as the local description.
    pub fn answer(&self) -> String {
        create_local(&self.webrtc, "create-answer", "answer")
    }

    /// The local offer once ICE gathering completed (candidates inside, for WHEP).
    pub fn gathered_offer(&self) -> String {
        self.offer();
        gathered_local(&self.webrtc)
    }

    pub fn set_remote(&self, kind: gst_webrtc::WebRTCSDPType, sdp: &str) {
        set_remote(&self.webrtc, kind, sdp);
    }

    /// Joins webrtcserve at `addr` over WHEP with a gathered offer and sets the
    /// answer; returns the answer and the session path (Location).
    pub fn whep_join(&self, addr: &str) -> (String, String) {
        let (answer, location) = whep_post(addr, &self.gathered_offer());
        self.set_remote(gst_webrtc::WebRTCSDPType::Answer, &answer);
        (answer, location)
    }
}

/// Emits `signal` (create-offer or create-answer) on `webrtc`, sets the result
/// as its local description and returns the SDP.
pub fn create_local(webrtc: &gst::Element, signal: &str, field: &str) -> String {
    let promise = gst::Promise::new();
    webrtc.emit_by_name::<()>(signal, &[&None::<gst::Structure>, &promise]);
    promise.wait();
    let desc = promise
        .get_reply()
        .unwrap()
        .get::<gst_webrtc::WebRTCSessionDescription>(field)
        .unwrap();
    webrtc.emit_by_name::<()>("set-local-description", &[&desc, &None::<gst::Promise>]);
    desc.sdp().as_text().unwrap()
}

/// Sets `sdp` as `webrtc`'s remote description and waits for it.
pub fn set_remote(webrtc: &gst::Element, kind: gst_webrtc::WebRTCSDPType, sdp: &str) {
    let sdp = gst_webrtc::gst_sdp::SDPMessage::parse_buffer(sdp.as_bytes()).unwrap();
    let desc = gst_webrtc::WebRTCSessionDescription::new(kind, sdp);
    let promise = gst::Promise::new();
    webrtc.emit_by_name::<()>("set-remote-description", &[&desc, &promise]);
    promise.wait();
}

/// Waits until `webrtc`'s ICE gathering completed and returns its local description.
pub fn gathered_local(webrtc: &gst::Element) -> String {
    wait_until(TIMEOUT, "ICE gathering", || {
        webrtc.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state")
            == gst_webrtc::WebRTCICEGatheringState::Complete
    });
    webrtc
        .property::<gst_webrtc::WebRTCSessionDescription>("local-description")
        .sdp()
        .as_text()
        .unwrap()
}

/// `POST /whep` of `offer` to webrtcserve at `addr`; returns the answer and the
/// session path (Location). Panics unless 201 with a Location.
pub fn whep_post(addr: &str, offer: &str) -> (String, String) {
    let (status, headers, answer) = http(
        addr,
        "POST",
        "/whep",
        &[("Content-Type", "application/sdp")],
        offer,
    );
    assert_eq!(status, 201, "{answer}");
    let location = header(&headers, "location").expect("a Location header");
    (answer, location)
}

impl Drop for WhepViewer {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// The value of header `name` (lower case) in `headers` from [`http`].
pub fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// One HTTP/1.1 request on loopback; returns status, headers (lower-case names) and body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// Polls `cond` until it holds; panics at the deadline.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The address webrtcserve `serve` listens on, once it is bound (its `stats`
/// `address`; panics after `timeout`).
pub fn listening_address(serve: &gst::Element, timeout: Duration) -> String {
    let address = || {
        serve
            .property::<gst::Structure>("stats")
            .get::<String>("address")
            .ok()
            .filter(|a| !a.is_empty() && !a.ends_with(":0"))
    };
    wait_until(timeout, "webrtcserve's address", || address().is_some());
    address().unwrap_or_default()
}
