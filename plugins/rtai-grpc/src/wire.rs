//! The wire format (proto/rtai_stream.proto) and its conversion to and from
//! GStreamer objects. Conversions from the wire never panic: anything
//! malformed is a [`WireError`] naming what was wrong.

use std::str::FromStr;

use gst_video::VideoRegionOfInterestMeta;
use rtai_core::SegmentIdMeta;

#[allow(clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("rtai.stream.v1");
}

pub use proto::event::Kind as EventKind;

/// Hello.protocol_version of this implementation.
pub const PROTOCOL_VERSION: u32 = 1;
/// GST_CLOCK_TIME_NONE (and "no value" for offsets) on the wire.
pub const NONE: u64 = u64::MAX;
/// Longest caps, structure or tag-list string accepted from a peer (bytes).
pub const MAX_STRING_BYTES: usize = 1024 * 1024;
/// Deepest bracket nesting accepted in such a string. GStreamer's value parser
/// recurses once per level on the calling thread (a tokio worker with a 2 MiB
/// stack): depth 10,000 crashes the process. Real caps and structures nest a few
/// levels; quoted text counts too, so 64 unbalanced brackets in a string is refused.
pub const MAX_NESTING: usize = 64;
/// Longest name (stream id, meta name, ROI type) accepted from a peer (bytes).
pub const MAX_NAME_BYTES: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WireError {}

fn err<T>(msg: impl Into<String>) -> Result<T, WireError> {
    Err(WireError(msg.into()))
}

fn time_to_wire(t: Option<gst::ClockTime>) -> u64 {
    t.map_or(NONE, |t| t.nseconds())
}

fn time_from_wire(v: u64) -> Option<gst::ClockTime> {
    if v == NONE {
        None
    } else {
        Some(gst::ClockTime::from_nseconds(v))
    }
}

/// The name under which the custom meta `meta` was registered, if it is one.
fn custom_meta_name(meta: &gst::MetaRef<'_, gst::Meta>) -> Option<String> {
    // SAFETY: a valid GstMeta of a live buffer; its info and GType outlive it.
    unsafe {
        let info = (*meta.as_ptr()).info;
        if gst::ffi::gst_meta_info_is_custom(info) == glib::ffi::GFALSE {
            return None;
        }
        let name = gst::glib::gobject_ffi::g_type_name((*info).type_);
        if name.is_null() {
            return None;
        }
        Some(
            std::ffi::CStr::from_ptr(name)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

use gst::glib;

/// Checks a string from the network before any GStreamer parser sees it: at
/// most [`MAX_STRING_BYTES`] long and at most [`MAX_NESTING`] brackets deep
/// (`(`, `[`, `{`, `<` against their closers, anywhere in the string).
pub fn check_gst_string(s: &str, what: &str) -> Result<(), WireError> {
    if s.len() > MAX_STRING_BYTES {
        return err(format!(
            "{what} is {} bytes long; at most {MAX_STRING_BYTES} are accepted",
            s.len()
        ));
    }
    let mut depth = 0usize;
    for b in s.bytes() {
        match b {
            b'(' | b'[' | b'{' | b'<' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return err(format!(
                        "{what} nests brackets more than {MAX_NESTING} deep"
                    ));
                }
            }
            b')' | b']' | b'}' | b'>' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn check_name(s: &str, what: &str) -> Result<(), WireError> {
    if s.len() > MAX_NAME_BYTES {
        return err(format!(
            "{what} is {} bytes long; at most {MAX_NAME_BYTES} are accepted",
            s.len()
        ));
    }
    Ok(())
}

/// A structure from the network: bounded, then parsed.
fn structure_from_wire(s: &str, what: &str) -> Result<gst::Structure, WireError> {
    check_gst_string(s, what)?;
    gst::Structure::from_str(s).map_err(|_| {
        let shown: String = s.chars().take(200).collect();
        WireError(format!("{what} is not a GstStructure: {shown:?}"))
    })
}

pub fn buffer_to_wire(buffer: &gst::BufferRef) -> Result<proto::Buffer, WireError> {
    let map = buffer
        .map_readable()
        .map_err(|_| WireError("buffer memory cannot be mapped for reading".into()))?;
    let mut metas = Vec::new();
    if let Some(id) = SegmentIdMeta::get(buffer) {
        metas.push(proto::Meta {
            kind: Some(proto::meta::Kind::SegmentId(id)),
        });
    }
    for roi in buffer.iter_meta::<VideoRegionOfInterestMeta>() {
        let (x, y, w, h) = roi.rect();
        metas.push(proto::Meta {
            kind: Some(proto::meta::Kind::Roi(proto::Roi {
                roi_type: roi.roi_type().to_string(),
                x,
                y,
                w,
                h,
                id: roi.id(),
                parent_id: roi.parent_id(),
                params: roi.params().map(|p| p.to_string()).collect(),
            })),
        });
    }
    for meta in buffer.iter_meta::<gst::Meta>() {
        let Some(name) = custom_meta_name(&meta) else {
            continue;
        };
        if name == rtai_core::protocol::SEGMENT_META_NAME {
            continue;
        }
        if let Ok(custom) = gst::meta::CustomMeta::from_buffer(buffer, &name) {
            metas.push(proto::Meta {
                kind: Some(proto::meta::Kind::Custom(proto::CustomMeta {
                    name,
                    structure: custom.structure().to_string(),
                })),
            });
        }
    }
    Ok(proto::Buffer {
        data: map.as_slice().to_vec(),
        pts: time_to_wire(buffer.pts()),
        dts: time_to_wire(buffer.dts()),
        duration: time_to_wire(buffer.duration()),
        offset: buffer.offset(),
        offset_end: buffer.offset_end(),
        flags: buffer.flags().bits(),
        metas,
    })
}

pub fn buffer_from_wire(wire: proto::Buffer) -> Result<gst::Buffer, WireError> {
    let mut buffer = gst::Buffer::from_mut_slice(wire.data);
    let b = buffer.get_mut().expect("a new buffer is writable");
    b.set_pts(time_from_wire(wire.pts));
    b.set_dts(time_from_wire(wire.dts));
    b.set_duration(time_from_wire(wire.duration));
    b.set_offset(wire.offset);
    b.set_offset_end(wire.offset_end);
    // Unknown bits (a newer sender) are dropped rather than trusted.
    b.set_flags(gst::BufferFlags::from_bits_truncate(wire.flags));
    for meta in wire.metas {
        match meta.kind {
            Some(proto::meta::Kind::SegmentId(id)) => SegmentIdMeta::set(b, id),
            Some(proto::meta::Kind::Roi(roi)) => {
                if roi.roi_type.is_empty() {
                    return err("ROI meta without a roi_type");
                }
                check_name(&roi.roi_type, "ROI type")?;
                let params = roi
                    .params
                    .iter()
                    .map(|p| structure_from_wire(p, "ROI param"))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut m =
                    VideoRegionOfInterestMeta::add(b, &roi.roi_type, (roi.x, roi.y, roi.w, roi.h));
                m.set_id(roi.id);
                m.set_parent_id(roi.parent_id);
                for p in params {
                    m.add_param(p);
                }
            }
            Some(proto::meta::Kind::Custom(custom)) => {
                check_name(&custom.name, "custom meta name")?;
                let s = structure_from_wire(&custom.structure, "custom meta structure")?;
                // Only metas this process registered can be attached; others are skipped.
                if let Ok(mut m) = gst::meta::CustomMeta::add(b, &custom.name) {
                    for (field, value) in s.iter() {
                        m.mut_structure().set_value(field, value.clone());
                    }
                }
            }
            None => return err("meta without a kind"),
        }
    }
    Ok(buffer)
}

pub fn segment_to_wire(segment: &gst::Segment) -> proto::Segment {
    let raw = |v: gst::GenericFormattedValue| v.value() as u64;
    proto::Segment {
        format: segment.format().into_glib(),
        rate: segment.rate(),
        applied_rate: segment.applied_rate(),
        base: raw(segment.base()),
        offset: raw(segment.offset()),
        start: raw(segment.start()),
        stop: raw(segment.stop()),
        time: raw(segment.time()),
        position: raw(segment.position()),
        duration: raw(segment.duration()),
        flags: segment.flags().bits(),
    }
}

use gst::glib::translate::{FromGlib, IntoGlib};

pub fn segment_from_wire(wire: &proto::Segment) -> Result<gst::Segment, WireError> {
    let format = match wire.format {
        f if f == gst::Format::Time.into_glib() => gst::Format::Time,
        f if f == gst::Format::Bytes.into_glib() => gst::Format::Bytes,
        f if f == gst::Format::Default.into_glib() => gst::Format::Default,
        f if f == gst::Format::Buffers.into_glib() => gst::Format::Buffers,
        f if f == gst::Format::Percent.into_glib() => gst::Format::Percent,
        f => return err(format!("segment format {f} is not one GStreamer defines")),
    };
    if !wire.rate.is_finite()
        || wire.rate == 0.0
        || !wire.applied_rate.is_finite()
        || wire.applied_rate == 0.0
    {
        return err(format!(
            "segment rate {} / applied rate {} is invalid",
            wire.rate, wire.applied_rate
        ));
    }
    if wire.stop != NONE && wire.start != NONE && wire.stop < wire.start {
        return err(format!(
            "segment stop {} before start {}",
            wire.stop, wire.start
        ));
    }
    let mut segment = gst::Segment::new();
    segment.set_format(format);
    let value = |v: u64| gst::GenericFormattedValue::new(format, v as i64);
    segment.set_rate(wire.rate);
    segment.set_applied_rate(wire.applied_rate);
    segment.set_base(value(wire.base));
    segment.set_offset(value(wire.offset));
    segment.set_start(value(wire.start));
    segment.set_stop(value(wire.stop));
    segment.set_time(value(wire.time));
    segment.set_position(value(wire.position));
    segment.set_duration(value(wire.duration));
    // SAFETY: from_glib on a flags type only keeps the bits; unknown bits are masked below.
    let flags =
        unsafe { gst::SegmentFlags::from_glib(wire.flags & gst::SegmentFlags::all().bits()) };
    segment.set_flags(flags);
    Ok(segment)
}

pub fn caps_from_wire(caps: &str) -> Result<gst::Caps, WireError> {
    check_gst_string(caps, "caps")?;
    let shown = || caps.chars().take(200).collect::<String>();
    let parsed = gst::Caps::from_str(caps)
        .map_err(|_| WireError(format!("caps do not parse: {:?}", shown())))?;
    if !parsed.is_fixed() {
        return err(format!("caps are not fixed: {}", shown()));
    }
    Ok(parsed)
}

/// The wire form of an event the bridge carries; `None` for events it does not
/// (caps and segment have their own messages; latency, reconfigure stay local).
pub fn event_to_wire(event: &gst::EventRef) -> Option<proto::Event> {
    use gst::EventView;
    let mut wire = proto::Event {
        timestamp: NONE,
        duration: NONE,
        ..Default::default()
    };
    let structure = || event.structure().map(|s| s.to_string()).unwrap_or_default();
    match event.view() {
        EventView::Eos(_) => wire.kind = EventKind::Eos as i32,
        EventView::StreamStart(s) => {
            wire.kind = EventKind::StreamStart as i32;
            wire.stream_id = s.stream_id().to_string();
        }
        EventView::Tag(t) => {
            wire.kind = EventKind::Tag as i32;
            wire.structure = t.tag().to_string();
        }
        EventView::Gap(g) => {
            let (ts, dur) = g.get();
            wire.kind = EventKind::Gap as i32;
            wire.timestamp = ts.nseconds();
            wire.duration = time_to_wire(dur);
        }
        EventView::CustomDownstream(_) => {
            wire.kind = EventKind::CustomDownstream as i32;
            wire.structure = structure();
        }
        EventView::CustomDownstreamOob(_) => {
            wire.kind = EventKind::CustomDownstreamOob as i32;
            wire.structure = structure();
        }
        EventView::CustomUpstream(_) => {
            wire.kind = EventKind::CustomUpstream as i32;
            wire.structure = structure();
        }
        EventView::FlushStart(_) => wire.kind = EventKind::FlushStart as i32,
        EventView::FlushStop(f) => {
            wire.kind = EventKind::FlushStop as i32;
            wire.reset_time = f.resets_time();
        }
        EventView::Qos(q) => {
            let (_, proportion, diff, timestamp) = q.get();
            wire.kind = EventKind::Qos as i32;
            wire.proportion = proportion;
            wire.diff = diff;
            wire.timestamp = time_to_wire(timestamp);
        }
        _ => return None,
    }
    Some(wire)
}

fn tag_list_from_str(s: &str) -> Option<gst::TagList> {
    use gst::glib::translate::ToGlibPtr;
    // Checked here: GStreamer asserts (CRITICAL) on other input.
    if !s.starts_with("taglist") {
        return None;
    }
    // SAFETY: a NUL-terminated string in; a new (full) reference or NULL out.
    unsafe {
        let list = gst::ffi::gst_tag_list_new_from_string(s.to_glib_none().0);
        if list.is_null() {
            None
        } else {
            Some(gst::TagList::from_glib_full(list))
        }
    }
}

pub fn event_from_wire(wire: &proto::Event) -> Result<gst::Event, WireError> {
    let structure = || structure_from_wire(&wire.structure, "event structure");
    let kind = EventKind::try_from(wire.kind)
        .map_err(|_| WireError(format!("unknown event kind {}", wire.kind)))?;
    Ok(match kind {
        EventKind::Eos => gst::event::Eos::new(),
        EventKind::StreamStart => {
            if wire.stream_id.is_empty() {
                return err("stream-start without a stream id");
            }
            check_name(&wire.stream_id, "stream id")?;
            gst::event::StreamStart::new(&wire.stream_id)
        }
        EventKind::Tag => {
            check_gst_string(&wire.structure, "tag list")?;
            let tags = tag_list_from_str(&wire.structure).ok_or_else(|| {
                let shown: String = wire.structure.chars().take(200).collect();
                WireError(format!("tag list does not parse: {shown:?}"))
            })?;
            gst::event::Tag::new(tags)
        }
        EventKind::Gap => {
            let Some(ts) = time_from_wire(wire.timestamp) else {
                return err("GAP without a timestamp");
            };
            gst::event::Gap::builder(ts)
                .duration(time_from_wire(wire.duration))
                .build()
        }
        EventKind::CustomDownstream => gst::event::CustomDownstream::new(structure()?),
        EventKind::CustomDownstreamOob => gst::event::CustomDownstreamOob::new(structure()?),
        EventKind::CustomUpstream => gst::event::CustomUpstream::new(structure()?),
        EventKind::FlushStart => gst::event::FlushStart::new(),
        EventKind::FlushStop => gst::event::FlushStop::new(wire.reset_time),
        EventKind::Qos => {
            if !wire.proportion.is_finite() || wire.proportion < 0.0 {
                return err(format!("QoS proportion {} is invalid", wire.proportion));
            }
            gst::event::Qos::new(
                gst::QOSType::Underflow,
                wire.proportion,
                wire.diff,
                time_from_wire(wire.timestamp),
            )
        }
        EventKind::Unknown => return err("event of kind UNKNOWN"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init() {
        gst::init().unwrap();
        SegmentIdMeta::register();
    }

    #[test]
    fn buffers_round_trip_with_metas() {
        init();
        let mut buffer = gst::Buffer::from_slice(vec![1u8, 2, 3, 4]);
        {
            let b = buffer.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_mseconds(40));
            b.set_duration(gst::ClockTime::from_mseconds(20));
            b.set_offset(7);
            b.set_flags(gst::BufferFlags::DISCONT | gst::BufferFlags::DELTA_UNIT);
            SegmentIdMeta::set(b, 42);
            let mut roi = VideoRegionOfInterestMeta::add(b, "person", (1, 2, 30, 40));
            roi.set_id(5);
            roi.add_param(
                gst::Structure::builder("detection")
                    .field("confidence", 0.9f64)
                    .field("label-id", 3u32)
                    .build(),
            );
        }
        let back = buffer_from_wire(buffer_to_wire(&buffer).unwrap()).unwrap();
        assert_eq!(back.map_readable().unwrap().as_slice(), &[1, 2, 3, 4]);
        assert_eq!(
            (back.pts(), back.dts(), back.duration()),
            (buffer.pts(), None, buffer.duration())
        );
        assert_eq!(
            (back.offset(), back.offset_end(), back.flags()),
            (7, buffer.offset_end(), buffer.flags())
        );
        assert_eq!(SegmentIdMeta::get(&back), Some(42));
        let roi = back.meta::<VideoRegionOfInterestMeta>().unwrap();
        assert_eq!(
            (roi.roi_type(), roi.rect(), roi.id()),
            ("person", (1, 2, 30, 40), 5)
        );
        let param = roi.params().next().unwrap();
        assert_eq!(param.get::<f64>("confidence").unwrap(), 0.9);
    }

    #[test]
    fn other_custom_metas_travel_as_structures() {
        init();
        gst::meta::CustomMeta::register("RtaiTestTranscriptMeta", &[]);
        let mut buffer = gst::Buffer::with_size(4).unwrap();
        {
            let mut meta =
                gst::meta::CustomMeta::add(buffer.get_mut().unwrap(), "RtaiTestTranscriptMeta")
                    .unwrap();
            meta.mut_structure().set("text", "turn the lights on");
            meta.mut_structure().set("confidence", 0.75f64);
        }
        let back = buffer_from_wire(buffer_to_wire(&buffer).unwrap()).unwrap();
        let meta = gst::meta::CustomMeta::from_buffer(&back, "RtaiTestTranscriptMeta")
            .expect("the custom meta arrived");
        assert_eq!(
            meta.structure().get::<&str>("text").unwrap(),
            "turn the lights on"
        );
        assert_eq!(meta.structure().get::<f64>("confidence").unwrap(), 0.75);
    }

    #[test]
    fn segments_and_events_round_trip() {
        init();
        let mut segment = gst::FormattedSegment::<gst::ClockTime>::new();
        segment.set_start(gst::ClockTime::from_seconds(1));
        segment.set_base(gst::ClockTime::from_seconds(3));
        segment.set_rate(2.0);
        let back = segment_from_wire(&segment_to_wire(segment.upcast_ref())).unwrap();
        assert_eq!(&back, segment.upcast_ref());

        let events = [
            gst::event::Eos::new(),
            gst::event::StreamStart::new("abc"),
            gst::event::Gap::builder(gst::ClockTime::from_mseconds(5))
                .duration(gst::ClockTime::from_mseconds(10))
                .build(),
            gst::event::CustomDownstream::new(
                gst::Structure::builder("rtai-segment-commit")
                    .field("segment-id", 3u64)
                    .build(),
            ),
            gst::event::CustomDownstreamOob::new(
                gst::Structure::builder("rtai-segment-cancel")
                    .field("segment-id", 3u64)
                    .build(),
            ),
            gst::event::CustomUpstream::new(gst::Structure::builder("force-key-unit").build()),
            gst::event::FlushStop::new(true),
        ];
        for ev in events {
            let back = event_from_wire(&event_to_wire(&ev).unwrap()).unwrap();
            assert_eq!(back.type_(), ev.type_());
            assert_eq!(
                back.structure().map(|s| s.to_string()),
                ev.structure().map(|s| s.to_string())
            );
        }
    }

    /// Malformed wire input, one row per way to be wrong: each is an error, never a panic.
    #[test]
    fn malformed_input_is_an_error() {
        init();
        let ok_segment =
            segment_to_wire(gst::FormattedSegment::<gst::ClockTime>::new().upcast_ref());
        let bad_segments = [
            proto::Segment {
                format: 99,
                ..ok_segment
            },
            proto::Segment {
                rate: 0.0,
                ..ok_segment
            },
            proto::Segment {
                rate: f64::NAN,
                ..ok_segment
            },
            proto::Segment {
                applied_rate: f64::INFINITY,
                ..ok_segment
            },
            proto::Segment {
                start: 10,
                stop: 5,
                ..ok_segment
            },
        ];
        for s in &bad_segments {
            assert!(segment_from_wire(s).is_err(), "{s:?}");
        }
        for caps in [
            "",
            "not caps((",
            "video/x-raw,width=[1,10]",
            "audio/x-raw,rate=(int){1,2}",
        ] {
            assert!(caps_from_wire(caps).is_err(), "{caps:?}");
        }
        let event = |kind: EventKind, structure: &str| proto::Event {
            kind: kind as i32,
            structure: structure.into(),
            timestamp: NONE,
            duration: NONE,
            ..Default::default()
        };
        let bad_events = [
            proto::Event {
                kind: 1234,
                ..Default::default()
            },
            event(EventKind::Unknown, ""),
            event(EventKind::CustomDownstream, ""),
            event(EventKind::CustomDownstream, "no spaces allowed, here="),
            event(EventKind::CustomUpstream, "(("),
            event(EventKind::StreamStart, ""),
            event(EventKind::Gap, ""),
            event(EventKind::Tag, "not a taglist"),
            proto::Event {
                kind: EventKind::Qos as i32,
                proportion: -1.0,
                ..Default::default()
            },
        ];
        for e in &bad_events {
            assert!(event_from_wire(e).is_err(), "{e:?}");
        }
        let roi = |roi_type: &str, param: &str| proto::Buffer {
            metas: vec![proto::Meta {
                kind: Some(proto::meta::Kind::Roi(proto::Roi {
                    roi_type: roi_type.into(),
                    params: vec![param.into()],
                    ..Default::default()
                })),
            }],
            ..Default::default()
        };
        assert!(
            buffer_from_wire(roi("", "p")).is_err(),
            "ROI without a type"
        );
        assert!(
            buffer_from_wire(roi("car", "((")).is_err(),
            "ROI param that does not parse"
        );
        assert!(
            buffer_from_wire(proto::Buffer {
                metas: vec![proto::Meta { kind: None }],
                ..Default::default()
            })
            .is_err()
        );
    }

    /// Random bytes decoded as wire messages and converted: errors, never panics.
    #[test]
    fn random_bytes_never_panic() {
        use prost::Message;
        init();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..2000usize {
            let bytes: Vec<u8> = (0..len % 300)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            if let Ok(msg) = proto::Downstream::decode(bytes.as_slice()) {
                match msg.body {
                    Some(proto::downstream::Body::Buffer(b)) => drop(buffer_from_wire(b)),
                    Some(proto::downstream::Body::Segment(s)) => drop(segment_from_wire(&s)),
                    Some(proto::downstream::Body::Caps(c)) => drop(caps_from_wire(&c)),
                    Some(proto::downstream::Body::Event(e)) => drop(event_from_wire(&e)),
                    _ => {}
                }
            }
        }
    }

    /// The bound itself, one row per shape.
    #[test]
    fn nesting_and_length_bounds() {
        let deep = |o: &str, c: &str, n: usize| format!("s, a={}1{}", o.repeat(n), c.repeat(n));
        assert!(check_gst_string(&deep("{", "}", MAX_NESTING), "x").is_ok());
        assert!(check_gst_string(&deep("{", "}", MAX_NESTING + 1), "x").is_err());
        // Balanced siblings do not add up.
        let wide = format!("s, a={}", "{1}, ".repeat(10_000));
        assert!(check_gst_string(&wide, "x").is_ok());
        // Stray closers cannot buy depth.
        let sneaky = format!("s, a={}{}", ")".repeat(1000), "(".repeat(MAX_NESTING + 1));
        assert!(check_gst_string(&sneaky, "x").is_err());
        assert!(check_gst_string(&"a".repeat(MAX_STRING_BYTES + 1), "x").is_err());
        let e = check_gst_string(&deep("<", ">", 100_000), "caps").unwrap_err();
        assert!(e.0.contains("caps") && e.0.contains("64"), "{e}");
    }

    /// Structure-aware fuzzing of everything decoded from a peer: nested brackets of
    /// every kind up to 100,000 deep, strings over the length bound, valid and
    /// mangled caps/structures/tag lists, random protobuf frames. Decoding never
    /// panics (or crashes), and what is accepted respects the bounds.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;
        use prost::Message;

        /// Bracket soup: nested openers/closers of mixed kinds around GStreamer syntax.
        fn nested() -> impl Strategy<Value = String> {
            (
                prop::sample::select(vec!["(", "[", "{", "<", "(structure)[", "(GstCaps)["]),
                prop::sample::select(vec![")", "]", "}", ">"]),
                prop_oneof![0usize..80, 80usize..100_000],
                any::<bool>(),
                prop::sample::select(vec![
                    "s, a=",
                    "video/x-raw, width=",
                    "taglist, title=",
                    "rtai-segment-commit, segment-id=(guint64)",
                    "",
                ]),
            )
                .prop_map(|(open, close, depth, balanced, head)| {
                    let tail = if balanced {
                        close.repeat(depth)
                    } else {
                        String::new()
                    };
                    format!("{head}{}1{tail}", open.repeat(depth))
                })
        }

        fn gst_text() -> impl Strategy<Value = String> {
            prop_oneof![
                nested(),
                // Over the length bound.
                (0usize..3)
                    .prop_map(|k| format!("s, a=(string){}", "x".repeat(MAX_STRING_BYTES + k))),
                // Plausible GStreamer text with mangling.
                "[a-z/-]{1,12}(, [a-z-]{1,8}=(\\((int|string|double|structure|GstCaps)\\))?[0-9a-z\"{}<>\\[\\],;() ]{0,24}){0,4}",
                any::<String>(),
            ]
        }

        fn event() -> impl Strategy<Value = proto::Event> {
            (
                0i32..12,
                gst_text(),
                any::<u64>(),
                any::<u64>(),
                ".{0,8}",
                any::<f64>(),
                any::<i64>(),
                any::<bool>(),
            )
                .prop_map(
                    |(
                        kind,
                        structure,
                        timestamp,
                        duration,
                        stream_id,
                        proportion,
                        diff,
                        reset_time,
                    )| {
                        proto::Event {
                            kind,
                            structure,
                            timestamp,
                            duration,
                            stream_id,
                            proportion,
                            diff,
                            reset_time,
                            control_id: String::new(),
                        }
                    },
                )
        }

        fn buffer() -> impl Strategy<Value = proto::Buffer> {
            let meta = prop_oneof![
                any::<u64>().prop_map(|id| proto::Meta {
                    kind: Some(proto::meta::Kind::SegmentId(id))
                }),
                (".{0,8}", prop::collection::vec(gst_text(), 0..3)).prop_map(
                    |(roi_type, params)| proto::Meta {
                        kind: Some(proto::meta::Kind::Roi(proto::Roi {
                            roi_type,
                            params,
                            ..Default::default()
                        })),
                    }
                ),
                (".{0,12}", gst_text()).prop_map(|(name, structure)| proto::Meta {
                    kind: Some(proto::meta::Kind::Custom(proto::CustomMeta {
                        name,
                        structure
                    })),
                }),
                Just(proto::Meta { kind: None }),
            ];
            (
                prop::collection::vec(any::<u8>(), 0..64),
                any::<u64>(),
                any::<u64>(),
                any::<u32>(),
                prop::collection::vec(meta, 0..3),
            )
                .prop_map(|(data, pts, duration, flags, metas)| proto::Buffer {
                    data,
                    pts,
                    dts: NONE,
                    duration,
                    offset: NONE,
                    offset_end: NONE,
                    flags,
                    metas,
                })
        }

        /// What a receiver does with a Downstream message.
        fn decode(msg: proto::Downstream) {
            match msg.body {
                Some(proto::downstream::Body::Buffer(b)) => drop(buffer_from_wire(b)),
                Some(proto::downstream::Body::Segment(s)) => drop(segment_from_wire(&s)),
                Some(proto::downstream::Body::Caps(c)) => drop(caps_from_wire(&c)),
                Some(proto::downstream::Body::Event(e)) => drop(event_from_wire(&e)),
                _ => {}
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            #[test]
            fn strings_from_peers_never_crash_and_respect_the_bounds(text in gst_text()) {
                init();
                let within = check_gst_string(&text, "x").is_ok();
                // Accepted only within the bounds; the parse itself may fail.
                if caps_from_wire(&text).is_ok() {
                    prop_assert!(within);
                }
                let ev = proto::Event { kind: EventKind::CustomDownstream as i32, structure: text.clone(), ..Default::default() };
                if event_from_wire(&ev).is_ok() {
                    prop_assert!(within);
                }
                let tag = proto::Event { kind: EventKind::Tag as i32, structure: text.clone(), ..Default::default() };
                if event_from_wire(&tag).is_ok() {
                    prop_assert!(within);
                }
                if !within {
                    let bracketed = text.contains(['(', '[', '{', '<']);
                    prop_assert!(text.len() > MAX_STRING_BYTES || bracketed, "refused without a reason");
                }
            }

            #[test]
            fn structured_messages_never_panic(ev in event(), buf in buffer()) {
                init();
                let _ = event_from_wire(&ev);
                if let Ok(b) = buffer_from_wire(buf.clone()) {
                    prop_assert_eq!(b.size(), buf.data.len());
                }
            }

            /// Valid messages, encoded, then cut and flipped: decoding and converting never panics.
            #[test]
            fn random_protobuf_frames_never_panic(
                ev in event(),
                buf in buffer(),
                caps in gst_text(),
                cut in any::<prop::sample::Index>(),
                flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
            ) {
                init();
                for body in [
                    proto::downstream::Body::Event(ev),
                    proto::downstream::Body::Buffer(buf),
                    proto::downstream::Body::Caps(caps),
                ] {
                    let mut bytes = proto::Downstream { seq: 1, body: Some(body) }.encode_to_vec();
                    for (i, x) in &flips {
                        let i = i.index(bytes.len());
                        bytes[i] ^= x;
                    }
                    bytes.truncate(cut.index(bytes.len() + 1));
                    if let Ok(msg) = proto::Downstream::decode(bytes.as_slice()) {
                        decode(msg);
                    }
                    if let Ok(up) = proto::Upstream::decode(bytes.as_slice())
                        && let Some(proto::upstream::Body::Event(e)) = up.body
                    {
                        let _ = event_from_wire(&e);
                    }
                }
            }
        }
    }
}
