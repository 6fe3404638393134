//! The event a consumer sees, the same everywhere: the bus message's `json`
//! field, the Redis stream, the live feed (SSE), `/api/events` and the
//! database rows. Described by the JSON Schema in `docs/event-schema.json`
//! (schema version [`SCHEMA_VERSION`]); every key is snake_case, and so is
//! every `type`.
//!
//! Plain data, no GStreamer: the store, the publisher and the HTTP server
//! depend on this module, not on the element.

use serde::Serialize;

/// Version of the event JSON; 1 marks rows stored before the schema existed
/// (returned by `/api/events` with the fields they lack derived, see
/// docs/analyticssink.md).
pub const SCHEMA_VERSION: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    ObjectAppear,
    ObjectLeave,
    Speech,
    Scene,
    Clip,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        Self::ObjectAppear,
        Self::ObjectLeave,
        Self::Speech,
        Self::Scene,
        Self::Clip,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ObjectAppear => "object_appear",
            Self::ObjectLeave => "object_leave",
            Self::Speech => "speech",
            Self::Scene => "scene",
            Self::Clip => "clip",
        }
    }

    /// The kind named `name`; the kebab-case spelling of schema 1
    /// (`object-appear`) is accepted too.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == name || k.as_str().replace('_', "-") == name)
    }

    pub fn names() -> String {
        Self::ALL
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Where [`Event::event_time`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeSource {
    /// A `timestamp/x-unix` reference timestamp meta on the stream's buffers
    /// (capture time from the source: RTSP/RTCP sender reports, …).
    Reference,
    /// The running time mapped through the pipeline's clock and base time.
    Clock,
    /// Neither was known: the wall clock when the event was made.
    Wall,
}

impl TimeSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reference => "reference",
            Self::Clock => "clock",
            Self::Wall => "wall",
        }
    }
}

/// One analytics event, as stored, published and served.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    pub schema_version: u32,
    /// A random (v4) UUID: unique everywhere, and what makes retried writes idempotent.
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// The stream the event is about, unique across pipelines:
    /// `<pipeline>/<stream-id>` (the GStreamer stream id of the pad's
    /// stream-start, else the pad's name).
    pub source_id: String,
    /// Name of the pipeline the element runs in.
    pub pipeline: String,
    pub element: String,
    /// The element's sink pad the event's data came in on (`sink_0`, …).
    pub stream: String,
    /// When the event happened (its start), UTC, RFC 3339 with milliseconds.
    pub event_time: String,
    /// [`Event::event_time`] in ms since the Unix epoch.
    pub event_time_ms: i64,
    pub time_source: TimeSource,
    /// Running time (ns) where the event starts / ends.
    pub start_ns: u64,
    pub end_ns: Option<u64>,
    /// Wall clock when the event was made, ms since the Unix epoch.
    pub created_ms: i64,
    pub confidence: Option<f64>,
    pub clip_worthy_score: f64,
    pub label: Option<String>,
    pub track_id: Option<i64>,
    pub text: Option<String>,
    /// Signals behind the score and type-specific details (snake_case keys).
    pub data: serde_json::Value,
}

pub fn new_event_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `ms` since the Unix epoch as RFC 3339 UTC with milliseconds
/// (`2026-12-02T06:50:00.123Z`); proleptic Gregorian calendar.
pub fn rfc3339_ms(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_table() {
        for (ms, want) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_796_194_200_123, "2026-12-02T06:50:00.123Z"),
            (4_107_542_399_999, "2100-02-28T23:59:59.999Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
        ] {
            assert_eq!(rfc3339_ms(ms), want, "{ms}");
        }
    }

    #[test]
    fn kinds_are_snake_case_and_parse_both_spellings() {
        for k in EventKind::ALL {
            let json = serde_json::to_value(k).unwrap();
            assert_eq!(json, k.as_str());
            assert!(!k.as_str().contains('-'));
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            assert_eq!(EventKind::parse(&k.as_str().replace('_', "-")), Some(k));
        }
        assert_eq!(EventKind::parse("explosion"), None);
        assert_eq!(EventKind::parse("object_"), None);
    }

    #[test]
    fn event_ids_are_v4_uuids() {
        let a = new_event_id();
        let u = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(u.get_version_num(), 4);
        assert_ne!(a, new_event_id());
    }
}
