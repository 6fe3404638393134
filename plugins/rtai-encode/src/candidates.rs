//! Which encoders rtencodebin tries, in order, and how its uniform settings
//! map onto each one's own properties and units.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    H264,
    Vp8,
    Av1,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Self::H264 => "h264",
            Self::Vp8 => "vp8",
            Self::Av1 => "av1",
        }
    }

    pub fn caps_name(self) -> &'static str {
        match self {
            Self::H264 => "video/x-h264",
            Self::Vp8 => "video/x-vp8",
            Self::Av1 => "video/x-av1",
        }
    }
}

/// One encoder rtencodebin may use.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    pub factory: &'static str,
    pub hardware: bool,
    /// Property taking the bitrate, and how many of its units make one kbit/s.
    pub bitrate: Option<(&'static str, u64)>,
    /// Property taking the most frames between key frames.
    pub key_frame_interval: Option<&'static str>,
    /// Real-time settings (`property`, value as gst-launch would write it).
    pub realtime: &'static [(&'static str, &'static str)],
}

const fn hw(factory: &'static str, bitrate: &'static str, keyint: &'static str) -> Candidate {
    Candidate {
        factory,
        hardware: true,
        bitrate: Some((bitrate, 1)),
        key_frame_interval: Some(keyint),
        realtime: &[],
    }
}

/// The candidates for `codec`, hardware first (VA-API, the newer VA plugin, NVENC, V4L2).
pub fn candidates(codec: Codec) -> Vec<Candidate> {
    match codec {
        Codec::H264 => vec![
            Candidate {
                realtime: &[("rate-control", "cbr")],
                ..hw("vaapih264enc", "bitrate", "keyframe-period")
            },
            hw("vah264enc", "bitrate", "key-int-max"),
            Candidate {
                realtime: &[("preset", "low-latency-hq"), ("zerolatency", "true")],
                ..hw("nvh264enc", "bitrate", "gop-size")
            },
            // V4L2 encoders take bitrate through extra-controls, which differ per driver.
            Candidate {
                factory: "v4l2h264enc",
                hardware: true,
                bitrate: None,
                key_frame_interval: None,
                realtime: &[],
            },
            Candidate {
                factory: "x264enc",
                hardware: false,
                bitrate: Some(("bitrate", 1)),
                key_frame_interval: Some("key-int-max"),
                realtime: &[("tune", "zerolatency"), ("speed-preset", "ultrafast")],
            },
            Candidate {
                factory: "openh264enc",
                hardware: false,
                bitrate: Some(("bitrate", 1000)),
                key_frame_interval: Some("gop-size"),
                realtime: &[("usage-type", "camera"), ("complexity", "low")],
            },
        ],
        Codec::Vp8 => vec![
            hw("vaapivp8enc", "bitrate", "keyframe-period"),
            hw("vavp8enc", "bitrate", "key-int-max"),
            Candidate {
                factory: "v4l2vp8enc",
                hardware: true,
                bitrate: None,
                key_frame_interval: None,
                realtime: &[],
            },
            Candidate {
                factory: "vp8enc",
                hardware: false,
                bitrate: Some(("target-bitrate", 1000)),
                key_frame_interval: Some("keyframe-max-dist"),
                realtime: &[
                    ("deadline", "1"),
                    ("cpu-used", "8"),
                    ("lag-in-frames", "0"),
                    ("error-resilient", "default"),
                ],
            },
        ],
        Codec::Av1 => vec![
            hw("vaav1enc", "bitrate", "key-int-max"),
            hw("nvav1enc", "bitrate", "gop-size"),
            Candidate {
                factory: "rtav1enc",
                hardware: false,
                bitrate: Some(("bitrate", 1)),
                key_frame_interval: Some("max-key-frame-interval"),
                realtime: &[("speed-preset", "10"), ("low-latency", "true")],
            },
            Candidate {
                factory: "av1enc",
                hardware: false,
                bitrate: Some(("target-bitrate", 1)),
                key_frame_interval: Some("keyframe-max-dist"),
                // GStreamer 1.22's av1enc defaults max-quantizer to 0 (best quality), which
                // overrides the target bitrate (58 Mbit/s for a 2 Mbit/s target at 720p).
                realtime: &[
                    ("usage-profile", "realtime"),
                    ("cpu-used", "8"),
                    ("lag-in-frames", "0"),
                    ("max-quantizer", "63"),
                    ("end-usage", "cbr"),
                ],
            },
        ],
    }
}

/// Sets `property` from its gst-launch spelling when `element` has it; the error names both.
pub fn set(element: &gst::Element, property: &str, value: &str) -> Result<(), String> {
    use gst::prelude::*;
    if element.find_property(property).is_none() {
        return Err(format!(
            "{} has no property {property}",
            element
                .factory()
                .map(|f| f.name().to_string())
                .unwrap_or_default()
        ));
    }
    let pspec = element.find_property(property).unwrap();
    let parsed = gst::glib::Value::deserialize(value, pspec.value_type())
        .map_err(|_| format!("{property}: cannot use '{value}'"))?;
    element.set_property_from_value(property, &parsed);
    Ok(())
}

/// Applies the uniform settings to a candidate's element.
pub fn configure(
    element: &gst::Element,
    c: &Candidate,
    bitrate_kbps: u32,
    key_frame_interval: u32,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (property, value) in c.realtime {
        if let Err(e) = set(element, property, value) {
            problems.push(e);
        }
    }
    if let Some((property, per_kbit)) = c.bitrate
        && let Err(e) = set(
            element,
            property,
            &(bitrate_kbps as u64 * per_kbit).to_string(),
        )
    {
        problems.push(e);
    }
    if let Some(property) = c.key_frame_interval
        && let Err(e) = set(element, property, &key_frame_interval.to_string())
    {
        problems.push(e);
    }
    problems
}
