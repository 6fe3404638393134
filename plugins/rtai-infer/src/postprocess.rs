//! Turning model outputs into detections (or classes) in frame coordinates:
//! the layouts of [`BoxFormat`] (decoded/YOLOv10 `[N, 6]`, YOLOv5 `[1, A, 5 + C]`,
//! YOLOv8 `[1, 4 + C, A]` and transposed, TF OD API SSD, EfficientNMS, separately
//! named boxes/scores/classes, classifiers), `auto` deciding from names and shapes
//! (an error when it cannot tell, never a guess), and the letterbox mapping back
//! from the model's input to the frame.

use crate::client::Tensor;

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

/// How the model's input relates to the frame: input x = frame x × scale + pad_x,
/// input y = frame y × scale_y + pad_y (the same scale but for `stretch`; negative pads
/// for `center-crop`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    pub scale: f64,
    pub scale_y: f64,
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
            scale_y: scale,
            pad_x,
            pad_y,
            frame_width,
            frame_height,
        }
    }

    /// Scales the frame to fill the input exactly (aspect ratio not kept).
    pub fn stretch(
        frame_width: u32,
        frame_height: u32,
        input_width: u32,
        input_height: u32,
    ) -> Self {
        Self {
            scale: input_width as f64 / frame_width as f64,
            scale_y: input_height as f64 / frame_height as f64,
            pad_x: 0.0,
            pad_y: 0.0,
            frame_width,
            frame_height,
        }
    }

    /// Scales the frame to cover the input and crops the centre (what is outside is lost).
    pub fn center_crop(
        frame_width: u32,
        frame_height: u32,
        input_width: u32,
        input_height: u32,
    ) -> Self {
        let scale = (input_width as f64 / frame_width as f64)
            .max(input_height as f64 / frame_height as f64);
        Self {
            scale,
            scale_y: scale,
            pad_x: (input_width as f64 - frame_width as f64 * scale) / 2.0,
            pad_y: (input_height as f64 - frame_height as f64 * scale) / 2.0,
            frame_width,
            frame_height,
        }
    }

    /// The identity for models that get the frame itself (JPEG to RunPod).
    pub fn identity(frame_width: u32, frame_height: u32) -> Self {
        Self {
            scale: 1.0,
            scale_y: 1.0,
            pad_x: 0.0,
            pad_y: 0.0,
            frame_width,
            frame_height,
        }
    }

    /// Maps a box from input to frame coordinates, clipped to the frame; `None` when empty.
    pub fn to_frame(&self, x1: f64, y1: f64, x2: f64, y2: f64) -> Option<(f64, f64, f64, f64)> {
        let (w, h) = (self.frame_width as f64, self.frame_height as f64);
        let map = |v: f64, pad: f64, scale: f64, max: f64| ((v - pad) / scale).clamp(0.0, max);
        let (a, b) = (
            map(x1.min(x2), self.pad_x, self.scale, w),
            map(y1.min(y2), self.pad_y, self.scale_y, h),
        );
        let (c, d) = (
            map(x1.max(x2), self.pad_x, self.scale, w),
            map(y1.max(y2), self.pad_y, self.scale_y, h),
        );
        (c - a >= 1.0 && d - b >= 1.0).then_some((a, b, c, d))
    }
}

/// How a model lays out its outputs (`box-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoxFormat {
    /// Decided from the output names and shapes; ambiguous answers are errors.
    Auto,
    /// One tensor [N, 6]: x1, y1, x2, y2, score, class.
    Decoded,
    /// One tensor [1, A, 5 + C]: cx, cy, w, h, objectness, class scores (NMS applied).
    Yolov5,
    /// One tensor [1, 4 + C, A]: cx, cy, w, h, class scores (NMS applied).
    Yolov8,
    /// One tensor [1, A, 4 + C] (YOLOv8 transposed; NMS applied).
    Yolov8Transposed,
    /// End-to-end [1, N, 6]: x1, y1, x2, y2, score, class (no NMS).
    Yolov10,
    /// TF Object Detection API: detection_boxes [1, N, 4] (normalized y1 x1 y2 x2),
    /// detection_scores, detection_classes, num_detections.
    Ssd,
    /// TensorRT EfficientNMS: num_dets, det_boxes (x1 y1 x2 y2), det_scores, det_classes.
    Nms,
    /// Separate boxes [N, 4], scores [N] (or [N, C]) and classes [N] (numbers or BYTES labels).
    Named,
    /// Class scores [1, C] (logits or probabilities): the top-k classes of the frame.
    Classification,
    /// No decoding (the outputs travel as tensor metas).
    None,
}

/// The order of a box's four numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corners {
    Xyxy,
    Xywh,
    Cxcywh,
    Yxyx,
}

/// How box numbers are given: their order, and pixels of the model's input or 0..1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coordinates {
    pub corners: Corners,
    pub normalized: bool,
}

impl Coordinates {
    pub const fn new(corners: Corners, normalized: bool) -> Self {
        Self {
            corners,
            normalized,
        }
    }

    /// A box as x1, y1, x2, y2 in input pixels.
    fn to_xyxy(self, b: [f64; 4], input: (f64, f64)) -> (f64, f64, f64, f64) {
        let (x1, y1, x2, y2) = match self.corners {
            Corners::Xyxy => (b[0], b[1], b[2], b[3]),
            Corners::Xywh => (b[0], b[1], b[0] + b[2], b[1] + b[3]),
            Corners::Cxcywh => (
                b[0] - b[2] / 2.0,
                b[1] - b[3] / 2.0,
                b[0] + b[2] / 2.0,
                b[1] + b[3] / 2.0,
            ),
            Corners::Yxyx => (b[1], b[0], b[3], b[2]),
        };
        if self.normalized {
            (x1 * input.0, y1 * input.1, x2 * input.0, y2 * input.1)
        } else {
            (x1, y1, x2, y2)
        }
    }
}

/// Output tensor names (`boxes-output`, ...); empty: the format's usual names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutputNames {
    pub boxes: String,
    pub scores: String,
    pub classes: String,
    pub count: String,
}

/// One class of a classification, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct Class {
    pub class_id: i32,
    pub label: String,
    pub score: f64,
}

/// What a reply's tensors say: objects, or the classes of the whole frame.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decoded {
    pub detections: Vec<Detection>,
    pub classes: Vec<Class>,
    /// The tensors read (BYTES outputs not among them are text).
    pub consumed: Vec<String>,
}

/// Everything that says how to read a model's outputs.
#[derive(Debug, Clone)]
pub struct Decoder {
    pub format: BoxFormat,
    /// `None`: the format's own (YOLO cx cy w h, SSD normalized y1 x1 y2 x2, others x1 y1 x2 y2).
    pub coordinates: Option<Coordinates>,
    pub names: OutputNames,
    pub input_width: u32,
    pub input_height: u32,
    pub threshold: f64,
    pub nms_iou: f64,
    pub labels: Vec<String>,
    pub top_k: usize,
    pub softmax: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Self {
            format: BoxFormat::Auto,
            coordinates: None,
            names: OutputNames::default(),
            input_width: 640,
            input_height: 640,
            threshold: 0.25,
            nms_iou: 0.45,
            labels: Vec::new(),
            top_k: 1,
            softmax: false,
        }
    }
}

const BOX_NAMES: [&str; 4] = ["boxes", "bboxes", "pred_boxes", "detection_boxes"];
const SCORE_NAMES: [&str; 4] = ["scores", "confidences", "pred_scores", "detection_scores"];
const CLASS_NAMES: [&str; 5] = [
    "classes",
    "labels",
    "class_ids",
    "pred_classes",
    "detection_classes",
];
const COUNT_NAMES: [&str; 3] = ["num_detections", "num_dets", "count"];

/// The usual boxes, scores, classes and count names of each split layout.
const SSD: [&[&str]; 4] = [
    &["detection_boxes"],
    &["detection_scores"],
    &["detection_classes"],
    &["num_detections"],
];
const NMS: [&[&str]; 4] = [
    &["det_boxes"],
    &["det_scores"],
    &["det_classes"],
    &["num_dets"],
];
const NAMED: [&[&str]; 4] = [&BOX_NAMES, &SCORE_NAMES, &CLASS_NAMES, &COUNT_NAMES];

/// The split layout `auto` reads when these output names are present (SSD, EfficientNMS).
fn split_layout_by_names(has: impl Fn(&str) -> bool) -> Option<BoxFormat> {
    if has("detection_boxes") {
        Some(BoxFormat::Ssd)
    } else if has("det_boxes") || has("num_dets") {
        Some(BoxFormat::Nms)
    } else {
        None
    }
}

/// Words that mark an output's role when its name is none of the usual ones
/// (`output_boxes`, `pred_labels`, `valid_count`): boxes, scores, classes, count.
const ROLE_WORDS: [&[&str]; 4] = [
    &["box"],
    &["score", "conf"],
    &["class", "label"],
    &["num", "count"],
];

/// The output names a split layout reads, chosen before any reply from the outputs a
/// model declares (KServe metadata: name and shape, -1 for a free dimension). Names in
/// `set` are kept. An unset one is filled only when exactly one output has one of the
/// layout's usual names (as `decode` looks them up), else exactly one free output's name
/// contains the role's word (boxes must end in 4). `Auto` decides the layout by names as
/// `decode` does (SSD, EfficientNMS, else named when boxes and scores are found).
/// `None`: no split layout (a single-tensor model: no names to choose).
pub fn output_names_from(
    format: BoxFormat,
    set: &OutputNames,
    outputs: &[(&str, &[i64])],
) -> Option<(BoxFormat, OutputNames)> {
    let has = |n: &str| outputs.iter().any(|(name, _)| *name == n);
    let auto = format == BoxFormat::Auto;
    let format = match format {
        BoxFormat::Auto => split_layout_by_names(has).unwrap_or(BoxFormat::Named),
        f @ (BoxFormat::Ssd | BoxFormat::Nms | BoxFormat::Named) => f,
        _ => return None,
    };
    let usual = match format {
        BoxFormat::Ssd => SSD,
        BoxFormat::Nms => NMS,
        _ => NAMED,
    };
    let mut chosen = [
        set.boxes.clone(),
        set.scores.clone(),
        set.classes.clone(),
        set.count.clone(),
    ];
    for (name, usual) in chosen.iter_mut().zip(usual) {
        let present: Vec<&str> = usual.iter().copied().filter(|n| has(n)).collect();
        if name.is_empty()
            && let [one] = present[..]
        {
            *name = one.to_string();
        }
    }
    for role in 0..4 {
        if !chosen[role].is_empty() {
            continue;
        }
        let candidates: Vec<&str> = outputs
            .iter()
            .filter(|(name, shape)| {
                let lower = name.to_ascii_lowercase();
                !chosen.iter().any(|c| c == name)
                    && ROLE_WORDS[role].iter().any(|w| lower.contains(w))
                    && (role != 0 || matches!(shape.last(), None | Some(4) | Some(-1)))
            })
            .map(|(name, _)| *name)
            .collect();
        if let [one] = candidates[..] {
            chosen[role] = one.to_string();
        }
    }
    let [boxes, scores, classes, count] = chosen;
    // Auto reads separate tensors only when boxes and scores are both there (as decode).
    if auto && format == BoxFormat::Named && (boxes.is_empty() || scores.is_empty()) {
        return None;
    }
    Some((
        format,
        OutputNames {
            boxes,
            scores,
            classes,
            count,
        },
    ))
}

/// Largest N read as already-decoded boxes [N, 6] by `auto` (YOLO anchor counts are larger).
const AUTO_DECODED_MAX: usize = 1000;

fn is_bytes(t: &Tensor) -> bool {
    t.datatype == "BYTES" || (!t.strings.is_empty() && t.numbers.is_empty())
}

fn describe(t: &Tensor) -> String {
    format!("{} {:?}", t.name, t.shape)
}

/// The shape without leading 1s (keeping two dimensions at least).
fn squeeze(shape: &[usize]) -> Vec<usize> {
    let mut dims = shape.to_vec();
    while dims.len() > 2 && dims[0] == 1 {
        dims.remove(0);
    }
    dims
}

/// Checks a numeric tensor: its values fill its shape and are finite.
fn check(t: &Tensor) -> Result<(), String> {
    let count = t
        .shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("output {} shape {:?} is too large", t.name, t.shape))?;
    let have = if is_bytes(t) {
        t.strings.len()
    } else {
        t.numbers.len()
    };
    if count != have {
        return Err(format!(
            "output {} shape {:?} holds {count} values but {have} came",
            t.name, t.shape
        ));
    }
    if t.numbers.iter().any(|v| !v.is_finite()) {
        return Err(format!("output {} holds NaN or infinite values", t.name));
    }
    Ok(())
}

enum Plan<'a> {
    /// One tensor in a single-tensor layout (a concrete format).
    Single(BoxFormat, &'a Tensor),
    Split {
        boxes: &'a Tensor,
        scores: Option<&'a Tensor>,
        classes: Option<&'a Tensor>,
        count: Option<&'a Tensor>,
        coordinates: Coordinates,
    },
    Classify(&'a Tensor),
    Nothing,
}

impl Decoder {
    fn find<'a>(tensors: &'a [Tensor], name: &str) -> Option<&'a Tensor> {
        tensors.iter().find(|t| t.name == name)
    }

    /// The tensor named `set` (a property) or the first of `usual` present.
    fn pick<'a>(tensors: &'a [Tensor], set: &str, usual: &[&str]) -> Option<&'a Tensor> {
        if !set.is_empty() {
            return Self::find(tensors, set);
        }
        usual.iter().find_map(|n| Self::find(tensors, n))
    }

    fn split<'a>(
        &self,
        tensors: &'a [Tensor],
        what: &str,
        names: [&[&str]; 4],
        coordinates: Coordinates,
    ) -> Result<Plan<'a>, String> {
        let n = &self.names;
        let boxes = Self::pick(tensors, &n.boxes, names[0]).ok_or_else(|| {
            format!(
                "{what}: no boxes output (looked for {}; outputs: {})",
                if n.boxes.is_empty() {
                    names[0].join(", ")
                } else {
                    n.boxes.clone()
                },
                tensors.iter().map(describe).collect::<Vec<_>>().join(", ")
            )
        })?;
        let named = |set: &str, usual: &[&str], prop: &str| -> Result<Option<&'a Tensor>, String> {
            match Self::pick(tensors, set, usual) {
                None if !set.is_empty() => Err(format!("{what}: no output named {set} ({prop})")),
                t => Ok(t),
            }
        };
        Ok(Plan::Split {
            boxes,
            scores: named(&n.scores, names[1], "scores-output")?,
            classes: named(&n.classes, names[2], "classes-output")?,
            count: named(&n.count, names[3], "count-output")?,
            coordinates,
        })
    }

    /// The one numeric tensor a single-tensor layout reads (`boxes-output` when set).
    fn single<'a>(&self, tensors: &'a [Tensor], what: &str) -> Result<Option<&'a Tensor>, String> {
        if !self.names.boxes.is_empty() {
            return Self::find(tensors, &self.names.boxes)
                .map(Some)
                .ok_or_else(|| format!("no output named {} (boxes-output)", self.names.boxes));
        }
        let numeric: Vec<&Tensor> = tensors.iter().filter(|t| !is_bytes(t)).collect();
        match numeric[..] {
            [] => Ok(None),
            [t] => Ok(Some(t)),
            _ => Err(format!(
                "{what} reads one output but the model has {} ({}): set boxes-output",
                numeric.len(),
                numeric
                    .iter()
                    .map(|t| describe(t))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    fn plan<'a>(&self, tensors: &'a [Tensor]) -> Result<Plan<'a>, String> {
        let pixels = Coordinates::new(Corners::Xyxy, false);
        match self.format {
            BoxFormat::Ssd => {
                self.split(tensors, "ssd", SSD, Coordinates::new(Corners::Yxyx, true))
            }
            BoxFormat::Nms => self.split(tensors, "nms", NMS, pixels),
            BoxFormat::Named => self.split(tensors, "named", NAMED, pixels),
            BoxFormat::Classification => {
                let t = if self.names.scores.is_empty() {
                    self.single(tensors, "classification")?
                } else {
                    Some(Self::find(tensors, &self.names.scores).ok_or_else(|| {
                        format!("no output named {} (scores-output)", self.names.scores)
                    })?)
                };
                Ok(t.map_or(Plan::Nothing, Plan::Classify))
            }
            BoxFormat::Auto => self.auto(tensors),
            BoxFormat::None => Ok(Plan::Nothing),
            f => Ok(self
                .single(tensors, &format!("{f:?}"))?
                .map_or(Plan::Nothing, |t| Plan::Single(f, t))),
        }
    }

    fn auto<'a>(&self, tensors: &'a [Tensor]) -> Result<Plan<'a>, String> {
        if let Some(format) = split_layout_by_names(|n| Self::find(tensors, n).is_some()) {
            return Decoder {
                format,
                ..self.clone()
            }
            .plan(tensors);
        }
        // Boxes [.., 4] beside scores: separate tensors.
        let boxes = Self::pick(tensors, &self.names.boxes, &BOX_NAMES)
            .filter(|t| t.shape.last() == Some(&4));
        let scores = Self::pick(tensors, &self.names.scores, &SCORE_NAMES);
        if boxes.is_some() && scores.is_some() {
            return Decoder {
                format: BoxFormat::Named,
                ..self.clone()
            }
            .plan(tensors);
        }
        let Some(t) = self
            .single(tensors, "box-format=auto")
            .map_err(|e| format!("{e}, or set box-format (no known output names found)"))?
        else {
            return Ok(Plan::Nothing);
        };
        let dims = squeeze(&t.shape);
        let name = t.name.to_ascii_lowercase();
        let ambiguous = |what: &str| {
            Err(format!(
                "box-format=auto cannot tell the layout of output {}: {what}; set box-format",
                describe(t)
            ))
        };
        let classy = ["prob", "logit", "softmax", "cls", "class", "score"]
            .iter()
            .any(|k| name.contains(k));
        let boxy = ["box", "det"].iter().any(|k| name.contains(k));
        match dims[..] {
            [_] => Ok(Plan::Classify(t)),
            [1, 6] if classy && !boxy => Ok(Plan::Classify(t)),
            [1, 6] if !boxy => ambiguous("[1, 6] is one decoded box or the scores of 6 classes"),
            [n, 6] if n <= AUTO_DECODED_MAX => Ok(Plan::Single(BoxFormat::Decoded, t)),
            [_, 6] => ambiguous(
                "many rows of 6 are decoded boxes, YOLOv8 transposed with 2 classes or YOLOv5 with 1",
            ),
            [0, _] => Ok(Plan::Nothing),
            [1, _] => Ok(Plan::Classify(t)),
            [rows, anchors] if rows >= 5 && (rows < anchors || anchors < 5) => {
                Ok(Plan::Single(BoxFormat::Yolov8, t))
            }
            [_, cols] if cols >= 5 => ambiguous(
                "[anchors, values] is YOLOv5 (5 + classes, with objectness) or YOLOv8 transposed (4 + classes): set box-format=yolov5 or yolov8-transposed",
            ),
            _ => ambiguous("no known layout has this shape"),
        }
    }

    /// Objects (or classes) in frame coordinates from one frame's output tensors.
    pub fn decode(&self, tensors: &[Tensor], letterbox: &Letterbox) -> Result<Decoded, String> {
        let mut out = Decoded::default();
        let input = (self.input_width as f64, self.input_height as f64);
        let plan = self.plan(tensors)?;
        let raw: Vec<RawBox> = match plan {
            Plan::Nothing => return Ok(out),
            Plan::Classify(t) => {
                check(t)?;
                out.consumed.push(t.name.clone());
                out.classes = self.classify(t)?;
                return Ok(out);
            }
            Plan::Single(format, t) => {
                check(t)?;
                out.consumed.push(t.name.clone());
                self.single_boxes(format, t, input)?
            }
            Plan::Split {
                boxes,
                scores,
                classes,
                count,
                coordinates,
            } => {
                for t in [Some(boxes), scores, classes, count].into_iter().flatten() {
                    check(t)?;
                    out.consumed.push(t.name.clone());
                }
                let coords = self.coordinates.unwrap_or(coordinates);
                return self.split_boxes(boxes, scores, classes, count, coords, letterbox, out);
            }
        };
        out.detections = raw
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
                    label: label_for(&self.labels, class_id),
                })
            })
            .collect();
        Ok(out)
    }

    fn single_boxes(
        &self,
        format: BoxFormat,
        t: &Tensor,
        input: (f64, f64),
    ) -> Result<Vec<RawBox>, String> {
        let dims = squeeze(&t.shape);
        let data = &t.numbers;
        let what = describe(t);
        let own = |c: Corners| self.coordinates.unwrap_or(Coordinates::new(c, false));
        let class_of = |scores: &mut dyn Iterator<Item = f64>| {
            scores.enumerate().fold(
                (0usize, f64::MIN),
                |best, c| if c.1 > best.1 { c } else { best },
            )
        };
        let mut boxes = Vec::new();
        match format {
            BoxFormat::Decoded | BoxFormat::Yolov10 => {
                if data.is_empty() {
                    return Ok(Vec::new());
                }
                if dims.len() != 2 || dims[1] != 6 {
                    return Err(format!(
                        "decoded boxes need [N, 6] (x1, y1, x2, y2, score, class), got {what}"
                    ));
                }
                let coords = own(Corners::Xyxy);
                for r in data.chunks_exact(6).filter(|r| r[4] >= self.threshold) {
                    let (x1, y1, x2, y2) = coords.to_xyxy([r[0], r[1], r[2], r[3]], input);
                    boxes.push((x1, y1, x2, y2, r[4], r[5].round() as i32));
                }
                // End-to-end models are already suppressed.
                return Ok(boxes);
            }
            BoxFormat::Yolov8 => {
                let [rows, anchors] = dims[..] else {
                    return Err(format!(
                        "YOLOv8 output needs [1, 4 + classes, anchors], got {what}"
                    ));
                };
                if rows < 5 {
                    return Err(format!(
                        "YOLOv8 output needs at least 5 rows (cx, cy, w, h, scores), got {what}"
                    ));
                }
                let at = |row: usize, a: usize| data[row * anchors + a];
                let coords = own(Corners::Cxcywh);
                for a in 0..anchors {
                    let (class, score) = class_of(&mut (4..rows).map(|r| at(r, a)));
                    if score >= self.threshold {
                        let (x1, y1, x2, y2) =
                            coords.to_xyxy([at(0, a), at(1, a), at(2, a), at(3, a)], input);
                        boxes.push((x1, y1, x2, y2, score, class as i32));
                    }
                }
            }
            BoxFormat::Yolov8Transposed | BoxFormat::Yolov5 => {
                let v5 = format == BoxFormat::Yolov5;
                let first = if v5 { 5 } else { 4 };
                let [_, cols] = dims[..] else {
                    return Err(format!(
                        "{format:?} output needs [1, anchors, {first} + classes], got {what}"
                    ));
                };
                if cols <= first {
                    return Err(format!(
                        "{format:?} output needs more than {first} values per anchor, got {what}"
                    ));
                }
                let coords = own(Corners::Cxcywh);
                for r in data.chunks_exact(cols) {
                    let objectness = if v5 { r[4] } else { 1.0 };
                    if objectness < self.threshold {
                        continue;
                    }
                    let (class, best) = class_of(&mut r[first..].iter().copied());
                    let score = objectness * best;
                    if score >= self.threshold {
                        let (x1, y1, x2, y2) = coords.to_xyxy([r[0], r[1], r[2], r[3]], input);
                        boxes.push((x1, y1, x2, y2, score, class as i32));
                    }
                }
            }
            other => return Err(format!("{other:?} is not a one-tensor layout")),
        }
        Ok(nms(boxes, self.nms_iou))
    }

    #[allow(clippy::too_many_arguments)]
    fn split_boxes(
        &self,
        boxes: &Tensor,
        scores: Option<&Tensor>,
        classes: Option<&Tensor>,
        count: Option<&Tensor>,
        coords: Coordinates,
        letterbox: &Letterbox,
        mut out: Decoded,
    ) -> Result<Decoded, String> {
        if boxes.shape.last() != Some(&4) || is_bytes(boxes) {
            return Err(format!("boxes need [.., N, 4], got {}", describe(boxes)));
        }
        let mut n = boxes.numbers.len() / 4;
        if let Some(c) = count {
            let v = *c
                .numbers
                .first()
                .ok_or_else(|| format!("count output {} is empty", describe(c)))?;
            if v < 0.0 {
                return Err(format!("count output {} is negative", c.name));
            }
            n = n.min(v as usize);
        }
        let total = boxes.numbers.len() / 4;
        // Scores [N] or [N, C] (per class: the best is the class).
        let per_class = match scores {
            Some(s) if s.numbers.len() == total => 1,
            Some(s) if total > 0 && s.numbers.len() % total == 0 && classes.is_none() => {
                s.numbers.len() / total
            }
            Some(s) if total == 0 && s.numbers.is_empty() => 1,
            Some(s) => {
                return Err(format!("scores {} do not match {total} boxes", describe(s)));
            }
            None => 1,
        };
        if let Some(c) = classes {
            let have = if is_bytes(c) {
                c.strings.len()
            } else {
                c.numbers.len()
            };
            if have != total {
                return Err(format!(
                    "classes {} do not match {total} boxes",
                    describe(c)
                ));
            }
        }
        let input = (self.input_width as f64, self.input_height as f64);
        for i in 0..n {
            let b = &boxes.numbers[i * 4..i * 4 + 4];
            let (mut class_id, score) = match scores {
                None => (0, 1.0),
                Some(s) if per_class == 1 => (0, s.numbers[i]),
                Some(s) => {
                    let row = &s.numbers[i * per_class..(i + 1) * per_class];
                    let (c, v) = row.iter().enumerate().fold((0, f64::MIN), |best, (c, &v)| {
                        if v > best.1 { (c, v) } else { best }
                    });
                    (c as i32, v)
                }
            };
            if score < self.threshold {
                continue;
            }
            let mut label = None;
            match classes {
                Some(c) if is_bytes(c) => {
                    let name = c.strings[i].clone();
                    class_id = self
                        .labels
                        .iter()
                        .position(|l| *l == name)
                        .map_or(-1, |p| p as i32);
                    label = Some(name);
                }
                Some(c) => class_id = c.numbers[i].round() as i32,
                None => {}
            }
            let (x1, y1, x2, y2) = coords.to_xyxy([b[0], b[1], b[2], b[3]], input);
            if let Some((x1, y1, x2, y2)) = letterbox.to_frame(x1, y1, x2, y2) {
                out.detections.push(Detection {
                    x1,
                    y1,
                    x2,
                    y2,
                    confidence: score.clamp(0.0, 1.0),
                    class_id,
                    label: label.unwrap_or_else(|| label_for(&self.labels, class_id)),
                });
            }
        }
        Ok(out)
    }

    fn classify(&self, t: &Tensor) -> Result<Vec<Class>, String> {
        if is_bytes(t) || t.shape.iter().filter(|&&d| d > 1).count() > 1 {
            return Err(format!(
                "classification needs class scores [1, C], got {}",
                describe(t)
            ));
        }
        let mut scores = t.numbers.clone();
        if self.softmax && !scores.is_empty() {
            let max = scores.iter().copied().fold(f64::MIN, f64::max);
            let sum: f64 = scores.iter().map(|v| (v - max).exp()).sum();
            scores.iter_mut().for_each(|v| *v = (*v - max).exp() / sum);
        }
        let mut ranked: Vec<(usize, f64)> = scores.into_iter().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(ranked
            .into_iter()
            .filter(|(_, s)| *s >= self.threshold)
            .take(self.top_k.max(1))
            .map(|(i, score)| Class {
                class_id: i as i32,
                label: label_for(&self.labels, i as i32),
                score,
            })
            .collect())
    }
}

/// One frame's tensors of a batched reply ([batch, ...] each): the first dimension becomes 1.
pub fn split_batch(tensors: &[Tensor], batch: usize) -> Result<Vec<Vec<Tensor>>, String> {
    let mut frames = vec![Vec::new(); batch];
    for t in tensors {
        let len = if is_bytes(t) {
            t.strings.len()
        } else {
            t.numbers.len()
        };
        if t.shape.first() != Some(&batch) || len % batch != 0 {
            return Err(format!(
                "output {} has shape {:?} for a batch of {batch}",
                t.name, t.shape
            ));
        }
        let per = len / batch;
        let shape: Vec<usize> = std::iter::once(1)
            .chain(t.shape[1..].iter().copied())
            .collect();
        for (i, frame) in frames.iter_mut().enumerate() {
            frame.push(Tensor {
                name: t.name.clone(),
                datatype: t.datatype.clone(),
                shape: shape.clone(),
                numbers: if is_bytes(t) {
                    Vec::new()
                } else {
                    t.numbers[i * per..(i + 1) * per].to_vec()
                },
                strings: if is_bytes(t) {
                    t.strings[i * per..(i + 1) * per].to_vec()
                } else {
                    Vec::new()
                },
            });
        }
    }
    Ok(frames)
}

/// Class names, one per line, line N for class N (trailing empty lines dropped).
pub fn read_labels_file(text: &str) -> Vec<String> {
    let mut labels: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    while labels.last().is_some_and(String::is_empty) {
        labels.pop();
    }
    labels
}

pub(crate) fn label_for(labels: &[String], class_id: i32) -> String {
    usize::try_from(class_id)
        .ok()
        .and_then(|i| labels.get(i))
        .cloned()
        .unwrap_or_else(|| format!("class{class_id}"))
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

    fn t(name: &str, shape: &[usize], numbers: Vec<f64>) -> Tensor {
        Tensor {
            name: name.into(),
            datatype: "FP32".into(),
            shape: shape.to_vec(),
            numbers,
            strings: Vec::new(),
        }
    }

    fn bytes(name: &str, strings: &[&str]) -> Tensor {
        Tensor {
            name: name.into(),
            datatype: "BYTES".into(),
            shape: vec![strings.len()],
            numbers: Vec::new(),
            strings: strings.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn decoder(format: BoxFormat) -> Decoder {
        Decoder {
            format,
            input_width: 100,
            input_height: 100,
            labels: vec!["person".into(), "ball".into()],
            ..Default::default()
        }
    }

    fn boxes(d: &Decoded) -> Vec<(f64, f64, f64, f64, String)> {
        d.detections
            .iter()
            .map(|d| (d.x1, d.y1, d.x2, d.y2, d.label.clone()))
            .collect()
    }

    const ID: Letterbox = Letterbox {
        scale: 1.0,
        scale_y: 1.0,
        pad_x: 0.0,
        pad_y: 0.0,
        frame_width: 100,
        frame_height: 100,
    };

    #[test]
    fn letterbox_maps_back_to_the_frame() {
        // 640x360 into 320x320: scale 0.5, 70 px bars top and bottom.
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
        // Stretch: each axis its own scale; centre crop: the sides cut off.
        let lb = Letterbox::stretch(640, 360, 320, 320);
        assert_eq!(
            lb.to_frame(160.0, 160.0, 320.0, 320.0),
            Some((320.0, 180.0, 640.0, 360.0))
        );
        let lb = Letterbox::center_crop(640, 360, 360, 360);
        assert_eq!((lb.scale, lb.pad_x, lb.pad_y), (1.0, -140.0, 0.0));
        assert_eq!(
            lb.to_frame(0.0, 0.0, 360.0, 360.0),
            Some((140.0, 0.0, 500.0, 360.0))
        );
    }

    #[test]
    fn decoded_boxes_table() {
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
        for format in [BoxFormat::Decoded, BoxFormat::Yolov10] {
            for (shape, data, expected) in &cases {
                let got = decoder(format).decode(&[t("boxes", shape, data.clone())], &ID);
                match (got, expected) {
                    (Ok(d), Ok(n)) => assert_eq!(d.detections.len(), *n, "{shape:?}"),
                    (Err(e), Err(part)) => assert!(e.contains(part), "{e}"),
                    (got, expected) => panic!("{shape:?}: {got:?} vs {expected:?}"),
                }
            }
        }
    }

    /// Four anchors, 2 classes: two overlapping boxes of class 1, one of class 0, one weak.
    const ANCHORS: [[f64; 6]; 4] = [
        [50.0, 50.0, 20.0, 20.0, 0.1, 0.9],
        [52.0, 51.0, 20.0, 20.0, 0.05, 0.8],
        [10.0, 10.0, 8.0, 8.0, 0.7, 0.2],
        [80.0, 80.0, 10.0, 10.0, 0.1, 0.1],
    ];

    fn expect_yolo(d: &Decoded) {
        assert_eq!(
            boxes(d),
            vec![
                (40.0, 40.0, 60.0, 60.0, "ball".to_string()),
                (6.0, 6.0, 14.0, 14.0, "person".to_string())
            ]
        );
        assert_eq!(d.detections[0].confidence, 0.9);
    }

    #[test]
    fn yolov8_both_ways_round_with_nms() {
        // [1, 4 + C, A]: one row per value.
        let mut channels_first = vec![0.0; 6 * 4];
        for (a, v) in ANCHORS.iter().enumerate() {
            for (row, value) in v.iter().enumerate() {
                channels_first[row * 4 + a] = *value;
            }
        }
        let out = t("output0", &[1, 6, 4], channels_first.clone());
        expect_yolo(
            &decoder(BoxFormat::Yolov8)
                .decode(std::slice::from_ref(&out), &ID)
                .unwrap(),
        );
        expect_yolo(&decoder(BoxFormat::Auto).decode(&[out], &ID).unwrap());
        // [1, A, 4 + C]: one row per anchor.
        let transposed = t("output0", &[1, 4, 6], ANCHORS.concat());
        expect_yolo(
            &decoder(BoxFormat::Yolov8Transposed)
                .decode(&[transposed], &ID)
                .unwrap(),
        );
        let short = t("output0", &[1, 4, 4], channels_first[..16].to_vec());
        assert!(decoder(BoxFormat::Yolov8).decode(&[short], &ID).is_err());
        let flat = t("output0", &[24], channels_first);
        assert!(decoder(BoxFormat::Yolov8).decode(&[flat], &ID).is_err());
    }

    #[test]
    fn yolov5_multiplies_objectness_and_class_scores() {
        // [1, A, 5 + C]: cx, cy, w, h, objectness, scores.
        let rows = [
            [50.0, 50.0, 20.0, 20.0, 0.9, 0.1, 1.0],
            [10.0, 10.0, 8.0, 8.0, 0.8, 0.9, 0.1],
            // A confident class but no object: dropped.
            [80.0, 80.0, 10.0, 10.0, 0.1, 1.0, 0.0],
        ];
        let d = decoder(BoxFormat::Yolov5)
            .decode(&[t("output", &[1, 3, 7], rows.concat())], &ID)
            .unwrap();
        assert_eq!(
            boxes(&d),
            vec![
                (40.0, 40.0, 60.0, 60.0, "ball".to_string()),
                (6.0, 6.0, 14.0, 14.0, "person".to_string())
            ]
        );
        assert!((d.detections[1].confidence - 0.72).abs() < 1e-9);
        let too_narrow = t("output", &[1, 1, 5], vec![0.0; 5]);
        assert!(
            decoder(BoxFormat::Yolov5)
                .decode(&[too_narrow], &ID)
                .is_err()
        );
    }

    #[test]
    fn ssd_reads_normalized_yxyx_up_to_num_detections() {
        let outputs = [
            t(
                "detection_boxes",
                &[1, 3, 4],
                vec![0.1, 0.2, 0.5, 0.6, 0.0, 0.0, 0.3, 0.3, 0.5, 0.5, 0.9, 0.9],
            ),
            t("detection_scores", &[1, 3], vec![0.9, 0.8, 0.95]),
            t("detection_classes", &[1, 3], vec![1.0, 0.0, 1.0]),
            t("num_detections", &[1], vec![2.0]),
        ];
        for format in [BoxFormat::Ssd, BoxFormat::Auto] {
            let d = decoder(format).decode(&outputs, &ID).unwrap();
            assert_eq!(
                boxes(&d),
                vec![
                    (20.0, 10.0, 60.0, 50.0, "ball".to_string()),
                    (0.0, 0.0, 30.0, 30.0, "person".to_string())
                ],
                "{format:?}: the third is past num_detections"
            );
        }
    }

    #[test]
    fn efficient_nms_outputs() {
        let outputs = [
            t("num_dets", &[1, 1], vec![1.0]),
            t(
                "det_boxes",
                &[1, 2, 4],
                vec![10., 20., 30., 40., 0., 0., 5., 5.],
            ),
            t("det_scores", &[1, 2], vec![0.7, 0.9]),
            t("det_classes", &[1, 2], vec![1.0, 0.0]),
        ];
        for format in [BoxFormat::Nms, BoxFormat::Auto] {
            let d = decoder(format).decode(&outputs, &ID).unwrap();
            assert_eq!(
                boxes(&d),
                vec![(10.0, 20.0, 30.0, 40.0, "ball".to_string())]
            );
            assert_eq!(d.detections[0].confidence, 0.7);
        }
    }

    #[test]
    fn named_outputs_with_bytes_labels_as_torchvision_and_triton_answer() {
        // The layout: boxes FP32 [N, 4], scores FP32 [N], labels BYTES [N].
        let outputs = [
            t("boxes", &[2, 4], vec![10., 10., 50., 60., 1., 1., 3., 3.]),
            t("scores", &[2], vec![0.8, 0.9]),
            bytes("labels", &["dog", "ball"]),
        ];
        for format in [BoxFormat::Named, BoxFormat::Auto] {
            let d = decoder(format).decode(&outputs, &ID).unwrap();
            assert_eq!(
                boxes(&d),
                vec![
                    (10.0, 10.0, 50.0, 60.0, "dog".to_string()),
                    (1.0, 1.0, 3.0, 3.0, "ball".to_string())
                ]
            );
            assert_eq!(
                (d.detections[0].class_id, d.detections[1].class_id),
                (-1, 1),
                "ids from the labels property where known"
            );
            assert!(d.consumed.contains(&"labels".to_string()));
        }
        // Custom names and per-class scores [N, C]; normalized x, y, w, h.
        let outputs = [
            t("out_b", &[1, 1, 4], vec![0.1, 0.2, 0.3, 0.4]),
            t("out_s", &[1, 1, 2], vec![0.2, 0.7]),
        ];
        let mut dec = decoder(BoxFormat::Named);
        dec.names.boxes = "out_b".into();
        dec.names.scores = "out_s".into();
        dec.coordinates = Some(Coordinates::new(Corners::Xywh, true));
        let d = dec.decode(&outputs, &ID).unwrap();
        let b = &d.detections[0];
        assert_eq!((b.class_id, b.confidence), (1, 0.7));
        assert!(
            (b.x1 - 10.0).abs() < 1e-9 && (b.y2 - 60.0).abs() < 1e-9,
            "{b:?}"
        );
        // Mismatched lengths and missing names are errors.
        dec.names.classes = "nope".into();
        assert!(dec.decode(&outputs, &ID).unwrap_err().contains("nope"));
        let bad = [
            t("boxes", &[2, 4], vec![0.; 8]),
            t("scores", &[3], vec![0.9; 3]),
        ];
        assert!(
            decoder(BoxFormat::Named)
                .decode(&bad, &ID)
                .unwrap_err()
                .contains("do not match")
        );
    }

    #[test]
    fn classification_gives_the_top_k_with_softmax() {
        let mut dec = decoder(BoxFormat::Classification);
        dec.labels = vec!["0".into(), "180".into()];
        dec.top_k = 2;
        dec.softmax = true;
        dec.threshold = 0.0;
        let d = dec
            .decode(&[t("softmax_0.tmp_0", &[1, 2], vec![0.0, 2.0])], &ID)
            .unwrap();
        assert!(d.detections.is_empty());
        assert_eq!(d.classes.len(), 2);
        assert_eq!(
            (d.classes[0].label.as_str(), d.classes[0].class_id),
            ("180", 1)
        );
        let p = 1.0 / (1.0 + (-2.0f64).exp());
        assert!((d.classes[0].score - p).abs() < 1e-9);
        // Probabilities as they come; the threshold applies; auto knows [1, C].
        dec.softmax = false;
        dec.threshold = 0.5;
        dec.format = BoxFormat::Auto;
        let d = dec
            .decode(&[t("prob", &[1, 3], vec![0.1, 0.6, 0.3])], &ID)
            .unwrap();
        assert_eq!(d.classes.len(), 1);
        assert_eq!(d.classes[0].label, "180");
        let two_d = t("prob", &[1, 2, 3], vec![0.1; 6]);
        assert!(
            decoder(BoxFormat::Classification)
                .decode(&[two_d], &ID)
                .is_err()
        );
    }

    #[test]
    fn auto_decides_or_says_why_not() {
        type Case = (Vec<Tensor>, Result<&'static str, &'static str>);
        let cases: Vec<Case> = vec![
            (
                vec![t("boxes", &[1, 6], vec![1., 1., 9., 9., 0.9, 1.])],
                Ok("boxes"),
            ),
            (vec![t("probs", &[1, 6], vec![0.1; 6])], Ok("classes")),
            (
                vec![t("output", &[1, 6], vec![0.1; 6])],
                Err("[1, 6] is one decoded box"),
            ),
            (
                vec![t("logits", &[1, 1000], vec![0.0; 1000])],
                Ok("classes"),
            ),
            (
                vec![t("output0", &[1, 25, 7], vec![0.0; 175])],
                Err("box-format=yolov5 or yolov8-transposed"),
            ),
            (
                vec![t("output0", &[1, 2000, 6], vec![0.0; 12000])],
                Err("YOLOv8 transposed with 2 classes"),
            ),
            (
                vec![t("a", &[1, 6], vec![0.0; 6]), t("b", &[1, 6], vec![0.0; 6])],
                Err("set boxes-output"),
            ),
            (
                vec![t("x", &[2, 3, 4, 5], vec![0.0; 120])],
                Err("no known layout"),
            ),
            (vec![bytes("text", &["hello"])], Ok("nothing")),
            (vec![], Ok("nothing")),
        ];
        for (tensors, expected) in cases {
            let got = decoder(BoxFormat::Auto).decode(&tensors, &ID);
            match (got, expected) {
                (Ok(d), Ok("boxes")) => assert_eq!(d.detections.len(), 1),
                (Ok(d), Ok("classes")) => assert!(!d.classes.is_empty() || d.detections.is_empty()),
                (Ok(d), Ok("nothing")) => assert_eq!(d, Decoded::default()),
                (Err(e), Err(part)) => {
                    assert!(e.contains(part), "{e} lacks {part}");
                    assert!(e.contains("box-format"), "the error says what to set: {e}");
                }
                (got, expected) => panic!("{tensors:?}: {got:?} vs {expected:?}"),
            }
        }
    }

    #[test]
    fn unknown_classes_get_a_generic_label() {
        let d = decoder(BoxFormat::Auto)
            .decode(&[t("boxes", &[1, 6], vec![1., 1., 9., 9., 0.9, 7.])], &ID)
            .unwrap();
        assert_eq!(d.detections[0].label, "class7");
    }

    #[test]
    fn batches_split_per_frame_and_labels_files_read_by_line() {
        let frames = split_batch(
            &[
                t("boxes", &[2, 1, 6], (0..12).map(f64::from).collect()),
                bytes("labels", &["a", "b"]),
            ],
            2,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(frames[1][0].shape, vec![1, 1, 6]);
        assert_eq!(frames[1][0].numbers[0], 6.0);
        assert_eq!(frames[1][1].strings, vec!["b".to_string()]);
        assert!(split_batch(&[t("boxes", &[1, 6], vec![0.0; 6])], 2).is_err());
        assert_eq!(
            read_labels_file("person\r\nbicycle\n\ncar\n\n"),
            vec!["person", "bicycle", "", "car"]
        );
    }
}
