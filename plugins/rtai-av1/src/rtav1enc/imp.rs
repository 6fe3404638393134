//! rtav1enc: AV1 encoder on rav1e with real-time defaults (speed 10, low
//! latency, one frame of RDO lookahead). One temporal unit per output buffer.
//!
//! rav1e cannot change its configuration on a running context. Rate-control
//! and key-frame properties (the `mutable_playing` ones) changed while playing
//! are applied by draining the encoder and starting a new context at the next
//! frame (which is then a key frame with a sequence header); the others
//! (`mutable_ready`) are read when the element starts (READY → PAUSED), and a
//! change while running waits for the next start, even across restarts.
//!
//! A congestion controller may change the bitrate every few hundred ms:
//! restarts are coalesced to at most one per `bitrate-change-interval` of
//! stream time (the latest values win), and the level in the caps stays the
//! one chosen at start (from `max-bitrate`, else the starting bitrate), so a
//! muxer downstream never sees it change.

use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_video::prelude::*;
use gst_video::subclass::prelude::*;
use num_traits::FromPrimitive;
use rav1e::color::{
    ChromaSampling, ColorDescription, ColorPrimaries, MatrixCoefficients, PixelRange,
    TransferCharacteristics,
};
use rav1e::prelude::{FrameParameters, FrameType, FrameTypeOverride, Opaque, SceneDetectionSpeed};
use rav1e::{Config, Context, EncoderConfig, EncoderStatus};

use super::{SceneDetection, Tune};
use crate::obu;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "rtav1enc",
        gst::DebugColorFlags::empty(),
        Some("rav1e AV1 encoder"),
    )
});

const DEFAULT_SPEED_PRESET: u32 = 10;
const DEFAULT_LOW_LATENCY: bool = true;
const DEFAULT_BITRATE: u32 = 0;
const DEFAULT_QUANTIZER: u32 = 100;
const DEFAULT_MAX_QUANTIZER: u32 = 255;
const DEFAULT_MIN_KEY_FRAME_INTERVAL: u64 = 12;
const DEFAULT_MAX_KEY_FRAME_INTERVAL: u64 = 60;
/// The longest key frame interval rav1e accepts (its `MAX_MAX_KEY_FRAME_INTERVAL`).
const MAX_KEY_FRAME_INTERVAL: u64 = i32::MAX as u64 / 3;
const DEFAULT_TILES: u32 = 0;
const DEFAULT_TILE_COLS: u32 = 0;
const DEFAULT_TILE_ROWS: u32 = 0;
const DEFAULT_THREADS: u32 = 0;
const DEFAULT_RDO_LOOKAHEAD_FRAMES: i32 = 1;
const DEFAULT_ERROR_RESILIENT: bool = false;
const DEFAULT_TUNE: Tune = Tune::Psnr;
const DEFAULT_SCENE_DETECTION: SceneDetection = SceneDetection::None;
const DEFAULT_MAX_BITRATE: u32 = 0;
const DEFAULT_BITRATE_CHANGE_INTERVAL: u32 = 1000;
const DEFAULT_CDEF: bool = true;
/// Frame rate assumed when the caps give none (variable rate), for rate control and latency.
const FALLBACK_FPS: (i32, i32) = (30, 1);

#[derive(Debug, Clone, PartialEq)]
struct Settings {
    speed_preset: u32,
    low_latency: bool,
    bitrate: u32,
    quantizer: u32,
    max_quantizer: u32,
    min_key_frame_interval: u64,
    max_key_frame_interval: u64,
    tiles: u32,
    tile_cols: u32,
    tile_rows: u32,
    threads: u32,
    rdo_lookahead_frames: i32,
    error_resilient: bool,
    tune: Tune,
    scene_detection: SceneDetection,
    /// kbit/s the level is chosen for (0: the bitrate at start).
    max_bitrate: u32,
    /// Milliseconds of stream time between two encoder restarts.
    bitrate_change_interval: u32,
    cdef: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            speed_preset: DEFAULT_SPEED_PRESET,
            low_latency: DEFAULT_LOW_LATENCY,
            bitrate: DEFAULT_BITRATE,
            quantizer: DEFAULT_QUANTIZER,
            max_quantizer: DEFAULT_MAX_QUANTIZER,
            min_key_frame_interval: DEFAULT_MIN_KEY_FRAME_INTERVAL,
            max_key_frame_interval: DEFAULT_MAX_KEY_FRAME_INTERVAL,
            tiles: DEFAULT_TILES,
            tile_cols: DEFAULT_TILE_COLS,
            tile_rows: DEFAULT_TILE_ROWS,
            threads: DEFAULT_THREADS,
            rdo_lookahead_frames: DEFAULT_RDO_LOOKAHEAD_FRAMES,
            error_resilient: DEFAULT_ERROR_RESILIENT,
            tune: DEFAULT_TUNE,
            scene_detection: DEFAULT_SCENE_DETECTION,
            max_bitrate: DEFAULT_MAX_BITRATE,
            bitrate_change_interval: DEFAULT_BITRATE_CHANGE_INTERVAL,
            cdef: DEFAULT_CDEF,
        }
    }
}

impl Settings {
    /// These settings with the properties that may change while playing
    /// (`mutable_playing`) taken from `current`.
    fn with_live_from(&self, current: &Settings) -> Settings {
        Settings {
            bitrate: current.bitrate,
            quantizer: current.quantizer,
            max_quantizer: current.max_quantizer,
            min_key_frame_interval: current.min_key_frame_interval,
            max_key_frame_interval: current.max_key_frame_interval,
            ..self.clone()
        }
    }

    /// The bitrate the level is chosen for: `max-bitrate`, else the bitrate.
    fn level_bitrate(&self) -> u32 {
        if self.max_bitrate > 0 {
            self.max_bitrate
        } else {
            self.bitrate
        }
    }

    fn threads(&self) -> usize {
        if self.threads > 0 {
            self.threads as usize
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }
}

/// The AV1 levels of Annex A.3: (seq_level_idx, max picture size, max width,
/// max height, max luma samples per second, max main-tier bitrate in kbit/s).
const LEVELS: &[(u8, u64, u64, u64, u64, u64)] = &[
    (0, 147_456, 2048, 1152, 4_423_680, 1_500),
    (1, 278_784, 2816, 1584, 8_363_520, 3_000),
    (4, 665_856, 4352, 2448, 19_975_680, 6_000),
    (5, 1_065_024, 5504, 3096, 31_950_720, 10_000),
    (8, 2_359_296, 6144, 3456, 70_778_880, 12_000),
    (9, 2_359_296, 6144, 3456, 141_557_760, 20_000),
    (12, 8_912_896, 8192, 4352, 267_386_880, 30_000),
    (13, 8_912_896, 8192, 4352, 534_773_760, 40_000),
    (14, 8_912_896, 8192, 4352, 1_069_547_520, 60_000),
    (15, 8_912_896, 8192, 4352, 1_069_547_520, 60_000),
    (16, 35_651_584, 16384, 8704, 1_069_547_520, 60_000),
    (17, 35_651_584, 16384, 8704, 2_139_095_040, 100_000),
    (18, 35_651_584, 16384, 8704, 4_278_190_080, 160_000),
    (19, 35_651_584, 16384, 8704, 4_278_190_080, 160_000),
];

/// The smallest level that holds the stream (31: no level constraints).
pub(crate) fn level_for(width: u64, height: u64, fps: f64, bitrate_kbps: u64) -> u8 {
    LEVELS
        .iter()
        .find(|&&(_, pic, w, h, rate, br)| {
            width * height <= pic
                && width <= w
                && height <= h
                && (width * height) as f64 * fps <= rate as f64
                && bitrate_kbps <= br
        })
        .map(|l| l.0)
        .unwrap_or(31)
}

fn color_description(info: &gst_video::VideoInfo) -> (Option<ColorDescription>, PixelRange) {
    let c = info.colorimetry();
    let range = if c.range() == gst_video::VideoColorRange::Range0_255 {
        PixelRange::Full
    } else {
        PixelRange::Limited
    };
    let primaries = ColorPrimaries::from_u32(c.primaries().to_iso()).unwrap_or_default();
    let transfer = TransferCharacteristics::from_u32(c.transfer().to_iso()).unwrap_or_default();
    let matrix = MatrixCoefficients::from_u32(c.matrix().to_iso()).unwrap_or_default();
    let all_unspecified = primaries == ColorPrimaries::Unspecified
        && transfer == TransferCharacteristics::Unspecified
        && matrix == MatrixCoefficients::Unspecified;
    let description = (!all_unspecified).then_some(ColorDescription {
        color_primaries: primaries,
        transfer_characteristics: transfer,
        matrix_coefficients: matrix,
    });
    (description, range)
}

/// rav1e's context for the input's bit depth.
enum Encoder {
    Eight(Context<u8>),
    Ten(Context<u16>),
}

struct EncodedPacket {
    data: Vec<u8>,
    key: bool,
    frame_number: Option<u32>,
}

impl Encoder {
    fn send_frame(
        &mut self,
        frame: &gst_video::VideoFrameRef<&gst::BufferRef>,
        number: u32,
        force_key: bool,
    ) -> Result<(), EncoderStatus> {
        let params = FrameParameters {
            frame_type_override: if force_key {
                FrameTypeOverride::Key
            } else {
                FrameTypeOverride::No
            },
            opaque: Some(Opaque::new(number)),
            ..Default::default()
        };
        macro_rules! send {
            ($ctx:expr, $bytewidth:expr) => {{
                let mut f = $ctx.new_frame();
                for (i, plane) in f.planes.iter_mut().enumerate() {
                    let stride = frame.plane_stride()[i] as usize;
                    let data = frame
                        .plane_data(i as u32)
                        .map_err(|_| EncoderStatus::Failure)?;
                    plane.copy_from_raw_u8(data, stride, $bytewidth);
                }
                $ctx.send_frame((f, params))
            }};
        }
        match self {
            Self::Eight(ctx) => send!(ctx, 1),
            Self::Ten(ctx) => send!(ctx, 2),
        }
    }

    fn flush(&mut self) {
        match self {
            Self::Eight(ctx) => ctx.flush(),
            Self::Ten(ctx) => ctx.flush(),
        }
    }

    fn receive_packet(&mut self) -> Result<EncodedPacket, EncoderStatus> {
        macro_rules! receive {
            ($ctx:expr) => {{
                let p = $ctx.receive_packet()?;
                EncodedPacket {
                    data: p.data,
                    key: p.frame_type == FrameType::KEY,
                    frame_number: p.opaque.and_then(|o| o.downcast::<u32>().ok()).map(|b| *b),
                }
            }};
        }
        Ok(match self {
            Self::Eight(ctx) => receive!(ctx),
            Self::Ten(ctx) => receive!(ctx),
        })
    }
}

struct State {
    encoder: Encoder,
    info: gst_video::VideoInfo,
    /// The settings the running context was made with.
    settings: Settings,
}

type InputState = gst_video::VideoCodecState<'static, gst_video::video_codec_state::Readable>;

#[derive(Default)]
pub struct RtAv1Enc {
    settings: Mutex<Settings>,
    /// The settings read at start; its READY-only ones hold until the next start.
    session: Mutex<Option<Settings>>,
    state: Mutex<Option<State>>,
    /// The negotiated input, to restart the encoder from.
    input: Mutex<Option<InputState>>,
    /// Stream time of the frame the running context started at (restarts
    /// for live changes wait `bitrate-change-interval` from it).
    context_start: Mutex<Option<gst::ClockTime>>,
    /// The caps last negotiated and the input they were made for.
    negotiated: Mutex<Option<(gst::Caps, gst_video::VideoInfo)>>,
}

/// What the encoder was built with, for caps and latency.
struct Built {
    encoder: Encoder,
    profile: u8,
    level_idx: u8,
    codec_data: Vec<u8>,
    delay_frames: u64,
}

impl RtAv1Enc {
    fn build(info: &gst_video::VideoInfo, s: &Settings) -> Result<Built, String> {
        let (chroma, depth) = match info.format() {
            gst_video::VideoFormat::I420 => (ChromaSampling::Cs420, 8),
            gst_video::VideoFormat::Y42b => (ChromaSampling::Cs422, 8),
            gst_video::VideoFormat::Y444 => (ChromaSampling::Cs444, 8),
            gst_video::VideoFormat::I42010le => (ChromaSampling::Cs420, 10),
            gst_video::VideoFormat::I42210le => (ChromaSampling::Cs422, 10),
            gst_video::VideoFormat::Y44410le => (ChromaSampling::Cs444, 10),
            other => return Err(format!("unsupported format {other:?}")),
        };
        let (fps_n, fps_d) = if info.fps().numer() > 0 {
            (info.fps().numer(), info.fps().denom())
        } else {
            FALLBACK_FPS
        };
        let fps = fps_n as f64 / fps_d as f64;
        let mut enc = EncoderConfig::with_speed_preset(s.speed_preset as u8);
        enc.width = info.width() as usize;
        enc.height = info.height() as usize;
        enc.bit_depth = depth;
        enc.chroma_sampling = chroma;
        enc.time_base = rav1e::prelude::Rational::new(fps_d as u64, fps_n as u64);
        let par = info.par();
        if par.numer() > 0 && par.denom() > 0 {
            enc.sample_aspect_ratio =
                rav1e::prelude::Rational::new(par.numer() as u64, par.denom() as u64);
        }
        let (description, range) = color_description(info);
        enc.color_description = description;
        enc.pixel_range = range;
        enc.low_latency = s.low_latency;
        enc.error_resilient = s.error_resilient;
        enc.bitrate = (s.bitrate as i32).saturating_mul(1000);
        // In bitrate mode rav1e takes `quantizer` as the worst quantizer the rate
        // control may pick (rate.rs `maybe_ac_qi_max`): the constant-quantizer
        // default of 100 there would keep it from reaching low targets.
        enc.quantizer = if s.bitrate > 0 {
            s.max_quantizer
        } else {
            s.quantizer
        } as usize;
        let max_kf = s.max_key_frame_interval.max(1);
        enc.set_key_frame_interval(s.min_key_frame_interval.min(max_kf), max_kf);
        if s.rdo_lookahead_frames >= 0 {
            // rav1e's minimum is 1 (config validation): 0 means as little as possible.
            enc.speed_settings.rdo_lookahead_frames = s.rdo_lookahead_frames.max(1) as usize;
        }
        enc.tune = match s.tune {
            Tune::Psnr => rav1e::prelude::Tune::Psnr,
            Tune::Psychovisual => rav1e::prelude::Tune::Psychovisual,
        };
        enc.speed_settings.scene_detection_mode = match s.scene_detection {
            SceneDetection::None => SceneDetectionSpeed::None,
            SceneDetection::Fast => SceneDetectionSpeed::Fast,
            SceneDetection::Standard => SceneDetectionSpeed::Standard,
        };
        enc.speed_settings.cdef = s.cdef;
        if s.speed_preset >= 10 {
            // Transform-domain rate estimation, which rav1e's preset 10 leaves off:
            // on the 720p bench clip at 2 Mbit/s it cuts the encode time by 25-30 %
            // and costs 2 dB of luma PSNR, 0.8 dB of which tune=psnr wins back
            // (docs/av1.md has the measurements).
            enc.speed_settings.transform.tx_domain_rate = true;
        }
        let threads = s.threads();
        if s.tiles > 0 {
            enc.tiles = s.tiles as usize;
        } else if s.tile_cols > 0 || s.tile_rows > 0 {
            // rav1e takes tile counts (powers of two); the properties are log2.
            enc.tile_cols = 1 << s.tile_cols;
            enc.tile_rows = 1 << s.tile_rows;
        } else if info.width() * info.height() >= 640 * 360 {
            // Automatic: one tile per thread (rav1e encodes tiles in parallel), at most 8.
            enc.tiles = threads.min(8);
        }
        let level_idx = level_for(
            info.width() as u64,
            info.height() as u64,
            fps,
            s.level_bitrate() as u64,
        );
        enc.level_idx = Some(level_idx);
        let profile = match (chroma, depth) {
            (ChromaSampling::Cs444, _) => 1,
            (ChromaSampling::Cs422, _) => 2,
            _ => 0,
        };
        // Frames rav1e 0.8 holds before the first packet comes out (measured by
        // tests/rtav1enc.rs): receive_packet waits for rdo_lookahead_frames + 1
        // frame headers (src/api/internal.rs:432 needs_more_fi_lookahead), and
        // the header of frame k needs input up to k + keyframe_lookahead_distance
        // + 1 (:423 needs_more_frame_q_lookahead; the distance is 2 without
        // reordering, :186-192). So the lookahead plus 3 in low-latency mode;
        // with reordering, the lookahead rounded up to whole 4-frame groups plus 6.
        let rdo = enc.speed_settings.rdo_lookahead_frames as u64;
        let delay_frames = if s.low_latency {
            rdo + 3
        } else {
            rdo.div_ceil(4) * 4 + 6
        };
        let config = Config::new().with_encoder_config(enc).with_threads(threads);
        config
            .validate()
            .map_err(|e| format!("invalid rav1e configuration: {e}"))?;
        let (encoder, codec_data) = if depth == 8 {
            let ctx: Context<u8> = config.new_context().map_err(|e| format!("rav1e: {e}"))?;
            let cd = ctx.container_sequence_header();
            (Encoder::Eight(ctx), cd)
        } else {
            let ctx: Context<u16> = config.new_context().map_err(|e| format!("rav1e: {e}"))?;
            let cd = ctx.container_sequence_header();
            (Encoder::Ten(ctx), cd)
        };
        // rav1e writes level 31 in av1C; put in the level the stream carries.
        let mut codec_data = codec_data;
        if codec_data.len() >= 2 {
            codec_data[1] = (profile << 5) | level_idx;
        }
        Ok(Built {
            encoder,
            profile,
            level_idx,
            codec_data,
            delay_frames,
        })
    }

    /// What a context started now is made with: the session's READY-only
    /// settings and the current live ones.
    fn wanted_settings(&self) -> Settings {
        let current = self.settings.lock().unwrap().clone();
        match self.session.lock().unwrap().as_ref() {
            Some(session) => session.with_live_from(&current),
            None => current,
        }
    }

    /// Creates the encoder for `info` and negotiates the output caps.
    fn start_encoder(
        &self,
        info: &gst_video::VideoInfo,
        input: &gst_video::VideoCodecState<'static, gst_video::video_codec_state::Readable>,
    ) -> Result<(), gst::LoggableError> {
        let settings = self.wanted_settings();
        let built = Self::build(info, &settings).map_err(|e| {
            gst::element_imp_error!(
                self,
                gst::LibraryError::Settings,
                ("Cannot configure the AV1 encoder"),
                ["{e}"]
            );
            gst::loggable_error!(CAT, "{e}")
        })?;
        let mut caps = gst::Caps::builder("video/x-av1")
            .field("stream-format", "obu-stream")
            .field("alignment", "tu")
            .field(
                "codec_data",
                gst::Buffer::from_slice(built.codec_data.clone()),
            );
        if let Some(p) = obu::profile_name(built.profile) {
            caps = caps.field("profile", p);
        }
        if let Some(l) = obu::level_name(built.level_idx) {
            caps = caps.field("level", l).field("tier", "main");
        }
        let caps = caps.build();
        gst::info!(
            CAT,
            imp = self,
            "encoding {}x{} {:?} as {caps}, {} frames of delay",
            info.width(),
            info.height(),
            info.format(),
            built.delay_frames
        );
        let obj = self.obj();
        // A restart for a live change gives the same caps (the level is the
        // session's): nothing to renegotiate.
        let negotiated = (caps.clone(), info.clone());
        let unchanged = self.negotiated.lock().unwrap().as_ref() == Some(&negotiated)
            && obj.src_pad().current_caps().is_some();
        if !unchanged {
            let output = obj
                .set_output_state(caps, Some(input))
                .map_err(|_| gst::loggable_error!(CAT, "cannot set output state"))?;
            obj.negotiate(output)
                .map_err(|_| gst::loggable_error!(CAT, "downstream refused the AV1 caps"))?;
            *self.negotiated.lock().unwrap() = Some(negotiated);
        }
        let (fps_n, fps_d) = if info.fps().numer() > 0 {
            (info.fps().numer(), info.fps().denom())
        } else {
            FALLBACK_FPS
        };
        let latency = gst::ClockTime::SECOND
            .mul_div_floor(built.delay_frames * fps_d as u64, fps_n as u64)
            .unwrap_or(gst::ClockTime::ZERO);
        obj.set_latency(latency, latency);
        *self.state.lock().unwrap() = Some(State {
            encoder: built.encoder,
            info: info.clone(),
            settings,
        });
        Ok(())
    }

    /// Pushes every packet rav1e has ready; with `drain`, flushes it first.
    fn output_packets(&self, drain: bool) -> Result<gst::FlowSuccess, gst::FlowError> {
        let obj = self.obj();
        let mut state_guard = self.state.lock().unwrap();
        let Some(state) = state_guard.as_mut() else {
            return Ok(gst::FlowSuccess::Ok);
        };
        if drain {
            state.encoder.flush();
        }
        let mut packets = Vec::new();
        loop {
            match state.encoder.receive_packet() {
                Ok(p) => packets.push(p),
                Err(EncoderStatus::Encoded) => continue,
                Err(EncoderStatus::NeedMoreData | EncoderStatus::LimitReached) => break,
                Err(e) => {
                    drop(state_guard);
                    gst::element_imp_error!(
                        self,
                        gst::StreamError::Encode,
                        ("The AV1 encoder failed"),
                        ["rav1e: {e}"]
                    );
                    return Err(gst::FlowError::Error);
                }
            }
        }
        if drain {
            *state_guard = None;
        }
        drop(state_guard);
        for p in packets {
            let frame = p
                .frame_number
                .and_then(|n| obj.frame(n as i32))
                .or_else(|| obj.oldest_frame());
            let Some(mut frame) = frame else {
                gst::warning!(
                    CAT,
                    imp = self,
                    "a packet of {} bytes matches no pending frame",
                    p.data.len()
                );
                continue;
            };
            gst::trace!(
                CAT,
                imp = self,
                "frame {} encoded: {} bytes, key {}",
                frame.system_frame_number(),
                p.data.len(),
                p.key
            );
            if p.key {
                frame.set_flags(gst_video::VideoCodecFrameFlags::SYNC_POINT);
            }
            let mut buffer = gst::Buffer::from_mut_slice(p.data);
            if !p.key {
                buffer
                    .get_mut()
                    .unwrap()
                    .set_flags(gst::BufferFlags::DELTA_UNIT);
            }
            frame.set_output_buffer(buffer);
            obj.finish_frame(frame)?;
        }
        Ok(gst::FlowSuccess::Ok)
    }
}

#[glib::object_subclass]
impl ObjectSubclass for RtAv1Enc {
    const NAME: &'static str = "GstRtAv1Enc";
    type Type = super::RtAv1Enc;
    type ParentType = gst_video::VideoEncoder;
}

impl ObjectImpl for RtAv1Enc {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecUInt::builder("speed-preset")
                    .nick("Speed preset")
                    .blurb("rav1e speed preset: 0 is the slowest and best, 10 the fastest (real time)")
                    .maximum(10)
                    .default_value(DEFAULT_SPEED_PRESET)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("low-latency")
                    .nick("Low latency")
                    .blurb("Encode frames in order without a reordering pyramid (no frame reordering delay)")
                    .default_value(DEFAULT_LOW_LATENCY)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("bitrate")
                    .nick("Bitrate")
                    .blurb("Target bitrate in kbit/s; 0 encodes at the constant quantizer (changing it while playing restarts the encoder at a key frame)")
                    .maximum(i32::MAX as u32 / 1000)
                    .default_value(DEFAULT_BITRATE)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("max-bitrate")
                    .nick("Maximum bitrate")
                    .blurb("Highest bitrate in kbit/s the session will use, which sets the level in the caps for the whole session (bitrate changes never change it); 0 takes the bitrate at start")
                    .maximum(i32::MAX as u32 / 1000)
                    .default_value(DEFAULT_MAX_BITRATE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("bitrate-change-interval")
                    .nick("Bitrate change interval")
                    .blurb("Milliseconds of stream time at least between two encoder restarts for live changes (bitrate, quantizers, key frame intervals); changes in between are coalesced, the latest wins; 0 applies each change at the next frame")
                    .maximum(60_000)
                    .default_value(DEFAULT_BITRATE_CHANGE_INTERVAL)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("quantizer")
                    .nick("Quantizer")
                    .blurb("Constant quantizer (0 best, 255 worst) when bitrate is 0; unused in bitrate mode (changing it while playing restarts the encoder at a key frame)")
                    .maximum(255)
                    .default_value(DEFAULT_QUANTIZER)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("max-quantizer")
                    .nick("Maximum quantizer")
                    .blurb("In bitrate mode, the worst quantizer the rate control may choose (255: unconstrained); unused when bitrate is 0 (changing it while playing restarts the encoder at a key frame)")
                    .maximum(255)
                    .default_value(DEFAULT_MAX_QUANTIZER)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt64::builder("min-key-frame-interval")
                    .nick("Minimum key frame interval")
                    .blurb("Fewest frames between key frames placed by scene detection (no effect with scene-detection=none; changing it while playing restarts the encoder)")
                    .maximum(MAX_KEY_FRAME_INTERVAL)
                    .default_value(DEFAULT_MIN_KEY_FRAME_INTERVAL)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt64::builder("max-key-frame-interval")
                    .nick("Maximum key frame interval")
                    .blurb("Most frames between key frames (changing it while playing restarts the encoder)")
                    .minimum(1)
                    .maximum(MAX_KEY_FRAME_INTERVAL)
                    .default_value(DEFAULT_MAX_KEY_FRAME_INTERVAL)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("tiles")
                    .nick("Tiles")
                    .blurb("Number of tiles (rounded to a power of two; overrides tile-cols/tile-rows); 0 with tile-cols and tile-rows 0 picks one tile per thread from 640x360 up")
                    .maximum(64)
                    .default_value(DEFAULT_TILES)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("tile-cols")
                    .nick("Tile columns")
                    .blurb("log2 of the number of tile columns (used when tiles is 0)")
                    .maximum(6)
                    .default_value(DEFAULT_TILE_COLS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("tile-rows")
                    .nick("Tile rows")
                    .blurb("log2 of the number of tile rows (used when tiles is 0)")
                    .maximum(6)
                    .default_value(DEFAULT_TILE_ROWS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("threads")
                    .nick("Threads")
                    .blurb("Encoder threads; 0 uses one per CPU")
                    .maximum(256)
                    .default_value(DEFAULT_THREADS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecInt::builder("rdo-lookahead-frames")
                    .nick("RDO lookahead frames")
                    .blurb("Frames of lookahead for temporal RDO (each adds a frame of latency; rav1e's minimum is 1, so 0 is taken as 1); -1 uses the speed preset's value")
                    .minimum(-1)
                    .maximum(40)
                    .default_value(DEFAULT_RDO_LOOKAHEAD_FRAMES)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("tune", DEFAULT_TUNE)
                    .nick("Tune")
                    .blurb("Distortion metric of the rate-distortion decisions: psnr (transform-domain, fastest) or psychovisual (pixel-domain with activity masking, markedly slower at speed 10)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("scene-detection", DEFAULT_SCENE_DETECTION)
                    .nick("Scene detection")
                    .blurb("Key frames on scene changes (fast, standard), or none: key frames only at max-key-frame-interval and on force-key-unit (predictable size and time per frame, the real-time choice)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("cdef")
                    .nick("CDEF")
                    .blurb("Constrained directional enhancement filter: off saves encode time at a quality cost (benches/av1.rs measures both)")
                    .default_value(DEFAULT_CDEF)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("error-resilient")
                    .nick("Error resilient")
                    .blurb("Encode inter frames in error-resilient mode (decodable without earlier frame context, for lossy transports)")
                    .default_value(DEFAULT_ERROR_RESILIENT)
                    .mutable_ready()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        match pspec.name() {
            "speed-preset" => s.speed_preset = value.get().expect("type checked upstream"),
            "low-latency" => s.low_latency = value.get().expect("type checked upstream"),
            "bitrate" => s.bitrate = value.get().expect("type checked upstream"),
            "quantizer" => s.quantizer = value.get().expect("type checked upstream"),
            "max-quantizer" => s.max_quantizer = value.get().expect("type checked upstream"),
            "min-key-frame-interval" => {
                s.min_key_frame_interval = value.get().expect("type checked upstream")
            }
            "max-key-frame-interval" => {
                s.max_key_frame_interval = value.get().expect("type checked upstream")
            }
            "tiles" => s.tiles = value.get().expect("type checked upstream"),
            "tile-cols" => s.tile_cols = value.get().expect("type checked upstream"),
            "tile-rows" => s.tile_rows = value.get().expect("type checked upstream"),
            "threads" => s.threads = value.get().expect("type checked upstream"),
            "rdo-lookahead-frames" => {
                s.rdo_lookahead_frames = value.get().expect("type checked upstream")
            }
            "error-resilient" => s.error_resilient = value.get().expect("type checked upstream"),
            "tune" => s.tune = value.get().expect("type checked upstream"),
            "scene-detection" => s.scene_detection = value.get().expect("type checked upstream"),
            "max-bitrate" => s.max_bitrate = value.get().expect("type checked upstream"),
            "bitrate-change-interval" => {
                s.bitrate_change_interval = value.get().expect("type checked upstream")
            }
            "cdef" => s.cdef = value.get().expect("type checked upstream"),
            other => unreachable!("unknown property {other}"),
        }
        drop(s);
        if self.session.lock().unwrap().is_some()
            && !pspec.flags().contains(gst::PARAM_FLAG_MUTABLE_PLAYING)
        {
            gst::info!(
                CAT,
                imp = self,
                "{} set while running: it takes effect at the next start (READY → PAUSED)",
                pspec.name()
            );
        } else {
            gst::debug!(CAT, imp = self, "{} set", pspec.name());
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock().unwrap();
        match pspec.name() {
            "speed-preset" => s.speed_preset.to_value(),
            "low-latency" => s.low_latency.to_value(),
            "bitrate" => s.bitrate.to_value(),
            "quantizer" => s.quantizer.to_value(),
            "max-quantizer" => s.max_quantizer.to_value(),
            "min-key-frame-interval" => s.min_key_frame_interval.to_value(),
            "max-key-frame-interval" => s.max_key_frame_interval.to_value(),
            "tiles" => s.tiles.to_value(),
            "tile-cols" => s.tile_cols.to_value(),
            "tile-rows" => s.tile_rows.to_value(),
            "threads" => s.threads.to_value(),
            "rdo-lookahead-frames" => s.rdo_lookahead_frames.to_value(),
            "error-resilient" => s.error_resilient.to_value(),
            "tune" => s.tune.to_value(),
            "scene-detection" => s.scene_detection.to_value(),
            "max-bitrate" => s.max_bitrate.to_value(),
            "bitrate-change-interval" => s.bitrate_change_interval.to_value(),
            "cdef" => s.cdef.to_value(),
            other => unreachable!("unknown property {other}"),
        }
    }
}

impl GstObjectImpl for RtAv1Enc {}

impl ElementImpl for RtAv1Enc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "rav1e AV1 encoder (real time)",
                "Codec/Encoder/Video",
                "Encodes raw video to AV1 with rav1e, tuned for real time: fastest preset, low latency, reported encoder delay",
                "rtai contributors",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let sink_caps = gst_video::VideoCapsBuilder::new()
                .format_list([
                    gst_video::VideoFormat::I420,
                    gst_video::VideoFormat::Y42b,
                    gst_video::VideoFormat::Y444,
                    gst_video::VideoFormat::I42010le,
                    gst_video::VideoFormat::I42210le,
                    gst_video::VideoFormat::Y44410le,
                ])
                .width_range(16..=65536)
                .height_range(16..=65536)
                .build();
            let src_caps = gst::Caps::builder("video/x-av1")
                .field("stream-format", "obu-stream")
                .field("alignment", "tu")
                .field("profile", gst::List::new(["main", "high", "professional"]))
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

impl VideoEncoderImpl for RtAv1Enc {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let mut session = self.settings.lock().unwrap().clone();
        // The level holds for the whole session: chosen now, for max-bitrate
        // or else the bitrate at start.
        session.max_bitrate = session.level_bitrate();
        *self.session.lock().unwrap() = Some(session);
        *self.context_start.lock().unwrap() = None;
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *self.state.lock().unwrap() = None;
        *self.input.lock().unwrap() = None;
        *self.session.lock().unwrap() = None;
        *self.negotiated.lock().unwrap() = None;
        Ok(())
    }

    fn set_format(
        &self,
        input: &gst_video::VideoCodecState<'static, gst_video::video_codec_state::Readable>,
    ) -> Result<(), gst::LoggableError> {
        // Frames of the previous format go out first. If they cannot, the new
        // format is refused: going on would lose them without a word. A flush
        // discards them anyway.
        match self.output_packets(true) {
            Ok(_) | Err(gst::FlowError::Flushing) => {}
            Err(e) => {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Encode,
                    ("Cannot finish the frames of the previous format before the new caps"),
                    ["draining the encoder failed: {e:?}"]
                );
                return Err(gst::loggable_error!(
                    CAT,
                    "draining before new caps failed: {e:?}"
                ));
            }
        }
        let info = input.info().clone();
        *self.input.lock().unwrap() = Some(input.clone());
        // The new context starts at the next frame.
        *self.context_start.lock().unwrap() = None;
        self.start_encoder(&info, input)
    }

    fn flush(&self) -> bool {
        // Dropping the context drops its queued frames; the next frame starts a new one.
        let mut state = self.state.lock().unwrap();
        if let Some(s) = state.take() {
            gst::debug!(
                CAT,
                imp = self,
                "flushing: a new encoder starts at the next frame"
            );
            drop(s);
        }
        true
    }

    fn finish(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        gst::debug!(CAT, imp = self, "draining the encoder");
        self.output_packets(true)
    }

    fn handle_frame(
        &self,
        frame: gst_video::VideoCodecFrame,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let settings = self.wanted_settings();
        let pts = frame.pts();
        // A context made by set_format starts at the first frame it gets.
        self.context_start
            .lock()
            .unwrap()
            .get_or_insert_with(|| pts.unwrap_or_default());
        let restart = match self.state.lock().unwrap().as_ref() {
            None => true,
            Some(state) if state.settings == settings => false,
            // Live changes: at most one restart per interval; until then the
            // running context goes on and later changes replace this one.
            Some(_) => {
                let interval = gst::ClockTime::from_mseconds(
                    self.settings.lock().unwrap().bitrate_change_interval as u64,
                );
                let started = *self.context_start.lock().unwrap();
                let due = match (started, pts) {
                    (Some(start), Some(now)) => now
                        .checked_sub(start)
                        .is_none_or(|elapsed| elapsed >= interval),
                    _ => true,
                };
                if !due {
                    gst::trace!(
                        CAT,
                        imp = self,
                        "live change deferred (bitrate-change-interval)"
                    );
                }
                due
            }
        };
        if restart {
            // First frame after a flush, or live properties changed while
            // playing: drain what the old context holds and start a new one.
            self.output_packets(true)?;
            let Some(input) = self.input.lock().unwrap().clone() else {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Negotiation,
                    ("Received video before caps")
                );
                return Err(gst::FlowError::NotNegotiated);
            };
            let info = input.info().clone();
            gst::debug!(CAT, imp = self, "starting a new encoder context");
            self.start_encoder(&info, &input)
                .map_err(|_| gst::FlowError::NotNegotiated)?;
            *self.context_start.lock().unwrap() = pts;
        }
        {
            let mut state_guard = self.state.lock().unwrap();
            let state = state_guard.as_mut().ok_or(gst::FlowError::Flushing)?;
            let input = frame.input_buffer().ok_or(gst::FlowError::Error)?;
            let vframe = gst_video::VideoFrameRef::from_buffer_ref_readable(input, &state.info)
                .map_err(|_| {
                    gst::element_imp_error!(
                        self,
                        gst::CoreError::Failed,
                        ("Cannot map an input frame"),
                        ["the buffer does not match {:?}", state.info]
                    );
                    gst::FlowError::Error
                })?;
            let force_key = frame
                .flags()
                .contains(gst_video::VideoCodecFrameFlags::FORCE_KEYFRAME);
            if force_key {
                gst::debug!(
                    CAT,
                    imp = self,
                    "frame {} forced to a key frame",
                    frame.system_frame_number()
                );
            }
            match state
                .encoder
                .send_frame(&vframe, frame.system_frame_number(), force_key)
            {
                Ok(()) => {}
                Err(e) => {
                    drop(state_guard);
                    gst::element_imp_error!(
                        self,
                        gst::StreamError::Encode,
                        ("The AV1 encoder refused a frame"),
                        ["rav1e: {e}"]
                    );
                    return Err(gst::FlowError::Error);
                }
            }
        }
        drop(frame);
        self.output_packets(false)
    }
}
