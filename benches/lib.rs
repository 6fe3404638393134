//! Shared helpers for the benchmarks: load the built plugins and print figures
//! in one format, so every benchmark's output reads the same.

pub use rtai_integration_tests::init;

/// Prints one measured figure: `name: value unit`.
pub fn figure(name: &str, value: f64, unit: &str) {
    println!("{name:<48} {value:>12.3} {unit}");
}

/// Prints a ratio of `measured` to `baseline` with both names, e.g.
/// `speculative vs confirmed first-sample latency: 0.031 (6.1 ms / 195.0 ms)`.
pub fn ratio(what: &str, measured: f64, baseline: f64, unit: &str) {
    let ratio = if baseline == 0.0 {
        f64::NAN
    } else {
        measured / baseline
    };
    println!("{what:<48} {ratio:>12.3}x ({measured:.3} {unit} / {baseline:.3} {unit})");
}
