//! Request builders: a frame as a KServe tensor or as JPEG images with context.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::InferInputDatatype;
use super::settings::Settings;
use crate::client::{InputDatatype, Request};
use crate::postprocess::Letterbox;
use crate::preprocess::{self, Layout, Resize};

/// The numeric datatype the tensor travels as (JPEG travels as BYTES, not here).
fn numeric_datatype(settings: &Settings) -> InputDatatype {
    match settings.input_datatype {
        InferInputDatatype::Fp16 => InputDatatype::Fp16,
        InferInputDatatype::Uint8 => InputDatatype::Uint8,
        _ => InputDatatype::Fp32,
    }
}

/// A KServe tensor of `rgb`, letterboxed into the model's input.
pub(super) fn tensor_request(settings: &Settings, rgb: &preprocess::Rgb) -> (Request, Letterbox) {
    // Checked when the element starts: a bad mean or std never gets here.
    let mut spec = settings.tensor_spec().unwrap_or_else(|_| {
        preprocess::TensorSpec::new(
            settings.input_width,
            settings.input_height,
            if settings.nchw {
                Layout::Nchw
            } else {
                Layout::Nhwc
            },
            settings.normalize,
        )
    });
    let datatype = numeric_datatype(settings);
    if datatype == InputDatatype::Uint8 {
        // Pixel values as they are: normalize, mean and std are the server's business.
        (spec.normalize, spec.mean, spec.std) = (false, [0.0; 3], [1.0; 3]);
    }
    let (data, letterbox) = preprocess::tensor_with(rgb, &spec);
    let (w, h) = (
        settings.input_width as usize,
        settings.input_height as usize,
    );
    let shape = if settings.nchw {
        vec![1, 3, h, w]
    } else {
        vec![1, h, w, 3]
    };
    (
        Request::Tensor {
            name: settings.input_name.clone(),
            shape,
            datatype,
            data,
        },
        letterbox,
    )
}

/// The frame as JPEG in a BYTES tensor [1] (`input-datatype=jpeg`), for servers that decode
/// and fit images themselves (Triton ensembles, DALI): boxes are mapped back as if the
/// server fitted the `width` x `height` image into the input as `resize` says.
pub(super) fn jpeg_tensor_request(
    settings: &Settings,
    jpeg: Vec<u8>,
    width: u32,
    height: u32,
) -> (Request, Letterbox) {
    let (iw, ih) = (settings.input_width, settings.input_height);
    let letterbox = match settings.tensor_spec().map(|s| s.resize) {
        Ok(Resize::Stretch) => Letterbox::stretch(width, height, iw, ih),
        Ok(Resize::CenterCrop) => Letterbox::center_crop(width, height, iw, ih),
        _ => Letterbox::fit(width, height, iw, ih),
    };
    (
        Request::Bytes {
            name: settings.input_name.clone(),
            items: vec![jpeg],
        },
        letterbox,
    )
}

/// An image request (RunPod, OpenAI chat) with `jpeg` as the current frame after the context.
pub(super) fn images_request(
    context: &mut VecDeque<Vec<u8>>,
    previous_answer: &Mutex<Option<String>>,
    settings: &Settings,
    jpeg: Vec<u8>,
    width: u32,
    height: u32,
) -> (Request, Letterbox) {
    context.push_back(jpeg);
    while context.len() > settings.context_frames.max(1) as usize {
        context.pop_front();
    }
    let previous_answer = if settings.feed_back_answer {
        previous_answer.lock().unwrap().clone()
    } else {
        None
    };
    let request = Request::Images {
        jpegs: context.iter().cloned().collect(),
        width,
        height,
        prompt: settings.prompt.clone(),
        previous_answer,
    };
    (request, Letterbox::identity(width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tensor_request_has_the_layout_and_letterbox_of_the_settings() {
        let rgb = preprocess::Rgb {
            width: 8,
            height: 4,
            data: vec![255; 8 * 4 * 3],
        };
        let mut s = Settings {
            input_width: 4,
            input_height: 4,
            input_name: "x".into(),
            ..Default::default()
        };
        let (req, lb) = tensor_request(&s, &rgb);
        let Request::Tensor {
            name,
            shape,
            data,
            datatype,
        } = req
        else {
            panic!("a tensor")
        };
        assert_eq!((name.as_str(), shape), ("x", vec![1, 3, 4, 4]));
        assert_eq!(datatype, InputDatatype::Fp32);
        assert!(data.iter().all(|v| (0.0..=1.0).contains(v)), "normalized");
        assert_eq!(data.len(), 48);
        assert_eq!((lb.scale, lb.pad_y), (0.5, 1.0));
        s.nchw = false;
        let (Request::Tensor { shape, .. }, _) = tensor_request(&s, &rgb) else {
            panic!("a tensor")
        };
        assert_eq!(shape, vec![1, 4, 4, 3]);
        // UINT8: the pixel values themselves, whatever normalize, mean and std say.
        s.input_datatype = InferInputDatatype::Uint8;
        s.mean = "0.5".into();
        let (Request::Tensor { datatype, data, .. }, _) = tensor_request(&s, &rgb) else {
            panic!("a tensor")
        };
        assert_eq!(datatype, InputDatatype::Uint8);
        // NHWC 4x4 with one grey bar row on top: row 1 is the white frame.
        assert_eq!(datatype.raw(&data)[..3], [114, 114, 114]);
        assert_eq!(datatype.raw(&data)[12..15], [255, 255, 255]);
        s.input_datatype = InferInputDatatype::Fp16;
        let (Request::Tensor { datatype, data, .. }, _) = tensor_request(&s, &rgb) else {
            panic!("a tensor")
        };
        assert_eq!(datatype, InputDatatype::Fp16);
        // (1.0 - 0.5) / 1 as a little-endian half: 0x3800.
        assert_eq!(datatype.raw(&data)[24..26], [0x00, 0x38]);
        // JPEG: one BYTES element, boxes mapped back through the letterbox.
        s.input_datatype = InferInputDatatype::Jpeg;
        let (req, lb) = jpeg_tensor_request(&s, vec![0xff, 0xd8], 8, 4);
        let Request::Bytes { name, items } = req else {
            panic!("bytes")
        };
        assert_eq!((name.as_str(), items), ("x", vec![vec![0xff, 0xd8]]));
        assert_eq!((lb.scale, lb.pad_y), (0.5, 1.0));
    }

    #[test]
    fn images_requests_keep_context_frames_and_the_previous_answer() {
        let s = Settings {
            context_frames: 2,
            feed_back_answer: true,
            ..Default::default()
        };
        let mut context = VecDeque::new();
        let previous = Mutex::new(Some("a ball".to_string()));
        for i in 0..3u8 {
            let (req, lb) = images_request(&mut context, &previous, &s, vec![i], 16, 8);
            let Request::Images {
                jpegs,
                previous_answer,
                width,
                ..
            } = req
            else {
                panic!("images")
            };
            assert_eq!(jpegs.last(), Some(&vec![i]), "the current frame last");
            assert_eq!(jpegs.len(), (i as usize + 1).min(2));
            assert_eq!((previous_answer.as_deref(), width), (Some("a ball"), 16));
            assert_eq!(lb, Letterbox::identity(16, 8));
        }
    }
}
