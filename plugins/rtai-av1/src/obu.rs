//! AV1 open bitstream units (OBUs): the little of the AV1 bitstream syntax the
//! payloader, depayloader and encoder need (AV1 spec section 5.3 and 5.5),
//! parsed without panicking on any input.

use std::fmt;

pub const OBU_SEQUENCE_HEADER: u8 = 1;
pub const OBU_TEMPORAL_DELIMITER: u8 = 2;
pub const OBU_FRAME_HEADER: u8 = 3;
pub const OBU_TILE_GROUP: u8 = 4;
pub const OBU_METADATA: u8 = 5;
pub const OBU_FRAME: u8 = 6;
pub const OBU_REDUNDANT_FRAME_HEADER: u8 = 7;
pub const OBU_TILE_LIST: u8 = 8;
pub const OBU_PADDING: u8 = 15;

/// A temporal delimiter OBU with its (zero) size field.
pub const TEMPORAL_DELIMITER: [u8; 2] = [OBU_TEMPORAL_DELIMITER << 3 | 0x02, 0x00];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObuError {
    /// The data ends inside an OBU header, size field or payload.
    Truncated,
    /// The forbidden bit of an OBU header is set.
    ForbiddenBit,
    /// A LEB128 value longer than 8 bytes or larger than 2^32 - 1.
    BadLeb128,
    /// An OBU header without payload bytes where payload is required.
    Empty,
}

impl fmt::Display for ObuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Truncated => "the data ends inside an OBU",
            Self::ForbiddenBit => "an OBU header has its forbidden bit set",
            Self::BadLeb128 => "an OBU size (LEB128) is malformed or larger than 2^32 - 1",
            Self::Empty => "an OBU element is empty",
        })
    }
}

impl std::error::Error for ObuError {}

/// Reads an unsigned LEB128 value (at most 8 bytes, value < 2^32) and returns
/// it with the number of bytes it took.
pub fn read_leb128(data: &[u8]) -> Result<(u64, usize), ObuError> {
    let mut value = 0u64;
    for i in 0..8 {
        let Some(&byte) = data.get(i) else {
            return Err(ObuError::Truncated);
        };
        value |= ((byte & 0x7f) as u64) << (i * 7);
        if byte & 0x80 == 0 {
            if value > u32::MAX as u64 {
                return Err(ObuError::BadLeb128);
            }
            return Ok((value, i + 1));
        }
    }
    Err(ObuError::BadLeb128)
}

/// Appends `value` as unsigned LEB128 (shortest form).
pub fn write_leb128(mut value: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The number of bytes `value` takes as LEB128.
pub fn leb128_len(value: u64) -> usize {
    let mut len = 1;
    let mut v = value >> 7;
    while v != 0 {
        len += 1;
        v >>= 7;
    }
    len
}

/// One OBU: its type, optional extension byte and payload (the size field, if
/// any, is not kept; [`Obu::write_sized`] and [`Obu::write_unsized`] write it
/// back either way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Obu<'a> {
    pub obu_type: u8,
    pub extension: Option<u8>,
    pub payload: &'a [u8],
}

impl<'a> Obu<'a> {
    /// Parses one OBU at the start of `data`. An OBU without size field extends
    /// to the end of `data`. Returns the OBU and the bytes it took.
    pub fn parse(data: &'a [u8]) -> Result<(Self, usize), ObuError> {
        let Some(&header) = data.first() else {
            return Err(ObuError::Truncated);
        };
        if header & 0x80 != 0 {
            return Err(ObuError::ForbiddenBit);
        }
        let obu_type = (header >> 3) & 0x0f;
        let has_extension = header & 0x04 != 0;
        let has_size = header & 0x02 != 0;
        let mut pos = 1;
        let extension = if has_extension {
            let Some(&ext) = data.get(1) else {
                return Err(ObuError::Truncated);
            };
            pos += 1;
            Some(ext)
        } else {
            None
        };
        let size = if has_size {
            let (size, len) = read_leb128(&data[pos..])?;
            pos += len;
            size as usize
        } else {
            data.len() - pos
        };
        let end = pos.checked_add(size).ok_or(ObuError::Truncated)?;
        if end > data.len() {
            return Err(ObuError::Truncated);
        }
        Ok((
            Self {
                obu_type,
                extension,
                payload: &data[pos..end],
            },
            end,
        ))
    }

    /// Parses a whole buffer of OBUs (`stream-format=obu-stream`).
    pub fn parse_all(mut data: &'a [u8]) -> Result<Vec<Self>, ObuError> {
        let mut obus = Vec::new();
        while !data.is_empty() {
            let (obu, len) = Self::parse(data)?;
            obus.push(obu);
            data = &data[len..];
        }
        Ok(obus)
    }

    fn header_byte(&self, with_size: bool) -> u8 {
        (self.obu_type & 0x0f) << 3
            | if self.extension.is_some() { 0x04 } else { 0 }
            | if with_size { 0x02 } else { 0 }
    }

    /// The OBU with its size field (`obu_has_size_field = 1`).
    pub fn write_sized(&self, out: &mut Vec<u8>) {
        out.push(self.header_byte(true));
        out.extend(self.extension);
        write_leb128(self.payload.len() as u64, out);
        out.extend_from_slice(self.payload);
    }

    /// The OBU without its size field, as the RTP payload carries it.
    pub fn write_unsized(&self, out: &mut Vec<u8>) {
        out.push(self.header_byte(false));
        out.extend(self.extension);
        out.extend_from_slice(self.payload);
    }

    /// Length of [`Obu::write_unsized`]'s output.
    pub fn unsized_len(&self) -> usize {
        1 + self.extension.is_some() as usize + self.payload.len()
    }

    /// The temporal layer id from the extension header (0 without one).
    pub fn temporal_id(&self) -> u8 {
        self.extension.map(|e| e >> 5).unwrap_or(0)
    }

    /// The spatial layer id from the extension header (0 without one).
    pub fn spatial_id(&self) -> u8 {
        self.extension.map(|e| (e >> 3) & 0x03).unwrap_or(0)
    }
}

/// A bit reader for the few header fields parsed here.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(bit as u32)
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        let mut v = 0;
        for _ in 0..n {
            v = v << 1 | self.bit()?;
        }
        Some(v)
    }
}

/// The fields of a sequence header the elements need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceInfo {
    pub profile: u8,
    pub still_picture: bool,
    pub reduced_still_picture_header: bool,
    /// seq_level_idx of operating point 0.
    pub level_idx: u8,
    /// seq_tier of operating point 0 (0 main, 1 high).
    pub tier: u8,
}

/// Parses the start of a sequence header OBU's payload (spec 5.5.1) up to the
/// level of operating point 0.
pub fn parse_sequence_header(payload: &[u8]) -> Option<SequenceInfo> {
    let mut b = Bits::new(payload);
    let profile = b.bits(3)? as u8;
    let still_picture = b.bit()? == 1;
    let reduced = b.bit()? == 1;
    if reduced {
        let level_idx = b.bits(5)? as u8;
        return Some(SequenceInfo {
            profile,
            still_picture,
            reduced_still_picture_header: true,
            level_idx,
            tier: 0,
        });
    }
    let timing_info_present = b.bit()? == 1;
    let mut decoder_model_info_present = false;
    let mut buffer_delay_length = 0;
    if timing_info_present {
        b.bits(32)?; // num_units_in_display_tick
        b.bits(32)?; // time_scale
        if b.bit()? == 1 {
            // equal_picture_interval: num_ticks_per_picture_minus_1 as uvlc
            let mut zeros = 0;
            while b.bit()? == 0 {
                zeros += 1;
                if zeros >= 32 {
                    return None;
                }
            }
            b.bits(zeros)?;
        }
        decoder_model_info_present = b.bit()? == 1;
        if decoder_model_info_present {
            buffer_delay_length = b.bits(5)? + 1;
            b.bits(32)?; // num_units_in_decoding_tick
            b.bits(5)?; // buffer_removal_time_length_minus_1
            b.bits(5)?; // frame_presentation_time_length_minus_1
        }
    }
    b.bit()?; // initial_display_delay_present_flag (only matters after the level)
    b.bits(5)?; // operating_points_cnt_minus_1
    b.bits(12)?; // operating_point_idc[0]
    let level_idx = b.bits(5)? as u8;
    let tier = if level_idx > 7 { b.bit()? as u8 } else { 0 };
    let _ = (decoder_model_info_present, buffer_delay_length);
    Some(SequenceInfo {
        profile,
        still_picture,
        reduced_still_picture_header: false,
        level_idx,
        tier,
    })
}

/// The largest frame a sequence header allows (max_frame_width_minus_1 + 1,
/// max_frame_height_minus_1 + 1; spec 5.5.1 through every operating point).
/// `None` when the payload is too short.
pub fn sequence_max_frame_size(payload: &[u8]) -> Option<(u32, u32)> {
    let mut b = Bits::new(payload);
    b.bits(3)?; // seq_profile
    b.bit()?; // still_picture
    let reduced = b.bit()? == 1;
    if reduced {
        b.bits(5)?; // seq_level_idx[0]
    } else {
        let mut decoder_model_info_present = false;
        let mut buffer_delay_length = 0;
        if b.bit()? == 1 {
            // timing_info
            b.bits(32)?;
            b.bits(32)?;
            if b.bit()? == 1 {
                let mut zeros = 0;
                while b.bit()? == 0 {
                    zeros += 1;
                    if zeros >= 32 {
                        return None;
                    }
                }
                b.bits(zeros)?;
            }
            decoder_model_info_present = b.bit()? == 1;
            if decoder_model_info_present {
                buffer_delay_length = b.bits(5)? + 1;
                b.bits(32)?;
                b.bits(5)?;
                b.bits(5)?;
            }
        }
        let initial_display_delay_present = b.bit()? == 1;
        let operating_points = b.bits(5)? + 1;
        for _ in 0..operating_points {
            b.bits(12)?; // operating_point_idc
            if b.bits(5)? > 7 {
                b.bit()?; // seq_tier
            }
            if decoder_model_info_present && b.bit()? == 1 {
                // operating_parameters_info: two delays and low_delay_mode_flag
                b.bits(buffer_delay_length)?;
                b.bits(buffer_delay_length)?;
                b.bit()?;
            }
            if initial_display_delay_present && b.bit()? == 1 {
                b.bits(4)?;
            }
        }
    }
    let width_bits = b.bits(4)? + 1;
    let height_bits = b.bits(4)? + 1;
    let width = b.bits(width_bits)? + 1;
    let height = b.bits(height_bits)? + 1;
    Some((width, height))
}

/// Whether a frame (or frame header) OBU's payload starts a key frame that is
/// shown (spec 5.9.2). `None` when the payload is too short.
pub fn is_key_frame(payload: &[u8], reduced_still_picture_header: bool) -> Option<bool> {
    if reduced_still_picture_header {
        return Some(true);
    }
    let mut b = Bits::new(payload);
    if b.bit()? == 1 {
        // show_existing_frame: shows an earlier frame, not a new key frame.
        return Some(false);
    }
    let frame_type = b.bits(2)?;
    Some(frame_type == 0)
}

/// What a temporal unit holds, for flags and caps.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TuInfo {
    pub sequence_header: Option<SequenceInfo>,
    pub key_frame: bool,
}

/// Scans the OBUs of one temporal unit: its sequence header, if any, and
/// whether it holds a key frame (given the stream's last sequence header).
pub fn scan_tu(obus: &[Obu<'_>], last_sequence: Option<SequenceInfo>) -> TuInfo {
    let mut info = TuInfo::default();
    let mut seq = last_sequence;
    for obu in obus {
        match obu.obu_type {
            OBU_SEQUENCE_HEADER => {
                if let Some(s) = parse_sequence_header(obu.payload) {
                    info.sequence_header = Some(s);
                    seq = Some(s);
                }
            }
            OBU_FRAME | OBU_FRAME_HEADER => {
                let reduced = seq.is_some_and(|s| s.reduced_still_picture_header);
                if is_key_frame(obu.payload, reduced) == Some(true) {
                    info.key_frame = true;
                }
            }
            _ => {}
        }
    }
    info
}

/// The AV1 level name ("2.0" … "7.3") of a `seq_level_idx`, `None` for 31 (no
/// level constraints) and reserved values.
pub fn level_name(level_idx: u8) -> Option<String> {
    (level_idx < 24).then(|| format!("{}.{}", 2 + level_idx / 4, level_idx % 4))
}

/// The AV1 profile name of `seq_profile`.
pub fn profile_name(profile: u8) -> Option<&'static str> {
    match profile {
        0 => Some("main"),
        1 => Some("high"),
        2 => Some("professional"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb128_round_trips_and_rejects_bad_values() {
        for v in [0u64, 1, 127, 128, 300, 16_383, 16_384, u32::MAX as u64] {
            let mut out = Vec::new();
            write_leb128(v, &mut out);
            assert_eq!(out.len(), leb128_len(v));
            assert_eq!(read_leb128(&out), Ok((v, out.len())));
        }
        // Non-shortest forms are valid LEB128.
        assert_eq!(read_leb128(&[0x80, 0x00]), Ok((0, 2)));
        let cases: &[(&[u8], ObuError)] = &[
            (&[], ObuError::Truncated),
            (&[0x80], ObuError::Truncated),
            (&[0xff, 0xff, 0xff, 0xff, 0x10], ObuError::BadLeb128),
            (
                &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
                ObuError::BadLeb128,
            ),
        ];
        for (data, err) in cases {
            assert_eq!(read_leb128(data).unwrap_err(), *err, "{data:02x?}");
        }
    }

    #[test]
    fn obu_parse_table() {
        // (input, expected result: type, extension, payload, consumed)
        type Expect = Result<(u8, Option<u8>, &'static [u8], usize), ObuError>;
        let cases: &[(&[u8], Expect)] = &[
            (&[0x12, 0x00], Ok((2, None, &[], 2))),
            (
                &[0x0a, 0x02, 0xaa, 0xbb, 0xcc],
                Ok((1, None, &[0xaa, 0xbb], 4)),
            ),
            (&[0x32, 0x01, 0x99], Ok((6, None, &[0x99], 3))),
            // No size field: to the end.
            (&[0x30, 0x01, 0x02], Ok((6, None, &[0x01, 0x02], 3))),
            // Extension byte.
            (&[0x36, 0x28, 0x01, 0x07], Ok((6, Some(0x28), &[0x07], 4))),
            (&[0x34, 0x28], Ok((6, Some(0x28), &[], 2))),
            (&[], Err(ObuError::Truncated)),
            (&[0x92, 0x00], Err(ObuError::ForbiddenBit)),
            (&[0x36], Err(ObuError::Truncated)),
            (&[0x32], Err(ObuError::Truncated)),
            (&[0x32, 0x05, 0x00], Err(ObuError::Truncated)),
            (
                &[0x32, 0xff, 0xff, 0xff, 0xff, 0x7f],
                Err(ObuError::BadLeb128),
            ),
        ];
        for (data, expected) in cases {
            let got = Obu::parse(data).map(|(o, n)| (o.obu_type, o.extension, o.payload, n));
            assert_eq!(&got, expected, "{data:02x?}");
        }
    }

    #[test]
    fn sized_and_unsized_forms_round_trip() {
        let payload = vec![7u8; 200];
        for ext in [None, Some(0x48)] {
            let obu = Obu {
                obu_type: OBU_FRAME,
                extension: ext,
                payload: &payload,
            };
            let mut sized = Vec::new();
            obu.write_sized(&mut sized);
            assert_eq!(Obu::parse(&sized).unwrap(), (obu.clone(), sized.len()));
            let mut unsized_ = Vec::new();
            obu.write_unsized(&mut unsized_);
            assert_eq!(unsized_.len(), obu.unsized_len());
            assert_eq!(
                Obu::parse(&unsized_).unwrap(),
                (obu.clone(), unsized_.len())
            );
        }
        assert_eq!(
            Obu::parse_all(&TEMPORAL_DELIMITER).unwrap()[0].obu_type,
            OBU_TEMPORAL_DELIMITER
        );
    }

    #[test]
    fn headers_parse_from_bits() {
        // seq_profile 0, still 0, reduced 0, timing 0, initial_display 0,
        // op count 0, idc 0 (12 bits), level 8 (4.0), tier 1.
        // bits: 000 0 0 0 0 00000 000000000000 01000 1
        let bits = "000000000000000000000000010001";
        let mut bytes = vec![0u8; bits.len().div_ceil(8)];
        for (i, c) in bits.chars().enumerate() {
            if c == '1' {
                bytes[i / 8] |= 0x80 >> (i % 8);
            }
        }
        let info = parse_sequence_header(&bytes).unwrap();
        assert_eq!(
            info,
            SequenceInfo {
                profile: 0,
                still_picture: false,
                reduced_still_picture_header: false,
                level_idx: 8,
                tier: 1
            }
        );
        assert_eq!(level_name(8).as_deref(), Some("4.0"));
        assert_eq!(level_name(31), None);
        assert_eq!(parse_sequence_header(&[]), None);
        // Reduced still picture: profile 1, still, reduced, level 5.
        assert_eq!(
            parse_sequence_header(&[0b0011_1001, 0b0100_0000]),
            Some(SequenceInfo {
                profile: 1,
                still_picture: true,
                reduced_still_picture_header: true,
                level_idx: 5,
                tier: 0
            })
        );
        // Frame header: show_existing 0, frame_type 00 (key) / 01 (inter).
        assert_eq!(is_key_frame(&[0b0000_0000], false), Some(true));
        assert_eq!(is_key_frame(&[0b0010_0000], false), Some(false));
        assert_eq!(is_key_frame(&[0b1000_0000], false), Some(false));
        assert_eq!(is_key_frame(&[], false), None);
        assert_eq!(is_key_frame(&[], true), Some(true));
    }
}
