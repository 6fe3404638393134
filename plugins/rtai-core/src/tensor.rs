//! Raw model outputs on buffers: inferclient attaches a reply's output tensors
//! (name, dims, datatype, little-endian data as KServe v2 lays it out) so that an
//! element downstream can decode a model the collection does not know. Here, in the
//! shared crate, so producer and consumers agree on one definition.

use std::sync::LazyLock;

/// Name of the custom meta; its structure has `tensors`, an array of structures
/// `tensor` with `name` (string), `dims` (array of guint64), `datatype` (KServe v2
/// name: FP32, INT64, BYTES, ...) and `data` (GBytes, little-endian, row-major;
/// BYTES elements each with a 4-byte length before them).
pub const TENSOR_META_NAME: &str = "RtaiTensorMeta";

static REGISTERED: LazyLock<()> =
    LazyLock::new(|| crate::custom_meta::register_once(TENSOR_META_NAME));

/// One output tensor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TensorData {
    pub name: String,
    pub dims: Vec<u64>,
    pub datatype: String,
    pub data: Vec<u8>,
}

/// The tensors of one inference result.
pub struct TensorMeta;

impl TensorMeta {
    /// Registers the meta; idempotent.
    pub fn register() {
        LazyLock::force(&REGISTERED);
    }

    /// Attaches `tensors`, replacing the ones `buffer` carries.
    pub fn attach(buffer: &mut gst::BufferRef, tensors: &[TensorData]) {
        Self::register();
        let mut meta = match gst::meta::CustomMeta::from_mut_buffer(buffer, TENSOR_META_NAME) {
            Ok(meta) => meta,
            Err(_) => {
                gst::meta::CustomMeta::add(buffer, TENSOR_META_NAME).expect("registered above")
            }
        };
        let list = gst::Array::new(tensors.iter().map(|t| {
            gst::Structure::builder("tensor")
                .field("name", t.name.as_str())
                .field("dims", gst::Array::new(t.dims.iter().copied()))
                .field("datatype", t.datatype.as_str())
                .field("data", glib::Bytes::from(&t.data[..]))
                .build()
        }));
        meta.mut_structure().set("tensors", list);
    }

    /// The tensors `buffer` carries (empty when none).
    pub fn get(buffer: &gst::BufferRef) -> Vec<TensorData> {
        let Ok(meta) = gst::meta::CustomMeta::from_buffer(buffer, TENSOR_META_NAME) else {
            return Vec::new();
        };
        let Ok(list) = meta.structure().get::<gst::Array>("tensors") else {
            return Vec::new();
        };
        list.iter()
            .filter_map(|v| {
                let s = v.get::<gst::Structure>().ok()?;
                Some(TensorData {
                    name: s.get("name").ok()?,
                    dims: s
                        .get::<gst::Array>("dims")
                        .ok()?
                        .iter()
                        .filter_map(|d| d.get::<u64>().ok())
                        .collect(),
                    datatype: s.get("datatype").ok()?,
                    data: s.get::<glib::Bytes>("data").ok()?.to_vec(),
                })
            })
            .collect()
    }
}

use gst::glib;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_round_trip() {
        gst::init().unwrap();
        let mut buffer = gst::Buffer::new();
        assert!(TensorMeta::get(&buffer).is_empty());
        let tensors = vec![
            TensorData {
                name: "boxes".into(),
                dims: vec![1, 2],
                datatype: "FP32".into(),
                data: [1.5f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
            },
            TensorData {
                name: "labels".into(),
                dims: vec![1],
                datatype: "BYTES".into(),
                data: [2u32.to_le_bytes().as_slice(), b"hi"].concat(),
            },
        ];
        let b = buffer.get_mut().unwrap();
        TensorMeta::attach(b, &tensors[..1]);
        TensorMeta::attach(b, &tensors);
        assert_eq!(TensorMeta::get(&buffer), tensors, "replaced, not added");
    }
}
