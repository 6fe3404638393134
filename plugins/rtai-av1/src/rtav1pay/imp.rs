//! rtav1pay: payloads AV1 temporal units into RTP packets per the AV1 RTP
//! payload format (aggregation header, OBU fragmentation, no temporal
//! delimiters, the sequence header sent with every key frame).
//!
//! Input may be aligned on temporal units (`alignment=tu`), frames or single
//! OBUs (as rtpav1pay takes). Frames and OBUs are gathered into the temporal
//! unit they belong to, which ends at a buffer with the MARKER flag, at the
//! next temporal delimiter or timestamp, or at EOS. Packets leave room for the
//! RTP header extensions: those added with `add-extension` and those the caps'
//! `extmap-N` fields bring in (auto-created or from `request-extension`).

use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_rtp::prelude::*;
use gst_rtp::subclass::prelude::*;

use crate::obu::{self, Obu};
use crate::rtp;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "rtav1pay",
        gst::DebugColorFlags::empty(),
        Some("AV1 RTP payloader"),
    )
});

#[derive(Debug, Default, Clone)]
struct Stats {
    temporal_units: u64,
    packets: u64,
    key_frames: u64,
    sequence_headers_inserted: u64,
    malformed: u64,
}

/// How the input buffers are cut (the caps' `alignment`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Alignment {
    #[default]
    TemporalUnit,
    Frame,
    Obu,
}

/// A temporal unit being gathered from frame- or OBU-aligned input.
struct Pending {
    data: Vec<u8>,
    pts: Option<gst::ClockTime>,
    dts: Option<gst::ClockTime>,
    duration: Option<gst::ClockTime>,
}

#[derive(Default)]
struct State {
    /// The last sequence header OBU's payload, re-sent with key frames that lack one.
    sequence_header: Option<Vec<u8>>,
    sequence: Option<obu::SequenceInfo>,
    alignment: Alignment,
    pending: Option<Pending>,
}

#[derive(Default)]
pub struct RtAv1Pay {
    state: Mutex<Option<State>>,
    stats: Mutex<Stats>,
    /// Header extensions added with `add-extension` (GStreamer 1.22's base
    /// class does not expose its list), to leave room for them.
    extensions: Mutex<Vec<gst_rtp::RTPHeaderExtension>>,
    /// The src caps last looked at, and the extension sizes their `extmap-N` fields give.
    caps_extensions: Mutex<Option<(gst::Caps, ExtensionSizes)>>,
}

/// `(id, maximum data size)` per RTP header extension.
type ExtensionSizes = Vec<(u32, usize)>;

/// Largest data size of a header extension whose implementation is unknown here:
/// the most a one-byte element can carry (ids 1–14), else a two-byte element's.
fn unknown_extension_size(id: u32) -> usize {
    if id <= 14 { 16 } else { 255 }
}

/// `(id, maximum data size)` of every `extmap-N` in `caps`: the field is the URI, or
/// `(direction, uri, attributes)`; the size is that of the extension GStreamer makes
/// for the URI, else the most the id's element form can carry.
fn caps_extension_sizes(caps: &gst::CapsRef, probe: &gst::Buffer) -> ExtensionSizes {
    let Some(s) = caps.structure(0) else {
        return Vec::new();
    };
    s.iter()
        .filter_map(|(name, value)| {
            let id = name.strip_prefix("extmap-")?.parse::<u32>().ok()?;
            if !(1..=255).contains(&id) {
                return None;
            }
            let uri = value.get::<String>().ok().or_else(|| {
                value
                    .get::<gst::Array>()
                    .ok()
                    .and_then(|a| a.get(1).and_then(|v| v.get::<String>().ok()))
            });
            let size = uri
                .and_then(|u| gst_rtp::RTPHeaderExtension::create_from_uri(&u))
                .map_or_else(|| unknown_extension_size(id), |ext| ext.max_size(probe));
            Some((id, size))
        })
        .collect()
}

impl RtAv1Pay {
    fn stats_structure(&self) -> gst::Structure {
        let s = self.stats.lock().unwrap().clone();
        gst::Structure::builder("rtav1pay-stats")
            .field("temporal-units", s.temporal_units)
            .field("packets", s.packets)
            .field("key-frames", s.key_frames)
            .field("sequence-headers-inserted", s.sequence_headers_inserted)
            .field("malformed", s.malformed)
            .build()
    }
}

#[glib::object_subclass]
impl ObjectSubclass for RtAv1Pay {
    const NAME: &'static str = "GstRtAv1Pay";
    type Type = super::RtAv1Pay;
    type ParentType = gst_rtp::RTPBasePayload;
}

impl ObjectImpl for RtAv1Pay {
    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        // After the base class's own handlers: the same list it writes from.
        obj.connect("add-extension", true, |values| {
            let pay = values[0].get::<super::RtAv1Pay>().ok()?;
            if let Ok(ext) = values[1].get::<gst_rtp::RTPHeaderExtension>() {
                pay.imp().extensions.lock().unwrap().push(ext);
            }
            None
        });
        obj.connect("clear-extensions", true, |values| {
            let pay = values[0].get::<super::RtAv1Pay>().ok()?;
            pay.imp().extensions.lock().unwrap().clear();
            None
        });
    }

    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![glib::ParamSpecBoxed::builder::<gst::Structure>("av1-stats")
                .nick("AV1 statistics")
                .blurb("Temporal units and packets sent, key frames, sequence headers re-inserted, malformed units dropped")
                .read_only()
                .build()]
        });
        PROPERTIES.as_ref()
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "av1-stats" => self.stats_structure().to_value(),
            other => unreachable!("unknown property {other}"),
        }
    }
}

impl GstObjectImpl for RtAv1Pay {}

impl ElementImpl for RtAv1Pay {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "AV1 RTP payloader",
                "Codec/Payloader/Network/RTP",
                "Payloads AV1 temporal units into RTP packets (AOM AV1 RTP payload format: aggregation header, OBU fragmentation)",
                "rtai contributors",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let sink_caps = gst::Caps::builder("video/x-av1")
                .field("stream-format", "obu-stream")
                .field("alignment", gst::List::new(["tu", "frame", "obu"]))
                .build();
            let src_caps = gst::Caps::builder("application/x-rtp")
                .field("media", "video")
                .field("payload", gst::IntRange::new(96, 127))
                .field("clock-rate", 90_000i32)
                .field("encoding-name", "AV1")
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
            *self.state.lock().unwrap() = Some(State::default());
            *self.stats.lock().unwrap() = Stats::default();
        }
        let ret = self.parent_change_state(transition)?;
        if transition == gst::StateChange::PausedToReady {
            *self.state.lock().unwrap() = None;
        }
        Ok(ret)
    }
}

impl RTPBasePayloadImpl for RtAv1Pay {
    fn set_caps(&self, caps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let alignment = match caps
            .structure(0)
            .and_then(|s| s.get::<&str>("alignment").ok())
        {
            Some("frame") => Alignment::Frame,
            Some("obu") => Alignment::Obu,
            _ => Alignment::TemporalUnit,
        };
        gst::debug!(CAT, imp = self, "input aligned on {alignment:?}");
        // Whatever was gathered under the previous caps goes out first.
        self.flush_pending()
            .map_err(|e| gst::loggable_error!(CAT, "cannot send the pending unit: {e:?}"))?;
        self.state
            .lock()
            .unwrap()
            .get_or_insert_with(State::default)
            .alignment = alignment;
        self.obj().set_options("video", true, "AV1", 90_000);
        self.obj()
            .set_outcaps(None)
            .map_err(|e| gst::loggable_error!(CAT, "cannot set output caps: {e}"))
    }

    fn handle_buffer(&self, buffer: gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        let map = buffer.map_readable().map_err(|_| {
            gst::element_imp_error!(
                self,
                gst::ResourceError::Read,
                ["cannot map the input buffer"]
            );
            gst::FlowError::Error
        })?;
        let alignment = self
            .state
            .lock()
            .unwrap()
            .as_ref()
            .map(|s| s.alignment)
            .unwrap_or_default();
        if alignment == Alignment::TemporalUnit {
            return self.push_tu(&map, buffer.pts(), buffer.dts(), buffer.duration());
        }
        // A temporal delimiter or a new timestamp starts the next unit.
        let starts_unit = map
            .first()
            .is_some_and(|&h| (h >> 3) & 0x0f == obu::OBU_TEMPORAL_DELIMITER)
            || self
                .state
                .lock()
                .unwrap()
                .as_ref()
                .and_then(|s| s.pending.as_ref())
                .is_some_and(|p| buffer.pts().is_some() && p.pts != buffer.pts());
        if starts_unit {
            self.flush_pending()?;
        }
        let oversized = {
            let mut state = self.state.lock().unwrap();
            let state = state.get_or_insert_with(State::default);
            let pending = state.pending.get_or_insert_with(|| Pending {
                data: Vec::new(),
                pts: buffer.pts(),
                dts: buffer.dts(),
                duration: buffer.duration(),
            });
            let oversized = pending.data.len() + map.len() > rtp::MAX_TU_SIZE;
            if oversized {
                state.pending = None;
            } else {
                pending.data.extend_from_slice(&map);
            }
            oversized
        };
        {
            if oversized {
                self.stats.lock().unwrap().malformed += 1;
                gst::element_imp_warning!(
                    self,
                    gst::StreamError::Format,
                    ("Dropped an oversized AV1 temporal unit"),
                    [
                        "more than {} bytes without a unit boundary",
                        rtp::MAX_TU_SIZE
                    ]
                );
                return Ok(gst::FlowSuccess::Ok);
            }
        }
        // MARKER: the last buffer of its temporal unit.
        if buffer.flags().contains(gst::BufferFlags::MARKER) {
            self.flush_pending()?;
        }
        Ok(gst::FlowSuccess::Ok)
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        match event.view() {
            gst::EventView::FlushStop(_) => {
                if let Some(state) = self.state.lock().unwrap().as_mut() {
                    let alignment = state.alignment;
                    *state = State {
                        alignment,
                        ..State::default()
                    };
                }
            }
            gst::EventView::Eos(_) => {
                if let Err(e) = self.flush_pending() {
                    gst::debug!(CAT, imp = self, "last unit before EOS not sent: {e:?}");
                }
            }
            _ => {}
        }
        self.parent_sink_event(event)
    }
}

impl RtAv1Pay {
    /// Sends the temporal unit gathered from frame- or OBU-aligned input.
    fn flush_pending(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        let pending = self
            .state
            .lock()
            .unwrap()
            .as_mut()
            .and_then(|s| s.pending.take());
        match pending {
            Some(p) if !p.data.is_empty() => self.push_tu(&p.data, p.pts, p.dts, p.duration),
            _ => Ok(gst::FlowSuccess::Ok),
        }
    }

    /// Bytes the RTP header extensions may take in a packet (RFC 8285: a 4-byte
    /// header, one or two bytes per element, padding to 32 bits). GStreamer 1.22's
    /// base class keeps its list private, so the extensions are counted from two
    /// places: those added with `add-extension`, and every `extmap-N` of the
    /// negotiated src caps (the base class adds an extension for each, itself or
    /// through a `request-extension` handler, without emitting `add-extension`).
    fn extension_overhead(&self) -> u32 {
        let probe = gst::Buffer::new();
        // Maximum data size per extension id.
        let mut sizes = std::collections::BTreeMap::<u32, usize>::new();
        for ext in self.extensions.lock().unwrap().iter() {
            sizes.insert(ext.id(), ext.max_size(&probe));
        }
        if let Some(caps) = self.obj().src_pad().current_caps() {
            let mut cached = self.caps_extensions.lock().unwrap();
            if cached.as_ref().is_none_or(|(c, _)| *c != caps) {
                *cached = Some((caps.clone(), caps_extension_sizes(&caps, &probe)));
            }
            if let Some((_, from_caps)) = cached.as_ref() {
                for (id, size) in from_caps {
                    sizes.entry(*id).or_insert(*size);
                }
            }
        }
        if sizes.is_empty() {
            return 0;
        }
        let two_byte = sizes.iter().any(|(id, size)| *size > 16 || *id > 14);
        let data: usize = sizes.values().sum();
        let elements = data + sizes.len() * if two_byte { 2 } else { 1 };
        (4 + elements.div_ceil(4) * 4) as u32
    }

    fn push_tu(
        &self,
        map: &[u8],
        pts: Option<gst::ClockTime>,
        dts: Option<gst::ClockTime>,
        duration: Option<gst::ClockTime>,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let obus = match Obu::parse_all(map) {
            Ok(obus) => obus,
            Err(err) => {
                self.stats.lock().unwrap().malformed += 1;
                gst::element_imp_warning!(
                    self,
                    gst::StreamError::Format,
                    ("Dropped a malformed AV1 temporal unit"),
                    ["the input is not a valid OBU stream: {err}"]
                );
                return Ok(gst::FlowSuccess::Ok);
            }
        };
        let mut state_guard = self.state.lock().unwrap();
        let state = state_guard.get_or_insert_with(State::default);
        let info = obu::scan_tu(&obus, state.sequence);
        if let Some(seq) = obus.iter().find(|o| o.obu_type == obu::OBU_SEQUENCE_HEADER) {
            state.sequence_header = Some(seq.payload.to_vec());
            state.sequence = info.sequence_header.or(state.sequence);
        }
        let stored_header = state.sequence_header.clone();
        drop(state_guard);

        let mut inserted = false;
        let mut all: Vec<Obu> = Vec::with_capacity(obus.len() + 1);
        if info.key_frame
            && info.sequence_header.is_none()
            && let Some(header) = stored_header.as_deref()
        {
            // A key frame starts a coded video sequence: the receiver needs the header with it.
            all.push(Obu {
                obu_type: obu::OBU_SEQUENCE_HEADER,
                extension: None,
                payload: header,
            });
            inserted = true;
        }
        all.extend(obus);
        let new_sequence = info.key_frame && (info.sequence_header.is_some() || inserted);

        let room = self.obj().mtu().saturating_sub(self.extension_overhead());
        let max_payload = gst_rtp::calc_payload_len(room, 0, 0) as usize;
        let payloads = rtp::packetize(&all, max_payload, new_sequence);
        if payloads.is_empty() {
            return Ok(gst::FlowSuccess::Ok);
        }
        let mut list = gst::BufferList::new_sized(payloads.len());
        {
            let list = list.get_mut().unwrap();
            for payload in &payloads {
                let mut out = self
                    .obj()
                    .allocate_output_buffer(payload.data.len() as u32, 0, 0);
                {
                    let out = out.get_mut().unwrap();
                    out.set_pts(pts);
                    out.set_dts(dts);
                    out.set_duration(duration);
                    let mut rtp = gst_rtp::RTPBuffer::from_buffer_writable(out)
                        .map_err(|_| gst::FlowError::Error)?;
                    rtp.payload_mut()
                        .map_err(|_| gst::FlowError::Error)?
                        .copy_from_slice(&payload.data);
                    rtp.set_marker(payload.marker);
                }
                list.add(out);
            }
        }
        {
            let mut stats = self.stats.lock().unwrap();
            stats.temporal_units += 1;
            stats.packets += payloads.len() as u64;
            stats.key_frames += info.key_frame as u64;
            stats.sequence_headers_inserted += inserted as u64;
        }
        gst::trace!(
            CAT,
            imp = self,
            "temporal unit of {} bytes in {} packets",
            map.len(),
            payloads.len()
        );
        self.obj().push_list(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_extmap_fields_give_extension_sizes() {
        gst::init().unwrap();
        let twcc = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
        let caps = gst::Caps::builder("application/x-rtp")
            .field("extmap-1", twcc)
            // The (direction, uri, attributes) form webrtcbin writes.
            .field("extmap-3", gst::Array::new(["sendonly", twcc, ""]))
            .field("extmap-5", "urn:example:unknown")
            .field("extmap-20", "urn:example:unknown")
            .field("extmap-0", twcc)
            .field("clock-rate", 90000i32)
            .build();
        let sizes = caps_extension_sizes(&caps, &gst::Buffer::new());
        // rtphdrexttwcc writes a 16-bit sequence number.
        assert_eq!(sizes, vec![(1, 2), (3, 2), (5, 16), (20, 255)]);
    }
}
