use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct RtEncodeBin(ObjectSubclass<imp::RtEncodeBin>) @extends gst::Bin, gst::Element, gst::Object, @implements gst::ChildProxy;
}

#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstRtEncodeBinCodec")]
pub enum EncodeCodec {
    #[enum_value(
        name = "H.264: VA-API, NVENC or V4L2 hardware, else x264enc or openh264enc",
        nick = "h264"
    )]
    H264 = 0,
    #[enum_value(name = "VP8: VA-API or V4L2 hardware, else vp8enc", nick = "vp8")]
    Vp8 = 1,
    #[enum_value(
        name = "AV1: VA-API or NVENC hardware, else rtav1enc or av1enc",
        nick = "av1"
    )]
    Av1 = 2,
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "rtencodebin",
        gst::Rank::NONE,
        RtEncodeBin::static_type(),
    )
}
