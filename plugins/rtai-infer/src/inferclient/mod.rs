use gst::glib;
use gst::prelude::*;

mod audio;
mod imp;
mod queue;
mod replies;
mod requests;
mod rois;
mod settings;

glib::wrapper! {
    pub struct InferClient(ObjectSubclass<imp::InferClient>) @extends gst::Element, gst::Object;
}

#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstRtaiInferProtocol")]
pub enum InferProtocol {
    #[enum_value(name = "KServe v2 / Triton REST (JSON tensors)", nick = "kserve-rest")]
    KserveRest = 0,
    #[enum_value(
        name = "RunPod serverless (/runsync, /status polling, /cancel)",
        nick = "runpod"
    )]
    Runpod = 1,
    #[enum_value(
        name = "KServe v2 / Triton gRPC (GRPCInferenceService.ModelInfer, raw tensor contents)",
        nick = "kserve-grpc"
    )]
    KserveGrpc = 4,
    #[enum_value(
        name = "OpenAI-compatible chat completions with images",
        nick = "openai-chat"
    )]
    OpenaiChat = 2,
    #[enum_value(
        name = "OpenAI-compatible audio transcriptions",
        nick = "openai-transcriptions"
    )]
    OpenaiTranscriptions = 3,
}

#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstRtaiInferOutput")]
pub enum InferOutput {
    #[enum_value(
        name = "Pass the media through with results attached as metas",
        nick = "meta"
    )]
    Meta = 0,
    #[enum_value(
        name = "Emit the results as text/x-raw with the media's timestamps",
        nick = "text"
    )]
    Text = 1,
}

/// When segment start/commit/end events leave: in stream order (behind the results
/// still pending) or at once (a barge-in is seen while a transcript is being made).
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstRtaiInferSegmentEvents")]
pub enum InferSegmentEvents {
    #[enum_value(
        name = "In stream order, behind the results still pending",
        nick = "in-order"
    )]
    InOrder = 0,
    #[enum_value(
        name = "At once from the sink pad's thread, ahead of the results still pending",
        nick = "immediate"
    )]
    Immediate = 1,
}

#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstRtaiInferBoxFormat")]
pub enum InferBoxFormat {
    #[enum_value(
        name = "From the output names and shapes; an error when that is ambiguous",
        nick = "auto"
    )]
    Auto = 0,
    #[enum_value(
        name = "Decoded boxes [N, 6]: x1, y1, x2, y2, score, class in input pixels",
        nick = "decoded"
    )]
    Decoded = 1,
    #[enum_value(
        name = "YOLOv8 [1, 4 + classes, anchors]: cx, cy, w, h, class scores (NMS applied)",
        nick = "yolov8"
    )]
    Yolov8 = 2,
    #[enum_value(
        name = "YOLOv5/v7 [1, anchors, 5 + classes]: cx, cy, w, h, objectness, class scores (NMS applied)",
        nick = "yolov5"
    )]
    Yolov5 = 3,
    #[enum_value(
        name = "YOLOv8 transposed [1, anchors, 4 + classes] (NMS applied)",
        nick = "yolov8-transposed"
    )]
    Yolov8Transposed = 4,
    #[enum_value(
        name = "YOLOv10 end-to-end [1, N, 6]: x1, y1, x2, y2, score, class",
        nick = "yolov10"
    )]
    Yolov10 = 5,
    #[enum_value(
        name = "TF Object Detection API: detection_boxes (normalized y1 x1 y2 x2), detection_scores, detection_classes, num_detections",
        nick = "ssd"
    )]
    Ssd = 6,
    #[enum_value(
        name = "EfficientNMS: num_dets, det_boxes, det_scores, det_classes",
        nick = "nms"
    )]
    Nms = 7,
    #[enum_value(
        name = "Separate boxes [N, 4], scores [N] or [N, C] and classes [N] (numbers or BYTES labels), see boxes-output",
        nick = "named"
    )]
    Named = 8,
    #[enum_value(
        name = "Class scores [1, C] (logits or probabilities): top-k classes of the frame",
        nick = "classification"
    )]
    Classification = 9,
    #[enum_value(
        name = "No decoding: the outputs only as tensor metas (attach-tensors) and text",
        nick = "none"
    )]
    None = 10,
}

#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstRtaiInferBoxCoordinates")]
pub enum InferBoxCoordinates {
    #[enum_value(
        name = "The layout's own: YOLO cx cy w h, SSD normalized y1 x1 y2 x2, others x1 y1 x2 y2, in input pixels",
        nick = "auto"
    )]
    Auto = 0,
    #[enum_value(name = "x1, y1, x2, y2 in input pixels", nick = "xyxy")]
    Xyxy = 1,
    #[enum_value(name = "x, y, width, height in input pixels", nick = "xywh")]
    Xywh = 2,
    #[enum_value(
        name = "centre x, centre y, width, height in input pixels",
        nick = "cxcywh"
    )]
    Cxcywh = 3,
    #[enum_value(name = "y1, x1, y2, x2 in input pixels", nick = "yxyx")]
    Yxyx = 4,
    #[enum_value(name = "x1, y1, x2, y2 in 0..1 of the input", nick = "xyxy-normalized")]
    XyxyNormalized = 5,
    #[enum_value(
        name = "x, y, width, height in 0..1 of the input",
        nick = "xywh-normalized"
    )]
    XywhNormalized = 6,
    #[enum_value(
        name = "centre x, centre y, width, height in 0..1 of the input",
        nick = "cxcywh-normalized"
    )]
    CxcywhNormalized = 7,
    #[enum_value(name = "y1, x1, y2, x2 in 0..1 of the input", nick = "yxyx-normalized")]
    YxyxNormalized = 8,
}

#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstRtaiInferResize")]
pub enum InferResize {
    #[enum_value(
        name = "Aspect ratio kept, centred, grey (114) bars",
        nick = "letterbox"
    )]
    Letterbox = 0,
    #[enum_value(name = "Scaled to fill the input exactly", nick = "stretch")]
    Stretch = 1,
    #[enum_value(
        name = "Scaled to cover the input, the centre kept",
        nick = "center-crop"
    )]
    CenterCrop = 2,
}

#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstRtaiInferInputDatatype")]
pub enum InferInputDatatype {
    #[enum_value(name = "From the model's metadata (KServe), else FP32", nick = "auto")]
    Auto = 0,
    #[enum_value(name = "FP32 samples (mean, std, normalize applied)", nick = "fp32")]
    Fp32 = 1,
    #[enum_value(name = "FP16 samples (mean, std, normalize applied)", nick = "fp16")]
    Fp16 = 2,
    #[enum_value(
        name = "UINT8 pixel values 0..255 (normalize, mean and std not applied)",
        nick = "uint8"
    )]
    Uint8 = 3,
    #[enum_value(
        name = "The frame as JPEG in a BYTES tensor [1] (server-side decoding, e.g. a Triton ensemble)",
        nick = "jpeg"
    )]
    Jpeg = 4,
}

#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstRtaiInferChannelOrder")]
pub enum InferChannelOrder {
    #[enum_value(name = "Red, green, blue", nick = "rgb")]
    Rgb = 0,
    #[enum_value(name = "Blue, green, red (OpenCV-trained models)", nick = "bgr")]
    Bgr = 1,
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "inferclient",
        gst::Rank::NONE,
        InferClient::static_type(),
    )
}
