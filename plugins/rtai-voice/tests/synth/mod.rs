//! Synthetic 10 ms S16LE mono frames at 16 kHz shared by the gate's tests:
//! quiet noise, a voice-like harmonic series, a click and a held chord.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

pub const RATE: u64 = 16_000;
pub const FRAME: u64 = 160; // 10 ms
pub const CAPS: &str = "audio/x-raw,format=S16LE,layout=interleaved,rate=16000,channels=1";

/// GStreamer with the voice plugin registered, once per process.
pub fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstrtaivoice::plugin_register_static().unwrap();
    });
}

#[derive(Clone, Copy)]
pub enum Sound {
    Quiet,
    Voiced,
    Click,
    /// A held C major chord, like a synth pad or a hold-music note.
    Chord,
}

/// One 10 ms S16LE mono buffer of `sound`, frame number `n` (sets PTS).
pub fn frame(sound: Sound, n: u64, seed: &mut u32) -> gst::Buffer {
    let mut samples = Vec::with_capacity(FRAME as usize * 2);
    for i in 0..FRAME {
        let t = (n * FRAME + i) as f64 / RATE as f64;
        *seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let noise = (*seed >> 8) as f64 / (1u32 << 24) as f64 * 2.0 - 1.0;
        let v = match sound {
            Sound::Quiet => 0.001 * noise,
            Sound::Click => 0.7 * noise,
            // A 150 Hz voice-like harmonic series.
            Sound::Voiced => {
                (1..=6)
                    .map(|h| (2.0 * std::f64::consts::PI * 150.0 * h as f64 * t).sin() / h as f64)
                    .sum::<f64>()
                    * 0.2
            }
            Sound::Chord => {
                [261.6, 329.6, 392.0]
                    .iter()
                    .map(|f| (2.0 * std::f64::consts::PI * f * t).sin())
                    .sum::<f64>()
                    * 0.15
            }
        };
        samples.extend_from_slice(&((v * 32767.0) as i16).to_le_bytes());
    }
    let mut buffer = gst::Buffer::from_mut_slice(samples);
    let b = buffer.get_mut().unwrap();
    b.set_pts(gst::ClockTime::from_nseconds(
        n * FRAME * 1_000_000_000 / RATE,
    ));
    b.set_duration(gst::ClockTime::from_mseconds(10));
    buffer
}
