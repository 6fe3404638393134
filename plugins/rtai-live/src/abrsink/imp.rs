//! abrsink: a sink bin. `video` (raw video, always) → `tee` → per rung
//! `queue ! videoscale ! capsfilter ! rtencodebin ! h264parse ! cmafmux ! appsink`;
//! `audio` (raw audio, request) → `queue ! audioconvert ! audioresample ! AAC
//! encoder ! aacparse ! cmafmux ! appsink`. The rungs are built when the video
//! caps arrive (rungs above the source height are skipped).
//!
//! Key frames: a probe on the `video` pad sends a downstream force-key-unit
//! event through the tee at the first frame at or after every segment boundary
//! (running time, counted from the first frame), so every rung encodes a key
//! frame on the same input frame, and asks every cmafmux to split there
//! (`split-at-running-time`): segment boundaries are the same in every rendition.
//!
//! The appsinks hand CMAF init segments and fragments (or, with `low-latency`,
//! chunks = LL-HLS parts) to the stream's [`StreamMedia`], which the HTTP server
//! (shared per `listen` address) serves.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::ladder::{self, Rung};
use super::server::{self, Registration};
use super::store::{self, Added, Kind, Rendition, StreamMedia};
use crate::delivery::{DeliveryConfig, RenditionInfo, StreamEnd};

pub(crate) static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "abrsink",
        gst::DebugColorFlags::empty(),
        Some("ABR ladder to CMAF, served as HLS and DASH"),
    )
});

const DEFAULT_LADDER: &str = "1080p:5000,720p:2800,480p:1400";
const DEFAULT_SEGMENT_DURATION_MS: u32 = 1000;
const DEFAULT_PART_DURATION_MS: u32 = 200;
const DEFAULT_LOW_LATENCY: bool = false;
const DEFAULT_DASH: bool = true;
const DEFAULT_PLAYLIST_LENGTH: u32 = 6;
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_STREAM: &str = "live";
const DEFAULT_AUDIO_BITRATE: u32 = 128;
const DEFAULT_PREFER_HARDWARE: bool = true;
/// In-memory SQLite, as analyticssink's `database` default.
const DEFAULT_DATABASE: &str = "";
const DEFAULT_VIDEO_CODEC: &str = "h264";
/// Codecs of the ladder: rtencodebin's codecs that CMAF and browsers' MSE take.
const VIDEO_CODECS: &[&str] = &["h264", "av1"];
/// How long stopping waits for the store to write what was reported.
const STOP_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// With the `audio` pad linked but no audio buffer ever arriving (a video-only
/// RTMP publisher: flvdemux makes no audio pad), the stream is served video-only
/// once every video rendition has this many segments.
const AUDIO_WAIT_SEGMENTS: usize = 2;
const AUDIO_RATE: i32 = 48000;
const AUDIO_CHANNELS: i32 = 2;

#[derive(Clone)]
struct Settings {
    ladder: String,
    segment_duration_ms: u32,
    part_duration_ms: u32,
    low_latency: bool,
    dash: bool,
    playlist_length: u32,
    listen: String,
    stream: String,
    /// `stream` was set by the application (else an upstream rtmpserversrc's name may replace it).
    stream_set: bool,
    location: Option<String>,
    audio_bitrate: u32,
    prefer_hardware: bool,
    /// Where viewer sessions and metrics history go (`rtai_core::store`).
    database: String,
    /// Guards `/ops`, `/api/*` and `/ws/*`; write-only, never logged.
    auth_token: Option<String>,
    /// `h264` or `av1` (rtencodebin's codec for every rung).
    video_codec: String,
}

/// By hand: the token and a database URL's password must not reach a log through `{:?}`.
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("ladder", &self.ladder)
            .field("segment_duration_ms", &self.segment_duration_ms)
            .field("part_duration_ms", &self.part_duration_ms)
            .field("low_latency", &self.low_latency)
            .field("dash", &self.dash)
            .field("playlist_length", &self.playlist_length)
            .field("listen", &self.listen)
            .field("stream", &self.stream)
            .field("stream_set", &self.stream_set)
            .field("location", &self.location)
            .field("audio_bitrate", &self.audio_bitrate)
            .field("prefer_hardware", &self.prefer_hardware)
            .field("database", &rtai_core::secrets::redact(&self.database))
            .field("auth_token", &self.auth_token.as_ref().map(|_| "***"))
            .field("video_codec", &self.video_codec)
            .finish()
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            ladder: DEFAULT_LADDER.into(),
            segment_duration_ms: DEFAULT_SEGMENT_DURATION_MS,
            part_duration_ms: DEFAULT_PART_DURATION_MS,
            low_latency: DEFAULT_LOW_LATENCY,
            dash: DEFAULT_DASH,
            playlist_length: DEFAULT_PLAYLIST_LENGTH,
            listen: DEFAULT_LISTEN.into(),
            stream: DEFAULT_STREAM.into(),
            stream_set: false,
            location: None,
            audio_bitrate: DEFAULT_AUDIO_BITRATE,
            prefer_hardware: DEFAULT_PREFER_HARDWARE,
            database: DEFAULT_DATABASE.into(),
            auth_token: None,
            video_codec: DEFAULT_VIDEO_CODEC.into(),
        }
    }
}

/// One rendition's branch.
#[derive(Clone)]
struct Branch {
    name: String,
    /// Where the codec string is read from (the parser's src pad).
    parse: gst::Element,
    mux: gst::Element,
    frames: Arc<AtomicU64>,
}

/// Key-frame alignment on the `video` pad.
#[derive(Default)]
struct Boundaries {
    first: Option<gst::ClockTime>,
    next: Option<gst::ClockTime>,
    count: u32,
}

struct State {
    rungs: Vec<Rung>,
    media: Arc<StreamMedia>,
    registration: Registration,
    stream: String,
    branches: Vec<Branch>,
    video_built: bool,
    eos_pending: usize,
    started: bool,
    ended: bool,
    upstream_rtmp: Option<gst::Element>,
    /// The probe on the upstream rtmpserversrc's src pad that sees `rtmp-publish-stop` at once.
    rtmp_probe: Option<(gst::Pad, gst::PadProbeId)>,
    /// Set by that probe when the source sends media after `rtmp-publish-stop`: a new
    /// publisher (frames of the old one still in the decoders must not restart the stream).
    publisher_returned: Arc<AtomicBool>,
    ingress_seen: u64,
    fps_at: Instant,
}

pub struct AbrSink {
    video_pad: gst::GhostPad,
    /// `videoconvert ! capsfilter(I420)` once before the tee (4:2:0 for every browser).
    convert: gst::Element,
    convert_filter: gst::Element,
    tee: gst::Element,
    audio_pad: Mutex<Option<gst::GhostPad>>,
    /// The audio branch (built when the `audio` pad is requested; kept across restarts).
    audio_chain: Mutex<Option<Branch>>,
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    boundaries: Mutex<Boundaries>,
    /// An audio buffer reached the `audio` pad since the start.
    audio_seen: Arc<AtomicBool>,
}

fn make(factory: &str) -> Result<gst::Element, glib::BoolError> {
    gst::ElementFactory::make(factory).build().map_err(|_| {
        glib::bool_error!("element {factory} is missing (install its GStreamer plugin)")
    })
}

/// cmafmux from gst-plugins-rs: the installed one if there is one, else the
/// copy compiled into this plugin (gst-plugin-fmp4 0.14), registered once.
fn ensure_cmafmux() -> Result<(), String> {
    static DONE: LazyLock<Result<(), String>> = LazyLock::new(|| {
        if gst::ElementFactory::find("cmafmux").is_some() {
            gst::info!(CAT, "using the installed cmafmux");
            return Ok(());
        }
        gstfmp4::plugin_register_static()
            .map_err(|e| format!("cannot register the built-in cmafmux: {e}"))?;
        gst::info!(
            CAT,
            "registered the built-in cmafmux (gst-plugin-fmp4 0.14)"
        );
        Ok(())
    });
    DONE.clone()
}

fn aac_encoder(kbps: u32) -> Result<gst::Element, glib::BoolError> {
    for f in ["avenc_aac", "fdkaacenc", "voaacenc"] {
        if let Ok(e) = gst::ElementFactory::make(f).build() {
            e.set_property_from_value("bitrate", &((kbps * 1000) as i32).to_value());
            return Ok(e);
        }
    }
    Err(glib::bool_error!(
        "no AAC encoder (avenc_aac, fdkaacenc or voaacenc) is installed"
    ))
}

/// Runs `fut` on the shared runtime and waits for it (from an application
/// thread: a state change, never a streaming thread).
fn wait_on<T: Send + 'static>(fut: impl std::future::Future<Output = T> + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    rtai_core::runtime::runtime().spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().expect("the runtime runs the task to completion")
}

/// The first element upstream of `pad` made by `factory` (a bounded walk).
fn find_upstream(pad: &gst::Pad, factory: &str) -> Option<gst::Element> {
    let mut pads = vec![pad.clone()];
    for _ in 0..32 {
        let pad = pads.pop()?;
        let peer = pad.peer()?;
        let element = peer.parent_element()?;
        if element.factory().is_some_and(|f| f.name() == factory) {
            return Some(element);
        }
        pads.extend(element.sink_pads());
    }
    None
}

impl AbrSink {
    fn config(settings: &Settings) -> store::Config {
        store::Config {
            segment_duration: Duration::from_millis(settings.segment_duration_ms as u64),
            part_duration: Duration::from_millis(settings.part_duration_ms as u64),
            low_latency: settings.low_latency,
            dash: settings.dash,
            playlist_length: settings.playlist_length as usize,
            location: settings.location.as_ref().map(PathBuf::from),
        }
    }

    /// NULL → READY: validates the settings, registers the stream on the HTTP server.
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings.lock().unwrap().clone();
        let rungs = ladder::parse(&settings.ladder)
            .map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ("invalid ladder: {}", e)))?;
        if !server::valid_name(&settings.stream) {
            return Err(gst::error_msg!(
                gst::LibraryError::Settings,
                (
                    "invalid stream name {:?}: 1 to 64 of A-Z a-z 0-9 _ -",
                    settings.stream
                )
            ));
        }
        if !VIDEO_CODECS.contains(&settings.video_codec.as_str()) {
            return Err(gst::error_msg!(
                gst::LibraryError::Settings,
                (
                    "invalid video-codec {:?}: one of {}",
                    settings.video_codec,
                    VIDEO_CODECS.join(", ")
                )
            ));
        }
        if settings.low_latency && settings.part_duration_ms * 2 > settings.segment_duration_ms {
            return Err(gst::error_msg!(
                gst::LibraryError::Settings,
                ("part-duration must be at most half of segment-duration")
            ));
        }
        ensure_cmafmux().map_err(|e| gst::error_msg!(gst::CoreError::MissingPlugin, ("{}", e)))?;
        let cfg = Self::config(&settings);
        let media = Arc::new(StreamMedia::new(&settings.stream, cfg, Vec::new()));
        let delivery_cfg = DeliveryConfig {
            store_url: Some(settings.database.clone()).filter(|d| !d.is_empty()),
            auth_token: settings.auth_token.clone(),
            default_target_duration: Duration::from_millis(settings.segment_duration_ms as u64),
            ..DeliveryConfig::default()
        };
        let registration = server::register(&settings.listen, media.clone(), delivery_cfg)
            .map_err(|e| gst::error_msg!(gst::ResourceError::OpenWrite, ("{}", e)))?;
        // Open (and migrate) the store now: a wrong `database` fails the start
        // instead of silently losing the history.
        let delivery = registration.server.delivery.clone();
        wait_on(async move { delivery.store_backend().await })
            .map_err(|e| rtai_core::store::open_error("delivery", e, &settings.database))?;
        gst::info!(
            CAT,
            imp = self,
            "serving stream {:?} on http://{}/hls/{}/master.m3u8",
            settings.stream,
            registration.server.addr,
            settings.stream
        );
        let mut branches = Vec::new();
        if let Some(branch) = self.audio_chain.lock().unwrap().clone() {
            media.add_rendition(Rendition::new(
                "audio",
                Kind::Audio {
                    kbps: settings.audio_bitrate,
                    rate: AUDIO_RATE as u32,
                    channels: AUDIO_CHANNELS as u32,
                },
            ));
            branches.push(branch);
        }
        *self.boundaries.lock().unwrap() = Boundaries::default();
        self.audio_seen.store(false, Ordering::SeqCst);
        *self.state.lock().unwrap() = Some(State {
            rungs,
            media,
            registration,
            stream: settings.stream,
            branches,
            video_built: false,
            eos_pending: 0,
            started: false,
            ended: false,
            upstream_rtmp: None,
            rtmp_probe: None,
            publisher_returned: Arc::new(AtomicBool::new(false)),
            ingress_seen: 0,
            fps_at: Instant::now(),
        });
        Ok(())
    }

    fn stop(&self) {
        let mut state = self.state.lock().unwrap().take();
        if let Some((pad, id)) = state.as_mut().and_then(|s| s.rtmp_probe.take()) {
            pad.remove_probe(id);
        }
        if let Some(state) = &state
            && state.started
            && !state.ended
        {
            state
                .registration
                .server
                .delivery
                .stream_ended(&state.stream, StreamEnd::Ended);
        }
        // What was reported goes to the store before the element (and maybe the
        // process) stops, so a restart on the same `database` finds it.
        if let Some(state) = state {
            let delivery = state.registration.server.delivery.clone();
            if let Err(e) = wait_on(async move { delivery.flush(STOP_FLUSH_TIMEOUT).await }) {
                gst::warning!(CAT, imp = self, "viewer history not stored at stop: {e}");
            }
        }
        // Video branches are rebuilt from the next caps.
        let obj = self.obj();
        for e in obj.children() {
            if e.name().starts_with("v_") {
                let _ = e.set_state(gst::State::Null);
                let _ = obj.remove(&e);
            }
        }
        for pad in self.tee.src_pads() {
            self.tee.release_request_pad(&pad);
        }
    }

    /// A branch's `cmafmux ! appsink` tail; the appsink hands samples to this element.
    fn tail(
        &self,
        prefix: &str,
        name: &str,
        cfg: &Settings,
    ) -> Result<(gst::Element, gst::Element), glib::BoolError> {
        let mux = make("cmafmux")?;
        mux.set_property("name", format!("{prefix}_mux"));
        let seg = cfg.segment_duration_ms as u64 * 1_000_000;
        // Video splits come from split-at-running-time at the forced key frames; the
        // schedule is a backstop (a rung that misses a forced key frame). Audio keeps
        // its own schedule: cmafmux cut a split request falling between two 21 ms AAC
        // frames into a one-frame segment (0.981 s + 0.021 s at every boundary), which
        // halved the audio window and left players behind it with 404s.
        let audio_on_schedule = prefix == "a";
        let fragment = if audio_on_schedule { seg } else { seg * 3 / 2 };
        mux.set_property_from_value("fragment-duration", &fragment.to_value());
        if cfg.low_latency {
            mux.set_property_from_value(
                "chunk-duration",
                &(cfg.part_duration_ms as u64 * 1_000_000).to_value(),
            );
        }
        if mux.has_property("send-force-keyunit") {
            mux.set_property("send-force-keyunit", false);
        }
        let sink = gst_app::AppSink::builder()
            .name(format!("{prefix}_sink"))
            .sync(false)
            .max_buffers(64)
            .build();
        sink.set_property("async", false);
        sink.set_property("buffer-list", true);
        let weak = self.obj().downgrade();
        let (n1, n2) = (name.to_string(), name.to_string());
        let weak2 = weak.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    if let Some(el) = weak.upgrade() {
                        el.imp().on_sample(&n1, sample);
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .eos(move |_| {
                    if let Some(el) = weak2.upgrade() {
                        el.imp().on_eos(&n2);
                    }
                })
                .build(),
        );
        Ok((mux, sink.upcast()))
    }

    fn build_audio(&self) -> Result<gst::Pad, glib::BoolError> {
        let settings = self.settings.lock().unwrap().clone();
        ensure_cmafmux().map_err(|e| glib::bool_error!("{e}"))?;
        let queue = make("queue")?;
        queue.set_property("name", "a_queue");
        let convert = make("audioconvert")?;
        let resample = make("audioresample")?;
        let filter = make("capsfilter")?;
        filter.set_property(
            "caps",
            gst::Caps::builder("audio/x-raw")
                .field("rate", AUDIO_RATE)
                .field("channels", AUDIO_CHANNELS)
                .build(),
        );
        let enc = aac_encoder(settings.audio_bitrate)?;
        let parse = make("aacparse")?;
        let (mux, sink) = self.tail("a", "audio", &settings)?;
        let chain = [
            &queue, &convert, &resample, &filter, &enc, &parse, &mux, &sink,
        ];
        let obj = self.obj();
        obj.add_many(chain)?;
        gst::Element::link_many(chain)?;
        let branch = Branch {
            name: "audio".into(),
            parse: parse.clone(),
            mux: mux.clone(),
            frames: Arc::new(AtomicU64::new(0)),
        };
        *self.audio_chain.lock().unwrap() = Some(branch);
        for e in chain {
            let _ = e.sync_state_with_parent();
        }
        Ok(queue.static_pad("sink").unwrap())
    }

    /// Builds the video rungs for the input caps (once per start).
    fn build_video(&self, caps: &gst::CapsRef) -> Result<(), String> {
        let s = caps.structure(0).ok_or("caps without a structure")?;
        let width = s.get::<i32>("width").map_err(|_| "caps without width")? as u32;
        let height = s.get::<i32>("height").map_err(|_| "caps without height")? as u32;
        let framerate = s
            .get::<gst::Fraction>("framerate")
            .map(|f| (f.numer(), f.denom()))
            .unwrap_or((30, 1));
        let par = s
            .get::<gst::Fraction>("pixel-aspect-ratio")
            .map(|f| (f.numer(), f.denom()))
            .unwrap_or((1, 1));
        let settings = self.settings.lock().unwrap().clone();
        let (rungs, media) = {
            let mut state = self.state.lock().unwrap();
            let state = state.as_mut().ok_or("not started")?;
            if state.video_built {
                return Ok(());
            }
            state.video_built = true;
            (ladder::select(&state.rungs, height), state.media.clone())
        };
        let fps = if framerate.0 > 0 && framerate.1 > 0 {
            framerate.0 as f64 / framerate.1 as f64
        } else {
            30.0
        };
        let frames_per_segment = (fps * settings.segment_duration_ms as f64 / 1000.0).ceil() as u32;
        let obj = self.obj();
        let mut branches = Vec::new();
        for rung in &rungs {
            let w = ladder::width_for(rung.height, width, height, par);
            let name = rung.name();
            let p = format!("v_{name}");
            let result = (|| -> Result<Branch, glib::BoolError> {
                let queue = make("queue")?;
                queue.set_property("name", format!("{p}_queue"));
                let scale = make("videoscale")?;
                let filter = make("capsfilter")?;
                filter.set_property(
                    "caps",
                    gst::Caps::builder("video/x-raw")
                        .field("width", w as i32)
                        .field("height", rung.height as i32)
                        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                        .build(),
                );
                let enc = make("rtencodebin")?;
                enc.set_property("name", format!("{p}_enc"));
                enc.set_property("bitrate", rung.kbps);
                // Forced key frames make the segments; the encoder's own interval is a backstop.
                enc.set_property("key-frame-interval", frames_per_segment.max(1) * 4);
                enc.set_property("prefer-hardware", settings.prefer_hardware);
                enc.set_property_from_str("codec", &settings.video_codec);
                let (parse, caps) = match settings.video_codec.as_str() {
                    "av1" => (
                        make("av1parse")?,
                        gst::Caps::builder("video/x-av1")
                            .field("stream-format", "obu-stream")
                            .field("alignment", "tu")
                            .build(),
                    ),
                    _ => (
                        make("h264parse")?,
                        gst::Caps::builder("video/x-h264")
                            .field("stream-format", "avc")
                            .field("alignment", "au")
                            .build(),
                    ),
                };
                let pfilter = make("capsfilter")?;
                pfilter.set_property("caps", caps);
                let (mux, sink) = self.tail(&p, &name, &settings)?;
                let chain = [&queue, &scale, &filter, &enc, &parse, &pfilter, &mux, &sink];
                obj.add_many(chain)?;
                gst::Element::link_many(chain)?;
                let frames = Arc::new(AtomicU64::new(0));
                let counter = frames.clone();
                parse.static_pad("src").unwrap().add_probe(
                    gst::PadProbeType::BUFFER,
                    move |_, _| {
                        counter.fetch_add(1, Ordering::Relaxed);
                        gst::PadProbeReturn::Ok
                    },
                );
                for e in chain.iter().rev() {
                    e.sync_state_with_parent()?;
                }
                let tee_src = self
                    .tee
                    .request_pad_simple("src_%u")
                    .ok_or_else(|| glib::bool_error!("tee gives no pad"))?;
                tee_src
                    .link(&queue.static_pad("sink").unwrap())
                    .map_err(|e| glib::bool_error!("cannot link the tee: {e:?}"))?;
                Ok(Branch {
                    name: name.clone(),
                    parse: pfilter,
                    mux,
                    frames,
                })
            })();
            let branch = result.map_err(|e| format!("rung {name}: {e}"))?;
            media.add_rendition(Rendition::new(
                &name,
                Kind::Video {
                    width: w,
                    height: rung.height,
                    kbps: rung.kbps,
                    framerate,
                },
            ));
            gst::info!(
                CAT,
                imp = self,
                "rung {name}: {w}x{} at {} kbit/s",
                rung.height,
                rung.kbps
            );
            branches.push(branch);
        }
        let upstream = find_upstream(self.video_pad.upcast_ref(), "rtmpserversrc");
        // The publisher's end as the source sends it: decoders hold serialized custom
        // events until their next frame, which never comes after the publisher left.
        let returned = self
            .state
            .lock()
            .unwrap()
            .as_ref()
            .map(|s| s.publisher_returned.clone())
            .unwrap_or_default();
        let rtmp_probe = upstream.as_ref().and_then(|src| {
            let pad = src.static_pad("src")?;
            let weak = self.obj().downgrade();
            let stopped = AtomicBool::new(false);
            let id = pad.add_probe(
                gst::PadProbeType::EVENT_DOWNSTREAM | gst::PadProbeType::BUFFER,
                move |_, info| {
                    match &info.data {
                        Some(gst::PadProbeData::Event(e))
                            if e.type_() == gst::EventType::CustomDownstream
                                && e.structure()
                                    .is_some_and(|s| s.name() == "rtmp-publish-stop") =>
                        {
                            stopped.store(true, Ordering::SeqCst);
                            returned.store(false, Ordering::SeqCst);
                            if let Some(el) = weak.upgrade() {
                                el.imp().publish_stopped();
                            }
                        }
                        Some(gst::PadProbeData::Buffer(_))
                            if stopped.swap(false, Ordering::SeqCst) =>
                        {
                            returned.store(true, Ordering::SeqCst);
                        }
                        _ => {}
                    }
                    gst::PadProbeReturn::Ok
                },
            )?;
            Some((pad, id))
        });
        // `stream` left unset behind an rtmpserversrc: the publisher's name.
        let publish_name = upstream
            .as_ref()
            .filter(|_| !self.settings.lock().unwrap().stream_set)
            .map(|src| src.property::<String>("publish-name"))
            .filter(|n| !n.is_empty());
        let mut state = self.state.lock().unwrap();
        if let Some(state) = state.as_mut() {
            if let Some(name) = publish_name
                && !state.started
                && name != state.stream
            {
                match state.registration.rename(&name) {
                    Ok(()) => {
                        gst::info!(
                            CAT,
                            imp = self,
                            "serving the RTMP publish name: http://{}/hls/{name}/master.m3u8",
                            state.registration.server.addr
                        );
                        state.stream = name;
                    }
                    Err(e) => gst::element_imp_warning!(
                        self,
                        gst::ResourceError::Settings,
                        (
                            "keeping stream {:?}: the publish name cannot be served: {}",
                            state.stream,
                            e
                        )
                    ),
                }
            }
            // Video renditions first (highest first), audio last.
            let audio: Vec<Branch> = state.branches.drain(..).collect();
            state.branches = branches;
            state.branches.extend(audio);
            state.upstream_rtmp = upstream;
            state.rtmp_probe = rtmp_probe;
        }
        drop(state);
        self.reorder_renditions();
        Ok(())
    }

    /// Keeps the media's renditions in branch order (video rungs, then audio).
    fn reorder_renditions(&self) {
        let state = self.state.lock().unwrap();
        let Some(state) = state.as_ref() else { return };
        let mut inner = state.media.inner.lock().unwrap();
        inner.renditions.sort_by_key(|r| match r.kind {
            Kind::Video { height, .. } => -(height as i64),
            Kind::Audio { .. } => 1,
        });
    }

    /// Force-key-unit and split requests at every segment boundary.
    fn on_video_buffer(&self, pad: &gst::Pad, buffer: &gst::BufferRef) {
        let Some(pts) = buffer.pts() else { return };
        let Some(segment) = pad
            .sticky_event::<gst::event::Segment>(0)
            .and_then(|e| e.segment().downcast_ref::<gst::ClockTime>().cloned())
        else {
            return;
        };
        let Some(rt) = segment.to_running_time(pts) else {
            return;
        };
        let seg =
            gst::ClockTime::from_mseconds(self.settings.lock().unwrap().segment_duration_ms as u64);
        self.restart_if_ended(rt);
        let mut b = self.boundaries.lock().unwrap();
        let Some(next) = b.next else {
            b.first = Some(rt);
            b.next = Some(rt + seg);
            drop(b);
            if let Some(state) = self.state.lock().unwrap().as_ref() {
                state.media.set_epoch(rt.nseconds());
            }
            return;
        };
        if rt < next {
            return;
        }
        let first = b.first.unwrap_or(rt);
        // The next boundary after this frame, on the grid from the first frame.
        let k = (rt - first).nseconds() / seg.nseconds() + 1;
        b.next = Some(first + seg * k);
        b.count += 1;
        let count = b.count;
        drop(b);
        let muxes: Vec<gst::Element> = self
            .state
            .lock()
            .unwrap()
            .as_ref()
            .map(|s| {
                s.branches
                    .iter()
                    .filter(|b| b.name != "audio")
                    .map(|b| b.mux.clone())
                    .collect()
            })
            .unwrap_or_default();
        for mux in muxes {
            mux.emit_by_name::<()>("split-at-running-time", &[&rt]);
        }
        let event = gst_video::DownstreamForceKeyUnitEvent::builder()
            .running_time(rt)
            .all_headers(true)
            .count(count)
            .build();
        if let Some(tee_sink) = self.tee.static_pad("sink") {
            tee_sink.send_event(event);
        }
    }

    fn on_sample(&self, name: &str, sample: gst::Sample) {
        let (media, index) = {
            let state = self.state.lock().unwrap();
            let Some(state) = state.as_ref() else { return };
            let Some(i) = state.media.index_of(name) else {
                return;
            };
            (state.media.clone(), i)
        };
        let mut buffers: Vec<gst::Buffer> = match sample.buffer_list() {
            Some(list) => list.iter_owned().collect(),
            None => sample.buffer_owned().into_iter().collect(),
        };
        if buffers.is_empty() {
            return;
        }
        if buffers[0]
            .flags()
            .contains(gst::BufferFlags::DISCONT | gst::BufferFlags::HEADER)
        {
            let init = buffers.remove(0);
            if let Ok(map) = init.map_readable() {
                media.set_init(index, Bytes::copy_from_slice(&map));
            }
            self.set_codecs(name, &media, index);
            if buffers.is_empty() {
                return;
            }
        }
        let first = &buffers[0];
        let starts_segment = first.flags().contains(gst::BufferFlags::HEADER)
            && !first.flags().contains(gst::BufferFlags::DELTA_UNIT);
        let duration = first
            .duration()
            .map(|d| Duration::from_nanos(d.nseconds()))
            .unwrap_or_default();
        let size: usize = buffers.iter().map(|b| b.size()).sum();
        let mut data = Vec::with_capacity(size);
        for b in &buffers {
            if let Ok(map) = b.map_readable() {
                data.extend_from_slice(&map);
            }
        }
        let added = media.push(index, Bytes::from(data), duration, starts_segment);
        if let Added::Segment(d, bytes) = added
            && self.segment_done(name, &media, d, bytes)
        {
            self.end_silent_audio();
        }
    }

    fn set_codecs(&self, name: &str, media: &StreamMedia, index: usize) {
        let parse = {
            let state = self.state.lock().unwrap();
            state
                .as_ref()
                .and_then(|s| s.branches.iter().find(|b| b.name == name))
                .map(|b| b.parse.clone())
        };
        let caps = parse
            .and_then(|p| p.static_pad("src"))
            .and_then(|p| p.current_caps());
        if let Some(caps) = caps {
            // GStreamer 1.22 names AV1 `av01` alone: the full string is in the init segment.
            let av1 = caps
                .structure(0)
                .is_some_and(|s| s.name() == "video/x-av1")
                .then(|| {
                    let inner = media.inner.lock().unwrap();
                    inner
                        .renditions
                        .get(index)
                        .and_then(|r| r.init.as_deref().and_then(super::mp4::av1_codecs))
                })
                .flatten();
            if let Some(c) = av1 {
                media.set_codecs(index, c);
                return;
            }
            match gst_pbutils::codec_utils_caps_get_mime_codec(&caps) {
                Ok(c) => media.set_codecs(index, c.to_string()),
                Err(e) => gst::warning!(CAT, imp = self, "{name}: no codec string for {caps}: {e}"),
            }
        }
    }

    /// A segment was completed: delivery stats, `location` playlists, stream start.
    /// Whether the audio rendition was just dropped (never any audio).
    fn segment_done(&self, name: &str, media: &StreamMedia, d: Duration, bytes: u64) -> bool {
        let mut state = self.state.lock().unwrap();
        let Some(state) = state.as_mut() else {
            return false;
        };
        let delivery = state.registration.server.delivery.clone();
        delivery.segment_written(&state.stream, name, d, bytes);
        if media.cfg.location.is_some() {
            let inner = media.inner.lock().unwrap();
            media.write_playlists(&inner);
        }
        let mut audio_dropped = false;
        if !state.started
            && !self.audio_seen.load(Ordering::Relaxed)
            && state.branches.iter().any(|b| b.name == "audio")
            && Self::video_has_segments(media, AUDIO_WAIT_SEGMENTS)
        {
            // Linked but silent: the input has no audio. Serve video only.
            state.branches.retain(|b| b.name != "audio");
            media.remove_rendition("audio");
            audio_dropped = true;
            gst::info!(
                CAT,
                imp = self,
                "no audio after {AUDIO_WAIT_SEGMENTS} video segments: serving {:?} video-only",
                state.stream
            );
        }
        if !state.started {
            let infos = {
                let inner = media.inner.lock().unwrap();
                store::master_playlist(&inner, None).map(|_| {
                    inner
                        .renditions
                        .iter()
                        .map(|r| {
                            let (width, height) = match r.kind {
                                Kind::Video { width, height, .. } => (width, height),
                                Kind::Audio { .. } => (0, 0),
                            };
                            RenditionInfo {
                                name: r.name.clone(),
                                width,
                                height,
                                bandwidth: r.bandwidth(),
                                codecs: r.codecs.clone().unwrap_or_default(),
                            }
                        })
                        .collect::<Vec<_>>()
                })
            };
            if let Some(infos) = infos {
                state.started = true;
                let publisher = state.upstream_rtmp.as_ref().map(|e| e.name().to_string());
                delivery.stream_started(&state.stream, infos, publisher);
                let _ = self.obj().post_message(
                    gst::message::Element::builder(
                        gst::Structure::builder("abrsink-ready")
                            .field("stream", state.stream.as_str())
                            .field(
                                "url",
                                format!(
                                    "http://{}/hls/{}/master.m3u8",
                                    state.registration.server.addr, state.stream
                                ),
                            )
                            .build(),
                    )
                    .src(&*self.obj())
                    .build(),
                );
            }
        }
        // Once a second: encoder fps per rung, ingress bytes from rtmpserversrc.
        let elapsed = state.fps_at.elapsed();
        if elapsed >= Duration::from_secs(1) {
            state.fps_at = Instant::now();
            for b in &state.branches {
                if b.name != "audio" {
                    let n = b.frames.swap(0, Ordering::Relaxed);
                    delivery.encoder_fps(&state.stream, &b.name, n as f64 / elapsed.as_secs_f64());
                }
            }
            if let Some(src) = &state.upstream_rtmp
                && let Some(bytes) = src
                    .property::<Option<gst::Structure>>("stats")
                    .and_then(|s| s.get::<u64>("bytes").ok())
            {
                delivery.ingress_bytes(&state.stream, bytes.saturating_sub(state.ingress_seen));
                state.ingress_seen = bytes;
            }
        }
        audio_dropped
    }

    /// Whether every video rendition has at least `n` segments.
    fn video_has_segments(media: &StreamMedia, n: usize) -> bool {
        let inner = media.inner.lock().unwrap();
        inner
            .renditions
            .iter()
            .filter(|r| matches!(r.kind, Kind::Video { .. }))
            .all(|r| r.segments.len() >= n)
    }

    /// The dropped audio branch gets EOS, so the bin still ends (its appsink
    /// posts EOS) when the video does.
    fn end_silent_audio(&self) {
        let target = self
            .audio_pad
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|p| p.target());
        if let Some(pad) = target {
            pad.send_event(gst::event::Eos::new());
        }
    }

    fn on_eos(&self, name: &str) {
        let mut guard = self.state.lock().unwrap();
        let Some(state) = guard.as_mut() else { return };
        // The audio branch dropped for silence got its EOS from us.
        if !state.branches.iter().any(|b| b.name == name) {
            return;
        }
        state.eos_pending += 1;
        gst::debug!(
            CAT,
            imp = self,
            "{name}: EOS ({}/{})",
            state.eos_pending,
            state.branches.len()
        );
        if state.eos_pending >= state.branches.len() && !state.ended {
            self.end_stream(state, StreamEnd::Ended);
        }
    }

    /// Media after the stream ended (a returning RTMP publisher with
    /// `eos-on-disconnect=false`): the stream starts again under the same URLs.
    fn restart_if_ended(&self, rt: gst::ClockTime) {
        let mut guard = self.state.lock().unwrap();
        let Some(state) = guard.as_mut() else { return };
        if !state.ended || state.eos_pending > 0 {
            return;
        }
        // Behind an rtmpserversrc: only once a new publisher's media left the source.
        if state.rtmp_probe.is_some() && !state.publisher_returned.swap(false, Ordering::SeqCst) {
            return;
        }
        state.ended = false;
        state.started = false;
        // `stream` unset: a publisher of another name gets its own URLs; the
        // ended stream stays served (ENDLIST) under the old name.
        let renamed = state
            .upstream_rtmp
            .as_ref()
            .filter(|_| !self.settings.lock().unwrap().stream_set)
            .map(|src| src.property::<String>("publish-name"))
            .filter(|n| !n.is_empty() && *n != state.stream);
        if let Some(name) = renamed {
            let next = Arc::new(state.media.successor(&name, rt.nseconds()));
            match state.registration.replace(next.clone()) {
                Ok(()) => {
                    gst::info!(
                        CAT,
                        imp = self,
                        "stream {:?} ended; new publisher served at http://{}/hls/{name}/master.m3u8",
                        state.stream,
                        state.registration.server.addr
                    );
                    state.media = next;
                    state.stream = name;
                    drop(guard);
                    self.obj().notify("stream");
                    return;
                }
                Err(e) => gst::element_imp_warning!(
                    self,
                    gst::ResourceError::Settings,
                    (
                        "keeping stream {:?}: the new publish name cannot be served: {}",
                        state.stream,
                        e
                    )
                ),
            }
        }
        state.media.restart(rt.nseconds());
        gst::info!(CAT, imp = self, "stream {:?} restarted", state.stream);
    }

    /// The RTMP publisher left (`rtmp-publish-stop`): the stream ends now.
    fn publish_stopped(&self) {
        let mut guard = self.state.lock().unwrap();
        if let Some(state) = guard.as_mut()
            && !state.ended
        {
            self.end_stream(state, StreamEnd::Ended);
        }
    }

    fn end_stream(&self, state: &mut State, end: StreamEnd) {
        state.ended = true;
        let done = state.media.end();
        let delivery = state.registration.server.delivery.clone();
        for (name, d, bytes) in done {
            delivery.segment_written(&state.stream, &name, d, bytes);
        }
        delivery.stream_ended(&state.stream, end);
        gst::info!(CAT, imp = self, "stream {:?} ended", state.stream);
    }
}

#[glib::object_subclass]
impl ObjectSubclass for AbrSink {
    const NAME: &'static str = "GstAbrSink";
    type Type = super::AbrSink;
    type ParentType = gst::Bin;

    fn with_class(klass: &Self::Class) -> Self {
        let tee = gst::ElementFactory::make("tee")
            .name("tee")
            .build()
            .expect("tee is a core element");
        let templ = klass.pad_template("video").unwrap();
        let video_pad = gst::GhostPad::builder_from_template(&templ).build();
        let convert = gst::ElementFactory::make("videoconvert")
            .name("convert")
            .build()
            .expect("videoconvert (gst-plugins-base) is installed");
        let convert_filter = gst::ElementFactory::make("capsfilter")
            .name("convert_filter")
            .property(
                "caps",
                gst::Caps::builder("video/x-raw")
                    .field("format", "I420")
                    .build(),
            )
            .build()
            .expect("capsfilter is a core element");
        Self {
            video_pad,
            convert,
            convert_filter,
            tee,
            audio_pad: Mutex::new(None),
            audio_chain: Mutex::new(None),
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(None),
            boundaries: Mutex::new(Boundaries::default()),
            audio_seen: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl ObjectImpl for AbrSink {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("ladder")
                    .nick("Ladder")
                    .blurb("Renditions as HEIGHTp:KBITS,... (rungs above the source height are skipped)")
                    .default_value(Some(DEFAULT_LADDER))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("segment-duration")
                    .nick("Segment duration")
                    .blurb("Segment duration in ms (a key frame in every rendition at every boundary)")
                    .minimum(200)
                    .maximum(20_000)
                    .default_value(DEFAULT_SEGMENT_DURATION_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("part-duration")
                    .nick("Part duration")
                    .blurb("LL-HLS part duration in ms (with low-latency)")
                    .minimum(50)
                    .maximum(5000)
                    .default_value(DEFAULT_PART_DURATION_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("low-latency")
                    .nick("Low latency")
                    .blurb("LL-HLS: partial segments (EXT-X-PART, PRELOAD-HINT) and blocking playlist reload")
                    .default_value(DEFAULT_LOW_LATENCY)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("dash")
                    .nick("DASH")
                    .blurb("Also serve a DASH MPD over the same CMAF segments")
                    .default_value(DEFAULT_DASH)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("playlist-length")
                    .nick("Playlist length")
                    .blurb("Segments in the sliding window of the playlists and the MPD")
                    .minimum(2)
                    .maximum(1000)
                    .default_value(DEFAULT_PLAYLIST_LENGTH)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("listen")
                    .nick("Listen address")
                    .blurb("HTTP server address (shared by every abrsink of the process with the same address; port 0: a new one)")
                    .default_value(Some(DEFAULT_LISTEN))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("stream")
                    .nick("Stream")
                    .blurb("Stream name in the URLs (/hls/STREAM/master.m3u8); left unset, the publish name of an upstream rtmpserversrc (its publish-name when video starts)")
                    .default_value(Some(DEFAULT_STREAM))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("location")
                    .nick("Location")
                    .blurb("Directory for segments and playlists (unset: segments kept in memory)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("audio-bitrate")
                    .nick("Audio bitrate")
                    .blurb("AAC bitrate in kbit/s of the shared audio rendition")
                    .minimum(16)
                    .maximum(512)
                    .default_value(DEFAULT_AUDIO_BITRATE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("prefer-hardware")
                    .nick("Prefer hardware")
                    .blurb("Let rtencodebin try hardware encoders first")
                    .default_value(DEFAULT_PREFER_HARDWARE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("database")
                    .nick("Database")
                    .blurb("Where viewer sessions and per-second metrics history are kept: a SQLite file path, a postgres:// URL or libpq key=value string, or empty for an in-memory SQLite database (lost at stop); the first abrsink on a listen address sets it for that server (passwords read back as ***)")
                    .default_value(Some(DEFAULT_DATABASE))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("auth-token")
                    .nick("Bearer token")
                    .blurb("When set, /ops, /api/* and /ws/* need 'Authorization: Bearer TOKEN' (or ?access_token=); media, /watch and /metrics stay open; the first abrsink on a listen address sets it for that server; write-only")
                    .write_only()
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("video-codec")
                    .nick("Video codec")
                    .blurb("Codec of every video rendition: h264 (rtencodebin h264, h264parse) or av1 (rtencodebin av1: hardware, rav1e rtav1enc or libaom; av1parse)")
                    .default_value(Some(DEFAULT_VIDEO_CODEC))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("bound-port")
                    .nick("Bound port")
                    .blurb("The HTTP server's port (with listen=...:0); 0 before start")
                    .maximum(65535)
                    .read_only()
                    .build(),
                glib::ParamSpecString::builder("renditions")
                    .nick("Renditions")
                    .blurb("The renditions built: NAME:WIDTHxHEIGHT:KBITS,... (after the video caps arrived)")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        match pspec.name() {
            "ladder" => {
                s.ladder = value
                    .get::<Option<String>>()
                    .unwrap()
                    .unwrap_or_else(|| DEFAULT_LADDER.into())
            }
            "segment-duration" => s.segment_duration_ms = value.get().unwrap(),
            "part-duration" => s.part_duration_ms = value.get().unwrap(),
            "low-latency" => s.low_latency = value.get().unwrap(),
            "dash" => s.dash = value.get().unwrap(),
            "playlist-length" => s.playlist_length = value.get().unwrap(),
            "listen" => {
                s.listen = value
                    .get::<Option<String>>()
                    .unwrap()
                    .unwrap_or_else(|| DEFAULT_LISTEN.into())
            }
            "stream" => {
                s.stream = value
                    .get::<Option<String>>()
                    .unwrap()
                    .unwrap_or_else(|| DEFAULT_STREAM.into());
                s.stream_set = true;
            }
            "location" => {
                s.location = value
                    .get::<Option<String>>()
                    .unwrap()
                    .filter(|l| !l.is_empty())
            }
            "audio-bitrate" => s.audio_bitrate = value.get().unwrap(),
            "prefer-hardware" => s.prefer_hardware = value.get().unwrap(),
            "database" => s.database = value.get::<Option<String>>().unwrap().unwrap_or_default(),
            "video-codec" => {
                s.video_codec = value
                    .get::<Option<String>>()
                    .unwrap()
                    .unwrap_or_else(|| DEFAULT_VIDEO_CODEC.into())
            }
            "auth-token" => {
                s.auth_token = value
                    .get::<Option<String>>()
                    .unwrap()
                    .filter(|t| !t.is_empty())
            }
            _ => unimplemented!(),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock().unwrap();
        match pspec.name() {
            "ladder" => s.ladder.to_value(),
            "segment-duration" => s.segment_duration_ms.to_value(),
            "part-duration" => s.part_duration_ms.to_value(),
            "low-latency" => s.low_latency.to_value(),
            "dash" => s.dash.to_value(),
            "playlist-length" => s.playlist_length.to_value(),
            "listen" => s.listen.to_value(),
            "stream" => {
                let state = self.state.lock().unwrap();
                match state.as_ref() {
                    Some(st) => st.stream.to_value(),
                    None => s.stream.to_value(),
                }
            }
            "location" => s.location.to_value(),
            "audio-bitrate" => s.audio_bitrate.to_value(),
            "prefer-hardware" => s.prefer_hardware.to_value(),
            "database" => rtai_core::secrets::redact(&s.database).to_value(),
            "video-codec" => s.video_codec.to_value(),
            // Write-only: never read back.
            "auth-token" => None::<String>.to_value(),
            "bound-port" => {
                let state = self.state.lock().unwrap();
                (state
                    .as_ref()
                    .map(|st| st.registration.server.addr.port())
                    .unwrap_or(0) as u32)
                    .to_value()
            }
            "renditions" => {
                let state = self.state.lock().unwrap();
                let text = state
                    .as_ref()
                    .map(|st| {
                        let inner = st.media.inner.lock().unwrap();
                        inner
                            .renditions
                            .iter()
                            .map(|r| match r.kind {
                                Kind::Video {
                                    width,
                                    height,
                                    kbps,
                                    ..
                                } => format!("{}:{width}x{height}:{kbps}", r.name),
                                Kind::Audio { kbps, .. } => format!("{}:aac:{kbps}", r.name),
                            })
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default();
                text.to_value()
            }
            _ => unimplemented!(),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add_many([&self.convert, &self.convert_filter, &self.tee])
            .unwrap();
        gst::Element::link_many([&self.convert, &self.convert_filter, &self.tee]).unwrap();
        self.tee.set_property("allow-not-linked", true);
        self.video_pad
            .set_target(self.convert.static_pad("sink").as_ref())
            .expect("videoconvert's sink pad is free");
        let weak = obj.downgrade();
        self.video_pad.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
            move |pad, info| {
                let Some(el) = weak.upgrade() else {
                    return gst::PadProbeReturn::Ok;
                };
                let imp = el.imp();
                match &info.data {
                    Some(gst::PadProbeData::Buffer(b)) => imp.on_video_buffer(pad.upcast_ref(), b),
                    Some(gst::PadProbeData::Event(e)) => match e.view() {
                        gst::EventView::Caps(c) => {
                            if let Err(err) = imp.build_video(c.caps()) {
                                gst::element_imp_error!(
                                    imp,
                                    gst::StreamError::Failed,
                                    ("cannot build the ladder: {}", err)
                                );
                                return gst::PadProbeReturn::Drop;
                            }
                        }
                        gst::EventView::CustomDownstream(c)
                            if c.structure()
                                .is_some_and(|s| s.name() == "rtmp-publish-stop") =>
                        {
                            imp.publish_stopped();
                        }
                        _ => {}
                    },
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            },
        );
        obj.add_pad(&self.video_pad).unwrap();
    }
}

impl GstObjectImpl for AbrSink {}

impl ElementImpl for AbrSink {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "ABR HLS/DASH sink",
                "Sink/Video/Audio/Network",
                "Encodes a ladder of renditions (key frames aligned), packages them as CMAF and serves HLS (low-latency optional) and DASH over HTTP",
                "rtai contributors",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            vec![
                gst::PadTemplate::new(
                    "video",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &gst::Caps::new_empty_simple("video/x-raw"),
                )
                .unwrap(),
                gst::PadTemplate::new(
                    "audio",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Request,
                    &gst::Caps::new_empty_simple("audio/x-raw"),
                )
                .unwrap(),
            ]
        });
        TEMPLATES.as_ref()
    }

    fn request_new_pad(
        &self,
        templ: &gst::PadTemplate,
        _name: Option<&str>,
        _caps: Option<&gst::Caps>,
    ) -> Option<gst::Pad> {
        if templ.name_template() != "audio" {
            return None;
        }
        let mut audio_pad = self.audio_pad.lock().unwrap();
        if audio_pad.is_some() || self.state.lock().unwrap().is_some() {
            gst::warning!(CAT, imp = self, "one audio pad, requested before start");
            return None;
        }
        let target = match self.build_audio() {
            Ok(t) => t,
            Err(e) => {
                gst::element_imp_error!(self, gst::CoreError::MissingPlugin, ("{}", e));
                return None;
            }
        };
        let pad = gst::GhostPad::builder_from_template_with_target(templ, &target)
            .ok()?
            .name("audio")
            .build();
        let seen = self.audio_seen.clone();
        pad.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |_, _| {
                seen.store(true, Ordering::Relaxed);
                gst::PadProbeReturn::Ok
            },
        );
        self.obj().add_pad(&pad).ok()?;
        *audio_pad = Some(pad.clone());
        Some(pad.upcast())
    }

    fn release_pad(&self, pad: &gst::Pad) {
        let mut audio_pad = self.audio_pad.lock().unwrap();
        if audio_pad
            .as_ref()
            .is_some_and(|p| p.upcast_ref::<gst::Pad>() == pad)
        {
            *audio_pad = None;
            let _ = self.obj().remove_pad(pad);
        }
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::NullToReady
            && let Err(e) = self.start()
        {
            self.post_error_message(e);
            return Err(gst::StateChangeError);
        }
        let ret = self.parent_change_state(transition);
        if transition == gst::StateChange::ReadyToNull
            || (ret.is_err() && transition == gst::StateChange::NullToReady)
        {
            self.stop();
        }
        ret
    }
}

impl BinImpl for AbrSink {
    fn handle_message(&self, msg: gst::Message) {
        if let gst::MessageView::Error(e) = msg.view() {
            let mut guard = self.state.lock().unwrap();
            if let Some(state) = guard.as_mut()
                && !state.ended
            {
                self.end_stream(state, StreamEnd::Error(e.error().to_string()));
            }
        }
        self.parent_handle_message(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_debug_shows_no_secret() {
        let s = Settings {
            auth_token: Some("tok-s3cret".into()),
            database: "postgres://app:pg-s3cret@db/live".into(),
            ..Settings::default()
        };
        let text = format!("{s:?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains(r#"auth_token: Some("***")"#), "{text}");
        assert!(text.contains("postgres://app:***@db/live"), "{text}");
    }
}
