//! Writes a clip's encoded frames to an MP4 file: a private pipeline
//! `appsrc ! <parser> ! mp4mux faststart=true ! filesink`, run on the recorder's
//! worker thread (never on a streaming thread). Timestamps are moved so the clip
//! starts at 0. The parser (h264parse, h265parse, av1parse, vp9parse) turns
//! byte-stream into what mp4mux takes (avc, hvc1, …).

use std::path::Path;
use std::time::Duration;

use gst::prelude::*;

use super::ring::Frame;

/// How long muxing one clip may take before it is given up.
const MUX_TIMEOUT: Duration = Duration::from_secs(60);

/// The parser for a caps' media type, `None` when mp4mux cannot take it.
pub fn parser_for(caps: &gst::CapsRef) -> Option<&'static str> {
    match caps.structure(0)?.name().as_str() {
        "video/x-h264" => Some("h264parse"),
        "video/x-h265" => Some("h265parse"),
        "video/x-av1" => Some("av1parse"),
        "video/x-vp9" => Some("vp9parse"),
        _ => None,
    }
}

/// Muxes `frames` (decode order, the first a key frame) with `caps` into `path`.
pub fn write_mp4(
    caps: &gst::Caps,
    frames: &[Frame<gst::Buffer>],
    path: &Path,
) -> Result<(), String> {
    let parser_name = parser_for(caps).ok_or_else(|| format!("cannot put {caps} into MP4"))?;
    let first = frames.first().ok_or("no frames")?;
    let base = first
        .buf
        .dts()
        .or(first.buf.pts())
        .ok_or("the first frame has no timestamp")?;

    let pipeline = gst::Pipeline::with_name("cliprecorder-mux");
    let make = |name: &str| {
        gst::ElementFactory::make(name)
            .build()
            .map_err(|_| format!("the {name} element is missing"))
    };
    let src = gst_app::AppSrc::builder()
        .caps(caps)
        .format(gst::Format::Time)
        .is_live(false)
        .block(false)
        .max_bytes(0)
        .build();
    let parser = make(parser_name)?;
    let mux = make("mp4mux")?;
    mux.set_property("faststart", true);
    let sink = make("filesink")?;
    sink.set_property("location", path.to_string_lossy().as_ref());
    sink.set_property("async", false);
    pipeline
        .add_many([src.upcast_ref(), &parser, &mux, &sink])
        .map_err(|e| e.to_string())?;
    gst::Element::link_many([src.upcast_ref(), &parser, &mux, &sink])
        .map_err(|e| format!("cannot link the muxing pipeline: {e}"))?;

    let result = (|| {
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|_| "the muxing pipeline does not start".to_string())?;
        for f in frames {
            let mut buf = f.buf.copy();
            {
                let b = buf.get_mut().expect("a fresh copy is writable");
                b.set_pts(f.buf.pts().map(|t| t.saturating_sub(base)));
                b.set_dts(f.buf.dts().map(|t| t.saturating_sub(base)));
            }
            src.push_buffer(buf)
                .map_err(|e| format!("muxing stopped: {e:?}"))?;
        }
        src.end_of_stream()
            .map_err(|e| format!("muxing stopped: {e:?}"))?;
        let bus = pipeline.bus().expect("a pipeline has a bus");
        let deadline = std::time::Instant::now() + MUX_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err("muxing timed out".to_string());
            }
            let Some(msg) = bus.timed_pop_filtered(
                gst::ClockTime::from_nseconds(left.as_nanos() as u64),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            ) else {
                continue;
            };
            match msg.view() {
                gst::MessageView::Eos(_) => return Ok(()),
                gst::MessageView::Error(e) => {
                    return Err(match e.debug() {
                        Some(d) => format!("{} ({d})", e.error()),
                        None => e.error().to_string(),
                    });
                }
                _ => {}
            }
        }
    })();
    let _ = pipeline.set_state(gst::State::Null);
    result
}
