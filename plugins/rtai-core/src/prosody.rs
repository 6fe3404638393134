//! Prosody of one speech segment, as `prosodymeter` measures it and
//! analyticssink scores it (docs/prosodymeter.md).
//!
//! It travels downstream as the serialized custom event `rtai-prosody`, sent
//! right before the segment's `rtai-segment-end`, and on the bus as the element
//! message `prosody` with the same fields. The parser returns `None` for
//! anything else or anything malformed (a missing field, a non-finite number);
//! it never panics.

use std::sync::LazyLock;

use gst::prelude::*;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "rtai-prosody",
        gst::DebugColorFlags::empty(),
        Some("rtai prosody structures"),
    )
});

/// Name of the downstream custom event (serialized).
pub const EVENT_PROSODY: &str = "rtai-prosody";
/// Name of the element message.
pub const MESSAGE_PROSODY: &str = "prosody";

/// What one speech segment sounded like.
#[derive(Debug, Clone, PartialEq)]
pub struct Prosody {
    pub segment_id: u64,
    /// Span of the analysed audio (ns).
    pub duration: u64,
    /// Mean fundamental frequency of the voiced frames (Hz); 0 when none was voiced.
    pub f0_mean: f64,
    /// 5th and 95th percentiles of F0 (Hz): the speaker's range in this segment.
    pub f0_min: f64,
    pub f0_max: f64,
    /// Level (dBFS): the power mean of the voiced frames (of all when none was voiced).
    pub level_db: f64,
    /// Syllable nuclei found (voiced intensity peaks).
    pub syllables: u32,
    /// Syllable nuclei per second of the sounding span (first to last loud frame).
    pub rate: f64,
    /// Share of the frames with a pitch.
    pub voiced_ratio: f64,
}

impl Prosody {
    /// F0 range in semitones (0 without pitch).
    pub fn f0_range_semitones(&self) -> f64 {
        if self.f0_min > 0.0 && self.f0_max >= self.f0_min {
            12.0 * (self.f0_max / self.f0_min).log2()
        } else {
            0.0
        }
    }

    fn fill(&self, b: gst::structure::Builder) -> gst::Structure {
        b.field("segment-id", self.segment_id)
            .field("duration", self.duration)
            .field("f0-mean", self.f0_mean)
            .field("f0-min", self.f0_min)
            .field("f0-max", self.f0_max)
            .field("level", self.level_db)
            .field("syllables", self.syllables)
            .field("rate", self.rate)
            .field("voiced-ratio", self.voiced_ratio)
            .build()
    }

    pub fn to_structure(&self) -> gst::Structure {
        self.fill(gst::Structure::builder(EVENT_PROSODY))
    }

    /// The serialized downstream event.
    pub fn to_event(&self) -> gst::Event {
        gst::event::CustomDownstream::new(self.to_structure())
    }

    /// The `prosody` element message from `src`.
    pub fn to_message(&self, src: &impl IsA<gst::Object>) -> gst::Message {
        gst::message::Element::builder(self.fill(gst::Structure::builder(MESSAGE_PROSODY)))
            .src(src)
            .build()
    }

    /// Reads the event's or the message's structure.
    pub fn from_structure(s: &gst::StructureRef) -> Option<Self> {
        if s.name() != EVENT_PROSODY && s.name() != MESSAGE_PROSODY {
            return None;
        }
        let parsed = (|| -> Result<Self, String> {
            let f = |field: &str| -> Result<f64, String> {
                let v = s.get::<f64>(field).map_err(|e| e.to_string())?;
                if v.is_finite() {
                    Ok(v)
                } else {
                    Err(format!("{field} is not finite"))
                }
            };
            Ok(Self {
                segment_id: s.get::<u64>("segment-id").map_err(|e| e.to_string())?,
                duration: s.get::<u64>("duration").map_err(|e| e.to_string())?,
                f0_mean: f("f0-mean")?,
                f0_min: f("f0-min")?,
                f0_max: f("f0-max")?,
                level_db: f("level")?,
                syllables: s.get::<u32>("syllables").map_err(|e| e.to_string())?,
                rate: f("rate")?,
                voiced_ratio: f("voiced-ratio")?,
            })
        })();
        match parsed {
            Ok(p) => Some(p),
            Err(err) => {
                gst::debug!(CAT, "ignoring malformed prosody structure {s}: {err}");
                None
            }
        }
    }

    /// Parses a downstream custom event; `None` for any other event.
    pub fn parse(event: &gst::EventRef) -> Option<Self> {
        match event.type_() {
            gst::EventType::CustomDownstream => Self::from_structure(event.structure()?),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Prosody {
        Prosody {
            segment_id: (7 << 32) | 3,
            duration: 2_500_000_000,
            f0_mean: 180.5,
            f0_min: 150.0,
            f0_max: 240.0,
            level_db: -18.25,
            syllables: 11,
            rate: 4.4,
            voiced_ratio: 0.62,
        }
    }

    #[test]
    fn round_trips_through_the_event_and_the_message() {
        gst::init().unwrap();
        let p = sample();
        assert_eq!(Prosody::parse(&p.to_event()), Some(p.clone()));
        let bin = gst::Bin::new();
        let msg = p.to_message(&bin);
        let gst::MessageView::Element(e) = msg.view() else {
            panic!("an element message")
        };
        assert_eq!(Prosody::from_structure(e.structure().unwrap()), Some(p));
        assert!((sample().f0_range_semitones() - 8.137).abs() < 1e-3);
    }

    #[test]
    fn malformed_or_foreign_structures_are_none() {
        gst::init().unwrap();
        let good = sample().to_structure();
        for field in ["segment-id", "f0-mean", "syllables", "voiced-ratio"] {
            let mut s = good.clone();
            s.remove_field(field);
            assert_eq!(Prosody::from_structure(&s), None, "without {field}");
        }
        let mut s = good.clone();
        s.set("f0-mean", f64::NAN);
        assert_eq!(Prosody::from_structure(&s), None);
        let mut s = good.clone();
        s.set("syllables", "eleven");
        assert_eq!(Prosody::from_structure(&s), None);
        let other = gst::Structure::builder("rtai-segment-end")
            .field("segment-id", 1u64)
            .build();
        assert_eq!(Prosody::from_structure(&other), None);
        let eos = gst::event::Eos::new();
        assert_eq!(Prosody::parse(&eos), None);
    }
}
