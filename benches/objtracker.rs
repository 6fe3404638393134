//! objtracker benchmark (issue 5: local tracking of remote detections).
//!
//! Scenes of 10, 50 and 200 objects moving in straight lines across a 1920×1080 frame,
//! with noisy detections (5 % missed, 10 % low confidence, a false positive on every
//! fifth frame), 1000 frames each, buffers with their ROI metas built before timing.
//! Printed for the same run:
//! - the element's cost per frame in `appsrc ! objtracker ! fakesink` against the same
//!   pipeline with `identity` (what GStreamer and the metas cost without tracking);
//! - the ByteTrack algorithm alone (`gstrtaitrack::bytetrack`, Hungarian matching, Kalman
//!   filters, two stages) against a naive greedy IoU tracker on the same detections.
//!
//! Run: `cargo bench -p rtai-benches --bench objtracker`

use std::time::Instant;

use gst::prelude::*;
use gst_video::VideoRegionOfInterestMeta;
use gstrtaitrack::bytetrack::{BBox, Config, Detection, Tracker};
use rtai_benches::{figure, ratio};
use rtai_core::inference::DETECTION_PARAM;
use rtai_core::testing::{element, launch};

const FRAMES: usize = 1000;
const WIDTH: f64 = 1920.0;
const HEIGHT: f64 = 1080.0;

struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }
}

/// Per frame, the detections of a scene of `objects` objects bouncing off the frame edges.
fn scene(objects: usize, seed: u64) -> Vec<Vec<Detection>> {
    let mut rng = Rng(seed);
    let labels = ["person", "car", "bicycle"];
    let mut objs: Vec<(f64, f64, f64, f64, f64, f64, &str)> = (0..objects)
        .map(|i| {
            let (w, h) = (rng.range(30.0, 120.0), rng.range(40.0, 160.0));
            (
                rng.range(0.0, WIDTH - w),
                rng.range(0.0, HEIGHT - h),
                w,
                h,
                rng.range(-4.0, 4.0),
                rng.range(-3.0, 3.0),
                labels[i % 3],
            )
        })
        .collect();
    (0..FRAMES)
        .map(|f| {
            let mut dets = Vec::with_capacity(objects + 1);
            for o in &mut objs {
                o.0 += o.4;
                o.1 += o.5;
                if o.0 < 0.0 || o.0 + o.2 > WIDTH {
                    o.4 = -o.4;
                }
                if o.1 < 0.0 || o.1 + o.3 > HEIGHT {
                    o.5 = -o.5;
                }
                if rng.uniform() < 0.05 {
                    continue;
                }
                let score = if rng.uniform() < 0.1 {
                    rng.range(0.15, 0.45)
                } else {
                    rng.range(0.6, 0.95)
                };
                let bbox = BBox::new(
                    (o.0 + rng.range(-2.0, 2.0)).max(0.0),
                    (o.1 + rng.range(-2.0, 2.0)).max(0.0),
                    o.2 * rng.range(0.97, 1.03),
                    o.3 * rng.range(0.97, 1.03),
                );
                dets.push(Detection {
                    bbox,
                    score,
                    label: o.6.to_string(),
                });
            }
            if f % 5 == 0 {
                let bbox = BBox::new(
                    rng.range(0.0, WIDTH - 60.0),
                    rng.range(0.0, HEIGHT - 60.0),
                    50.0,
                    50.0,
                );
                dets.push(Detection {
                    bbox,
                    score: rng.range(0.2, 0.8),
                    label: labels[f % 3].to_string(),
                });
            }
            dets
        })
        .collect()
}

/// The baseline tracker: each detection ≥ 0.5 takes the unclaimed track of its label with
/// the best IoU ≥ 0.3 with its last box (in detection order), else a new id.
fn naive(frames: &[Vec<Detection>]) -> u64 {
    let mut tracks: Vec<(u32, BBox, &str, u32)> = Vec::new();
    let mut next = 1u32;
    let mut assigned = 0u64;
    for dets in frames {
        let mut used = vec![false; tracks.len()];
        for d in dets.iter().filter(|d| d.score >= 0.5) {
            let best = (0..tracks.len())
                .filter(|&t| !used[t] && tracks[t].2 == d.label)
                .map(|t| (tracks[t].1.iou(&d.bbox), t))
                .filter(|(iou, _)| *iou >= 0.3)
                .max_by(|a, b| a.0.total_cmp(&b.0));
            match best {
                Some((_, t)) => {
                    used[t] = true;
                    tracks[t].1 = d.bbox;
                    tracks[t].3 = 0;
                }
                None => {
                    tracks.push((next, d.bbox, d.label.as_str(), 0));
                    used.push(true);
                    next += 1;
                }
            }
            assigned += 1;
        }
        for (t, u) in tracks.iter_mut().zip(&used) {
            if !u {
                t.3 += 1;
            }
        }
        tracks.retain(|t| t.3 <= 30);
    }
    assigned
}

fn bytetrack(frames: &[Vec<Detection>]) -> u64 {
    let mut tracker = Tracker::new(Config::default());
    frames
        .iter()
        .map(|dets| tracker.update(dets).assignments.len() as u64)
        .sum()
}

fn buffers(frames: &[Vec<Detection>]) -> Vec<gst::Buffer> {
    frames
        .iter()
        .enumerate()
        .map(|(i, dets)| {
            let mut buffer = gst::Buffer::with_size(1).unwrap();
            {
                let b = buffer.get_mut().unwrap();
                b.set_pts(gst::ClockTime::from_nseconds(i as u64 * 33_333_333));
                for d in dets {
                    let r = d.bbox;
                    let mut roi = VideoRegionOfInterestMeta::add(
                        b,
                        &d.label,
                        (
                            r.x as u32,
                            r.y as u32,
                            (r.w as u32).max(1),
                            (r.h as u32).max(1),
                        ),
                    );
                    roi.add_param(
                        gst::Structure::builder(DETECTION_PARAM)
                            .field("confidence", d.score)
                            .field("label", d.label.as_str())
                            .build(),
                    );
                }
            }
            buffer
        })
        .collect()
}

/// Seconds to push `buffers` through `appsrc ! {stage} ! fakesink`.
fn pipeline_seconds(stage: &str, buffers: Vec<gst::Buffer>) -> f64 {
    let pipeline = launch(&format!(
        "appsrc name=src format=time caps=video/x-raw,format=GRAY8,width=1920,height=1080,framerate=30/1 \
         ! {stage} ! fakesink sync=false"
    ));
    let src = element::<gst_app::AppSrc>(&pipeline, "src");
    src.set_max_bytes(0);
    src.set_block(false);
    pipeline.set_state(gst::State::Playing).unwrap();
    let start = Instant::now();
    for b in buffers {
        src.push_buffer(b).unwrap();
    }
    src.end_of_stream().unwrap();
    let msg = pipeline.bus().unwrap().timed_pop_filtered(
        gst::ClockTime::from_seconds(300),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    let took = start.elapsed().as_secs_f64();
    assert!(
        matches!(
            msg.as_ref().map(|m| m.view()),
            Some(gst::MessageView::Eos(_))
        ),
        "{msg:?}"
    );
    pipeline.set_state(gst::State::Null).unwrap();
    took
}

fn main() {
    gst::init().unwrap();
    gstrtaitrack::plugin_register_static().unwrap();
    println!("{FRAMES} frames per scene; per-frame costs in µs");
    for objects in [10usize, 50, 200] {
        let frames = scene(objects, 0xB0B + objects as u64);
        println!("\n== {objects} objects per frame");

        let t = Instant::now();
        let naive_assigned = naive(&frames);
        let naive_us = t.elapsed().as_secs_f64() * 1e6 / FRAMES as f64;
        let t = Instant::now();
        let byte_assigned = bytetrack(&frames);
        let byte_us = t.elapsed().as_secs_f64() * 1e6 / FRAMES as f64;
        figure("naive greedy IoU tracker (algorithm)", naive_us, "µs/frame");
        figure("ByteTrack (algorithm)", byte_us, "µs/frame");
        ratio(
            "ByteTrack vs naive greedy IoU",
            byte_us,
            naive_us,
            "µs/frame",
        );
        println!("  detections given an id: ByteTrack {byte_assigned}, naive {naive_assigned}");

        let identity_us = pipeline_seconds("identity", buffers(&frames)) * 1e6 / FRAMES as f64;
        let tracker_us = pipeline_seconds("objtracker", buffers(&frames)) * 1e6 / FRAMES as f64;
        figure("appsrc ! identity ! fakesink", identity_us, "µs/frame");
        figure("appsrc ! objtracker ! fakesink", tracker_us, "µs/frame");
        ratio(
            "objtracker vs identity pipeline",
            tracker_us,
            identity_us,
            "µs/frame",
        );
        figure(
            "objtracker added cost",
            tracker_us - identity_us,
            "µs/frame",
        );
        figure(
            "objtracker frames/s (one core)",
            1e6 / tracker_us,
            "frames/s",
        );
    }
}
