//! Property tests: the reply parsers (KServe JSON, binary extension, gRPC) and the
//! output decoder never panic on replies of bounded size and nesting, and what they
//! accept is consistent (values fill the shape).

use gstrtaiinfer::client::{self, Tensor, kserve_grpc};
use gstrtaiinfer::postprocess::{BoxFormat, Decoder, Letterbox, OutputNames};
use proptest::prelude::*;
use serde_json::Value;

/// Any JSON value, at most 5 levels deep and a few dozen nodes.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "[a-z_]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("outputs".to_string()),
                        Just("inputs".to_string()),
                        Just("name".to_string()),
                        Just("shape".to_string()),
                        Just("data".to_string()),
                        Just("datatype".to_string()),
                        Just("parameters".to_string()),
                        Just("binary_data_size".to_string()),
                        Just("error".to_string()),
                        "[a-z]{1,4}",
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A KServe reply that is nearly right: one output with a random shape, datatype and data.
fn kserve_reply() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(0i64..6, 0..4),
        prop_oneof![
            Just("FP32"),
            Just("INT64"),
            Just("BYTES"),
            Just("BOOL"),
            Just("FP16"),
            Just("")
        ],
        json(),
    )
        .prop_map(|(shape, datatype, data)| {
            serde_json::json!({"outputs": [{"name": "boxes", "shape": shape, "datatype": datatype, "data": data}]})
        })
}

fn tensor() -> impl Strategy<Value = Tensor> {
    (
        prop_oneof![
            Just("boxes"),
            Just("scores"),
            Just("labels"),
            Just("detection_boxes"),
            Just("num_dets"),
            Just("output0"),
        ],
        prop::collection::vec(0usize..9, 0..4),
        prop::collection::vec(prop_oneof![-1e4f64..1e4, Just(f64::NAN)], 0..80),
        any::<bool>(),
    )
        .prop_map(|(name, shape, numbers, bytes)| Tensor {
            name: name.into(),
            datatype: if bytes { "BYTES" } else { "FP32" }.into(),
            shape,
            strings: if bytes {
                numbers.iter().map(|v| format!("{v}")).collect()
            } else {
                Vec::new()
            },
            numbers: if bytes { Vec::new() } else { numbers },
        })
}

const FORMATS: [BoxFormat; 10] = [
    BoxFormat::Auto,
    BoxFormat::Decoded,
    BoxFormat::Yolov5,
    BoxFormat::Yolov8,
    BoxFormat::Yolov8Transposed,
    BoxFormat::Yolov10,
    BoxFormat::Ssd,
    BoxFormat::Nms,
    BoxFormat::Named,
    BoxFormat::Classification,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn kserve_json_never_panics(v in json()) {
        let _ = client::parse_kserve(v.to_string().as_bytes());
    }

    #[test]
    fn kserve_json_outputs_fill_their_shape(v in kserve_reply()) {
        if let Ok(tensors) = client::parse_kserve(v.to_string().as_bytes()) {
            for t in tensors {
                prop_assert!(t.numbers.is_empty() || t.strings.is_empty());
            }
        }
    }

    #[test]
    fn model_metadata_never_panics_and_stays_bounded(v in json()) {
        if let Ok(m) = client::parse_model_metadata(v.to_string().as_bytes()) {
            for t in m.inputs.iter().chain(&m.outputs) {
                prop_assert!(t.shape.len() <= 16 && t.datatype.len() <= 16);
            }
        }
    }

    #[test]
    fn kserve_binary_never_panics(v in json(), tail in prop::collection::vec(any::<u8>(), 0..64), cut in 0usize..400) {
        let body = [v.to_string().into_bytes(), tail].concat();
        let _ = client::parse_kserve_binary(&body, cut);
    }

    #[test]
    fn grpc_replies_never_panic(
        outputs in prop::collection::vec(
            (prop_oneof![Just("FP32"), Just("INT8"), Just("BYTES"), Just("FP64"), Just("X")],
             prop::collection::vec(-2i64..9, 0..4),
             prop::collection::vec(any::<f32>(), 0..8)),
            0..4),
        raw in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..4),
    ) {
        use kserve_grpc::model_infer_response::InferOutputTensor;
        let r = kserve_grpc::ModelInferResponse {
            outputs: outputs
                .iter()
                .map(|(dt, shape, fp32)| InferOutputTensor {
                    name: "o".into(),
                    datatype: dt.to_string(),
                    shape: shape.clone(),
                    contents: Some(kserve_grpc::InferTensorContents {
                        fp32_contents: fp32.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            raw_output_contents: raw,
            ..Default::default()
        };
        let _ = client::parse_grpc_response(&r);
    }

    #[test]
    fn the_decoder_never_panics_and_boxes_stay_in_the_frame(
        tensors in prop::collection::vec(tensor(), 0..4),
        format in 0usize..FORMATS.len(),
        named in any::<bool>(),
    ) {
        let decoder = Decoder {
            format: FORMATS[format],
            names: if named {
                OutputNames { boxes: "boxes".into(), scores: "scores".into(), ..Default::default() }
            } else {
                OutputNames::default()
            },
            input_width: 64,
            input_height: 64,
            threshold: 0.0,
            ..Default::default()
        };
        let lb = Letterbox::fit(100, 50, 64, 64);
        if let Ok(d) = decoder.decode(&tensors, &lb) {
            for b in d.detections {
                prop_assert!(b.x1 >= 0.0 && b.x2 <= 100.0 && b.y1 >= 0.0 && b.y2 <= 50.0, "{b:?}");
                prop_assert!((0.0..=1.0).contains(&b.confidence));
            }
        }
    }
}
