//! Prosody of one mono segment: pitch by YIN (de Cheveigné & Kawahara 2002),
//! level, and speaking rate as syllable nuclei per second (voiced intensity
//! peaks, after de Jong & Wempe 2009). No GStreamer here.

/// Analysis hop (s): one pitch and one intensity value per 10 ms.
const HOP_S: f64 = 0.010;
/// YIN's absolute threshold on the cumulative mean normalized difference.
const YIN_THRESHOLD: f64 = 0.15;
/// Frames quieter than this (dBFS), or this far below the segment's loudest, have no pitch.
const SILENCE_DB: f64 = -55.0;
const BELOW_MAX_DB: f64 = 30.0;
/// A syllable nucleus stands at least this far (dB) above the dips on both sides.
const MIN_DIP_DB: f64 = 2.0;
/// Nuclei are at most this far (dB) below the segment's loudest frame.
const NUCLEUS_BELOW_MAX_DB: f64 = 25.0;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub min_pitch: f64,
    pub max_pitch: f64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            min_pitch: 60.0,
            max_pitch: 500.0,
        }
    }
}

/// What [`analyze`] finds; times in seconds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Measures {
    pub duration: f64,
    pub f0_mean: f64,
    pub f0_min: f64,
    pub f0_max: f64,
    pub level_db: f64,
    pub syllables: u32,
    /// Syllable nuclei per second of the sounding span (first to last frame
    /// within 30 dB of the loudest and above −55 dBFS).
    pub rate: f64,
    pub voiced_ratio: f64,
    /// The pitch track (Hz per hop, 0 = unvoiced), for tests and debugging.
    pub track: Vec<f64>,
}

fn db(power: f64) -> f64 {
    10.0 * power.max(1e-12).log10()
}

/// Averages `factor` samples into one (a box low-pass before decimation).
fn decimate(x: &[f32], factor: usize) -> Vec<f32> {
    if factor <= 1 {
        return x.to_vec();
    }
    x.chunks_exact(factor)
        .map(|c| c.iter().sum::<f32>() / factor as f32)
        .collect()
}

/// YIN on `frame` (at least `2 * tau_max` samples): the period in samples, or
/// `None` when no dip of the normalized difference is below the threshold.
fn yin(frame: &[f32], tau_min: usize, tau_max: usize, d: &mut Vec<f64>) -> Option<f64> {
    let w = tau_max;
    d.clear();
    d.resize(tau_max + 2, 0.0);
    for (tau, slot) in d.iter_mut().enumerate().take(tau_max + 2).skip(1) {
        let mut sum = 0.0f64;
        for j in 0..w {
            let diff = (frame[j] - frame[j + tau]) as f64;
            sum += diff * diff;
        }
        *slot = sum;
    }
    // Cumulative mean normalized difference.
    let mut running = 0.0;
    d[0] = 1.0;
    for (tau, v) in d.iter_mut().enumerate().skip(1) {
        running += *v;
        *v = if running > 0.0 {
            *v * tau as f64 / running
        } else {
            1.0
        };
    }
    let mut tau = tau_min.max(2);
    while tau <= tau_max {
        if d[tau] < YIN_THRESHOLD {
            while tau < tau_max && d[tau + 1] < d[tau] {
                tau += 1;
            }
            // Parabolic interpolation around the minimum.
            let (a, b, c) = (d[tau - 1], d[tau], d[tau + 1]);
            let denom = a - 2.0 * b + c;
            let shift = if denom.abs() > 1e-12 {
                (0.5 * (a - c) / denom).clamp(-0.5, 0.5)
            } else {
                0.0
            };
            return Some(tau as f64 + shift);
        }
        tau += 1;
    }
    None
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = (p * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Counts syllable nuclei: peaks of the smoothed intensity contour that are
/// voiced, within [`NUCLEUS_BELOW_MAX_DB`] of the loudest frame, and separated
/// from the previous nucleus by a dip of at least [`MIN_DIP_DB`] below both.
fn syllable_nuclei(intensity: &[f64], voiced: &[bool]) -> u32 {
    let n = intensity.len();
    if n < 3 {
        return 0;
    }
    // 3-hop moving average.
    let smooth: Vec<f64> = (0..n)
        .map(|i| {
            let lo = i.saturating_sub(1);
            let hi = (i + 1).min(n - 1);
            intensity[lo..=hi].iter().sum::<f64>() / (hi - lo + 1) as f64
        })
        .collect();
    let max = smooth.iter().cloned().fold(f64::MIN, f64::max);
    let floor = max - NUCLEUS_BELOW_MAX_DB;
    let is_voiced = |i: usize| voiced[i.saturating_sub(1)..=(i + 1).min(n - 1)].contains(&true);
    // (value, dip since then) of the last accepted nucleus.
    let mut last: Option<f64> = None;
    let mut dip = f64::MAX;
    let mut count = 0;
    for i in 0..n {
        let v = smooth[i];
        dip = dip.min(v);
        let peak =
            (i == 0 || v > smooth[i - 1]) && (i + 1 == n || v >= smooth[i + 1]) && v >= floor;
        if !peak || !is_voiced(i) {
            continue;
        }
        match last {
            None => {
                count += 1;
                last = Some(v);
                dip = v;
            }
            Some(prev) => {
                if dip <= prev.min(v) - MIN_DIP_DB {
                    count += 1;
                    last = Some(v);
                    dip = v;
                } else if v > prev {
                    // The same syllable rising further.
                    last = Some(v);
                    dip = v;
                }
            }
        }
    }
    count
}

/// Measures `samples` (mono, −1..1) at `rate` Hz.
pub fn analyze(samples: &[f32], rate: u32, params: &Params) -> Measures {
    let rate = rate.max(1) as usize;
    let factor = (rate / 16_000).max(1);
    let x = decimate(samples, factor);
    let sr = (rate / factor) as f64;
    let duration = samples.len() as f64 / rate as f64;
    let max_pitch = params.max_pitch.clamp(20.0, sr / 4.0);
    let min_pitch = params.min_pitch.clamp(20.0, max_pitch / 1.5);
    let tau_min = (sr / max_pitch).floor() as usize;
    let tau_max = (sr / min_pitch).ceil() as usize;
    let frame_len = 2 * tau_max + 2;
    let hop = ((sr * HOP_S).round() as usize).max(1);
    // Intensity over 30 ms windows centred like the pitch frames.
    let win = ((sr * 0.030) as usize).max(1);
    let mut levels = Vec::new();
    let mut starts = Vec::new();
    let mut start = 0;
    while start + frame_len.max(win) <= x.len() {
        let centre = start + frame_len / 2;
        let lo = centre.saturating_sub(win / 2);
        let seg = &x[lo..(lo + win).min(x.len())];
        let power = seg.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / seg.len() as f64;
        levels.push(db(power));
        starts.push(start);
        start += hop;
    }
    let loudest = levels.iter().cloned().fold(f64::MIN, f64::max);
    let gate = SILENCE_DB.max(loudest - BELOW_MAX_DB);
    let mut d = Vec::new();
    let mut track = Vec::with_capacity(starts.len());
    for (&s, &level) in starts.iter().zip(&levels) {
        let f0 = if level >= gate {
            yin(&x[s..s + frame_len], tau_min, tau_max, &mut d)
                .map(|tau| sr / tau)
                .filter(|f| *f >= min_pitch * 0.97 && *f <= max_pitch * 1.03)
                .unwrap_or(0.0)
        } else {
            0.0
        };
        track.push(f0);
    }
    let voiced: Vec<bool> = track.iter().map(|f| *f > 0.0).collect();
    let mut f0s: Vec<f64> = track.iter().cloned().filter(|f| *f > 0.0).collect();
    f0s.sort_by(f64::total_cmp);
    let voiced_n = f0s.len();
    let f0_mean = if voiced_n > 0 {
        f0s.iter().sum::<f64>() / voiced_n as f64
    } else {
        0.0
    };
    // Level: the power mean of voiced frames (all frames when none is voiced).
    let pick: Vec<f64> = levels
        .iter()
        .zip(&voiced)
        .filter(|(_, v)| **v || voiced_n == 0)
        .map(|(l, _)| 10f64.powf(l / 10.0))
        .collect();
    let level_db = if pick.is_empty() {
        let p = x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / x.len().max(1) as f64;
        db(p)
    } else {
        db(pick.iter().sum::<f64>() / pick.len() as f64)
    };
    let syllables = syllable_nuclei(&levels, &voiced);
    // Rate over the sounding span (first to last frame above the gate): the
    // silence a VAD keeps before and after the speech is not speaking time.
    let sounding = levels.iter().position(|l| *l >= gate).map(|first| {
        let last = levels.iter().rposition(|l| *l >= gate).unwrap_or(first);
        ((last - first) as f64 * hop as f64 + frame_len as f64) / sr
    });
    let span = sounding.unwrap_or(duration).min(duration);
    Measures {
        duration,
        f0_mean,
        f0_min: percentile(&f0s, 0.05),
        f0_max: percentile(&f0s, 0.95),
        level_db,
        syllables,
        rate: if span > 0.0 {
            syllables as f64 / span
        } else {
            0.0
        },
        voiced_ratio: if track.is_empty() {
            0.0
        } else {
            voiced_n as f64 / track.len() as f64
        },
        track,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    /// A voice-like harmonic tone: f0 with 8 harmonics falling 6 dB/octave.
    fn harmonic(f0: f64, rate: u32, seconds: f64, amp: f64) -> Vec<f32> {
        let n = (rate as f64 * seconds) as usize;
        (0..n)
            .map(|i| {
                let t = i as f64 / rate as f64;
                let s: f64 = (1..=8)
                    .map(|h| (2.0 * PI * f0 * h as f64 * t).sin() / h as f64)
                    .sum();
                (amp * s / 2.0) as f32
            })
            .collect()
    }

    #[test]
    fn yin_finds_the_pitch_of_tones_at_common_rates() {
        for rate in [8_000, 16_000, 44_100, 48_000] {
            for f0 in [80.0, 110.0, 150.0, 220.0, 310.0, 440.0] {
                let m = analyze(&harmonic(f0, rate, 0.5, 0.5), rate, &Params::default());
                let err = (m.f0_mean - f0).abs() / f0;
                assert!(err < 0.01, "{f0} Hz at {rate}: {}", m.f0_mean);
                assert!(m.voiced_ratio > 0.9, "{f0} at {rate}: {}", m.voiced_ratio);
                assert!(m.f0_max / m.f0_min < 1.02);
            }
        }
    }

    #[test]
    fn a_glide_has_its_range_and_silence_and_noise_have_no_pitch() {
        let rate = 16_000;
        // 120 → 240 Hz linear glide over 1 s: range ≈ 1 octave (P5–P95: ~10.4 st).
        let n = rate as usize;
        let mut phase = 0.0f64;
        let glide: Vec<f32> = (0..n)
            .map(|i| {
                let f = 120.0 + 120.0 * i as f64 / n as f64;
                phase += 2.0 * PI * f / rate as f64;
                (0.4 * (phase.sin() + 0.5 * (2.0 * phase).sin())) as f32
            })
            .collect();
        let m = analyze(&glide, rate, &Params::default());
        let st = 12.0 * (m.f0_max / m.f0_min).log2();
        assert!((9.0..11.5).contains(&st), "{st} st, {m:?}");
        assert!((m.f0_mean - 180.0).abs() < 6.0, "{}", m.f0_mean);
        let silence = vec![0.0f32; rate as usize];
        let m = analyze(&silence, rate, &Params::default());
        assert_eq!((m.f0_mean, m.voiced_ratio, m.syllables), (0.0, 0.0, 0));
        let mut seed = 1u32;
        let noise: Vec<f32> = (0..rate)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect();
        let m = analyze(&noise, rate, &Params::default());
        assert!(m.voiced_ratio < 0.05, "noise voiced {}", m.voiced_ratio);
    }

    #[test]
    fn level_follows_the_amplitude() {
        let a = analyze(
            &harmonic(150.0, 16_000, 0.5, 0.5),
            16_000,
            &Params::default(),
        );
        let b = analyze(
            &harmonic(150.0, 16_000, 0.5, 0.05),
            16_000,
            &Params::default(),
        );
        assert!((a.level_db - b.level_db - 20.0).abs() < 0.5, "{a:?} {b:?}");
    }

    /// `syllables` bursts of a 150 Hz voice in `seconds`, raised-cosine envelopes.
    fn bursts(syllables: usize, seconds: f64, rate: u32) -> Vec<f32> {
        let tone = harmonic(150.0, rate, seconds, 0.5);
        let per = seconds / syllables as f64;
        tone.iter()
            .enumerate()
            .map(|(i, v)| {
                let t = i as f64 / rate as f64;
                let phase = (t % per) / per;
                // Sound for 70 % of each syllable, then a short gap.
                let env = if phase < 0.7 {
                    (PI * phase / 0.7).sin().powi(2)
                } else {
                    0.0
                };
                v * env as f32
            })
            .collect()
    }

    #[test]
    fn syllable_nuclei_count_the_bursts() {
        for (n, secs) in [(4, 2.0), (8, 2.0), (12, 2.0), (5, 1.0)] {
            let m = analyze(&bursts(n, secs, 16_000), 16_000, &Params::default());
            assert!(
                (m.syllables as i64 - n as i64).abs() <= 1,
                "{n} in {secs} s: {}",
                m.syllables
            );
            // The span ends with the last burst's sound, 30 % of a syllable early.
            let span = secs - 0.3 * secs / n as f64;
            assert!((m.rate - n as f64 / span).abs() <= 1.2 / span, "{m:?}");
        }
    }
}
