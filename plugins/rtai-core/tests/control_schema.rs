//! docs/control-message.schema.json against what `rtai_core::control` produces:
//! every kind of message, ack and error reply validates; messages the parser
//! refuses do not. The validator below implements the JSON Schema keywords the
//! file uses and fails on any other keyword, so the file cannot drift into
//! something this test silently ignores.

use rtai_core::control::{self, ControlError, ControlMessage};
use rtai_core::{CancelAck, SegmentEvent};
use serde_json::Value;

fn schema() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/control-message.schema.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("schema file exists"))
        .expect("the schema is JSON")
}

fn resolve<'a>(root: &'a Value, r: &str) -> &'a Value {
    let ptr = r.strip_prefix('#').expect("local refs only");
    root.pointer(ptr)
        .unwrap_or_else(|| panic!("unresolved $ref {r}"))
}

/// Errors (empty = valid) of `v` against `s`.
fn check(root: &Value, s: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    let Value::Object(s) = s else {
        panic!("schema at {at} is not an object");
    };
    for (key, rule) in s {
        match key.as_str() {
            "$schema" | "$id" | "title" | "description" | "$defs" | "then" => {}
            "$ref" => check(root, resolve(root, rule.as_str().unwrap()), v, at, errors),
            "type" => {
                let ok = match rule.as_str().unwrap() {
                    "object" => v.is_object(),
                    "string" => v.is_string(),
                    "integer" => v.is_u64() || v.is_i64(),
                    "number" => v.is_number(),
                    "array" => v.is_array(),
                    "boolean" => v.is_boolean(),
                    other => panic!("type {other} not supported"),
                };
                if !ok {
                    errors.push(format!("{at}: not a {rule}"));
                }
            }
            "required" => {
                for f in rule.as_array().unwrap() {
                    if v.get(f.as_str().unwrap()).is_none() && v.is_object() {
                        errors.push(format!("{at}: missing {f}"));
                    }
                }
            }
            "properties" => {
                if let Value::Object(o) = v {
                    for (name, sub) in rule.as_object().unwrap() {
                        if let Some(x) = o.get(name) {
                            check(root, sub, x, &format!("{at}.{name}"), errors);
                        }
                    }
                }
            }
            "additionalProperties" => {
                assert_eq!(rule, &Value::Bool(false), "only false is supported");
                let known = s.get("properties").and_then(Value::as_object);
                if let Value::Object(o) = v {
                    for name in o.keys() {
                        if !known.is_some_and(|k| k.contains_key(name)) {
                            errors.push(format!("{at}: unexpected field {name}"));
                        }
                    }
                }
            }
            "minLength" | "maxLength" => {
                if let Some(text) = v.as_str() {
                    let n = text.chars().count() as u64;
                    let limit = rule.as_u64().unwrap();
                    if (key == "minLength" && n < limit) || (key == "maxLength" && n > limit) {
                        errors.push(format!("{at}: length {n} breaks {key} {limit}"));
                    }
                }
            }
            "pattern" => {
                if let Some(text) = v.as_str() {
                    let re = regex::Regex::new(rule.as_str().unwrap()).unwrap();
                    if !re.is_match(text) {
                        errors.push(format!("{at}: {text:?} does not match {rule}"));
                    }
                }
            }
            "minimum" | "maximum" => {
                if let Some(n) = v.as_f64() {
                    let limit = rule.as_f64().unwrap();
                    if (key == "minimum" && n < limit) || (key == "maximum" && n > limit) {
                        errors.push(format!("{at}: {n} breaks {key} {limit}"));
                    }
                }
            }
            "enum" => {
                if !rule.as_array().unwrap().contains(v) {
                    errors.push(format!("{at}: {v} not in {rule}"));
                }
            }
            "oneOf" => {
                let passing = rule
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|sub| {
                        let mut e = Vec::new();
                        check(root, sub, v, at, &mut e);
                        e.is_empty()
                    })
                    .count();
                if passing != 1 {
                    errors.push(format!("{at}: {passing} oneOf branches match"));
                }
            }
            "allOf" => {
                for sub in rule.as_array().unwrap() {
                    check(root, sub, v, at, errors);
                }
            }
            "if" => {
                let mut e = Vec::new();
                check(root, rule, v, at, &mut e);
                if e.is_empty()
                    && let Some(then) = s.get("then")
                {
                    check(root, then, v, at, errors);
                }
            }
            other => panic!("schema keyword {other} is not supported by this test"),
        }
    }
}

fn validate(v: &Value) -> Vec<String> {
    let root = schema();
    let mut errors = Vec::new();
    check(&root, &root, v, "$", &mut errors);
    errors
}

fn produced() -> Vec<String> {
    gst::init().unwrap();
    let seg = 42 << 32 | 7;
    let mut out: Vec<String> = [
        SegmentEvent::Start {
            id: seg,
            running_time: gst::ClockTime::from_mseconds(1200),
            lookback: gst::ClockTime::from_mseconds(300),
        },
        SegmentEvent::Commit { id: seg },
        SegmentEvent::End { id: seg },
        SegmentEvent::Cancel {
            id: seg,
            reason: "click".into(),
        },
        SegmentEvent::Cancel {
            id: seg,
            reason: String::new(),
        },
    ]
    .iter()
    .map(|ev| ControlMessage::from_segment_event(ev, Some("mic")).to_json())
    .collect();
    let ack = CancelAck {
        element: "inferclient0".into(),
        id: seg,
        buffers_dropped: 4,
        requests_aborted: 1,
        latency: gst::ClockTime::from_useconds(80),
    };
    out.push(ControlMessage::from_cancel_ack(&ack, None).to_json());
    out.push(ControlMessage::new(control::TYPE_INTERRUPT).to_json());
    let mut custom = ControlMessage::new("x-transcript");
    custom.segment_id = Some(seg);
    custom.payload = Some(serde_json::json!({"text": "hello world", "final": true}));
    out.push(custom.to_json());
    out.push(control::ack_json(&control::new_id()));
    for err in [
        ControlError::TooLarge(1 << 20),
        ControlError::TooDeep,
        ControlError::Malformed("x".into()),
        ControlError::UnknownType("shout".into()),
        ControlError::Invalid("x".into()),
        ControlError::RateLimited,
    ] {
        out.push(control::error_json(&err, None));
        out.push(control::error_json(&err, Some("abc-1")));
    }
    out
}

#[test]
fn every_produced_message_validates() {
    for json in produced() {
        let v: Value = serde_json::from_str(&json).unwrap();
        let errors = validate(&v);
        assert!(errors.is_empty(), "{json}: {errors:?}");
        // What the schema accepts from producers the parser accepts too (errors
        // are replies, not inbound messages).
        if v.get("error").is_none() {
            control::parse(json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e}"));
        }
    }
}

#[test]
fn messages_the_parser_refuses_break_the_schema() {
    let refused = [
        r#"{"id":"a","type":"shout"}"#,
        r#"{"id":"a","type":"x-"}"#,
        r#"{"id":"a","type":"x-Upper"}"#,
        r#"{"id":"a","type":"speech-start"}"#,
        r#"{"id":"a","type":"cancel-ack"}"#,
        r#"{"id":"","type":"interrupt"}"#,
        r#"{"id":"a b","type":"interrupt"}"#,
        r#"{"id":"a","type":"interrupt","segment_id":-1}"#,
        r#"{"id":"a","type":"speech-end","segment_id":9007199254740992}"#,
        r#"{"id":5,"type":"interrupt"}"#,
        r#"{"ack":5}"#,
        r#"{"type":"interrupt"}"#,
        r#"[1]"#,
    ];
    for json in refused {
        assert!(control::parse(json.as_bytes()).is_err(), "{json}");
        let v: Value = serde_json::from_str(json).unwrap();
        assert!(!validate(&v).is_empty(), "the schema accepts {json}");
    }
}
