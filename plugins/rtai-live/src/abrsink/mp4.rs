//! What abrsink reads from cmafmux's output: the media timescale of an init
//! segment (`moov/trak/mdia/mdhd`), the base media decode time of a fragment
//! (`moof/traf/tfdt`) and an AV1 track's codecs string (`av1C`). Bounded box walks over untrusted-looking bytes:
//! malformed input gives `None`, never a panic.

fn boxes(data: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.len() < 8 {
            return None;
        }
        let size32 = u32::from_be_bytes(rest[0..4].try_into().ok()?) as u64;
        let kind: [u8; 4] = rest[4..8].try_into().ok()?;
        let (header, size) = match size32 {
            0 => (8u64, rest.len() as u64),
            1 => {
                if rest.len() < 16 {
                    return None;
                }
                (16, u64::from_be_bytes(rest[8..16].try_into().ok()?))
            }
            n => (8, n),
        };
        if size < header || size > rest.len() as u64 {
            rest = &[];
            return None;
        }
        let body = &rest[header as usize..size as usize];
        rest = &rest[size as usize..];
        Some((kind, body))
    })
}

fn find<'a>(data: &'a [u8], path: &[&[u8; 4]]) -> Option<&'a [u8]> {
    let (first, rest) = path.split_first()?;
    let (_, body) = boxes(data).find(|(k, _)| k == *first)?;
    if rest.is_empty() {
        Some(body)
    } else {
        find(body, rest)
    }
}

/// Timescale of the first track of an init segment.
pub fn timescale(init: &[u8]) -> Option<u32> {
    let mdhd = find(init, &[b"moov", b"trak", b"mdia", b"mdhd"])?;
    let at = if *mdhd.first()? == 1 { 4 + 16 } else { 4 + 8 };
    let ts = u32::from_be_bytes(mdhd.get(at..at + 4)?.try_into().ok()?);
    (ts > 0).then_some(ts)
}

/// Base media decode time of the first track fragment of a `moof`(+`mdat`) buffer.
pub fn base_decode_time(fragment: &[u8]) -> Option<u64> {
    let tfdt = find(fragment, &[b"moof", b"traf", b"tfdt"])?;
    if *tfdt.first()? == 1 {
        Some(u64::from_be_bytes(tfdt.get(4..12)?.try_into().ok()?))
    } else {
        Some(u32::from_be_bytes(tfdt.get(4..8)?.try_into().ok()?) as u64)
    }
}

/// The RFC 6381 codecs string of an AV1 init segment (`av01.P.LLT.DD`, AV1
/// ISOBMFF binding 5) from its first sample entry's `av1C`: GStreamer 1.22
/// only says `av01`, which browsers' MSE does not take.
pub fn av1_codecs(init: &[u8]) -> Option<String> {
    let stsd = find(
        init,
        &[b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd"],
    )?;
    let (kind, entry) = boxes(stsd.get(8..)?).next()?;
    if &kind != b"av01" {
        return None;
    }
    // VisualSampleEntry fields before the child boxes.
    let (_, av1c) = boxes(entry.get(78..)?).find(|(k, _)| k == b"av1C")?;
    let (marker, b1, b2) = (*av1c.first()?, *av1c.get(1)?, *av1c.get(2)?);
    if marker != 0x81 {
        return None;
    }
    let profile = b1 >> 5;
    let level = b1 & 0x1f;
    let tier = if b2 & 0x80 != 0 { 'H' } else { 'M' };
    let depth = match (b2 & 0x40 != 0, b2 & 0x20 != 0) {
        (true, true) => 12,
        (true, false) => 10,
        _ => 8,
    };
    Some(format!("av01.{profile}.{level:02}{tier}.{depth:02}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn reads_timescale_and_tfdt() {
        let mut mdhd = vec![0u8, 0, 0, 0];
        mdhd.extend_from_slice(&[0; 8]);
        mdhd.extend_from_slice(&90000u32.to_be_bytes());
        mdhd.extend_from_slice(&[0; 8]);
        let init = [
            bx(b"ftyp", b"cmfc"),
            bx(b"moov", &bx(b"trak", &bx(b"mdia", &bx(b"mdhd", &mdhd)))),
        ]
        .concat();
        assert_eq!(timescale(&init), Some(90000));
        let mut tfdt = vec![1u8, 0, 0, 0];
        tfdt.extend_from_slice(&123_456_789_000u64.to_be_bytes());
        let frag = [
            bx(
                b"moof",
                &[bx(b"mfhd", &[0; 8]), bx(b"traf", &bx(b"tfdt", &tfdt))].concat(),
            ),
            bx(b"mdat", &[1, 2, 3]),
        ]
        .concat();
        assert_eq!(base_decode_time(&frag), Some(123_456_789_000));
        assert_eq!(base_decode_time(&frag[..20]), None);
    }

    fn av1_init(av1c: &[u8]) -> Vec<u8> {
        let mut entry = vec![0u8; 78];
        entry.extend_from_slice(&bx(b"av1C", av1c));
        let mut stsd = vec![0u8, 0, 0, 0, 0, 0, 0, 1];
        stsd.extend_from_slice(&bx(b"av01", &entry));
        let stbl = bx(b"stbl", &bx(b"stsd", &stsd));
        bx(b"moov", &bx(b"trak", &bx(b"mdia", &bx(b"minf", &stbl))))
    }

    #[test]
    fn av1_codecs_string_from_av1c() {
        // Main profile, level 3.0 (idx 4), Main tier, 8 bit, 4:2:0.
        assert_eq!(
            av1_codecs(&av1_init(&[0x81, 0x04, 0x0c, 0x00])).as_deref(),
            Some("av01.0.04M.08")
        );
        // Profile 2, level idx 13, High tier, 12 bit.
        assert_eq!(
            av1_codecs(&av1_init(&[0x81, (2 << 5) | 13, 0x80 | 0x40 | 0x20, 0])).as_deref(),
            Some("av01.2.13H.12")
        );
        assert_eq!(av1_codecs(&av1_init(&[0x01, 0x04, 0x0c])), None);
        assert_eq!(av1_codecs(&av1_init(&[0x81])), None);
    }

    proptest! {
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = timescale(&data);
            let _ = base_decode_time(&data);
            let _ = av1_codecs(&data);
        }
    }
}
