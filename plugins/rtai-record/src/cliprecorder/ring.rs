//! The pre-roll ring of encoded frames and the clips waiting for their end.
//!
//! Pure bookkeeping over running times (ns), generic over what a frame carries
//! (`gst::Buffer` in the element, plain numbers in the unit tests):
//!
//! - frames are kept in GOPs (a key frame and the delta frames after it); a delta
//!   frame before the first key frame cannot be decoded and is dropped;
//! - the ring keeps at least `pre_roll` before the newest frame, from a key frame,
//!   and everything from the GOP holding the start of a clip still waiting;
//! - a marker `[start, end]` becomes a pending clip `[start, end + post_roll]`
//!   (at most `max_duration` long); markers overlapping a pending clip merge into it;
//! - a pending clip is complete when a frame after its end arrives (or at
//!   [`Ring::finish`]): its frames run from the last key frame at or before its
//!   start (the ring's oldest when it starts earlier) to the last frame at or
//!   before its end.

use std::collections::VecDeque;

/// One encoded frame: its running time (PTS), end (running time + duration) and key-frame flag.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame<B> {
    pub buf: B,
    pub rt: u64,
    pub end: u64,
    pub key: bool,
}

/// A clip marker as it arrived (running times in ns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub start: u64,
    pub end: u64,
    pub reason: String,
    /// The event the marker is about (analyticssink's `source`: the scored event's id), may be empty.
    pub source: String,
    /// The clip event's own id (`event-id`, when the marker carries it), may be empty.
    pub event_id: String,
}

/// A clip waiting for frames up to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub start: u64,
    /// Marker end plus post-roll.
    pub end: u64,
    pub markers: Vec<Marker>,
}

/// A complete clip: its frames (from a key frame) and the markers merged into it.
#[derive(Debug, Clone, PartialEq)]
pub struct Clip<B> {
    pub frames: Vec<Frame<B>>,
    /// Running time of the first frame (a key frame).
    pub start: u64,
    /// End running time of the last frame.
    pub end: u64,
    /// The requested bounds: earliest marker start, latest marker end + post-roll.
    pub requested_start: u64,
    pub requested_end: u64,
    pub markers: Vec<Marker>,
}

impl<B> Clip<B> {
    /// The markers' reasons, each once, joined with `+` (e.g. `speech+object_appear`).
    pub fn reason(&self) -> String {
        let mut seen: Vec<&str> = Vec::new();
        for m in &self.markers {
            if !seen.contains(&m.reason.as_str()) {
                seen.push(&m.reason);
            }
        }
        seen.join("+")
    }
}

/// What became of a marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marked {
    /// A new pending clip.
    New,
    /// Merged into a pending clip.
    Merged,
    /// Refused: end before start.
    Invalid,
}

#[derive(Debug)]
pub struct Ring<B> {
    gops: VecDeque<Vec<Frame<B>>>,
    pending: Vec<Pending>,
    pub pre_roll: u64,
    pub post_roll: u64,
    pub max_duration: u64,
    newest: Option<u64>,
    /// Delta frames dropped because no key frame came before them.
    pub dropped_undecodable: u64,
}

impl<B: Clone> Ring<B> {
    pub fn new(pre_roll: u64, post_roll: u64, max_duration: u64) -> Self {
        Self {
            gops: VecDeque::new(),
            pending: Vec::new(),
            pre_roll,
            post_roll,
            max_duration: max_duration.max(1),
            newest: None,
            dropped_undecodable: 0,
        }
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.gops.iter().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.gops.is_empty()
    }

    /// Running time of the oldest frame held.
    pub fn oldest(&self) -> Option<u64> {
        self.gops.front().and_then(|g| g.first()).map(|f| f.rt)
    }

    pub fn pending(&self) -> &[Pending] {
        &self.pending
    }

    /// Adds a marker; overlapping pending clips (touching counts) merge into one.
    pub fn mark(&mut self, marker: Marker) -> Marked {
        if marker.end < marker.start {
            return Marked::Invalid;
        }
        let start = marker.start;
        let end = marker
            .end
            .saturating_add(self.post_roll)
            .min(start.saturating_add(self.max_duration));
        let mut merged = Pending {
            start,
            end,
            markers: vec![marker],
        };
        let mut was_merged = false;
        let mut kept = Vec::with_capacity(self.pending.len() + 1);
        for p in self.pending.drain(..) {
            if p.start <= merged.end && merged.start <= p.end {
                merged.start = merged.start.min(p.start);
                merged.end = merged.end.max(p.end);
                let mut markers = p.markers;
                markers.append(&mut merged.markers);
                merged.markers = markers;
                was_merged = true;
            } else {
                kept.push(p);
            }
        }
        merged.end = merged
            .end
            .min(merged.start.saturating_add(self.max_duration));
        kept.push(merged);
        kept.sort_by_key(|p| p.start);
        self.pending = kept;
        if was_merged {
            Marked::Merged
        } else {
            Marked::New
        }
    }

    /// Adds a frame (in decode order); returns the clips it completed.
    pub fn push(&mut self, frame: Frame<B>) -> Vec<Clip<B>> {
        let mut done = Vec::new();
        while let Some(p) = self.pending.first() {
            if frame.rt > p.end {
                let p = self.pending.remove(0);
                if let Some(clip) = self.collect(p) {
                    done.push(clip);
                }
            } else {
                break;
            }
        }
        self.newest = Some(self.newest.map_or(frame.rt, |n| n.max(frame.rt)));
        if frame.key {
            self.gops.push_back(vec![frame]);
        } else if let Some(gop) = self.gops.back_mut() {
            gop.push(frame);
        } else {
            self.dropped_undecodable += 1;
        }
        self.evict();
        done
    }

    /// Completes every pending clip with the frames there are (EOS, caps change, stop)
    /// and empties the ring.
    pub fn finish(&mut self) -> Vec<Clip<B>> {
        let pending = std::mem::take(&mut self.pending);
        let clips = pending
            .into_iter()
            .filter_map(|p| self.collect(p))
            .collect();
        self.gops.clear();
        self.newest = None;
        clips
    }

    fn evict(&mut self) {
        let Some(newest) = self.newest else { return };
        let mut cutoff = newest.saturating_sub(self.pre_roll);
        if let Some(p) = self.pending.first() {
            cutoff = cutoff.min(p.start);
        }
        while self.gops.len() > 1 && self.gops[1][0].rt <= cutoff {
            self.gops.pop_front();
        }
    }

    fn collect(&self, p: Pending) -> Option<Clip<B>> {
        let first = self
            .gops
            .iter()
            .rposition(|g| g[0].rt <= p.start)
            .unwrap_or(0);
        let frames: Vec<Frame<B>> = self
            .gops
            .iter()
            .skip(first)
            .flatten()
            .filter(|f| f.rt <= p.end)
            .cloned()
            .collect();
        let start = frames.first()?.rt;
        let end = frames.iter().map(|f| f.end).max().unwrap_or(start);
        Some(Clip {
            frames,
            start,
            end,
            requested_start: p.start,
            requested_end: p.end,
            markers: p.markers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;

    /// 10 fps frames, a key frame every `gop` frames.
    fn frame(i: u64, gop: u64) -> Frame<u64> {
        Frame {
            buf: i,
            rt: i * 100 * MS,
            end: (i + 1) * 100 * MS,
            key: i.is_multiple_of(gop),
        }
    }

    fn marker(start: u64, end: u64, reason: &str) -> Marker {
        Marker {
            start,
            end,
            reason: reason.into(),
            source: String::new(),
            event_id: String::new(),
        }
    }

    #[test]
    fn keeps_pre_roll_from_a_key_frame() {
        let mut ring = Ring::new(2 * S, S, 60 * S);
        for i in 0..100 {
            assert!(ring.push(frame(i, 10)).is_empty());
        }
        // Newest at 9.9 s: 2 s back is 7.9 s, inside the GOP starting at 7 s.
        assert_eq!(ring.oldest(), Some(7 * S));
        assert_eq!(ring.len(), 30);
    }

    #[test]
    fn clip_from_key_frame_before_start_to_end_plus_post_roll() {
        let mut ring = Ring::new(5 * S, S, 60 * S);
        for i in 0..60 {
            ring.push(frame(i, 10));
        }
        // Marker 4.5 s .. 5.5 s: from the key frame at 4 s to 6.5 s.
        assert_eq!(
            ring.mark(marker(4500 * MS, 5500 * MS, "speech")),
            Marked::New
        );
        let mut clips = Vec::new();
        for i in 60..80 {
            clips.extend(ring.push(frame(i, 10)));
        }
        assert_eq!(clips.len(), 1);
        let c = &clips[0];
        assert_eq!(c.start, 4 * S);
        assert!(c.frames[0].key);
        assert_eq!(c.frames.last().unwrap().rt, 6500 * MS);
        assert_eq!(c.end, 6600 * MS);
        assert_eq!(c.frames.len(), 26);
        assert_eq!(c.reason(), "speech");
    }

    #[test]
    fn overlapping_markers_merge() {
        let mut ring = Ring::new(5 * S, S, 60 * S);
        for i in 0..50 {
            ring.push(frame(i, 10));
        }
        assert_eq!(ring.mark(marker(3 * S, 4 * S, "speech")), Marked::New);
        // Starts before the first one's end + post-roll (5 s): one clip.
        assert_eq!(
            ring.mark(marker(4800 * MS, 5200 * MS, "object_appear")),
            Marked::Merged
        );
        assert_eq!(ring.mark(marker(3 * S, 3 * S, "speech")), Marked::Merged);
        // Far later: its own clip.
        assert_eq!(ring.mark(marker(20 * S, 21 * S, "scene")), Marked::New);
        assert_eq!(ring.pending().len(), 2);
        let mut clips = Vec::new();
        for i in 50..250 {
            clips.extend(ring.push(frame(i, 10)));
        }
        assert_eq!(clips.len(), 2);
        assert_eq!((clips[0].start, clips[0].end), (3 * S, 6300 * MS));
        assert_eq!(clips[0].reason(), "speech+object_appear");
        assert_eq!(clips[0].markers.len(), 3);
        assert_eq!((clips[1].start, clips[1].end), (20 * S, 22100 * MS));
    }

    #[test]
    fn pending_clip_holds_frames_beyond_pre_roll() {
        let mut ring = Ring::new(S, S, 60 * S);
        for i in 0..20 {
            ring.push(frame(i, 10));
        }
        ring.mark(marker(1500 * MS, 8 * S, "speech"));
        let mut clips = Vec::new();
        for i in 20..100 {
            clips.extend(ring.push(frame(i, 10)));
        }
        assert_eq!(clips.len(), 1);
        assert_eq!(clips[0].start, S);
        assert_eq!(clips[0].frames.len(), 81);
        // Afterwards the ring shrinks back to its pre-roll.
        assert!(ring.oldest().unwrap() >= 8 * S);
    }

    #[test]
    fn marker_older_than_the_ring_starts_at_its_oldest_key_frame() {
        let mut ring = Ring::new(S, 0, 60 * S);
        for i in 0..50 {
            ring.push(frame(i, 10));
        }
        ring.mark(marker(0, 4500 * MS, "scene"));
        let clips = ring.push(frame(50, 10));
        assert_eq!(clips.len(), 1);
        assert_eq!(clips[0].start, 3 * S);
        assert_eq!(clips[0].requested_start, 0);
    }

    #[test]
    fn invalid_and_unbounded_markers() {
        let mut ring: Ring<u64> = Ring::new(S, S, 10 * S);
        assert_eq!(ring.mark(marker(5 * S, 4 * S, "x")), Marked::Invalid);
        assert!(ring.pending().is_empty());
        ring.mark(marker(S, u64::MAX, "x"));
        assert_eq!(ring.pending()[0].end, 11 * S);
    }

    #[test]
    fn finish_flushes_pending_and_drops_undecodable_start() {
        let mut ring = Ring::new(S, 5 * S, 60 * S);
        ring.push(frame(1, 10));
        assert_eq!(ring.dropped_undecodable, 1);
        for i in 10..15 {
            ring.push(frame(i, 10));
        }
        ring.mark(marker(S, 1200 * MS, "speech"));
        let clips = ring.finish();
        assert_eq!(clips.len(), 1);
        assert_eq!(clips[0].frames.len(), 5);
        assert!(ring.is_empty());
    }

    proptest! {
        /// Whatever the markers and GOP length: every clip starts on a key frame at or
        /// before its requested start (or the ring's oldest), frames stay in order,
        /// pending clips never overlap, and the ring stays bounded.
        #[test]
        fn clips_start_on_key_frames(
            gop in 1u64..40,
            markers in proptest::collection::vec((0u64..400, 0u64..60, 0u64..400), 0..12),
        ) {
            let mut ring = Ring::new(2 * S, S, 8 * S);
            let mut clips = Vec::new();
            let mut m = markers.iter().peekable();
            for i in 0..400u64 {
                while let Some((at, len, start)) = m.peek().copied() {
                    if *at > i { break; }
                    m.next();
                    let start = start * 100 * MS;
                    ring.mark(marker(start, start + len * 100 * MS, "r"));
                    // Pending clips never overlap: overlapping markers merged.
                    prop_assert!(ring.pending().windows(2).all(|w| w[0].end < w[1].start));
                }
                clips.extend(ring.push(frame(i, gop)));
                // Pre-roll + max duration + a GOP, at 10 fps.
                prop_assert!(ring.len() as u64 <= 20 + 80 + 10 + gop + 1);
            }
            clips.extend(ring.finish());
            for c in &clips {
                prop_assert!(c.frames[0].key);
                prop_assert_eq!(c.start, c.frames[0].rt);
                prop_assert!(c.frames.windows(2).all(|w| w[0].rt < w[1].rt));
                prop_assert!(c.frames.iter().all(|f| f.rt <= c.requested_end));
                prop_assert!(c.requested_end - c.requested_start <= 8 * S);
            }
        }
    }
}
