//! rtav1depay: reassembles AV1 temporal units from RTP packets (AV1 RTP
//! payload format). A unit that lost a packet is dropped whole; after a loss
//! the depayloader waits for the next key frame and asks upstream for one.

use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_rtp::prelude::*;
use gst_rtp::subclass::prelude::*;

use crate::obu::{self, Obu};
use crate::rtp::{Completed, Depacketizer};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "rtav1depay",
        gst::DebugColorFlags::empty(),
        Some("AV1 RTP depayloader"),
    )
});

const DEFAULT_WAIT_FOR_KEYFRAME: bool = true;
const DEFAULT_REQUEST_KEYFRAME: bool = true;
/// A lost request (or an encoder that ignored it) is repeated after this long.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
struct Settings {
    wait_for_keyframe: bool,
    request_keyframe: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            wait_for_keyframe: DEFAULT_WAIT_FOR_KEYFRAME,
            request_keyframe: DEFAULT_REQUEST_KEYFRAME,
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Stats {
    temporal_units: u64,
    dropped_units: u64,
    bad_packets: u64,
    skipped_until_keyframe: u64,
    keyframe_requests: u64,
}

struct State {
    depacketizer: Depacketizer,
    sequence: Option<obu::SequenceInfo>,
    waiting_for_keyframe: bool,
    /// The next pushed unit follows dropped data.
    discont: bool,
    /// When a key frame was last requested (requests repeat at most every
    /// [`KEYFRAME_REQUEST_INTERVAL`] until one arrives).
    last_request: Option<Instant>,
    /// The sequence number of the last packet, to see gaps the buffer flags
    /// do not show (whole temporal units lost without a jitter buffer).
    last_seq: Option<u16>,
}

impl State {
    fn new() -> Self {
        Self {
            depacketizer: Depacketizer::new(),
            sequence: None,
            waiting_for_keyframe: true,
            discont: true,
            last_request: None,
            last_seq: None,
        }
    }
}

pub struct RtAv1Depay {
    settings: Mutex<Settings>,
    state: Mutex<State>,
    stats: Mutex<Stats>,
}

impl Default for RtAv1Depay {
    fn default() -> Self {
        Self {
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(State::new()),
            stats: Mutex::new(Stats::default()),
        }
    }
}

impl RtAv1Depay {
    fn stats_structure(&self) -> gst::Structure {
        let s = self.stats.lock().unwrap().clone();
        gst::Structure::builder("rtav1depay-stats")
            .field("temporal-units", s.temporal_units)
            .field("dropped-units", s.dropped_units)
            .field("bad-packets", s.bad_packets)
            .field("skipped-until-keyframe", s.skipped_until_keyframe)
            .field("keyframe-requests", s.keyframe_requests)
            .build()
    }

    fn request_keyframe(&self, state: &mut State, settings: &Settings) -> bool {
        if !settings.request_keyframe
            || state
                .last_request
                .is_some_and(|t| t.elapsed() < KEYFRAME_REQUEST_INTERVAL)
        {
            return false;
        }
        state.last_request = Some(Instant::now());
        self.stats.lock().unwrap().keyframe_requests += 1;
        true
    }

    fn send_keyframe_request(&self) {
        gst::debug!(CAT, imp = self, "requesting a key frame upstream");
        let event = gst_video::UpstreamForceKeyUnitEvent::builder()
            .all_headers(true)
            .build();
        let _ = self.obj().sink_pad().push_event(event);
    }
}

#[glib::object_subclass]
impl ObjectSubclass for RtAv1Depay {
    const NAME: &'static str = "GstRtAv1Depay";
    type Type = super::RtAv1Depay;
    type ParentType = gst_rtp::RTPBaseDepayload;
}

impl ObjectImpl for RtAv1Depay {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecBoolean::builder("wait-for-keyframe")
                    .nick("Wait for key frame")
                    .blurb("After a loss (and at start), drop temporal units until a key frame arrives instead of passing undecodable data")
                    .default_value(DEFAULT_WAIT_FOR_KEYFRAME)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("request-keyframe")
                    .nick("Request key frame")
                    .blurb("Send a force-key-unit event upstream (RTCP PLI through rtpbin/webrtcbin) when a unit is lost")
                    .default_value(DEFAULT_REQUEST_KEYFRAME)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("av1-stats")
                    .nick("AV1 statistics")
                    .blurb("Temporal units pushed, units dropped after loss, malformed packets, units skipped until a key frame, key frame requests")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = self.settings.lock().unwrap();
        match pspec.name() {
            "wait-for-keyframe" => {
                settings.wait_for_keyframe = value.get().expect("type checked upstream")
            }
            "request-keyframe" => {
                settings.request_keyframe = value.get().expect("type checked upstream")
            }
            other => unreachable!("unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = self.settings.lock().unwrap();
        match pspec.name() {
            "wait-for-keyframe" => settings.wait_for_keyframe.to_value(),
            "request-keyframe" => settings.request_keyframe.to_value(),
            "av1-stats" => self.stats_structure().to_value(),
            other => unreachable!("unknown property {other}"),
        }
    }
}

impl GstObjectImpl for RtAv1Depay {}

impl ElementImpl for RtAv1Depay {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "AV1 RTP depayloader",
                "Codec/Depayloader/Network/RTP",
                "Reassembles AV1 temporal units from RTP packets (AOM AV1 RTP payload format); drops units that lost packets and waits for the next key frame",
                "rtai contributors",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let sink_caps = gst::Caps::builder("application/x-rtp")
                .field("media", "video")
                .field("clock-rate", 90_000i32)
                .field("encoding-name", "AV1")
                .build();
            let src_caps = gst::Caps::builder("video/x-av1")
                .field("stream-format", "obu-stream")
                .field("alignment", "tu")
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

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::ReadyToPaused {
            *self.state.lock().unwrap() = State::new();
            *self.stats.lock().unwrap() = Stats::default();
        }
        self.parent_change_state(transition)
    }
}

impl RTPBaseDepayloadImpl for RtAv1Depay {
    fn set_caps(&self, _caps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let caps = gst::Caps::builder("video/x-av1")
            .field("stream-format", "obu-stream")
            .field("alignment", "tu")
            .build();
        if self
            .obj()
            .src_pad()
            .push_event(gst::event::Caps::new(&caps))
        {
            Ok(())
        } else {
            Err(gst::loggable_error!(
                CAT,
                "downstream did not accept {caps}"
            ))
        }
    }

    fn handle_event(&self, event: gst::Event) -> bool {
        if let gst::EventView::FlushStop(_) = event.view() {
            let mut state = self.state.lock().unwrap();
            state.depacketizer.reset();
            state.waiting_for_keyframe = true;
            state.discont = true;
            state.last_seq = None;
        }
        self.parent_handle_event(event)
    }

    fn packet_lost(&self, event: &gst::EventRef) -> bool {
        gst::debug!(CAT, imp = self, "packet lost: {event:?}");
        self.state.lock().unwrap().depacketizer.mark_lost();
        true
    }

    fn process_rtp_packet(
        &self,
        rtp: &gst_rtp::RTPBuffer<gst_rtp::rtp_buffer::Readable>,
    ) -> Option<gst::Buffer> {
        let settings = self.settings.lock().unwrap().clone();
        let Ok(payload) = rtp.payload() else {
            return None;
        };
        let seq = rtp.seq();
        let mut state = self.state.lock().unwrap();
        // A gap in the sequence numbers is a loss even when the unit before it
        // completed on its marker: whole units may be missing.
        let gap = state
            .last_seq
            .is_some_and(|last| seq != last.wrapping_add(1));
        if gap {
            gst::debug!(
                CAT,
                imp = self,
                "sequence gap: {} then {seq}",
                state.last_seq.unwrap_or_default()
            );
        }
        state.last_seq = Some(seq);
        let discont = gap || rtp.buffer().flags().contains(gst::BufferFlags::DISCONT);
        let (completed, error) =
            state
                .depacketizer
                .push(payload, rtp.timestamp(), rtp.is_marker(), discont);
        let mut request = false;
        if let Some(err) = &error {
            self.stats.lock().unwrap().bad_packets += 1;
            gst::warning!(
                CAT,
                imp = self,
                "bad AV1 RTP packet (seq {}): {err}",
                rtp.seq()
            );
        }
        let mut output = None;
        for c in completed {
            match c {
                Completed::Dropped => {
                    self.stats.lock().unwrap().dropped_units += 1;
                    state.discont = true;
                    if settings.wait_for_keyframe {
                        state.waiting_for_keyframe = true;
                    }
                    request |= self.request_keyframe(&mut state, &settings);
                }
                Completed::Tu { data, new_sequence } => {
                    let obus = Obu::parse_all(&data).unwrap_or_default();
                    let info = obu::scan_tu(&obus, state.sequence);
                    if info.sequence_header.is_some() {
                        state.sequence = info.sequence_header;
                    }
                    let key = info.key_frame && state.sequence.is_some();
                    if key {
                        state.waiting_for_keyframe = false;
                        state.last_request = None;
                    }
                    if settings.wait_for_keyframe && state.waiting_for_keyframe {
                        gst::debug!(
                            CAT,
                            imp = self,
                            "dropping a temporal unit until the next key frame (N={new_sequence})"
                        );
                        self.stats.lock().unwrap().skipped_until_keyframe += 1;
                        request |= self.request_keyframe(&mut state, &settings);
                        continue;
                    }
                    let mut bytes = Vec::with_capacity(data.len() + 2);
                    bytes.extend_from_slice(&obu::TEMPORAL_DELIMITER);
                    bytes.extend_from_slice(&data);
                    let mut buffer = gst::Buffer::from_mut_slice(bytes);
                    {
                        let b = buffer.get_mut().unwrap();
                        if !key {
                            b.set_flags(gst::BufferFlags::DELTA_UNIT);
                        }
                        if std::mem::take(&mut state.discont) {
                            b.set_flags(gst::BufferFlags::DISCONT);
                        }
                    }
                    self.stats.lock().unwrap().temporal_units += 1;
                    output = Some(buffer);
                }
            }
        }
        drop(state);
        if request {
            self.send_keyframe_request();
        }
        output
    }
}
