//! The speculation / control protocol. See `docs/protocol.md`.
//!
//! Every structure name starts with `rtai-` so it never collides with events of
//! other elements. Parsers return `None` for anything they do not recognise or
//! that is malformed; they never panic.

use std::collections::{HashSet, VecDeque};
use std::sync::LazyLock;

use gst::prelude::*;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "rtai-protocol",
        gst::DebugColorFlags::empty(),
        Some("rtai speculation protocol"),
    )
});

/// Name of the registered custom meta that carries a segment id on a buffer.
pub const SEGMENT_META_NAME: &str = "RtaiSegmentIdMeta";
/// Field of the custom meta's structure holding the id (guint64).
pub const SEGMENT_ID_FIELD: &str = "segment-id";
/// Optional field of the segment-id meta: the speech probability (gdouble 0–1) the
/// producer's detector gave the buffer's audio (its highest frame).
pub const SEGMENT_PROBABILITY_FIELD: &str = "speech-probability";
/// Optional field of the segment-id meta: the buffer's RMS level in dBFS (gdouble).
pub const SEGMENT_LEVEL_FIELD: &str = "level";

/// Bits of a segment id that count segments within one stream; the bits above
/// them name the stream (see [`new_segment_id_base`]).
pub const SEGMENT_SEQ_BITS: u32 = 32;
/// Stream tags use the bits from [`SEGMENT_SEQ_BITS`] up to 2^53, so an id
/// stays exact in JSON (JavaScript numbers) and in signed 64-bit columns.
const SEGMENT_TAG_BITS: u32 = 21;

/// The high part of a new stream's segment ids: `id = base | seq` with `seq` in
/// 1..2^32. Every call in a process returns a different base (a process-wide
/// counter, 2^21 − 1 values before it wraps) starting at a random point, so
/// two producers feeding one consumer — in one process or, with high
/// probability, across processes (the gRPC bridge) — never share an id.
/// A producer calls it once per stream (e.g. at each READY → PAUSED).
pub fn new_segment_id_base() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static START: LazyLock<u64> = LazyLock::new(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish()
    });
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tags = (1u64 << SEGMENT_TAG_BITS) - 1;
    let n = START.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed));
    // 1..2^21: a tag is never 0, so no two streams' ids overlap with legacy ids 1, 2, 3...
    let tag = n % tags + 1;
    tag << SEGMENT_SEQ_BITS
}

pub const EVENT_START: &str = "rtai-segment-start";
pub const EVENT_COMMIT: &str = "rtai-segment-commit";
pub const EVENT_END: &str = "rtai-segment-end";
pub const EVENT_CANCEL: &str = "rtai-segment-cancel";
/// Name of the element message an element posts after acting on a cancel.
pub const MESSAGE_CANCEL_ACK: &str = "cancel-ack";

static META_REGISTERED: LazyLock<()> =
    LazyLock::new(|| crate::custom_meta::register_once(SEGMENT_META_NAME));

/// The segment-id meta: a `GstCustomMeta` named [`SEGMENT_META_NAME`].
pub struct SegmentIdMeta;

impl SegmentIdMeta {
    /// Registers the meta; idempotent. Call from `plugin_init` of every plugin that uses it.
    pub fn register() {
        LazyLock::force(&META_REGISTERED);
    }

    /// Tags `buffer` with `id`, replacing an id it already carries.
    pub fn set(buffer: &mut gst::BufferRef, id: u64) {
        Self::register();
        if let Ok(mut meta) = gst::meta::CustomMeta::from_mut_buffer(buffer, SEGMENT_META_NAME) {
            meta.mut_structure().set(SEGMENT_ID_FIELD, id);
            return;
        }
        let mut meta = gst::meta::CustomMeta::add(buffer, SEGMENT_META_NAME)
            .expect("segment-id meta is registered above");
        meta.mut_structure().set(SEGMENT_ID_FIELD, id);
    }

    /// Adds the producer's voice measures to the segment-id meta `buffer` already carries
    /// ([`SEGMENT_PROBABILITY_FIELD`], [`SEGMENT_LEVEL_FIELD`]); nothing without the meta.
    pub fn set_voice(buffer: &mut gst::BufferRef, probability: f64, level_db: f64) {
        if let Ok(mut meta) = gst::meta::CustomMeta::from_mut_buffer(buffer, SEGMENT_META_NAME) {
            let s = meta.mut_structure();
            s.set(SEGMENT_PROBABILITY_FIELD, probability);
            s.set(SEGMENT_LEVEL_FIELD, level_db);
        }
    }

    /// The speech probability and level (dBFS) the segment-id meta carries, if both are set.
    pub fn voice(buffer: &gst::BufferRef) -> Option<(f64, f64)> {
        let meta = gst::meta::CustomMeta::from_buffer(buffer, SEGMENT_META_NAME).ok()?;
        let s = meta.structure();
        Some((
            s.get::<f64>(SEGMENT_PROBABILITY_FIELD).ok()?,
            s.get::<f64>(SEGMENT_LEVEL_FIELD).ok()?,
        ))
    }

    /// The segment id `buffer` carries, if any.
    pub fn get(buffer: &gst::BufferRef) -> Option<u64> {
        let meta = gst::meta::CustomMeta::from_buffer(buffer, SEGMENT_META_NAME).ok()?;
        match meta.structure().get::<u64>(SEGMENT_ID_FIELD) {
            Ok(id) => Some(id),
            Err(err) => {
                gst::debug!(CAT, "segment-id meta without a valid id: {err}");
                None
            }
        }
    }
}

/// A protocol event about one speech (or other) segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentEvent {
    /// A segment starts. `running_time` is that of its first sample (lookback
    /// included); `lookback` is how much of it precedes the triggering frame.
    Start {
        id: u64,
        running_time: gst::ClockTime,
        lookback: gst::ClockTime,
    },
    /// The segment is confirmed: downstream may act on it for good.
    Commit { id: u64 },
    /// The segment's last buffer has been sent.
    End { id: u64 },
    /// The segment was a false start: drop its data and abort work on it.
    Cancel { id: u64, reason: String },
}

impl SegmentEvent {
    pub fn id(&self) -> u64 {
        match self {
            Self::Start { id, .. }
            | Self::Commit { id }
            | Self::End { id }
            | Self::Cancel { id, .. } => *id,
        }
    }

    pub fn to_structure(&self) -> gst::Structure {
        match self {
            Self::Start {
                id,
                running_time,
                lookback,
            } => gst::Structure::builder(EVENT_START)
                .field("segment-id", id)
                .field("running-time", running_time.nseconds())
                .field("lookback", lookback.nseconds())
                .build(),
            Self::Commit { id } => gst::Structure::builder(EVENT_COMMIT)
                .field("segment-id", id)
                .build(),
            Self::End { id } => gst::Structure::builder(EVENT_END)
                .field("segment-id", id)
                .build(),
            Self::Cancel { id, reason } => gst::Structure::builder(EVENT_CANCEL)
                .field("segment-id", id)
                .field("reason", reason)
                .build(),
        }
    }

    /// The event to push downstream: start, commit and end are serialized
    /// (they stay in order with the data); cancel is out-of-band so it
    /// overtakes queued buffers.
    pub fn to_event(&self) -> gst::Event {
        let s = self.to_structure();
        match self {
            Self::Cancel { .. } => gst::event::CustomDownstreamOob::new(s),
            _ => gst::event::CustomDownstream::new(s),
        }
    }

    pub fn from_structure(s: &gst::StructureRef) -> Option<Self> {
        let name = s.name().as_str();
        if !name.starts_with("rtai-segment-") {
            return None;
        }
        let parsed = (|| -> Result<Self, String> {
            let id = s.get::<u64>("segment-id").map_err(|e| e.to_string())?;
            Ok(match name {
                EVENT_START => Self::Start {
                    id,
                    running_time: gst::ClockTime::from_nseconds(
                        s.get::<u64>("running-time").map_err(|e| e.to_string())?,
                    ),
                    lookback: gst::ClockTime::from_nseconds(
                        s.get::<u64>("lookback").map_err(|e| e.to_string())?,
                    ),
                },
                EVENT_COMMIT => Self::Commit { id },
                EVENT_END => Self::End { id },
                EVENT_CANCEL => Self::Cancel {
                    id,
                    reason: s
                        .get::<Option<String>>("reason")
                        .ok()
                        .flatten()
                        .unwrap_or_default(),
                },
                other => return Err(format!("unknown protocol structure {other}")),
            })
        })();
        match parsed {
            Ok(ev) => Some(ev),
            Err(err) => {
                gst::debug!(CAT, "ignoring malformed protocol structure {s}: {err}");
                None
            }
        }
    }

    /// Parses a downstream custom event (serialized or OOB); `None` for any other event.
    pub fn parse(event: &gst::EventRef) -> Option<Self> {
        match event.type_() {
            gst::EventType::CustomDownstream | gst::EventType::CustomDownstreamOob => {
                Self::from_structure(event.structure()?)
            }
            _ => None,
        }
    }
}

/// The `cancel-ack` element message: what one element did about a cancel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelAck {
    pub element: String,
    pub id: u64,
    pub buffers_dropped: u64,
    pub requests_aborted: u64,
    /// Wall-clock time from receiving the cancel to acting on it.
    pub latency: gst::ClockTime,
}

impl CancelAck {
    pub fn to_structure(&self) -> gst::Structure {
        gst::Structure::builder(MESSAGE_CANCEL_ACK)
            .field("element", &self.element)
            .field("segment-id", self.id)
            .field("buffers-dropped", self.buffers_dropped)
            .field("requests-aborted", self.requests_aborted)
            .field("latency", self.latency.nseconds())
            .build()
    }

    /// An element message from `src`, ready for `post_message`.
    pub fn to_message(&self, src: &impl IsA<gst::Object>) -> gst::Message {
        gst::message::Element::builder(self.to_structure())
            .src(src)
            .build()
    }

    pub fn from_structure(s: &gst::StructureRef) -> Option<Self> {
        if s.name() != MESSAGE_CANCEL_ACK {
            return None;
        }
        let parsed = (|| -> Result<Self, String> {
            let u = |field: &str| s.get::<u64>(field).map_err(|e| e.to_string());
            Ok(Self {
                element: s.get::<String>("element").map_err(|e| e.to_string())?,
                id: u("segment-id")?,
                buffers_dropped: u("buffers-dropped")?,
                requests_aborted: u("requests-aborted")?,
                latency: gst::ClockTime::from_nseconds(u("latency")?),
            })
        })();
        match parsed {
            Ok(ack) => Some(ack),
            Err(err) => {
                gst::debug!(CAT, "ignoring malformed cancel-ack {s}: {err}");
                None
            }
        }
    }

    pub fn parse(message: &gst::MessageRef) -> Option<Self> {
        match message.view() {
            gst::MessageView::Element(e) => Self::from_structure(e.structure()?),
            _ => None,
        }
    }
}

/// Remembers recently cancelled segment ids so an element can drop their
/// buffers when they arrive after the cancel (e.g. out of a queue).
/// Bounded: the oldest ids are forgotten first.
#[derive(Debug)]
pub struct CancelTracker {
    capacity: usize,
    order: VecDeque<u64>,
    ids: HashSet<u64>,
}

impl Default for CancelTracker {
    fn default() -> Self {
        Self::with_capacity(1024)
    }
}

impl CancelTracker {
    pub fn with_capacity(capacity: usize) -> Self {
        assert!(capacity > 0, "a CancelTracker must hold at least one id");
        Self {
            capacity,
            order: VecDeque::with_capacity(capacity),
            ids: HashSet::with_capacity(capacity),
        }
    }

    /// Records a cancel; returns false if the id was already known.
    pub fn cancel(&mut self, id: u64) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        true
    }

    pub fn is_cancelled(&self, id: u64) -> bool {
        self.ids.contains(&id)
    }

    /// True when `buffer` carries the id of a cancelled segment.
    pub fn should_drop(&self, buffer: &gst::BufferRef) -> bool {
        SegmentIdMeta::get(buffer).is_some_and(|id| self.is_cancelled(id))
    }

    pub fn clear(&mut self) {
        self.order.clear();
        self.ids.clear();
    }
}
