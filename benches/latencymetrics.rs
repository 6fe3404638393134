//! Cost of the `latencymetrics` tracer: the same videotestsrc → videoconvert →
//! fakesink pipeline run as `gst-launch-1.0` processes with and without
//! `GST_TRACERS=latencymetrics`, alternating, in one run. Tracers are chosen when
//! GStreamer initialises, so each variant is its own process. Reports the median
//! throughput (frames/s) of each and the ratio (goal: ≥ 0.95, i.e. <5 % cost).
//!
//! The tracer's locks: tiny frames (64x48 GRAY8, ~10^5 frames/s) through 4
//! queues and 4 identity stages (5 streaming threads pushing at once), run
//! without the tracer, with it on one lock (`latencymetrics(shards=1)`, the
//! global mutex it had) and with its default sharded state; the throughput of
//! sharded over one lock is what the global mutex cost.
//!
//! Run: `cargo bench -p rtai-benches --bench latencymetrics`

use std::process::Command;
use std::time::Instant;

use rtai_benches::{figure, ratio};

const REPEATS: usize = 7;

fn frames_per_second(pipeline: &str, frames: u32, tracer: bool) -> f64 {
    frames_per_second_with(pipeline, frames, tracer.then_some("latencymetrics"))
}

/// `tracer`: the `GST_TRACERS` value, none: no tracer.
fn frames_per_second_with(pipeline: &str, frames: u32, tracer: Option<&str>) -> f64 {
    let mut cmd = Command::new("gst-launch-1.0");
    cmd.arg("-q").args(
        pipeline
            .replace("FRAMES", &frames.to_string())
            .split_whitespace(),
    );
    cmd.env("GST_PLUGIN_PATH", rtai_integration_tests::plugin_dir());
    match tracer {
        Some(t) => cmd.env("GST_TRACERS", t),
        None => cmd.env_remove("GST_TRACERS"),
    };
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
    let (name, pipeline, frames) = (
        "64x48 GRAY8, 4 queues + 4 identity stages (5 threads)",
        "videotestsrc num-buffers=FRAMES ! video/x-raw,format=GRAY8,width=64,height=48 ! queue ! identity ! queue ! identity ! queue ! identity ! queue ! fakesink",
        100_000,
    );
    let (mut without, mut global, mut sharded) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..REPEATS {
        without.push(frames_per_second_with(pipeline, frames, None));
        global.push(frames_per_second_with(
            pipeline,
            frames,
            Some("latencymetrics(shards=1)"),
        ));
        sharded.push(frames_per_second_with(
            pipeline,
            frames,
            Some("latencymetrics"),
        ));
    }
    let (without, global, sharded) = (median(without), median(global), median(sharded));
    println!("{name} ({frames} frames, median of {REPEATS} processes each)");
    figure("  without tracer", without, "frames/s");
    figure("  with latencymetrics, one lock", global, "frames/s");
    figure("  with latencymetrics, sharded", sharded, "frames/s");
    ratio("  one lock / without tracer", global, without, "frames/s");
    ratio("  sharded / without tracer", sharded, without, "frames/s");
    ratio(
        "  sharded / one lock (what the global mutex cost)",
        sharded,
        global,
        "frames/s",
    );
}
