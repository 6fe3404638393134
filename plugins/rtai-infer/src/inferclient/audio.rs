//! Audio collection: samples gathered into fixed chunks (`chunk-duration`) or,
//! when buffers carry segment ids, into one piece per speech segment.

/// Audio ready to send: interleaved S16LE samples, the first PTS, the end, the segment.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Collected {
    pub(super) samples: Vec<u8>,
    pub(super) pts: Option<gst::ClockTime>,
    pub(super) end: Option<gst::ClockTime>,
    pub(super) segment: Option<u64>,
}

/// The chunk or segment being collected.
#[derive(Debug, Default)]
pub(super) struct AudioCollector {
    current: Collected,
}

impl AudioCollector {
    /// Adds a buffer's samples. Returns what is complete now: the previous segment's
    /// audio when a new segment begins, and the chunk when it is `chunk` long
    /// (without segments; with them, the segment's end sends it, see [`Self::take`]).
    pub(super) fn push(
        &mut self,
        segment: Option<u64>,
        pts: Option<gst::ClockTime>,
        duration: Option<gst::ClockTime>,
        data: &[u8],
        chunk: gst::ClockTime,
    ) -> Vec<Collected> {
        let mut ready = Vec::new();
        let c = &mut self.current;
        if segment.is_some() && segment != c.segment && !c.samples.is_empty() {
            ready.extend(self.take());
        }
        let c = &mut self.current;
        if c.samples.is_empty() {
            c.pts = pts;
        }
        c.segment = segment.or(c.segment);
        c.end = pts.zip(duration).map(|(p, d)| p + d).or(c.end);
        c.samples.extend_from_slice(data);
        let full = segment.is_none()
            && c.pts
                .zip(c.end)
                .is_some_and(|(s, e)| e.saturating_sub(s) >= chunk);
        if full {
            ready.extend(self.take());
        }
        ready
    }

    /// Ends the current chunk or segment: its audio, `None` when there is none.
    pub(super) fn take(&mut self) -> Option<Collected> {
        let c = std::mem::take(&mut self.current);
        (!c.samples.is_empty()).then_some(c)
    }

    /// Drops the audio of segment `id` if it is the one being collected.
    pub(super) fn cancel(&mut self, id: u64) -> bool {
        if self.current.segment == Some(id) {
            self.current = Collected::default();
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Option<gst::ClockTime> {
        Some(gst::ClockTime::from_mseconds(v))
    }

    #[test]
    fn fixed_chunks_without_segments() {
        let mut a = AudioCollector::default();
        let chunk = gst::ClockTime::from_mseconds(30);
        assert!(a.push(None, ms(0), ms(10), &[1, 2], chunk).is_empty());
        assert!(a.push(None, ms(10), ms(10), &[3, 4], chunk).is_empty());
        let done = a.push(None, ms(20), ms(10), &[5, 6], chunk);
        assert_eq!(
            done,
            vec![Collected {
                samples: vec![1, 2, 3, 4, 5, 6],
                pts: ms(0),
                end: ms(30),
                segment: None
            }]
        );
        assert_eq!(a.take(), None, "nothing left");
    }

    #[test]
    fn a_segment_is_sent_whole_when_the_next_begins_or_it_ends() {
        let mut a = AudioCollector::default();
        let chunk = gst::ClockTime::from_mseconds(10);
        // Longer than a chunk: segments are not cut.
        for i in 0..5 {
            assert!(
                a.push(Some(1), ms(i * 10), ms(10), &[i as u8], chunk)
                    .is_empty()
            );
        }
        let done = a.push(Some(2), ms(50), ms(10), &[9], chunk);
        assert_eq!(done.len(), 1);
        assert_eq!(
            (
                done[0].samples.as_slice(),
                done[0].pts,
                done[0].end,
                done[0].segment
            ),
            (&[0, 1, 2, 3, 4][..], ms(0), ms(50), Some(1))
        );
        let last = a.take().unwrap();
        assert_eq!((last.samples, last.segment), (vec![9], Some(2)));
    }

    #[test]
    fn a_cancel_drops_only_its_own_segment() {
        let mut a = AudioCollector::default();
        let chunk = gst::ClockTime::from_seconds(5);
        a.push(Some(3), ms(0), ms(10), &[1], chunk);
        assert!(!a.cancel(4));
        assert!(a.cancel(3));
        assert_eq!(a.take(), None);
    }
}
