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
        Rect { x: x0, y: y0, w: x1 - x0, h: y1 - y0 }
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
        Some(Rect { x: self.x0 + self.vx * t, y: self.y0 + self.vy * t, w: self.w, h: self.h })
    }
}

fn objects() -> Vec<Object> {
    vec![
        // Two people walking towards each other on nearly the same line: they cross at
        // frame ~150, inside the stretch where inference runs only every third frame.
        Object { label: "person", w: 40.0, h: 90.0, start: 0, end: 300, x0: 20.0, y0: 150.0, vx: 1.9, vy: 0.0 },
        Object { label: "person", w: 40.0, h: 90.0, start: 0, end: 300, x0: 580.0, y0: 165.0, vx: -1.9, vy: 0.0 },
        // Two cars crossing with partial overlap around frame 175.
        Object { label: "car", w: 120.0, h: 60.0, start: 20, end: 260, x0: 50.0, y0: 350.0, vx: 2.0, vy: -0.3 },
        Object { label: "car", w: 100.0, h: 50.0, start: 60, end: 300, x0: 530.0, y0: 300.0, vx: -1.8, vy: 0.2 },
        // A person entering and leaving mid-clip, walking down through the crossing.
        Object { label: "person", w: 35.0, h: 80.0, start: 120, end: 220, x0: 300.0, y0: 20.0, vx: 0.3, vy: 1.5 },
        // A dog that leaves while inference is sparse.
        Object { label: "dog", w: 50.0, h: 40.0, start: 0, end: 150, x0: 100.0, y0: 420.0, vx: 1.5, vy: -0.1 },
    ]
}

const FRAMES: u32 = 300;

/// Whether upstream ran inference on frame `f`: every frame, except every third one
/// in frames 100..200 (`interval=3` upstream) and a few frames whose result came too late.
fn inferred(f: u32, rng: &mut Rng) -> bool {
    let on_interval = !(100..200).contains(&f) || f % 3 == 0;
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
            let truth: Vec<(usize, Rect)> = objs.iter().enumerate().filter_map(|(i, o)| o.at(f).map(|r| (i, r))).collect();
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
                    let score = if occluded || rng.chance(0.1) { rng.range(0.15, 0.45) } else { rng.range(0.6, 0.95) };
                    let rect = Rect {
                        x: r.x + rng.gauss(2.0),
                        y: r.y + rng.gauss(2.0),
                        w: r.w * (1.0 + rng.gauss(0.03)),
                        h: r.h * (1.0 + rng.gauss(0.03)),
                    }
                    .clipped();
                    dets.push(Det { rect, score, label: objs[i].label });
                }
                if rng.chance(0.15) {
                    let (w, h) = (rng.range(30.0, 80.0), rng.range(30.0, 80.0));
                    let rect = Rect { x: rng.range(0.0, WIDTH as f64 - w), y: rng.range(0.0, HEIGHT as f64 - h), w, h };
                    let label = labels[(rng.next_u64() % 3) as usize];
                    dets.push(Det { rect, score: rng.range(0.2, 0.75), label });
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
        (r.x.round() as u32, r.y.round() as u32, r.w.round().max(1.0) as u32, r.h.round().max(1.0) as u32),
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
                rect: Rect { x: x as f64, y: y as f64, w: w as f64, h: h as f64 },
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
        self.h.element().unwrap().property::<gst::Structure>("stats")
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
        1.0 - (self.false_negatives + self.false_positives + self.id_switches) as f64 / self.gt as f64
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
                && let Some(h) = (0..hyps.len()).find(|&h| !hyp_used[h] && hyps[h].id == id && hyps[h].rect.iou(r) >= MOT_IOU)
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
/// prediction, no second stage; tracks dropped after 30 frames unmatched.
fn naive_tracker(frames: &[Frame]) -> Vec<Vec<Hyp>> {
    let mut tracks: Vec<(u32, Rect, &'static str, u32)> = Vec::new();
    let mut next = 1;
    frames
        .iter()
        .map(|frame| {
            let Some(dets) = &frame.dets else {
                for t in &mut tracks {
                    t.3 += 1;
                }
                return Vec::new();
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
                out.push(Hyp { id, rect: d.rect, predicted: false, label: d.label.into() });
            }
            for (t, u) in tracks.iter_mut().zip(&used) {
                if !u {
                    t.3 += 1;
                }
            }
            tracks.retain(|t| t.3 <= 30);
            out
        })
        .collect()
}

/// Feeds a clip through an objtracker and returns its tracked boxes per frame.
fn run_clip(frames: &[Frame], props: &[(&str, &str)]) -> (Vec<Vec<Hyp>>, Fixture) {
    let mut fx = fixture(props);
    let outputs = frames.iter().enumerate().map(|(f, fr)| fx.run(f as u32, fr.dets.as_deref())).collect();
    (outputs, fx)
}

#[test]
fn generated_clip_mota_and_id_switches() {
    let mut worst_mota = f64::MAX;
    let mut worst_switches = 0;
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
                    .map(|d| Hyp { id: 0, rect: d.rect, predicted: false, label: d.label.into() })
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
        assert!(mot.mota() > base.mota(), "objtracker must beat the naive baseline");
        worst_mota = worst_mota.min(mot.mota());
        worst_switches = worst_switches.max(mot.id_switches);
        assert_eq!(stats.get::<u64>("frames").unwrap(), FRAMES as u64);
        assert_eq!(stats.get::<u64>("predicted-frames").unwrap(), without_inference as u64);
    }
    println!("worst over seeds: MOTA {worst_mota:.3}, ID switches {worst_switches}");
    assert!(worst_mota >= 0.85, "MOTA {worst_mota}");
    assert!(worst_switches <= 2, "ID switches {worst_switches}");
}
