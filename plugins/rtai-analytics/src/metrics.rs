//! The process-wide Prometheus registry shared by every `analyticssink` and the
//! `latencymetrics` tracer, encoded in the Prometheus text format (0.0.4) by the
//! `prometheus-client` crate. Names follow Prometheus conventions: a `rtai_`
//! prefix, `_total` for counters, base units (`_seconds`) and labels
//! `element`, `pipeline`, `pad`, `stream`.
//!
//! An element creates its series at 0 when it starts ([`Metrics::init_element`],
//! [`Metrics::init_stream`]), as Prometheus exporters do: a scraper sees every
//! series before the first event. Other sources (the `latencymetrics` tracer)
//! add theirs with [`Metrics::register_collector`].

use std::sync::{LazyLock, Mutex};

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Label pairs of one time series.
pub type Labels = Vec<(&'static str, String)>;

type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Mutex<Registry>,
    /// `rtai_analytics_events_total{element,stream,type}`
    pub events: Family<Labels, Counter>,
    /// `rtai_analytics_detections_total{element,pad,stream,class}`
    pub detections: Family<Labels, Counter>,
    /// `rtai_analytics_malformed_metas_total{element,pad,stream}`
    pub malformed: Family<Labels, Counter>,
    /// `rtai_analytics_clip_markers_total{element,stream}`
    pub clip_markers: Family<Labels, Counter>,
    /// `rtai_inference_round_trip_seconds{element,pad,stream,model}`
    pub inference_round_trip: HistogramFamily,
    /// `rtai_vad_segment_events_total{element,pad,stream,kind=start|commit|end|cancel}`
    pub vad: Family<Labels, Counter>,
    /// `rtai_analytics_write_queue_depth{element}`: events waiting for the database.
    pub queue_depth: Family<Labels, Gauge>,
    /// `rtai_analytics_storage_rows_written_total{element,backend}`
    pub rows_written: Family<Labels, Counter>,
    /// `rtai_analytics_storage_write_failures_total{element,backend}`
    pub write_failures: Family<Labels, Counter>,
    /// `rtai_analytics_events_dropped_total{element,reason}`
    pub dropped: Family<Labels, Counter>,
    /// `rtai_analytics_redis_published_total{element}` and `..._redis_failures_total`
    pub redis_published: Family<Labels, Counter>,
    pub redis_failures: Family<Labels, Counter>,
}

fn round_trip_histogram() -> Histogram {
    // 1 ms .. ~16 s
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("rtai");
        let events = Family::default();
        registry.register(
            "analytics_events",
            "Events the analytics sink produced, by type",
            events.clone(),
        );
        let detections = Family::default();
        registry.register(
            "analytics_detections",
            "Detections (ROI metas) received, by class",
            detections.clone(),
        );
        let malformed = Family::default();
        registry.register(
            "analytics_malformed_metas",
            "Metas ignored because they were malformed",
            malformed.clone(),
        );
        let clip_markers = Family::default();
        registry.register(
            "analytics_clip_markers",
            "Clip markers posted on the bus",
            clip_markers.clone(),
        );
        let inference_round_trip = HistogramFamily::new_with_constructor(round_trip_histogram);
        registry.register_with_unit(
            "inference_round_trip",
            "Inference request round trip reported by result metas",
            Unit::Seconds,
            inference_round_trip.clone(),
        );
        let vad = Family::default();
        registry.register(
            "vad_segment_events",
            "Speech segment protocol events seen (start, commit, end, cancel)",
            vad.clone(),
        );
        let queue_depth = Family::default();
        registry.register(
            "analytics_write_queue_depth",
            "Events waiting to be written to the database",
            queue_depth.clone(),
        );
        let rows_written = Family::default();
        registry.register(
            "analytics_storage_rows_written",
            "Events written to the database",
            rows_written.clone(),
        );
        let write_failures = Family::default();
        registry.register(
            "analytics_storage_write_failures",
            "Failed database writes (each is retried)",
            write_failures.clone(),
        );
        let dropped = Family::default();
        registry.register(
            "analytics_events_dropped",
            "Events not stored or published, by reason",
            dropped.clone(),
        );
        let redis_published = Family::default();
        registry.register(
            "analytics_redis_published",
            "Events added to the Redis stream",
            redis_published.clone(),
        );
        let redis_failures = Family::default();
        registry.register(
            "analytics_redis_failures",
            "Failed Redis XADD calls",
            redis_failures.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            events,
            detections,
            malformed,
            clip_markers,
            inference_round_trip,
            vad,
            queue_depth,
            rows_written,
            write_failures,
            dropped,
            redis_published,
            redis_failures,
        }
    }

    /// The registry in the Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.registry.lock().unwrap())
            .expect("writing to a String cannot fail");
        out
    }

    /// Adds series computed on every scrape.
    pub fn register_collector(&self, collector: Box<dyn prometheus_client::collector::Collector>) {
        self.registry.lock().unwrap().register_collector(collector);
    }

    /// The series of an element (labels `base`: element, pipeline) at 0.
    pub fn init_element(&self, base: &Labels, backend: &str, redis: bool) {
        self.queue_depth.get_or_create(base).set(0);
        let storage = with_label(base, "backend", backend);
        let _ = self.rows_written.get_or_create(&storage);
        let _ = self.write_failures.get_or_create(&storage);
        for reason in DROP_REASONS {
            let _ = self
                .dropped
                .get_or_create(&with_label(base, "reason", reason));
        }
        if redis {
            let _ = self.redis_published.get_or_create(base);
            let _ = self.redis_failures.get_or_create(base);
        }
    }

    /// The series of one stream (sink pad) of an element at 0.
    pub fn init_stream(&self, base: &Labels, stream: &str) {
        let st = with_label(base, "stream", stream);
        for kind in crate::event::EventKind::ALL {
            let _ = self
                .events
                .get_or_create(&with_label(&st, "type", kind.as_str()));
        }
        let _ = self.clip_markers.get_or_create(&st);
        let pad = with_label(&st, "pad", stream);
        let _ = self.malformed.get_or_create(&pad);
        for kind in ["start", "commit", "end", "cancel"] {
            let _ = self.vad.get_or_create(&with_label(&pad, "kind", kind));
        }
    }
}

/// Values of the `reason` label of `rtai_analytics_events_dropped_total`.
pub const DROP_REASONS: [&str; 4] = [
    "storage_queue_full",
    "redis_queue_full",
    "storage",
    "rejected",
];

/// `base` with one more label.
pub fn with_label(base: &Labels, key: &'static str, value: &str) -> Labels {
    let mut l = base.clone();
    l.push((key, value.to_string()));
    l
}

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

pub fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}
