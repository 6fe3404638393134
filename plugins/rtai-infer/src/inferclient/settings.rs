//! inferclient's settings: defaults and the property values, copied per request.

use crate::postprocess::{self, BoxFormat, Coordinates, Decoder, OutputNames};

use super::{
    InferBoxCoordinates, InferBoxFormat, InferChannelOrder, InferInputDatatype, InferOutput,
    InferProtocol, InferResize, InferSegmentEvents,
};
use crate::client::ModelMetadata;
use crate::preprocess::{Layout, Resize, TensorSpec};

pub(super) const DEFAULT_PROTOCOL: InferProtocol = InferProtocol::KserveRest;
pub(super) const DEFAULT_URL: &str = "http://127.0.0.1:8080";
pub(super) const DEFAULT_MODEL: &str = "";
pub(super) const DEFAULT_REQUEST_TIMEOUT_MS: u32 = 10_000;
pub(super) const DEFAULT_MAX_INFLIGHT: u32 = 4;
pub(super) const DEFAULT_INTERVAL: u32 = 1;
pub(super) const DEFAULT_MIN_INTERVAL_MS: u32 = 0;
pub(super) const DEFAULT_LATENCY_BUDGET_MS: u32 = 1000;
pub(super) const DEFAULT_MAX_RETRIES: u32 = 3;
pub(super) const DEFAULT_BREAKER_THRESHOLD: u32 = 5;
pub(super) const DEFAULT_BREAKER_COOLDOWN_MS: u32 = 5000;
/// 0 and "": unset, read from the model's metadata (else the fallbacks below).
pub(super) const DEFAULT_INPUT_WIDTH: u32 = 0;
pub(super) const DEFAULT_INPUT_HEIGHT: u32 = 0;
pub(super) const DEFAULT_INPUT_NAME: &str = "";
pub(super) const DEFAULT_INPUT_DATATYPE: InferInputDatatype = InferInputDatatype::Auto;
/// What an unset input is when the metadata does not say (YOLO's usual input).
pub(super) const FALLBACK_INPUT_SIZE: u32 = 640;
pub(super) const FALLBACK_INPUT_NAME: &str = "images";
pub(super) const DEFAULT_NCHW: bool = true;
pub(super) const DEFAULT_NORMALIZE: bool = true;
pub(super) const DEFAULT_BOX_FORMAT: InferBoxFormat = InferBoxFormat::Auto;
pub(super) const DEFAULT_CONFIDENCE_THRESHOLD: f64 = 0.25;
pub(super) const DEFAULT_NMS_IOU: f64 = 0.45;
pub(super) const DEFAULT_LABELS: &str = "";
pub(super) const DEFAULT_LABELS_FILE: &str = "";
pub(super) const DEFAULT_RESIZE: InferResize = InferResize::Letterbox;
pub(super) const DEFAULT_CHANNEL_ORDER: InferChannelOrder = InferChannelOrder::Rgb;
pub(super) const DEFAULT_MEAN: &str = "0,0,0";
pub(super) const DEFAULT_STD: &str = "1,1,1";
pub(super) const DEFAULT_BOX_COORDINATES: InferBoxCoordinates = InferBoxCoordinates::Auto;
pub(super) const DEFAULT_OUTPUT_NAME: &str = "";
pub(super) const DEFAULT_TOP_K: u32 = 1;
pub(super) const DEFAULT_SOFTMAX: bool = false;
pub(super) const DEFAULT_ATTACH_TENSORS: bool = false;
pub(super) const DEFAULT_OUTPUT: InferOutput = InferOutput::Meta;
pub(super) const DEFAULT_SEGMENT_EVENTS: InferSegmentEvents = InferSegmentEvents::InOrder;
pub(super) const DEFAULT_PROMPT: &str = "Describe what happens in these frames in one sentence.";
pub(super) const DEFAULT_CONTEXT_FRAMES: u32 = 1;
pub(super) const DEFAULT_FEED_BACK_ANSWER: bool = false;
pub(super) const DEFAULT_CHUNK_DURATION_MS: u32 = 5000;
pub(super) const DEFAULT_JPEG_QUALITY: u32 = 85;
pub(super) const DEFAULT_BINARY_DATA: bool = false;
pub(super) const DEFAULT_ROI_CLASSES: &str = "";
pub(super) const DEFAULT_ROI_MIN_SIZE: u32 = 16;
pub(super) const DEFAULT_RECLASSIFY_INTERVAL: u32 = 1;

#[derive(Clone)]
pub(super) struct Settings {
    pub(super) protocol: InferProtocol,
    pub(super) url: String,
    pub(super) model: String,
    pub(super) api_key: Option<String>,
    pub(super) request_timeout_ms: u32,
    pub(super) max_inflight: u32,
    pub(super) interval: u32,
    pub(super) min_interval_ms: u32,
    pub(super) latency_budget_ms: u32,
    pub(super) max_retries: u32,
    pub(super) breaker_threshold: u32,
    pub(super) breaker_cooldown_ms: u32,
    pub(super) input_width: u32,
    pub(super) input_height: u32,
    pub(super) input_name: String,
    pub(super) input_datatype: InferInputDatatype,
    pub(super) nchw: bool,
    pub(super) normalize: bool,
    pub(super) box_format: InferBoxFormat,
    pub(super) confidence_threshold: f64,
    pub(super) nms_iou: f64,
    pub(super) labels: String,
    pub(super) labels_file: String,
    pub(super) resize: InferResize,
    pub(super) channel_order: InferChannelOrder,
    pub(super) mean: String,
    pub(super) std: String,
    pub(super) box_coordinates: InferBoxCoordinates,
    pub(super) boxes_output: String,
    pub(super) scores_output: String,
    pub(super) classes_output: String,
    pub(super) count_output: String,
    pub(super) top_k: u32,
    pub(super) softmax: bool,
    pub(super) attach_tensors: bool,
    pub(super) output: InferOutput,
    pub(super) segment_events: InferSegmentEvents,
    pub(super) prompt: String,
    pub(super) context_frames: u32,
    pub(super) feed_back_answer: bool,
    pub(super) chunk_duration_ms: u32,
    pub(super) jpeg_quality: u32,
    pub(super) binary_data: bool,
    pub(super) roi_classes: String,
    pub(super) roi_min_size: u32,
    pub(super) reclassify_interval: u32,
}

// By hand: the derived Debug would print the API key (and a password in the URL).
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("protocol", &self.protocol)
            .field("url", &rtai_core::secrets::redact(&self.url))
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("max_inflight", &self.max_inflight)
            .field("interval", &self.interval)
            .field("min_interval_ms", &self.min_interval_ms)
            .field("latency_budget_ms", &self.latency_budget_ms)
            .field("max_retries", &self.max_retries)
            .field("breaker_threshold", &self.breaker_threshold)
            .field("breaker_cooldown_ms", &self.breaker_cooldown_ms)
            .field("input_width", &self.input_width)
            .field("input_height", &self.input_height)
            .field("input_name", &self.input_name)
            .field("input_datatype", &self.input_datatype)
            .field("nchw", &self.nchw)
            .field("normalize", &self.normalize)
            .field("box_format", &self.box_format)
            .field("confidence_threshold", &self.confidence_threshold)
            .field("nms_iou", &self.nms_iou)
            .field("labels", &self.labels)
            .field("labels_file", &self.labels_file)
            .field("resize", &self.resize)
            .field("channel_order", &self.channel_order)
            .field("mean", &self.mean)
            .field("std", &self.std)
            .field("box_coordinates", &self.box_coordinates)
            .field("boxes_output", &self.boxes_output)
            .field("scores_output", &self.scores_output)
            .field("classes_output", &self.classes_output)
            .field("count_output", &self.count_output)
            .field("top_k", &self.top_k)
            .field("softmax", &self.softmax)
            .field("attach_tensors", &self.attach_tensors)
            .field("output", &self.output)
            .field("segment_events", &self.segment_events)
            .field("prompt", &self.prompt)
            .field("context_frames", &self.context_frames)
            .field("feed_back_answer", &self.feed_back_answer)
            .field("chunk_duration_ms", &self.chunk_duration_ms)
            .field("jpeg_quality", &self.jpeg_quality)
            .field("binary_data", &self.binary_data)
            .field("roi_classes", &self.roi_classes)
            .field("roi_min_size", &self.roi_min_size)
            .field("reclassify_interval", &self.reclassify_interval)
            .finish()
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            protocol: DEFAULT_PROTOCOL,
            url: DEFAULT_URL.into(),
            model: DEFAULT_MODEL.into(),
            api_key: None,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            max_inflight: DEFAULT_MAX_INFLIGHT,
            interval: DEFAULT_INTERVAL,
            min_interval_ms: DEFAULT_MIN_INTERVAL_MS,
            latency_budget_ms: DEFAULT_LATENCY_BUDGET_MS,
            max_retries: DEFAULT_MAX_RETRIES,
            breaker_threshold: DEFAULT_BREAKER_THRESHOLD,
            breaker_cooldown_ms: DEFAULT_BREAKER_COOLDOWN_MS,
            input_width: DEFAULT_INPUT_WIDTH,
            input_height: DEFAULT_INPUT_HEIGHT,
            input_name: DEFAULT_INPUT_NAME.into(),
            input_datatype: DEFAULT_INPUT_DATATYPE,
            nchw: DEFAULT_NCHW,
            normalize: DEFAULT_NORMALIZE,
            box_format: DEFAULT_BOX_FORMAT,
            confidence_threshold: DEFAULT_CONFIDENCE_THRESHOLD,
            nms_iou: DEFAULT_NMS_IOU,
            labels: DEFAULT_LABELS.into(),
            labels_file: DEFAULT_LABELS_FILE.into(),
            resize: DEFAULT_RESIZE,
            channel_order: DEFAULT_CHANNEL_ORDER,
            mean: DEFAULT_MEAN.into(),
            std: DEFAULT_STD.into(),
            box_coordinates: DEFAULT_BOX_COORDINATES,
            boxes_output: DEFAULT_OUTPUT_NAME.into(),
            scores_output: DEFAULT_OUTPUT_NAME.into(),
            classes_output: DEFAULT_OUTPUT_NAME.into(),
            count_output: DEFAULT_OUTPUT_NAME.into(),
            top_k: DEFAULT_TOP_K,
            softmax: DEFAULT_SOFTMAX,
            attach_tensors: DEFAULT_ATTACH_TENSORS,
            output: DEFAULT_OUTPUT,
            segment_events: DEFAULT_SEGMENT_EVENTS,
            prompt: DEFAULT_PROMPT.into(),
            context_frames: DEFAULT_CONTEXT_FRAMES,
            feed_back_answer: DEFAULT_FEED_BACK_ANSWER,
            chunk_duration_ms: DEFAULT_CHUNK_DURATION_MS,
            jpeg_quality: DEFAULT_JPEG_QUALITY,
            binary_data: DEFAULT_BINARY_DATA,
            roi_classes: DEFAULT_ROI_CLASSES.into(),
            roi_min_size: DEFAULT_ROI_MIN_SIZE,
            reclassify_interval: DEFAULT_RECLASSIFY_INTERVAL,
        }
    }
}

/// The input values (and output names) resolved at start, laid over the properties for
/// every request.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ResolvedInput {
    name: String,
    width: u32,
    height: u32,
    datatype: InferInputDatatype,
    nchw: bool,
    outputs: [String; 4],
}

impl ResolvedInput {
    pub(super) fn of(s: &Settings) -> Self {
        Self {
            name: s.input_name.clone(),
            width: s.input_width,
            height: s.input_height,
            datatype: s.input_datatype,
            nchw: s.nchw,
            outputs: [
                s.boxes_output.clone(),
                s.scores_output.clone(),
                s.classes_output.clone(),
                s.count_output.clone(),
            ],
        }
    }

    pub(super) fn apply(&self, s: &mut Settings) {
        s.input_name.clone_from(&self.name);
        s.input_width = self.width;
        s.input_height = self.height;
        s.input_datatype = self.datatype;
        s.nchw = self.nchw;
        let [boxes, scores, classes, count] = &self.outputs;
        s.boxes_output.clone_from(boxes);
        s.scores_output.clone_from(scores);
        s.classes_output.clone_from(classes);
        s.count_output.clone_from(count);
    }
}

impl Settings {
    /// Whether the input is (partly) unset, so the model's metadata is worth reading.
    pub(super) fn input_unset(&self) -> bool {
        self.input_name.is_empty()
            || self.input_width == 0
            || self.input_height == 0
            || self.input_datatype == InferInputDatatype::Auto
    }

    /// The settings with every unset input value filled: from `metadata` (the named input,
    /// else the first) where it says, else the fallbacks (images, 640x640, FP32). Returns
    /// what was chosen and from where, for the log.
    pub(super) fn resolve_input(&self, metadata: Option<&ModelMetadata>) -> (Settings, String) {
        let mut s = self.clone();
        let input = metadata.and_then(|m| {
            m.inputs
                .iter()
                .find(|i| !self.input_name.is_empty() && i.name == self.input_name)
                .or_else(|| m.inputs.first())
        });
        let mut from = Vec::new();
        if let Some(input) = input {
            if s.input_name.is_empty() && !input.name.is_empty() {
                s.input_name = input.name.clone();
                from.push("name");
            }
            if s.input_datatype == InferInputDatatype::Auto {
                let dt = match input.datatype.as_str() {
                    "FP32" => Some(InferInputDatatype::Fp32),
                    "FP16" => Some(InferInputDatatype::Fp16),
                    "UINT8" => Some(InferInputDatatype::Uint8),
                    "BYTES" => Some(InferInputDatatype::Jpeg),
                    _ => None,
                };
                if let Some(dt) = dt {
                    s.input_datatype = dt;
                    from.push("datatype");
                }
            }
            // [N, 3, H, W] or [N, H, W, 3] (the batch dimension may be missing).
            let dims: &[i64] = match input.shape.len() {
                4 => &input.shape[1..],
                3 => &input.shape[..],
                _ => &[],
            };
            let hw = match dims {
                [3, h, w] => Some((true, *h, *w)),
                [h, w, 3] => Some((false, *h, *w)),
                _ => None,
            };
            if let Some((nchw, h, w)) = hw
                && (s.input_width == 0 || s.input_height == 0)
            {
                let fits = |v: i64| (1..=16384).contains(&v);
                if s.input_width == 0 && fits(w) {
                    s.input_width = w as u32;
                    from.push("width");
                }
                if s.input_height == 0 && fits(h) {
                    s.input_height = h as u32;
                    from.push("height");
                }
                s.nchw = nchw;
                from.push(if nchw { "NCHW" } else { "NHWC" });
            }
        }
        if s.input_name.is_empty() {
            s.input_name = FALLBACK_INPUT_NAME.into();
        }
        if s.input_width == 0 {
            s.input_width = FALLBACK_INPUT_SIZE;
        }
        if s.input_height == 0 {
            s.input_height = FALLBACK_INPUT_SIZE;
        }
        if s.input_datatype == InferInputDatatype::Auto {
            s.input_datatype = InferInputDatatype::Fp32;
        }
        let chosen = format!(
            "input {} {:?} {}x{} {} ({})",
            s.input_name,
            s.input_datatype,
            s.input_width,
            s.input_height,
            if s.nchw { "NCHW" } else { "NHWC" },
            if from.is_empty() {
                "properties and fallbacks".to_string()
            } else {
                format!("{} from the model's metadata", from.join(", "))
            }
        );
        (s, chosen)
    }

    /// The settings with the unset `*-output` names filled from the outputs `metadata`
    /// declares, when `box-format` reads separate tensors (auto, named, ssd, nms) and the
    /// names say which is which without doubt (`postprocess::output_names_from`). Returns
    /// what was chosen, for the log (`None`: no metadata, or nothing to choose).
    pub(super) fn resolve_outputs(
        &self,
        metadata: Option<&ModelMetadata>,
    ) -> (Settings, Option<String>) {
        let mut s = self.clone();
        let Some(m) = metadata.filter(|m| !m.outputs.is_empty()) else {
            return (s, None);
        };
        let declared: Vec<(&str, &[i64])> = m
            .outputs
            .iter()
            .map(|o| (o.name.as_str(), o.shape.as_slice()))
            .collect();
        let listed = declared
            .iter()
            .map(|(n, shape)| format!("{n} {shape:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let set = self.decoder(Vec::new()).names;
        let format = self.decoder(Vec::new()).format;
        let Some((layout, names)) = postprocess::output_names_from(format, &set, &declared) else {
            return (
                s,
                Some(format!(
                    "outputs {listed} (model's metadata): no output names to choose for box-format {:?}",
                    self.box_format
                )),
            );
        };
        let mut from = Vec::new();
        for (slot, new, what) in [
            (&mut s.boxes_output, &names.boxes, "boxes"),
            (&mut s.scores_output, &names.scores, "scores"),
            (&mut s.classes_output, &names.classes, "classes"),
            (&mut s.count_output, &names.count, "count"),
        ] {
            if slot.is_empty() && !new.is_empty() {
                slot.clone_from(new);
                from.push(format!("{what} {new}"));
            }
        }
        let chosen = if from.is_empty() {
            format!("outputs {listed} (model's metadata): none chosen as {layout:?} output names")
        } else {
            format!(
                "outputs {listed} (model's metadata): {layout:?} layout, {}",
                from.join(", ")
            )
        };
        (s, Some(chosen))
    }

    /// How to read the model's outputs; `labels`: the class names (property or file).
    pub(super) fn decoder(&self, labels: Vec<String>) -> Decoder {
        use crate::postprocess::Corners::*;
        let coordinates = match self.box_coordinates {
            InferBoxCoordinates::Auto => None,
            InferBoxCoordinates::Xyxy => Some(Coordinates::new(Xyxy, false)),
            InferBoxCoordinates::Xywh => Some(Coordinates::new(Xywh, false)),
            InferBoxCoordinates::Cxcywh => Some(Coordinates::new(Cxcywh, false)),
            InferBoxCoordinates::Yxyx => Some(Coordinates::new(Yxyx, false)),
            InferBoxCoordinates::XyxyNormalized => Some(Coordinates::new(Xyxy, true)),
            InferBoxCoordinates::XywhNormalized => Some(Coordinates::new(Xywh, true)),
            InferBoxCoordinates::CxcywhNormalized => Some(Coordinates::new(Cxcywh, true)),
            InferBoxCoordinates::YxyxNormalized => Some(Coordinates::new(Yxyx, true)),
        };
        Decoder {
            format: match self.box_format {
                InferBoxFormat::Auto => BoxFormat::Auto,
                InferBoxFormat::Decoded => BoxFormat::Decoded,
                InferBoxFormat::Yolov8 => BoxFormat::Yolov8,
                InferBoxFormat::Yolov5 => BoxFormat::Yolov5,
                InferBoxFormat::Yolov8Transposed => BoxFormat::Yolov8Transposed,
                InferBoxFormat::Yolov10 => BoxFormat::Yolov10,
                InferBoxFormat::Ssd => BoxFormat::Ssd,
                InferBoxFormat::Nms => BoxFormat::Nms,
                InferBoxFormat::Named => BoxFormat::Named,
                InferBoxFormat::Classification => BoxFormat::Classification,
                InferBoxFormat::None => BoxFormat::None,
            },
            coordinates,
            names: OutputNames {
                boxes: self.boxes_output.clone(),
                scores: self.scores_output.clone(),
                classes: self.classes_output.clone(),
                count: self.count_output.clone(),
            },
            input_width: self.input_width,
            input_height: self.input_height,
            threshold: self.confidence_threshold,
            nms_iou: self.nms_iou,
            labels,
            top_k: self.top_k as usize,
            softmax: self.softmax,
        }
    }

    /// How frames become the input tensor; an error names a bad `mean` or `std`.
    pub(super) fn tensor_spec(&self) -> Result<TensorSpec, String> {
        let three = |name: &str, text: &str| -> Result<[f32; 3], String> {
            let values: Vec<f32> = text
                .split(',')
                .map(|v| v.trim().parse::<f32>())
                .collect::<Result<_, _>>()
                .map_err(|_| format!("{name} must be 1 or 3 numbers, got '{text}'"))?;
            match values[..] {
                [v] => Ok([v; 3]),
                [a, b, c] => Ok([a, b, c]),
                _ => Err(format!("{name} must be 1 or 3 numbers, got '{text}'")),
            }
        };
        let std = three("std", &self.std)?;
        if std.iter().any(|v| *v == 0.0 || !v.is_finite()) {
            return Err(format!("std must be finite and not 0, got '{}'", self.std));
        }
        Ok(TensorSpec {
            width: self.input_width,
            height: self.input_height,
            layout: if self.nchw {
                Layout::Nchw
            } else {
                Layout::Nhwc
            },
            resize: match self.resize {
                InferResize::Letterbox => Resize::Letterbox,
                InferResize::Stretch => Resize::Stretch,
                InferResize::CenterCrop => Resize::CenterCrop,
            },
            bgr: self.channel_order == InferChannelOrder::Bgr,
            normalize: self.normalize,
            mean: three("mean", &self.mean)?,
            std,
        })
    }

    /// The class names: `labels-file` (one per line) when set, else `labels`.
    pub(super) fn read_labels(&self) -> Result<Vec<String>, String> {
        if !self.labels_file.is_empty() {
            let text = std::fs::read_to_string(&self.labels_file)
                .map_err(|e| format!("cannot read labels-file {}: {e}", self.labels_file))?;
            return Ok(postprocess::read_labels_file(&text));
        }
        Ok(self
            .labels
            .split(',')
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::TensorMetadata;

    fn meta(inputs: &[(&str, &str, &[i64])]) -> ModelMetadata {
        ModelMetadata {
            inputs: inputs
                .iter()
                .map(|(n, d, s)| TensorMetadata {
                    name: n.to_string(),
                    datatype: d.to_string(),
                    shape: s.to_vec(),
                })
                .collect(),
            outputs: Vec::new(),
        }
    }

    #[test]
    fn unset_inputs_come_from_the_metadata_else_the_fallbacks() {
        use InferInputDatatype::*;
        let unset = Settings::default();
        assert!(unset.input_unset());
        let set = Settings {
            input_name: "x".into(),
            input_width: 32,
            input_height: 16,
            input_datatype: Fp32,
            ..Default::default()
        };
        assert!(!set.input_unset());
        type Row<'a> = (
            &'a Settings,
            Option<ModelMetadata>,
            (&'a str, u32, u32, InferInputDatatype, bool),
        );
        let named = Settings {
            input_name: "b".into(),
            ..Default::default()
        };
        let rows: Vec<Row> = vec![
            // Nothing known: the old defaults.
            (&unset, None, ("images", 640, 640, Fp32, true)),
            (&unset, Some(meta(&[])), ("images", 640, 640, Fp32, true)),
            // NCHW with an open batch, as MLServer and Triton answer.
            (
                &unset,
                Some(meta(&[("images", "FP32", &[-1, 3, 320, 320])])),
                ("images", 320, 320, Fp32, true),
            ),
            (
                &unset,
                Some(meta(&[("in", "UINT8", &[1, 224, 256, 3])])),
                ("in", 256, 224, Uint8, false),
            ),
            (
                &unset,
                Some(meta(&[("x", "FP16", &[3, 48, 192])])),
                ("x", 192, 48, Fp16, true),
            ),
            (
                &unset,
                Some(meta(&[("jpeg", "BYTES", &[-1])])),
                ("jpeg", 640, 640, Jpeg, true),
            ),
            // Dynamic sizes and unknown datatypes: the fallbacks.
            (
                &unset,
                Some(meta(&[("x", "INT8", &[-1, 3, -1, -1])])),
                ("x", 640, 640, Fp32, true),
            ),
            // Set properties win; a named input is looked up by its name.
            (
                &set,
                Some(meta(&[("y", "UINT8", &[1, 3, 8, 8])])),
                ("x", 32, 16, Fp32, true),
            ),
            (
                &named,
                Some(meta(&[
                    ("a", "FP32", &[1, 3, 8, 8]),
                    ("b", "UINT8", &[1, 3, 4, 2]),
                ])),
                ("b", 2, 4, Uint8, true),
            ),
        ];
        for (settings, metadata, (name, w, h, dt, nchw)) in rows {
            let (s, chosen) = settings.resolve_input(metadata.as_ref());
            assert_eq!(
                (
                    s.input_name.as_str(),
                    s.input_width,
                    s.input_height,
                    s.input_datatype,
                    s.nchw
                ),
                (name, w, h, dt, nchw),
                "{metadata:?}: {chosen}"
            );
            assert!(!s.input_unset());
        }
    }

    #[test]
    fn unset_output_names_come_from_the_metadata_when_they_say_which_is_which() {
        use InferBoxFormat::{Auto, Named, Nms, Yolov8};
        /// box-format, the metadata reply's outputs, the properties set, then the
        /// boxes/scores/classes/count outputs read (empty: the format's usual names).
        type Row<'a> = (InferBoxFormat, &'a str, [&'a str; 4], Option<[&'a str; 4]>);
        let unset = ["", "", "", ""];
        let rows: Vec<Row> = vec![
            // TF OD API (SSD) names: auto chooses them all.
            (
                Auto,
                r#"[{"name":"detection_boxes","datatype":"FP32","shape":[-1,100,4]},{"name":"detection_scores","datatype":"FP32","shape":[-1,100]},{"name":"detection_classes","datatype":"FP32","shape":[-1,100]},{"name":"num_detections","datatype":"FP32","shape":[-1]}]"#,
                unset,
                Some([
                    "detection_boxes",
                    "detection_scores",
                    "detection_classes",
                    "num_detections",
                ]),
            ),
            // EfficientNMS.
            (
                Nms,
                r#"[{"name":"num_dets","datatype":"INT32","shape":[-1,1]},{"name":"det_boxes","datatype":"FP32","shape":[-1,100,4]},{"name":"det_scores","datatype":"FP32","shape":[-1,100]},{"name":"det_classes","datatype":"INT32","shape":[-1,100]}]"#,
                unset,
                Some(["det_boxes", "det_scores", "det_classes", "num_dets"]),
            ),
            // torchvision's usual names; BYTES labels.
            (
                Auto,
                r#"[{"name":"boxes","datatype":"FP32","shape":[-1,4]},{"name":"scores","datatype":"FP32","shape":[-1]},{"name":"labels","datatype":"BYTES","shape":[-1]}]"#,
                unset,
                Some(["boxes", "scores", "labels", ""]),
            ),
            // Unusual names that still say which is which (a Triton ensemble).
            (
                Auto,
                r#"[{"name":"OUTPUT_BOXES","datatype":"FP32","shape":[1,-1,4]},{"name":"output_confidences","datatype":"FP32","shape":[1,-1]},{"name":"output_class_ids","datatype":"INT64","shape":[1,-1]},{"name":"valid_count","datatype":"INT32","shape":[1]}]"#,
                unset,
                Some([
                    "OUTPUT_BOXES",
                    "output_confidences",
                    "output_class_ids",
                    "valid_count",
                ]),
            ),
            // A set property is kept; the others are filled.
            (
                Named,
                r#"[{"name":"bboxes","datatype":"FP32","shape":[-1,4]},{"name":"my_scores","datatype":"FP32","shape":[-1]},{"name":"cls","datatype":"INT64","shape":[-1]}]"#,
                ["", "", "cls", ""],
                Some(["bboxes", "my_scores", "cls", ""]),
            ),
            // Two outputs could be the scores: that one stays unset (decode's usual names).
            (
                Named,
                r#"[{"name":"boxes","datatype":"FP32","shape":[-1,4]},{"name":"score_a","datatype":"FP32","shape":[-1]},{"name":"score_b","datatype":"FP32","shape":[-1]}]"#,
                unset,
                Some(["boxes", "", "", ""]),
            ),
            // Two usual box names: ambiguous, auto chooses nothing.
            (
                Auto,
                r#"[{"name":"boxes","datatype":"FP32","shape":[-1,4]},{"name":"bboxes","datatype":"FP32","shape":[-1,4]},{"name":"scores","datatype":"FP32","shape":[-1]}]"#,
                unset,
                None,
            ),
            // A "box" name that holds no boxes (last dimension 6) is not taken.
            (
                Auto,
                r#"[{"name":"det_out_box6","datatype":"FP32","shape":[-1,6]},{"name":"score","datatype":"FP32","shape":[-1]}]"#,
                unset,
                None,
            ),
            // A single-tensor YOLO or classifier: nothing to choose.
            (
                Auto,
                r#"[{"name":"output0","datatype":"FP32","shape":[-1,84,8400]}]"#,
                unset,
                None,
            ),
            (
                Auto,
                r#"[{"name":"class_scores","datatype":"FP32","shape":[-1,1000]}]"#,
                unset,
                None,
            ),
            // Formats that read one tensor keep their names unset.
            (
                Yolov8,
                r#"[{"name":"boxes","datatype":"FP32","shape":[-1,4]},{"name":"scores","datatype":"FP32","shape":[-1]}]"#,
                unset,
                None,
            ),
            // No outputs declared.
            (Auto, "[]", unset, None),
        ];
        for (format, outputs, set, want) in rows {
            let reply = format!(r#"{{"name":"m","inputs":[],"outputs":{outputs}}}"#);
            let metadata = crate::client::parse_model_metadata(reply.as_bytes()).unwrap();
            let settings = Settings {
                box_format: format,
                boxes_output: set[0].into(),
                scores_output: set[1].into(),
                classes_output: set[2].into(),
                count_output: set[3].into(),
                ..Default::default()
            };
            let (s, chosen) = settings.resolve_outputs(Some(&metadata));
            let got = [
                s.boxes_output.as_str(),
                s.scores_output.as_str(),
                s.classes_output.as_str(),
                s.count_output.as_str(),
            ];
            assert_eq!(got, want.unwrap_or(set), "{format:?} {outputs}: {chosen:?}");
            let chosen = chosen.unwrap_or_default();
            if want.is_some_and(|w| w != set) {
                assert!(chosen.contains("layout"), "{chosen}");
            }
            if outputs != "[]" {
                assert!(chosen.contains("model's metadata"), "{outputs}: {chosen}");
            }
            // What was chosen survives the per-request copy of the properties.
            let mut again = settings.clone();
            ResolvedInput::of(&s).apply(&mut again);
            assert_eq!(again.boxes_output, s.boxes_output);
            assert_eq!(again.count_output, s.count_output);
        }
        assert_eq!(Settings::default().resolve_outputs(None).1, None);
    }

    #[test]
    fn settings_debug_hides_the_api_key() {
        let s = Settings {
            api_key: Some("sk-live-secret".into()),
            ..Default::default()
        };
        let text = format!("{s:?}");
        assert!(!text.contains("sk-live-secret"), "{text}");
        assert!(
            text.contains("api_key: Some(\"<redacted>\")") && text.contains("max_inflight: 4"),
            "{text}"
        );
        assert!(format!("{:?}", Settings::default()).contains("api_key: None"));
    }

    #[test]
    fn mean_and_std_are_one_or_three_numbers() {
        let mut s = Settings {
            mean: "0.485, 0.456,0.406".into(),
            std: "0.5".into(),
            channel_order: InferChannelOrder::Bgr,
            ..Default::default()
        };
        let spec = s.tensor_spec().unwrap();
        assert_eq!((spec.mean[1], spec.std, spec.bgr), (0.456, [0.5; 3], true));
        for (mean, std, part) in [("1,2", "1", "mean"), ("x", "1", "mean"), ("0", "0", "std")] {
            s.mean = mean.into();
            s.std = std.into();
            assert!(s.tensor_spec().unwrap_err().contains(part));
        }
    }
}
