//! Latency statistics shared by the elements' `stats` properties and metrics.

use hdrhistogram::Histogram;

/// A latency histogram in nanoseconds (1 µs .. 1 h, 3 significant digits).
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    hist: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    pub fn new() -> Self {
        let hist = Histogram::new_with_bounds(1_000, 3_600_000_000_000, 3)
            .expect("static bounds are valid");
        Self { hist }
    }

    /// Records one value; values outside the range are clamped, never lost.
    pub fn record(&mut self, nanos: u64) {
        self.hist.saturating_record(nanos.max(1_000));
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The value at `quantile` (0.0–1.0) in ns; 0 when empty.
    pub fn quantile(&self, quantile: f64) -> u64 {
        if self.hist.is_empty() {
            0
        } else {
            self.hist.value_at_quantile(quantile)
        }
    }

    pub fn mean(&self) -> f64 {
        if self.hist.is_empty() {
            0.0
        } else {
            self.hist.mean()
        }
    }

    pub fn max(&self) -> u64 {
        if self.hist.is_empty() {
            0
        } else {
            self.hist.max()
        }
    }

    /// Adds `p50`, `p95`, `p99`, `mean`, `max` (ns) and `count` to `builder`
    /// under `prefix` (e.g. `round-trip-p50`).
    pub fn add_to_structure(
        &self,
        builder: gst::structure::Builder,
        prefix: &str,
    ) -> gst::structure::Builder {
        builder
            .field(format!("{prefix}-count"), self.count())
            .field(format!("{prefix}-p50"), self.quantile(0.50))
            .field(format!("{prefix}-p95"), self.quantile(0.95))
            .field(format!("{prefix}-p99"), self.quantile(0.99))
            .field(format!("{prefix}-mean"), self.mean() as u64)
            .field(format!("{prefix}-max"), self.max())
    }

    /// How many recorded values are at or below `nanos` (for cumulative histogram buckets).
    pub fn count_at_or_below(&self, nanos: u64) -> u64 {
        if self.hist.is_empty() {
            0
        } else {
            self.hist.count_between(0, nanos)
        }
    }

    pub fn reset(&mut self) {
        self.hist.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_follow_recorded_values() {
        let mut h = LatencyHistogram::new();
        for ms in 1..=100u64 {
            h.record(ms * 1_000_000);
        }
        assert_eq!(h.count(), 100);
        let p50 = h.quantile(0.5) as f64 / 1e6;
        let p99 = h.quantile(0.99) as f64 / 1e6;
        assert!((49.0..=51.0).contains(&p50), "p50 {p50}");
        assert!((98.0..=100.5).contains(&p99), "p99 {p99}");
        assert!(h.max() >= 99_900_000);
    }

    #[test]
    fn empty_histogram_reports_zero() {
        let h = LatencyHistogram::new();
        assert_eq!(h.quantile(0.99), 0);
        assert_eq!(h.max(), 0);
        assert_eq!(h.mean(), 0.0);
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let mut h = LatencyHistogram::new();
        h.record(0);
        h.record(u64::MAX);
        assert_eq!(h.count(), 2);
    }
}
