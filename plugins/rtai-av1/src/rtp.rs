//! The AV1 RTP payload format (AOMedia "RTP Payload Format For AV1", v1.0):
//! the aggregation header and OBU elements, as pure functions the payloader
//! and depayloader elements wrap.
//!
//! ```text
//!  0 1 2 3 4 5 6 7
//! +-+-+-+-+-+-+-+-+
//! |Z|Y| W |N|-|-|-|   aggregation header, then OBU elements:
//! +-+-+-+-+-+-+-+-+   W = 0: every element has a LEB128 length;
//!                     W = 1..3: that many elements, the last without length.
//! ```
//! Z: the first element continues an OBU fragmented in the previous packet.
//! Y: the last element continues in the next packet.
//! N: the packet is the first of a coded video sequence.
//! OBUs travel without their size field and temporal delimiters, tile lists
//! and padding OBUs are not sent.

use std::fmt;

use crate::obu::{self, Obu};

pub const AGGR_Z: u8 = 0x80;
pub const AGGR_Y: u8 = 0x40;
pub const AGGR_N: u8 = 0x08;

/// The smallest payload the packetizer can fill: header, length byte, one byte.
pub const MIN_PAYLOAD: usize = 3;

/// Largest temporal unit the depacketizer assembles (a 8K key frame at a very
/// high quality stays well below this).
pub const MAX_TU_SIZE: usize = 64 * 1024 * 1024;

/// Whether an OBU travels over RTP (section 5 of the payload format).
pub fn is_sent(obu_type: u8) -> bool {
    !matches!(
        obu_type,
        obu::OBU_TEMPORAL_DELIMITER | obu::OBU_TILE_LIST | obu::OBU_PADDING
    )
}

/// One RTP payload and whether it ends the temporal unit (the marker bit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub data: Vec<u8>,
    pub marker: bool,
}

struct Building {
    /// (element bytes, is fragment continuing in next packet)
    elements: Vec<Vec<u8>>,
    /// Size with a length field on every element.
    size: usize,
    z: bool,
}

impl Building {
    fn new(z: bool) -> Self {
        Self {
            elements: Vec::new(),
            size: 1,
            z,
        }
    }

    fn finish(self, y: bool, n: bool) -> Vec<u8> {
        let count = self.elements.len();
        let w = if count <= 3 { count as u8 } else { 0 };
        let mut out = Vec::with_capacity(self.size);
        out.push(
            if self.z { AGGR_Z } else { 0 }
                | if y { AGGR_Y } else { 0 }
                | (w << 4)
                | if n { AGGR_N } else { 0 },
        );
        for (i, e) in self.elements.iter().enumerate() {
            if w == 0 || i + 1 < count {
                obu::write_leb128(e.len() as u64, &mut out);
            }
            out.extend_from_slice(e);
        }
        out
    }
}

/// Splits one temporal unit's OBUs into RTP payloads of at most `max_payload`
/// bytes. `new_sequence` sets N on the first packet (a key frame with its
/// sequence header). OBUs that are not sent over RTP are left out.
/// Returns no payload when the unit holds nothing to send.
pub fn packetize(obus: &[Obu<'_>], max_payload: usize, new_sequence: bool) -> Vec<Payload> {
    let max_payload = max_payload.max(MIN_PAYLOAD);
    let mut packets: Vec<Vec<u8>> = Vec::new();
    let mut current = Building::new(false);
    for obu in obus.iter().filter(|o| is_sent(o.obu_type)) {
        let mut element = Vec::with_capacity(obu.unsized_len());
        obu.write_unsized(&mut element);
        let mut rest: &[u8] = &element;
        while !rest.is_empty() {
            let available = max_payload - current.size;
            let whole = obu::leb128_len(rest.len() as u64) + rest.len();
            if whole <= available {
                current.size += whole;
                current.elements.push(rest.to_vec());
                break;
            }
            // Fragment: the largest piece whose length field and bytes fit.
            let mut piece = available.saturating_sub(obu::leb128_len(available as u64));
            while piece > 0 && obu::leb128_len(piece as u64) + piece > available {
                piece -= 1;
            }
            if piece == 0 {
                // No room left here: close the packet and start a fresh one.
                let full = std::mem::replace(&mut current, Building::new(false));
                packets.push(full.finish(false, false));
                continue;
            }
            current.size += obu::leb128_len(piece as u64) + piece;
            current.elements.push(rest[..piece].to_vec());
            rest = &rest[piece..];
            let full = std::mem::replace(&mut current, Building::new(true));
            packets.push(full.finish(true, false));
        }
    }
    if !current.elements.is_empty() {
        packets.push(current.finish(false, false));
    }
    let count = packets.len();
    packets
        .into_iter()
        .enumerate()
        .map(|(i, mut data)| {
            if i == 0 && new_sequence {
                data[0] |= AGGR_N;
            }
            Payload {
                data,
                marker: i + 1 == count,
            }
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DepayError {
    /// An empty RTP payload.
    Empty,
    /// An OBU element length runs past the payload, or W promises more
    /// elements than the payload holds.
    BadElement(String),
    /// A reassembled OBU is malformed.
    BadObu(obu::ObuError),
    /// A temporal unit grew past [`MAX_TU_SIZE`].
    TooLarge,
}

impl fmt::Display for DepayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("empty RTP payload"),
            Self::BadElement(what) => write!(f, "malformed OBU element: {what}"),
            Self::BadObu(e) => write!(f, "malformed OBU: {e}"),
            Self::TooLarge => write!(f, "temporal unit larger than {MAX_TU_SIZE} bytes"),
        }
    }
}

impl std::error::Error for DepayError {}

/// The parsed aggregation header and the OBU elements of one payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    pub z: bool,
    pub y: bool,
    pub w: u8,
    pub n: bool,
    pub elements: Vec<&'a [u8]>,
}

/// Parses one RTP payload into its aggregation header and elements. The
/// header's three reserved bits are ignored, as the payload format says
/// receivers must.
pub fn parse_payload(payload: &[u8]) -> Result<Packet<'_>, DepayError> {
    let Some(&header) = payload.first() else {
        return Err(DepayError::Empty);
    };
    let z = header & AGGR_Z != 0;
    let y = header & AGGR_Y != 0;
    let w = (header >> 4) & 0x03;
    let n = header & AGGR_N != 0;
    let mut elements = Vec::new();
    let mut rest = &payload[1..];
    if rest.is_empty() {
        return Err(DepayError::BadElement(
            "no OBU element after the aggregation header".into(),
        ));
    }
    while !rest.is_empty() {
        if w != 0 && elements.len() + 1 == w as usize {
            elements.push(rest);
            break;
        }
        let (len, used) = obu::read_leb128(rest)
            .map_err(|_| DepayError::BadElement("bad element length".into()))?;
        let len = len as usize;
        if len == 0 {
            return Err(DepayError::BadElement("zero-length element".into()));
        }
        let end = used
            .checked_add(len)
            .filter(|&e| e <= rest.len())
            .ok_or_else(|| {
                DepayError::BadElement(format!(
                    "element of {len} bytes but {} left in the packet",
                    rest.len() - used
                ))
            })?;
        elements.push(&rest[used..end]);
        rest = &rest[end..];
    }
    if w != 0 && elements.len() != w as usize {
        return Err(DepayError::BadElement(format!(
            "W={w} but the packet holds {} elements",
            elements.len()
        )));
    }
    Ok(Packet {
        z,
        y,
        w,
        n,
        elements,
    })
}

/// What [`Depacketizer::push`] completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completed {
    /// A whole temporal unit as OBUs with size fields (no temporal delimiter),
    /// and whether its first packet had N set.
    Tu { data: Vec<u8>, new_sequence: bool },
    /// A temporal unit that lost data and is dropped.
    Dropped,
}

/// Reassembles temporal units from RTP payloads in sequence order.
#[derive(Debug, Default)]
pub struct Depacketizer {
    tu: Vec<u8>,
    fragment: Option<Vec<u8>>,
    timestamp: Option<u32>,
    /// The current unit lost a packet or holds a bad one.
    broken: bool,
    /// The current unit has any data (or a loss).
    started: bool,
    new_sequence: bool,
    /// A packet arrived since the start (or the last reset).
    seen: bool,
}

impl Depacketizer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets the unit being assembled (flush).
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Marks the unit being assembled as having lost a packet (a jitter
    /// buffer's packet-lost event).
    pub fn mark_lost(&mut self) {
        self.broken = true;
        self.started = true;
        self.fragment = None;
    }

    fn take(&mut self) -> Option<Completed> {
        let completed = if !self.started {
            None
        } else if self.broken || self.fragment.is_some() || self.tu.is_empty() {
            Some(Completed::Dropped)
        } else {
            Some(Completed::Tu {
                data: std::mem::take(&mut self.tu),
                new_sequence: self.new_sequence,
            })
        };
        self.tu.clear();
        self.fragment = None;
        self.broken = false;
        self.started = false;
        self.new_sequence = false;
        self.timestamp = None;
        completed
    }

    fn add_obu(&mut self, element: &[u8]) -> Result<(), DepayError> {
        let (parsed, used) = Obu::parse(element).map_err(DepayError::BadObu)?;
        if used != element.len() {
            return Err(DepayError::BadElement(
                "OBU size field disagrees with the element length".into(),
            ));
        }
        if !is_sent(parsed.obu_type) {
            return Ok(());
        }
        if self.tu.len() + element.len() + 8 > MAX_TU_SIZE {
            return Err(DepayError::TooLarge);
        }
        parsed.write_sized(&mut self.tu);
        Ok(())
    }

    /// Feeds one packet (`discont`: packets were lost before it). Returns the
    /// units this packet completed (a unit whose marker packet was lost is
    /// completed as dropped when the next unit starts) and an error for a bad
    /// packet, which drops its unit.
    pub fn push(
        &mut self,
        payload: &[u8],
        timestamp: u32,
        marker: bool,
        discont: bool,
    ) -> (Vec<Completed>, Option<DepayError>) {
        let mut out = Vec::new();
        if self.timestamp.is_some_and(|t| t != timestamp) {
            // The previous unit never saw its marker: it lost its last packet.
            self.broken = true;
            out.extend(self.take());
        }
        // A discontinuity before the very first packet (a receiver that just
        // started) loses nothing this depacketizer was assembling.
        if discont && self.started {
            self.broken = true;
            self.fragment = None;
        } else if discont && self.seen && out.is_empty() {
            // Between two units: whole units went missing (one-packet delta
            // frames at a low bitrate lose nothing else). The decoder must not
            // see the next unit as if nothing happened.
            out.push(Completed::Dropped);
        }
        self.seen = true;
        self.started = true;
        self.timestamp = Some(timestamp);
        let mut error = None;
        match parse_payload(payload) {
            Ok(packet) => {
                if packet.n && self.tu.is_empty() && self.fragment.is_none() {
                    self.new_sequence = true;
                }
                let count = packet.elements.len();
                for (i, element) in packet.elements.into_iter().enumerate() {
                    let first = i == 0;
                    let last = i + 1 == count;
                    let mut bytes: Option<Vec<u8>> = None;
                    if first && packet.z {
                        match self.fragment.take() {
                            Some(mut f) => {
                                if f.len() + element.len() > MAX_TU_SIZE {
                                    error = Some(DepayError::TooLarge);
                                    self.broken = true;
                                    break;
                                }
                                f.extend_from_slice(element);
                                bytes = Some(f);
                            }
                            // The start of this OBU was lost.
                            None => {
                                self.broken = true;
                                if last && packet.y {
                                    break;
                                }
                                continue;
                            }
                        }
                    } else if first && self.fragment.take().is_some() {
                        // The previous packet promised a continuation (Y) that did not come.
                        self.broken = true;
                    }
                    if last && packet.y {
                        self.fragment = Some(bytes.unwrap_or_else(|| element.to_vec()));
                        break;
                    }
                    let whole = bytes.as_deref().unwrap_or(element);
                    if let Err(e) = self.add_obu(whole) {
                        self.broken = true;
                        error = Some(e);
                        break;
                    }
                }
            }
            Err(e) => {
                self.broken = true;
                self.fragment = None;
                error = Some(e);
            }
        }
        if marker {
            out.extend(self.take());
        }
        (out, error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obu(obu_type: u8, extension: Option<u8>, payload: &[u8]) -> Obu<'_> {
        Obu {
            obu_type,
            extension,
            payload,
        }
    }

    fn sized(obus: &[Obu<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for o in obus.iter().filter(|o| is_sent(o.obu_type)) {
            o.write_sized(&mut out);
        }
        out
    }

    /// A tiny deterministic generator (xorshift64*), so the tests need no crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    #[test]
    fn aggregation_header_table() {
        // (payload, expected (z, y, w, n, elements) or error)
        type Expect = Result<(bool, bool, u8, bool, Vec<&'static [u8]>), DepayError>;
        let cases: Vec<(&[u8], Expect)> = vec![
            (
                &[0x10, 0x30, 0xaa],
                Ok((false, false, 1, false, vec![&[0x30, 0xaa]])),
            ),
            (
                &[0x18, 0x0a, 0x01],
                Ok((false, false, 1, true, vec![&[0x0a, 0x01]])),
            ),
            (
                &[0x20, 0x01, 0x30, 0x30, 0xbb],
                Ok((false, false, 2, false, vec![&[0x30], &[0x30, 0xbb]])),
            ),
            (
                &[0x30, 0x01, 0x30, 0x01, 0x31, 0x30, 0x32],
                Ok((
                    false,
                    false,
                    3,
                    false,
                    vec![&[0x30], &[0x31], &[0x30, 0x32]],
                )),
            ),
            (
                &[0x00, 0x01, 0x30, 0x02, 0x30, 0x01],
                Ok((false, false, 0, false, vec![&[0x30], &[0x30, 0x01]])),
            ),
            (
                &[0xd0, 0x55, 0x66],
                Ok((true, true, 1, false, vec![&[0x55, 0x66]])),
            ),
            (&[], Err(DepayError::Empty)),
            (
                &[0x10],
                Err(DepayError::BadElement(
                    "no OBU element after the aggregation header".into(),
                )),
            ),
            // Reserved bits set: ignored.
            (&[0x11, 0x30], Ok((false, false, 1, false, vec![&[0x30]]))),
            (&[0x17, 0x30], Ok((false, false, 1, false, vec![&[0x30]]))),
            (
                &[0x00, 0x05, 0x30],
                Err(DepayError::BadElement(
                    "element of 5 bytes but 1 left in the packet".into(),
                )),
            ),
            (
                &[0x00, 0x00],
                Err(DepayError::BadElement("zero-length element".into())),
            ),
            (
                &[0x00, 0x80],
                Err(DepayError::BadElement("bad element length".into())),
            ),
            (
                &[0x30, 0x01, 0x30, 0x30],
                Err(DepayError::BadElement(
                    "element of 48 bytes but 0 left in the packet".into(),
                )),
            ),
            (
                &[0x30, 0x01, 0x30, 0x01, 0x31],
                Err(DepayError::BadElement(
                    "W=3 but the packet holds 2 elements".into(),
                )),
            ),
            (
                &[0x20, 0x02, 0x30],
                Err(DepayError::BadElement(
                    "element of 2 bytes but 1 left in the packet".into(),
                )),
            ),
        ];
        for (payload, expected) in cases {
            let got = parse_payload(payload).map(|p| (p.z, p.y, p.w, p.n, p.elements));
            assert_eq!(got, expected, "{payload:02x?}");
        }
    }

    #[test]
    fn small_unit_is_one_packet_with_w() {
        let seq = [0x00u8, 0x00, 0x00, 0x02, 0xaf];
        let frame = [0x10u8; 40];
        let obus = [obu(2, None, &[]), obu(1, None, &seq), obu(6, None, &frame)];
        let packets = packetize(&obus, 1200, true);
        assert_eq!(packets.len(), 1);
        let p = &packets[0];
        assert!(p.marker);
        // W=2, N=1, temporal delimiter left out; OBUs without size field.
        assert_eq!(p.data[0], 0x28);
        assert_eq!(p.data[1] as usize, 1 + seq.len());
        assert_eq!(p.data[2], 0x08);
        assert_eq!(&p.data[3..3 + seq.len()], &seq);
        assert_eq!(p.data[3 + seq.len()], 0x30);
        assert_eq!(p.data.len(), 1 + 1 + 1 + seq.len() + 1 + frame.len());
    }

    #[test]
    fn discont_only_breaks_a_unit_after_the_first_packet() {
        let seq = [0x00u8, 0x00, 0x00, 0x02, 0xaf];
        let frame = [0x10u8; 300];
        let obus = [obu(1, None, &seq), obu(6, None, &frame)];
        let packets = packetize(&obus, 120, true);
        assert!(packets.len() > 2);
        let push_all = |d: &mut Depacketizer, ts: u32, discont_at: Option<usize>| {
            let mut done = Vec::new();
            for (i, p) in packets.iter().enumerate() {
                done.extend(d.push(&p.data, ts, p.marker, discont_at == Some(i)).0);
            }
            done
        };
        // A receiver's first packet always carries DISCONT: nothing was lost.
        let mut d = Depacketizer::new();
        assert!(matches!(
            push_all(&mut d, 1000, Some(0)).as_slice(),
            [Completed::Tu { .. }]
        ));
        // Later, DISCONT means packets went missing: the unit is dropped.
        assert!(matches!(
            push_all(&mut d, 4000, Some(1)).as_slice(),
            [Completed::Dropped]
        ));
        assert!(matches!(
            push_all(&mut d, 7000, None).as_slice(),
            [Completed::Tu { .. }]
        ));
        // DISCONT on the first packet of a unit after a complete one: whole
        // units were lost in between. That loss is reported, the unit itself
        // is whole.
        assert!(matches!(
            push_all(&mut d, 10000, Some(0)).as_slice(),
            [Completed::Dropped, Completed::Tu { .. }]
        ));
        // After a reset (flush) the first packet is a fresh start again.
        d.reset();
        assert!(matches!(
            push_all(&mut d, 13000, Some(0)).as_slice(),
            [Completed::Tu { .. }]
        ));
    }

    #[test]
    fn four_obus_use_w_zero() {
        let payloads = [[1u8; 3], [2; 3], [3; 3], [4; 3]];
        let obus: Vec<Obu> = payloads.iter().map(|p| obu(5, None, p)).collect();
        let packets = packetize(&obus, 1200, false);
        assert_eq!(packets.len(), 1);
        assert_eq!(packets[0].data[0], 0x00);
        let parsed = parse_payload(&packets[0].data).unwrap();
        assert_eq!(parsed.elements.len(), 4);
    }

    #[test]
    fn fragmentation_edge_cases() {
        // An OBU of exactly what fits, one byte more, and a huge one.
        for (frame_len, mtu) in [
            (1197usize, 1200usize),
            (1198, 1200),
            (1199, 1200),
            (10_000, 1200),
            (5, 3),
            (300, 130),
            (127, 130),
            (128, 130),
        ] {
            let frame = vec![0x5au8; frame_len];
            let obus = [obu(6, Some(0x20), &frame)];
            let packets = packetize(&obus, mtu, false);
            assert!(
                packets.iter().all(|p| p.data.len() <= mtu),
                "len {frame_len} mtu {mtu}"
            );
            assert!(packets.last().unwrap().marker);
            assert!(packets[..packets.len() - 1].iter().all(|p| !p.marker));
            for (i, p) in packets.iter().enumerate() {
                let parsed = parse_payload(&p.data).unwrap();
                assert_eq!(parsed.z, i > 0, "Z on packet {i}");
                assert_eq!(parsed.y, i + 1 < packets.len(), "Y on packet {i}");
            }
            let mut d = Depacketizer::new();
            let mut out = Vec::new();
            for p in &packets {
                let (c, e) = d.push(&p.data, 9000, p.marker, false);
                assert_eq!(e, None);
                out.extend(c);
            }
            assert_eq!(
                out,
                vec![Completed::Tu {
                    data: sized(&obus),
                    new_sequence: false
                }],
                "len {frame_len} mtu {mtu}"
            );
        }
    }

    #[test]
    fn loss_drops_the_unit_and_the_next_one_decodes() {
        let frame = vec![0x11u8; 5000];
        let obus = [obu(6, None, &frame)];
        let packets = packetize(&obus, 1000, false);
        assert!(packets.len() >= 5);
        let mut d = Depacketizer::new();
        // Lose packet 2 of unit 1.
        let mut out = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            if i == 2 {
                continue;
            }
            out.extend(d.push(&p.data, 1, p.marker, i == 3).0);
        }
        assert_eq!(out, vec![Completed::Dropped]);
        // Lose the marker packet of unit 2: it is dropped when unit 3 starts.
        let mut out = Vec::new();
        for p in &packets[..packets.len() - 1] {
            out.extend(d.push(&p.data, 2, p.marker, false).0);
        }
        assert!(out.is_empty());
        for p in &packets {
            out.extend(d.push(&p.data, 3, p.marker, false).0);
        }
        assert_eq!(
            out,
            vec![
                Completed::Dropped,
                Completed::Tu {
                    data: sized(&obus),
                    new_sequence: false
                }
            ]
        );
        // Joining mid-unit (Z without a fragment) drops that unit only.
        let mut out = Vec::new();
        for p in &packets[1..] {
            out.extend(d.push(&p.data, 4, p.marker, false).0);
        }
        assert_eq!(out, vec![Completed::Dropped]);
        // Y promised a continuation that never came (packet without Z next).
        let mut d = Depacketizer::new();
        let (c, _) = d.push(&[0x50, 0x30, 0x01], 5, false, false);
        assert!(c.is_empty());
        let (c, _) = d.push(&[0x10, 0x30, 0x02], 5, true, false);
        assert_eq!(c, vec![Completed::Dropped]);
    }

    #[test]
    fn bad_packets_drop_their_unit_only() {
        let mut d = Depacketizer::new();
        let (c, e) = d.push(&[0x10], 1, true, false);
        assert_eq!(c, vec![Completed::Dropped]);
        assert!(matches!(e, Some(DepayError::BadElement(_))));
        // An element whose OBU has its forbidden bit set.
        let (c, e) = d.push(&[0x10, 0xb0, 0x00], 2, true, false);
        assert_eq!(
            (c, e),
            (
                vec![Completed::Dropped],
                Some(DepayError::BadObu(obu::ObuError::ForbiddenBit))
            )
        );
        // An element whose OBU size field disagrees with the element.
        let (c, e) = d.push(&[0x10, 0x32, 0x05, 0x00], 3, true, false);
        assert_eq!(c, vec![Completed::Dropped]);
        assert!(e.is_some());
        // An element with a correct size field is accepted.
        let (c, e) = d.push(&[0x18, 0x32, 0x01, 0x00], 4, true, false);
        assert_eq!(
            (c, e),
            (
                vec![Completed::Tu {
                    data: vec![0x32, 0x01, 0x00],
                    new_sequence: true
                }],
                None
            )
        );
        // Temporal delimiters sent by a peer are dropped.
        let (c, _) = d.push(&[0x20, 0x01, 0x10, 0x30, 0x07], 5, true, false);
        assert_eq!(
            c,
            vec![Completed::Tu {
                data: vec![0x32, 0x01, 0x07],
                new_sequence: false
            }]
        );
    }

    #[test]
    fn random_units_round_trip_through_any_mtu() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for round in 0..400 {
            let count = 1 + rng.below(6) as usize;
            let payloads: Vec<Vec<u8>> = (0..count)
                .map(|_| {
                    (0..rng.below(if round % 7 == 0 { 20_000 } else { 600 }))
                        .map(|_| rng.next() as u8)
                        .collect()
                })
                .collect();
            let obus: Vec<Obu> = payloads
                .iter()
                .map(|p| {
                    let t = [1u8, 3, 4, 5, 6, 7][rng.below(6) as usize];
                    obu(
                        t,
                        if rng.below(3) == 0 {
                            Some((rng.next() as u8) & 0xf8)
                        } else {
                            None
                        },
                        p,
                    )
                })
                .collect();
            let mtu = MIN_PAYLOAD + rng.below(1500) as usize;
            let packets = packetize(&obus, mtu, round % 2 == 0);
            let mut d = Depacketizer::new();
            let mut out = Vec::new();
            for p in &packets {
                assert!(p.data.len() <= mtu);
                let (c, e) = d.push(&p.data, round, p.marker, false);
                assert_eq!(e, None, "round {round}");
                out.extend(c);
            }
            assert_eq!(
                out,
                vec![Completed::Tu {
                    data: sized(&obus),
                    new_sequence: round % 2 == 0
                }],
                "round {round} mtu {mtu}"
            );
        }
    }

    #[test]
    fn fuzz_depacketizer_never_panics() {
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        let mut d = Depacketizer::new();
        let mut units = 0;
        for i in 0..200_000u32 {
            let len = rng.below(48) as usize;
            let mut payload: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Bias towards valid headers so the deeper paths run too.
            if !payload.is_empty() && rng.below(2) == 0 {
                payload[0] &= 0xf8;
            }
            let (completed, _) = d.push(&payload, i / 3, rng.below(3) == 0, rng.below(20) == 0);
            for c in completed {
                if let Completed::Tu { data, .. } = c {
                    // Whatever comes out is a well-formed OBU stream.
                    assert!(Obu::parse_all(&data).is_ok());
                    units += 1;
                }
            }
        }
        assert!(units > 0, "the fuzz run never completed a unit");
    }
}
