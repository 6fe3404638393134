//! How inference results travel on buffers (docs/protocol.md, "Inference results").
//!
//! - Detections: one `GstVideoRegionOfInterestMeta` per object, `roi_type` = label,
//!   with a param structure named [`DETECTION_PARAM`] (the DL Streamer convention):
//!   `confidence` (gdouble 0–1), `label_id` (gint), `label` (string), `model_name` (string).
//!   A tracker adds a param structure [`OBJECT_ID_PARAM`] with `id` (gint) and also sets the
//!   ROI meta's `id`.
//! - Other results (transcript, caption, raw JSON): the custom meta [`INFERENCE_META_NAME`]
//!   read and written with [`InferenceResult`].

use std::sync::LazyLock;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "rtai-inference",
        gst::DebugColorFlags::empty(),
        Some("rtai inference results"),
    )
});

/// Name of the ROI param structure with a detection's confidence, class id, label and model.
pub const DETECTION_PARAM: &str = "detection";
/// Name of the ROI param structure with a tracker's track id (field `id`).
pub const OBJECT_ID_PARAM: &str = "object_id";
/// Name of the custom meta that carries a non-detection inference result.
pub const INFERENCE_META_NAME: &str = "RtaiInferenceMeta";

static META_REGISTERED: LazyLock<()> =
    LazyLock::new(|| crate::custom_meta::register_once(INFERENCE_META_NAME));

/// One inference result other than detections.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InferenceResult {
    /// `transcript`, `caption` (vision-language model text) or `json`.
    pub kind: String,
    pub text: String,
    pub model: Option<String>,
    pub confidence: Option<f64>,
    /// Request round trip in ns.
    pub round_trip: Option<u64>,
    /// The speech segment the result belongs to.
    pub segment_id: Option<u64>,
}

impl InferenceResult {
    /// Registers the meta; idempotent. Call from `plugin_init` of every plugin that uses it.
    pub fn register() {
        LazyLock::force(&META_REGISTERED);
    }

    /// Attaches `self` to `buffer`, replacing a result it already carries.
    pub fn attach(&self, buffer: &mut gst::BufferRef) {
        Self::register();
        let mut meta = match gst::meta::CustomMeta::from_mut_buffer(buffer, INFERENCE_META_NAME) {
            Ok(meta) => meta,
            Err(_) => {
                gst::meta::CustomMeta::add(buffer, INFERENCE_META_NAME).expect("registered above")
            }
        };
        let s = meta.mut_structure();
        s.set("kind", self.kind.as_str());
        s.set("text", self.text.as_str());
        if let Some(model) = &self.model {
            s.set("model", model.as_str());
        }
        if let Some(c) = self.confidence {
            s.set("confidence", c);
        }
        if let Some(rt) = self.round_trip {
            s.set("round-trip", rt);
        }
        if let Some(id) = self.segment_id {
            s.set("segment-id", id);
        }
    }

    /// The result `buffer` carries; `None` (with a debug log) when absent or malformed.
    pub fn get(buffer: &gst::BufferRef) -> Option<Self> {
        let meta = gst::meta::CustomMeta::from_buffer(buffer, INFERENCE_META_NAME).ok()?;
        Self::from_structure(meta.structure())
    }

    /// Parses the meta's structure; `None` (with a debug log) for missing or mistyped fields.
    pub fn from_structure(s: &gst::StructureRef) -> Option<Self> {
        let parsed = (|| -> Result<Self, String> {
            let kind = s.get::<String>("kind").map_err(|e| e.to_string())?;
            let text = s.get::<String>("text").map_err(|e| e.to_string())?;
            let opt = |field: &str| -> Result<(), String> {
                if s.has_field(field) {
                    Err(format!("field {field} has the wrong type"))
                } else {
                    Ok(())
                }
            };
            let model = match s.get::<String>("model") {
                Ok(m) => Some(m),
                Err(_) => opt("model").map(|_| None)?,
            };
            let confidence = match s.get::<f64>("confidence") {
                Ok(c) if c.is_finite() && (0.0..=1.0).contains(&c) => Some(c),
                Ok(c) => return Err(format!("confidence {c} outside 0..1")),
                Err(_) => opt("confidence").map(|_| None)?,
            };
            let round_trip = match s.get::<u64>("round-trip") {
                Ok(v) => Some(v),
                Err(_) => opt("round-trip").map(|_| None)?,
            };
            let segment_id = match s.get::<u64>("segment-id") {
                Ok(v) => Some(v),
                Err(_) => opt("segment-id").map(|_| None)?,
            };
            Ok(Self {
                kind,
                text,
                model,
                confidence,
                round_trip,
                segment_id,
            })
        })();
        match parsed {
            Ok(r) => Some(r),
            Err(err) => {
                gst::debug!(CAT, "ignoring malformed {INFERENCE_META_NAME}: {err} ({s})");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_a_buffer() {
        gst::init().unwrap();
        let r = InferenceResult {
            kind: "transcript".into(),
            text: "hello".into(),
            model: Some("whisper".into()),
            confidence: Some(0.8),
            round_trip: Some(5_000_000),
            segment_id: Some(3),
        };
        let mut buffer = gst::Buffer::new();
        r.attach(buffer.get_mut().unwrap());
        assert_eq!(InferenceResult::get(&buffer), Some(r));
    }

    #[test]
    fn malformed_structures_are_rejected() {
        gst::init().unwrap();
        let cases = [
            gst::Structure::builder("x").field("text", "a").build(),
            gst::Structure::builder("x")
                .field("kind", "transcript")
                .build(),
            gst::Structure::builder("x")
                .field("kind", 1i32)
                .field("text", "a")
                .build(),
            gst::Structure::builder("x")
                .field("kind", "t")
                .field("text", "a")
                .field("confidence", 2.0f64)
                .build(),
            gst::Structure::builder("x")
                .field("kind", "t")
                .field("text", "a")
                .field("confidence", "high")
                .build(),
            gst::Structure::builder("x")
                .field("kind", "t")
                .field("text", "a")
                .field("segment-id", -1i32)
                .build(),
        ];
        for s in cases {
            assert_eq!(InferenceResult::from_structure(&s), None, "{s}");
        }
    }
}
