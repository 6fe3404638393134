//! Per-object (secondary) inference: which ROIs of a frame are sent (`roi-classes`,
//! `roi-min-size`), their crops, and the per-track memory behind `reclassify-interval`
//! (objtracker's ids). Pure functions over plain values: testable without a network.

use std::collections::HashMap;

use crate::postprocess::Class;
use crate::preprocess::Rgb;

/// The most ROIs of one frame sent in one request (the rest wait for a later frame).
pub(super) const MAX_ROI_BATCH: usize = 64;
/// The most tracks remembered; the longest-unseen go first.
const MAX_TRACKS: usize = 4096;

/// A ROI as the frame carries it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Candidate {
    pub(super) label: String,
    pub(super) rect: (u32, u32, u32, u32),
    /// The tracker's id (`object_id` param), when a tracker ran upstream.
    pub(super) track: Option<i32>,
}

/// A ROI sent for inference: its place among the frame's ROI metas, its track, its crop.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Target {
    pub(super) index: usize,
    pub(super) track: Option<i32>,
    pub(super) rect: (u32, u32, u32, u32),
}

/// The ROI metas of `buffer`, in order.
pub(super) fn candidates(buffer: &gst::BufferRef) -> Vec<Candidate> {
    buffer
        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .map(|m| Candidate {
            label: m.roi_type().to_string(),
            rect: m.rect(),
            track: m
                .param(rtai_core::inference::OBJECT_ID_PARAM)
                .and_then(|p| p.get::<i32>("id").ok()),
        })
        .collect()
}

/// `roi-classes` as a list (comma-separated, blanks dropped).
pub(super) fn parse_classes(text: &str) -> Vec<String> {
    text.split(',')
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect()
}

/// What the last request for a track was and said.
#[derive(Debug, Clone, Default)]
struct Track {
    requested: u64,
    classes: Option<Vec<Class>>,
}

/// The per-track memory: when each tracked object was last sent, and its answer.
#[derive(Debug, Default)]
pub(super) struct Tracks {
    tracks: HashMap<i32, Track>,
}

impl Tracks {
    /// A request for `track` went out at `frame`.
    pub(super) fn requested(&mut self, track: i32, frame: u64) {
        if self.tracks.len() >= MAX_TRACKS && !self.tracks.contains_key(&track) {
            let oldest = self
                .tracks
                .iter()
                .min_by_key(|(_, t)| t.requested)
                .map(|(id, _)| *id);
            if let Some(id) = oldest {
                self.tracks.remove(&id);
            }
        }
        self.tracks.entry(track).or_default().requested = frame;
    }

    /// The answer for `track` came.
    pub(super) fn answered(&mut self, track: i32, classes: Vec<Class>) {
        if let Some(t) = self.tracks.get_mut(&track) {
            t.classes = Some(classes);
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.tracks.len()
    }
}

/// `roi-classes`, `roi-min-size` and `reclassify-interval`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Rules {
    pub(super) classes: Vec<String>,
    pub(super) min_size: u32,
    pub(super) interval: u32,
}

/// The frame's plan: ROIs to send, and ROIs that get their track's last answer again.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Plan {
    pub(super) send: Vec<Target>,
    pub(super) cached: Vec<(usize, Vec<Class>)>,
}

/// Which ROIs of frame number `frame` (`size` its width and height) to send: those whose
/// label is in `rules.classes`, at least `min_size` wide and high inside the frame, and (when
/// tracked) not sent within the last `interval` frames; a tracked ROI sent lately gets its
/// last answer again (none while that answer is still on its way). `due`: whether this
/// frame may send at all (`interval`, `min-interval-ms`); when not, only the cache speaks.
pub(super) fn plan(
    candidates: &[Candidate],
    rules: &Rules,
    size: (u32, u32),
    tracks: &Tracks,
    frame: u64,
    due: bool,
) -> Plan {
    let (min_size, interval) = (rules.min_size, rules.interval);
    let mut plan = Plan::default();
    for (index, c) in candidates.iter().enumerate() {
        if !rules.classes.contains(&c.label) {
            continue;
        }
        let Some(rect) = clip(c.rect, size).filter(|r| r.2 >= min_size && r.3 >= min_size) else {
            continue;
        };
        let recent = c
            .track
            .and_then(|id| tracks.tracks.get(&id))
            .filter(|t| frame.saturating_sub(t.requested) < interval.max(1) as u64);
        match recent {
            Some(t) => {
                if let Some(classes) = &t.classes {
                    plan.cached.push((index, classes.clone()));
                }
            }
            None if due && plan.send.len() < MAX_ROI_BATCH => plan.send.push(Target {
                index,
                track: c.track,
                rect,
            }),
            None => {}
        }
    }
    plan
}

/// `rect` cut to the frame; `None` when nothing of it is inside.
fn clip(rect: (u32, u32, u32, u32), (fw, fh): (u32, u32)) -> Option<(u32, u32, u32, u32)> {
    let (x, y, w, h) = rect;
    let (x2, y2) = (x.saturating_add(w).min(fw), y.saturating_add(h).min(fh));
    (x < x2 && y < y2).then(|| (x, y, x2 - x, y2 - y))
}

/// The pixels of `rect` (inside the frame, as `plan` gives it).
pub(super) fn crop(rgb: &Rgb, rect: (u32, u32, u32, u32)) -> Rgb {
    let (x, y, w, h) = rect;
    let stride = rgb.width as usize * 3;
    let mut data = Vec::with_capacity(w as usize * h as usize * 3);
    for row in y..y + h {
        let start = row as usize * stride + x as usize * 3;
        data.extend_from_slice(&rgb.data[start..start + w as usize * 3]);
    }
    Rgb {
        width: w,
        height: h,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(label: &str, rect: (u32, u32, u32, u32), track: Option<i32>) -> Candidate {
        Candidate {
            label: label.into(),
            rect,
            track,
        }
    }

    fn class(label: &str) -> Vec<Class> {
        vec![Class {
            class_id: 0,
            label: label.into(),
            score: 0.9,
        }]
    }

    #[test]
    fn plan_picks_classes_sizes_and_tracks() {
        let classes = parse_classes(" car, person ,");
        assert_eq!(classes, ["car", "person"]);
        let rules = |interval| Rules {
            classes: classes.clone(),
            min_size: 16,
            interval,
        };
        let frame = [
            c("car", (0, 0, 40, 40), None),
            c("dog", (0, 0, 40, 40), None),
            c("person", (10, 10, 8, 40), None),
            // Mostly outside the 100x100 frame: what is inside is too small.
            c("person", (95, 0, 40, 40), None),
            c("person", (50, 50, 80, 80), Some(7)),
        ];
        let mut tracks = Tracks::default();
        let p = plan(&frame, &rules(5), (100, 100), &tracks, 1, true);
        assert_eq!(
            p.send,
            vec![
                Target {
                    index: 0,
                    track: None,
                    rect: (0, 0, 40, 40)
                },
                Target {
                    index: 4,
                    track: Some(7),
                    rect: (50, 50, 50, 50)
                },
            ]
        );
        assert!(p.cached.is_empty());
        // Track 7 sent at frame 1: not again before frame 6; nothing to repeat while pending.
        tracks.requested(7, 1);
        let p = plan(&frame, &rules(5), (100, 100), &tracks, 2, true);
        assert_eq!(p.send.iter().map(|t| t.index).collect::<Vec<_>>(), [0]);
        assert!(p.cached.is_empty());
        tracks.answered(7, class("old"));
        let p = plan(&frame, &rules(5), (100, 100), &tracks, 5, true);
        assert_eq!(p.cached, vec![(4, class("old"))]);
        let p = plan(&frame, &rules(5), (100, 100), &tracks, 6, true);
        assert_eq!(p.send.iter().map(|t| t.index).collect::<Vec<_>>(), [0, 4]);
        // A frame that is not due sends nothing, but the cache still speaks.
        let p = plan(&frame, &rules(5), (100, 100), &tracks, 3, false);
        assert_eq!((p.send.len(), p.cached.len()), (0, 1));
        // interval 1 (or 0): every frame.
        let p = plan(&frame, &rules(1), (100, 100), &tracks, 2, true);
        assert_eq!(p.send.len(), 2);
    }

    #[test]
    fn the_track_memory_is_bounded() {
        let mut tracks = Tracks::default();
        for id in 0..(MAX_TRACKS as i32 + 10) {
            tracks.requested(id, id as u64);
        }
        assert_eq!(tracks.len(), MAX_TRACKS);
        assert!(!tracks.tracks.contains_key(&0) && tracks.tracks.contains_key(&4105));
    }

    #[test]
    fn crops_are_the_rect_pixels() {
        let rgb = Rgb {
            width: 4,
            height: 3,
            data: (0..36).collect(),
        };
        let c = crop(&rgb, (1, 1, 2, 2));
        assert_eq!((c.width, c.height), (2, 2));
        assert_eq!(c.data, [15, 16, 17, 18, 19, 20, 27, 28, 29, 30, 31, 32]);
    }
}
