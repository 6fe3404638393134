//! ByteTrack-style multi-object tracking, independent of GStreamer.
//!
//! Per detection frame ([`Tracker::update`]):
//! 1. every track is predicted one frame ahead by its Kalman filter;
//! 2. high-confidence detections (≥ `high_threshold`) are matched to confirmed tracks
//!    (tracked and lost) by IoU with the Hungarian algorithm, pairs under `match_iou` rejected;
//! 3. low-confidence detections (`low_threshold` ≤ score < `high_threshold`) are matched
//!    to the confirmed tracks still unmatched that were tracked in the previous frame
//!    (IoU ≥ `low_match_iou`); tracked tracks left unmatched become lost;
//! 4. tentative tracks (created in the previous detection frame) are matched to the remaining
//!    high detections (IoU ≥ `tentative_match_iou`); a match confirms them (they get their id
//!    and an enter event), a miss removes them;
//! 5. remaining high detections with score ≥ `new_track_threshold` start tentative tracks
//!    (confirmed at once in the very first detection frame);
//! 6. tracks unmatched for more than `max_lost_frames` frames are removed (leave event).
//!
//! Frames without inference ([`Tracker::predict_only`]) only predict; tracked tracks are
//! reported with their predicted boxes. Track age counts frames of both kinds.
//! Matching is restricted to equal labels when `class_aware`.

use crate::kalman::KalmanState;

/// An axis-aligned box, top-left corner and size, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BBox {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl BBox {
    pub fn new(x: f64, y: f64, w: f64, h: f64) -> Self {
        Self { x, y, w, h }
    }

    pub fn area(&self) -> f64 {
        self.w.max(0.0) * self.h.max(0.0)
    }

    pub fn iou(&self, other: &BBox) -> f64 {
        let ix = (self.x + self.w).min(other.x + other.w) - self.x.max(other.x);
        let iy = (self.y + self.h).min(other.y + other.h) - self.y.max(other.y);
        if ix <= 0.0 || iy <= 0.0 {
            return 0.0;
        }
        let inter = ix * iy;
        let union = self.area() + other.area() - inter;
        if union > 0.0 { inter / union } else { 0.0 }
    }

    /// (cx, cy, w/h, h), the Kalman measurement.
    fn to_xyah(self) -> [f64; 4] {
        let h = self.h.max(1e-3);
        [self.x + self.w / 2.0, self.y + self.h / 2.0, self.w / h, h]
    }

    fn from_xyah(m: &[f64]) -> Self {
        let h = m[3].max(1e-3);
        let w = (m[2] * h).max(1e-3);
        Self {
            x: m[0] - w / 2.0,
            y: m[1] - h / 2.0,
            w,
            h,
        }
    }
}

/// One detection of the current frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub bbox: BBox,
    pub score: f64,
    pub label: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub high_threshold: f64,
    pub low_threshold: f64,
    pub new_track_threshold: f64,
    pub match_iou: f64,
    pub low_match_iou: f64,
    pub tentative_match_iou: f64,
    pub max_lost_frames: u32,
    pub class_aware: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            high_threshold: 0.5,
            low_threshold: 0.1,
            new_track_threshold: 0.6,
            match_iou: 0.2,
            low_match_iou: 0.5,
            tentative_match_iou: 0.3,
            max_lost_frames: 30,
            class_aware: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackState {
    /// Seen once; no id yet.
    Tentative,
    /// Matched in the last detection frame.
    Tracked,
    /// Missed in the last detection frame(s); kept for re-identification.
    Lost,
}

#[derive(Debug, Clone)]
pub struct Track {
    /// 0 while tentative.
    pub id: u32,
    pub state: TrackState,
    pub label: String,
    pub score: f64,
    kf: KalmanState,
    /// The last matched detection's box.
    pub last_bbox: BBox,
    /// Frames (of any kind) since the last match.
    pub frames_since_update: u32,
    /// Detection frames matched.
    pub hits: u32,
}

impl Track {
    /// The Kalman filter's current box.
    pub fn predicted_bbox(&self) -> BBox {
        BBox::from_xyah(&self.kf.mean[..4])
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A track was confirmed and got its id.
    Enter { id: u32, label: String, bbox: BBox },
    /// A confirmed track was removed after `max_lost_frames` frames unmatched (or by [`Tracker::finish`]).
    Leave {
        id: u32,
        label: String,
        bbox: BBox,
        frames: u64,
    },
}

/// What one frame produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FrameOutput {
    /// (index into the frame's detections, track id), for detections that belong to a confirmed track.
    pub assignments: Vec<(usize, u32)>,
    /// Predicted boxes of tracked tracks on frames without inference: (id, label, box).
    pub predicted: Vec<(u32, String, BBox)>,
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub frames: u64,
    pub detection_frames: u64,
    pub predicted_frames: u64,
    /// Detections at or above `low_threshold` offered to the tracker.
    pub detections: u64,
    /// Detections matched to a confirmed track (both stages).
    pub matched: u64,
    /// Of `matched`, matched in the low-confidence stage.
    pub matched_low: u64,
    /// Tracks confirmed (ids assigned).
    pub created: u64,
    /// Confirmed tracks removed after being lost too long.
    pub lost: u64,
    /// Predicted boxes reported on frames without inference.
    pub predicted_boxes: u64,
}

pub struct Tracker {
    pub config: Config,
    tracks: Vec<Track>,
    next_id: u32,
    frame: u64,
    first_frames: std::collections::HashMap<u32, u64>,
    seen_detection_frame: bool,
    pub stats: Stats,
}

/// Cost given to forbidden pairs (IoU below the gate, other label).
const FORBIDDEN: f64 = 1e6;

/// Minimum-cost assignment of rows to columns (Hungarian algorithm with potentials,
/// O(n²m)); returns `assignment[row] = Some(col)`. Works for any rectangular matrix.
pub fn hungarian(cost: &[Vec<f64>], cols: usize) -> Vec<Option<usize>> {
    let rows = cost.len();
    if rows == 0 || cols == 0 {
        return vec![None; rows];
    }
    if rows > cols {
        // Solve the transpose so that rows ≤ columns.
        let t: Vec<Vec<f64>> = (0..cols)
            .map(|c| (0..rows).map(|r| cost[r][c]).collect())
            .collect();
        let by_col = hungarian(&t, rows);
        let mut out = vec![None; rows];
        for (c, r) in by_col.into_iter().enumerate() {
            if let Some(r) = r {
                out[r] = Some(c);
            }
        }
        return out;
    }
    let (n, m) = (rows, cols);
    let inf = f64::INFINITY;
    let mut u = vec![0.0; n + 1];
    let mut v = vec![0.0; m + 1];
    let mut p = vec![0usize; m + 1]; // p[col] = row (1-based), 0 = free
    let mut way = vec![0usize; m + 1];
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0usize;
        let mut minv = vec![inf; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = inf;
            let mut j1 = 0usize;
            for j in 1..=m {
                if !used[j] {
                    let c = cost[i0 - 1][j - 1];
                    let c = if c.is_finite() { c } else { FORBIDDEN };
                    let cur = c - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=m {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut out = vec![None; n];
    for j in 1..=m {
        if p[j] != 0 {
            out[p[j] - 1] = Some(j - 1);
        }
    }
    out
}

/// Matches `tracks` (boxes, labels) to `dets` maximising total IoU, keeping pairs with
/// IoU ≥ `min_iou` (and equal labels when `class_aware`).
/// Returns (matches as (track index, detection index), unmatched tracks, unmatched detections).
pub fn associate(
    tracks: &[(BBox, &str)],
    dets: &[(BBox, &str)],
    min_iou: f64,
    class_aware: bool,
) -> (Vec<(usize, usize)>, Vec<usize>, Vec<usize>) {
    let cost: Vec<Vec<f64>> = tracks
        .iter()
        .map(|(tb, tl)| {
            dets.iter()
                .map(|(db, dl)| {
                    let iou = tb.iou(db);
                    if (class_aware && tl != dl) || iou < min_iou || iou <= 0.0 {
                        FORBIDDEN
                    } else {
                        1.0 - iou
                    }
                })
                .collect()
        })
        .collect();
    // Solve each connected group of allowed pairs on its own: the optimum is the same
    // (forbidden pairs never count), and crowded frames cost far less than one big matrix.
    let (nt, nd) = (tracks.len(), dets.len());
    let mut parent: Vec<usize> = (0..nt + nd).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for (t, row) in cost.iter().enumerate() {
        for (d, &c) in row.iter().enumerate() {
            if c < FORBIDDEN {
                let (a, b) = (root(&mut parent, t), root(&mut parent, nt + d));
                if a != b {
                    parent[a] = b;
                }
            }
        }
    }
    let mut groups: std::collections::BTreeMap<usize, (Vec<usize>, Vec<usize>)> =
        Default::default();
    for t in 0..nt {
        let r = root(&mut parent, t);
        groups.entry(r).or_default().0.push(t);
    }
    for d in 0..nd {
        let r = root(&mut parent, nt + d);
        groups.entry(r).or_default().1.push(d);
    }
    let mut matches = Vec::new();
    let mut det_used = vec![false; nd];
    let mut track_used = vec![false; nt];
    for (ts, ds) in groups.values() {
        if ts.is_empty() || ds.is_empty() {
            continue;
        }
        let sub: Vec<Vec<f64>> = ts
            .iter()
            .map(|&t| ds.iter().map(|&d| cost[t][d]).collect())
            .collect();
        for (i, a) in hungarian(&sub, ds.len()).into_iter().enumerate() {
            if let Some(j) = a
                && sub[i][j] < FORBIDDEN
            {
                matches.push((ts[i], ds[j]));
                track_used[ts[i]] = true;
                det_used[ds[j]] = true;
            }
        }
    }
    matches.sort_unstable();
    let unmatched_tracks = (0..nt).filter(|&t| !track_used[t]).collect();
    let unmatched_dets = (0..dets.len()).filter(|&d| !det_used[d]).collect();
    (matches, unmatched_tracks, unmatched_dets)
}

impl Tracker {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            tracks: Vec::new(),
            next_id: 1,
            frame: 0,
            first_frames: Default::default(),
            seen_detection_frame: false,
            stats: Stats::default(),
        }
    }

    /// Confirmed tracks (tracked or lost).
    pub fn active(&self) -> usize {
        self.tracks
            .iter()
            .filter(|t| t.state != TrackState::Tentative)
            .count()
    }

    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    fn take_id(&mut self) -> u32 {
        let id = self.next_id;
        // Ids also travel as gint (the ROI meta's id); wrap before i32::MAX.
        self.next_id = if self.next_id >= i32::MAX as u32 {
            1
        } else {
            self.next_id + 1
        };
        id
    }

    fn confirm(&mut self, idx: usize, events: &mut Vec<Event>) {
        let id = self.take_id();
        let frame = self.frame;
        let t = &mut self.tracks[idx];
        t.id = id;
        t.state = TrackState::Tracked;
        self.first_frames.insert(id, frame);
        self.stats.created += 1;
        events.push(Event::Enter {
            id,
            label: t.label.clone(),
            bbox: t.last_bbox,
        });
    }

    fn begin_frame(&mut self) {
        self.frame += 1;
        self.stats.frames += 1;
        for t in &mut self.tracks {
            if t.state == TrackState::Lost {
                // As ByteTrack: a lost box keeps moving but stops growing or shrinking.
                t.kf.mean[7] = 0.0;
            }
            t.kf.predict();
            t.frames_since_update = t.frames_since_update.saturating_add(1);
        }
    }

    /// Removes confirmed tracks unmatched for too long.
    fn expire(&mut self, events: &mut Vec<Event>) {
        let max_lost = self.config.max_lost_frames;
        let frame = self.frame;
        let mut kept = Vec::with_capacity(self.tracks.len());
        for t in self.tracks.drain(..) {
            if t.state != TrackState::Tentative && t.frames_since_update > max_lost {
                let first = self.first_frames.remove(&t.id).unwrap_or(frame);
                self.stats.lost += 1;
                events.push(Event::Leave {
                    id: t.id,
                    label: t.label,
                    bbox: t.last_bbox,
                    frames: frame - first,
                });
            } else {
                kept.push(t);
            }
        }
        self.tracks = kept;
    }

    /// A frame that went through inference; `dets` may be empty.
    pub fn update(&mut self, dets: &[Detection]) -> FrameOutput {
        self.begin_frame();
        self.stats.detection_frames += 1;
        let c = self.config.clone();
        let mut out = FrameOutput::default();
        let valid = |d: &Detection| d.score.is_finite() && d.bbox.w > 0.0 && d.bbox.h > 0.0;
        let high: Vec<usize> = (0..dets.len())
            .filter(|&i| valid(&dets[i]) && dets[i].score >= c.high_threshold)
            .collect();
        let low: Vec<usize> = (0..dets.len())
            .filter(|&i| {
                valid(&dets[i])
                    && dets[i].score >= c.low_threshold
                    && dets[i].score < c.high_threshold
            })
            .collect();
        self.stats.detections += (high.len() + low.len()) as u64;

        let mut matched_det = vec![false; dets.len()];
        let mut matched_track = vec![false; self.tracks.len()];
        let confirmed: Vec<usize> = (0..self.tracks.len())
            .filter(|&i| self.tracks[i].state != TrackState::Tentative)
            .collect();
        let boxes: Vec<BBox> = self.tracks.iter().map(Track::predicted_bbox).collect();

        let apply = |tracker: &mut Tracker, ti: usize, di: usize, out: &mut FrameOutput| {
            let d = &dets[di];
            let t = &mut tracker.tracks[ti];
            t.kf.update(d.bbox.to_xyah());
            t.last_bbox = d.bbox;
            t.score = d.score;
            t.frames_since_update = 0;
            t.hits += 1;
            if t.state == TrackState::Lost {
                t.state = TrackState::Tracked;
            }
            if t.state == TrackState::Tracked {
                out.assignments.push((di, t.id));
                tracker.stats.matched += 1;
            }
        };

        // Stage 1: high detections ↔ confirmed tracks.
        let t_in: Vec<(BBox, &str)> = confirmed
            .iter()
            .map(|&i| (boxes[i], self.tracks[i].label.as_str()))
            .collect();
        let d_in: Vec<(BBox, &str)> = high
            .iter()
            .map(|&i| (dets[i].bbox, dets[i].label.as_str()))
            .collect();
        let (m1, _, _) = associate(&t_in, &d_in, c.match_iou, c.class_aware);
        for (t, d) in m1 {
            let (ti, di) = (confirmed[t], high[d]);
            matched_track[ti] = true;
            matched_det[di] = true;
            apply(self, ti, di, &mut out);
        }

        // Stage 2: low detections ↔ tracks that were tracked last frame and are still unmatched.
        let remaining: Vec<usize> = confirmed
            .iter()
            .copied()
            .filter(|&i| !matched_track[i] && self.tracks[i].state == TrackState::Tracked)
            .collect();
        let t_in: Vec<(BBox, &str)> = remaining
            .iter()
            .map(|&i| (boxes[i], self.tracks[i].label.as_str()))
            .collect();
        let d_in: Vec<(BBox, &str)> = low
            .iter()
            .map(|&i| (dets[i].bbox, dets[i].label.as_str()))
            .collect();
        let (m2, _, _) = associate(&t_in, &d_in, c.low_match_iou, c.class_aware);
        for (t, d) in m2 {
            let (ti, di) = (remaining[t], low[d]);
            matched_track[ti] = true;
            matched_det[di] = true;
            apply(self, ti, di, &mut out);
            self.stats.matched_low += 1;
        }
        for &ti in &confirmed {
            if !matched_track[ti] && self.tracks[ti].state == TrackState::Tracked {
                self.tracks[ti].state = TrackState::Lost;
            }
        }

        // Stage 3: tentative tracks ↔ remaining high detections.
        let tentative: Vec<usize> = (0..self.tracks.len())
            .filter(|&i| self.tracks[i].state == TrackState::Tentative)
            .collect();
        let high_left: Vec<usize> = high.iter().copied().filter(|&i| !matched_det[i]).collect();
        let t_in: Vec<(BBox, &str)> = tentative
            .iter()
            .map(|&i| (boxes[i], self.tracks[i].label.as_str()))
            .collect();
        let d_in: Vec<(BBox, &str)> = high_left
            .iter()
            .map(|&i| (dets[i].bbox, dets[i].label.as_str()))
            .collect();
        let (m3, _, _) = associate(&t_in, &d_in, c.tentative_match_iou, c.class_aware);
        let mut confirmed_now = Vec::new();
        for (t, d) in m3 {
            let (ti, di) = (tentative[t], high_left[d]);
            matched_track[ti] = true;
            matched_det[di] = true;
            confirmed_now.push((ti, di));
        }
        for (ti, di) in confirmed_now {
            apply(self, ti, di, &mut out);
            self.confirm(ti, &mut out.events);
            out.assignments.push((di, self.tracks[ti].id));
            self.stats.matched += 1;
        }
        // Unmatched tentative tracks were one-frame wonders.
        let mut idx = 0;
        self.tracks.retain(|t| {
            let keep = t.state != TrackState::Tentative || matched_track[idx];
            idx += 1;
            keep
        });

        // New tracks from the high detections nobody claimed.
        let first_frame = !self.seen_detection_frame;
        for &di in &high {
            if matched_det[di] || dets[di].score < c.new_track_threshold {
                continue;
            }
            let d = &dets[di];
            self.tracks.push(Track {
                id: 0,
                state: TrackState::Tentative,
                label: d.label.clone(),
                score: d.score,
                kf: KalmanState::initiate(d.bbox.to_xyah()),
                last_bbox: d.bbox,
                frames_since_update: 0,
                hits: 1,
            });
            if first_frame {
                let ti = self.tracks.len() - 1;
                self.confirm(ti, &mut out.events);
                out.assignments.push((di, self.tracks[ti].id));
                self.stats.matched += 1;
            }
        }
        self.seen_detection_frame = true;
        self.expire(&mut out.events);
        out.assignments.sort_unstable();
        out
    }

    /// A frame without inference: predict only and report tracked tracks' predicted boxes.
    pub fn predict_only(&mut self) -> FrameOutput {
        self.begin_frame();
        self.stats.predicted_frames += 1;
        let mut out = FrameOutput::default();
        self.expire(&mut out.events);
        for t in &self.tracks {
            if t.state == TrackState::Tracked {
                out.predicted
                    .push((t.id, t.label.clone(), t.predicted_bbox()));
            }
        }
        self.stats.predicted_boxes += out.predicted.len() as u64;
        out
    }

    /// Forgets every track (after a flush); ids keep increasing, stats are kept.
    pub fn reset(&mut self) {
        self.tracks.clear();
        self.first_frames.clear();
        self.seen_detection_frame = false;
    }

    /// Ends every confirmed track (end of stream); returns their leave events.
    pub fn finish(&mut self) -> Vec<Event> {
        let frame = self.frame;
        let mut events = Vec::new();
        for t in self.tracks.drain(..) {
            if t.state != TrackState::Tentative {
                let first = self.first_frames.remove(&t.id).unwrap_or(frame);
                events.push(Event::Leave {
                    id: t.id,
                    label: t.label,
                    bbox: t.last_bbox,
                    frames: frame - first,
                });
            }
        }
        self.first_frames.clear();
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f64, y: f64, w: f64, h: f64, score: f64) -> Detection {
        Detection {
            bbox: BBox::new(x, y, w, h),
            score,
            label: "person".into(),
        }
    }

    #[test]
    fn iou_of_boxes() {
        let a = BBox::new(0.0, 0.0, 10.0, 10.0);
        assert_eq!(a.iou(&a), 1.0);
        assert_eq!(a.iou(&BBox::new(20.0, 0.0, 10.0, 10.0)), 0.0);
        assert_eq!(
            a.iou(&BBox::new(10.0, 0.0, 10.0, 10.0)),
            0.0,
            "touching edges do not overlap"
        );
        let half = a.iou(&BBox::new(5.0, 0.0, 10.0, 10.0));
        assert!((half - 50.0 / 150.0).abs() < 1e-12);
        assert_eq!(a.iou(&BBox::new(0.0, 0.0, 0.0, 10.0)), 0.0);
    }

    #[test]
    fn hungarian_finds_the_optimum_where_greedy_does_not() {
        // Greedy takes (0,0)=1 then (1,1)=10 → 11; optimum is (0,1)+(1,0) = 2+2 = 4.
        let cost = vec![vec![1.0, 2.0], vec![2.0, 10.0]];
        assert_eq!(hungarian(&cost, 2), vec![Some(1), Some(0)]);
        // Rectangular, both ways.
        let cost = vec![vec![5.0, 1.0, 3.0]];
        assert_eq!(hungarian(&cost, 3), vec![Some(1)]);
        let cost = vec![vec![5.0], vec![1.0], vec![3.0]];
        assert_eq!(hungarian(&cost, 1), vec![None, Some(0), None]);
        assert_eq!(hungarian(&[], 3), Vec::<Option<usize>>::new());
    }

    #[test]
    fn hungarian_matches_brute_force_on_random_matrices() {
        fn best(cost: &[Vec<f64>], row: usize, used: &mut Vec<bool>) -> f64 {
            if row == cost.len() {
                return 0.0;
            }
            let mut min = f64::INFINITY;
            for c in 0..used.len() {
                if !used[c] {
                    used[c] = true;
                    min = min.min(cost[row][c] + best(cost, row + 1, used));
                    used[c] = false;
                }
            }
            min
        }
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % 1000) as f64 / 1000.0
        };
        for (rows, cols) in [(1, 1), (2, 3), (3, 3), (4, 5), (5, 5), (3, 6), (6, 6)] {
            for _ in 0..50 {
                let cost: Vec<Vec<f64>> = (0..rows)
                    .map(|_| (0..cols).map(|_| next()).collect())
                    .collect();
                let a = hungarian(&cost, cols);
                let total: f64 = a.iter().enumerate().map(|(r, c)| cost[r][c.unwrap()]).sum();
                let mut cs: Vec<usize> = a.iter().map(|c| c.unwrap()).collect();
                cs.sort_unstable();
                cs.dedup();
                assert_eq!(cs.len(), rows, "each row gets its own column");
                let optimum = best(&cost, 0, &mut vec![false; cols]);
                assert!(
                    (total - optimum).abs() < 1e-9,
                    "{rows}x{cols}: {total} vs {optimum}"
                );
            }
        }
    }

    #[test]
    fn association_gates_on_iou_and_label() {
        let t = [
            (BBox::new(0.0, 0.0, 10.0, 10.0), "a"),
            (BBox::new(100.0, 0.0, 10.0, 10.0), "a"),
        ];
        let d = [
            (BBox::new(101.0, 0.0, 10.0, 10.0), "a"),
            (BBox::new(1.0, 1.0, 10.0, 10.0), "b"),
            (BBox::new(500.0, 0.0, 10.0, 10.0), "a"),
        ];
        let (m, ut, ud) = associate(&t, &d, 0.3, true);
        assert_eq!(m, vec![(1, 0)]);
        assert_eq!(ut, vec![0]);
        assert_eq!(ud, vec![1, 2]);
        let (m, _, ud) = associate(&t, &d, 0.3, false);
        assert_eq!(m, vec![(0, 1), (1, 0)]);
        assert_eq!(ud, vec![2]);
        let (m, ..) = associate(&t, &d, 0.99, false);
        assert!(m.is_empty());
    }

    #[test]
    fn grouped_association_finds_the_global_optimum() {
        // Two clusters far apart, each needing the non-greedy assignment.
        let b = |x: f64| BBox::new(x, 0.0, 10.0, 10.0);
        let t = [
            (b(0.0), "a"),
            (b(6.0), "a"),
            (b(1000.0), "a"),
            (b(1006.0), "a"),
        ];
        let d = [
            (b(1003.0), "a"),
            (b(3.0), "a"),
            (b(7.0), "a"),
            (b(1007.0), "a"),
        ];
        let (m, ut, ud) = associate(&t, &d, 0.05, true);
        // Track 1 (x=6) fits x=7 best; track 0 (x=0) then takes x=3.
        assert_eq!(m, vec![(0, 1), (1, 2), (2, 0), (3, 3)]);
        assert!(ut.is_empty() && ud.is_empty());
    }

    #[test]
    fn ids_are_stable_for_a_moving_box() {
        let mut tr = Tracker::new(Config::default());
        let mut ids = Vec::new();
        for f in 0..50 {
            let out = tr.update(&[det(10.0 + 4.0 * f as f64, 20.0, 30.0, 60.0, 0.9)]);
            ids.extend(out.assignments.iter().map(|a| a.1));
        }
        assert_eq!(ids.len(), 50);
        assert!(ids.iter().all(|&i| i == 1));
        assert_eq!(tr.stats.created, 1);
    }

    #[test]
    fn low_confidence_detections_keep_a_track_alive_but_do_not_start_one() {
        let mut tr = Tracker::new(Config::default());
        tr.update(&[det(0.0, 0.0, 40.0, 40.0, 0.9)]);
        let out = tr.update(&[
            det(2.0, 0.0, 40.0, 40.0, 0.3),
            det(300.0, 300.0, 40.0, 40.0, 0.3),
        ]);
        assert_eq!(out.assignments, vec![(0, 1)]);
        assert_eq!(tr.stats.matched_low, 1);
        let out = tr.update(&[det(300.0, 300.0, 40.0, 40.0, 0.3)]);
        assert!(out.assignments.is_empty());
        assert_eq!(tr.stats.created, 1);
    }

    #[test]
    fn new_tracks_need_a_second_sighting_after_the_first_frame() {
        let mut tr = Tracker::new(Config::default());
        tr.update(&[]);
        let out = tr.update(&[det(0.0, 0.0, 40.0, 40.0, 0.9)]);
        assert!(
            out.assignments.is_empty() && out.events.is_empty(),
            "tentative: {out:?}"
        );
        let out = tr.update(&[det(1.0, 0.0, 40.0, 40.0, 0.9)]);
        assert_eq!(out.assignments, vec![(0, 1)]);
        assert!(matches!(out.events[..], [Event::Enter { id: 1, .. }]));
        // A one-frame false positive never gets an id.
        tr.update(&[
            det(2.0, 0.0, 40.0, 40.0, 0.9),
            det(400.0, 400.0, 40.0, 40.0, 0.9),
        ]);
        tr.update(&[det(3.0, 0.0, 40.0, 40.0, 0.9)]);
        assert_eq!(tr.stats.created, 1);
    }

    #[test]
    fn lost_tracks_are_recovered_then_expire() {
        let mut tr = Tracker::new(Config {
            max_lost_frames: 5,
            ..Config::default()
        });
        for f in 0..10 {
            tr.update(&[det(10.0 * f as f64, 0.0, 40.0, 40.0, 0.9)]);
        }
        // Missed for three frames: the prediction carries it on and the id comes back.
        for _ in 0..3 {
            tr.update(&[]);
        }
        let out = tr.update(&[det(130.0, 0.0, 40.0, 40.0, 0.9)]);
        assert_eq!(out.assignments, vec![(0, 1)]);
        // Then gone for good.
        let mut left = None;
        for _ in 0..10 {
            let out = tr.update(&[]);
            if let Some(Event::Leave { id, frames, .. }) = out.events.first() {
                left = Some((*id, *frames));
            }
        }
        assert_eq!(left.map(|l| l.0), Some(1));
        assert_eq!(tr.active(), 0);
        assert_eq!(tr.stats.lost, 1);
    }

    #[test]
    fn predict_only_frames_report_predicted_boxes() {
        let mut tr = Tracker::new(Config::default());
        for f in 0..10 {
            tr.update(&[det(5.0 * f as f64, 0.0, 40.0, 40.0, 0.9)]);
        }
        let out = tr.predict_only();
        assert_eq!(out.predicted.len(), 1);
        let (id, label, b) = &out.predicted[0];
        assert_eq!((*id, label.as_str()), (1, "person"));
        assert!((b.x - 50.0).abs() < 1.5, "predicted x {}", b.x);
    }

    #[test]
    fn class_aware_matching_keeps_labels_apart() {
        let mut tr = Tracker::new(Config::default());
        tr.update(&[det(0.0, 0.0, 40.0, 40.0, 0.9)]);
        let car = Detection {
            label: "car".into(),
            ..det(1.0, 0.0, 40.0, 40.0, 0.9)
        };
        let out = tr.update(std::slice::from_ref(&car));
        assert!(out.assignments.is_empty());
        let mut tr = Tracker::new(Config {
            class_aware: false,
            ..Config::default()
        });
        tr.update(&[det(0.0, 0.0, 40.0, 40.0, 0.9)]);
        let out = tr.update(&[car]);
        assert_eq!(out.assignments, vec![(0, 1)]);
    }

    #[test]
    fn garbage_detections_are_skipped() {
        let mut tr = Tracker::new(Config::default());
        let out = tr.update(&[
            det(0.0, 0.0, 0.0, 40.0, 0.9),
            det(0.0, 0.0, 10.0, 10.0, f64::NAN),
        ]);
        assert!(out.assignments.is_empty());
        assert_eq!(tr.stats.detections, 0);
    }
}
