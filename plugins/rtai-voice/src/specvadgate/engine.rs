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
        let energy = frame.iter().map(|s| (*s as f64) * (*s as f64)).sum::<f64>()
            / frame.len().max(1) as f64;
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
        Ok(Self {
            resampler,
            queue: Vec::new(),
        })
    }

    /// Drops queued samples and the resampler's history.
    pub fn reset(&mut self) {
        self.queue.clear();
        if let Some(r) = self.resampler.as_mut() {
            r.reset();
        }
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
    profile: earshot::VoiceActivityProfile,
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
        Ok(Self {
            vad: earshot::VoiceActivityDetector::new(profile.clone()),
            profile,
            rate,
            to16k,
            last: false,
        })
    }

    fn predict(&mut self, rate: u32, samples: &[f32]) {
        let pcm: Vec<i16> = samples
            .iter()
            .map(|s| (s.clamp(-1.0, 1.0) * 32767.0) as i16)
            .collect();
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

    /// Forgets the stream: a fresh detector, same profile and rate.
    pub fn reset(&mut self) {
        self.vad = earshot::VoiceActivityDetector::new(self.profile.clone());
        if let Some(t) = self.to16k.as_mut() {
            t.reset();
        }
        self.last = false;
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

/// Tells tones from voice: beeps, chords, knocks and ringing put nearly all
/// their energy into a few spectral lines, while voiced speech spreads it over
/// many harmonics and unvoiced speech over a wide band. Used by the gate so a
/// tone can neither open nor commit a segment, whatever the engine says.
pub struct ToneDetector {
    fft: std::sync::Arc<dyn realfft::RealToComplex<f32>>,
    window: Vec<f32>,
    recent: std::collections::VecDeque<f32>,
    input: Vec<f32>,
    spectrum: Vec<realfft::num_complex::Complex<f32>>,
    power: Vec<f32>,
    /// Bins of the band that speech energy lives in (80–4000 Hz).
    band: std::ops::Range<usize>,
}

/// Spectral lines counted as "the tone": a chord has three notes.
const TONE_PEAKS: usize = 3;
/// A Hann window's main lobe: a pure sine covers its bin and two either side.
const PEAK_HALF_WIDTH: usize = 2;

impl ToneDetector {
    /// Looks at the last ~32 ms (a power of two of samples) at `rate`.
    pub fn new(rate: u32) -> Self {
        let n = ((rate as usize * 32 / 1000).next_power_of_two()).max(64);
        let fft = realfft::RealFftPlanner::<f32>::new().plan_fft_forward(n);
        let window = (0..n)
            .map(|i| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / n as f32).cos())
            .collect();
        let bin = |hz: f32| ((hz * n as f32 / rate as f32).round() as usize).min(n / 2);
        Self {
            spectrum: fft.make_output_vec(),
            input: fft.make_input_vec(),
            fft,
            window,
            recent: std::collections::VecDeque::with_capacity(n),
            power: vec![0.0; n / 2 + 1],
            band: bin(80.0)..bin(4000.0) + 1,
        }
    }

    /// Keeps the most recent samples of the mono stream.
    pub fn push(&mut self, frame: &[f32]) {
        let n = self.window.len();
        if frame.len() >= n {
            self.recent.clear();
            self.recent.extend(&frame[frame.len() - n..]);
            return;
        }
        let excess = (self.recent.len() + frame.len()).saturating_sub(n);
        self.recent.drain(..excess);
        self.recent.extend(frame);
    }

    /// Share of the band's energy outside the strongest few spectral lines of
    /// the recent audio: near 0 for a tone, a few percent or more for voice.
    /// 1.0 until a full window has arrived or when the band is silent.
    pub fn residual(&mut self) -> f64 {
        let n = self.window.len();
        if self.recent.len() < n {
            return 1.0;
        }
        for ((x, s), w) in self.input.iter_mut().zip(&self.recent).zip(&self.window) {
            *x = s * w;
        }
        if self
            .fft
            .process(&mut self.input, &mut self.spectrum)
            .is_err()
        {
            return 1.0;
        }
        for (p, c) in self.power.iter_mut().zip(&self.spectrum) {
            *p = c.norm_sqr();
        }
        let band = &mut self.power[self.band.clone()];
        let total: f64 = band.iter().map(|p| *p as f64).sum();
        if total <= f64::MIN_POSITIVE {
            return 1.0;
        }
        let mut in_peaks = 0.0f64;
        for _ in 0..TONE_PEAKS {
            let Some((i, _)) = band.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)) else {
                break;
            };
            let lobe = i.saturating_sub(PEAK_HALF_WIDTH)..(i + PEAK_HALF_WIDTH + 1).min(band.len());
            in_peaks += band[lobe.clone()].iter().map(|p| *p as f64).sum::<f64>();
            band[lobe].fill(0.0);
        }
        (1.0 - in_peaks / total).max(0.0)
    }
}

/// ONNX Runtime loaded from a shared library (ort's load-dynamic), so the plugin
/// builds without downloading anything. A process can hold one ONNX Runtime:
/// the first library that loads stays; a failed load is not remembered, so a
/// later element with a corrected path succeeds.
static ORT_ENV: std::sync::Mutex<Option<(String, std::sync::Arc<ort::environment::Environment>)>> =
    std::sync::Mutex::new(None);

fn ort_environment(library: &str) -> Result<std::sync::Arc<ort::environment::Environment>, String> {
    let mut env = ORT_ENV.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((loaded, env)) = env.as_ref() {
        if loaded != library {
            gst::warning!(
                CAT,
                "ONNX Runtime is already loaded from {loaded}; {library} is not loaded too (one per process)"
            );
        }
        return Ok(env.clone());
    }
    let builder = ort::init_from(library)
        .map_err(|e| format!("cannot load ONNX Runtime from {library}: {e}"))?;
    let built = std::sync::Arc::new(
        builder
            .with_name("rtai")
            .build()
            .map_err(|e| format!("ONNX Runtime does not start: {e}"))?,
    );
    *env = Some((library.to_string(), built.clone()));
    Ok(built)
}

static CAT: std::sync::LazyLock<gst::DebugCategory> = std::sync::LazyLock::new(|| {
    gst::DebugCategory::new(
        "specvadgate",
        gst::DebugColorFlags::empty(),
        Some("Speculative voice activity gate"),
    )
});

const SILERO_CHUNK: usize = 512;
const SILERO_CONTEXT: usize = 64;
const SILERO_INPUT: usize = SILERO_CONTEXT + SILERO_CHUNK;
/// One session's recurrent state: [2, 1, 128].
const SILERO_STATE: usize = 2 * 128;

/// One 32 ms window waiting for the model: its input (context + chunk) and the
/// session's recurrent state before it.
struct Window {
    ticket: u64,
    input: Vec<f32>,
    state: Vec<f32>,
}

type WindowResult = Result<(f32, Vec<f32>), String>;

#[derive(Default)]
struct BatchQueue {
    next_ticket: u64,
    waiting: Vec<Window>,
    results: std::collections::HashMap<u64, WindowResult>,
    running: bool,
    batches: u64,
    windows: u64,
}

/// A Silero model shared by sessions: the windows that are due at the same time
/// run as one `[N, 576]` batch with per-session state (`[2, N, 128]`). No thread
/// of its own: the first caller that finds no batch running runs everything
/// queued (its own window included) and hands out the results; the others wait
/// at most for the batch in flight and their own. Alone, a window runs at once.
pub struct SileroModel {
    session: std::sync::Mutex<ort::session::Session>,
    queue: std::sync::Mutex<BatchQueue>,
    done: std::sync::Condvar,
}

/// Models shared per (library, file) in the process; dropped when the last gate lets go.
type ModelKey = (String, String);
static SHARED_MODELS: std::sync::Mutex<Vec<(ModelKey, std::sync::Weak<SileroModel>)>> =
    std::sync::Mutex::new(Vec::new());

impl SileroModel {
    fn load(model_path: &str, library: &str) -> Result<Self, String> {
        let env = ort_environment(library)?;
        let options = |e: &dyn std::fmt::Display| format!("ONNX Runtime session options: {e}");
        // One thread: sessions (streams, batches) share the cores.
        let session = ort::session::Session::builder(&env)
            .map_err(|e| options(&e))?
            .with_intra_threads(1)
            .map_err(|e| options(&e))?
            .with_inter_threads(1)
            .map_err(|e| options(&e))?
            .commit_from_file(model_path)
            .map_err(|e| format!("cannot load the Silero model {model_path}: {e}"))?;
        Ok(Self {
            session: std::sync::Mutex::new(session),
            queue: Default::default(),
            done: Default::default(),
        })
    }

    /// The process's shared model for this file and library (loaded on first use).
    pub fn shared(model_path: &str, library: &str) -> Result<std::sync::Arc<Self>, String> {
        let mut models = SHARED_MODELS.lock().unwrap_or_else(|e| e.into_inner());
        models.retain(|(_, m)| m.strong_count() > 0);
        let key = (library.to_string(), model_path.to_string());
        if let Some(model) = models
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, m)| m.upgrade())
        {
            return Ok(model);
        }
        let model = std::sync::Arc::new(Self::load(model_path, library)?);
        models.push((key, std::sync::Arc::downgrade(&model)));
        Ok(model)
    }

    /// A model of one session's own (no batching across sessions).
    pub fn private(model_path: &str, library: &str) -> Result<std::sync::Arc<Self>, String> {
        Ok(std::sync::Arc::new(Self::load(model_path, library)?))
    }

    /// Batches run and windows inferred so far.
    pub fn counters(&self) -> (u64, u64) {
        let q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        (q.batches, q.windows)
    }

    /// Speech probability of one window and the session's next state.
    fn infer(&self, input: Vec<f32>, state: Vec<f32>) -> WindowResult {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let ticket = q.next_ticket;
        q.next_ticket += 1;
        q.waiting.push(Window {
            ticket,
            input,
            state,
        });
        loop {
            if let Some(result) = q.results.remove(&ticket) {
                return result;
            }
            if !q.running {
                q.running = true;
                let batch = std::mem::take(&mut q.waiting);
                q.batches += 1;
                q.windows += batch.len() as u64;
                drop(q);
                // A panic must not leave the waiting sessions without results.
                let results =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run(&batch)))
                        .unwrap_or_else(|_| {
                            let e = "Silero inference panicked".to_string();
                            batch.iter().map(|_| Err(e.clone())).collect()
                        });
                q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                for (window, result) in batch.iter().zip(results) {
                    q.results.insert(window.ticket, result);
                }
                q.running = false;
                self.done.notify_all();
                continue;
            }
            q = self.done.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn run(&self, batch: &[Window]) -> Vec<WindowResult> {
        let n = batch.len();
        let run = || -> Result<Vec<(f32, Vec<f32>)>, ort::Error> {
            let mut input = Vec::with_capacity(n * SILERO_INPUT);
            for w in batch {
                input.extend_from_slice(&w.input);
            }
            // [2, N, 128]: layer-major.
            let mut state = Vec::with_capacity(n * SILERO_STATE);
            for layer in 0..2 {
                for w in batch {
                    state.extend_from_slice(&w.state[layer * 128..(layer + 1) * 128]);
                }
            }
            let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
            let outputs = session.run(ort::inputs![
                "input" => ort::value::Tensor::from_array(([n, SILERO_INPUT], input))?,
                "state" => ort::value::Tensor::from_array(([2usize, n, 128], state))?,
                "sr" => ort::value::Tensor::from_array(([1usize], vec![16000i64]))?,
            ])?;
            let (_, probability) = outputs["output"].try_extract_tensor::<f32>()?;
            let (_, next) = outputs["stateN"].try_extract_tensor::<f32>()?;
            Ok((0..n)
                .map(|j| {
                    let p = probability.get(j).copied().unwrap_or(0.0);
                    let mut s = Vec::with_capacity(SILERO_STATE);
                    for layer in 0..2 {
                        let at = (layer * n + j) * 128;
                        match next.get(at..at + 128) {
                            Some(part) => s.extend_from_slice(part),
                            None => {
                                s.extend_from_slice(&batch[j].state[layer * 128..(layer + 1) * 128])
                            }
                        }
                    }
                    (p, s)
                })
                .collect())
        };
        match run() {
            Ok(results) => results.into_iter().map(Ok).collect(),
            Err(e) => {
                let e = format!("Silero inference failed: {e}");
                (0..n).map(|_| Err(e.clone())).collect()
            }
        }
    }
}

/// Silero VAD (v5/v6 ONNX) at 16 kHz: 512-sample chunks with 64 samples of
/// context and a recurrent state, one speech probability per 32 ms.
pub struct SileroEngine {
    model: std::sync::Arc<SileroModel>,
    to16k: To16k,
    context: Vec<f32>,
    state: Vec<f32>,
    last_probability: f32,
}

impl SileroEngine {
    /// `shared`: batch this session's windows with every other shared session of the process.
    pub fn new(rate: u32, model_path: &str, library: &str, shared: bool) -> Result<Self, String> {
        let model = if shared {
            SileroModel::shared(model_path, library)?
        } else {
            SileroModel::private(model_path, library)?
        };
        Ok(Self {
            model,
            to16k: To16k::new(rate)?,
            context: vec![0.0; SILERO_CONTEXT],
            state: vec![0.0; SILERO_STATE],
            last_probability: 0.0,
        })
    }

    /// The model this session runs on (shared or its own).
    pub fn model(&self) -> std::sync::Arc<SileroModel> {
        self.model.clone()
    }

    fn infer(&mut self, chunk: &[f32]) -> Result<f32, String> {
        let mut input = Vec::with_capacity(SILERO_INPUT);
        input.extend_from_slice(&self.context);
        input.extend_from_slice(chunk);
        self.context
            .copy_from_slice(&chunk[SILERO_CHUNK - SILERO_CONTEXT..]);
        let (probability, state) = self.model.infer(input, self.state.clone())?;
        if state.len() == self.state.len() {
            self.state = state;
        }
        Ok(probability)
    }

    /// Forgets the stream (recurrent state, context, queued samples); the model stays loaded.
    pub fn reset(&mut self) {
        self.context.fill(0.0);
        self.state.fill(0.0);
        self.to16k.reset();
        self.last_probability = 0.0;
    }

    /// Speech probability after `frame` (10 ms at the stream's rate); updated every 32 ms.
    pub fn probability(&mut self, frame: &[f32]) -> Result<f32, String> {
        self.to16k.push(frame);
        while self.to16k.queue.len() >= SILERO_CHUNK {
            let chunk: Vec<f32> = self.to16k.queue.drain(..SILERO_CHUNK).collect();
            self.last_probability = self.infer(&chunk)?;
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
                        (1..=6)
                            .map(|h| {
                                (2.0 * std::f32::consts::PI * 150.0 * h as f32 * t).sin() / h as f32
                            })
                            .sum::<f32>()
                            * amp
                    })
                    .collect()
            })
            .collect()
    }

    fn frames_of(rate: u32, ms: u32, mut f: impl FnMut(f32) -> f32) -> Vec<Vec<f32>> {
        let n = rate / 100;
        (0..ms / 10)
            .map(|k| {
                (0..n)
                    .map(|i| f((k * n + i) as f32 / rate as f32))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn tone_detector_tells_chords_from_voice_and_noise() {
        use std::f32::consts::PI;
        for rate in [8000, 16000, 22050, 44100, 48000] {
            let residual_after = |frames: Vec<Vec<f32>>| {
                let mut t = ToneDetector::new(rate);
                frames.iter().for_each(|f| t.push(f));
                t.residual()
            };
            let chord = residual_after(frames_of(rate, 100, |t| {
                [220.0, 277.0, 330.0]
                    .iter()
                    .map(|f| (2.0 * PI * f * t).sin())
                    .sum::<f32>()
                    * 0.1
            }));
            assert!(
                chord < 0.005,
                "{rate} Hz: a three-note chord has residual {chord}"
            );
            // A voice-like source: 120 Hz pulse train harmonics, falling 6 dB per octave.
            let voice = residual_after(frames_of(rate, 100, |t| {
                (1..=30)
                    .map(|h| (2.0 * PI * 120.0 * h as f32 * t).sin() / h as f32)
                    .sum::<f32>()
                    * 0.1
            }));
            assert!(
                voice > 0.02,
                "{rate} Hz: a harmonic voice-like source has residual {voice}"
            );
            let mut noise = 1u32;
            let hiss = residual_after(frames_of(rate, 100, |_| {
                noise = noise.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (noise >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            }));
            assert!(hiss > 0.5, "{rate} Hz: noise has residual {hiss}");
        }
        let mut t = ToneDetector::new(16000);
        assert_eq!(t.residual(), 1.0, "no decision before a full window");
        t.push(&vec![0.0; 4000]);
        assert_eq!(t.residual(), 1.0, "silence is not a tone");
    }

    #[test]
    fn energy_engine_follows_the_noise_floor() {
        let mut e = EnergyEngine::default();
        let quiet = vec![0.001f32; 160];
        for _ in 0..50 {
            assert!(!e.is_voiced(&quiet, 9.0));
        }
        assert!(e.is_voiced(&[0.3f32; 160], 9.0));
        assert!(
            !EnergyEngine::default().is_voiced(&[0.00001f32; 160], 0.0),
            "below -60 dBFS is never voice"
        );
    }

    #[test]
    fn webrtc_engine_works_at_native_and_resampled_rates() {
        for rate in [8000, 16000, 22050, 44100, 48000] {
            let mut e = WebRtcEngine::new(rate, 0).unwrap();
            let silence = vec![0f32; (rate / 100) as usize];
            let quiet: Vec<bool> = (0..30).map(|_| e.is_voiced(&silence)).collect();
            assert!(quiet.iter().all(|v| !v), "{rate} Hz: silence is not voice");
            let voiced = tone(rate, 500, 0.3)
                .iter()
                .filter(|f| e.is_voiced(f))
                .count();
            assert!(
                voiced > 25,
                "{rate} Hz: only {voiced}/50 frames of a harmonic tone were voiced"
            );
        }
    }
}
