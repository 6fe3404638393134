//! batcher benchmark (issue: segment-aware batching).
//!
//! A stage with a fixed per-call cost (5 ms a call, whatever it carries: an
//! HTTP round trip, a model launch) consumes items offered in real time. The
//! baseline is the same stage behind a plain `queue`; the batcher run puts
//! `batcher` in front of it. Printed for the same run: items per second, P95
//! end-to-end latency (push to processed), and, at low load, the latency the
//! batcher adds (it must not exceed its timeout).
//!
//! Run: `cargo bench -p rtai-benches --bench batcher`

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use rtai_benches::{figure, ratio};
use rtai_core::stats::LatencyHistogram;

const STAGE_COST: Duration = Duration::from_millis(5);

struct Run {
    items_per_second: f64,
    latency: LatencyHistogram,
}

/// Offers `items` at `rate` per second to `front ! appsink(stage)`.
fn run(front: &str, items: u64, rate: f64) -> Run {
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src format=time caps=text/x-raw,format=utf8 ! {front} ! appsink name=stage buffer-list=true sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let pushed: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let latency = Arc::new(Mutex::new(LatencyHistogram::new()));
    let done = Arc::new(Mutex::new((0u64, Instant::now())));
    let stage = pipeline
        .by_name("stage")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    {
        let (pushed, latency, done) = (pushed.clone(), latency.clone(), done.clone());
        stage.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    // One call, whatever it carries.
                    std::thread::sleep(STAGE_COST);
                    let now = Instant::now();
                    let ids: Vec<u64> = match sample.buffer_list() {
                        Some(list) => list.iter().filter_map(|b| b.offset().into()).collect(),
                        None => sample.buffer().map(|b| b.offset()).into_iter().collect(),
                    };
                    let pushed = pushed.lock().unwrap();
                    let mut latency = latency.lock().unwrap();
                    for id in &ids {
                        if let Some(t) = pushed.get(id) {
                            latency.record(now.saturating_duration_since(*t).as_nanos() as u64);
                        }
                    }
                    let mut done = done.lock().unwrap();
                    done.0 += ids.len() as u64;
                    done.1 = now;
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
    }
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    src.set_property("max-bytes", 0u64);
    pipeline.set_state(gst::State::Playing).unwrap();
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate);
    for i in 0..items {
        let due = start + interval * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let mut buffer = gst::Buffer::from_slice(format!("item {i}").into_bytes());
        let b = buffer.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_nseconds(
            (interval * i as u32).as_nanos() as u64,
        ));
        b.set_offset(i);
        pushed.lock().unwrap().insert(i, Instant::now());
        src.push_buffer(buffer).unwrap();
    }
    src.end_of_stream().unwrap();
    pipeline.bus().unwrap().timed_pop_filtered(
        gst::ClockTime::from_seconds(120),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    pipeline.set_state(gst::State::Null).unwrap();
    let (processed, last) = *done.lock().unwrap();
    assert_eq!(processed, items, "every item reached the stage");
    let latency = latency.lock().unwrap().clone();
    Run {
        items_per_second: processed as f64 / last.duration_since(start).as_secs_f64(),
        latency,
    }
}

fn main() {
    gst::init().unwrap();
    gstrtaibatch::plugin_register_static().unwrap();
    let baseline = "queue max-size-buffers=0 max-size-bytes=0 max-size-time=0";
    let batched = "batcher max-batch-size=32 timeout=20 max-queue=4 overflow=block";
    println!(
        "stage: {} ms per call; baseline: `{baseline}`; batcher: `{batched}`",
        STAGE_COST.as_millis()
    );

    println!("\n== high load: 2000 items offered at 400/s (the stage alone manages ~190/s)");
    let base = run(baseline, 2000, 400.0);
    let with = run(batched, 2000, 400.0);
    for (name, r) in [("queue (baseline)", &base), ("batcher", &with)] {
        println!(
            "{name:<18} {:>8.1} items/s   latency P50 {:>8.1} ms  P95 {:>8.1} ms  P99 {:>8.1} ms",
            r.items_per_second,
            r.latency.quantile(0.5) as f64 / 1e6,
            r.latency.quantile(0.95) as f64 / 1e6,
            r.latency.quantile(0.99) as f64 / 1e6
        );
    }
    ratio(
        "throughput batcher / queue (goal >= 1.3, aim 2)",
        with.items_per_second,
        base.items_per_second,
        "items/s",
    );
    ratio(
        "batcher P95 latency / 300 ms target",
        with.latency.quantile(0.95) as f64 / 1e6,
        300.0,
        "ms",
    );

    println!("\n== low load: 100 items offered at 20/s");
    let base = run(baseline, 100, 20.0);
    let with = run(batched, 100, 20.0);
    let added = (with.latency.quantile(0.95) as f64 - base.latency.quantile(0.95) as f64) / 1e6;
    figure(
        "queue P95 latency",
        base.latency.quantile(0.95) as f64 / 1e6,
        "ms",
    );
    figure(
        "batcher P95 latency",
        with.latency.quantile(0.95) as f64 / 1e6,
        "ms",
    );
    ratio(
        "latency the batcher adds / its timeout (must be <= 1)",
        added,
        20.0,
        "ms",
    );
}
