//! FLV framing of RTMP media messages: the body of an RTMP audio (8) or video (9)
//! message is an FLV tag body, so the source only adds the 11-byte tag header and
//! the 4-byte back pointer (FLV spec 10, annex E), and a file header per publisher.

use bytes::{BufMut, Bytes, BytesMut};

/// FLV tag types carried from RTMP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    Audio = 8,
    Video = 9,
}

/// Largest FLV tag body (24-bit size field); RTMP messages have the same limit.
pub const MAX_TAG_BODY: usize = 0xFF_FFFF;

/// File header announcing audio and video, followed by PreviousTagSize0.
pub fn file_header() -> [u8; 13] {
    [b'F', b'L', b'V', 1, 0x05, 0, 0, 0, 9, 0, 0, 0, 0]
}

/// One tag (header, body, PreviousTagSize). `None` if the body exceeds 24 bits.
pub fn tag(kind: TagKind, timestamp_ms: u32, body: &[u8]) -> Option<Bytes> {
    if body.len() > MAX_TAG_BODY {
        return None;
    }
    let mut out = BytesMut::with_capacity(11 + body.len() + 4);
    out.put_u8(kind as u8);
    out.put_uint(body.len() as u64, 3);
    // 24 low bits, then the extension byte with the high 8 bits.
    out.put_uint((timestamp_ms & 0xFF_FFFF) as u64, 3);
    out.put_u8((timestamp_ms >> 24) as u8);
    out.put_uint(0, 3);
    out.put_slice(body);
    out.put_u32(11 + body.len() as u32);
    Some(out.freeze())
}

/// A parsed tag, for tests and benchmarks that read FLV back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedTag {
    pub kind: u8,
    pub timestamp_ms: u32,
    pub body: Vec<u8>,
}

/// Reads one tag from the start of `data`: the tag and the bytes it used, or
/// `None` if `data` is too short or its back pointer does not match.
pub fn parse_tag(data: &[u8]) -> Option<(ParsedTag, usize)> {
    if data.len() < 15 {
        return None;
    }
    let size = u32::from_be_bytes([0, data[1], data[2], data[3]]) as usize;
    let ts = u32::from_be_bytes([data[7], data[4], data[5], data[6]]);
    let end = 11 + size;
    if data.len() < end + 4 {
        return None;
    }
    let back = u32::from_be_bytes(data[end..end + 4].try_into().ok()?) as usize;
    if back != end {
        return None;
    }
    Some((
        ParsedTag {
            kind: data[0],
            timestamp_ms: ts,
            body: data[11..end].to_vec(),
        },
        end + 4,
    ))
}

/// Extends 32-bit RTMP timestamps (milliseconds, wrapping every 49.7 days) to 64
/// bits: a step back of more than half the range is a wrap, anything else is
/// taken as it comes (audio and video may interleave slightly out of order).
#[derive(Debug, Default, Clone)]
pub struct Unwrapper {
    last: Option<u32>,
    epoch: u64,
}

impl Unwrapper {
    pub fn unwrap(&mut self, ts: u32) -> u64 {
        if let Some(last) = self.last {
            let diff = ts.wrapping_sub(last) as i32;
            if diff > 0 && ts < last {
                // Forward across the wrap.
                self.epoch += 1 << 32;
            } else if diff < 0 && ts > last && self.epoch >= 1 << 32 {
                // A late message from before the wrap: keep it in the old epoch.
                return (self.epoch - (1 << 32)) + ts as u64;
            }
        }
        self.last = Some(ts);
        self.epoch + ts as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn tags_round_trip(kind in prop_oneof![Just(TagKind::Audio), Just(TagKind::Video)],
                           ts in any::<u32>(),
                           body in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let bytes = tag(kind, ts, &body).unwrap();
            let (parsed, used) = parse_tag(&bytes).unwrap();
            prop_assert_eq!(used, bytes.len());
            prop_assert_eq!(parsed.kind, kind as u8);
            prop_assert_eq!(parsed.timestamp_ms, ts);
            prop_assert_eq!(parsed.body, body);
        }

        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_tag(&data);
        }

        #[test]
        fn unwrapped_timestamps_are_monotonic_across_wraps(start in any::<u32>(),
                                                            steps in proptest::collection::vec(0u32..100_000, 1..200)) {
            let mut u = Unwrapper::default();
            let mut ts = start;
            let mut last = u.unwrap(ts);
            for step in steps {
                ts = ts.wrapping_add(step);
                let now = u.unwrap(ts);
                prop_assert_eq!(now, last + step as u64);
                last = now;
            }
        }
    }

    #[test]
    fn oversized_body_is_refused() {
        assert!(tag(TagKind::Video, 0, &vec![0; MAX_TAG_BODY + 1]).is_none());
    }

    #[test]
    fn a_late_message_from_before_the_wrap_stays_before_it() {
        let mut u = Unwrapper::default();
        assert_eq!(u.unwrap(u32::MAX - 10), u32::MAX as u64 - 10);
        assert_eq!(u.unwrap(5), (1 << 32) + 5);
        assert_eq!(u.unwrap(u32::MAX - 2), u32::MAX as u64 - 2);
        assert_eq!(u.unwrap(20), (1 << 32) + 20);
    }
}
