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

/// Turns 10 ms frames at the stream's rate into 16 kHz samples (a copy when
/// the stream is 16 kHz already), queued until an engine takes them.
pub struct To16k {
    resampler: Option<rubato::FftFixedIn<f32>>,
    pub queue: Vec<f32>,
}

impl To16k {
    pub fn new(rate: u32) -> Result<Self, String> {
        let resampler = if rate == 16000 {
            None
        } else {
            Some(
                rubato::FftFixedIn::<f32>::new(rate as usize, 16000, (rate / 100) as usize, 1, 1)
                    .map_err(|e| format!("cannot resample {rate} Hz to 16 kHz for analysis: {e}"))?,
            )
        };
        Ok(Self { resampler, queue: Vec::new() })
    }

    pub fn push(&mut self, frame: &[f32]) {
        match self.resampler.as_mut() {
            None => self.queue.extend_from_slice(frame),
            Some(r) => {
                // Frames are always 10 ms; anything else (never produced) is skipped, not guessed at.
                if frame.len() == r.input_frames_next()
                    && let Ok(out) = r.process(&[frame], None)
                {
                    self.queue.extend_from_slice(&out[0]);
                }
            }
        }
    }
}

/// The WebRTC VAD (GMM on sub-band energies) through `earshot`, a pure-Rust
/// port. It takes 8, 16, 32 or 48 kHz; other rates are resampled to 16 kHz.
pub struct WebRtcEngine {
    vad: earshot::VoiceActivityDetector,
    rate: u32,
    to16k: Option<To16k>,
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
        let to16k = match rate {
            8000 | 16000 | 32000 | 48000 => None,
            _ => Some(To16k::new(rate)?),
        };
        Ok(Self { vad: earshot::VoiceActivityDetector::new(profile), rate, to16k, last: false })
    }

    fn predict(&mut self, rate: u32, samples: &[f32]) {
        let pcm: Vec<i16> = samples.iter().map(|s| (s.clamp(-1.0, 1.0) * 32767.0) as i16).collect();
        let result = match rate {
            8000 => self.vad.predict_8khz(&pcm),
            16000 => self.vad.predict_16khz(&pcm),
            32000 => self.vad.predict_32khz(&pcm),
            _ => self.vad.predict_48khz(&pcm),
        };
        if let Ok(voiced) = result {
            self.last = voiced;
        }
    }

    /// `frame` holds 10 ms at the stream's rate.
    pub fn is_voiced(&mut self, frame: &[f32]) -> bool {
        match self.to16k.take() {
            None => self.predict(self.rate, frame),
            Some(mut to16k) => {
                to16k.push(frame);
                while to16k.queue.len() >= 160 {
                    let chunk: Vec<f32> = to16k.queue.drain(..160).collect();
                    self.predict(16000, &chunk);
                }
                self.to16k = Some(to16k);
            }
        }
        self.last
    }
}

/// ONNX Runtime loaded from a shared library once per process (ort's
/// load-dynamic), so the plugin builds without downloading anything.
static ORT_ENV: std::sync::OnceLock<Result<ort::environment::Environment, String>> = std::sync::OnceLock::new();

fn ort_environment(library: &str) -> Result<&'static ort::environment::Environment, String> {
    ORT_ENV
        .get_or_init(|| {
            let builder = ort::init_from(library).map_err(|e| format!("cannot load ONNX Runtime from {library}: {e}"))?;
            builder.with_name("rtai").build().map_err(|e| format!("ONNX Runtime does not start: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Silero VAD (v5/v6 ONNX) at 16 kHz: 512-sample chunks with 64 samples of
/// context and a recurrent state, one speech probability per 32 ms.
pub struct SileroEngine {
    session: ort::session::Session,
    to16k: To16k,
    context: Vec<f32>,
    state: Vec<f32>,
    last_probability: f32,
}

const SILERO_CHUNK: usize = 512;
const SILERO_CONTEXT: usize = 64;

impl SileroEngine {
    pub fn new(rate: u32, model_path: &str, library: &str) -> Result<Self, String> {
        if model_path.is_empty() {
            return Err("the silero engine needs model-path (silero_vad.onnx from the PyPI silero-vad package)".into());
        }
        let env = ort_environment(library)?;
        let options = |e: &dyn std::fmt::Display| format!("ONNX Runtime session options: {e}");
        // One thread per session: many sessions (streams) share the cores.
        let session = ort::session::Session::builder(env)
            .map_err(|e| options(&e))?
            .with_intra_threads(1)
            .map_err(|e| options(&e))?
            .with_inter_threads(1)
            .map_err(|e| options(&e))?
            .commit_from_file(model_path)
            .map_err(|e| format!("cannot load the Silero model {model_path}: {e}"))?;
        Ok(Self {
            session,
            to16k: To16k::new(rate)?,
            context: vec![0.0; SILERO_CONTEXT],
            state: vec![0.0; 2 * 128],
            last_probability: 0.0,
        })
    }

    fn infer(&mut self, chunk: &[f32]) -> Result<f32, ort::Error> {
        let mut input = Vec::with_capacity(SILERO_CONTEXT + SILERO_CHUNK);
        input.extend_from_slice(&self.context);
        input.extend_from_slice(chunk);
        self.context.copy_from_slice(&chunk[SILERO_CHUNK - SILERO_CONTEXT..]);
        let outputs = self.session.run(ort::inputs![
            "input" => ort::value::Tensor::from_array(([1usize, SILERO_CONTEXT + SILERO_CHUNK], input))?,
            "state" => ort::value::Tensor::from_array(([2usize, 1, 128], self.state.clone()))?,
            "sr" => ort::value::Tensor::from_array(([1usize], vec![16000i64]))?,
        ])?;
        let (_, probability) = outputs["output"].try_extract_tensor::<f32>()?;
        let probability = probability.first().copied().unwrap_or(0.0);
        let (_, state) = outputs["stateN"].try_extract_tensor::<f32>()?;
        if state.len() == self.state.len() {
            self.state.copy_from_slice(state);
        }
        Ok(probability)
    }

    /// Speech probability after `frame` (10 ms at the stream's rate); updated every 32 ms.
    pub fn probability(&mut self, frame: &[f32]) -> Result<f32, String> {
        self.to16k.push(frame);
        while self.to16k.queue.len() >= SILERO_CHUNK {
            let chunk: Vec<f32> = self.to16k.queue.drain(..SILERO_CHUNK).collect();
            self.last_probability = self.infer(&chunk).map_err(|e| format!("Silero inference failed: {e}"))?;
        }
        Ok(self.last_probability)
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
