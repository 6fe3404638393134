//! The `ladder` property: `HEIGHTp:KBITS,...` (e.g. `1080p:5000,720p:2800,480p:1400`),
//! parsed and validated, and the rungs a source of a given size gets (never upscaled).

/// One rung: output height and video bitrate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rung {
    pub height: u32,
    pub kbps: u32,
}

impl Rung {
    /// The rendition name used in URLs (`720p`).
    pub fn name(&self) -> String {
        format!("{}p", self.height)
    }
}

/// At most this many rungs and characters (the property is configuration, but bounded all the same).
pub const MAX_RUNGS: usize = 8;
const MAX_LEN: usize = 256;

/// Parses `1080p:5000,720p:2800`: heights 16..=4320 (even), bitrates 50..=100000 kbit/s, no
/// duplicate heights; sorted from the highest rung down.
pub fn parse(s: &str) -> Result<Vec<Rung>, String> {
    if s.len() > MAX_LEN {
        return Err(format!("ladder is longer than {MAX_LEN} characters"));
    }
    let mut rungs = Vec::new();
    for (i, item) in s.split(',').map(str::trim).enumerate() {
        if item.is_empty() {
            return Err(format!("rung {} is empty (expected HEIGHTp:KBITS)", i + 1));
        }
        let (h, k) = item
            .split_once(':')
            .ok_or_else(|| format!("rung {} {item:?}: expected HEIGHTp:KBITS", i + 1))?;
        let h = h.trim();
        let h = h.strip_suffix('p').unwrap_or(h);
        let height: u32 = h
            .parse()
            .map_err(|_| format!("rung {} {item:?}: height is not a number", i + 1))?;
        let kbps: u32 = k
            .trim()
            .parse()
            .map_err(|_| format!("rung {} {item:?}: bitrate is not a number", i + 1))?;
        if !(16..=4320).contains(&height) || !height.is_multiple_of(2) {
            return Err(format!(
                "rung {} {item:?}: height must be even and within 16..=4320",
                i + 1
            ));
        }
        if !(50..=100_000).contains(&kbps) {
            return Err(format!(
                "rung {} {item:?}: bitrate must be within 50..=100000 kbit/s",
                i + 1
            ));
        }
        if rungs.iter().any(|r: &Rung| r.height == height) {
            return Err(format!(
                "rung {} {item:?}: height {height} given twice",
                i + 1
            ));
        }
        rungs.push(Rung { height, kbps });
        if rungs.len() > MAX_RUNGS {
            return Err(format!("more than {MAX_RUNGS} rungs"));
        }
    }
    rungs.sort_by_key(|r| std::cmp::Reverse(r.height));
    Ok(rungs)
}

/// The rungs for a source `source_height` high: those not above it; if every rung is
/// above it, one rung at the source height with the lowest rung's bitrate (never upscale).
pub fn select(rungs: &[Rung], source_height: u32) -> Vec<Rung> {
    let kept: Vec<Rung> = rungs
        .iter()
        .copied()
        .filter(|r| r.height <= source_height)
        .collect();
    if !kept.is_empty() {
        return kept;
    }
    let kbps = rungs.iter().map(|r| r.kbps).min().unwrap_or(1000);
    vec![Rung {
        height: source_height.max(2) & !1,
        kbps,
    }]
}

/// Output width for `height` keeping the source's display aspect ratio, rounded to even.
pub fn width_for(height: u32, src_w: u32, src_h: u32, par: (i32, i32)) -> u32 {
    let (pn, pd) = if par.0 > 0 && par.1 > 0 {
        (par.0 as u64, par.1 as u64)
    } else {
        (1, 1)
    };
    let src_h = src_h.max(1) as u64;
    let w = (height as u64 * src_w as u64 * pn) as f64 / (src_h * pd) as f64;
    let w = (w / 2.0).round() as u64 * 2;
    w.clamp(2, 16384) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn default_ladder() {
        let r = parse("1080p:5000,720p:2800,480p:1400").unwrap();
        assert_eq!(
            r,
            vec![
                Rung {
                    height: 1080,
                    kbps: 5000
                },
                Rung {
                    height: 720,
                    kbps: 2800
                },
                Rung {
                    height: 480,
                    kbps: 1400
                }
            ]
        );
        assert_eq!(r[1].name(), "720p");
    }

    #[test]
    fn errors_are_clear() {
        assert!(parse("").unwrap_err().contains("empty"));
        assert!(parse("720p").unwrap_err().contains("HEIGHTp:KBITS"));
        assert!(parse("720p:x").unwrap_err().contains("bitrate"));
        assert!(parse("721p:100").unwrap_err().contains("even"));
        assert!(parse("720p:100,720p:200").unwrap_err().contains("twice"));
        assert!(parse("720p:10").unwrap_err().contains("50..=100000"));
    }

    #[test]
    fn never_upscales() {
        let r = parse("1080p:5000,720p:2800,480p:1400").unwrap();
        let s = select(&r, 720);
        assert_eq!(
            s.iter().map(|r| r.height).collect::<Vec<_>>(),
            vec![720, 480]
        );
        let s = select(&r, 360);
        assert_eq!(
            s,
            vec![Rung {
                height: 360,
                kbps: 1400
            }]
        );
        assert_eq!(width_for(480, 1280, 720, (1, 1)), 854);
        assert_eq!(width_for(720, 1280, 720, (1, 1)), 1280);
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,300}") {
            if let Ok(r) = parse(&s) {
                prop_assert!(!r.is_empty() && r.len() <= MAX_RUNGS);
                prop_assert!(r.windows(2).all(|w| w[0].height > w[1].height));
            }
        }

        #[test]
        fn selected_rungs_never_exceed_source(h in 2u32..5000, hs in proptest::collection::vec(8u32..2000, 1..6)) {
            let text = hs.iter().enumerate().map(|(i, h)| format!("{}p:{}", h * 2, 100 + i)).collect::<Vec<_>>().join(",");
            if let Ok(r) = parse(&text) {
                for rung in select(&r, h) {
                    prop_assert!(rung.height <= h.max(2));
                }
            }
        }
    }
}
