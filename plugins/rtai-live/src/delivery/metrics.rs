//! Prometheus `/metrics` of a delivery: a snapshot of the streams encoded
//! on every scrape (after quiet sessions left, so the counts are exact at
//! that moment), in the Prometheus text format by `prometheus-client`.
//!
//! `rtai_delivery_*` series carry `stream` (and `rendition`) labels; the
//! MediaMTX names (`paths`, `paths_bytes_received`, `paths_bytes_sent`,
//! `hls_muxers`, `hls_muxers_bytes_sent`, untyped as MediaMTX exports them)
//! let dashboards built for MediaMTX read this server too.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::Delivery;
use super::state::{NO_RENDITION, Status};

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

type Labels = Vec<(&'static str, String)>;

/// (name, help, type, series)
type Family = (&'static str, &'static str, MetricType, Vec<(Labels, f64)>);

#[derive(Debug, Default)]
struct Snapshot {
    families: Vec<Family>,
}

impl Snapshot {
    fn family(&mut self, name: &'static str, help: &'static str, kind: MetricType) -> usize {
        self.families.push((name, help, kind, Vec::new()));
        self.families.len() - 1
    }
    fn add(&mut self, family: usize, labels: Labels, v: f64) {
        self.families[family].3.push((labels, v));
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, kind, series) in &self.families {
            let mut m = encoder.encode_descriptor(name, help, None, *kind)?;
            for (labels, v) in series {
                let mut f = m.encode_family(labels)?;
                match kind {
                    MetricType::Counter => {
                        f.encode_counter::<NoLabelSet, _, u64>(&(*v as u64), None)?
                    }
                    _ => f.encode_gauge(v)?,
                }
            }
        }
        Ok(())
    }
}

/// The text exposition of `delivery`'s streams.
pub fn encode(delivery: &Delivery) -> String {
    let mut s = Snapshot::default();
    use MetricType::{Counter, Gauge, Unknown};
    let active = s.family(
        "rtai_delivery_stream_active",
        "1 while the stream is live, 0 after it ended",
        Gauge,
    );
    let viewers = s.family("rtai_delivery_viewers", "Viewer sessions now", Gauge);
    let rviewers = s.family(
        "rtai_delivery_rendition_viewers",
        "Viewer sessions now, by the rendition they last fetched",
        Gauge,
    );
    let sessions = s.family("rtai_delivery_sessions", "Viewer sessions started", Counter);
    let switches = s.family(
        "rtai_delivery_rendition_switches",
        "Rendition switches of viewer sessions",
        Counter,
    );
    let ingress = s.family(
        "rtai_delivery_ingress_bytes",
        "Input bytes received",
        Counter,
    );
    let ingress_bps = s.family(
        "rtai_delivery_ingress_bitrate_bits_per_second",
        "Input bits per second over the last second",
        Gauge,
    );
    let egress_bps = s.family(
        "rtai_delivery_egress_bitrate_bits_per_second",
        "Bits per second served to viewers over the last second",
        Gauge,
    );
    let idle = s.family(
        "rtai_delivery_ingress_idle_seconds",
        "Seconds since the last input bytes",
        Gauge,
    );
    let health = s.family(
        "rtai_delivery_health_score",
        "0-100 from stalls, errors and input gaps over the last minute",
        Gauge,
    );
    let bytes = s.family(
        "rtai_delivery_bytes_sent",
        "Bytes served to viewers",
        Counter,
    );
    let requests = s.family(
        "rtai_delivery_requests",
        "Media requests served (playlists, segments, parts)",
        Counter,
    );
    let errors = s.family(
        "rtai_delivery_request_errors",
        "Media requests answered with an error status",
        Counter,
    );
    let segments = s.family("rtai_delivery_segments", "Segments written", Counter);
    let seg_bytes = s.family(
        "rtai_delivery_segment_bytes",
        "Bytes of segments written",
        Counter,
    );
    let stalls = s.family(
        "rtai_delivery_stalls",
        "Stalls inferred from gaps between a session's requests",
        Counter,
    );
    let fps = s.family(
        "rtai_delivery_encoder_fps",
        "Frames per second out of the rendition's encoder",
        Gauge,
    );
    let dropped = s.family(
        "rtai_delivery_store_dropped_writes",
        "Rows not written because the store queue was full",
        Counter,
    );
    let paths = s.family("paths", "MediaMTX: 1 per path (stream), by state", Unknown);
    let paths_rx = s.family(
        "paths_bytes_received",
        "MediaMTX: bytes received by the path",
        Unknown,
    );
    let paths_tx = s.family(
        "paths_bytes_sent",
        "MediaMTX: bytes sent by the path",
        Unknown,
    );
    let muxers = s.family(
        "hls_muxers",
        "MediaMTX: 1 per HLS muxer (live stream)",
        Unknown,
    );
    let muxers_tx = s.family(
        "hls_muxers_bytes_sent",
        "MediaMTX: bytes sent by the HLS muxer",
        Unknown,
    );
    s.add(
        dropped,
        vec![],
        delivery
            .write_dropped
            .load(std::sync::atomic::Ordering::Relaxed) as f64,
    );
    delivery.with_streams(|streams, now, rules| {
        let mut names: Vec<&String> = streams.map.keys().collect();
        names.sort();
        for name in names {
            let st = &streams.map[name];
            let l = || vec![("stream", name.clone())];
            let live = st.status == Status::Active;
            s.add(active, l(), if live { 1.0 } else { 0.0 });
            s.add(viewers, l(), st.sessions.len() as f64);
            for (r, n) in st.viewers_per_rendition() {
                s.add(
                    rviewers,
                    vec![("stream", name.clone()), ("rendition", r)],
                    n as f64,
                );
            }
            s.add(sessions, l(), st.sessions_total as f64);
            s.add(switches, l(), st.switches_total as f64);
            s.add(ingress, l(), st.ingress_total as f64);
            s.add(ingress_bps, l(), st.ingress_bps);
            s.add(egress_bps, l(), st.egress_bps);
            s.add(idle, l(), st.ingress_idle(now));
            s.add(health, l(), st.health(now, rules));
            // Every rendition of the ladder and the master playlist, at 0 from the start.
            let mut rnames: Vec<String> = st.renditions.iter().map(|r| r.name.clone()).collect();
            rnames.push(NO_RENDITION.to_string());
            rnames.extend(st.per_rendition.keys().cloned());
            rnames.sort();
            rnames.dedup();
            let mut sent_total = 0u64;
            for r in rnames {
                let c = st.per_rendition.get(&r).cloned().unwrap_or_default();
                sent_total += c.bytes_sent;
                let rl = vec![("stream", name.clone()), ("rendition", r.clone())];
                s.add(bytes, rl.clone(), c.bytes_sent as f64);
                s.add(requests, rl.clone(), c.requests as f64);
                s.add(errors, rl.clone(), c.errors as f64);
                s.add(stalls, rl.clone(), c.stalls as f64);
                if r != NO_RENDITION {
                    s.add(segments, rl.clone(), c.segments as f64);
                    s.add(seg_bytes, rl.clone(), c.segment_bytes as f64);
                    s.add(fps, rl, c.encoder_fps.unwrap_or(0.0));
                }
            }
            let state = if live { "ready" } else { "notReady" };
            let pl = vec![("name", name.clone()), ("state", state.to_string())];
            s.add(paths, pl.clone(), 1.0);
            s.add(paths_rx, pl.clone(), st.ingress_total as f64);
            s.add(paths_tx, pl, sent_total as f64);
            if live {
                s.add(muxers, vec![("name", name.clone())], 1.0);
                s.add(muxers_tx, vec![("name", name.clone())], sent_total as f64);
            }
        }
    });
    let mut registry = Registry::default();
    registry.register_collector(Box::new(s));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}
