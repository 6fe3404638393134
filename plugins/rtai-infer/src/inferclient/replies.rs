//! Reply parsing: a protocol's reply as detections and text for the element's settings.

use super::queue::Outcome;
use super::settings::Settings;
use crate::client::Reply;
use crate::postprocess::{self, Decoder, Detection, Letterbox};

/// A reply as detections and text for this element's settings.
pub(super) fn to_outcome(
    reply: Reply,
    s: &Settings,
    decoder: &Decoder,
    letterbox: Option<Letterbox>,
    batch: usize,
) -> Result<Outcome, String> {
    let labels = &decoder.labels;
    let mut out = Outcome::default();
    match reply {
        Reply::Text(t) => out.text = Some(t),
        Reply::Tensors(tensors) => {
            let mut consumed = Vec::new();
            if let Some(lb) = &letterbox {
                if !s.roi_classes.is_empty() {
                    // Per-object: one row per ROI crop, each decoded on its own.
                    for row in postprocess::split_batch(&tensors, batch)? {
                        let d = decoder.decode(&row, lb)?;
                        consumed = d.consumed;
                        out.roi_classes.push(d.classes);
                    }
                } else if batch > 1 {
                    // A batched request: the first dimension is the frame.
                    for frame in postprocess::split_batch(&tensors, batch)? {
                        let d = decoder.decode(&frame, lb)?;
                        consumed = d.consumed;
                        out.batches.push(d.detections);
                    }
                } else {
                    let d = decoder.decode(&tensors, lb)?;
                    out.detections = d.detections;
                    out.classes = d.classes;
                    consumed = d.consumed;
                }
            }
            // BYTES outputs that are no class labels: text (a captioner, an OCR model).
            if let Some(t) = tensors
                .iter()
                .rfind(|t| !t.strings.is_empty() && !consumed.contains(&t.name))
            {
                out.text = Some(t.strings.join("\n"));
            }
            if s.attach_tensors {
                out.tensors = tensors;
            }
        }
        Reply::Output(v) => {
            // RunPod handlers return what they like: detections, text, or anything (kept as JSON).
            if let Some(dets) = v.get("detections").and_then(|d| d.as_array()) {
                let lb = letterbox.ok_or("detections for a request without a frame")?;
                for d in dets {
                    let b = d
                        .get("box")
                        .and_then(|b| b.as_array())
                        .ok_or("a detection without \"box\" [x1, y1, x2, y2]")?;
                    let n: Vec<f64> = b.iter().filter_map(|x| x.as_f64()).collect();
                    let [x1, y1, x2, y2] = n[..] else {
                        return Err("\"box\" needs 4 numbers".into());
                    };
                    let score = d.get("score").and_then(|x| x.as_f64()).unwrap_or(1.0);
                    if !score.is_finite() || score < s.confidence_threshold {
                        continue;
                    }
                    let class_id = d.get("class_id").and_then(|x| x.as_i64()).unwrap_or(0) as i32;
                    let label = d
                        .get("label")
                        .and_then(|x| x.as_str())
                        .map(String::from)
                        .unwrap_or_else(|| {
                            labels
                                .get(class_id.max(0) as usize)
                                .cloned()
                                .unwrap_or_else(|| format!("class{class_id}"))
                        });
                    if let Some((x1, y1, x2, y2)) = lb.to_frame(x1, y1, x2, y2) {
                        out.detections.push(Detection {
                            x1,
                            y1,
                            x2,
                            y2,
                            confidence: score.clamp(0.0, 1.0),
                            class_id,
                            label,
                        });
                    }
                }
            }
            for key in ["text", "transcript", "caption"] {
                if let Some(t) = v.get(key).and_then(|t| t.as_str()) {
                    out.text = Some(t.to_string());
                    break;
                }
            }
            if v.is_string() {
                out.text = v.as_str().map(String::from);
            }
            if out.detections.is_empty() && out.text.is_none() {
                out.raw = Some(v.to_string());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Tensor;

    fn tensor(name: &str, shape: &[usize], numbers: Vec<f64>) -> Tensor {
        Tensor {
            name: name.into(),
            datatype: "FP32".into(),
            shape: shape.to_vec(),
            numbers,
            strings: Vec::new(),
        }
    }

    #[test]
    fn runpod_output_gives_detections_text_or_raw_json() {
        let s = Settings::default();
        let lb = Some(Letterbox::identity(100, 100));
        let v = serde_json::json!({"detections": [
            {"box": [10, 10, 30, 40], "score": 0.9, "label": "ball"},
            {"box": [0, 0, 5, 5], "score": 0.1},
            {"box": [50, 50, 60, 60], "class_id": 1}
        ], "text": "hi"});
        let dec = s.decoder(vec!["a".to_string(), "b".to_string()]);
        let o = to_outcome(Reply::Output(v), &s, &dec, lb, 1).unwrap();
        assert_eq!(o.detections.len(), 2, "the weak one is dropped");
        assert_eq!(o.detections[0].label, "ball");
        assert_eq!(
            (o.detections[1].label.as_str(), o.detections[1].confidence),
            ("b", 1.0)
        );
        assert_eq!(o.text.as_deref(), Some("hi"));
        let o = to_outcome(Reply::Output(serde_json::json!({"n": 3})), &s, &dec, lb, 1).unwrap();
        assert_eq!(o.raw.as_deref(), Some(r#"{"n":3}"#));
        for bad in [
            serde_json::json!({"detections": [{"score": 1}]}),
            serde_json::json!({"detections": [{"box": [1, 2, 3]}]}),
        ] {
            assert!(to_outcome(Reply::Output(bad), &s, &dec, lb, 1).is_err());
        }
    }

    #[test]
    fn a_batched_reply_is_split_per_frame() {
        let s = Settings::default();
        let lb = Some(Letterbox::identity(100, 100));
        let boxes = tensor(
            "boxes",
            &[2, 1, 6],
            vec![1., 1., 9., 9., 0.9, 0., 20., 20., 40., 40., 0.8, 0.],
        );
        let o = to_outcome(Reply::Tensors(vec![boxes]), &s, &s.decoder(vec![]), lb, 2).unwrap();
        assert_eq!(o.batches.len(), 2);
        assert_eq!(o.batches[1][0].x1, 20.0);
        let wrong = tensor("boxes", &[1, 6], vec![0.; 6]);
        assert!(to_outcome(Reply::Tensors(vec![wrong]), &s, &s.decoder(vec![]), lb, 2).is_err());
    }

    #[test]
    fn text_outputs_and_raw_tensors_travel_with_the_boxes() {
        let s = Settings {
            attach_tensors: true,
            ..Default::default()
        };
        let lb = Some(Letterbox::identity(100, 100));
        let caption = Tensor {
            name: "caption".into(),
            datatype: "BYTES".into(),
            shape: vec![1],
            numbers: Vec::new(),
            strings: vec!["a ball".into()],
        };
        let boxes = tensor("boxes", &[1, 6], vec![1., 1., 9., 9., 0.9, 0.]);
        let o = to_outcome(
            Reply::Tensors(vec![boxes, caption]),
            &s,
            &s.decoder(vec![]),
            lb,
            1,
        )
        .unwrap();
        assert_eq!((o.detections.len(), o.text.as_deref()), (1, Some("a ball")));
        assert_eq!(o.tensors.len(), 2);
    }
}
