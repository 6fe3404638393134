//! Frame classifiers behind specvadgate's `engine` property. Each takes 10 ms
//! mono f32 frames at the stream's rate and answers voiced / not voiced.

use rubato::Resampler;

/// Frames quieter than this are never voice, whatever the noise floor.
const ABSOLUTE_FLOOR_DB: f64 = -60.0;

/// Voiced when the frame's level exceeds an adaptive noise floor that falls
/// fast (to follow quiet rooms) and rises slowly (so speech does not raise it
/// within an utterance).
#[derive(Debug, Default)]
pub struct EnergyEngine {
    floor_db: Option<f64>,
}

impl EnergyEngine {
    pub fn is_voiced(&mut self, frame: &[f32], threshold_db: f64) -> bool {
        let energy = frame.iter().map(|s| (*s as f64) * (*s as f64)).sum::<f64>() / frame.len().max(1) as f64;
        let level = (10.0 * energy.max(1e-10).log10()).max(-100.0);
        let floor = self.floor_db.get_or_insert(level);
        let voiced = level > ABSOLUTE_FLOOR_DB && level > *floor + threshold_db;
        if level < *floor {
            *floor += (level - *floor) * 0.5;
        } else {
            *floor += (level - *floor) * 0.002;
        }
        voiced
    }
}

/// The WebRTC VAD (GMM on sub-band energies) through `earshot`, a pure-Rust
/// port. It takes 8, 16, 32 or 48 kHz; other rates are resampled to 16 kHz.
pub struct WebRtcEngine {
    vad: earshot::VoiceActivityDetector,
    rate: u32,
    resampler: Option<rubato::FftFixedIn<f32>>,
    /// Resampled samples waiting to fill a 10 ms frame at 16 kHz.
    queue: Vec<f32>,
    last: bool,
}

impl WebRtcEngine {
    /// `aggressiveness` 0 (keeps most speech) to 3 (fewest false positives).
    pub fn new(rate: u32, aggressiveness: u32) -> Result<Self, String> {
        let profile = match aggressiveness {
            0 => earshot::VoiceActivityProfile::QUALITY,
            1 => earshot::VoiceActivityProfile::LBR,
            2 => earshot::VoiceActivityProfile::AGGRESSIVE,
            _ => earshot::VoiceActivityProfile::VERY_AGGRESSIVE,
        };
        let resampler = match rate {
            8000 | 16000 | 32000 | 48000 => None,
            _ => Some(
                rubato::FftFixedIn::<f32>::new(rate as usize, 16000, (rate / 100) as usize, 1, 1)
                    .map_err(|e| format!("cannot resample {rate} Hz to 16 kHz for the WebRTC VAD: {e}"))?,
            ),
        };
        Ok(Self { vad: earshot::VoiceActivityDetector::new(profile), rate, resampler, queue: Vec::new(), last: false })
    }

    fn predict(&mut self, rate: u32, samples: &[f32]) -> Option<bool> {
        let pcm: Vec<i16> = samples.iter().map(|s| (s.clamp(-1.0, 1.0) * 32767.0) as i16).collect();
        let result = match rate {
            8000 => self.vad.predict_8khz(&pcm),
            16000 => self.vad.predict_16khz(&pcm),
            32000 => self.vad.predict_32khz(&pcm),
            _ => self.vad.predict_48khz(&pcm),
        };
        result.ok()
    }

    /// `frame` holds 10 ms at the stream's rate.
    pub fn is_voiced(&mut self, frame: &[f32]) -> bool {
        let Some(resampler) = self.resampler.as_mut() else {
            if let Some(v) = self.predict(self.rate, frame) {
                self.last = v;
            }
            return self.last;
        };
        if frame.len() != resampler.input_frames_next() {
            return self.last;
        }
        if let Ok(out) = resampler.process(&[frame], None) {
            self.queue.extend_from_slice(&out[0]);
        }
        while self.queue.len() >= 160 {
            let chunk: Vec<f32> = self.queue.drain(..160).collect();
            if let Some(v) = self.predict(16000, &chunk) {
                self.last = v;
            }
        }
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, ms: u32, amp: f32) -> Vec<Vec<f32>> {
        let n = rate / 100;
        (0..ms / 10)
            .map(|f| {
                (0..n)
                    .map(|i| {
                        let t = (f * n + i) as f32 / rate as f32;
                        (1..=6).map(|h| (2.0 * std::f32::consts::PI * 150.0 * h as f32 * t).sin() / h as f32).sum::<f32>() * amp
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn energy_engine_follows_the_noise_floor() {
        let mut e = EnergyEngine::default();
        let quiet = vec![0.001f32; 160];
        for _ in 0..50 {
            assert!(!e.is_voiced(&quiet, 9.0));
        }
        assert!(e.is_voiced(&[0.3f32; 160], 9.0));
        assert!(!EnergyEngine::default().is_voiced(&[0.00001f32; 160], 0.0), "below -60 dBFS is never voice");
    }

    #[test]
    fn webrtc_engine_works_at_native_and_resampled_rates() {
        for rate in [8000, 16000, 22050, 44100, 48000] {
            let mut e = WebRtcEngine::new(rate, 0).unwrap();
            let silence = vec![0f32; (rate / 100) as usize];
            let quiet: Vec<bool> = (0..30).map(|_| e.is_voiced(&silence)).collect();
            assert!(quiet.iter().all(|v| !v), "{rate} Hz: silence is not voice");
            let voiced = tone(rate, 500, 0.3).iter().filter(|f| e.is_voiced(f)).count();
            assert!(voiced > 25, "{rate} Hz: only {voiced}/50 frames of a harmonic tone were voiced");
        }
    }
}
