//! Hot path, per `pad_push_pre`: the state is sharded by object address
//! ([`SHARDS`] mutexes, each taken alone and briefly), so threads pushing
//! through different elements rarely meet on a lock (one global mutex cost
//! ~14 % of a 4-queue pipeline's throughput on 2 cores). The buffer's arrival at an element
//! (the push into its sink pad) is remembered with the buffer's PTS; when the
//! element pushes a buffer with that PTS (or, for elements that re-time, the
//! latest earlier one) out of a src pad, the difference is recorded for that
//! src pad. Queues (async elements) are measured the same way, waiting included.
//! Every src pad's buffers and bytes are counted too (`rtai_pad_*`: totals,
//! frames/s and bits/s over the last second of pushes).
//!
//! Elements and pads are keyed by address and evicted when GStreamer destroys
//! them (the `object-destroyed` hook): memory stays bounded however many
//! elements come and go, and a new object at a reused address starts afresh.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use rtai_core::stats::LatencyHistogram;

use crate::http;
use crate::metrics::METRICS;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "latencymetrics",
        gst::DebugColorFlags::empty(),
        Some("Per-element latency and queue level tracer"),
    )
});

/// How many arrivals per element are remembered while waiting for their output.
const MAX_PENDING: usize = 256;
/// Upper bounds (s) of the exported histogram buckets.
const BUCKETS_S: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

struct ElementTrack {
    weak: glib::WeakRef<gst::Element>,
    name: String,
    /// The name of its top-level bin (the `pipeline` label).
    pipeline: String,
    is_queue: bool,
    /// Whether it had a src pad when last asked (then buffers entering it are remembered).
    has_src: bool,
    /// (PTS, arrival ts) of buffers that entered and have not left yet.
    pending: VecDeque<(Option<u64>, u64)>,
}

/// Length of the window [`PadHist::fps`] and [`PadHist::bits_per_second`] cover.
const RATE_WINDOW_NS: u64 = 1_000_000_000;

struct PadHist {
    pipeline: String,
    element: String,
    pad: String,
    hist: LatencyHistogram,
    sum_ns: u128,
    buffers: u64,
    bytes: u64,
    /// Start (tracer ts, buffers, bytes) of the current rate window.
    window: (u64, u64, u64),
    /// Rate over the last complete window: (frames/s, bits/s).
    last_rate: Option<(f64, f64)>,
    /// Tracer ts of the last push.
    last_ts: u64,
}

impl PadHist {
    fn new(pipeline: String, element: String, pad: String, ts: u64) -> Self {
        Self {
            pipeline,
            element,
            pad,
            hist: LatencyHistogram::new(),
            sum_ns: 0,
            buffers: 0,
            bytes: 0,
            window: (ts, 0, 0),
            last_rate: None,
            last_ts: ts,
        }
    }

    fn count(&mut self, ts: u64, buffers: u64, bytes: u64) {
        self.buffers += buffers;
        self.bytes += bytes;
        self.last_ts = ts;
        let (start, b0, y0) = self.window;
        let span = ts.saturating_sub(start);
        if span >= RATE_WINDOW_NS {
            let secs = span as f64 / 1e9;
            self.last_rate = Some((
                (self.buffers - b0) as f64 / secs,
                (self.bytes - y0) as f64 * 8.0 / secs,
            ));
            self.window = (ts, self.buffers, self.bytes);
        }
    }

    /// (frames/s, bits/s): over the last complete window, or over what the
    /// current one holds when none completed yet.
    fn rate(&self) -> (f64, f64) {
        if let Some(r) = self.last_rate {
            return r;
        }
        let (start, b0, y0) = self.window;
        let span = self.last_ts.saturating_sub(start);
        if span == 0 || self.buffers <= b0 + 1 {
            return (0.0, 0.0);
        }
        // n pushes span n - 1 intervals.
        let secs = span as f64 / 1e9;
        let n = self.buffers - b0;
        (
            (n - 1) as f64 / secs,
            (self.bytes - y0) as f64 * 8.0 * ((n - 1) as f64 / n as f64) / secs,
        )
    }
}

/// Hashes an object address (already unique): a multiply, no SipHash.
#[derive(Default, Clone, Copy)]
struct AddrHasher(u64);

impl std::hash::Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64 >> 4).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type AddrMap<V> = HashMap<usize, V, std::hash::BuildHasherDefault<AddrHasher>>;

#[derive(Default)]
struct Store {
    elements: AddrMap<ElementTrack>,
    pads: AddrMap<PadHist>,
}

/// Number of independently locked parts of the state.
const SHARDS: usize = 16;
/// How many of them are used: [`SHARDS`], or what the `shards` parameter says
/// (1 to 16; 1 is one global mutex, for measuring what sharding saves).
static SHARDS_USED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(SHARDS);

static STORE: LazyLock<[Mutex<Store>; SHARDS]> =
    LazyLock::new(|| std::array::from_fn(|_| Mutex::new(Store::default())));

/// The part of the state that holds the object at `addr`.
fn shard(addr: usize) -> std::sync::MutexGuard<'static, Store> {
    // Objects are at least 16-byte aligned; the multiply spreads the rest.
    let used = SHARDS_USED.load(std::sync::atomic::Ordering::Relaxed);
    let i = ((addr >> 4).wrapping_mul(0x9e37_79b9) >> 8) % used;
    STORE[i].lock().unwrap()
}

/// Every shard in turn (scrapes, tests): `f` sees one at a time.
fn each_shard(mut f: impl FnMut(&Store)) {
    for s in STORE.iter() {
        f(&s.lock().unwrap());
    }
}

/// Latency of one element's src pad, in seconds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PadLatency {
    pub pipeline: String,
    pub element: String,
    pub pad: String,
    pub count: u64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub mean: f64,
    pub max: f64,
    #[serde(skip)]
    pub sum: f64,
    #[serde(skip)]
    pub buckets: Vec<(f64, u64)>,
}

/// Current latencies of every measured src pad (empty when the tracer is not running).
pub fn snapshot() -> Vec<PadLatency> {
    let mut out: Vec<PadLatency> = Vec::new();
    each_shard(|store| out.extend(latencies(store)));
    out.sort_by(|a, b| (&a.element, &a.pad).cmp(&(&b.element, &b.pad)));
    out
}

fn latencies(store: &Store) -> Vec<PadLatency> {
    store
        .pads
        .values()
        .filter(|p| p.hist.count() > 0)
        .map(|p| {
            let mut prev = 0;
            let mut buckets: Vec<(f64, u64)> = BUCKETS_S
                .iter()
                .map(|&b| {
                    let cum = p.hist.count_at_or_below((b * 1e9) as u64);
                    let n = cum.saturating_sub(prev);
                    prev = prev.max(cum);
                    (b, n)
                })
                .collect();
            buckets.push((f64::INFINITY, p.hist.count().saturating_sub(prev)));
            PadLatency {
                pipeline: p.pipeline.clone(),
                element: p.element.clone(),
                pad: p.pad.clone(),
                count: p.hist.count(),
                p50: p.hist.quantile(0.50) as f64 / 1e9,
                p95: p.hist.quantile(0.95) as f64 / 1e9,
                p99: p.hist.quantile(0.99) as f64 / 1e9,
                mean: p.hist.mean() / 1e9,
                max: p.hist.max() as f64 / 1e9,
                sum: p.sum_ns as f64 / 1e9,
                buckets,
            }
        })
        .collect()
}

const LEVEL_BUFFERS: &str = "current-level-buffers";
const LEVEL_BYTES: &str = "current-level-bytes";
const LEVEL_TIME: &str = "current-level-time";

/// Whether `element` has `name` as a readable integer property, as queue and
/// queue2 do; any element may use the name with another type.
fn has_level(element: &gst::Element, name: &str) -> bool {
    element.find_property(name).is_some_and(|p| {
        p.flags().contains(glib::ParamFlags::READABLE)
            && [
                u32::static_type(),
                u64::static_type(),
                i32::static_type(),
                i64::static_type(),
            ]
            .contains(&p.value_type())
    })
}

/// The level property `name` of `element`, `None` unless [`has_level`] (never
/// a typed `property::<T>()`, which panics on another type).
fn level(element: &gst::Element, name: &str) -> Option<u64> {
    if !has_level(element, name) {
        return None;
    }
    let v = element.property_value(name);
    v.get::<u32>()
        .map(u64::from)
        .or_else(|_| v.get::<u64>())
        .ok()
        .or_else(|| v.get::<i32>().ok().and_then(|n| u64::try_from(n).ok()))
        .or_else(|| v.get::<i64>().ok().and_then(|n| u64::try_from(n).ok()))
}

struct QueueLevel {
    pipeline: String,
    element: String,
    buffers: u64,
    bytes: u64,
    seconds: f64,
}

/// In-flight buffers of one element: (pipeline, element, buffers).
type InFlight = (String, String, usize);

fn queue_levels() -> (Vec<QueueLevel>, Vec<InFlight>) {
    let (mut queues, mut in_flight) = (Vec::new(), Vec::new());
    each_shard(|store| {
        queues.extend(
            store
                .elements
                .values()
                .filter(|e| e.is_queue)
                .map(|e| e.weak.clone()),
        );
        in_flight.extend(
            store
                .elements
                .values()
                .map(|e| (e.pipeline.clone(), e.name.clone(), e.pending.len())),
        );
    });
    // Properties are read outside the lock: a queue takes its own lock to answer.
    let levels = queues
        .into_iter()
        .filter_map(|w| w.upgrade())
        .filter_map(|q| {
            Some(QueueLevel {
                pipeline: pipeline_of(&q),
                element: q.name().to_string(),
                buffers: level(&q, LEVEL_BUFFERS)?,
                bytes: level(&q, LEVEL_BYTES)?,
                seconds: level(&q, LEVEL_TIME)? as f64 / 1e9,
            })
        })
        .collect();
    let mut in_flight: Vec<InFlight> = in_flight;
    in_flight.sort();
    (levels, in_flight)
}

/// Buffers, bytes and rates of one src pad.
#[derive(Debug, Clone)]
pub struct PadRate {
    pub pipeline: String,
    pub element: String,
    pub pad: String,
    pub buffers: u64,
    pub bytes: u64,
    pub fps: f64,
    pub bits_per_second: f64,
}

/// Counts and rates of every src pad that pushed.
pub fn rates() -> Vec<PadRate> {
    let mut out: Vec<PadRate> = Vec::new();
    each_shard(|store| {
        out.extend(store.pads.values().map(|p| {
            let (fps, bits_per_second) = p.rate();
            PadRate {
                pipeline: p.pipeline.clone(),
                element: p.element.clone(),
                pad: p.pad.clone(),
                buffers: p.buffers,
                bytes: p.bytes,
                fps,
                bits_per_second,
            }
        }))
    });
    out.sort_by(|a, b| (&a.element, &a.pad).cmp(&(&b.element, &b.pad)));
    out
}

/// How many elements and pads the tracer holds state for.
pub fn tracked() -> (usize, usize) {
    let (mut elements, mut pads) = (0, 0);
    each_shard(|store| {
        elements += store.elements.len();
        pads += store.pads.len();
    });
    (elements, pads)
}

/// Drops what is kept about the object at `addr` (being destroyed).
fn evict(addr: usize) {
    let mut store = shard(addr);
    store.elements.remove(&addr);
    store.pads.remove(&addr);
}

/// `/api/latency` of the HTTP server: [`snapshot`] as JSON.
pub struct Latencies;

impl http::LatencySource for Latencies {
    fn pads(&self) -> serde_json::Value {
        serde_json::to_value(snapshot()).unwrap_or_default()
    }
}

/// Adds the tracer's series to the shared registry on every scrape.
#[derive(Debug)]
pub struct Collector;

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let pads = snapshot();
        if !pads.is_empty() {
            let mut m = encoder.encode_descriptor(
                "element_latency_seconds",
                "Processing latency per element and src pad (buffer in to buffer out), from the latencymetrics tracer",
                None,
                MetricType::Histogram,
            )?;
            for p in &pads {
                let labels = vec![
                    ("pipeline", p.pipeline.clone()),
                    ("element", p.element.clone()),
                    ("pad", p.pad.clone()),
                ];
                m.encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(p.sum, p.count, &p.buckets, None)?;
            }
            let mut m = encoder.encode_descriptor(
                "element_latency_quantile_seconds",
                "P50/P95/P99 processing latency per element and src pad, from HDR histograms",
                None,
                MetricType::Gauge,
            )?;
            for p in &pads {
                for (q, v) in [("0.5", p.p50), ("0.95", p.p95), ("0.99", p.p99)] {
                    let labels = vec![
                        ("pipeline", p.pipeline.clone()),
                        ("element", p.element.clone()),
                        ("pad", p.pad.clone()),
                        ("quantile", q.to_string()),
                    ];
                    m.encode_family(&labels)?.encode_gauge(&v)?;
                }
            }
        }
        let rates = rates();
        if !rates.is_empty() {
            for (name, help, kind) in [
                (
                    "pad_buffers",
                    "Buffers pushed out of a src pad",
                    MetricType::Counter,
                ),
                (
                    "pad_bytes",
                    "Bytes pushed out of a src pad",
                    MetricType::Counter,
                ),
                (
                    "pad_fps",
                    "Buffers per second out of a src pad over the last second",
                    MetricType::Gauge,
                ),
                (
                    "pad_bitrate_bits_per_second",
                    "Bits per second out of a src pad over the last second",
                    MetricType::Gauge,
                ),
            ] {
                let mut m = encoder.encode_descriptor(name, help, None, kind)?;
                for r in &rates {
                    let labels = vec![
                        ("pipeline", r.pipeline.clone()),
                        ("element", r.element.clone()),
                        ("pad", r.pad.clone()),
                    ];
                    let mut f = m.encode_family(&labels)?;
                    match name {
                        "pad_buffers" => {
                            f.encode_counter::<NoLabelSet, _, u64>(&r.buffers, None)?
                        }
                        "pad_bytes" => f.encode_counter::<NoLabelSet, _, u64>(&r.bytes, None)?,
                        "pad_fps" => f.encode_gauge(&r.fps)?,
                        _ => f.encode_gauge(&r.bits_per_second)?,
                    }
                }
            }
        }
        let (elements, pads) = tracked();
        let mut m = encoder.encode_descriptor(
            "latencymetrics_tracked_objects",
            "Elements and pads the latencymetrics tracer holds state for (evicted when destroyed)",
            None,
            MetricType::Gauge,
        )?;
        m.encode_family(&vec![("kind", "element".to_string())])?
            .encode_gauge(&(elements as i64))?;
        m.encode_family(&vec![("kind", "pad".to_string())])?
            .encode_gauge(&(pads as i64))?;
        let (levels, in_flight) = queue_levels();
        if !in_flight.is_empty() {
            let mut m = encoder.encode_descriptor(
                "element_buffers_in_flight",
                "Buffers that entered an element and have not left it yet",
                None,
                MetricType::Gauge,
            )?;
            for (pipeline, element, n) in &in_flight {
                let labels = vec![("pipeline", pipeline.clone()), ("element", element.clone())];
                m.encode_family(&labels)?.encode_gauge(&(*n as i64))?;
            }
        }
        if !levels.is_empty() {
            for (name, help) in [
                ("queue_level_buffers", "Buffers queued in a queue element"),
                ("queue_level_bytes", "Bytes queued in a queue element"),
                (
                    "queue_level_seconds",
                    "Media time queued in a queue element",
                ),
            ] {
                let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
                for l in &levels {
                    let labels = vec![
                        ("pipeline", l.pipeline.clone()),
                        ("element", l.element.clone()),
                    ];
                    let mut f = m.encode_family(&labels)?;
                    match name {
                        "queue_level_buffers" => f.encode_gauge(&(l.buffers as i64))?,
                        "queue_level_bytes" => f.encode_gauge(&(l.bytes as i64))?,
                        _ => f.encode_gauge(&l.seconds)?,
                    }
                }
            }
        }
        Ok(())
    }
}

fn pts_of(buffer: &gst::BufferRef) -> Option<u64> {
    buffer.pts().map(|t| t.nseconds())
}

/// The name of the element's top-level bin: the `pipeline` label of its series
/// (the element's own name when it has no parent).
fn pipeline_of(element: &gst::Element) -> String {
    let mut top: gst::Object = element.clone().upcast();
    while let Some(parent) = top.parent() {
        top = parent;
    }
    top.name().to_string()
}

/// A plain element (not a bin, whose ghost pads would count twice).
fn plain_element(pad: &gst::Pad) -> Option<gst::Element> {
    pad.parent_element().filter(|e| !e.is::<gst::Bin>())
}

/// A push of `buffers` buffers of `bytes` bytes in total, the first with PTS `pts`.
fn on_push(ts: u64, pad: &gst::Pad, pts: Option<u64>, buffers: u64, bytes: u64) {
    let upstream = plain_element(pad);
    let downstream = pad.peer().and_then(|peer| plain_element(&peer));
    if upstream.is_none() && downstream.is_none() {
        return;
    }
    // Out of `upstream` through `pad`: when the buffer entered `upstream`.
    if let Some(up) = &upstream {
        let key = up.as_ptr() as usize;
        let arrived = shard(key).elements.get_mut(&key).and_then(|track| {
            let found = match pts {
                Some(pts) => track
                    .pending
                    .iter()
                    .rposition(|(p, _)| *p == Some(pts))
                    .or_else(|| {
                        track
                            .pending
                            .iter()
                            .rposition(|(p, _)| p.is_some_and(|p| p <= pts))
                    }),
                None => (!track.pending.is_empty()).then_some(0),
            };
            found.map(|i| {
                let arrived = track.pending[i].1;
                track.pending.drain(..=i);
                arrived
            })
        });
        let pad_key = pad.as_ptr() as usize;
        let mut store = shard(pad_key);
        let hist = store.pads.entry(pad_key).or_insert_with(|| {
            PadHist::new(
                pipeline_of(up),
                up.name().to_string(),
                pad.name().to_string(),
                ts,
            )
        });
        hist.count(ts, buffers, bytes);
        if let Some(arrived) = arrived {
            let latency = ts.saturating_sub(arrived);
            hist.hist.record(latency);
            hist.sum_ns += latency as u128;
        }
    }
    // Into `downstream`.
    if let Some(down) = downstream {
        let key = down.as_ptr() as usize;
        let mut store = shard(key);
        let track = store.elements.entry(key).or_insert_with(|| ElementTrack {
            weak: down.downgrade(),
            name: down.name().to_string(),
            pipeline: pipeline_of(&down),
            is_queue: [LEVEL_BUFFERS, LEVEL_BYTES, LEVEL_TIME]
                .iter()
                .all(|n| has_level(&down, n)),
            has_src: false,
            pending: VecDeque::new(),
        });
        // Sinks remember nothing; an element that gets a src pad later is asked again.
        if !track.has_src {
            track.has_src = down.num_src_pads() > 0;
        }
        if track.has_src {
            if track.pending.len() >= MAX_PENDING {
                track.pending.pop_front();
            }
            track.pending.push_back((pts, ts));
        }
    }
}

#[derive(Default)]
pub struct LatencyMetrics {
    server: Mutex<Option<http::Server>>,
}

#[glib::object_subclass]
impl ObjectSubclass for LatencyMetrics {
    const NAME: &'static str = "GstRtaiLatencyMetrics";
    type Type = super::LatencyMetrics;
    type ParentType = gst::Tracer;
}

impl ObjectImpl for LatencyMetrics {
    fn constructed(&self) {
        self.parent_constructed();
        // GStreamer 1.22 passes `GST_TRACERS="latencymetrics(listen=127.0.0.1:9465)"`
        // parameters as one string in the `params` property.
        let params = self.obj().property::<Option<String>>("params");
        if let Some(params) = params.filter(|p| !p.trim().is_empty()) {
            match format!("latencymetrics,{params}").parse::<gst::Structure>() {
                Ok(s) => {
                    if let Ok(shards) = s.get::<i32>("shards") {
                        let n = (shards.clamp(1, SHARDS as i32)) as usize;
                        SHARDS_USED.store(n, std::sync::atomic::Ordering::Relaxed);
                        gst::info!(CAT, imp = self, "state in {n} shards");
                    }
                    if let Ok(listen) = s.get::<String>("listen")
                        && !listen.is_empty()
                    {
                        let state = http::AppState::metrics_only(Some(Arc::new(Latencies)));
                        match http::Server::start(&listen, state, &TracerReporter) {
                            Ok(server) => {
                                gst::info!(
                                    CAT,
                                    imp = self,
                                    "serving /metrics on http://{}",
                                    server.addr()
                                );
                                *self.server.lock().unwrap() = Some(server);
                            }
                            Err(err) => {
                                gst::error!(CAT, imp = self, "cannot listen on {listen}: {err}")
                            }
                        }
                    }
                }
                Err(err) => gst::warning!(
                    CAT,
                    imp = self,
                    "ignoring unparsable params '{params}': {err}"
                ),
            }
        }
        static REGISTER: std::sync::Once = std::sync::Once::new();
        REGISTER.call_once(|| METRICS.register_collector(Box::new(Collector)));
        self.register_hook(TracerHook::PadPushPre);
        self.register_hook(TracerHook::PadPushListPre);
        self.register_hook(TracerHook::ObjectDestroyed);
    }
}

/// Warnings of the tracer's own HTTP server, on the tracer's debug category.
struct TracerReporter;

impl crate::report::Reporter for TracerReporter {
    fn warning(&self, msg: &str) {
        gst::warning!(CAT, "{msg}");
    }

    fn debug(&self, msg: &str) {
        gst::debug!(CAT, "{msg}");
    }
}

impl GstObjectImpl for LatencyMetrics {}

impl TracerImpl for LatencyMetrics {
    fn pad_push_pre(&self, ts: u64, pad: &gst::Pad, buffer: &gst::Buffer) {
        on_push(ts, pad, pts_of(buffer), 1, buffer.size() as u64);
    }

    fn pad_push_list_pre(&self, ts: u64, pad: &gst::Pad, list: &gst::BufferList) {
        let bytes = list.iter().map(|b| b.size() as u64).sum();
        on_push(
            ts,
            pad,
            list.get(0).and_then(pts_of),
            list.len() as u64,
            bytes,
        );
    }

    fn object_destroyed(&self, _ts: u64, object: std::ptr::NonNull<gst::ffi::GstObject>) {
        evict(object.as_ptr() as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An element with a queue's level property names but other types.
    mod odd {
        use super::*;

        #[derive(Default)]
        pub struct OddLevels;

        #[glib::object_subclass]
        impl ObjectSubclass for OddLevels {
            const NAME: &'static str = "RtaiTestOddLevels";
            type Type = super::OddLevels;
            type ParentType = gst::Element;
        }

        impl ObjectImpl for OddLevels {
            fn properties() -> &'static [glib::ParamSpec] {
                static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
                    vec![
                        glib::ParamSpecString::builder(LEVEL_BUFFERS)
                            .read_only()
                            .build(),
                        glib::ParamSpecDouble::builder(LEVEL_BYTES)
                            .read_only()
                            .build(),
                        glib::ParamSpecBoolean::builder(LEVEL_TIME)
                            .read_only()
                            .build(),
                    ]
                });
                PROPERTIES.as_ref()
            }

            fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
                match pspec.name() {
                    LEVEL_BUFFERS => "many".to_value(),
                    LEVEL_BYTES => 1.5f64.to_value(),
                    _ => true.to_value(),
                }
            }

            fn constructed(&self) {
                self.parent_constructed();
                for (name, dir) in [
                    ("sink", gst::PadDirection::Sink),
                    ("src", gst::PadDirection::Src),
                ] {
                    self.obj()
                        .add_pad(&gst::Pad::builder(dir).name(name).build())
                        .unwrap();
                }
            }
        }

        impl GstObjectImpl for OddLevels {}
        impl ElementImpl for OddLevels {}
    }

    glib::wrapper! {
        pub struct OddLevels(ObjectSubclass<odd::OddLevels>) @extends gst::Element, gst::Object;
    }

    #[test]
    fn queue_levels_read_only_integer_level_properties() {
        gst::init().unwrap();
        let odd: gst::Element = glib::Object::builder::<OddLevels>()
            .property("name", "odd-levels")
            .build()
            .upcast();
        let queue = gst::ElementFactory::make("queue")
            .name("real-queue")
            .build()
            .unwrap();
        assert!(
            !has_level(&odd, LEVEL_BUFFERS)
                && !has_level(&odd, LEVEL_BYTES)
                && !has_level(&odd, LEVEL_TIME)
        );
        assert_eq!(level(&odd, LEVEL_BUFFERS), None);
        let mut pads = Vec::new();
        for element in [&odd, &queue] {
            let src = gst::Pad::builder(gst::PadDirection::Src).build();
            src.link(&element.static_pad("sink").unwrap()).unwrap();
            // What the tracer's hook does for a buffer pushed into `element`.
            on_push(1, &src, Some(0), 1, 0);
            pads.push(src);
        }
        let (levels, in_flight) = queue_levels();
        assert!(
            // No parent: the element is its own top-level bin.
            in_flight.contains(&("odd-levels".into(), "odd-levels".into(), 1)),
            "{in_flight:?}"
        );
        assert!(
            !levels.iter().any(|l| l.element == "odd-levels"),
            "not a queue: its levels are not integers"
        );
        let q = levels
            .iter()
            .find(|l| l.element == "real-queue")
            .expect("the real queue's levels");
        assert_eq!((q.buffers, q.bytes, q.seconds), (0, 0, 0.0));
    }
}
