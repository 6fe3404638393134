//! Cost of the `latencymetrics` tracer: the same videotestsrc → videoconvert →
//! fakesink pipeline run as `gst-launch-1.0` processes with and without
//! `GST_TRACERS=latencymetrics`, alternating, in one run. Tracers are chosen when
//! GStreamer initialises, so each variant is its own process. Reports the median
//! throughput (frames/s) of each and the ratio (goal: ≥ 0.95, i.e. <5 % cost).
//!
//! Run: `cargo bench -p rtai-benches --bench latencymetrics`

use std::process::Command;
use std::time::Instant;

use rtai_benches::{figure, ratio};

const REPEATS: usize = 7;

fn frames_per_second(pipeline: &str, frames: u32, tracer: bool) -> f64 {
    let mut cmd = Command::new("gst-launch-1.0");
    cmd.arg("-q").args(
        pipeline
            .replace("FRAMES", &frames.to_string())
            .split_whitespace(),
    );
    cmd.env("GST_PLUGIN_PATH", rtai_integration_tests::plugin_dir());
    if tracer {
        cmd.env("GST_TRACERS", "latencymetrics");
    } else {
        cmd.env_remove("GST_TRACERS");
    }
    let start = Instant::now();
    let status = cmd.status().expect("gst-launch-1.0 runs");
    let elapsed = start.elapsed().as_secs_f64();
    assert!(status.success(), "{pipeline} failed");
    frames as f64 / elapsed
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // Warm the registry cache so neither variant pays for the plugin scan.
    frames_per_second("videotestsrc num-buffers=FRAMES ! fakesink", 1, true);
    for (name, pipeline, frames) in [
        (
            "320x240 I420 → RGB",
            "videotestsrc num-buffers=FRAMES ! video/x-raw,width=320,height=240 ! videoconvert ! video/x-raw,format=RGB ! fakesink",
            3000,
        ),
        (
            "1280x720 I420 → RGB",
            "videotestsrc num-buffers=FRAMES ! video/x-raw,width=1280,height=720 ! videoconvert ! video/x-raw,format=RGB ! fakesink",
            300,
        ),
        (
            "320x240, 5 identity stages",
            "videotestsrc num-buffers=FRAMES ! video/x-raw,width=320,height=240 ! identity ! identity ! identity ! identity ! identity ! fakesink",
            10000,
        ),
    ] {
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for _ in 0..REPEATS {
            without.push(frames_per_second(pipeline, frames, false));
            with.push(frames_per_second(pipeline, frames, true));
        }
        let (with, without) = (median(with), median(without));
        println!("{name} ({frames} frames, median of {REPEATS} processes each)");
        figure("  without tracer", without, "frames/s");
        figure("  with latencymetrics", with, "frames/s");
        ratio(
            "  throughput with / without tracer",
            with,
            without,
            "frames/s",
        );
    }
}
