//! Helpers shared by the AV1 tests: source clips, encode/decode through real
//! pipelines, PSNR, an IVF writer and the ffmpeg peer.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use gst::prelude::*;
use gst_video::prelude::*;

pub fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstrtaiav1::plugin_register_static().unwrap();
    });
}

/// Raw frames of one format, tightly packed (no row padding), with their caps.
#[derive(Clone)]
pub struct Clip {
    pub info: gst_video::VideoInfo,
    pub frames: Vec<Vec<u8>>,
}

impl Clip {
    pub fn width(&self) -> u32 {
        self.info.width()
    }
    pub fn height(&self) -> u32 {
        self.info.height()
    }
    pub fn caps(&self) -> gst::Caps {
        self.info.to_caps().unwrap()
    }
}

/// Copies a mapped frame into tightly packed planes.
pub fn pack(frame: &gst_video::VideoFrameRef<&gst::BufferRef>) -> Vec<u8> {
    let info = frame.info();
    let bytes = info.format_info().pixel_stride()[0].max(1) as usize;
    let mut out = Vec::new();
    for p in 0..info.n_planes() {
        let w = info.comp_width(p as u8) as usize * bytes;
        let h = info.comp_height(p as u8) as usize;
        let stride = frame.plane_stride()[p as usize] as usize;
        let data = frame.plane_data(p).unwrap();
        for row in 0..h {
            out.extend_from_slice(&data[row * stride..row * stride + w]);
        }
    }
    out
}

/// `n` frames of a moving videotestsrc pattern (`ball`, `smpte`, …) at 30 fps.
pub fn clip(width: u32, height: u32, n: usize, format: &str, pattern: &str) -> Clip {
    init();
    let desc = format!(
        "videotestsrc num-buffers={n} pattern={pattern} ! video/x-raw,format={format},width={width},height={height},framerate=30/1 ! appsink name=sink sync=false"
    );
    let (caps, buffers) = run_to_appsink(&desc, &[]);
    let info = gst_video::VideoInfo::from_caps(&caps).unwrap();
    let frames = buffers
        .iter()
        .map(|b| {
            pack(&gst_video::VideoFrameRef::from_buffer_ref_readable(b.as_ref(), &info).unwrap())
        })
        .collect();
    Clip { info, frames }
}

/// Runs `desc` (with an appsink named `sink` or else to EOS, and appsrcs named in `inputs`
/// fed with their caps and buffers) to EOS; returns the sink's caps and buffers.
pub fn run_to_appsink(
    desc: &str,
    inputs: &[(&str, gst::Caps, Vec<gst::Buffer>)],
) -> (gst::Caps, Vec<gst::Buffer>) {
    init();
    let pipeline = gst::parse::launch(desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = pipeline
        .by_name("sink")
        .map(|s| s.downcast::<gst_app::AppSink>().unwrap());
    // Format and caps before PLAYING: the first segment must be in time.
    for (name, caps, _) in inputs {
        let src = pipeline
            .by_name(name)
            .unwrap()
            .downcast::<gst_app::AppSrc>()
            .unwrap();
        src.set_caps(Some(caps));
        src.set_format(gst::Format::Time);
    }
    pipeline.set_state(gst::State::Playing).unwrap();
    for (name, _, buffers) in inputs {
        let src = pipeline
            .by_name(name)
            .unwrap()
            .downcast::<gst_app::AppSrc>()
            .unwrap();
        for b in buffers {
            src.push_buffer(b.clone()).unwrap();
        }
        src.end_of_stream().unwrap();
    }
    let mut caps = None;
    let mut out = Vec::new();
    let bus = pipeline.bus().unwrap();
    let error = if let Some(sink) = sink {
        while let Ok(sample) = sink.pull_sample() {
            caps = sample.caps_owned().or(caps);
            out.push(sample.buffer_owned().unwrap());
        }
        bus.pop_filtered(&[gst::MessageType::Error])
    } else {
        // No appsink: run until EOS (a file sink).
        bus.timed_pop_filtered(
            gst::ClockTime::from_seconds(120),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .filter(|m| m.type_() == gst::MessageType::Error)
    };
    pipeline.set_state(gst::State::Null).unwrap();
    if let Some(msg) = error
        && let gst::MessageView::Error(e) = msg.view()
    {
        panic!("{desc}: {} ({:?})", e.error(), e.debug());
    }
    (caps.unwrap_or_else(gst::Caps::new_empty), out)
}

/// The clip's frames as timestamped buffers (30 fps).
pub fn buffers(clip: &Clip) -> Vec<gst::Buffer> {
    clip.frames
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut b = gst::Buffer::with_size(clip.info.size()).unwrap();
            {
                let b = b.get_mut().unwrap();
                b.set_pts(gst::ClockTime::from_nseconds(i as u64 * 1_000_000_000 / 30));
                b.set_duration(gst::ClockTime::from_nseconds(1_000_000_000 / 30));
                let mut vf =
                    gst_video::VideoFrameRef::from_buffer_ref_writable(b, &clip.info).unwrap();
                let bytes = clip.info.format_info().pixel_stride()[0].max(1) as usize;
                let mut offset = 0;
                for p in 0..clip.info.n_planes() {
                    let w = clip.info.comp_width(p as u8) as usize * bytes;
                    let h = clip.info.comp_height(p as u8) as usize;
                    let stride = vf.plane_stride()[p as usize] as usize;
                    let data = vf.plane_data_mut(p).unwrap();
                    for row in 0..h {
                        data[row * stride..row * stride + w]
                            .copy_from_slice(&f[offset..offset + w]);
                        offset += w;
                    }
                }
            }
            b
        })
        .collect()
}

/// Encodes the clip with `encoder` (a gst-launch fragment); returns the output caps and units.
pub fn encode(clip: &Clip, encoder: &str) -> (gst::Caps, Vec<gst::Buffer>) {
    run_to_appsink(
        &format!("appsrc name=src ! {encoder} ! appsink name=sink sync=false"),
        &[("src", clip.caps(), buffers(clip))],
    )
}

/// Decodes AV1 units with `decoder`; returns the frames (packed) and the output info.
pub fn decode(
    caps: &gst::Caps,
    units: &[gst::Buffer],
    decoder: &str,
) -> (gst_video::VideoInfo, Vec<Vec<u8>>) {
    let (caps, out) = run_to_appsink(
        &format!("appsrc name=src ! {decoder} ! appsink name=sink sync=false"),
        &[("src", caps.clone(), units.to_vec())],
    );
    let info = gst_video::VideoInfo::from_caps(&caps).unwrap();
    let frames = out
        .iter()
        .map(|b| {
            pack(&gst_video::VideoFrameRef::from_buffer_ref_readable(b.as_ref(), &info).unwrap())
        })
        .collect();
    (info, frames)
}

/// PSNR in dB over the luma plane of two 8-bit frames (99 for identical frames).
pub fn psnr_y(a: &[u8], b: &[u8], width: u32, height: u32) -> f64 {
    let n = (width * height) as usize;
    let mse: f64 = a[..n]
        .iter()
        .zip(&b[..n])
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum::<f64>()
        / n as f64;
    if mse == 0.0 {
        99.0
    } else {
        10.0 * (255.0 * 255.0 / mse).log10()
    }
}

/// PSNR in dB over the luma plane of two 10-bit little-endian frames.
pub fn psnr_y10(a: &[u8], b: &[u8], width: u32, height: u32) -> f64 {
    let n = (width * height) as usize;
    let sample = |d: &[u8], i: usize| u16::from_le_bytes([d[2 * i], d[2 * i + 1]]) as f64;
    let mse: f64 = (0..n)
        .map(|i| (sample(a, i) - sample(b, i)).powi(2))
        .sum::<f64>()
        / n as f64;
    if mse == 0.0 {
        99.0
    } else {
        10.0 * (1023.0 * 1023.0 / mse).log10()
    }
}

/// (mean, min) PSNR of decoded frames against the source, frame by frame.
pub fn psnr_stats(decoded: &[Vec<u8>], source: &[Vec<u8>], width: u32, height: u32) -> (f64, f64) {
    assert_eq!(decoded.len(), source.len(), "decoded frame count");
    let values: Vec<f64> = decoded
        .iter()
        .zip(source)
        .map(|(d, s)| psnr_y(d, s, width, height))
        .collect();
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let min = values.iter().cloned().fold(f64::INFINITY, f64::min);
    (mean, min)
}

/// A scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rtai-av1-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes AV1 temporal units as an IVF file (32-byte header, 12-byte frame headers).
pub fn write_ivf(path: &Path, width: u32, height: u32, units: &[gst::Buffer]) {
    let mut out = Vec::new();
    out.extend_from_slice(b"DKIF");
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&32u16.to_le_bytes());
    out.extend_from_slice(b"AV01");
    out.extend_from_slice(&(width as u16).to_le_bytes());
    out.extend_from_slice(&(height as u16).to_le_bytes());
    out.extend_from_slice(&30u32.to_le_bytes()); // time base denominator (rate)
    out.extend_from_slice(&1u32.to_le_bytes()); // numerator (scale)
    out.extend_from_slice(&(units.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for (i, u) in units.iter().enumerate() {
        let map = u.map_readable().unwrap();
        out.extend_from_slice(&(map.len() as u32).to_le_bytes());
        out.extend_from_slice(&(i as u64).to_le_bytes());
        out.extend_from_slice(&map);
    }
    std::fs::write(path, out).unwrap();
}

/// Writes the clip (8-bit I420) as a Y4M file for ffmpeg.
pub fn write_y4m(path: &Path, clip: &Clip) {
    let mut out = format!(
        "YUV4MPEG2 W{} H{} F30:1 Ip A1:1 C420jpeg\n",
        clip.width(),
        clip.height()
    )
    .into_bytes();
    for f in &clip.frames {
        out.extend_from_slice(b"FRAME\n");
        out.extend_from_slice(f);
    }
    std::fs::write(path, out).unwrap();
}

/// Runs ffmpeg (Debian's, installed by scripts/setup.sh) and returns stdout.
pub fn ffmpeg(args: &[&str]) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error"])
        .args(args)
        .output()
        .expect("ffmpeg runs (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "ffmpeg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// ffmpeg decodes `path` with `decoder` to packed I420 frames of `width`x`height`.
pub fn ffmpeg_decode(path: &Path, decoder: &str, width: u32, height: u32) -> Vec<Vec<u8>> {
    let raw = ffmpeg(&[
        "-c:v",
        decoder,
        "-i",
        path.to_str().unwrap(),
        "-fps_mode",
        "passthrough",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "yuv420p",
        "-",
    ]);
    let size = (width * height * 3 / 2) as usize;
    assert_eq!(raw.len() % size, 0, "ffmpeg output is whole frames");
    raw.chunks(size).map(|c| c.to_vec()).collect()
}
