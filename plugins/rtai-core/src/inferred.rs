//! The marker of a frame that went through inference: inferclient attaches it to every
//! frame whose result came back, zero detections included, so that a tracker can tell
//! "inferred, nothing found" from "not inferred" (skipped by `interval`, busy, breaker,
//! budget). Here, in the shared crate, so both elements use one definition and it is
//! registered once whichever plugin loads first.

use std::sync::LazyLock;

/// Name of the custom meta; its structure has `model` (string) and `detections` (guint).
pub const INFERRED_META_NAME: &str = "RtaiInferredMeta";

static REGISTERED: LazyLock<()> =
    LazyLock::new(|| crate::custom_meta::register_once(INFERRED_META_NAME));

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InferredMeta {
    pub model: String,
    /// Detections attached with it (ROI metas with a `detection` param).
    pub detections: u32,
}

impl InferredMeta {
    /// Registers the meta; idempotent.
    pub fn register() {
        LazyLock::force(&REGISTERED);
    }

    /// Attaches `self`, replacing a marker the buffer carries.
    pub fn attach(&self, buffer: &mut gst::BufferRef) {
        Self::register();
        let mut meta = match gst::meta::CustomMeta::from_mut_buffer(buffer, INFERRED_META_NAME) {
            Ok(meta) => meta,
            Err(_) => {
                gst::meta::CustomMeta::add(buffer, INFERRED_META_NAME).expect("registered above")
            }
        };
        let s = meta.mut_structure();
        s.set("model", self.model.as_str());
        s.set("detections", self.detections);
    }

    /// The marker `buffer` carries (`None` when absent or malformed).
    pub fn get(buffer: &gst::BufferRef) -> Option<Self> {
        let meta = gst::meta::CustomMeta::from_buffer(buffer, INFERRED_META_NAME).ok()?;
        let s = meta.structure();
        Some(Self {
            model: s.get::<String>("model").unwrap_or_default(),
            detections: s.get::<u32>("detections").ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_replaces() {
        gst::init().unwrap();
        let mut buffer = gst::Buffer::new();
        assert_eq!(InferredMeta::get(&buffer), None);
        let b = buffer.get_mut().unwrap();
        InferredMeta {
            model: "m".into(),
            detections: 0,
        }
        .attach(b);
        InferredMeta {
            model: "m".into(),
            detections: 2,
        }
        .attach(b);
        assert_eq!(
            InferredMeta::get(&buffer),
            Some(InferredMeta {
                model: "m".into(),
                detections: 2
            })
        );
        assert_eq!(
            buffer.iter_meta::<gst::Meta>().count(),
            1,
            "replaced, not added"
        );
    }
}
