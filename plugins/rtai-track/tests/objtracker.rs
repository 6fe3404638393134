//! objtracker through gst_check::Harness: a generated clip with ground-truth boxes
//! (crossing paths, noisy, missed and low-confidence detections, false positives,
//! frames without inference) scored with CLEAR-MOT (MOTA, ID switches), then the
//! element's behaviour one feature at a time: enter/leave messages, predicted boxes,
//! `interval`, malformed ROI params, stats.

use gst::prelude::*;
use gst_check::Harness;
use gst_video::VideoRegionOfInterestMeta;
use rtai_core::inference::{DETECTION_PARAM, OBJECT_ID_PARAM};

const WIDTH: u32 = 640;
const HEIGHT: u32 = 480;
const CAPS: &str = "video/x-raw,format=GRAY8,width=640,height=480,framerate=30/1";
const FRAME_NS: u64 = 1_000_000_000 / 30;

fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstrtaitrack::plugin_register_static().unwrap();
    });
}

/// A box as (x, y, w, h) in pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rect {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

impl Rect {
    fn iou(&self, o: &Rect) -> f64 {
        let ix = (self.x + self.w).min(o.x + o.w) - self.x.max(o.x);
        let iy = (self.y + self.h).min(o.y + o.h) - self.y.max(o.y);
        if ix <= 0.0 || iy <= 0.0 {
            return 0.0;
        }
        let inter = ix * iy;
        inter / (self.w * self.h + o.w * o.h - inter)
    }

    fn clipped(&self) -> Rect {
        let x0 = self.x.clamp(0.0, WIDTH as f64 - 1.0);
        let y0 = self.y.clamp(0.0, HEIGHT as f64 - 1.0);
        let x1 = (self.x + self.w).clamp(x0 + 1.0, WIDTH as f64);
        let y1 = (self.y + self.h).clamp(y0 + 1.0, HEIGHT as f64);
        Rect {
            x: x0,
            y: y0,
            w: x1 - x0,
            h: y1 - y0,
        }
    }
}

/// xorshift64* with Box–Muller: the clip is the same on every run.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }
    fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }
    fn gauss(&mut self, sigma: f64) -> f64 {
        let u1 = self.uniform().max(1e-12);
        let u2 = self.uniform();
        sigma * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// One ground-truth object: label, size, visible frames [start, end), linear motion.
struct Object {
    label: &'static str,
    w: f64,
    h: f64,
    start: u32,
    end: u32,
    x0: f64,
    y0: f64,
    vx: f64,
    vy: f64,
}

impl Object {
    fn at(&self, f: u32) -> Option<Rect> {
        if f < self.start || f >= self.end {
            return None;
        }
        let t = (f - self.start) as f64;
        Some(Rect {
            x: self.x0 + self.vx * t,
            y: self.y0 + self.vy * t,
            w: self.w,
            h: self.h,
        })
    }
}

fn objects() -> Vec<Object> {
    vec![
        // Two people walking towards each other on nearly the same line: they cross at
        // frame ~150, inside the stretch where inference runs only every third frame.
        Object {
            label: "person",
            w: 40.0,
            h: 90.0,
            start: 0,
            end: 300,
            x0: 20.0,
            y0: 150.0,
            vx: 1.9,
            vy: 0.0,
        },
        Object {
            label: "person",
            w: 40.0,
            h: 90.0,
            start: 0,
            end: 300,
            x0: 580.0,
            y0: 165.0,
            vx: -1.9,
            vy: 0.0,
        },
        // Two cars crossing with partial overlap around frame 175.
        Object {
            label: "car",
            w: 120.0,
            h: 60.0,
            start: 20,
            end: 260,
            x0: 50.0,
            y0: 350.0,
            vx: 2.0,
            vy: -0.3,
        },
        Object {
            label: "car",
            w: 100.0,
            h: 50.0,
            start: 60,
            end: 300,
            x0: 530.0,
            y0: 300.0,
            vx: -1.8,
            vy: 0.2,
        },
        // A person entering and leaving mid-clip, walking down through the crossing.
        Object {
            label: "person",
            w: 35.0,
            h: 80.0,
            start: 120,
            end: 220,
            x0: 300.0,
            y0: 20.0,
            vx: 0.3,
            vy: 1.5,
        },
        // A dog that leaves while inference is sparse.
        Object {
            label: "dog",
            w: 50.0,
            h: 40.0,
            start: 0,
            end: 150,
            x0: 100.0,
            y0: 420.0,
            vx: 1.5,
            vy: -0.1,
        },
    ]
}

const FRAMES: u32 = 300;

/// Whether upstream ran inference on frame `f`: every frame, except every third one
/// in frames 100..200 (`interval=3` upstream) and a few frames whose result came too late.
fn inferred(f: u32, rng: &mut Rng) -> bool {
    let on_interval = !(100..200).contains(&f) || f.is_multiple_of(3);
    on_interval && !rng.chance(0.03)
}

/// A detection as the detector would send it.
#[derive(Debug, Clone)]
struct Det {
    rect: Rect,
    score: f64,
    label: &'static str,
}

/// One generated frame: ground truth (object index, box) and detections (None = no inference).
struct Frame {
    truth: Vec<(usize, Rect)>,
    dets: Option<Vec<Det>>,
}

fn generate_clip(seed: u64) -> Vec<Frame> {
    let objs = objects();
    let mut rng = Rng(seed);
    let labels = ["person", "car", "dog"];
    (0..FRAMES)
        .map(|f| {
            let truth: Vec<(usize, Rect)> = objs
                .iter()
                .enumerate()
                .filter_map(|(i, o)| o.at(f).map(|r| (i, r)))
                .collect();
            let dets = inferred(f, &mut rng).then(|| {
                let mut dets = Vec::new();
                for &(i, r) in &truth {
                    // The object behind (higher index) in an overlap of the same label is occluded.
                    let occluded = truth
                        .iter()
                        .any(|&(j, q)| j < i && objs[j].label == objs[i].label && q.iou(&r) > 0.2);
                    if rng.chance(if occluded { 0.25 } else { 0.05 }) {
                        continue; // missed
                    }
                    let score = if occluded || rng.chance(0.1) {
                        rng.range(0.15, 0.45)
                    } else {
                        rng.range(0.6, 0.95)
                    };
                    let rect = Rect {
                        x: r.x + rng.gauss(2.0),
                        y: r.y + rng.gauss(2.0),
                        w: r.w * (1.0 + rng.gauss(0.03)),
                        h: r.h * (1.0 + rng.gauss(0.03)),
                    }
                    .clipped();
                    dets.push(Det {
                        rect,
                        score,
                        label: objs[i].label,
                    });
                }
                if rng.chance(0.15) {
                    let (w, h) = (rng.range(30.0, 80.0), rng.range(30.0, 80.0));
                    let rect = Rect {
                        x: rng.range(0.0, WIDTH as f64 - w),
                        y: rng.range(0.0, HEIGHT as f64 - h),
                        w,
                        h,
                    };
                    let label = labels[(rng.next_u64() % 3) as usize];
                    dets.push(Det {
                        rect,
                        score: rng.range(0.2, 0.75),
                        label,
                    });
                }
                dets
            });
            Frame { truth, dets }
        })
        .collect()
}

fn add_detection(buf: &mut gst::BufferRef, d: &Det) {
    let r = d.rect;
    let mut roi = VideoRegionOfInterestMeta::add(
        buf,
        d.label,
        (
            r.x.round() as u32,
            r.y.round() as u32,
            r.w.round().max(1.0) as u32,
            r.h.round().max(1.0) as u32,
        ),
    );
    roi.add_param(
        gst::Structure::builder(DETECTION_PARAM)
            .field("confidence", d.score)
            .field("label_id", d.label.len() as i32)
            .field("label", d.label)
            .field("model_name", "synthetic")
            .build(),
    );
}

fn frame_buffer(f: u32, dets: Option<&[Det]>) -> gst::Buffer {
    let mut buffer = gst::Buffer::with_size((WIDTH * HEIGHT) as usize).unwrap();
    {
        let b = buffer.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_nseconds(f as u64 * FRAME_NS));
        b.set_duration(gst::ClockTime::from_nseconds(FRAME_NS));
        for d in dets.unwrap_or_default() {
            add_detection(b, d);
        }
    }
    buffer
}

/// A tracked box leaving the element.
#[derive(Debug, Clone, PartialEq)]
struct Hyp {
    id: u32,
    rect: Rect,
    predicted: bool,
    label: String,
}

/// The boxes of `buf` that carry a track id (the `object_id` param), checking it agrees with the meta's id.
fn tracked(buf: &gst::BufferRef) -> Vec<Hyp> {
    buf.iter_meta::<VideoRegionOfInterestMeta>()
        .filter_map(|roi| {
            let p = roi.param(OBJECT_ID_PARAM)?;
            let id = p.get::<i32>("id").unwrap();
            assert_eq!(id, roi.id(), "the ROI meta's id is the track id");
            let (x, y, w, h) = roi.rect();
            Some(Hyp {
                id: id as u32,
                rect: Rect {
                    x: x as f64,
                    y: y as f64,
                    w: w as f64,
                    h: h as f64,
                },
                predicted: p.get::<bool>("predicted").unwrap(),
                label: roi.roi_type().to_string(),
            })
        })
        .collect()
}

struct Fixture {
    h: Harness,
    bus: gst::Bus,
}

fn fixture(props: &[(&str, &str)]) -> Fixture {
    init();
    let mut builder = gst::ElementFactory::make("objtracker");
    for (k, v) in props {
        builder = builder.property_from_str(k, v);
    }
    let element = builder.build().unwrap();
    let bus = gst::Bus::new();
    element.set_bus(Some(&bus));
    let mut h = Harness::with_element(&element, Some("sink"), Some("src"));
    h.set_src_caps_str(CAPS);
    Fixture { h, bus }
}

impl Fixture {
    fn run(&mut self, f: u32, dets: Option<&[Det]>) -> Vec<Hyp> {
        self.h.push(frame_buffer(f, dets)).unwrap();
        let out = self.h.pull().unwrap();
        tracked(&out)
    }

    /// Element messages posted so far: (name, structure).
    fn messages(&self) -> Vec<gst::Structure> {
        std::iter::from_fn(|| self.bus.pop())
            .filter_map(|m| match m.view() {
                gst::MessageView::Element(e) => e.structure().map(|s| s.to_owned()),
                _ => None,
            })
            .collect()
    }

    fn stats(&self) -> gst::Structure {
        self.h
            .element()
            .unwrap()
            .property::<gst::Structure>("stats")
    }
}

/// CLEAR-MOT figures (Bernardin & Stiefelhagen 2008) at IoU ≥ 0.5.
#[derive(Debug, Default, Clone, Copy)]
struct Mot {
    gt: u64,
    matches: u64,
    false_negatives: u64,
    false_positives: u64,
    id_switches: u64,
    iou_sum: f64,
}

impl Mot {
    fn mota(&self) -> f64 {
        1.0 - (self.false_negatives + self.false_positives + self.id_switches) as f64
            / self.gt as f64
    }
    fn motp(&self) -> f64 {
        self.iou_sum / self.matches.max(1) as f64
    }
}

const MOT_IOU: f64 = 0.5;

/// Scores a tracker's output against the ground truth: per frame, correspondences from
/// the previous frame are kept while they still overlap enough, the rest are matched
/// by best IoU; a ground-truth object matched to another id than before is an ID switch.
fn clear_mot(frames: &[Frame], outputs: &[Vec<Hyp>]) -> Mot {
    let mut mot = Mot::default();
    let mut last: std::collections::HashMap<usize, u32> = Default::default();
    for (frame, hyps) in frames.iter().zip(outputs) {
        mot.gt += frame.truth.len() as u64;
        let mut gt_used = vec![false; frame.truth.len()];
        let mut hyp_used = vec![false; hyps.len()];
        let mut pairs = Vec::new();
        for (g, (obj, r)) in frame.truth.iter().enumerate() {
            if let Some(&id) = last.get(obj)
                && let Some(h) = (0..hyps.len())
                    .find(|&h| !hyp_used[h] && hyps[h].id == id && hyps[h].rect.iou(r) >= MOT_IOU)
            {
                gt_used[g] = true;
                hyp_used[h] = true;
                pairs.push((g, h));
            }
        }
        let mut candidates: Vec<(f64, usize, usize)> = Vec::new();
        for (g, (_, r)) in frame.truth.iter().enumerate() {
            for (h, hyp) in hyps.iter().enumerate() {
                let iou = hyp.rect.iou(r);
                if !gt_used[g] && !hyp_used[h] && iou >= MOT_IOU {
                    candidates.push((iou, g, h));
                }
            }
        }
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (_, g, h) in candidates {
            if !gt_used[g] && !hyp_used[h] {
                gt_used[g] = true;
                hyp_used[h] = true;
                pairs.push((g, h));
            }
        }
        for &(g, h) in &pairs {
            let (obj, r) = frame.truth[g];
            mot.matches += 1;
            mot.iou_sum += hyps[h].rect.iou(&r);
            if let Some(prev) = last.insert(obj, hyps[h].id)
                && prev != hyps[h].id
            {
                mot.id_switches += 1;
            }
        }
        mot.false_negatives += gt_used.iter().filter(|u| !**u).count() as u64;
        mot.false_positives += hyp_used.iter().filter(|u| !**u).count() as u64;
    }
    mot
}

/// The baseline: greedy IoU matching of detections ≥ 0.5 to the last boxes, no
/// prediction, no second stage, every detection reported at once; tracks dropped after
/// 30 frames unmatched; on frames without inference the last frame's boxes are repeated.
fn naive_tracker(frames: &[Frame]) -> Vec<Vec<Hyp>> {
    let mut tracks: Vec<(u32, Rect, &'static str, u32)> = Vec::new();
    let mut next = 1;
    let mut previous: Vec<Hyp> = Vec::new();
    frames
        .iter()
        .map(|frame| {
            let Some(dets) = &frame.dets else {
                for t in &mut tracks {
                    t.3 += 1;
                }
                return previous.clone();
            };
            let mut out = Vec::new();
            let mut used = vec![false; tracks.len()];
            for d in dets.iter().filter(|d| d.score >= 0.5) {
                let best = (0..tracks.len())
                    .filter(|&t| !used[t] && tracks[t].2 == d.label)
                    .map(|t| (tracks[t].1.iou(&d.rect), t))
                    .filter(|(iou, _)| *iou >= 0.2)
                    .max_by(|a, b| a.0.total_cmp(&b.0));
                let id = match best {
                    Some((_, t)) => {
                        used[t] = true;
                        tracks[t].1 = d.rect;
                        tracks[t].3 = 0;
                        tracks[t].0
                    }
                    None => {
                        tracks.push((next, d.rect, d.label, 0));
                        used.push(true);
                        next += 1;
                        next - 1
                    }
                };
                out.push(Hyp {
                    id,
                    rect: d.rect,
                    predicted: false,
                    label: d.label.into(),
                });
            }
            for (t, u) in tracks.iter_mut().zip(&used) {
                if !u {
                    t.3 += 1;
                }
            }
            tracks.retain(|t| t.3 <= 30);
            previous = out.clone();
            out
        })
        .collect()
}

/// Feeds a clip through an objtracker and returns its tracked boxes per frame.
fn run_clip(frames: &[Frame], props: &[(&str, &str)]) -> (Vec<Vec<Hyp>>, Fixture) {
    let mut fx = fixture(props);
    let outputs = frames
        .iter()
        .enumerate()
        .map(|(f, fr)| fx.run(f as u32, fr.dets.as_deref()))
        .collect();
    (outputs, fx)
}

#[test]
fn generated_clip_mota_and_id_switches() {
    let mut worst_mota = f64::MAX;
    let mut worst_switches = 0;
    let mut sum_mota = 0.0;
    for seed in [0x5EED_0001u64, 0x5EED_0002, 0x5EED_0003, 0x5EED_0004] {
        let frames = generate_clip(seed);
        let without_inference = frames.iter().filter(|f| f.dets.is_none()).count();
        let (outputs, fx) = run_clip(&frames, &[]);
        let mot = clear_mot(&frames, &outputs);
        let base = clear_mot(&frames, &naive_tracker(&frames));
        // Upper bound for a tracker that only labels detections: what the detector found.
        let det_only: Vec<Vec<Hyp>> = frames
            .iter()
            .map(|f| {
                f.dets
                    .iter()
                    .flatten()
                    .filter(|d| d.score >= 0.5)
                    .map(|d| Hyp {
                        id: 0,
                        rect: d.rect,
                        predicted: false,
                        label: d.label.into(),
                    })
                    .collect()
            })
            .collect();
        let recall_det = {
            let m = clear_mot(&frames, &det_only);
            m.matches as f64 / m.gt as f64
        };
        let stats = fx.stats();
        println!(
            "seed {seed:#x}: {} frames ({without_inference} without inference), {} GT boxes, detector recall (conf≥0.5) {:.3}\n  \
             objtracker: MOTA {:.3} MOTP {:.3} IDSW {} FN {} FP {} | naive greedy IoU: MOTA {:.3} IDSW {} FN {} FP {}\n  stats {stats}",
            frames.len(),
            mot.gt,
            recall_det,
            mot.mota(),
            mot.motp(),
            mot.id_switches,
            mot.false_negatives,
            mot.false_positives,
            base.mota(),
            base.id_switches,
            base.false_negatives,
            base.false_positives,
        );
        assert!(
            mot.mota() > base.mota(),
            "objtracker must beat the naive baseline"
        );
        worst_mota = worst_mota.min(mot.mota());
        worst_switches = worst_switches.max(mot.id_switches);
        sum_mota += mot.mota();
        assert_eq!(stats.get::<u64>("frames").unwrap(), FRAMES as u64);
        assert_eq!(
            stats.get::<u64>("predicted-frames").unwrap(),
            without_inference as u64
        );
    }
    let mean_mota = sum_mota / 4.0;
    println!(
        "over 4 seeds: mean MOTA {mean_mota:.3}, worst MOTA {worst_mota:.3}, most ID switches {worst_switches}"
    );
    // Measured: mean 0.914, worst 0.896, at most 1 ID switch per clip.
    assert!(mean_mota >= 0.9, "mean MOTA {mean_mota}");
    assert!(worst_mota >= 0.88, "worst MOTA {worst_mota}");
    assert!(worst_switches <= 1, "ID switches {worst_switches}");
}

fn det(x: f64, y: f64, w: f64, h: f64, score: f64, label: &'static str) -> Det {
    Det {
        rect: Rect { x, y, w, h },
        score,
        label,
    }
}

/// One object moving right at 5 px/frame, seen on `frames` with confidence 0.9.
fn walker(f: u32) -> Vec<Det> {
    vec![det(50.0 + 5.0 * f as f64, 100.0, 40.0, 80.0, 0.9, "person")]
}

#[test]
fn object_enter_and_leave_messages() {
    let mut fx = fixture(&[("interval", "1"), ("max-lost-frames", "5")]);
    for f in 0..10 {
        let ids = fx.run(f, Some(&walker(f)));
        assert_eq!(
            ids.iter().map(|h| h.id).collect::<Vec<_>>(),
            vec![1],
            "frame {f}"
        );
    }
    let msgs = fx.messages();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    let enter = &msgs[0];
    assert_eq!(enter.name(), "object-enter");
    assert_eq!(enter.get::<u32>("track-id").unwrap(), 1);
    assert_eq!(enter.get::<String>("label").unwrap(), "person");
    assert_eq!(
        enter.get::<u64>("running-time").unwrap(),
        0,
        "confirmed on the first frame"
    );
    let bbox: Vec<u32> = enter
        .get::<gst::Array>("bbox")
        .unwrap()
        .iter()
        .map(|v| v.get::<u32>().unwrap())
        .collect();
    assert_eq!(bbox, vec![50, 100, 40, 80]);
    // Empty inference results (interval=1): lost after 5 more frames, then it leaves.
    for f in 10..20 {
        assert!(fx.run(f, Some(&[])).is_empty(), "no boxes for a lost track");
        if f < 15 {
            assert!(fx.messages().is_empty(), "frame {f}");
        }
    }
    let msgs = fx.messages();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    let leave = &msgs[0];
    assert_eq!(leave.name(), "object-leave");
    assert_eq!(leave.get::<u32>("track-id").unwrap(), 1);
    assert_eq!(leave.get::<String>("label").unwrap(), "person");
    assert_eq!(
        leave.get::<u64>("running-time").unwrap(),
        15 * FRAME_NS,
        "sixth frame unmatched"
    );
    assert_eq!(leave.get::<String>("reason").unwrap(), "lost");
    let bbox: Vec<u32> = leave
        .get::<gst::Array>("bbox")
        .unwrap()
        .iter()
        .map(|v| v.get::<u32>().unwrap())
        .collect();
    assert_eq!(bbox, vec![95, 100, 40, 80], "the last matched box");
    let stats = fx.stats();
    assert_eq!(stats.get::<u64>("created").unwrap(), 1);
    assert_eq!(stats.get::<u64>("lost").unwrap(), 1);
    assert_eq!(stats.get::<u64>("active-tracks").unwrap(), 0);
}

#[test]
fn tracks_still_alive_at_eos_leave_with_reason_eos() {
    let mut fx = fixture(&[]);
    for f in 0..3 {
        fx.run(f, Some(&walker(f)));
    }
    fx.messages();
    assert!(fx.h.push_event(gst::event::Eos::new()));
    let msgs = fx.messages();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0].name(), "object-leave");
    assert_eq!(msgs[0].get::<String>("reason").unwrap(), "eos");
    assert_eq!(msgs[0].get::<u64>("frames").unwrap(), 2);
    assert_eq!(
        msgs[0].get::<u64>("running-time").unwrap(),
        2 * FRAME_NS,
        "the last frame's"
    );
}

#[test]
fn frames_without_detections_get_predicted_boxes() {
    let mut fx = fixture(&[]);
    for f in 0..10 {
        fx.run(f, Some(&walker(f)));
    }
    // Upstream interval=3: two frames without inference, then a detection frame.
    for f in 10..30 {
        let out = fx.run(f, (f.is_multiple_of(3)).then(|| walker(f)).as_deref());
        assert_eq!(out.len(), 1, "frame {f}: {out:?}");
        let h = &out[0];
        assert_eq!(h.id, 1);
        assert_eq!(h.label, "person");
        assert_eq!(h.predicted, !f.is_multiple_of(3), "frame {f}");
        let truth = walker(f)[0].rect;
        assert!(
            h.rect.iou(&truth) > 0.8,
            "frame {f}: predicted {:?} vs {:?}",
            h.rect,
            truth
        );
    }
    let stats = fx.stats();
    assert_eq!(stats.get::<u64>("predicted-frames").unwrap(), 14);
    assert_eq!(stats.get::<u64>("predicted-boxes").unwrap(), 14);
    assert_eq!(stats.get::<u64>("created").unwrap(), 1);

    // emit-predicted=false: same tracking, no boxes on those frames.
    let mut fx = fixture(&[("emit-predicted", "false")]);
    for f in 0..10 {
        fx.run(f, Some(&walker(f)));
    }
    assert!(fx.run(10, None).is_empty());
    assert_eq!(
        fx.run(11, Some(&walker(11)))
            .iter()
            .map(|h| h.id)
            .collect::<Vec<_>>(),
        vec![1]
    );
}

#[test]
fn predicted_boxes_are_clipped_to_the_frame() {
    let mut fx = fixture(&[]);
    // Leaving through the right edge at 20 px/frame.
    let at = |f: u32| {
        vec![det(
            500.0 + 20.0 * f as f64,
            100.0,
            40.0,
            80.0,
            0.9,
            "person",
        )]
    };
    for f in 0..5 {
        fx.run(f, Some(&at(f)));
    }
    let mut seen = 0;
    for f in 5..15 {
        for h in fx.run(f, None) {
            seen += 1;
            assert!(
                h.rect.x + h.rect.w <= WIDTH as f64,
                "frame {f}: {:?}",
                h.rect
            );
        }
    }
    assert!(
        (1..10).contains(&seen),
        "a box fully outside is not emitted ({seen})"
    );
}

#[test]
fn interval_decides_what_an_empty_frame_means() {
    // interval=0 (auto): an empty frame went without inference → predicted box.
    let mut fx = fixture(&[]);
    for f in 0..5 {
        fx.run(f, Some(&walker(f)));
    }
    assert_eq!(fx.run(5, None).len(), 1);
    // interval=1: every frame went through inference → the object was not seen.
    let mut fx = fixture(&[("interval", "1")]);
    for f in 0..5 {
        fx.run(f, Some(&walker(f)));
    }
    assert!(fx.run(5, None).is_empty());
    assert!(fx.run(6, None).is_empty());
    assert_eq!(fx.stats().get::<u64>("predicted-frames").unwrap(), 0);
    // interval=3: two empty frames are skipped frames, the third is an empty result.
    let mut fx = fixture(&[("interval", "3")]);
    for f in 0..5 {
        fx.run(f, Some(&walker(f)));
    }
    assert_eq!(fx.run(5, None).len(), 1);
    assert_eq!(fx.run(6, None).len(), 1);
    assert!(
        fx.run(7, None).is_empty(),
        "third empty frame: inference saw nothing, track lost"
    );
    assert!(fx.run(8, None).is_empty(), "lost tracks are not predicted");
    let stats = fx.stats();
    assert_eq!(stats.get::<u64>("detection-frames").unwrap(), 6);
    assert_eq!(stats.get::<u64>("predicted-frames").unwrap(), 3);
    // ... and comes back with its id when seen again.
    assert_eq!(
        fx.run(9, Some(&walker(9)))
            .iter()
            .map(|h| h.id)
            .collect::<Vec<_>>(),
        vec![1]
    );
}

#[test]
fn crossing_objects_keep_their_ids() {
    // Same label, same size, head-on on the same line: only the motion model tells them apart.
    let mut fx = fixture(&[]);
    let mut ids = (None, None);
    for f in 0..60 {
        let a = det(100.0 + 6.0 * f as f64, 200.0, 40.0, 80.0, 0.9, "person");
        let b = det(460.0 - 6.0 * f as f64, 204.0, 40.0, 80.0, 0.85, "person");
        let out = fx.run(f, Some(&[a.clone(), b.clone()]));
        let id_of = |r: &Rect| out.iter().find(|h| h.rect.iou(r) > 0.9).map(|h| h.id);
        let (ia, ib) = (id_of(&a.rect), id_of(&b.rect));
        if a.rect.iou(&b.rect) < 0.3 {
            assert!(ia.is_some() && ib.is_some(), "frame {f}: {out:?}");
            if ids.0.is_none() {
                ids = (ia, ib);
            }
            assert_eq!((ia, ib), ids, "frame {f}: ids swapped");
        }
    }
    assert_eq!(fx.stats().get::<u64>("created").unwrap(), 2);
}

#[test]
fn labels_are_matched_only_to_their_class() {
    let mut fx = fixture(&[]);
    fx.run(0, Some(&[det(100.0, 100.0, 50.0, 50.0, 0.9, "car")]));
    let out = fx.run(1, Some(&[det(102.0, 100.0, 50.0, 50.0, 0.9, "truck")]));
    assert!(out.is_empty(), "a truck does not continue a car: {out:?}");
    let mut fx = fixture(&[("class-aware", "false")]);
    fx.run(0, Some(&[det(100.0, 100.0, 50.0, 50.0, 0.9, "car")]));
    let out = fx.run(1, Some(&[det(102.0, 100.0, 50.0, 50.0, 0.9, "truck")]));
    assert_eq!(out.iter().map(|h| h.id).collect::<Vec<_>>(), vec![1]);
}

#[test]
fn malformed_roi_params_are_ignored() {
    let mut fx = fixture(&[]);
    let mut buffer = frame_buffer(0, Some(&walker(0)));
    {
        let b = buffer.get_mut().unwrap();
        let bad = [
            gst::Structure::builder(DETECTION_PARAM)
                .field("label", "person")
                .build(),
            gst::Structure::builder(DETECTION_PARAM)
                .field("confidence", "high")
                .build(),
            gst::Structure::builder(DETECTION_PARAM)
                .field("confidence", 7.5f64)
                .build(),
            gst::Structure::builder(DETECTION_PARAM)
                .field("confidence", f64::NAN)
                .build(),
            gst::Structure::builder(DETECTION_PARAM)
                .field("confidence", 0.9f64)
                .field("label", 3i32)
                .build(),
        ];
        for (i, s) in bad.into_iter().enumerate() {
            let mut roi = VideoRegionOfInterestMeta::add(b, "person", (300, 50 * i as u32, 40, 40));
            roi.add_param(s);
        }
        // Zero-sized box.
        let mut roi = VideoRegionOfInterestMeta::add(b, "person", (400, 400, 0, 40));
        roi.add_param(
            gst::Structure::builder(DETECTION_PARAM)
                .field("confidence", 0.9f64)
                .build(),
        );
        // A ROI of another kind (no detection param) is not a detection and stays untouched.
        let mut roi = VideoRegionOfInterestMeta::add(b, "face", (10, 10, 20, 20));
        roi.add_param(
            gst::Structure::builder("landmarks")
                .field("n", 5i32)
                .build(),
        );
    }
    fx.h.push(buffer).unwrap();
    let out = fx.h.pull().unwrap();
    let hyps = tracked(&out);
    assert_eq!(
        hyps.len(),
        1,
        "only the good detection is tracked: {hyps:?}"
    );
    let face = out
        .iter_meta::<VideoRegionOfInterestMeta>()
        .find(|r| r.roi_type() == "face")
        .unwrap();
    assert!(face.param(OBJECT_ID_PARAM).is_none());
    assert_eq!(fx.stats().get::<u64>("ignored").unwrap(), 6);
    // Tracking goes on; a confidence stored as a float is accepted too.
    let mut buffer = frame_buffer(1, None);
    {
        let b = buffer.get_mut().unwrap();
        let mut roi = VideoRegionOfInterestMeta::add(b, "person", (55, 100, 40, 80));
        roi.add_param(
            gst::Structure::builder(DETECTION_PARAM)
                .field("confidence", 0.9f32)
                .build(),
        );
    }
    fx.h.push(buffer).unwrap();
    assert_eq!(
        tracked(&fx.h.pull().unwrap())
            .iter()
            .map(|h| h.id)
            .collect::<Vec<_>>(),
        vec![1]
    );
}

#[test]
fn an_existing_object_id_param_is_replaced_not_duplicated() {
    let mut fx = fixture(&[]);
    let mut buffer = frame_buffer(0, None);
    {
        let b = buffer.get_mut().unwrap();
        let mut roi = VideoRegionOfInterestMeta::add(b, "person", (50, 100, 40, 80));
        roi.add_param(
            gst::Structure::builder(DETECTION_PARAM)
                .field("confidence", 0.9f64)
                .build(),
        );
        roi.add_param(
            gst::Structure::builder(OBJECT_ID_PARAM)
                .field("id", 77i32)
                .build(),
        );
    }
    fx.h.push(buffer).unwrap();
    let out = fx.h.pull().unwrap();
    let roi = out.iter_meta::<VideoRegionOfInterestMeta>().next().unwrap();
    let params: Vec<_> = roi
        .params()
        .filter(|p| p.name() == OBJECT_ID_PARAM)
        .collect();
    assert_eq!(params.len(), 1);
    assert_eq!(params[0].get::<i32>("id").unwrap(), 1);
    assert!(!params[0].get::<bool>("predicted").unwrap());
    assert_eq!(roi.id(), 1);
}

#[test]
fn low_confidence_detections_extend_tracks_and_stats_add_up() {
    let mut fx = fixture(&[]);
    for f in 0..5 {
        fx.run(f, Some(&walker(f)));
    }
    // Partly occluded: confidence drops to 0.3, the track continues through the second stage.
    for f in 5..10 {
        let mut d = walker(f);
        d[0].score = 0.3;
        d.push(det(400.0, 400.0, 40.0, 40.0, 0.3, "person")); // a low-confidence stray: no track
        assert_eq!(
            fx.run(f, Some(&d)).iter().map(|h| h.id).collect::<Vec<_>>(),
            vec![1],
            "frame {f}"
        );
    }
    // Below low-threshold: ignored.
    let mut d = walker(10);
    d[0].score = 0.05;
    assert!(fx.run(10, Some(&d)).is_empty());
    let s = fx.stats();
    assert_eq!(s.get::<u64>("frames").unwrap(), 11);
    assert_eq!(s.get::<u64>("detection-frames").unwrap(), 11);
    assert_eq!(s.get::<u64>("detections").unwrap(), 15);
    assert_eq!(s.get::<u64>("matched").unwrap(), 10);
    assert_eq!(s.get::<u64>("matched-low").unwrap(), 5);
    assert_eq!(s.get::<u64>("created").unwrap(), 1);
    assert_eq!(s.get::<u64>("active-tracks").unwrap(), 1);
}

#[test]
fn flushing_starts_tracking_afresh() {
    let mut fx = fixture(&[]);
    for f in 0..5 {
        fx.run(f, Some(&walker(f)));
    }
    assert!(fx.h.push_event(gst::event::FlushStart::new()));
    assert!(fx.h.push_event(gst::event::FlushStop::new(true)));
    fx.h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
        gst::ClockTime,
    >::new()));
    assert!(fx.run(5, None).is_empty(), "no tracks survive a flush");
    assert_eq!(
        fx.run(6, Some(&walker(6)))
            .iter()
            .map(|h| h.id)
            .collect::<Vec<_>>(),
        vec![2],
        "ids keep increasing"
    );
}

/// inferclient's marker of an inferred frame.
fn mark_inferred(buf: &mut gst::BufferRef, detections: u32) {
    rtai_core::InferredMeta {
        model: "detector".into(),
        detections,
    }
    .attach(buf);
}

#[test]
fn a_frame_marked_as_inferred_without_detections_is_an_empty_result() {
    // interval=0 (auto): an unmarked empty frame went without inference → predicted box...
    let mut fx = fixture(&[]);
    for f in 0..5 {
        fx.run(f, Some(&walker(f)));
    }
    let out = fx.run(5, None);
    assert_eq!(out.len(), 1);
    assert!(out[0].predicted);
    // ... a marked one went through inference that found nothing: the track is lost, not predicted.
    let mut marked = frame_buffer(6, None);
    mark_inferred(marked.make_mut(), 0);
    fx.h.push(marked).unwrap();
    assert!(
        tracked(&fx.h.pull().unwrap()).is_empty(),
        "inferred, nothing found"
    );
    assert!(fx.run(7, None).is_empty(), "lost tracks are not predicted");
    let stats = fx.stats();
    assert_eq!(
        stats.get::<u64>("detection-frames").unwrap(),
        6,
        "frames 0-4 and the marked frame 6"
    );
    assert_eq!(stats.get::<u64>("predicted-frames").unwrap(), 2);
    assert_eq!(
        stats.get::<u64>("predicted-boxes").unwrap(),
        1,
        "frame 5 only"
    );
    // A marked frame with detections is an inference frame as before, and the object comes back.
    let mut again = frame_buffer(8, Some(&walker(8)));
    mark_inferred(again.make_mut(), 1);
    fx.h.push(again).unwrap();
    assert_eq!(
        tracked(&fx.h.pull().unwrap())
            .iter()
            .map(|h| h.id)
            .collect::<Vec<_>>(),
        vec![1]
    );

    // interval=3: the marker counts too, before three frames have passed.
    let mut fx = fixture(&[("interval", "3")]);
    for f in 0..5 {
        fx.run(f, Some(&walker(f)));
    }
    let mut marked = frame_buffer(5, None);
    mark_inferred(marked.make_mut(), 0);
    fx.h.push(marked).unwrap();
    assert!(tracked(&fx.h.pull().unwrap()).is_empty());
}
