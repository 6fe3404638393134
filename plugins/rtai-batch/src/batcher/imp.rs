//! batcher: collects buffers into batches in front of a stage that costs the
//! same per call whatever the payload, and pushes each batch from its own
//! thread as one buffer (`concat-audio`, `concat-text`) or one buffer list
//! (`keep-separate`).
//!
//! Data flow: the sink pad's chain adds buffers to the batch being filled
//! (`pending`); a full batch moves into a bounded queue (`max-queue` batches,
//! `overflow` policy); the source pad's task pushes queued items in order and
//! flushes `pending` once its `timeout` (wall clock) has passed. Serialized
//! events close the pending batch and travel through the same queue, so they
//! stay in order with the buffers around them; a batch never spans a caps
//! change, a DISCONT or two segment ids. An out-of-band segment cancel drops
//! that segment's buffers wherever they wait and posts a `cancel-ack`.

use std::collections::VecDeque;
use std::sync::{Condvar, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use rtai_core::stats::LatencyHistogram;
use rtai_core::{CancelAck, CancelTracker, SegmentEvent, SegmentIdMeta};

use super::{Merge, Overflow};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "batcher",
        gst::DebugColorFlags::empty(),
        Some("Segment-aware batcher"),
    )
});

const DEFAULT_MAX_BATCH_SIZE: u32 = 16;
const DEFAULT_MAX_BATCH_BYTES: u64 = 0;
const DEFAULT_MAX_BATCH_DURATION: u64 = 0;
const DEFAULT_TIMEOUT_MS: u32 = 100;
const DEFAULT_MERGE: Merge = Merge::KeepSeparate;
const DEFAULT_SEPARATOR: &str = "\n";
const DEFAULT_MAX_QUEUE: u32 = 4;
const DEFAULT_OVERFLOW: Overflow = Overflow::Block;
const DEFAULT_ADAPTIVE: bool = false;
const DEFAULT_LATENCY_BUDGET_MS: u32 = 300;
/// Weight of the newest downstream call in the running estimate used by `adaptive`.
const DOWNSTREAM_EWMA_WEIGHT: f64 = 0.2;

#[derive(Debug, Clone)]
struct Settings {
    max_batch_size: u32,
    max_batch_bytes: u64,
    max_batch_duration: u64,
    timeout_ms: u32,
    merge: Merge,
    separator: String,
    max_queue: u32,
    overflow: Overflow,
    adaptive: bool,
    latency_budget_ms: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            max_batch_duration: DEFAULT_MAX_BATCH_DURATION,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            merge: DEFAULT_MERGE,
            separator: DEFAULT_SEPARATOR.to_string(),
            max_queue: DEFAULT_MAX_QUEUE,
            overflow: DEFAULT_OVERFLOW,
            adaptive: DEFAULT_ADAPTIVE,
            latency_budget_ms: DEFAULT_LATENCY_BUDGET_MS,
        }
    }
}

impl Settings {
    /// The longest a batch's first buffer waits for company. In adaptive mode
    /// the wait shrinks as the downstream stage's own time eats the budget.
    fn effective_timeout(&self, downstream_ns: f64) -> Option<Duration> {
        if self.timeout_ms == 0 {
            return None;
        }
        let timeout = Duration::from_millis(self.timeout_ms as u64);
        if !self.adaptive {
            return Some(timeout);
        }
        let budget = Duration::from_millis(self.latency_budget_ms as u64);
        Some(
            budget
                .saturating_sub(Duration::from_nanos(downstream_ns as u64))
                .min(timeout),
        )
    }
}

/// The media a merge mode can join (ANY for keep-separate).
fn merge_caps(merge: Merge) -> gst::Caps {
    match merge {
        Merge::KeepSeparate => gst::Caps::new_any(),
        Merge::ConcatAudio => gst::Caps::builder("audio/x-raw")
            .field("layout", "interleaved")
            .build(),
        Merge::ConcatText => gst::Caps::builder("text/x-raw").build(),
    }
}

struct Batch {
    buffers: Vec<gst::Buffer>,
    arrivals: Vec<Instant>,
    bytes: u64,
    segment_id: Option<u64>,
    /// Batches folded into this one by overflow=merge (1: none).
    parts: u32,
}

impl Batch {
    fn new() -> Self {
        Self {
            buffers: Vec::new(),
            arrivals: Vec::new(),
            bytes: 0,
            segment_id: None,
            parts: 1,
        }
    }

    fn first_arrival(&self) -> Option<Instant> {
        self.arrivals.first().copied()
    }

    fn duration(&self) -> gst::ClockTime {
        let first = self.buffers.first().and_then(|b| b.pts());
        let last = self
            .buffers
            .last()
            .and_then(|b| b.pts().zip(b.duration()).map(|(p, d)| p.saturating_add(d)));
        match (first, last) {
            (Some(first), Some(last)) if last >= first => last - first,
            _ => self.buffers.iter().filter_map(|b| b.duration()).sum(),
        }
    }

    fn push(&mut self, buffer: gst::Buffer, arrival: Instant) {
        self.bytes += buffer.size() as u64;
        if self.buffers.is_empty() {
            self.segment_id = SegmentIdMeta::get(&buffer);
        }
        self.buffers.push(buffer);
        self.arrivals.push(arrival);
    }

    fn append(&mut self, other: Batch) {
        self.bytes += other.bytes;
        self.parts += other.parts;
        self.buffers.extend(other.buffers);
        self.arrivals.extend(other.arrivals);
    }

    fn is_full(&self, s: &Settings) -> bool {
        (s.max_batch_size > 0 && self.buffers.len() >= s.max_batch_size as usize)
            || (s.max_batch_bytes > 0 && self.bytes >= s.max_batch_bytes)
            || (s.max_batch_duration > 0 && self.duration().nseconds() >= s.max_batch_duration)
    }
}

impl Settings {
    /// Batches overflow=merge may fold into one: the memory max-queue separate
    /// batches would take, at least two.
    fn max_merged_parts(&self) -> u32 {
        self.max_queue.max(2)
    }

    /// Without any limit a batch would grow without bound.
    fn unbounded(&self) -> bool {
        self.max_batch_size == 0
            && self.max_batch_bytes == 0
            && self.max_batch_duration == 0
            && self.timeout_ms == 0
    }
}

enum Item {
    Batch(Batch),
    Event(gst::Event),
}

#[derive(Default)]
struct Stats {
    batches: u64,
    buffers_in: u64,
    buffers_out: u64,
    max_batch_size: u64,
    dropped_cancelled: u64,
    dropped_oldest: u64,
    dropped_newest: u64,
    merged: u64,
    wait: LatencyHistogram,
    downstream_ns: f64,
}

struct State {
    pending: Option<Batch>,
    /// overflow=block: the closed batch the chain waits to queue. A cancel sees it here.
    waiting: Option<Batch>,
    queue: VecDeque<Item>,
    queued_batches: usize,
    flushing: bool,
    /// What the last downstream push returned; upstream sees errors on its next buffer.
    last_flow: Result<gst::FlowSuccess, gst::FlowError>,
    caps: Option<gst::Caps>,
    cancelled: CancelTracker,
    stats: Stats,
}

impl Default for State {
    fn default() -> Self {
        Self {
            pending: None,
            waiting: None,
            queue: VecDeque::new(),
            queued_batches: 0,
            flushing: true,
            last_flow: Ok(gst::FlowSuccess::Ok),
            caps: None,
            cancelled: CancelTracker::default(),
            stats: Stats::default(),
        }
    }
}

impl State {
    /// Drops every waiting buffer (FLUSH_START, stop).
    fn clear(&mut self) {
        self.pending = None;
        self.waiting = None;
        self.queue.clear();
        self.queued_batches = 0;
    }
}

pub struct Batcher {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    settings: Mutex<Settings>,
    state: Mutex<State>,
    /// Signalled on every change of `state` the task or a blocked chain waits for.
    changed: Condvar,
}

impl Batcher {
    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves the pending batch (if any) into the queue, applying `overflow`.
    /// May wait (policy `block`), so it takes and returns the guard.
    fn close_pending<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        s: &Settings,
    ) -> MutexGuard<'a, State> {
        let Some(batch) = state.pending.take() else {
            return state;
        };
        if batch.buffers.is_empty() {
            return state;
        }
        let max_queue = s.max_queue.max(1) as usize;
        if state.queued_batches >= max_queue {
            match s.overflow {
                Overflow::Block => {
                    // The batch waits where a cancel can find it; the wait also ends when
                    // downstream has stopped (EOS, error) or the pad flushes.
                    state.waiting = Some(batch);
                    while state.queued_batches >= max_queue
                        && !state.flushing
                        && state.last_flow.is_ok()
                        && state.waiting.is_some()
                    {
                        state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
                    }
                    let Some(waiting) = state.waiting.take() else {
                        return state; // cancelled while it waited
                    };
                    if state.flushing || state.last_flow.is_err() {
                        return state;
                    }
                    state.queue.push_back(Item::Batch(waiting));
                    state.queued_batches += 1;
                    self.changed.notify_all();
                    return state;
                }
                Overflow::DropNewest => {
                    gst::debug!(
                        CAT,
                        imp = self,
                        "queue full, dropping the new batch of {}",
                        batch.buffers.len()
                    );
                    state.stats.dropped_newest += batch.buffers.len() as u64;
                    return state;
                }
                Overflow::DropOldest => {
                    if let Some(pos) = state.queue.iter().position(|i| matches!(i, Item::Batch(_)))
                        && let Some(Item::Batch(old)) = state.queue.remove(pos)
                    {
                        gst::debug!(
                            CAT,
                            imp = self,
                            "queue full, dropping the oldest batch of {}",
                            old.buffers.len()
                        );
                        state.stats.dropped_oldest += old.buffers.len() as u64;
                        state.queued_batches -= 1;
                    }
                }
                Overflow::Merge => {
                    // Fold into the last waiting batch unless an event or another segment is in between.
                    if let Some(Item::Batch(last)) = state.queue.back_mut()
                        && last.segment_id == batch.segment_id
                        && last.parts + batch.parts <= s.max_merged_parts()
                    {
                        let merged = batch.buffers.len() as u64;
                        last.append(batch);
                        state.stats.merged += merged;
                        self.changed.notify_all();
                        return state;
                    }
                    state.stats.dropped_newest += batch.buffers.len() as u64;
                    return state;
                }
            }
        }
        state.queue.push_back(Item::Batch(batch));
        state.queued_batches += 1;
        self.changed.notify_all();
        state
    }

    fn sink_chain(
        &self,
        pad: &gst::Pad,
        buffer: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        gst::log!(CAT, obj = pad, "{buffer:?}");
        let arrival = Instant::now();
        let s = self.settings.lock().unwrap().clone();
        let mut state = self.lock_state();
        if state.flushing {
            return Err(gst::FlowError::Flushing);
        }
        state.last_flow?;
        state.stats.buffers_in += 1;
        if state.cancelled.should_drop(&buffer) {
            state.stats.dropped_cancelled += 1;
            return Ok(gst::FlowSuccess::Ok);
        }
        // A batch never spans a discontinuity or two segments.
        let id = SegmentIdMeta::get(&buffer);
        let starts_new = state.pending.as_ref().is_some_and(|p| {
            !p.buffers.is_empty()
                && (p.segment_id != id || buffer.flags().contains(gst::BufferFlags::DISCONT))
        });
        if starts_new {
            state = self.close_pending(state, &s);
            if state.flushing {
                return Err(gst::FlowError::Flushing);
            }
            state.last_flow?;
        }
        let pending = state.pending.get_or_insert_with(Batch::new);
        pending.push(buffer, arrival);
        let full = pending.is_full(&s);
        if full {
            state = self.close_pending(state, &s);
            if state.flushing {
                return Err(gst::FlowError::Flushing);
            }
            state.last_flow?;
        }
        self.changed.notify_all();
        Ok(gst::FlowSuccess::Ok)
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        gst::log!(CAT, obj = pad, "{event:?}");
        use gst::EventView;
        match event.view() {
            EventView::FlushStart(_) => {
                let mut state = self.lock_state();
                state.flushing = true;
                // Sticky events still waiting (stream-start, caps, tags) must survive the flush.
                for item in std::mem::take(&mut state.queue) {
                    if let Item::Event(ev) = item
                        && ev.is_sticky()
                        && !matches!(ev.type_(), gst::EventType::Segment | gst::EventType::Eos)
                    {
                        let _ = self.srcpad.store_sticky_event(&ev);
                    }
                }
                state.clear();
                self.changed.notify_all();
                drop(state);
                let forwarded = self.srcpad.push_event(event);
                let _ = self.srcpad.pause_task();
                return forwarded;
            }
            EventView::FlushStop(_) => {
                let mut state = self.lock_state();
                state.clear();
                state.flushing = false;
                state.last_flow = Ok(gst::FlowSuccess::Ok);
                drop(state);
                let forwarded = self.srcpad.push_event(event);
                if let Err(err) = self.start_task() {
                    gst::error!(CAT, imp = self, "cannot restart the push thread: {err}");
                    return false;
                }
                return forwarded;
            }
            EventView::Caps(c) => {
                let caps = c.caps_owned();
                let merge = self.settings.lock().unwrap().merge;
                if !caps.is_subset(&merge_caps(merge)) {
                    gst::element_imp_error!(
                        self,
                        gst::CoreError::Negotiation,
                        ("merge={} cannot join {}", merge_nick(merge), caps),
                        [
                            "concat-audio needs audio/x-raw with layout=interleaved, concat-text needs text/x-raw; keep-separate takes any caps"
                        ]
                    );
                    return false;
                }
                let s = self.settings.lock().unwrap().clone();
                let mut state = self.lock_state();
                if state.caps.as_ref() == Some(&caps) {
                    return true;
                }
                state.caps = Some(caps);
                return self.enqueue_serialized(state, &s, event);
            }
            _ => {}
        }
        if let Some(SegmentEvent::Cancel { id, .. }) = SegmentEvent::parse(&event) {
            self.cancel_segment(id);
            return self.srcpad.push_event(event);
        }
        if !event.is_serialized() {
            return self.srcpad.push_event(event);
        }
        let s = self.settings.lock().unwrap().clone();
        let state = self.lock_state();
        if state.flushing {
            return false;
        }
        self.enqueue_serialized(state, &s, event)
    }

    /// Closes the pending batch, then queues the event behind it.
    fn enqueue_serialized(
        &self,
        state: MutexGuard<'_, State>,
        s: &Settings,
        event: gst::Event,
    ) -> bool {
        let mut state = self.close_pending(state, s);
        if state.flushing {
            return false;
        }
        state.queue.push_back(Item::Event(event));
        self.changed.notify_all();
        true
    }

    fn cancel_segment(&self, id: u64) {
        let started = Instant::now();
        let mut state = self.lock_state();
        state.cancelled.cancel(id);
        let mut dropped = 0u64;
        if state
            .pending
            .as_ref()
            .is_some_and(|p| p.segment_id == Some(id))
        {
            dropped += state.pending.take().map_or(0, |p| p.buffers.len() as u64);
        }
        if state
            .waiting
            .as_ref()
            .is_some_and(|w| w.segment_id == Some(id))
        {
            dropped += state.waiting.take().map_or(0, |w| w.buffers.len() as u64);
        }
        let before = state.queue.len();
        state.queue.retain(|item| match item {
            Item::Batch(b) if b.segment_id == Some(id) => {
                dropped += b.buffers.len() as u64;
                false
            }
            _ => true,
        });
        let removed = before - state.queue.len();
        state.queued_batches -= removed;
        state.stats.dropped_cancelled += dropped;
        self.changed.notify_all();
        drop(state);
        gst::debug!(
            CAT,
            imp = self,
            "segment {id} cancelled: {dropped} waiting buffers dropped"
        );
        let ack = CancelAck {
            element: self.obj().name().to_string(),
            id,
            buffers_dropped: dropped,
            requests_aborted: 0,
            latency: gst::ClockTime::from_nseconds(started.elapsed().as_nanos() as u64),
        };
        let _ = self.obj().post_message(ack.to_message(&*self.obj()));
    }

    fn start_task(&self) -> Result<(), glib::BoolError> {
        let this = self.ref_counted();
        self.srcpad.start_task(move || this.push_next())
    }

    /// One iteration of the source pad's task: waits for an item and pushes it.
    fn push_next(&self) {
        let item = {
            let mut state = self.lock_state();
            loop {
                if state.flushing {
                    drop(state);
                    let _ = self.srcpad.pause_task();
                    return;
                }
                if let Some(item) = state.queue.pop_front() {
                    if matches!(item, Item::Batch(_)) {
                        state.queued_batches -= 1;
                    }
                    self.changed.notify_all();
                    break item;
                }
                let s = self.settings.lock().unwrap().clone();
                let deadline = state
                    .pending
                    .as_ref()
                    .and_then(Batch::first_arrival)
                    .zip(s.effective_timeout(state.stats.downstream_ns))
                    .and_then(|(first, timeout)| first.checked_add(timeout));
                match deadline {
                    Some(deadline) if Instant::now() >= deadline => {
                        let batch = state
                            .pending
                            .take()
                            .expect("a deadline implies a pending batch");
                        break Item::Batch(batch);
                    }
                    Some(deadline) => {
                        let wait = deadline.saturating_duration_since(Instant::now());
                        state = self
                            .changed
                            .wait_timeout(state, wait)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                    None => state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner()),
                }
            }
        };
        match item {
            Item::Event(event) => {
                let is_eos = event.type_() == gst::EventType::Eos;
                if !self.srcpad.push_event(event) {
                    gst::debug!(CAT, imp = self, "downstream refused a serialized event");
                }
                if is_eos {
                    let mut state = self.lock_state();
                    state.last_flow = Err(gst::FlowError::Eos);
                    self.changed.notify_all();
                    drop(state);
                    let _ = self.srcpad.pause_task();
                }
            }
            Item::Batch(batch) => self.push_batch(batch),
        }
    }

    fn push_batch(&self, batch: Batch) {
        let s = self.settings.lock().unwrap().clone();
        let count = batch.buffers.len() as u64;
        let now = Instant::now();
        {
            let mut state = self.lock_state();
            let stats = &mut state.stats;
            stats.batches += 1;
            stats.buffers_out += count;
            stats.max_batch_size = stats.max_batch_size.max(count);
            for arrival in &batch.arrivals {
                stats
                    .wait
                    .record(now.saturating_duration_since(*arrival).as_nanos() as u64);
            }
        }
        gst::log!(
            CAT,
            imp = self,
            "pushing a batch of {count} ({} bytes)",
            batch.bytes
        );
        let started = Instant::now();
        let flow = match s.merge {
            Merge::KeepSeparate => {
                let mut list = gst::BufferList::new_sized(batch.buffers.len());
                {
                    let list = list.get_mut().expect("new list is writable");
                    for buffer in batch.buffers {
                        list.add(buffer);
                    }
                }
                self.srcpad.push_list(list)
            }
            Merge::ConcatAudio => self.srcpad.push(concat_audio(batch)),
            Merge::ConcatText => self.srcpad.push(concat_text(batch, &s.separator)),
        };
        let took = started.elapsed().as_nanos() as f64;
        let mut state = self.lock_state();
        let estimate = &mut state.stats.downstream_ns;
        *estimate = if *estimate == 0.0 {
            took
        } else {
            *estimate * (1.0 - DOWNSTREAM_EWMA_WEIGHT) + took * DOWNSTREAM_EWMA_WEIGHT
        };
        match flow {
            Ok(_) => {}
            Err(gst::FlowError::Flushing) => {
                state.last_flow = Err(gst::FlowError::Flushing);
                // A chain waiting for room (overflow=block) must not wait for a stopped task.
                self.changed.notify_all();
                drop(state);
                let _ = self.srcpad.pause_task();
            }
            Err(err) => {
                state.last_flow = Err(err);
                self.changed.notify_all();
                drop(state);
                let _ = self.srcpad.pause_task();
                if err != gst::FlowError::Eos {
                    gst::element_imp_error!(
                        self,
                        gst::StreamError::Failed,
                        ("Internal data stream error: downstream returned {err:?}"),
                        ["streaming stopped, reason {err:?}"]
                    );
                }
            }
        }
    }

    fn stats(&self) -> gst::Structure {
        let state = self.lock_state();
        let st = &state.stats;
        let builder = gst::Structure::builder("batcher-stats")
            .field("batches", st.batches)
            .field("buffers-in", st.buffers_in)
            .field("buffers-out", st.buffers_out)
            .field(
                "mean-batch-size",
                if st.batches > 0 {
                    st.buffers_out as f64 / st.batches as f64
                } else {
                    0.0
                },
            )
            .field("max-batch-size", st.max_batch_size)
            .field("dropped-cancelled", st.dropped_cancelled)
            .field("dropped-oldest", st.dropped_oldest)
            .field("dropped-newest", st.dropped_newest)
            .field("merged", st.merged)
            .field("queue-depth", state.queued_batches as u32)
            .field(
                "pending-buffers",
                state.pending.as_ref().map_or(0, |p| p.buffers.len() as u32),
            )
            .field("downstream-mean", st.downstream_ns as u64);
        st.wait.add_to_structure(builder, "wait").build()
    }

    fn src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        match query.view_mut() {
            gst::QueryViewMut::Latency(q) => {
                let mut upstream = gst::query::Latency::new();
                if !self.sinkpad.peer_query(&mut upstream) {
                    return false;
                }
                let (live, min, max) = upstream.result();
                let s = self.settings.lock().unwrap().clone();
                // A buffer waits at most the timeout (or, adaptive, the budget) for its batch.
                let added = gst::ClockTime::from_mseconds(if s.adaptive {
                    s.latency_budget_ms
                } else {
                    s.timeout_ms
                } as u64);
                q.set(
                    live,
                    min.saturating_add(added),
                    max.map(|m| m.saturating_add(added)),
                );
                true
            }
            _ => gst::Pad::query_default(pad, Some(&*self.obj()), query),
        }
    }

    fn src_activate_mode(
        &self,
        mode: gst::PadMode,
        active: bool,
    ) -> Result<(), gst::LoggableError> {
        if mode != gst::PadMode::Push {
            return Err(gst::loggable_error!(
                CAT,
                "batcher pushes; pull mode is not supported"
            ));
        }
        if active {
            let mut state = self.lock_state();
            *state = State::default();
            state.flushing = false;
            drop(state);
            self.start_task()
                .map_err(|e| gst::loggable_error!(CAT, "cannot start the push thread: {e}"))
        } else {
            let mut state = self.lock_state();
            state.flushing = true;
            state.clear();
            self.changed.notify_all();
            drop(state);
            self.srcpad
                .stop_task()
                .map_err(|e| gst::loggable_error!(CAT, "cannot stop the push thread: {e}"))
        }
    }

    fn sink_activate_mode(&self, active: bool) {
        if !active {
            // Wake a chain that waits for room (overflow=block).
            let mut state = self.lock_state();
            state.flushing = true;
            self.changed.notify_all();
        }
    }
}

fn merge_nick(merge: Merge) -> &'static str {
    match merge {
        Merge::KeepSeparate => "keep-separate",
        Merge::ConcatAudio => "concat-audio",
        Merge::ConcatText => "concat-text",
    }
}

/// Timestamps of the joined buffer: the first's PTS/DTS/offset, the span's duration.
fn set_span(
    out: &mut gst::BufferRef,
    first: &gst::BufferRef,
    last: &gst::BufferRef,
    duration: gst::ClockTime,
) {
    out.set_pts(first.pts());
    out.set_dts(first.dts());
    out.set_duration(if duration > gst::ClockTime::ZERO {
        Some(duration)
    } else {
        None
    });
    out.set_offset(first.offset());
    out.set_offset_end(last.offset_end());
    if first.flags().contains(gst::BufferFlags::DISCONT) {
        out.set_flags(gst::BufferFlags::DISCONT);
    }
}

fn concat_audio(batch: Batch) -> gst::Buffer {
    let duration = batch.duration();
    let mut buffers = batch.buffers.into_iter();
    let first = buffers.next().expect("a pushed batch is never empty");
    let (first_meta, mut last_meta) = (first.clone(), first.clone());
    // Appending moves the memories (no sample copy); metas of the first buffer stay.
    let mut out = first;
    for next in buffers {
        last_meta = next.clone();
        out.append(next);
    }
    let out_ref = out.make_mut();
    set_span(out_ref, &first_meta, &last_meta, duration);
    out
}

fn concat_text(batch: Batch, separator: &str) -> gst::Buffer {
    let duration = batch.duration();
    let mut bytes =
        Vec::with_capacity(batch.bytes as usize + batch.buffers.len() * separator.len());
    for (i, buffer) in batch.buffers.iter().enumerate() {
        if i > 0 {
            bytes.extend_from_slice(separator.as_bytes());
        }
        match buffer.map_readable() {
            Ok(map) => bytes.extend_from_slice(&map),
            Err(_) => gst::warning!(CAT, "a text buffer could not be mapped; it is left out"),
        }
    }
    let mut out = gst::Buffer::from_mut_slice(bytes);
    {
        let out_ref = out.get_mut().expect("new buffer is writable");
        set_span(
            out_ref,
            &batch.buffers[0],
            batch.buffers.last().expect("non-empty"),
            duration,
        );
        if let Some(id) = batch.segment_id {
            SegmentIdMeta::set(out_ref, id);
        }
    }
    out
}

#[glib::object_subclass]
impl ObjectSubclass for Batcher {
    const NAME: &'static str = "GstBatcher";
    type Type = super::Batcher;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let sinkpad =
            gst::Pad::builder_from_template(&klass.pad_template("sink").expect("template exists"))
                .chain_function(|pad, parent, buffer| {
                    Batcher::catch_panic_pad_function(
                        parent,
                        || Err(gst::FlowError::Error),
                        |imp| imp.sink_chain(pad, buffer),
                    )
                })
                .event_function(|pad, parent, event| {
                    Batcher::catch_panic_pad_function(
                        parent,
                        || false,
                        |imp| imp.sink_event(pad, event),
                    )
                })
                .activatemode_function(|_pad, parent, _mode, active| {
                    Batcher::catch_panic_pad_function(
                        parent,
                        || Err(gst::loggable_error!(CAT, "panic in activation")),
                        |imp| {
                            imp.sink_activate_mode(active);
                            Ok(())
                        },
                    )
                })
                // Caps are proxied, not narrowed by `merge`: caps a merge mode cannot join
                // reach the CAPS event, which fails with an error naming both.
                .flags(gst::PadFlags::PROXY_CAPS | gst::PadFlags::PROXY_ALLOCATION)
                .build();
        let srcpad =
            gst::Pad::builder_from_template(&klass.pad_template("src").expect("template exists"))
                .query_function(|pad, parent, query| {
                    Batcher::catch_panic_pad_function(
                        parent,
                        || false,
                        |imp| imp.src_query(pad, query),
                    )
                })
                .activatemode_function(|_pad, parent, mode, active| {
                    Batcher::catch_panic_pad_function(
                        parent,
                        || Err(gst::loggable_error!(CAT, "panic in activation")),
                        |imp| imp.src_activate_mode(mode, active),
                    )
                })
                .flags(
                    gst::PadFlags::PROXY_CAPS
                        | gst::PadFlags::PROXY_ALLOCATION
                        | gst::PadFlags::PROXY_SCHEDULING,
                )
                .build();
        Self {
            sinkpad,
            srcpad,
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        }
    }
}

impl ObjectImpl for Batcher {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecUInt::builder("max-batch-size")
                    .nick("Max batch size")
                    .blurb("Flush a batch at this many buffers (0 = no limit)")
                    .maximum(1_000_000)
                    .default_value(DEFAULT_MAX_BATCH_SIZE)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt64::builder("max-batch-bytes")
                    .nick("Max batch bytes")
                    .blurb("Flush a batch at this many bytes (0 = no limit, else at most 4 GiB)")
                    .maximum(1 << 32)
                    .default_value(DEFAULT_MAX_BATCH_BYTES)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt64::builder("max-batch-duration")
                    .nick("Max batch duration")
                    .blurb("Flush a batch once it spans this much media time, in ns (0 = no limit, else at most an hour)")
                    .maximum(gst::ClockTime::from_seconds(3600).nseconds())
                    .default_value(DEFAULT_MAX_BATCH_DURATION)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("timeout")
                    .nick("Timeout")
                    .blurb("Flush a batch this many ms (wall clock) after its first buffer arrived (0 = no time limit)")
                    .maximum(600_000)
                    .default_value(DEFAULT_TIMEOUT_MS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("merge", DEFAULT_MERGE)
                    .nick("Merge")
                    .blurb("How a batch leaves: a buffer list, or one buffer of joined audio or text")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("separator")
                    .nick("Separator")
                    .blurb("Text put between items with merge=concat-text")
                    .default_value(Some(DEFAULT_SEPARATOR))
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("max-queue")
                    .nick("Max queue")
                    .blurb("Batches that may wait for the downstream stage before overflow applies")
                    .minimum(1)
                    .maximum(10_000)
                    .default_value(DEFAULT_MAX_QUEUE)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("overflow", DEFAULT_OVERFLOW)
                    .nick("Overflow")
                    .blurb("What happens to a full batch when max-queue batches already wait")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("adaptive")
                    .nick("Adaptive")
                    .blurb("Shorten the wait for a batch by the downstream stage's observed time so wait + stage fits latency-budget")
                    .default_value(DEFAULT_ADAPTIVE)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("latency-budget")
                    .nick("Latency budget")
                    .blurb("With adaptive: ms a buffer may spend waiting in the batcher plus in the downstream stage")
                    .minimum(1)
                    .maximum(600_000)
                    .default_value(DEFAULT_LATENCY_BUDGET_MS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("batches, buffers-in/out, mean/max-batch-size, dropped-cancelled/oldest/newest, merged, queue-depth, wait-p50/p95/p99/mean/max (ns)")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = self.settings.lock().unwrap();
        match pspec.name() {
            "max-batch-size" => {
                settings.max_batch_size = value.get().expect("type checked upstream")
            }
            "max-batch-bytes" => {
                settings.max_batch_bytes = value.get().expect("type checked upstream")
            }
            "max-batch-duration" => {
                settings.max_batch_duration = value.get().expect("type checked upstream")
            }
            "timeout" => settings.timeout_ms = value.get().expect("type checked upstream"),
            "merge" => settings.merge = value.get().expect("type checked upstream"),
            "separator" => {
                settings.separator = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .unwrap_or_default()
            }
            "max-queue" => settings.max_queue = value.get().expect("type checked upstream"),
            "overflow" => settings.overflow = value.get().expect("type checked upstream"),
            "adaptive" => settings.adaptive = value.get().expect("type checked upstream"),
            "latency-budget" => {
                settings.latency_budget_ms = value.get().expect("type checked upstream")
            }
            other => unreachable!("batcher has no writable property {other}"),
        }
        drop(settings);
        // New limits apply to the waiting batch at once.
        self.changed.notify_all();
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = self.settings.lock().unwrap();
        match pspec.name() {
            "max-batch-size" => settings.max_batch_size.to_value(),
            "max-batch-bytes" => settings.max_batch_bytes.to_value(),
            "max-batch-duration" => settings.max_batch_duration.to_value(),
            "timeout" => settings.timeout_ms.to_value(),
            "merge" => settings.merge.to_value(),
            "separator" => settings.separator.to_value(),
            "max-queue" => settings.max_queue.to_value(),
            "overflow" => settings.overflow.to_value(),
            "adaptive" => settings.adaptive.to_value(),
            "latency-budget" => settings.latency_budget_ms.to_value(),
            "stats" => {
                drop(settings);
                self.stats().to_value()
            }
            other => unreachable!("batcher has no property {other}"),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add_pad(&self.sinkpad).expect("sink pad is new");
        obj.add_pad(&self.srcpad).expect("src pad is new");
    }
}

impl GstObjectImpl for Batcher {}

impl ElementImpl for Batcher {
    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::NullToReady && self.settings.lock().unwrap().unbounded()
        {
            gst::element_imp_error!(
                self,
                gst::CoreError::StateChange,
                ("batcher has no limit: a batch would grow without bound"),
                [
                    "max-batch-size, max-batch-bytes, max-batch-duration and timeout are all 0; set at least one"
                ]
            );
            return Err(gst::StateChangeError);
        }
        self.parent_change_state(transition)
    }

    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Batcher",
                "Generic",
                "Collects buffers into batches (by count, bytes, media time or wall-clock timeout) for slow, \
                 non-parallel stages; never mixes segments and drops cancelled ones",
                "rtai contributors",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst::Caps::new_any();
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &caps,
                )
                .expect("valid template"),
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &caps,
                )
                .expect("valid template"),
            ]
        });
        TEMPLATES.as_ref()
    }
}
