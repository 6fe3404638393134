//! Frames to model inputs: RGB samples from RGB/RGBA/BGR/NV12/I420 frames,
//! letterboxed (nearest neighbour) into the model's input size as a tensor,
//! or the whole frame as JPEG for endpoints that take images.

use gst_video::VideoFormat;
use gst_video::prelude::*;

use crate::postprocess::Letterbox;

/// The video formats inferclient reads.
pub const FORMATS: [VideoFormat; 5] = [VideoFormat::Rgb, VideoFormat::Rgba, VideoFormat::Bgr, VideoFormat::Nv12, VideoFormat::I420];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Nchw,
    Nhwc,
}

/// A frame read into packed RGB (what the other steps work on).
pub struct Rgb {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    // BT.601 limited range, as videotestsrc and most cameras produce.
    let c = (y as f32 - 16.0) * 1.164;
    let d = u as f32 - 128.0;
    let e = v as f32 - 128.0;
    let clamp = |x: f32| x.round().clamp(0.0, 255.0) as u8;
    [clamp(c + 1.596 * e), clamp(c - 0.392 * d - 0.813 * e), clamp(c + 2.017 * d)]
}

/// Reads a mapped frame into packed RGB; `None` for a format outside [`FORMATS`].
pub fn to_rgb(frame: &gst_video::VideoFrameRef<&gst::BufferRef>) -> Option<Rgb> {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let mut out = vec![0u8; w * h * 3];
    let stride = |p: usize| frame.plane_stride()[p] as usize;
    match frame.format() {
        VideoFormat::Rgb | VideoFormat::Bgr | VideoFormat::Rgba => {
            let data = frame.plane_data(0).ok()?;
            let bpp = if frame.format() == VideoFormat::Rgba { 4 } else { 3 };
            let bgr = frame.format() == VideoFormat::Bgr;
            for y in 0..h {
                for x in 0..w {
                    let s = &data[y * stride(0) + x * bpp..][..3];
                    let d = &mut out[(y * w + x) * 3..][..3];
                    if bgr {
                        d.copy_from_slice(&[s[2], s[1], s[0]]);
                    } else {
                        d.copy_from_slice(s);
                    }
                }
            }
        }
        VideoFormat::I420 | VideoFormat::Nv12 => {
            let luma = frame.plane_data(0).ok()?;
            let nv12 = frame.format() == VideoFormat::Nv12;
            let (u_plane, v_plane) = if nv12 { (frame.plane_data(1).ok()?, &[][..]) } else { (frame.plane_data(1).ok()?, frame.plane_data(2).ok()?) };
            for y in 0..h {
                for x in 0..w {
                    let yy = luma[y * stride(0) + x];
                    let (u, v) = if nv12 {
                        let i = (y / 2) * stride(1) + (x / 2) * 2;
                        (u_plane[i], u_plane[i + 1])
                    } else {
                        (u_plane[(y / 2) * stride(1) + x / 2], v_plane[(y / 2) * stride(2) + x / 2])
                    };
                    out[(y * w + x) * 3..][..3].copy_from_slice(&yuv_to_rgb(yy, u, v));
                }
            }
        }
        _ => return None,
    }
    Some(Rgb { width: w as u32, height: h as u32, data: out })
}

/// The letterboxed input tensor, values in 0..255 (or 0..1 with `normalize`),
/// padding grey (114, as YOLO models are trained with).
pub fn tensor(rgb: &Rgb, input_width: u32, input_height: u32, layout: Layout, normalize: bool) -> (Vec<f32>, Letterbox) {
    let lb = Letterbox::fit(rgb.width, rgb.height, input_width, input_height);
    let (iw, ih) = (input_width as usize, input_height as usize);
    let mut out = vec![114.0f32; iw * ih * 3];
    let scale = if normalize { 1.0 / 255.0 } else { 1.0 };
    if normalize {
        out.iter_mut().for_each(|v| *v *= scale);
    }
    for y in 0..ih {
        let fy = (y as f64 + 0.5 - lb.pad_y) / lb.scale;
        if fy < 0.0 || fy >= rgb.height as f64 {
            continue;
        }
        for x in 0..iw {
            let fx = (x as f64 + 0.5 - lb.pad_x) / lb.scale;
            if fx < 0.0 || fx >= rgb.width as f64 {
                continue;
            }
            let s = &rgb.data[(fy as usize * rgb.width as usize + fx as usize) * 3..][..3];
            for c in 0..3 {
                let i = match layout {
                    Layout::Nchw => c * iw * ih + y * iw + x,
                    Layout::Nhwc => (y * iw + x) * 3 + c,
                };
                out[i] = s[c] as f32 * scale;
            }
        }
    }
    (out, lb)
}

/// The frame as a baseline JPEG.
pub fn jpeg(rgb: &Rgb, quality: u8) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let w = u16::try_from(rgb.width).map_err(|_| "frame too wide for JPEG")?;
    let h = u16::try_from(rgb.height).map_err(|_| "frame too high for JPEG")?;
    jpeg_encoder::Encoder::new(&mut out, quality)
        .encode(&rgb.data, w, h, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| format!("JPEG encoding failed: {e}"))?;
    Ok(out)
}

/// Interleaved S16LE samples as a WAV file (what transcription endpoints take).
pub fn wav(samples: &[u8], rate: u32, channels: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(44 + samples.len());
    let byte_rate = rate * channels as u32 * 2;
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + samples.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&byte_rate.to_le_bytes());
    out.extend_from_slice(&(channels * 2).to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(samples.len() as u32).to_le_bytes());
    out.extend_from_slice(samples);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_letterboxes_and_lays_out() {
        // 4x2 frame, left half red, right half blue, into 4x4: rows 0 and 3 are padding.
        let mut data = Vec::new();
        for _y in 0..2 {
            for x in 0..4 {
                data.extend_from_slice(if x < 2 { &[255, 0, 0] } else { &[0, 0, 255] });
            }
        }
        let rgb = Rgb { width: 4, height: 2, data };
        let (t, lb) = tensor(&rgb, 4, 4, Layout::Nchw, false);
        assert_eq!((lb.scale, lb.pad_y), (1.0, 1.0));
        assert_eq!(t[0], 114.0, "padding row");
        assert_eq!(t[4], 255.0, "R of (0, 1)");
        assert_eq!(t[16 + 4], 0.0, "G of (0, 1)");
        assert_eq!(t[32 + 4 + 3], 255.0, "B of (3, 1)");
        let (t, _) = tensor(&rgb, 4, 4, Layout::Nhwc, true);
        assert_eq!(&t[12..15], &[1.0, 0.0, 0.0]);
    }

    #[test]
    fn yuv_black_and_white() {
        assert_eq!(yuv_to_rgb(16, 128, 128), [0, 0, 0]);
        assert_eq!(yuv_to_rgb(235, 128, 128), [255, 255, 255]);
    }

    #[test]
    fn wav_header_is_44_bytes() {
        let w = wav(&[0u8; 320], 16000, 1);
        assert_eq!(w.len(), 364);
        assert_eq!(&w[..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(w[24..28].try_into().unwrap()), 16000);
    }
}
