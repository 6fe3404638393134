//! Turning model outputs into detections in frame coordinates: already-decoded
//! boxes `[N, 6]` (x1, y1, x2, y2, score, class), YOLOv8-style raw outputs
//! `[1, 4 + classes, anchors]` (cx, cy, w, h, class scores) with NMS, and the
//! letterbox mapping back from the model's input to the frame.

/// One detected object in frame pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub x1: f64,
    pub y1: f64,
    pub x2: f64,
    pub y2: f64,
    pub confidence: f64,
    pub class_id: i32,
    pub label: String,
}

/// How the model's input relates to the frame: input = frame × scale + pad.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    pub scale: f64,
    pub pad_x: f64,
    pub pad_y: f64,
    pub frame_width: u32,
    pub frame_height: u32,
}

impl Letterbox {
    /// Fits a `frame_width`×`frame_height` frame into `input_width`×`input_height`, centred.
    pub fn fit(frame_width: u32, frame_height: u32, input_width: u32, input_height: u32) -> Self {
        let scale = (input_width as f64 / frame_width as f64)
            .min(input_height as f64 / frame_height as f64);
        let pad_x = (input_width as f64 - frame_width as f64 * scale) / 2.0;
        let pad_y = (input_height as f64 - frame_height as f64 * scale) / 2.0;
        Self {
            scale,
            pad_x,
            pad_y,
            frame_width,
            frame_height,
        }
    }

    /// The identity for models that get the frame itself (JPEG to RunPod).
    pub fn identity(frame_width: u32, frame_height: u32) -> Self {
        Self {
            scale: 1.0,
            pad_x: 0.0,
            pad_y: 0.0,
            frame_width,
            frame_height,
        }
    }

    /// Maps a box from input to frame coordinates, clipped to the frame; `None` when empty.
    pub fn to_frame(&self, x1: f64, y1: f64, x2: f64, y2: f64) -> Option<(f64, f64, f64, f64)> {
        let (w, h) = (self.frame_width as f64, self.frame_height as f64);
        let map = |v: f64, pad: f64, max: f64| ((v - pad) / self.scale).clamp(0.0, max);
        let (a, b) = (
            map(x1.min(x2), self.pad_x, w),
            map(y1.min(y2), self.pad_y, h),
        );
        let (c, d) = (
            map(x1.max(x2), self.pad_x, w),
            map(y1.max(y2), self.pad_y, h),
        );
        (c - a >= 1.0 && d - b >= 1.0).then_some((a, b, c, d))
    }
}

/// How a tensor's values are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoxFormat {
    /// Decide from the shape: last dimension 6 → decoded, otherwise YOLO.
    Auto,
    Decoded,
    Yolo,
}

fn label_for(labels: &[String], class_id: i32) -> String {
    usize::try_from(class_id)
        .ok()
        .and_then(|i| labels.get(i))
        .cloned()
        .unwrap_or_else(|| format!("class{class_id}"))
}

/// Detections from an output tensor (`shape`, row-major `data`), in frame coordinates.
pub fn detections(
    shape: &[usize],
    data: &[f64],
    format: BoxFormat,
    letterbox: &Letterbox,
    threshold: f64,
    nms_iou: f64,
    labels: &[String],
) -> Result<Vec<Detection>, String> {
    let count: usize = shape.iter().product();
    if count != data.len() {
        return Err(format!(
            "output shape {shape:?} holds {count} values but {} came",
            data.len()
        ));
    }
    if data.iter().any(|v| !v.is_finite()) {
        return Err("output holds NaN or infinite values".into());
    }
    let dims: Vec<usize> = shape
        .iter()
        .copied()
        .skip_while(|&d| d == 1 && shape.len() > 2)
        .collect();
    let format = match format {
        BoxFormat::Auto if dims.last() == Some(&6) || data.is_empty() => BoxFormat::Decoded,
        BoxFormat::Auto => BoxFormat::Yolo,
        f => f,
    };
    let raw = match format {
        BoxFormat::Decoded => {
            if data.is_empty() {
                return Ok(Vec::new());
            }
            if dims.last() != Some(&6) {
                return Err(format!(
                    "decoded boxes need [N, 6] (x1, y1, x2, y2, score, class), got {shape:?}"
                ));
            }
            data.chunks_exact(6)
                .filter(|r| r[4] >= threshold)
                .map(|r| (r[0], r[1], r[2], r[3], r[4], r[5].round() as i32))
                .collect::<Vec<_>>()
        }
        BoxFormat::Yolo => {
            let [rows, anchors] = dims[..] else {
                return Err(format!(
                    "YOLO output needs [1, 4 + classes, anchors], got {shape:?}"
                ));
            };
            if rows < 5 {
                return Err(format!(
                    "YOLO output needs at least 5 rows (cx, cy, w, h, scores), got {rows}"
                ));
            }
            let at = |row: usize, a: usize| data[row * anchors + a];
            let mut boxes = Vec::new();
            for a in 0..anchors {
                let (class, score) = (4..rows)
                    .map(|r| (r - 4, at(r, a)))
                    .fold((0, f64::MIN), |best, c| if c.1 > best.1 { c } else { best });
                if score >= threshold {
                    let (cx, cy, w, h) = (at(0, a), at(1, a), at(2, a), at(3, a));
                    boxes.push((
                        cx - w / 2.0,
                        cy - h / 2.0,
                        cx + w / 2.0,
                        cy + h / 2.0,
                        score,
                        class as i32,
                    ));
                }
            }
            nms(boxes, nms_iou)
        }
        BoxFormat::Auto => unreachable!(),
    };
    Ok(raw
        .into_iter()
        .filter_map(|(x1, y1, x2, y2, score, class_id)| {
            let (x1, y1, x2, y2) = letterbox.to_frame(x1, y1, x2, y2)?;
            Some(Detection {
                x1,
                y1,
                x2,
                y2,
                confidence: score.clamp(0.0, 1.0),
                class_id,
                label: label_for(labels, class_id),
            })
        })
        .collect())
}

type RawBox = (f64, f64, f64, f64, f64, i32);

fn iou(a: &RawBox, b: &RawBox) -> f64 {
    let w = (a.2.min(b.2) - a.0.max(b.0)).max(0.0);
    let h = (a.3.min(b.3) - a.1.max(b.1)).max(0.0);
    let inter = w * h;
    let union = (a.2 - a.0) * (a.3 - a.1) + (b.2 - b.0) * (b.3 - b.1) - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// Greedy non-maximum suppression per class, highest score first.
pub fn nms(mut boxes: Vec<RawBox>, iou_threshold: f64) -> Vec<RawBox> {
    boxes.sort_by(|a, b| b.4.total_cmp(&a.4));
    let mut kept: Vec<RawBox> = Vec::new();
    for b in boxes {
        if kept
            .iter()
            .all(|k| k.5 != b.5 || iou(k, &b) <= iou_threshold)
        {
            kept.push(b);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_LABELS: &[String] = &[];

    #[test]
    fn letterbox_maps_back_to_the_frame() {
        // 640x360 into 320x320: scale 0.5, 40 px bars top and bottom.
        let lb = Letterbox::fit(640, 360, 320, 320);
        assert_eq!((lb.scale, lb.pad_x, lb.pad_y), (0.5, 0.0, 70.0));
        assert_eq!(
            lb.to_frame(10.0, 80.0, 60.0, 120.0),
            Some((20.0, 20.0, 120.0, 100.0))
        );
        // Clipped to the frame; a box wholly in the padding is dropped.
        assert_eq!(
            lb.to_frame(-10.0, 60.0, 20.0, 75.0),
            Some((0.0, 0.0, 40.0, 10.0))
        );
        assert_eq!(lb.to_frame(0.0, 0.0, 50.0, 60.0), None);
    }

    #[test]
    fn decoded_boxes_table() {
        let lb = Letterbox::identity(100, 100);
        type Case<'a> = (&'a [usize], Vec<f64>, Result<usize, &'a str>);
        let cases: Vec<Case> = vec![
            (
                &[1, 2, 6],
                vec![0., 0., 10., 10., 0.9, 1., 5., 5., 20., 20., 0.1, 0.],
                Ok(1),
            ),
            (
                &[2, 6],
                vec![0., 0., 10., 10., 0.9, 1., 5., 5., 20., 20., 0.5, 0.],
                Ok(2),
            ),
            (&[0, 6], vec![], Ok(0)),
            (&[1, 2, 6], vec![0.; 6], Err("holds 12 values")),
            (&[1, 6], vec![0., 0., 10., 10., f64::NAN, 1.], Err("NaN")),
            (&[2, 5], vec![0.; 10], Err("decoded boxes need")),
        ];
        for (shape, data, expected) in cases {
            let got = detections(shape, &data, BoxFormat::Decoded, &lb, 0.25, 0.45, NO_LABELS);
            match (got, expected) {
                (Ok(d), Ok(n)) => assert_eq!(d.len(), n, "{shape:?}"),
                (Err(e), Err(part)) => assert!(e.contains(part), "{e}"),
                (got, expected) => panic!("{shape:?}: {got:?} vs {expected:?}"),
            }
        }
    }

    #[test]
    fn yolo_output_is_decoded_with_nms_and_labels() {
        // 2 classes, 4 anchors: two overlapping boxes of class 1, one of class 0, one weak.
        let anchors = [
            (50.0, 50.0, 20.0, 20.0, 0.1, 0.9),
            (52.0, 51.0, 20.0, 20.0, 0.05, 0.8),
            (10.0, 10.0, 8.0, 8.0, 0.7, 0.2),
            (80.0, 80.0, 10.0, 10.0, 0.1, 0.1),
        ];
        let mut data = vec![0.0; 6 * 4];
        for (a, v) in anchors.iter().enumerate() {
            for (row, value) in [v.0, v.1, v.2, v.3, v.4, v.5].into_iter().enumerate() {
                data[row * 4 + a] = value;
            }
        }
        let labels = vec!["person".to_string(), "ball".to_string()];
        let d = detections(
            &[1, 6, 4],
            &data,
            BoxFormat::Auto,
            &Letterbox::identity(100, 100),
            0.25,
            0.45,
            &labels,
        )
        .unwrap();
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!((d[0].label.as_str(), d[0].confidence), ("ball", 0.9));
        assert_eq!(
            (d[0].x1, d[0].y1, d[0].x2, d[0].y2),
            (40.0, 40.0, 60.0, 60.0)
        );
        assert_eq!((d[1].label.as_str(), d[1].class_id), ("person", 0));
        assert!(
            detections(
                &[1, 4, 4],
                &data[..16],
                BoxFormat::Yolo,
                &Letterbox::identity(100, 100),
                0.25,
                0.45,
                &labels
            )
            .is_err()
        );
        assert!(
            detections(
                &[24],
                &data,
                BoxFormat::Yolo,
                &Letterbox::identity(100, 100),
                0.25,
                0.45,
                &labels
            )
            .is_err()
        );
    }

    #[test]
    fn unknown_classes_get_a_generic_label() {
        let d = detections(
            &[1, 6],
            &[1., 1., 9., 9., 0.9, 7.],
            BoxFormat::Auto,
            &Letterbox::identity(10, 10),
            0.5,
            0.5,
            NO_LABELS,
        )
        .unwrap();
        assert_eq!(d[0].label, "class7");
    }
}
