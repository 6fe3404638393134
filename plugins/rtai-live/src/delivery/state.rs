//! The in-memory state of the streams and their viewer sessions: pure logic
//! with the clock passed in, so the session rules (join, switch, stall,
//! leave) are tested without waiting.
//!
//! What changes durably (a session joins, switches, leaves; a stream starts
//! or ends; a second of metrics) comes back as [`Change`]s for the store and
//! the WebSocket feed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::RenditionInfo;

/// Streams kept in memory (active ones and the most recently ended).
pub const MAX_STREAMS: usize = 256;
/// Active sessions of one stream; requests of further new sessions are
/// counted without a session.
pub const MAX_SESSIONS_PER_STREAM: usize = 100_000;
/// Renditions of one stream tracked by name (the ladder's plus a few).
pub const MAX_RENDITIONS: usize = 32;
/// Seconds of per-second samples kept for the health score.
const WINDOW_SECONDS: usize = 60;
/// Longest name accepted for a stream or rendition.
pub const MAX_NAME_LEN: usize = 64;
/// Ids of sessions closed by their player remembered per stream (a request
/// still in flight when the page closed must not make them join again).
pub const MAX_CLOSED_PER_STREAM: usize = 4096;

/// Why a session left.
pub const LEFT_TIMEOUT: &str = "timeout";
pub const LEFT_CLOSED: &str = "closed";

/// Label of requests that name no rendition (the master playlist).
pub const NO_RENDITION: &str = "master";

/// A stream or rendition name as this API takes it: 1–64 of `A-Z a-z 0-9 _ - .`,
/// not starting with a dot.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A session id as [`new_session_id`] makes them: 32 lowercase hex digits.
pub fn valid_session_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

pub fn new_session_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Active,
    Ended,
    Error(String),
}

impl Status {
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Ended => "ended",
            Status::Error(_) => "error",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub remote: Option<SocketAddr>,
    pub joined_ms: i64,
    pub last_request: Instant,
    pub last_request_ms: i64,
    pub rendition: Option<String>,
    pub switches: u64,
    pub bytes: u64,
    pub requests: u64,
    pub stalls: u64,
    /// Changed since last written to the store.
    pub dirty: bool,
}

impl Session {
    pub fn json(&self, now: Instant) -> Value {
        json!({
            "id": self.id,
            "remote": self.remote.map(|a| a.to_string()),
            "joined_ms": self.joined_ms,
            "rendition": self.rendition,
            "switches": self.switches,
            "bytes": self.bytes,
            "requests": self.requests,
            "stalls": self.stalls,
            "idle_ms": now.saturating_duration_since(self.last_request).as_millis() as u64,
        })
    }
}

/// Counters of one rendition (or [`NO_RENDITION`]).
#[derive(Debug, Clone, Default)]
pub struct RenditionCounters {
    pub bytes_sent: u64,
    pub requests: u64,
    pub errors: u64,
    pub segments: u64,
    pub segment_bytes: u64,
    pub stalls: u64,
    pub encoder_fps: Option<f64>,
}

/// One second of a stream.
#[derive(Debug, Clone, Copy, Default)]
struct Second {
    requests: u64,
    errors: u64,
    stalls: u64,
    ingress: u64,
}

#[derive(Debug)]
pub struct Stream {
    pub name: String,
    pub status: Status,
    pub publisher: Option<String>,
    pub renditions: Vec<RenditionInfo>,
    pub started_ms: i64,
    pub started: Instant,
    pub ended_ms: Option<i64>,
    /// Longest segment written so far (the playlists' target duration).
    pub target: Option<Duration>,
    pub sessions: HashMap<String, Session>,
    /// Sessions their player closed, and when: their late requests are
    /// counted without a session for `leave_after` target durations.
    closed: HashMap<String, Instant>,
    pub sessions_total: u64,
    pub switches_total: u64,
    pub ingress_total: u64,
    pub last_ingress: Option<Instant>,
    pub per_rendition: BTreeMap<String, RenditionCounters>,
    // The current second, and the rates of the last complete one.
    cur: Second,
    cur_egress: u64,
    last_tick: Instant,
    pub ingress_bps: f64,
    pub egress_bps: f64,
    window: VecDeque<Second>,
}

/// What the store and the live feed hear about.
#[derive(Debug, Clone)]
pub enum Change {
    StreamStarted {
        stream: String,
        started_ms: i64,
        publisher: Option<String>,
        renditions: Vec<RenditionInfo>,
    },
    StreamEnded {
        stream: String,
        started_ms: i64,
        ended_ms: i64,
        status: Status,
    },
    /// A session row to write (joined, updated or left).
    Session {
        stream: String,
        session: Session,
        left_ms: Option<i64>,
        /// [`LEFT_TIMEOUT`] or [`LEFT_CLOSED`] when it left.
        reason: Option<&'static str>,
    },
    Switch {
        stream: String,
        session: String,
        at_ms: i64,
        from: Option<String>,
        to: String,
    },
    /// One second of a stream.
    Second {
        stream: String,
        at_ms: i64,
        viewers: u64,
        ingress_bps: f64,
        egress_bps: f64,
        requests: u64,
        errors: u64,
        stalls: u64,
        renditions: BTreeMap<String, u64>,
    },
}

impl Change {
    pub fn stream(&self) -> &str {
        match self {
            Change::StreamStarted { stream, .. }
            | Change::StreamEnded { stream, .. }
            | Change::Session { stream, .. }
            | Change::Switch { stream, .. }
            | Change::Second { stream, .. } => stream,
        }
    }
}

/// Why [`Streams::leave`] found nothing to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveError {
    NoStream,
    NoSession,
}

/// Session rules, from the delivery's settings.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub default_target: Duration,
    pub leave_after: f64,
    pub stall_after: f64,
}

impl Stream {
    fn new(name: &str, now: Instant, now_ms: i64) -> Self {
        Self {
            name: name.to_string(),
            status: Status::Active,
            publisher: None,
            renditions: Vec::new(),
            started_ms: now_ms,
            started: now,
            ended_ms: None,
            target: None,
            sessions: HashMap::new(),
            closed: HashMap::new(),
            sessions_total: 0,
            switches_total: 0,
            ingress_total: 0,
            last_ingress: None,
            per_rendition: BTreeMap::new(),
            cur: Second::default(),
            cur_egress: 0,
            last_tick: now,
            ingress_bps: 0.0,
            egress_bps: 0.0,
            window: VecDeque::with_capacity(WINDOW_SECONDS),
        }
    }

    pub fn target(&self, rules: &Rules) -> Duration {
        self.target.unwrap_or(rules.default_target)
    }

    fn leave_after(&self, rules: &Rules) -> Duration {
        self.target(rules).mul_f64(rules.leave_after)
    }

    fn counters(&mut self, rendition: Option<&str>) -> Option<&mut RenditionCounters> {
        let key = rendition.unwrap_or(NO_RENDITION);
        if !self.per_rendition.contains_key(key) && self.per_rendition.len() >= MAX_RENDITIONS {
            return None;
        }
        Some(self.per_rendition.entry(key.to_string()).or_default())
    }

    /// Viewers (active sessions) by their current rendition.
    pub fn viewers_per_rendition(&self) -> BTreeMap<String, u64> {
        let mut m: BTreeMap<String, u64> = self
            .renditions
            .iter()
            .map(|r| (r.name.clone(), 0))
            .collect();
        for s in self.sessions.values() {
            *m.entry(s.rendition.clone().unwrap_or_else(|| NO_RENDITION.into()))
                .or_default() += 1;
        }
        m
    }

    fn window_sums(&self) -> Second {
        let mut sum = Second::default();
        for s in self.window.iter().chain(std::iter::once(&self.cur)) {
            sum.requests += s.requests;
            sum.errors += s.errors;
            sum.stalls += s.stalls;
            sum.ingress += s.ingress;
        }
        sum
    }

    /// Stalls per request over the last minute.
    pub fn stall_rate(&self) -> f64 {
        let s = self.window_sums();
        if s.requests == 0 {
            0.0
        } else {
            s.stalls as f64 / s.requests as f64
        }
    }

    /// Failed requests per request over the last minute.
    pub fn error_rate(&self) -> f64 {
        let s = self.window_sums();
        let all = s.requests + s.errors;
        if all == 0 {
            0.0
        } else {
            s.errors as f64 / all as f64
        }
    }

    /// Seconds since the last input bytes (since the start when none came).
    pub fn ingress_idle(&self, now: Instant) -> f64 {
        now.saturating_duration_since(self.last_ingress.unwrap_or(self.started))
            .as_secs_f64()
    }

    /// 0–100: 100 minus up to 40 for stalls (5 % of requests or more costs
    /// all 40), up to 40 for errors (1 % or more), up to 20 for an input gap
    /// (3 target durations or more) while active; 0 for a stream that failed.
    pub fn health(&self, now: Instant, rules: &Rules) -> f64 {
        if matches!(self.status, Status::Error(_)) {
            return 0.0;
        }
        let stalls = (self.stall_rate() / 0.05).min(1.0) * 40.0;
        let errors = (self.error_rate() / 0.01).min(1.0) * 40.0;
        let gap = if self.status == Status::Active {
            let t = self.target(rules).as_secs_f64().max(0.001);
            ((self.ingress_idle(now) - t).max(0.0) / (2.0 * t)).min(1.0) * 20.0
        } else {
            0.0
        };
        (100.0 - stalls - errors - gap).max(0.0).round()
    }

    pub fn summary(&self, now: Instant, rules: &Rules) -> Value {
        json!({
            "stream": self.name,
            "status": self.status.as_str(),
            "error": match &self.status { Status::Error(e) => Some(e.clone()), _ => None },
            "publisher": self.publisher,
            "started_ms": self.started_ms,
            "ended_ms": self.ended_ms,
            "uptime_s": match self.status {
                Status::Active => now.saturating_duration_since(self.started).as_secs(),
                _ => self.ended_ms.map_or(0, |e| ((e - self.started_ms).max(0) / 1000) as u64),
            },
            "viewers": self.sessions.len(),
            "ingress_bps": self.ingress_bps,
            "egress_bps": self.egress_bps,
            "health": self.health(now, rules),
            "stall_rate": self.stall_rate(),
            "error_rate": self.error_rate(),
            "ingress_idle_s": self.ingress_idle(now),
        })
    }

    pub fn detail(&self, now: Instant, rules: &Rules) -> Value {
        let mut v = self.summary(now, rules);
        let per: BTreeMap<&String, Value> = self
            .per_rendition
            .iter()
            .map(|(k, c)| {
                (
                    k,
                    json!({
                        "bytes_sent": c.bytes_sent,
                        "requests": c.requests,
                        "errors": c.errors,
                        "segments": c.segments,
                        "stalls": c.stalls,
                        "encoder_fps": c.encoder_fps,
                    }),
                )
            })
            .collect();
        let extra = json!({
            "renditions": self.renditions,
            "viewers_per_rendition": self.viewers_per_rendition(),
            "target_duration_ms": self.target(rules).as_millis() as u64,
            "sessions_total": self.sessions_total,
            "switches_total": self.switches_total,
            "ingress_bytes": self.ingress_total,
            "per_rendition": per,
        });
        if let (Value::Object(a), Value::Object(b)) = (&mut v, extra) {
            a.extend(b);
        }
        v
    }

    /// The once-a-second message of the WebSocket feed.
    pub fn stats_message(&self, now: Instant, now_ms: i64, rules: &Rules) -> Value {
        json!({
            "type": "stats",
            "stream": self.name,
            "t": now_ms,
            "status": self.status.as_str(),
            "viewers": self.sessions.len(),
            "ingress_bps": self.ingress_bps,
            "egress_bps": self.egress_bps,
            "renditions": self.viewers_per_rendition(),
            "health": self.health(now, rules),
            "stall_rate": self.stall_rate(),
            "error_rate": self.error_rate(),
        })
    }

    pub fn status_message(&self) -> Value {
        json!({
            "type": "status",
            "stream": self.name,
            "status": self.status.as_str(),
            "error": match &self.status { Status::Error(e) => Some(e.clone()), _ => None },
        })
    }
}

/// Every stream of one delivery.
#[derive(Debug, Default)]
pub struct Streams {
    pub map: HashMap<String, Stream>,
}

impl Streams {
    pub fn get(&self, name: &str) -> Option<&Stream> {
        self.map.get(name)
    }

    /// The stream, created (active) on first mention; `None` when the name is
    /// invalid or the table is full of active streams.
    fn entry(&mut self, name: &str, now: Instant, now_ms: i64) -> Option<&mut Stream> {
        if !valid_name(name) {
            return None;
        }
        if !self.map.contains_key(name) {
            if self.map.len() >= MAX_STREAMS {
                // Forget the stream that ended first.
                let oldest = self
                    .map
                    .values()
                    .filter(|s| s.status != Status::Active)
                    .min_by_key(|s| s.ended_ms)
                    .map(|s| s.name.clone())?;
                self.map.remove(&oldest);
            }
            self.map
                .insert(name.to_string(), Stream::new(name, now, now_ms));
        }
        self.map.get_mut(name)
    }

    pub fn stream_started(
        &mut self,
        name: &str,
        renditions: Vec<RenditionInfo>,
        publisher: Option<String>,
        now: Instant,
        now_ms: i64,
        out: &mut Vec<Change>,
    ) {
        if let Some(s) = self.map.get(name)
            && s.status != Status::Active
        {
            // A new run of an ended stream starts afresh.
            self.map.remove(name);
        }
        let Some(s) = self.entry(name, now, now_ms) else {
            return;
        };
        s.status = Status::Active;
        s.ended_ms = None;
        s.renditions = renditions.into_iter().take(MAX_RENDITIONS).collect();
        s.publisher = publisher;
        out.push(Change::StreamStarted {
            stream: s.name.clone(),
            started_ms: s.started_ms,
            publisher: s.publisher.clone(),
            renditions: s.renditions.clone(),
        });
    }

    pub fn stream_ended(
        &mut self,
        name: &str,
        status: Status,
        now_ms: i64,
        out: &mut Vec<Change>,
    ) -> bool {
        let Some(s) = self.map.get_mut(name) else {
            return false;
        };
        if s.status != Status::Active {
            return false;
        }
        s.status = status.clone();
        s.ended_ms = Some(now_ms);
        out.push(Change::StreamEnded {
            stream: s.name.clone(),
            started_ms: s.started_ms,
            ended_ms: now_ms,
            status,
        });
        true
    }

    pub fn ingress_bytes(&mut self, name: &str, n: u64, now: Instant, now_ms: i64) {
        if let Some(s) = self.entry(name, now, now_ms) {
            s.ingress_total = s.ingress_total.saturating_add(n);
            s.cur.ingress = s.cur.ingress.saturating_add(n);
            s.last_ingress = Some(now);
        }
    }

    pub fn segment_written(
        &mut self,
        name: &str,
        rendition: &str,
        duration: Duration,
        bytes: u64,
        now: Instant,
        now_ms: i64,
    ) {
        if !valid_name(rendition) {
            return;
        }
        if let Some(s) = self.entry(name, now, now_ms) {
            // The target duration: the longest segment, rounded up to 1 ms.
            let ms = Duration::from_millis(duration.as_micros().div_ceil(1000) as u64);
            if s.target.is_none_or(|t| ms > t) && ms > Duration::ZERO {
                s.target = Some(ms);
            }
            if let Some(c) = s.counters(Some(rendition)) {
                c.segments += 1;
                c.segment_bytes = c.segment_bytes.saturating_add(bytes);
            }
        }
    }

    pub fn encoder_fps(
        &mut self,
        name: &str,
        rendition: &str,
        fps: f64,
        now: Instant,
        now_ms: i64,
    ) {
        if !valid_name(rendition) || !fps.is_finite() {
            return;
        }
        if let Some(s) = self.entry(name, now, now_ms)
            && let Some(c) = s.counters(Some(rendition))
        {
            c.encoder_fps = Some(fps.max(0.0));
        }
    }

    /// A new session of `name`; its id (empty when the stream is unknown or full).
    pub fn new_session(
        &mut self,
        name: &str,
        remote: Option<SocketAddr>,
        now: Instant,
        now_ms: i64,
        out: &mut Vec<Change>,
    ) -> String {
        let Some(s) = self.map.get_mut(name) else {
            return String::new();
        };
        self_join(s, new_session_id(), remote, now, now_ms, out)
    }

    /// A media request; stall and switch inference for sessions.
    #[allow(clippy::too_many_arguments)]
    pub fn media_request(
        &mut self,
        name: &str,
        session: Option<&str>,
        rendition: Option<&str>,
        bytes: u64,
        rules: &Rules,
        now: Instant,
        now_ms: i64,
        out: &mut Vec<Change>,
    ) {
        let rendition = rendition.filter(|r| valid_name(r));
        let Some(s) = self.map.get_mut(name) else {
            return;
        };
        s.cur.requests += 1;
        s.cur_egress = s.cur_egress.saturating_add(bytes);
        if let Some(c) = s.counters(rendition) {
            c.requests += 1;
            c.bytes_sent = c.bytes_sent.saturating_add(bytes);
        }
        let Some(id) = session.filter(|id| valid_session_id(id)) else {
            return;
        };
        if s.closed.contains_key(id) {
            return;
        }
        if !s.sessions.contains_key(id) {
            // A session we do not know (it left after a long pause, or the
            // server restarted): it joins again under its id.
            if self_join(s, id.to_string(), None, now, now_ms, out).is_empty() {
                return;
            }
        }
        let stall_gap = s.target(rules).mul_f64(rules.stall_after);
        let sess = s.sessions.get_mut(id).expect("joined above");
        let gap = now.saturating_duration_since(sess.last_request);
        let mut stalled = false;
        if sess.requests > 0 && gap > stall_gap {
            sess.stalls += 1;
            stalled = true;
        }
        sess.requests += 1;
        sess.bytes = sess.bytes.saturating_add(bytes);
        sess.last_request = now;
        sess.last_request_ms = now_ms;
        sess.dirty = true;
        let mut switched = None;
        // A session watches a video rendition: the audio rendition its player
        // loads beside it (HLS audio group, DASH audio AdaptationSet) is no switch.
        let audio_only = |r: &str| {
            s.renditions
                .iter()
                .any(|ri| ri.name == r && ri.width == 0 && ri.height == 0)
        };
        if let Some(r) = rendition
            && r != NO_RENDITION
            && sess.rendition.as_deref() != Some(r)
            && !audio_only(r)
        {
            let from = sess.rendition.replace(r.to_string());
            if from.is_some() {
                sess.switches += 1;
                switched = Some(from);
            }
        }
        let snapshot = (stalled || switched.is_some()).then(|| sess.clone());
        if stalled {
            s.cur.stalls += 1;
            if let Some(c) = s.counters(rendition) {
                c.stalls += 1;
            }
        }
        if let Some(from) = switched {
            s.switches_total += 1;
            out.push(Change::Switch {
                stream: s.name.clone(),
                session: id.to_string(),
                at_ms: now_ms,
                from,
                to: rendition.unwrap_or_default().to_string(),
            });
        }
        if let Some(session) = snapshot {
            out.push(Change::Session {
                stream: s.name.clone(),
                session,
                left_ms: None,
                reason: None,
            });
            if let Some(sess) = s.sessions.get_mut(id) {
                sess.dirty = false;
            }
        }
    }

    pub fn request_failed(&mut self, name: &str, rendition: Option<&str>) {
        let rendition = rendition.filter(|r| valid_name(r));
        if let Some(s) = self.map.get_mut(name) {
            s.cur.errors += 1;
            if let Some(c) = s.counters(rendition) {
                c.errors += 1;
            }
        }
    }

    /// Ends the sessions with no request for `leave_after` target durations
    /// (all of them once the stream ended and they went quiet as long).
    pub fn sweep(&mut self, rules: &Rules, now: Instant, now_ms: i64, out: &mut Vec<Change>) {
        for s in self.map.values_mut() {
            let leave = s.leave_after(rules);
            let gone: Vec<String> = s
                .sessions
                .values()
                .filter(|x| now.saturating_duration_since(x.last_request) > leave)
                .map(|x| x.id.clone())
                .collect();
            for id in gone {
                let session = s.sessions.remove(&id).expect("listed");
                // Left when it was last heard of plus the timeout.
                let left_ms = (session.last_request_ms + leave.as_millis() as i64).min(now_ms);
                out.push(Change::Session {
                    stream: s.name.clone(),
                    session,
                    left_ms: Some(left_ms),
                    reason: Some(LEFT_TIMEOUT),
                });
            }
            s.closed
                .retain(|_, at| now.saturating_duration_since(*at) <= leave);
        }
    }

    /// The player of session `id` closed (its page was hidden for good):
    /// the session leaves at once.
    pub fn leave(
        &mut self,
        name: &str,
        id: &str,
        now: Instant,
        now_ms: i64,
        out: &mut Vec<Change>,
    ) -> Result<(), LeaveError> {
        let s = self.map.get_mut(name).ok_or(LeaveError::NoStream)?;
        let session = s.sessions.remove(id).ok_or(LeaveError::NoSession)?;
        if s.closed.len() >= MAX_CLOSED_PER_STREAM {
            // Forget the one closed first.
            if let Some(oldest) = s
                .closed
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(k, _)| k.clone())
            {
                s.closed.remove(&oldest);
            }
        }
        s.closed.insert(session.id.clone(), now);
        out.push(Change::Session {
            stream: s.name.clone(),
            session,
            left_ms: Some(now_ms),
            reason: Some(LEFT_CLOSED),
        });
        Ok(())
    }

    /// Closes the current second of every stream: rates, the health window,
    /// a metrics row per active (or just ended) stream, session rows that
    /// changed (every `flush_sessions` call).
    pub fn tick(&mut self, now: Instant, now_ms: i64, flush_sessions: bool, out: &mut Vec<Change>) {
        for s in self.map.values_mut() {
            let elapsed = now.saturating_duration_since(s.last_tick).as_secs_f64();
            if elapsed <= 0.0 {
                continue;
            }
            s.ingress_bps = s.cur.ingress as f64 * 8.0 / elapsed;
            s.egress_bps = s.cur_egress as f64 * 8.0 / elapsed;
            let second = std::mem::take(&mut s.cur);
            s.cur_egress = 0;
            s.last_tick = now;
            if s.window.len() == WINDOW_SECONDS {
                s.window.pop_front();
            }
            s.window.push_back(second);
            let recently_ended = s.ended_ms.is_some_and(|e| now_ms - e < 5_000);
            if s.status == Status::Active || recently_ended {
                out.push(Change::Second {
                    stream: s.name.clone(),
                    at_ms: now_ms,
                    viewers: s.sessions.len() as u64,
                    ingress_bps: s.ingress_bps,
                    egress_bps: s.egress_bps,
                    requests: second.requests,
                    errors: second.errors,
                    stalls: second.stalls,
                    renditions: s.viewers_per_rendition(),
                });
            }
            if flush_sessions {
                for sess in s.sessions.values_mut().filter(|x| x.dirty) {
                    sess.dirty = false;
                    out.push(Change::Session {
                        stream: s.name.clone(),
                        session: sess.clone(),
                        left_ms: None,
                        reason: None,
                    });
                }
            }
        }
    }
}

fn self_join(
    s: &mut Stream,
    id: String,
    remote: Option<SocketAddr>,
    now: Instant,
    now_ms: i64,
    out: &mut Vec<Change>,
) -> String {
    if s.sessions.len() >= MAX_SESSIONS_PER_STREAM {
        return String::new();
    }
    let session = Session {
        id: id.clone(),
        remote,
        joined_ms: now_ms,
        last_request: now,
        last_request_ms: now_ms,
        rendition: None,
        switches: 0,
        bytes: 0,
        requests: 0,
        stalls: 0,
        dirty: false,
    };
    s.sessions_total += 1;
    out.push(Change::Session {
        stream: s.name.clone(),
        session: session.clone(),
        left_ms: None,
        reason: None,
    });
    s.sessions.insert(id.clone(), session);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules {
        default_target: Duration::from_secs(1),
        leave_after: 3.0,
        stall_after: 1.5,
    };

    fn rendition(name: &str) -> RenditionInfo {
        RenditionInfo {
            name: name.into(),
            width: 1280,
            height: 720,
            bandwidth: 2_800_000,
            codecs: "avc1.64001f,mp4a.40.2".into(),
        }
    }

    fn started(t0: Instant) -> Streams {
        let mut st = Streams::default();
        let mut out = vec![];
        st.stream_started(
            "live",
            vec![rendition("720p"), rendition("480p")],
            Some("127.0.0.1:5000".into()),
            t0,
            0,
            &mut out,
        );
        assert!(matches!(out[0], Change::StreamStarted { .. }));
        st
    }

    #[test]
    fn names_and_ids_are_checked() {
        assert!(valid_name("live"));
        assert!(valid_name("cam-1_a.b"));
        assert!(!valid_name(""));
        assert!(!valid_name(".."));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(&"x".repeat(65)));
        assert!(valid_session_id(&new_session_id()));
        assert!(!valid_session_id("../../etc/passwd"));
        assert!(!valid_session_id(&"A".repeat(32)));
    }

    #[test]
    fn a_closed_player_leaves_at_once_and_its_late_requests_do_not_rejoin() {
        let t0 = Instant::now();
        let mut st = started(t0);
        let mut out = vec![];
        let ms = |d: u64| t0 + Duration::from_millis(d);
        let id = st.new_session("live", None, ms(0), 0, &mut out);
        let other = st.new_session("live", None, ms(0), 0, &mut out);
        assert_eq!(
            st.leave("nope", &id, ms(10), 10, &mut out),
            Err(LeaveError::NoStream)
        );
        assert_eq!(
            st.leave("live", &new_session_id(), ms(10), 10, &mut out),
            Err(LeaveError::NoSession)
        );
        out.clear();
        assert_eq!(st.leave("live", &id, ms(100), 100, &mut out), Ok(()));
        assert!(matches!(
            &out[..],
            [Change::Session { left_ms: Some(100), reason: Some(LEFT_CLOSED), session, .. }] if session.id == id
        ));
        assert_eq!(st.get("live").unwrap().sessions.len(), 1);
        // Gone: a second beacon finds nothing.
        assert_eq!(
            st.leave("live", &id, ms(110), 110, &mut out),
            Err(LeaveError::NoSession)
        );
        // A request that was in flight is counted, without joining again.
        st.media_request(
            "live",
            Some(&id),
            Some("720p"),
            10,
            &RULES,
            ms(200),
            200,
            &mut out,
        );
        let s = st.get("live").unwrap();
        assert_eq!((s.sessions.len(), s.sessions_total), (1, 2));
        assert_eq!(s.per_rendition["720p"].requests, 1);
        // The other one still leaves by silence, with reason timeout; after
        // leave_after the closed id is forgotten and may join again.
        out.clear();
        st.sweep(&RULES, ms(3101), 3101, &mut out);
        assert!(matches!(
            &out[..],
            [Change::Session { reason: Some(LEFT_TIMEOUT), session, .. }] if session.id == other
        ));
        st.media_request(
            "live",
            Some(&id),
            None,
            10,
            &RULES,
            ms(3200),
            3200,
            &mut out,
        );
        assert_eq!(st.get("live").unwrap().sessions.len(), 1);
    }

    #[test]
    fn audio_requests_are_no_rendition_switch() {
        let t0 = Instant::now();
        let mut st = Streams::default();
        let mut out = vec![];
        let audio = RenditionInfo {
            name: "audio".into(),
            width: 0,
            height: 0,
            bandwidth: 128_000,
            codecs: "mp4a.40.2".into(),
        };
        st.stream_started(
            "live",
            vec![rendition("720p"), audio],
            None,
            t0,
            0,
            &mut out,
        );
        let id = st.new_session("live", None, t0, 0, &mut out);
        out.clear();
        // A player loads audio before and beside its video rung (DASH, HLS audio group).
        for (i, r) in ["audio", "720p", "audio", "720p", "audio"]
            .iter()
            .enumerate()
        {
            let at = 100 * (i as u64 + 1);
            let now = t0 + Duration::from_millis(at);
            st.media_request(
                "live",
                Some(&id),
                Some(r),
                10,
                &RULES,
                now,
                at as i64,
                &mut out,
            );
        }
        let s = st.get("live").unwrap();
        let sess = &s.sessions[&id];
        assert_eq!(sess.rendition.as_deref(), Some("720p"));
        assert_eq!((sess.switches, sess.bytes, sess.requests), (0, 50, 5));
        assert!(!out.iter().any(|c| matches!(c, Change::Switch { .. })));
        assert_eq!(s.viewers_per_rendition()["720p"], 1);
        // Its audio bytes are still counted for the audio rendition.
        assert_eq!(s.per_rendition["audio"].bytes_sent, 30);
    }

    #[test]
    fn sessions_join_switch_stall_and_leave_by_the_target_duration() {
        let t0 = Instant::now();
        let mut st = started(t0);
        let mut out = vec![];
        let ms = |d: u64| t0 + Duration::from_millis(d);
        // A 2 s target duration once a 2 s segment is written.
        st.segment_written(
            "live",
            "720p",
            Duration::from_micros(1_999_500),
            1000,
            t0,
            0,
        );
        st.segment_written("live", "720p", Duration::from_millis(2000), 1000, t0, 0);
        assert_eq!(
            st.get("live").unwrap().target,
            Some(Duration::from_millis(2000))
        );
        let id = st.new_session("live", None, t0, 0, &mut out);
        assert!(valid_session_id(&id));
        assert_eq!(st.new_session("nope", None, t0, 0, &mut out), "");
        st.media_request(
            "live",
            Some(&id),
            Some("720p"),
            100,
            &RULES,
            ms(500),
            500,
            &mut out,
        );
        st.media_request(
            "live",
            Some(&id),
            Some("720p"),
            100,
            &RULES,
            ms(2500),
            2500,
            &mut out,
        );
        // 3.1 s gap > 1.5 × 2 s: a stall; and a switch to 480p.
        out.clear();
        st.media_request(
            "live",
            Some(&id),
            Some("480p"),
            50,
            &RULES,
            ms(5600),
            5600,
            &mut out,
        );
        let s = st.get("live").unwrap();
        let sess = &s.sessions[&id];
        assert_eq!(
            (sess.stalls, sess.switches, sess.bytes, sess.requests),
            (1, 1, 250, 3)
        );
        assert_eq!(sess.rendition.as_deref(), Some("480p"));
        assert!(out.iter().any(
            |c| matches!(c, Change::Switch { from: Some(f), to, .. } if f == "720p" && to == "480p")
        ));
        assert_eq!(s.viewers_per_rendition()["480p"], 1);
        assert_eq!(s.viewers_per_rendition()["720p"], 0);
        assert_eq!(s.per_rendition["480p"].stalls, 1);
        // Not gone at 3 × 2 s after the last request, gone just after.
        out.clear();
        st.sweep(&RULES, ms(5600 + 6000), 11600, &mut out);
        assert_eq!(st.get("live").unwrap().sessions.len(), 1);
        st.sweep(&RULES, ms(5600 + 6001), 11601, &mut out);
        assert_eq!(st.get("live").unwrap().sessions.len(), 0);
        assert!(matches!(
            &out[0],
            Change::Session {
                left_ms: Some(11600),
                ..
            }
        ));
        // A request under the old id joins again.
        st.media_request(
            "live",
            Some(&id),
            Some("480p"),
            1,
            &RULES,
            ms(20000),
            20000,
            &mut out,
        );
        let s = st.get("live").unwrap();
        assert_eq!((s.sessions.len(), s.sessions_total), (1, 2));
    }

    #[test]
    fn rates_health_and_end() {
        let t0 = Instant::now();
        let mut st = started(t0);
        let mut out = vec![];
        st.ingress_bytes("live", 125_000, t0, 0);
        st.media_request("live", None, Some("720p"), 250_000, &RULES, t0, 0, &mut out);
        st.tick(t0 + Duration::from_secs(1), 1000, false, &mut out);
        let s = st.get("live").unwrap();
        assert_eq!(s.ingress_bps, 1_000_000.0);
        assert_eq!(s.egress_bps, 2_000_000.0);
        assert_eq!(s.health(t0 + Duration::from_secs(1), &RULES), 100.0);
        // Errors: 1 of 2 requests failed → the error part is all gone.
        st.request_failed("live", Some("720p"));
        assert_eq!(
            st.get("live")
                .unwrap()
                .health(t0 + Duration::from_secs(1), &RULES),
            60.0
        );
        // No input for 3 target durations: the gap part too.
        assert_eq!(
            st.get("live")
                .unwrap()
                .health(t0 + Duration::from_secs(4), &RULES),
            40.0
        );
        assert!(st.stream_ended("live", Status::Ended, 2000, &mut out));
        assert!(!st.stream_ended("live", Status::Ended, 2000, &mut out));
        assert_eq!(st.get("live").unwrap().status, Status::Ended);
        assert!(!st.stream_ended("nope", Status::Ended, 2000, &mut out));
    }

    #[test]
    fn tables_are_bounded() {
        let t0 = Instant::now();
        let mut st = Streams::default();
        let mut out = vec![];
        for i in 0..MAX_STREAMS + 10 {
            st.ingress_bytes(&format!("s{i}"), 1, t0, 0);
        }
        // All active: the extra ones are not tracked.
        assert_eq!(st.map.len(), MAX_STREAMS);
        st.stream_ended("s0", Status::Ended, 1, &mut out);
        st.ingress_bytes("new", 1, t0, 0);
        assert!(st.get("new").is_some() && st.get("s0").is_none());
        let mut st = started(t0);
        for i in 0..MAX_RENDITIONS + 5 {
            st.segment_written("live", &format!("r{i}"), Duration::from_secs(1), 1, t0, 0);
        }
        assert_eq!(st.get("live").unwrap().per_rendition.len(), MAX_RENDITIONS);
    }
}
