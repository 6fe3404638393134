//! Control messages across transports: one JSON wire form, acks, retries and
//! dedupe. See `docs/protocol.md` ("Control messages") and
//! `docs/control-message.schema.json`.
//!
//! A control message is the transport form of an in-pipeline protocol event
//! (segment start/commit/end/cancel), a `cancel-ack` bus message, or a custom
//! control event (`rtai-control` structure):
//!
//! ```json
//! {"id":"3fa4c1d2-17","type":"speech-start","segment_id":4294967297,
//!  "stream":"mic","running_time":1500000000,"payload":{"lookback":200000000}}
//! ```
//!
//! The receiver answers every message (duplicates included) with `{"ack":"<id>"}`
//! once it has handed the message to its pipeline. The sender keeps each message
//! in a [`RetryTracker`]: without an ack after [`ACK_TIMEOUT`] it sends it again,
//! at most [`MAX_RETRIES`] times, then reports it undelivered. The receiver keeps
//! a [`Deduper`] (a bounded window of recent ids) so a resent message reaches its
//! pipeline once.
//!
//! [`parse`] bounds the input (size, nesting) before serde sees it and never
//! panics; errors carry a code a transport sends back to the client
//! ([`error_json`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use gst::prelude::*;
use serde::{Deserialize, Serialize};

use crate::protocol::{CancelAck, SegmentEvent};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "rtai-control",
        gst::DebugColorFlags::empty(),
        Some("rtai control messages"),
    )
});

/// Longest control message accepted (bytes of JSON).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// Deepest nesting of arrays/objects accepted (the message object counts as 1).
pub const MAX_NESTING: usize = 16;
/// Longest message id (bytes); ids use `A-Z a-z 0-9 . _ : -`.
pub const MAX_ID_BYTES: usize = 64;
/// Longest type (bytes).
pub const MAX_TYPE_BYTES: usize = 64;
/// Longest stream name (bytes).
pub const MAX_STREAM_BYTES: usize = 256;
/// Segment ids stay below 2^53 (exact in JavaScript numbers), see `protocol`.
pub const MAX_SEGMENT_ID: u64 = (1 << 53) - 1;
/// The sender resends a message not acked within this long...
pub const ACK_TIMEOUT: Duration = Duration::from_millis(50);
/// ...at most this many times, then reports it undelivered.
pub const MAX_RETRIES: u32 = 3;
/// Ids a receiver remembers to drop resent copies.
pub const DEDUPE_WINDOW: usize = 4096;

pub const TYPE_SPEECH_START: &str = "speech-start";
pub const TYPE_SPEECH_COMMIT: &str = "speech-commit";
pub const TYPE_SPEECH_END: &str = "speech-end";
pub const TYPE_SPEECH_CANCEL: &str = "speech-cancel";
pub const TYPE_CANCEL_ACK: &str = "cancel-ack";
pub const TYPE_INTERRUPT: &str = "interrupt";
/// Application-defined types start with this prefix (`x-transcript`, `x-barge-in`...).
pub const CUSTOM_PREFIX: &str = "x-";

/// Structure name of the custom events that carry control messages which are
/// not segment events (interrupt, cancel-ack, custom types).
pub const EVENT_CONTROL: &str = "rtai-control";
/// Optional field of segment event structures (and `rtai-control`): the control
/// message id, kept so that a message relayed further keeps its id.
pub const CONTROL_ID_FIELD: &str = "control-id";
/// Element message a sender posts when a message was acked.
pub const MESSAGE_CONTROL_ACK: &str = "control-ack";
/// Details structure of the warning a sender posts when retries ran out.
pub const MESSAGE_CONTROL_UNDELIVERED: &str = "control-undelivered";
/// Element message a receiver posts for each (first copy of a) message it got.
pub const MESSAGE_CONTROL_RECEIVED: &str = "control-received";

/// What kind of control message this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlType {
    SpeechStart,
    SpeechCommit,
    SpeechEnd,
    SpeechCancel,
    CancelAck,
    Interrupt,
    /// `x-...`: the whole type string.
    Custom(String),
}

impl ControlType {
    /// `None` for a type this protocol does not know (neither built-in nor `x-...`
    /// with lower-case letters, digits and `-`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            TYPE_SPEECH_START => Self::SpeechStart,
            TYPE_SPEECH_COMMIT => Self::SpeechCommit,
            TYPE_SPEECH_END => Self::SpeechEnd,
            TYPE_SPEECH_CANCEL => Self::SpeechCancel,
            TYPE_CANCEL_ACK => Self::CancelAck,
            TYPE_INTERRUPT => Self::Interrupt,
            s if s.len() > CUSTOM_PREFIX.len()
                && s.len() <= MAX_TYPE_BYTES
                && s.starts_with(CUSTOM_PREFIX)
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
            {
                Self::Custom(s.to_string())
            }
            _ => return None,
        })
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::SpeechStart => TYPE_SPEECH_START,
            Self::SpeechCommit => TYPE_SPEECH_COMMIT,
            Self::SpeechEnd => TYPE_SPEECH_END,
            Self::SpeechCancel => TYPE_SPEECH_CANCEL,
            Self::CancelAck => TYPE_CANCEL_ACK,
            Self::Interrupt => TYPE_INTERRUPT,
            Self::Custom(s) => s,
        }
    }

    /// The segment events need a segment id.
    pub fn needs_segment(&self) -> bool {
        matches!(
            self,
            Self::SpeechStart
                | Self::SpeechCommit
                | Self::SpeechEnd
                | Self::SpeechCancel
                | Self::CancelAck
        )
    }
}

/// One control message (the JSON wire form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlMessage {
    /// Unique per sender; a resent copy has the same id.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Nanoseconds (GStreamer running time of the event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_time: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
}

/// Why a control message was refused. [`ControlError::code`] is what goes back
/// to the client in [`error_json`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlError {
    TooLarge(usize),
    TooDeep,
    Malformed(String),
    UnknownType(String),
    Invalid(String),
    RateLimited,
}

impl ControlError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge(_) => "too-large",
            Self::TooDeep => "too-deep",
            Self::Malformed(_) => "malformed",
            Self::UnknownType(_) => "unknown-type",
            Self::Invalid(_) => "invalid",
            Self::RateLimited => "rate-limited",
        }
    }
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge(n) => write!(
                f,
                "control message of {n} bytes; at most {MAX_MESSAGE_BYTES} are accepted"
            ),
            Self::TooDeep => write!(f, "control message nests deeper than {MAX_NESTING} levels"),
            Self::Malformed(e) => write!(f, "malformed control message: {e}"),
            Self::UnknownType(t) => {
                let shown: String = t.chars().take(80).collect();
                write!(
                    f,
                    "unknown control message type {shown:?} (custom types start with \"x-\")"
                )
            }
            Self::Invalid(e) => write!(f, "invalid control message: {e}"),
            Self::RateLimited => write!(f, "too many control messages: rate limit exceeded"),
        }
    }
}

impl std::error::Error for ControlError {}

/// What a peer may send: a control message or an ack of one.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    Message(ControlMessage),
    Ack(String),
}

/// Checks size and nesting without parsing: brackets inside strings (escapes
/// honoured) do not count.
pub fn check_bounds(bytes: &[u8]) -> Result<(), ControlError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(ControlError::TooLarge(bytes.len()));
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(ControlError::TooDeep);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Parses one message from a peer: bounded first, then serde. Unknown fields
/// are ignored (a newer peer may add some); unknown types are an error.
pub fn parse(bytes: &[u8]) -> Result<Inbound, ControlError> {
    check_bounds(bytes)?;
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ControlError::Malformed(e.to_string()))?;
    let serde_json::Value::Object(obj) = &value else {
        return Err(ControlError::Malformed("not a JSON object".into()));
    };
    if !obj.contains_key("type")
        && let Some(ack) = obj.get("ack")
    {
        let id = ack
            .as_str()
            .ok_or_else(|| ControlError::Invalid("ack is not a string".into()))?;
        if !valid_id(id) {
            return Err(ControlError::Invalid("ack names an invalid id".into()));
        }
        return Ok(Inbound::Ack(id.to_string()));
    }
    let msg: ControlMessage =
        serde_json::from_value(value).map_err(|e| ControlError::Malformed(e.to_string()))?;
    msg.validate()?;
    Ok(Inbound::Message(msg))
}

/// Parses a control message (an ack is an error here).
pub fn parse_message(bytes: &[u8]) -> Result<ControlMessage, ControlError> {
    match parse(bytes)? {
        Inbound::Message(m) => Ok(m),
        Inbound::Ack(_) => Err(ControlError::Invalid(
            "an ack where a control message was expected".into(),
        )),
    }
}

/// `{"ack":"<id>"}`.
pub fn ack_json(id: &str) -> String {
    serde_json::json!({ "ack": id }).to_string()
}

/// `{"error":"<code>","message":"...","id":"<id>"}`: the reply to a refused message.
pub fn error_json(err: &ControlError, id: Option<&str>) -> String {
    let mut v = serde_json::json!({ "error": err.code(), "message": err.to_string() });
    if let Some(id) = id.filter(|id| valid_id(id)) {
        v["id"] = id.into();
    }
    v.to_string()
}

/// A new message id: unique in the process, and across processes with high
/// probability (`<random process tag>-<counter>`).
pub fn new_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static TAG: LazyLock<u32> = LazyLock::new(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish() as u32
    });
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    format!("{:08x}-{}", *TAG, COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn payload_u64(payload: &Option<serde_json::Value>, key: &str) -> Option<u64> {
    payload.as_ref()?.get(key)?.as_u64()
}

fn payload_str(payload: &Option<serde_json::Value>, key: &str) -> Option<String> {
    Some(payload.as_ref()?.get(key)?.as_str()?.to_string())
}

impl ControlMessage {
    /// A message of `kind` with a new id and no other fields.
    pub fn new(kind: &str) -> Self {
        Self {
            id: new_id(),
            kind: kind.to_string(),
            segment_id: None,
            stream: None,
            running_time: None,
            payload: None,
        }
    }

    pub fn control_type(&self) -> Option<ControlType> {
        ControlType::parse(&self.kind)
    }

    /// The rules the schema states, checked on every message from a peer.
    pub fn validate(&self) -> Result<(), ControlError> {
        if !valid_id(&self.id) {
            return Err(ControlError::Invalid(format!(
                "id must be 1 to {MAX_ID_BYTES} characters of A-Z a-z 0-9 . _ : -"
            )));
        }
        let kind = self
            .control_type()
            .ok_or_else(|| ControlError::UnknownType(self.kind.clone()))?;
        if kind.needs_segment() && self.segment_id.is_none() {
            return Err(ControlError::Invalid(format!(
                "{} needs a segment_id",
                kind.as_str()
            )));
        }
        if self.segment_id.is_some_and(|s| s > MAX_SEGMENT_ID) {
            return Err(ControlError::Invalid("segment_id is above 2^53 - 1".into()));
        }
        if self
            .stream
            .as_ref()
            .is_some_and(|s| s.len() > MAX_STREAM_BYTES)
        {
            return Err(ControlError::Invalid(format!(
                "stream is longer than {MAX_STREAM_BYTES} bytes"
            )));
        }
        Ok(())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a control message serializes")
    }

    /// The message of a segment event; keeps the event's `control-id` if it has one.
    pub fn from_segment_event(ev: &SegmentEvent, stream: Option<&str>) -> Self {
        let (kind, running_time, payload) = match ev {
            SegmentEvent::Start {
                running_time,
                lookback,
                ..
            } => (
                TYPE_SPEECH_START,
                Some(running_time.nseconds()),
                Some(serde_json::json!({ "lookback": lookback.nseconds() })),
            ),
            SegmentEvent::Commit { .. } => (TYPE_SPEECH_COMMIT, None, None),
            SegmentEvent::End { .. } => (TYPE_SPEECH_END, None, None),
            SegmentEvent::Cancel { reason, .. } => (
                TYPE_SPEECH_CANCEL,
                None,
                (!reason.is_empty()).then(|| serde_json::json!({ "reason": reason })),
            ),
        };
        Self {
            id: new_id(),
            kind: kind.into(),
            segment_id: Some(ev.id()),
            stream: stream.map(str::to_string),
            running_time,
            payload,
        }
    }

    /// The segment event this message stands for (speech-* types).
    pub fn to_segment_event(&self) -> Option<SegmentEvent> {
        let id = self.segment_id?;
        Some(match self.control_type()? {
            ControlType::SpeechStart => SegmentEvent::Start {
                id,
                running_time: gst::ClockTime::from_nseconds(self.running_time.unwrap_or(0)),
                lookback: gst::ClockTime::from_nseconds(
                    payload_u64(&self.payload, "lookback").unwrap_or(0),
                ),
            },
            ControlType::SpeechCommit => SegmentEvent::Commit { id },
            ControlType::SpeechEnd => SegmentEvent::End { id },
            ControlType::SpeechCancel => SegmentEvent::Cancel {
                id,
                reason: payload_str(&self.payload, "reason").unwrap_or_default(),
            },
            _ => return None,
        })
    }

    /// The message of a `cancel-ack` bus message.
    pub fn from_cancel_ack(ack: &CancelAck, stream: Option<&str>) -> Self {
        Self {
            id: new_id(),
            kind: TYPE_CANCEL_ACK.into(),
            segment_id: Some(ack.id),
            stream: stream.map(str::to_string),
            running_time: None,
            payload: Some(serde_json::json!({
                "element": ack.element,
                "buffers_dropped": ack.buffers_dropped,
                "requests_aborted": ack.requests_aborted,
                "latency": ack.latency.nseconds(),
            })),
        }
    }

    pub fn to_cancel_ack(&self) -> Option<CancelAck> {
        if self.kind != TYPE_CANCEL_ACK {
            return None;
        }
        Some(CancelAck {
            element: payload_str(&self.payload, "element").unwrap_or_default(),
            id: self.segment_id?,
            buffers_dropped: payload_u64(&self.payload, "buffers_dropped").unwrap_or(0),
            requests_aborted: payload_u64(&self.payload, "requests_aborted").unwrap_or(0),
            latency: gst::ClockTime::from_nseconds(
                payload_u64(&self.payload, "latency").unwrap_or(0),
            ),
        })
    }

    /// The `rtai-control` structure: `id`, `type`, and when set `segment-id`
    /// (guint64), `stream`, `running-time` (guint64 ns), `payload` (JSON text).
    pub fn to_control_structure(&self) -> gst::Structure {
        let mut b = gst::Structure::builder(EVENT_CONTROL)
            .field("id", &self.id)
            .field("type", &self.kind);
        if let Some(s) = self.segment_id {
            b = b.field("segment-id", s);
        }
        if let Some(s) = &self.stream {
            b = b.field("stream", s);
        }
        if let Some(rt) = self.running_time {
            b = b.field("running-time", rt);
        }
        if let Some(p) = &self.payload {
            b = b.field("payload", p.to_string());
        }
        b.build()
    }

    /// The structure of the in-pipeline event: a segment event structure (with
    /// `control-id` and `stream`) for speech-*, else `rtai-control`.
    pub fn to_structure(&self) -> gst::Structure {
        match self.to_segment_event() {
            Some(ev) => {
                let mut s = ev.to_structure();
                s.set(CONTROL_ID_FIELD, &self.id);
                if let Some(stream) = &self.stream {
                    s.set("stream", stream);
                }
                s
            }
            None => self.to_control_structure(),
        }
    }

    /// The in-pipeline event: speech-start/commit/end serialized downstream,
    /// speech-cancel out of band downstream (it overtakes queued data),
    /// `interrupt` upstream (toward the producer), others serialized downstream.
    pub fn to_event(&self) -> gst::Event {
        let s = self.to_structure();
        match self.control_type() {
            Some(ControlType::SpeechCancel) => gst::event::CustomDownstreamOob::new(s),
            Some(ControlType::Interrupt) => gst::event::CustomUpstream::new(s),
            _ => gst::event::CustomDownstream::new(s),
        }
    }

    /// An upstream event carrying this message (what a sink sends into its pipeline).
    pub fn to_upstream_event(&self) -> gst::Event {
        gst::event::CustomUpstream::new(self.to_structure())
    }

    /// The message of a segment event or `rtai-control` structure. A structure
    /// without `control-id` gets a new id. `None` for anything else or malformed.
    pub fn from_structure(s: &gst::StructureRef, stream: Option<&str>) -> Option<Self> {
        let control_id = s
            .get::<Option<String>>(CONTROL_ID_FIELD)
            .ok()
            .flatten()
            .filter(|id| valid_id(id));
        let own_stream = s.get::<Option<String>>("stream").ok().flatten();
        let stream = own_stream.as_deref().or(stream);
        if let Some(ev) = SegmentEvent::from_structure(s) {
            let mut msg = Self::from_segment_event(&ev, stream);
            if let Some(id) = control_id {
                msg.id = id;
            }
            return Some(msg);
        }
        if s.name() != EVENT_CONTROL {
            return None;
        }
        let parsed = (|| -> Result<Self, String> {
            let id = s.get::<String>("id").map_err(|e| e.to_string())?;
            let kind = s.get::<String>("type").map_err(|e| e.to_string())?;
            let payload = match s.get::<Option<String>>("payload").ok().flatten() {
                Some(text) => {
                    check_bounds(text.as_bytes()).map_err(|e| e.to_string())?;
                    Some(serde_json::from_str(&text).map_err(|e| e.to_string())?)
                }
                None => None,
            };
            let msg = Self {
                id,
                kind,
                segment_id: s.get::<u64>("segment-id").ok(),
                stream: stream.map(str::to_string),
                running_time: s.get::<u64>("running-time").ok(),
                payload,
            };
            msg.validate().map_err(|e| e.to_string())?;
            Ok(msg)
        })();
        match parsed {
            Ok(m) => Some(m),
            Err(err) => {
                gst::debug!(CAT, "ignoring malformed control structure {s}: {err}");
                None
            }
        }
    }

    /// The message of a custom event (any direction) carrying a segment event
    /// or an `rtai-control` structure.
    pub fn from_event(event: &gst::EventRef, stream: Option<&str>) -> Option<Self> {
        match event.type_() {
            gst::EventType::CustomDownstream
            | gst::EventType::CustomDownstreamOob
            | gst::EventType::CustomDownstreamSticky
            | gst::EventType::CustomUpstream
            | gst::EventType::CustomBoth
            | gst::EventType::CustomBothOob => Self::from_structure(event.structure()?, stream),
            _ => None,
        }
    }

    /// The message of a `cancel-ack` element message.
    pub fn from_message(message: &gst::MessageRef, stream: Option<&str>) -> Option<Self> {
        CancelAck::parse(message).map(|ack| Self::from_cancel_ack(&ack, stream))
    }

    /// The `control-ack` element message a sender posts when this message was acked.
    pub fn ack_message(
        &self,
        src: &impl IsA<gst::Object>,
        transport: &str,
        round_trip: Duration,
        retries: u32,
    ) -> gst::Message {
        let s = gst::Structure::builder(MESSAGE_CONTROL_ACK)
            .field("id", &self.id)
            .field("type", &self.kind)
            .field("transport", transport)
            .field("round-trip", round_trip.as_nanos() as u64)
            .field("retries", retries)
            .build();
        gst::message::Element::builder(s).src(src).build()
    }

    /// The details of the `control-undelivered` warning.
    pub fn undelivered_details(&self, transport: &str, attempts: u32) -> gst::Structure {
        gst::Structure::builder(MESSAGE_CONTROL_UNDELIVERED)
            .field("id", &self.id)
            .field("type", &self.kind)
            .field("transport", transport)
            .field("attempts", attempts)
            .build()
    }

    /// Posts the `control-undelivered` warning on `element`'s bus.
    pub fn post_undelivered(&self, element: &gst::Element, transport: &str, attempts: u32) {
        gst::element_warning!(
            element,
            gst::ResourceError::Write,
            ("Control message {} ({}) undelivered", self.id, self.kind),
            ["no ack over {transport} after {attempts} attempts"],
            details: self.undelivered_details(transport, attempts)
        );
    }

    /// The `control-received` element message a receiver posts (first copy only).
    pub fn received_message(&self, src: &impl IsA<gst::Object>, transport: &str) -> gst::Message {
        let s = gst::Structure::builder(MESSAGE_CONTROL_RECEIVED)
            .field("id", &self.id)
            .field("type", &self.kind)
            .field("transport", transport)
            .field("json", self.to_json())
            .build();
        gst::message::Element::builder(s).src(src).build()
    }
}

/// A `control-ack` element message, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlAckInfo {
    pub id: String,
    pub kind: String,
    pub transport: String,
    pub round_trip: Duration,
    pub retries: u32,
}

impl ControlAckInfo {
    pub fn parse(message: &gst::MessageRef) -> Option<Self> {
        let gst::MessageView::Element(e) = message.view() else {
            return None;
        };
        let s = e.structure()?;
        if s.name() != MESSAGE_CONTROL_ACK {
            return None;
        }
        Some(Self {
            id: s.get("id").ok()?,
            kind: s.get("type").ok()?,
            transport: s.get("transport").ok()?,
            round_trip: Duration::from_nanos(s.get::<u64>("round-trip").ok()?),
            retries: s.get("retries").ok()?,
        })
    }
}

/// Sender side: messages waiting for their ack.
#[derive(Debug)]
pub struct RetryTracker<T> {
    timeout: Duration,
    max_retries: u32,
    capacity: usize,
    pending: HashMap<String, Pending<T>>,
}

#[derive(Debug)]
struct Pending<T> {
    item: T,
    first_sent: Instant,
    last_sent: Instant,
    retries: u32,
}

/// An ack matched a pending message.
#[derive(Debug, PartialEq)]
pub struct Acked<T> {
    pub id: String,
    pub item: T,
    /// From the first send to the ack (retries included).
    pub round_trip: Duration,
    pub retries: u32,
}

/// What the sender must do now for a pending message.
#[derive(Debug, PartialEq)]
pub enum RetryAction<T> {
    /// Send it again (`retry` counts from 1).
    Resend { id: String, item: T, retry: u32 },
    /// Retries exhausted: report it undelivered (`attempts` = 1 + retries).
    Undelivered { id: String, item: T, attempts: u32 },
}

impl<T: Clone> Default for RetryTracker<T> {
    fn default() -> Self {
        Self::new(ACK_TIMEOUT, MAX_RETRIES, DEDUPE_WINDOW)
    }
}

impl<T: Clone> RetryTracker<T> {
    /// `capacity` bounds the pending messages: beyond it the oldest is reported
    /// undelivered at once by [`RetryTracker::sent`].
    pub fn new(timeout: Duration, max_retries: u32, capacity: usize) -> Self {
        Self {
            timeout,
            max_retries,
            capacity: capacity.max(1),
            pending: HashMap::new(),
        }
    }

    /// `item` (message `id`) went out at `now`. Sending an id that is pending
    /// again does not restart its count. Returns a message evicted over capacity.
    pub fn sent(&mut self, id: &str, item: T, now: Instant) -> Option<RetryAction<T>> {
        if self.pending.contains_key(id) {
            return None;
        }
        let mut evicted = None;
        if self.pending.len() >= self.capacity
            && let Some(oldest) = self
                .pending
                .iter()
                .min_by_key(|(_, p)| p.first_sent)
                .map(|(id, _)| id.clone())
        {
            let p = self.pending.remove(&oldest).expect("present");
            evicted = Some(RetryAction::Undelivered {
                id: oldest,
                item: p.item,
                attempts: p.retries + 1,
            });
        }
        self.pending.insert(
            id.to_string(),
            Pending {
                item,
                first_sent: now,
                last_sent: now,
                retries: 0,
            },
        );
        evicted
    }

    /// An ack came for `id`: `None` if it is not pending (a duplicate ack, or
    /// unknown): the sender ignores it.
    pub fn ack(&mut self, id: &str, now: Instant) -> Option<Acked<T>> {
        let p = self.pending.remove(id)?;
        Some(Acked {
            id: id.to_string(),
            item: p.item,
            round_trip: now.saturating_duration_since(p.first_sent),
            retries: p.retries,
        })
    }

    /// The messages due at `now`: resends (their clock restarts) and those
    /// whose retries ran out (removed).
    pub fn due(&mut self, now: Instant) -> Vec<RetryAction<T>> {
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for (id, p) in self.pending.iter_mut() {
            if now.saturating_duration_since(p.last_sent) < self.timeout {
                continue;
            }
            if p.retries >= self.max_retries {
                gone.push(id.clone());
            } else {
                p.retries += 1;
                p.last_sent = now;
                out.push(RetryAction::Resend {
                    id: id.clone(),
                    item: p.item.clone(),
                    retry: p.retries,
                });
            }
        }
        for id in gone {
            let p = self.pending.remove(&id).expect("present");
            out.push(RetryAction::Undelivered {
                id,
                item: p.item,
                attempts: p.retries + 1,
            });
        }
        out
    }

    /// The messages to send again on a new connection (the old one broke): their
    /// clocks restart and no retry is counted (the link, not the peer, was down).
    pub fn resend_all(&mut self, now: Instant) -> Vec<(String, T)> {
        self.pending
            .iter_mut()
            .map(|(id, p)| {
                p.last_sent = now;
                (id.clone(), p.item.clone())
            })
            .collect()
    }

    /// When [`RetryTracker::due`] has something next.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending
            .values()
            .map(|p| p.last_sent + self.timeout)
            .min()
    }

    pub fn is_pending(&self, id: &str) -> bool {
        self.pending.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Empties the tracker, returning what was pending (e.g. at stop).
    pub fn drain(&mut self) -> Vec<(String, T)> {
        self.pending.drain().map(|(id, p)| (id, p.item)).collect()
    }
}

/// A sender whose [`RetryTracker`] a [`RetryTimer`] task drives (see [`spawn_retries`]).
pub trait RetryDriven: Send + Sync + 'static {
    fn retry_timer(&self) -> &RetryTimer;
    /// Resends due messages, reports undelivered ones; the next deadline.
    fn retry_due(&self) -> Option<Instant>;
}

/// The wake-ups of a sender's retry task: [`RetryTimer::notify`] after a send (a
/// new deadline), [`RetryTimer::close`] (or dropping it) ends the task.
#[derive(Debug)]
pub struct RetryTimer {
    wake: std::sync::Arc<tokio::sync::Notify>,
    closing: tokio::sync::watch::Sender<bool>,
}

impl Default for RetryTimer {
    fn default() -> Self {
        Self {
            wake: std::sync::Arc::new(tokio::sync::Notify::new()),
            closing: tokio::sync::watch::channel(false).0,
        }
    }
}

impl RetryTimer {
    /// Something was sent: the task looks at the deadlines again
    /// (`notify_one` keeps a permit if the task is not waiting yet).
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// Ends the retry task (and whatever waits on [`RetryTimer::closing`]).
    pub fn close(&self) {
        let _ = self.closing.send(true);
        self.wake.notify_one();
    }

    /// Becomes `true` at [`RetryTimer::close`] (or drop).
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }
}

impl Drop for RetryTimer {
    fn drop(&mut self) {
        let _ = self.closing.send(true);
    }
}

/// Starts `owner`'s retry task on the shared runtime: it calls
/// [`RetryDriven::retry_due`] at each deadline or wake-up until `owner` is
/// dropped or its timer closed (it holds only a weak reference meanwhile).
pub fn spawn_retries<T: RetryDriven>(owner: &std::sync::Arc<T>) {
    crate::runtime::runtime().spawn(drive_retries(std::sync::Arc::downgrade(owner)));
}

async fn drive_retries<T: RetryDriven>(owner: std::sync::Weak<T>) {
    loop {
        let (next, mut closing, wake) = {
            let Some(owner) = owner.upgrade() else { return };
            let timer = owner.retry_timer();
            if *timer.closing.borrow() {
                return;
            }
            (owner.retry_due(), timer.closing(), timer.wake.clone())
        };
        match next {
            Some(at) => tokio::select! {
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => {}
                _ = wake.notified() => {}
                _ = closing.changed() => {}
            },
            None => tokio::select! {
                _ = wake.notified() => {}
                _ = closing.changed() => {}
            },
        }
    }
}

/// Receiver side: the ids seen recently (bounded window, oldest forgotten first).
#[derive(Debug)]
pub struct Deduper {
    capacity: usize,
    order: VecDeque<String>,
    ids: HashSet<String>,
}

impl Default for Deduper {
    fn default() -> Self {
        Self::with_capacity(DEDUPE_WINDOW)
    }
}

impl Deduper {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            ids: HashSet::new(),
        }
    }

    /// True the first time `id` is seen (deliver it); false for a copy (ack it
    /// again, deliver nothing).
    pub fn first_time(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        self.ids.insert(id.to_string());
        self.order.push_back(id.to_string());
        if self.order.len() > self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        true
    }

    pub fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn clear(&mut self) {
        self.order.clear();
        self.ids.clear();
    }
}

/// Token bucket: `rate` messages per second with bursts of `burst`. One per
/// client of a transport (floods get [`ControlError::RateLimited`]).
#[derive(Debug, Clone)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

/// Default per-client rate: messages per second...
pub const DEFAULT_RATE: f64 = 100.0;
/// ...with bursts of this many.
pub const DEFAULT_BURST: f64 = 50.0;

impl RateLimiter {
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        let burst = burst.max(1.0);
        Self {
            rate: rate.max(0.0),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token; `Err(RateLimited)` when none is left.
    pub fn check(&mut self, now: Instant) -> Result<(), ControlError> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(ControlError::RateLimited)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init() {
        let _ = gst::init();
    }

    #[test]
    fn segment_events_round_trip_through_messages_and_events() {
        init();
        let events = [
            SegmentEvent::Start {
                id: 7 << 32 | 1,
                running_time: gst::ClockTime::from_mseconds(1500),
                lookback: gst::ClockTime::from_mseconds(200),
            },
            SegmentEvent::Commit { id: 7 << 32 | 1 },
            SegmentEvent::End { id: 7 << 32 | 1 },
            SegmentEvent::Cancel {
                id: 7 << 32 | 2,
                reason: "click".into(),
            },
        ];
        for ev in events {
            let msg = ControlMessage::from_segment_event(&ev, Some("mic"));
            msg.validate().unwrap();
            let json = msg.to_json();
            let back = parse_message(json.as_bytes()).unwrap();
            assert_eq!(back, msg);
            assert_eq!(back.to_segment_event(), Some(ev.clone()));
            let event = back.to_event();
            let expected_type = if matches!(ev, SegmentEvent::Cancel { .. }) {
                gst::EventType::CustomDownstreamOob
            } else {
                gst::EventType::CustomDownstream
            };
            assert_eq!(event.type_(), expected_type);
            // Pipeline elements read it as the segment event; the id survives a relay.
            assert_eq!(SegmentEvent::parse(&event), Some(ev));
            let relayed = ControlMessage::from_event(&event, None).unwrap();
            assert_eq!(relayed, msg);
        }
    }

    #[test]
    fn other_types_map_to_rtai_control_events() {
        init();
        let mut interrupt = ControlMessage::new(TYPE_INTERRUPT);
        interrupt.stream = Some("browser".into());
        let ev = interrupt.to_event();
        assert_eq!(ev.type_(), gst::EventType::CustomUpstream);
        assert_eq!(ev.structure().unwrap().name(), EVENT_CONTROL);
        assert_eq!(ControlMessage::from_event(&ev, None).unwrap(), interrupt);

        let mut custom = ControlMessage::new("x-transcript");
        custom.segment_id = Some(12);
        custom.running_time = Some(99);
        custom.payload = Some(serde_json::json!({"text": "hello", "words": [1, 2]}));
        let ev = custom.to_event();
        assert_eq!(ev.type_(), gst::EventType::CustomDownstream);
        assert_eq!(ControlMessage::from_event(&ev, None).unwrap(), custom);
        let up = custom.to_upstream_event();
        assert_eq!(up.type_(), gst::EventType::CustomUpstream);
        assert_eq!(ControlMessage::from_event(&up, None).unwrap(), custom);

        let ack = CancelAck {
            element: "batcher0".into(),
            id: 5,
            buffers_dropped: 3,
            requests_aborted: 1,
            latency: gst::ClockTime::from_useconds(250),
        };
        let msg = ControlMessage::from_cancel_ack(&ack, None);
        assert_eq!(msg.kind, TYPE_CANCEL_ACK);
        let back = parse_message(msg.to_json().as_bytes()).unwrap();
        assert_eq!(back.to_cancel_ack(), Some(ack.clone()));
        let bus = ack.to_message(&gst::Bin::new());
        assert_eq!(
            ControlMessage::from_message(&bus, None)
                .unwrap()
                .to_cancel_ack(),
            Some(ack)
        );
    }

    #[test]
    fn refusals_carry_a_code() {
        let cases: &[(&[u8], &str)] = &[
            (b"{", "malformed"),
            (b"[1,2]", "malformed"),
            (b"\"text\"", "malformed"),
            (br#"{"id":"a","type":"shout"}"#, "unknown-type"),
            (br#"{"id":"a","type":"x-"}"#, "unknown-type"),
            (br#"{"id":"a","type":"x-Upper"}"#, "unknown-type"),
            (br#"{"id":"a","type":"speech-start"}"#, "invalid"),
            (br#"{"id":"","type":"interrupt"}"#, "invalid"),
            (br#"{"id":"a b","type":"interrupt"}"#, "invalid"),
            (
                br#"{"id":"a","type":"interrupt","segment_id":-1}"#,
                "malformed",
            ),
            (
                br#"{"id":"a","type":"speech-end","segment_id":9007199254740992}"#,
                "invalid",
            ),
            (br#"{"id":5,"type":"interrupt"}"#, "malformed"),
            (br#"{"ack":5}"#, "invalid"),
            (br#"{"type":"interrupt"}"#, "malformed"),
        ];
        for (input, code) in cases {
            let err = parse(input).unwrap_err();
            assert_eq!(err.code(), *code, "{}", String::from_utf8_lossy(input));
            let reply: serde_json::Value = serde_json::from_str(&error_json(&err, None)).unwrap();
            assert_eq!(reply["error"], *code);
        }
        let big = format!(
            r#"{{"id":"a","type":"x-big","payload":"{}"}}"#,
            "a".repeat(MAX_MESSAGE_BYTES)
        );
        assert_eq!(parse(big.as_bytes()).unwrap_err().code(), "too-large");
        let deep = format!(
            r#"{{"id":"a","type":"x-deep","payload":{}1{}}}"#,
            "[".repeat(MAX_NESTING),
            "]".repeat(MAX_NESTING)
        );
        assert_eq!(parse(deep.as_bytes()).unwrap_err().code(), "too-deep");
        // Brackets inside strings do not count.
        let quoted = format!(
            r#"{{"id":"a","type":"x-text","payload":"{}\"{}"}}"#,
            "[".repeat(100),
            "{".repeat(100)
        );
        assert!(parse(quoted.as_bytes()).is_ok());
        // Unknown fields are ignored; acks parse.
        assert!(matches!(
            parse(br#"{"id":"a","type":"interrupt","future":1}"#),
            Ok(Inbound::Message(_))
        ));
        assert_eq!(
            parse(ack_json("abc-1").as_bytes()),
            Ok(Inbound::Ack("abc-1".into()))
        );
    }

    #[test]
    fn tracker_resends_three_times_then_gives_up() {
        let t0 = Instant::now();
        let mut t = RetryTracker::<u32>::default();
        assert!(t.sent("a", 1, t0).is_none());
        assert!(t.sent("b", 2, t0).is_none());
        assert_eq!(t.next_deadline(), Some(t0 + ACK_TIMEOUT));
        assert!(t.due(t0 + Duration::from_millis(49)).is_empty());
        let acked = t.ack("b", t0 + Duration::from_millis(10)).unwrap();
        assert_eq!((acked.item, acked.retries), (2, 0));
        assert_eq!(acked.round_trip, Duration::from_millis(10));
        assert!(t.ack("b", t0 + Duration::from_millis(11)).is_none());
        let mut now = t0;
        for retry in 1..=MAX_RETRIES {
            now += ACK_TIMEOUT;
            assert_eq!(
                t.due(now),
                vec![RetryAction::Resend {
                    id: "a".into(),
                    item: 1,
                    retry
                }]
            );
        }
        now += ACK_TIMEOUT;
        assert_eq!(
            t.due(now),
            vec![RetryAction::Undelivered {
                id: "a".into(),
                item: 1,
                attempts: MAX_RETRIES + 1
            }]
        );
        assert!(t.is_empty());
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn rate_limiter_allows_bursts_then_the_rate() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10.0, 5.0, t0);
        for _ in 0..5 {
            r.check(t0).unwrap();
        }
        assert_eq!(r.check(t0), Err(ControlError::RateLimited));
        r.check(t0 + Duration::from_millis(100)).unwrap();
        assert_eq!(
            r.check(t0 + Duration::from_millis(100)),
            Err(ControlError::RateLimited)
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn message() -> impl Strategy<Value = ControlMessage> {
            let kind = prop_oneof![
                Just(TYPE_SPEECH_START.to_string()),
                Just(TYPE_SPEECH_COMMIT.to_string()),
                Just(TYPE_SPEECH_END.to_string()),
                Just(TYPE_SPEECH_CANCEL.to_string()),
                Just(TYPE_CANCEL_ACK.to_string()),
                Just(TYPE_INTERRUPT.to_string()),
                "x-[a-z0-9-]{1,20}",
            ];
            (
                "[A-Za-z0-9._:-]{1,64}",
                kind,
                0..=MAX_SEGMENT_ID,
                proptest::option::of(".{0,40}"),
                proptest::option::of(any::<u64>()),
                proptest::option::of(".{0,100}"),
            )
                .prop_map(|(id, kind, seg, stream, rt, text)| ControlMessage {
                    id,
                    kind,
                    segment_id: Some(seg),
                    stream,
                    running_time: rt,
                    payload: text.map(|t| serde_json::json!({ "text": t })),
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            #[test]
            fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
                let _ = parse(&bytes);
            }

            #[test]
            fn json_like_text_never_panics_and_respects_bounds(
                text in r#"[\[\]{}":,a-z0-9\\ -]{0,3000}"#
            ) {
                match parse(text.as_bytes()) {
                    Ok(Inbound::Message(m)) => prop_assert!(m.validate().is_ok()),
                    Ok(Inbound::Ack(id)) => prop_assert!(valid_id(&id)),
                    Err(_) => {}
                }
            }

            #[test]
            fn deep_nesting_is_refused_before_serde(depth in MAX_NESTING..MAX_MESSAGE_BYTES - 64) {
                let text = format!(r#"{{"id":"a","type":"x-a","payload":{}"#, "[".repeat(depth));
                prop_assert_eq!(parse(text.as_bytes()).unwrap_err(), ControlError::TooDeep);
            }

            #[test]
            fn valid_messages_round_trip(msg in message()) {
                let json = msg.to_json();
                prop_assert!(json.len() <= MAX_MESSAGE_BYTES);
                prop_assert_eq!(parse_message(json.as_bytes()).unwrap(), msg.clone());
                if msg.kind != TYPE_CANCEL_ACK {
                    init();
                    let back = ControlMessage::from_event(&msg.to_event(), None).unwrap();
                    prop_assert_eq!(back.id, msg.id.clone());
                    prop_assert_eq!(back.kind, msg.kind.clone());
                }
            }

            /// Whatever acks come back (some dropped, some late), every message ends
            /// acked or undelivered after at most MAX_RETRIES resends, exactly once.
            #[test]
            fn tracker_settles_every_message(
                acks in prop::collection::vec(proptest::option::of(0u64..300), 1..40)
            ) {
                let t0 = Instant::now();
                let mut t = RetryTracker::<usize>::default();
                for (i, _) in acks.iter().enumerate() {
                    t.sent(&i.to_string(), i, t0);
                }
                let mut settled = vec![0u32; acks.len()];
                let mut resends = vec![0u32; acks.len()];
                for ms in (0..=400).step_by(5) {
                    let now = t0 + Duration::from_millis(ms);
                    for (i, ack) in acks.iter().enumerate() {
                        if *ack == Some(ms) && t.ack(&i.to_string(), now).is_some() {
                            settled[i] += 1;
                        }
                    }
                    for action in t.due(now) {
                        match action {
                            RetryAction::Resend { item, .. } => resends[item] += 1,
                            RetryAction::Undelivered { item, attempts, .. } => {
                                prop_assert_eq!(attempts, MAX_RETRIES + 1);
                                settled[item] += 1;
                            }
                        }
                    }
                }
                prop_assert!(t.is_empty());
                prop_assert!(settled.iter().all(|&n| n == 1));
                prop_assert!(resends.iter().all(|&n| n <= MAX_RETRIES));
            }

            /// Within the window every id is delivered exactly once, however often it repeats.
            #[test]
            fn deduper_delivers_once(ids in prop::collection::vec(0u8..50, 0..500)) {
                let mut d = Deduper::with_capacity(64);
                let mut delivered = std::collections::HashMap::new();
                for id in &ids {
                    if d.first_time(&id.to_string()) {
                        *delivered.entry(*id).or_insert(0) += 1;
                    }
                }
                prop_assert!(delivered.values().all(|&n| n == 1));
                prop_assert_eq!(delivered.len(), ids.iter().collect::<HashSet<_>>().len());
                prop_assert!(d.len() <= 64);
            }
        }
    }
}
