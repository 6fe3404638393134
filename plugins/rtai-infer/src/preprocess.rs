//! Frames to model inputs: RGB samples from RGB/RGBA/BGR/NV12/I420 frames or
//! JPEG images, fitted (letterbox, stretch or centre crop; bilinear) into the model's
//! input size as a tensor (RGB or BGR, per-channel mean and std), or the whole frame
//! as JPEG for endpoints that take images.

use gst_video::VideoFormat;
use gst_video::prelude::*;

use crate::postprocess::Letterbox;

/// The video formats inferclient reads.
pub const FORMATS: [VideoFormat; 5] = [
    VideoFormat::Rgb,
    VideoFormat::Rgba,
    VideoFormat::Bgr,
    VideoFormat::Nv12,
    VideoFormat::I420,
];

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
    [
        clamp(c + 1.596 * e),
        clamp(c - 0.392 * d - 0.813 * e),
        clamp(c + 2.017 * d),
    ]
}

/// Reads a mapped frame into packed RGB; `None` for a format outside [`FORMATS`].
pub fn to_rgb(frame: &gst_video::VideoFrameRef<&gst::BufferRef>) -> Option<Rgb> {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let mut out = vec![0u8; w * h * 3];
    let stride = |p: usize| frame.plane_stride()[p] as usize;
    match frame.format() {
        VideoFormat::Rgb | VideoFormat::Bgr | VideoFormat::Rgba => {
            let data = frame.plane_data(0).ok()?;
            let bpp = if frame.format() == VideoFormat::Rgba {
                4
            } else {
                3
            };
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
            let (u_plane, v_plane) = if nv12 {
                (frame.plane_data(1).ok()?, &[][..])
            } else {
                (frame.plane_data(1).ok()?, frame.plane_data(2).ok()?)
            };
            for y in 0..h {
                for x in 0..w {
                    let yy = luma[y * stride(0) + x];
                    let (u, v) = if nv12 {
                        let i = (y / 2) * stride(1) + (x / 2) * 2;
                        (u_plane[i], u_plane[i + 1])
                    } else {
                        (
                            u_plane[(y / 2) * stride(1) + x / 2],
                            v_plane[(y / 2) * stride(2) + x / 2],
                        )
                    };
                    out[(y * w + x) * 3..][..3].copy_from_slice(&yuv_to_rgb(yy, u, v));
                }
            }
        }
        _ => return None,
    }
    Some(Rgb {
        width: w as u32,
        height: h as u32,
        data: out,
    })
}

/// How a frame is fitted into the model's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resize {
    /// Aspect ratio kept, centred, grey (114) bars.
    Letterbox,
    /// Scaled to fill the input exactly.
    Stretch,
    /// Scaled to cover the input, the centre kept.
    CenterCrop,
}

/// Everything that says how a frame becomes the model's input tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub width: u32,
    pub height: u32,
    pub layout: Layout,
    pub resize: Resize,
    /// Channels in B, G, R order instead of R, G, B.
    pub bgr: bool,
    /// Pixel values scaled to 0..1 (else 0..255) before `mean` and `std`.
    pub normalize: bool,
    /// Per channel, in the tensor's channel order: value = (pixel - mean) / std.
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl TensorSpec {
    pub fn new(width: u32, height: u32, layout: Layout, normalize: bool) -> Self {
        Self {
            width,
            height,
            layout,
            resize: Resize::Letterbox,
            bgr: false,
            normalize,
            mean: [0.0; 3],
            std: [1.0; 3],
        }
    }
}

/// The letterboxed input tensor, values in 0..255 (or 0..1 with `normalize`),
/// padding grey (114, as YOLO models are trained with).
pub fn tensor(
    rgb: &Rgb,
    input_width: u32,
    input_height: u32,
    layout: Layout,
    normalize: bool,
) -> (Vec<f32>, Letterbox) {
    tensor_with(
        rgb,
        &TensorSpec::new(input_width, input_height, layout, normalize),
    )
}

/// The input tensor as `spec` says, sampled bilinearly (pixel centres aligned).
pub fn tensor_with(rgb: &Rgb, spec: &TensorSpec) -> (Vec<f32>, Letterbox) {
    let (fw, fh) = (rgb.width, rgb.height);
    let lb = match spec.resize {
        Resize::Letterbox => Letterbox::fit(fw, fh, spec.width, spec.height),
        Resize::Stretch => Letterbox::stretch(fw, fh, spec.width, spec.height),
        Resize::CenterCrop => Letterbox::center_crop(fw, fh, spec.width, spec.height),
    };
    let (iw, ih) = (spec.width as usize, spec.height as usize);
    let scale = if spec.normalize { 1.0 / 255.0 } else { 1.0 };
    let value = |c: usize, v: f32| (v * scale - spec.mean[c]) / spec.std[c];
    let index = |c: usize, x: usize, y: usize| match spec.layout {
        Layout::Nchw => c * iw * ih + y * iw + x,
        Layout::Nhwc => (y * iw + x) * 3 + c,
    };
    let mut out = vec![0.0f32; iw * ih * 3];
    let (w, h) = (fw as usize, fh as usize);
    let pixel = |x: usize, y: usize| &rgb.data[(y * w + x) * 3..][..3];
    for y in 0..ih {
        // The source position of this input pixel's centre.
        let sy = (y as f64 + 0.5 - lb.pad_y) / lb.scale_y - 0.5;
        let inside_y = sy >= -0.5 && sy < h as f64 - 0.5;
        let sy = sy.clamp(0.0, (h - 1) as f64);
        let (y0, fy) = (sy.floor() as usize, (sy - sy.floor()) as f32);
        let y1 = (y0 + 1).min(h - 1);
        for x in 0..iw {
            let sx = (x as f64 + 0.5 - lb.pad_x) / lb.scale - 0.5;
            let inside = inside_y && sx >= -0.5 && sx < w as f64 - 0.5;
            let mut rgb_value = [114.0f32; 3];
            if inside {
                let sx = sx.clamp(0.0, (w - 1) as f64);
                let (x0, fx) = (sx.floor() as usize, (sx - sx.floor()) as f32);
                let x1 = (x0 + 1).min(w - 1);
                let (a, b, c, d) = (pixel(x0, y0), pixel(x1, y0), pixel(x0, y1), pixel(x1, y1));
                for ch in 0..3 {
                    let top = a[ch] as f32 * (1.0 - fx) + b[ch] as f32 * fx;
                    let bottom = c[ch] as f32 * (1.0 - fx) + d[ch] as f32 * fx;
                    rgb_value[ch] = top * (1.0 - fy) + bottom * fy;
                }
            }
            for c in 0..3 {
                let source = if spec.bgr { 2 - c } else { c };
                out[index(c, x, y)] = value(c, rgb_value[source]);
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

/// Largest JPEG side decoded: a corrupt header cannot make us allocate gigabytes.
const MAX_JPEG_SIDE: usize = 8192;

fn jpeg_decoder(
    data: &[u8],
) -> zune_jpeg::JpegDecoder<zune_jpeg::zune_core::bytestream::ZCursor<&[u8]>> {
    let options = zune_jpeg::zune_core::options::DecoderOptions::default()
        .jpeg_set_out_colorspace(zune_jpeg::zune_core::colorspace::ColorSpace::RGB)
        .set_max_width(MAX_JPEG_SIDE)
        .set_max_height(MAX_JPEG_SIDE);
    zune_jpeg::JpegDecoder::new_with_options(
        zune_jpeg::zune_core::bytestream::ZCursor::new(data),
        options,
    )
}

/// A JPEG (any colour space: grey, YCbCr, CMYK) as packed RGB.
pub fn decode_jpeg(data: &[u8]) -> Result<Rgb, String> {
    let mut decoder = jpeg_decoder(data);
    let pixels = decoder
        .decode()
        .map_err(|e| format!("JPEG decoding failed: {e:?}"))?;
    let info = decoder.info().ok_or("JPEG without a frame header")?;
    let (width, height) = (info.width as u32, info.height as u32);
    if width == 0 || height == 0 || pixels.len() != width as usize * height as usize * 3 {
        return Err(format!(
            "JPEG decoded to {} bytes for {width}x{height}",
            pixels.len()
        ));
    }
    Ok(Rgb {
        width,
        height,
        data: pixels,
    })
}

/// A JPEG's size from its headers, without decoding the image.
pub fn jpeg_size(data: &[u8]) -> Result<(u32, u32), String> {
    let mut decoder = jpeg_decoder(data);
    decoder
        .decode_headers()
        .map_err(|e| format!("not a JPEG: {e:?}"))?;
    let info = decoder.info().ok_or("JPEG without a frame header")?;
    if info.width == 0 || info.height == 0 {
        return Err(format!("JPEG of {}x{}", info.width, info.height));
    }
    Ok((info.width as u32, info.height as u32))
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
        let rgb = Rgb {
            width: 4,
            height: 2,
            data,
        };
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
    fn bilinear_resize_modes_channel_order_and_mean_std() {
        // 2x1 frame: black, white. Stretched to 4x1: pixel centres at -0.25, 0.25, 0.75, 1.25.
        let rgb = Rgb {
            width: 2,
            height: 1,
            data: vec![0, 0, 0, 255, 255, 255],
        };
        let mut spec = TensorSpec::new(4, 1, Layout::Nhwc, false);
        spec.resize = Resize::Stretch;
        let (t, _) = tensor_with(&rgb, &spec);
        let reds: Vec<f32> = t.chunks(3).map(|p| p[0]).collect();
        assert_eq!(
            reds,
            vec![0.0, 63.75, 191.25, 255.0],
            "bilinear, edges clamped"
        );
        // Centre crop of a 4x2 frame into 2x2: the middle two columns.
        let rgb = Rgb {
            width: 4,
            height: 2,
            data: [[10u8, 0, 0], [20, 0, 0], [30, 0, 0], [40, 0, 0]]
                .repeat(2)
                .concat(),
        };
        let mut spec = TensorSpec::new(2, 2, Layout::Nhwc, false);
        spec.resize = Resize::CenterCrop;
        let (t, lb) = tensor_with(&rgb, &spec);
        assert_eq!((t[0], t[3]), (20.0, 30.0));
        assert_eq!(lb.pad_x, -1.0);
        // BGR order, 0..1 and ImageNet-style mean/std per channel of the tensor.
        let rgb = Rgb {
            width: 1,
            height: 1,
            data: vec![255, 0, 51],
        };
        let mut spec = TensorSpec::new(1, 1, Layout::Nchw, true);
        spec.bgr = true;
        spec.mean = [0.5, 0.5, 0.5];
        spec.std = [0.5, 0.5, 0.5];
        let (t, _) = tensor_with(&rgb, &spec);
        for (got, want) in t.iter().zip([-0.6, -1.0, 1.0]) {
            assert!((got - want).abs() < 1e-6, "{t:?}");
        }
        // Padding is grey 114 through the same mean and std.
        let mut spec = TensorSpec::new(1, 3, Layout::Nchw, true);
        spec.mean = [0.5; 3];
        spec.std = [0.5; 3];
        let (t, _) = tensor_with(&rgb, &spec);
        assert!((t[0] - (114.0 / 255.0 - 0.5) / 0.5).abs() < 1e-6, "{t:?}");
    }

    #[test]
    fn jpeg_decodes_back_and_bad_jpegs_are_errors() {
        // A 16x8 frame: left half red, right half blue, through our encoder and back.
        let mut data = Vec::new();
        for _y in 0..8 {
            for x in 0..16 {
                data.extend_from_slice(if x < 8 { &[255, 0, 0] } else { &[0, 0, 255] });
            }
        }
        let encoded = jpeg(
            &Rgb {
                width: 16,
                height: 8,
                data,
            },
            95,
        )
        .unwrap();
        assert_eq!(jpeg_size(&encoded).unwrap(), (16, 8));
        let rgb = decode_jpeg(&encoded).unwrap();
        assert_eq!((rgb.width, rgb.height, rgb.data.len()), (16, 8, 16 * 8 * 3));
        let (left, right) = (
            &rgb.data[(4 * 16 + 2) * 3..][..3],
            &rgb.data[(4 * 16 + 13) * 3..][..3],
        );
        assert!(left[0] > 200 && left[2] < 60, "red stays red: {left:?}");
        assert!(
            right[2] > 200 && right[0] < 60,
            "blue stays blue: {right:?}"
        );
        // Truncated, empty, not a JPEG, mangled: errors, never a panic.
        assert!(
            decode_jpeg(&encoded[..encoded.len() / 2]).is_err(),
            "truncated"
        );
        for bad in [&[][..], b"\x89PNG\r\n\x1a\n".as_slice()] {
            assert!(decode_jpeg(bad).is_err() && jpeg_size(bad).is_err());
        }
        let mut x = 0x9e37_79b9_u64;
        for _ in 0..300 {
            let mut b = encoded.clone();
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x as usize) % b.len();
                b[i] = (x >> 24) as u8;
            }
            let _ = decode_jpeg(&b);
            let _ = jpeg_size(&b);
        }
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
