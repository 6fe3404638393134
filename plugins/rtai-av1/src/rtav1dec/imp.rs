//! rtav1dec: AV1 decoder on dav1d (the `dav1d` crate over Debian's libdav1d
//! 1.0). Resolution, layout and bit-depth changes renegotiate; decode errors
//! are counted and go through the base class's `max-errors` policy.
//!
//! Every input frame leaves the base class's pending list: with its picture,
//! or released (as stock av1dec does) when a later picture comes out first,
//! when dav1d holds more frames than its delay allows, or after a drain. A
//! sequence header announcing frames over `frame-size-limit` is an error
//! before dav1d allocates anything.

use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_video::prelude::*;
use gst_video::subclass::prelude::*;

use crate::obu::{self, Obu};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "rtav1dec",
        gst::DebugColorFlags::empty(),
        Some("dav1d AV1 decoder"),
    )
});

const DEFAULT_N_THREADS: u32 = 0;
const DEFAULT_MAX_FRAME_DELAY: u32 = 0;
const DEFAULT_APPLY_GRAIN: bool = true;
/// Largest picture (width × height) decoded by default: 8192×8192.
const DEFAULT_FRAME_SIZE_LIMIT: u32 = 8192 * 8192;
/// dav1d 1.0's own thread limit (DAV1D_MAX_THREADS).
const DAV1D_MAX_THREADS: u32 = 256;

#[derive(Debug, Clone, PartialEq)]
struct Settings {
    n_threads: u32,
    max_frame_delay: u32,
    apply_grain: bool,
    frame_size_limit: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            n_threads: DEFAULT_N_THREADS,
            max_frame_delay: DEFAULT_MAX_FRAME_DELAY,
            apply_grain: DEFAULT_APPLY_GRAIN,
            frame_size_limit: DEFAULT_FRAME_SIZE_LIMIT,
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Stats {
    frames_in: u64,
    frames_out: u64,
    decode_errors: u64,
    renegotiations: u64,
    released: u64,
}

type InputState = gst_video::VideoCodecState<'static, gst_video::video_codec_state::Readable>;

struct State {
    decoder: dav1d::Decoder,
    /// (format, width, height) of the negotiated output.
    output: Option<(gst_video::VideoFormat, u32, u32)>,
    output_info: Option<gst_video::VideoInfo>,
    /// Frames dav1d holds before a picture comes out.
    frame_delay: u32,
}

#[derive(Default)]
pub struct RtAv1Dec {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    input: Mutex<Option<InputState>>,
    stats: Mutex<Stats>,
}

/// The number of frame contexts dav1d 1.0 uses (`n_fc` in its `dav1d_open`),
/// which is the decoder's delay in frames: libdav1d 1.0 has no
/// `dav1d_get_frame_delay` to ask.
fn dav1d_frame_delay(n_threads: u32, max_frame_delay: u32) -> u32 {
    let threads = if n_threads > 0 {
        n_threads
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1)
    }
    .clamp(1, DAV1D_MAX_THREADS);
    if max_frame_delay > 0 {
        max_frame_delay.min(threads)
    } else if threads < 50 {
        // dav1d's fc_lut: ceil(sqrt(threads)) for 1..49 threads.
        (threads as f64).sqrt().ceil() as u32
    } else {
        8
    }
}

fn video_format(layout: dav1d::PixelLayout, bits: usize) -> Option<gst_video::VideoFormat> {
    use dav1d::PixelLayout::*;
    use gst_video::VideoFormat as F;
    Some(match (layout, bits) {
        (I400, 8) => F::Gray8,
        (I420, 8) => F::I420,
        (I422, 8) => F::Y42b,
        (I444, 8) => F::Y444,
        (I420, 10) => F::I42010le,
        (I422, 10) => F::I42210le,
        (I444, 10) => F::Y44410le,
        (I420, 12) => F::I42012le,
        (I422, 12) => F::I42212le,
        (I444, 12) => F::Y44412le,
        _ => return None,
    })
}

/// How a round of [`pull_pictures`] ended.
#[derive(Debug, PartialEq, Eq)]
enum Pulled {
    /// dav1d has nothing more (EAGAIN) or there is no decoder.
    Empty,
    /// `error_budget` errors came out.
    ErrorBudgetSpent,
}

/// Takes pictures from `next` (None: no decoder) until it has none left or
/// `error_budget` errors came out; `picture` and `error` handle each (their
/// errors end the round, which is how `max-errors` stops the stream).
fn pull_pictures<P>(
    error_budget: usize,
    mut next: impl FnMut() -> Option<Result<P, dav1d::Error>>,
    mut picture: impl FnMut(P) -> Result<(), gst::FlowError>,
    mut error: impl FnMut(dav1d::Error) -> Result<(), gst::FlowError>,
) -> Result<Pulled, gst::FlowError> {
    let mut errors = 0;
    loop {
        match next() {
            None | Some(Err(dav1d::Error::Again)) => return Ok(Pulled::Empty),
            Some(Ok(p)) => picture(p)?,
            Some(Err(e)) => {
                error(e)?;
                errors += 1;
                if errors >= error_budget {
                    return Ok(Pulled::ErrorBudgetSpent);
                }
            }
        }
    }
}

impl RtAv1Dec {
    fn stats_structure(&self) -> gst::Structure {
        let s = self.stats.lock().unwrap().clone();
        gst::Structure::builder("rtav1dec-stats")
            .field("frames-in", s.frames_in)
            .field("frames-out", s.frames_out)
            .field("decode-errors", s.decode_errors)
            .field("renegotiations", s.renegotiations)
            .field("released-frames", s.released)
            .build()
    }

    fn upstream_is_live(&self) -> bool {
        let mut q = gst::query::Latency::new();
        self.obj().sink_pad().peer_query(&mut q) && q.result().0
    }

    fn open_decoder(&self) -> Result<State, String> {
        let s = self.settings.lock().unwrap().clone();
        let live = self.upstream_is_live();
        let max_frame_delay = if s.max_frame_delay > 0 {
            s.max_frame_delay
        } else if live {
            1
        } else {
            0
        };
        let mut ds = dav1d::Settings::new();
        ds.set_n_threads(s.n_threads);
        ds.set_max_frame_delay(max_frame_delay);
        ds.set_apply_grain(s.apply_grain);
        ds.set_frame_size_limit(s.frame_size_limit);
        let decoder =
            dav1d::Decoder::with_settings(&ds).map_err(|e| format!("dav1d_open failed: {e}"))?;
        let frame_delay = dav1d_frame_delay(s.n_threads, max_frame_delay);
        gst::info!(
            CAT,
            imp = self,
            "dav1d open: threads {}, frame delay {frame_delay} (upstream live: {live})",
            s.n_threads
        );
        Ok(State {
            decoder,
            output: None,
            output_info: None,
            frame_delay,
        })
    }

    /// Releases pending frames older than frame `number` (their pictures did
    /// not come out: dav1d swallowed the unit or failed on it) and, when
    /// `keep` is given, the oldest ones beyond the newest `keep`.
    fn release_stale_frames(&self, number: Option<u32>, keep: Option<usize>) {
        let obj = self.obj();
        let mut frames = obj.frames();
        frames.sort_by_key(|f| f.system_frame_number());
        let total = frames.len();
        let mut released = 0u64;
        for (i, frame) in frames.into_iter().enumerate() {
            let older =
                number.is_some_and(|n| (n.wrapping_sub(frame.system_frame_number()) as i32) > 0);
            let beyond = keep.is_some_and(|k| i + k < total);
            if older || beyond {
                gst::debug!(
                    CAT,
                    imp = self,
                    "frame {} has no picture: released",
                    frame.system_frame_number()
                );
                obj.release_frame(frame);
                released += 1;
            }
        }
        if released > 0 {
            self.stats.lock().unwrap().released += released;
        }
    }

    /// An error when the unit's sequence header announces frames larger than
    /// `frame-size-limit` (checked before dav1d sees the unit).
    fn check_frame_size(&self, data: &[u8]) -> Result<(), gst::FlowError> {
        let limit = self.settings.lock().unwrap().frame_size_limit;
        if limit == 0 {
            return Ok(());
        }
        let Ok(obus) = Obu::parse_all(data) else {
            return Ok(()); // dav1d reports corrupt data itself
        };
        for o in obus
            .iter()
            .filter(|o| o.obu_type == obu::OBU_SEQUENCE_HEADER)
        {
            if let Some((w, h)) = obu::sequence_max_frame_size(o.payload)
                && w as u64 * h as u64 > limit as u64
            {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Decode,
                    ("AV1 frames of up to {w}x{h} are over frame-size-limit ({limit} pixels)"),
                    [
                        "the sequence header's max_frame_width/height; raise frame-size-limit to decode this stream"
                    ]
                );
                return Err(gst::FlowError::Error);
            }
        }
        Ok(())
    }

    fn update_latency(&self, frame_delay: u32) {
        let input = self.input.lock().unwrap().clone();
        let fps = input.map(|i| i.info().fps()).filter(|f| f.numer() > 0);
        let latency = match fps {
            Some(fps) => gst::ClockTime::SECOND
                .mul_div_floor(frame_delay as u64 * fps.denom() as u64, fps.numer() as u64)
                .unwrap_or(gst::ClockTime::ZERO),
            // Unknown frame rate: assume 30 fps for the reported latency.
            None => gst::ClockTime::SECOND
                .mul_div_floor(frame_delay as u64, 30)
                .unwrap_or(gst::ClockTime::ZERO),
        };
        // With one frame context a picture leaves with the data that completes it.
        // With n > 1, dav1d hands frame k out when frame k + n reuses its frame
        // context (dav1d_submit_frame), so n frames, not n - 1 (measured by the
        // test `reported_latency_is_the_real_output_delay`).
        let latency = if frame_delay <= 1 {
            gst::ClockTime::ZERO
        } else {
            latency
        };
        self.obj().set_latency(latency, latency);
    }

    /// Counts a decode error and applies the `max-errors` policy.
    fn decode_error(
        &self,
        what: &str,
        err: dav1d::Error,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        self.stats.lock().unwrap().decode_errors += 1;
        gst_video::video_decoder_error!(
            &*self.obj(),
            1,
            gst::StreamError::Decode,
            ("Corrupt or unsupported AV1 data"),
            ["dav1d {what}: {err}"]
        )
    }

    /// Pushes every picture dav1d has ready (`drain`: all it holds).
    fn output_pictures(&self, drain: bool) -> Result<gst::FlowSuccess, gst::FlowError> {
        // Each failed picture takes at least one frame out of dav1d, so while
        // draining more errors than frames pending (plus one for a frame dav1d
        // dropped on its own) is an error that repeats: stop there.
        let error_budget = if drain {
            self.obj().frames().len() + 1
        } else {
            1
        };
        let outcome = pull_pictures(
            error_budget,
            || {
                let mut state = self.state.lock().unwrap();
                state.as_mut().map(|s| s.decoder.get_picture())
            },
            |picture| self.output_picture(picture).map(|_| ()),
            |e| self.decode_error("get_picture", e).map(|_| ()),
        )?;
        if drain {
            // Drained: dav1d holds nothing, so what is pending has no picture coming.
            self.release_stale_frames(None, Some(0));
        } else if let Some(delay) = self.state.lock().unwrap().as_ref().map(|s| s.frame_delay) {
            // dav1d holds at most its frame delay; one more for the frame in hand.
            self.release_stale_frames(None, Some(delay as usize + 1));
        }
        if drain && outcome == Pulled::ErrorBudgetSpent {
            gst::warning!(
                CAT,
                imp = self,
                "dav1d keeps failing while draining ({error_budget} errors): resetting it"
            );
            if let Some(state) = self.state.lock().unwrap().as_mut() {
                state.decoder.flush();
            }
        }
        Ok(gst::FlowSuccess::Ok)
    }

    fn output_picture(&self, picture: dav1d::Picture) -> Result<gst::FlowSuccess, gst::FlowError> {
        let obj = self.obj();
        let bits = picture.bit_depth();
        let layout = picture.pixel_layout();
        let (width, height) = (picture.width(), picture.height());
        let Some(format) = video_format(layout, bits) else {
            gst::element_imp_error!(
                self,
                gst::StreamError::Decode,
                ("Unsupported AV1 picture format"),
                ["{layout:?} at {bits} bits"]
            );
            return Err(gst::FlowError::NotNegotiated);
        };
        let renegotiate = self
            .state
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|s| s.output != Some((format, width, height)));
        if renegotiate {
            gst::info!(CAT, imp = self, "output {format:?} {width}x{height}");
            let input = self.input.lock().unwrap().clone();
            let output = obj
                .set_output_state(format, width, height, input.as_ref())
                .map_err(|_| gst::FlowError::NotNegotiated)?;
            obj.negotiate(output).map_err(|_| {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Negotiation,
                    ("Downstream refused {format:?} {width}x{height}")
                );
                gst::FlowError::NotNegotiated
            })?;
            let info = obj.output_state().map(|s| s.info().clone());
            let mut state = self.state.lock().unwrap();
            if let Some(state) = state.as_mut() {
                state.output = Some((format, width, height));
                state.output_info = info;
            }
            self.stats.lock().unwrap().renegotiations += 1;
        }
        let info = self
            .state
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|s| s.output_info.clone())
            .ok_or(gst::FlowError::NotNegotiated)?;

        let number = picture.offset();
        if let Ok(n) = u32::try_from(number) {
            self.release_stale_frames(Some(n), None);
        }
        let frame = i32::try_from(number)
            .ok()
            .and_then(|n| obj.frame(n))
            .or_else(|| obj.oldest_frame());
        let Some(mut frame) = frame else {
            gst::warning!(
                CAT,
                imp = self,
                "a picture (offset {number}) matches no pending frame"
            );
            return Ok(gst::FlowSuccess::Ok);
        };
        obj.allocate_output_frame(&mut frame, None)?;
        {
            let buffer = frame.output_buffer_mut().ok_or(gst::FlowError::Error)?;
            let mut vframe = gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, &info)
                .map_err(|_| gst::FlowError::Error)?;
            let bytes_per_sample = if bits > 8 { 2 } else { 1 };
            let planes = if layout == dav1d::PixelLayout::I400 {
                1
            } else {
                3
            };
            for i in 0..planes {
                let component = dav1d::PlanarImageComponent::from(i);
                let src_stride = picture.stride(component) as usize;
                let plane = picture.plane(component);
                let src: &[u8] = plane.as_ref();
                let dst_stride = vframe.plane_stride()[i] as usize;
                let row = info.comp_width(i as u8) as usize * bytes_per_sample;
                let rows = info.comp_height(i as u8) as usize;
                let dst = vframe
                    .plane_data_mut(i as u32)
                    .map_err(|_| gst::FlowError::Error)?;
                for (d, s) in dst
                    .chunks_mut(dst_stride)
                    .zip(src.chunks(src_stride))
                    .take(rows)
                {
                    let n = row.min(d.len()).min(s.len());
                    d[..n].copy_from_slice(&s[..n]);
                }
            }
        }
        self.stats.lock().unwrap().frames_out += 1;
        obj.finish_frame(frame)
    }
}

#[glib::object_subclass]
impl ObjectSubclass for RtAv1Dec {
    const NAME: &'static str = "GstRtAv1Dec";
    type Type = super::RtAv1Dec;
    type ParentType = gst_video::VideoDecoder;
}

impl ObjectImpl for RtAv1Dec {
    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.set_packetized(true);
    }

    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecUInt::builder("n-threads")
                    .nick("Threads")
                    .blurb("dav1d worker threads; 0 uses one per CPU")
                    .maximum(DAV1D_MAX_THREADS)
                    .default_value(DEFAULT_N_THREADS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-frame-delay")
                    .nick("Maximum frame delay")
                    .blurb("Frames decoded in parallel, each a frame of latency; 0 is automatic: 1 when upstream is live, dav1d's choice otherwise")
                    .maximum(8)
                    .default_value(DEFAULT_MAX_FRAME_DELAY)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("apply-grain")
                    .nick("Apply film grain")
                    .blurb("Synthesize the film grain the stream signals onto the output frames")
                    .default_value(DEFAULT_APPLY_GRAIN)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("frame-size-limit")
                    .nick("Frame size limit")
                    .blurb("Largest picture in pixels (width x height) a stream may announce; larger is an error before any allocation (untrusted streams); 0 is no limit, else at most 32768 x 32768")
                    .maximum(1 << 30)
                    .default_value(DEFAULT_FRAME_SIZE_LIMIT)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("Frames in and out, decode errors (corrupt or truncated OBUs), output renegotiations, frames released without a picture")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        match pspec.name() {
            "n-threads" => s.n_threads = value.get().expect("type checked upstream"),
            "max-frame-delay" => s.max_frame_delay = value.get().expect("type checked upstream"),
            "apply-grain" => s.apply_grain = value.get().expect("type checked upstream"),
            "frame-size-limit" => s.frame_size_limit = value.get().expect("type checked upstream"),
            other => unreachable!("unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock().unwrap();
        match pspec.name() {
            "n-threads" => s.n_threads.to_value(),
            "max-frame-delay" => s.max_frame_delay.to_value(),
            "apply-grain" => s.apply_grain.to_value(),
            "frame-size-limit" => s.frame_size_limit.to_value(),
            "stats" => self.stats_structure().to_value(),
            other => unreachable!("unknown property {other}"),
        }
    }
}

impl GstObjectImpl for RtAv1Dec {}

impl ElementImpl for RtAv1Dec {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "dav1d AV1 decoder (real time)",
                "Codec/Decoder/Video",
                "Decodes AV1 with dav1d (libdav1d 1.0 and newer); one frame of delay when upstream is live",
                "rtai contributors",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let sink_caps = gst::Caps::builder("video/x-av1")
                .field("stream-format", "obu-stream")
                .field("alignment", "tu")
                .build();
            let src_caps = gst_video::VideoCapsBuilder::new()
                .format_list([
                    gst_video::VideoFormat::I420,
                    gst_video::VideoFormat::Y42b,
                    gst_video::VideoFormat::Y444,
                    gst_video::VideoFormat::I42010le,
                    gst_video::VideoFormat::I42210le,
                    gst_video::VideoFormat::Y44410le,
                    gst_video::VideoFormat::I42012le,
                    gst_video::VideoFormat::I42212le,
                    gst_video::VideoFormat::Y44412le,
                    gst_video::VideoFormat::Gray8,
                ])
                .build();
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &sink_caps,
                )
                .unwrap(),
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &src_caps,
                )
                .unwrap(),
            ]
        });
        TEMPLATES.as_ref()
    }
}

impl VideoDecoderImpl for RtAv1Dec {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        *self.stats.lock().unwrap() = Stats::default();
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *self.state.lock().unwrap() = None;
        *self.input.lock().unwrap() = None;
        Ok(())
    }

    fn set_format(&self, input: &InputState) -> Result<(), gst::LoggableError> {
        *self.input.lock().unwrap() = Some(input.clone());
        let has_decoder = self.state.lock().unwrap().is_some();
        if !has_decoder {
            let state = self.open_decoder().map_err(|e| {
                gst::element_imp_error!(
                    self,
                    gst::LibraryError::Init,
                    ("Cannot start the AV1 decoder"),
                    ["{e}"]
                );
                gst::loggable_error!(CAT, "{e}")
            })?;
            let delay = state.frame_delay;
            *self.state.lock().unwrap() = Some(state);
            self.update_latency(delay);
        } else {
            // New caps on a running stream (e.g. a new resolution): dav1d follows the
            // sequence header itself; the output renegotiates with the first new picture.
            let delay = self
                .state
                .lock()
                .unwrap()
                .as_ref()
                .map(|s| s.frame_delay)
                .unwrap_or(1);
            self.update_latency(delay);
        }
        Ok(())
    }

    fn handle_frame(
        &self,
        frame: gst_video::VideoCodecFrame,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let input = frame.input_buffer_owned().ok_or(gst::FlowError::Error)?;
        let number = frame.system_frame_number() as i64;
        let pts = input.pts().map(|t| t.nseconds() as i64);
        let duration = input.duration().map(|t| t.nseconds() as i64);
        let Ok(mapped) = input.into_mapped_buffer_readable() else {
            gst::element_imp_error!(
                self,
                gst::ResourceError::Read,
                ("Cannot map an input buffer")
            );
            return Err(gst::FlowError::Error);
        };
        self.check_frame_size(&mapped)?;
        self.stats.lock().unwrap().frames_in += 1;
        let mut result = {
            let mut state = self.state.lock().unwrap();
            let state = state.as_mut().ok_or(gst::FlowError::NotNegotiated)?;
            state.decoder.send_data(mapped, Some(number), pts, duration)
        };
        // Keep the frame in the base class until its picture comes out.
        drop(frame);
        loop {
            match result {
                Ok(()) => break,
                Err(dav1d::Error::Again) => {
                    // dav1d holds pictures that must come out before it takes more data.
                    self.output_pictures(false)?;
                    let mut state = self.state.lock().unwrap();
                    let state = state.as_mut().ok_or(gst::FlowError::Flushing)?;
                    result = state.decoder.send_pending_data();
                }
                Err(e) => {
                    gst::debug!(CAT, imp = self, "frame {number} rejected: {e}");
                    let flow = self.decode_error("send_data", e);
                    if let Some(frame) = self.obj().frame(number as i32) {
                        self.obj().release_frame(frame);
                    }
                    flow?;
                    break;
                }
            }
        }
        self.output_pictures(false)
    }

    fn flush(&self) -> bool {
        if let Some(state) = self.state.lock().unwrap().as_mut() {
            state.decoder.flush();
        }
        true
    }

    fn drain(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        self.output_pictures(true)
    }

    fn finish(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        self.output_pictures(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeating_error_ends_the_drain() {
        // max-errors=-1 makes every error Ok: only the budget ends the loop.
        let mut calls = 0;
        let outcome = pull_pictures::<()>(
            3,
            || {
                calls += 1;
                assert!(calls < 100, "the loop does not end");
                Some(Err(dav1d::Error::UnsupportedBitstream))
            },
            |_| Ok(()),
            |_| Ok(()),
        );
        assert_eq!(outcome, Ok(Pulled::ErrorBudgetSpent));
        assert_eq!(calls, 3);
    }

    #[test]
    fn pictures_between_errors_all_come_out() {
        let mut script = vec![
            Ok(1),
            Err(dav1d::Error::InvalidArgument),
            Ok(2),
            Ok(3),
            Err(dav1d::Error::Again),
        ]
        .into_iter();
        let mut out = Vec::new();
        let mut errors = 0;
        let outcome = pull_pictures(
            5,
            || script.next(),
            |p| {
                out.push(p);
                Ok(())
            },
            |_| {
                errors += 1;
                Ok(())
            },
        );
        assert_eq!(outcome, Ok(Pulled::Empty));
        assert_eq!((out, errors), (vec![1, 2, 3], 1));
    }

    #[test]
    fn an_error_beyond_max_errors_stops_at_once() {
        let mut calls = 0;
        let outcome = pull_pictures::<()>(
            10,
            || {
                calls += 1;
                Some(Err(dav1d::Error::UnsupportedBitstream))
            },
            |_| Ok(()),
            |_| Err(gst::FlowError::Error),
        );
        assert_eq!(outcome, Err(gst::FlowError::Error));
        assert_eq!(calls, 1);
    }
}
