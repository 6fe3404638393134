//! Counts pictures in an H.264 Annex-B byte stream that arrives in arbitrary
//! chunks (`ffmpegsrc`'s `frames` counter and `first_frame_ingested`): a
//! picture starts at a coded slice NAL (type 1 or 5) whose `first_mb_in_slice`
//! is 0, i.e. whose slice header's first bit is 1. Start codes and headers may
//! be split across chunks.

#[derive(Debug, Default, Clone)]
pub struct PictureCounter {
    /// Zero bytes seen in a row (capped at 3).
    zeros: u8,
    /// After a start code: waiting for the NAL header (1) or the slice's first byte (2).
    pending: u8,
    /// Pictures counted so far.
    pictures: u64,
    /// Key pictures (IDR slices) counted so far.
    idr: u64,
    last_was_idr: bool,
}

impl PictureCounter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn pictures(&self) -> u64 {
        self.pictures
    }

    pub fn key_pictures(&self) -> u64 {
        self.idr
    }

    /// Feeds the next chunk; returns how many pictures started in it.
    pub fn push(&mut self, data: &[u8]) -> u64 {
        let before = self.pictures;
        for &b in data {
            match self.pending {
                1 => {
                    let kind = b & 0x1f;
                    if kind == 1 || kind == 5 {
                        self.pending = 2;
                        self.last_was_idr = kind == 5;
                    } else {
                        self.pending = 0;
                    }
                }
                2 => {
                    self.pending = 0;
                    if b & 0x80 != 0 {
                        self.pictures += 1;
                        if self.last_was_idr {
                            self.idr += 1;
                        }
                    }
                }
                _ => {}
            }
            if b == 0 {
                self.zeros = (self.zeros + 1).min(3);
                // A zero inside the header bytes is not a header: resync.
                self.pending = 0;
            } else {
                if b == 1 && self.zeros >= 2 {
                    self.pending = 1;
                }
                self.zeros = 0;
            }
        }
        self.pictures - before
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// SPS, PPS, IDR slice, then two P pictures of two slices each.
    fn stream() -> Vec<u8> {
        let mut s = Vec::new();
        s.extend_from_slice(&[0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1e]);
        s.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80]);
        s.extend_from_slice(&[0, 0, 0, 1, 0x65, 0x88, 0x84, 0x00, 0x33]);
        for _ in 0..2 {
            s.extend_from_slice(&[0, 0, 1, 0x41, 0x9a, 0x21, 0x4c]);
            // Second slice: first_mb_in_slice != 0 (first bit 0).
            s.extend_from_slice(&[0, 0, 1, 0x41, 0x01, 0x21]);
        }
        s
    }

    #[test]
    fn counts_pictures_not_slices_or_parameter_sets() {
        let mut c = PictureCounter::new();
        assert_eq!(c.push(&stream()), 3);
        assert_eq!(c.key_pictures(), 1);
    }

    proptest! {
        /// However the stream is cut into chunks, the count is the same.
        #[test]
        fn chunking_does_not_matter(cuts in prop::collection::vec(0usize..40, 0..10)) {
            let s = stream();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(s.len())).collect();
            cuts.sort();
            let mut c = PictureCounter::new();
            let mut at = 0;
            for cut in cuts.into_iter().chain([s.len()]) {
                c.push(&s[at..cut]);
                at = cut;
            }
            prop_assert_eq!(c.pictures(), 3);
            prop_assert_eq!(c.key_pictures(), 1);
        }

        #[test]
        fn garbage_never_panics(data in prop::collection::vec(any::<u8>(), 0..512)) {
            let mut c = PictureCounter::new();
            let n = c.push(&data);
            prop_assert!(n as usize <= data.len() / 5 + 1);
        }
    }
}
