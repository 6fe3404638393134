use gst::glib;
use gst::prelude::*;

mod audio;
mod imp;
mod queue;
mod replies;
mod requests;
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

#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstRtaiInferBoxFormat")]
pub enum InferBoxFormat {
    #[enum_value(
        name = "From the output's shape: last dimension 6 is decoded, otherwise YOLO",
        nick = "auto"
    )]
    Auto = 0,
    #[enum_value(
        name = "Decoded boxes [N, 6]: x1, y1, x2, y2, score, class in input pixels",
        nick = "decoded"
    )]
    Decoded = 1,
    #[enum_value(
        name = "YOLOv8-style [1, 4 + classes, anchors]: cx, cy, w, h, class scores (NMS applied)",
        nick = "yolo"
    )]
    Yolo = 2,
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "inferclient",
        gst::Rank::NONE,
        InferClient::static_type(),
    )
}
