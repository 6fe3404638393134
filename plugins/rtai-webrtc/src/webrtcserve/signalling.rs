//! webrtcserve's WebSocket signalling messages (JSON, one object per text
//! message, `type` names the message) and their bounded, validating parser.
//!
//! Client → server: `join` {`peer_id`?}, `leave`, `offer` {`sdp`}, `answer`
//! {`sdp`}, `ice_candidate` {`candidate`, `sdpMLineIndex`, `peer_id`?}.
//! Server → client: `offer` {`sdp`, `peer_id`}, `answer` {`sdp`, `peer_id`},
//! `ice_candidate` {`candidate`, `sdpMLineIndex`, `peer_id`}, `error`
//! {`message`}, `leave` {`peer_id`, `reason`}.
//!
//! Everything is bounded before serde sees it: the text's size and its JSON
//! nesting depth; then each field's size; SDP must parse and offer video.

use serde::{Deserialize, Serialize};

/// Largest signalling message accepted (bytes of JSON text).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Deepest JSON nesting accepted (the protocol itself needs 1).
pub const MAX_DEPTH: usize = 4;
/// Largest SDP accepted (bytes).
pub const MAX_SDP_BYTES: usize = 32 * 1024;
/// Largest ICE candidate line accepted (bytes).
pub const MAX_CANDIDATE_BYTES: usize = 1024;
/// Largest peer id accepted (bytes).
pub const MAX_PEER_ID_BYTES: usize = 128;
/// Most m-lines an SDP may have.
pub const MAX_MLINE_INDEX: u32 = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    Join {
        peer_id: Option<String>,
    },
    Leave,
    Offer {
        sdp: String,
    },
    Answer {
        sdp: String,
    },
    IceCandidate {
        candidate: String,
        sdp_mline_index: u32,
        peer_id: Option<String>,
    },
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Offer {
        sdp: String,
        peer_id: String,
    },
    Answer {
        sdp: String,
        peer_id: String,
    },
    IceCandidate {
        candidate: String,
        #[serde(rename = "sdpMLineIndex")]
        sdp_mline_index: u32,
        peer_id: String,
    },
    Leave {
        peer_id: String,
        reason: String,
    },
    Error {
        message: String,
    },
}

impl ServerMessage {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain strings and numbers serialise")
    }

    pub fn error(message: impl Into<String>) -> Self {
        Self::Error {
            message: message.into(),
        }
    }
}

/// Why a client message was refused (the text goes back in an `error` message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    TooLarge(usize),
    TooDeep,
    Malformed(String),
    UnknownType(String),
    Field(&'static str, String),
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge(n) => write!(
                f,
                "message of {n} bytes is larger than {MAX_MESSAGE_BYTES} bytes"
            ),
            Self::TooDeep => write!(f, "JSON nested deeper than {MAX_DEPTH} levels"),
            Self::Malformed(e) => write!(f, "malformed JSON message: {e}"),
            Self::UnknownType(t) => write!(f, "unknown message type `{t}`"),
            Self::Field(field, why) => write!(f, "field `{field}`: {why}"),
        }
    }
}

/// The deepest nesting of `[`/`{` outside strings, stopping early past `limit`.
pub fn json_depth(text: &str, limit: usize) -> usize {
    let mut depth = 0usize;
    let mut max = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for b in text.bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
                if max > limit {
                    return max;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// The wire form serde reads (only after the size and depth checks).
#[derive(Deserialize)]
struct Wire {
    #[serde(rename = "type")]
    kind: String,
    sdp: Option<String>,
    candidate: Option<String>,
    #[serde(rename = "sdpMLineIndex")]
    sdp_mline_index: Option<u32>,
    peer_id: Option<String>,
}

fn bounded(field: &'static str, value: Option<String>, max: usize) -> Result<String, ParseError> {
    let value = value.ok_or(ParseError::Field(field, "missing".into()))?;
    if value.len() > max {
        return Err(ParseError::Field(
            field,
            format!("{} bytes is more than {max}", value.len()),
        ));
    }
    Ok(value)
}

fn peer_id(value: Option<String>) -> Result<Option<String>, ParseError> {
    match value {
        Some(p) if p.len() > MAX_PEER_ID_BYTES || p.chars().any(char::is_control) => Err(
            ParseError::Field("peer_id", "too long or has control characters".into()),
        ),
        other => Ok(other),
    }
}

/// At most `n` characters of `s` (on a character boundary: the text is the client's).
fn clip(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Parses one client text message.
pub fn parse(text: &str) -> Result<ClientMessage, ParseError> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(ParseError::TooLarge(text.len()));
    }
    if json_depth(text, MAX_DEPTH) > MAX_DEPTH {
        return Err(ParseError::TooDeep);
    }
    let wire: Wire =
        serde_json::from_str(text).map_err(|e| ParseError::Malformed(clip(&e.to_string(), 200)))?;
    match wire.kind.as_str() {
        "join" => Ok(ClientMessage::Join {
            peer_id: peer_id(wire.peer_id)?,
        }),
        "leave" => Ok(ClientMessage::Leave),
        "offer" => Ok(ClientMessage::Offer {
            sdp: bounded("sdp", wire.sdp, MAX_SDP_BYTES)?,
        }),
        "answer" => Ok(ClientMessage::Answer {
            sdp: bounded("sdp", wire.sdp, MAX_SDP_BYTES)?,
        }),
        "ice_candidate" => {
            let candidate = bounded("candidate", wire.candidate, MAX_CANDIDATE_BYTES)?;
            if candidate.chars().any(char::is_control) {
                return Err(ParseError::Field(
                    "candidate",
                    "has control characters".into(),
                ));
            }
            let sdp_mline_index = wire
                .sdp_mline_index
                .ok_or(ParseError::Field("sdpMLineIndex", "missing".into()))?;
            if sdp_mline_index > MAX_MLINE_INDEX {
                return Err(ParseError::Field(
                    "sdpMLineIndex",
                    format!("{sdp_mline_index} is more than {MAX_MLINE_INDEX}"),
                ));
            }
            Ok(ClientMessage::IceCandidate {
                candidate,
                sdp_mline_index,
                peer_id: peer_id(wire.peer_id)?,
            })
        }
        other => Err(ParseError::UnknownType(clip(other, 64))),
    }
}

/// Most candidates one WHEP PATCH may carry.
pub const MAX_FRAG_CANDIDATES: usize = 64;

/// The candidates of a WHEP PATCH body (`application/trickle-ice-sdpfrag`,
/// RFC 8840/9725): `a=candidate:` lines with the m-line index they belong to
/// (counted from the fragment's `m=` lines, 0 before any). `a=ice-ufrag`,
/// `a=ice-pwd`, `a=mid` and `a=end-of-candidates` are accepted and ignored
/// (one bundled m-line per viewer); anything else is refused.
pub fn parse_sdpfrag(text: &str) -> Result<Vec<(u32, String)>, String> {
    if text.len() > MAX_SDP_BYTES {
        return Err(format!("fragment larger than {MAX_SDP_BYTES} bytes"));
    }
    let mut out = Vec::new();
    let mut mline: Option<u32> = None;
    for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        if line.starts_with("m=") {
            let next = mline.map_or(0, |m| m + 1);
            if next > MAX_MLINE_INDEX {
                return Err("too many m-lines".into());
            }
            mline = Some(next);
        } else if let Some(c) = line.strip_prefix("a=candidate:") {
            if line.len() - 2 > MAX_CANDIDATE_BYTES || line.chars().any(char::is_control) {
                return Err("a candidate line is too long or has control characters".into());
            }
            if c.split_whitespace().count() < 8 {
                return Err("a candidate line has too few fields".into());
            }
            if out.len() == MAX_FRAG_CANDIDATES {
                return Err(format!("more than {MAX_FRAG_CANDIDATES} candidates"));
            }
            out.push((mline.unwrap_or(0), line[2..].to_string()));
        } else if !(line.starts_with("a=ice-ufrag:")
            || line.starts_with("a=ice-pwd:")
            || line.starts_with("a=mid:")
            || line.starts_with("a=group:")
            || line.starts_with("a=ice-options:")
            || line == "a=end-of-candidates")
        {
            let l: String = line.chars().take(40).collect();
            return Err(format!("unexpected line in an sdpfrag: `{l}`"));
        }
    }
    Ok(out)
}

/// Checks that `sdp` parses and has a video m-line; returns the parsed message.
pub fn parse_sdp(sdp: &str) -> Result<gst_webrtc::gst_sdp::SDPMessage, String> {
    parse_sdp_for(sdp, "video")
}

/// [`parse_sdp`] for an SDP that must have a `kind` m-line (`audio`: the
/// answer of a voice-only viewer).
pub fn parse_sdp_for(sdp: &str, kind: &str) -> Result<gst_webrtc::gst_sdp::SDPMessage, String> {
    if sdp.len() > MAX_SDP_BYTES {
        return Err(format!("SDP larger than {MAX_SDP_BYTES} bytes"));
    }
    // GStreamer's SDP parser is lenient (it accepts any text): require the v= line first.
    if !sdp.starts_with("v=0") {
        return Err("the SDP does not parse (it must start with v=0)".into());
    }
    let msg = gst_webrtc::gst_sdp::SDPMessage::parse_buffer(sdp.as_bytes())
        .map_err(|_| "the SDP does not parse".to_string())?;
    if msg.medias_len() == 0 || msg.medias_len() > MAX_MLINE_INDEX + 1 {
        return Err("the SDP has no media or too many".into());
    }
    if !msg.medias().any(|m| m.media() == Some(kind)) {
        return Err(format!("the SDP has no {kind} m-line"));
    }
    if msg.version().is_none() || msg.origin().is_none() {
        return Err("the SDP lacks v= or o=".into());
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table() {
        assert_eq!(
            parse(r#"{"type":"join","peer_id":"ffmpeg-bot"}"#),
            Ok(ClientMessage::Join {
                peer_id: Some("ffmpeg-bot".into())
            })
        );
        assert_eq!(parse(r#"{"type":"leave"}"#), Ok(ClientMessage::Leave));
        assert_eq!(
            parse(
                r#"{"type":"ice_candidate","candidate":"candidate:1 1 UDP 1 127.0.0.1 5000 typ host","sdpMLineIndex":0}"#
            ),
            Ok(ClientMessage::IceCandidate {
                candidate: "candidate:1 1 UDP 1 127.0.0.1 5000 typ host".into(),
                sdp_mline_index: 0,
                peer_id: None
            })
        );
        assert!(matches!(parse("{"), Err(ParseError::Malformed(_))));
        assert!(matches!(parse("[]"), Err(ParseError::Malformed(_))));
        assert!(matches!(parse("{}"), Err(ParseError::Malformed(_))));
        assert!(matches!(
            parse(r#"{"type":"dance"}"#),
            Err(ParseError::UnknownType(_))
        ));
        assert!(matches!(
            parse(r#"{"type":"answer"}"#),
            Err(ParseError::Field("sdp", _))
        ));
        assert!(matches!(
            parse(r#"{"type":"ice_candidate","candidate":"x"}"#),
            Err(ParseError::Field("sdpMLineIndex", _))
        ));
        assert!(matches!(
            parse(r#"{"type":"ice_candidate","candidate":"x","sdpMLineIndex":99}"#),
            Err(ParseError::Field("sdpMLineIndex", _))
        ));
        let deep = format!(
            r#"{{"type":"join","x":{}1{}}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert_eq!(parse(&deep), Err(ParseError::TooDeep));
        let big = format!(
            r#"{{"type":"offer","sdp":"{}"}}"#,
            "a".repeat(MAX_MESSAGE_BYTES)
        );
        assert!(matches!(parse(&big), Err(ParseError::TooLarge(_))));
        let sdp = format!(
            r#"{{"type":"offer","sdp":"{}"}}"#,
            "a".repeat(MAX_SDP_BYTES + 1)
        );
        assert!(matches!(parse(&sdp), Err(ParseError::Field("sdp", _))));
    }

    #[test]
    fn sdp_checks() {
        gst::init().unwrap();
        let video = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 H264/90000\r\n";
        assert!(parse_sdp(video).is_ok());
        let audio = video.replace("m=video", "m=audio");
        assert_eq!(
            parse_sdp(&audio).unwrap_err(),
            "the SDP has no video m-line"
        );
        assert!(parse_sdp("garbage").is_err());
        assert!(parse_sdp("").is_err());
    }

    #[test]
    fn long_non_ascii_types_are_clipped_on_a_character_boundary() {
        let t = format!("{}é{}", "a".repeat(63), "é".repeat(100));
        let text = serde_json::json!({ "type": t }).to_string();
        assert!(matches!(parse(&text), Err(ParseError::UnknownType(u)) if u.chars().count() == 64));
    }

    #[test]
    fn sdpfrag_table() {
        let frag = "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef0123\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n\
a=candidate:1 1 UDP 2015363327 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n";
        assert_eq!(
            parse_sdpfrag(frag).unwrap(),
            vec![(
                0,
                "candidate:1 1 UDP 2015363327 127.0.0.1 5000 typ host".to_string()
            )]
        );
        assert!(parse_sdpfrag("a=candidate:1 1 UDP").is_err());
        assert!(parse_sdpfrag("v=0").is_err());
        assert!(parse_sdpfrag("").unwrap().is_empty());
        let many =
            "a=candidate:1 1 UDP 1 127.0.0.1 5000 typ host\r\n".repeat(MAX_FRAG_CANDIDATES + 1);
        assert!(parse_sdpfrag(&many).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_sdpfrag_never_panics(text in "\\PC{0,400}") {
            let _ = parse_sdpfrag(&text);
        }

        #[test]
        fn sdpfrag_candidates_round_trip(ports in proptest::collection::vec(1u16.., 0..10)) {
            let frag: String = ports.iter().map(|p| format!("a=candidate:1 1 UDP 1 127.0.0.1 {p} typ host\r\n")).collect();
            let parsed = parse_sdpfrag(&frag).unwrap();
            prop_assert_eq!(parsed.len(), ports.len());
            for ((m, c), p) in parsed.iter().zip(&ports) {
                prop_assert_eq!(*m, 0);
                let tail = format!(" {} typ host", p);
                prop_assert!(c.ends_with(&tail));
            }
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
            let _ = parse(&text);
        }

        #[test]
        fn nesting_beyond_the_limit_is_refused_before_serde(depth in (MAX_DEPTH + 1)..200usize) {
            let text = format!(r#"{{"type":"join","x":{}{}}}"#, "[".repeat(depth), "]".repeat(depth));
            prop_assert_eq!(parse(&text), Err(ParseError::TooDeep));
        }

        #[test]
        fn valid_candidates_round_trip(candidate in "[a-zA-Z0-9 .:]{1,200}", index in 0u32..=MAX_MLINE_INDEX, peer in proptest::option::of("[a-z-]{1,20}")) {
            let text = serde_json::json!({"type": "ice_candidate", "candidate": candidate, "sdpMLineIndex": index, "peer_id": peer}).to_string();
            prop_assert_eq!(parse(&text), Ok(ClientMessage::IceCandidate { candidate, sdp_mline_index: index, peer_id: peer }));
        }

        #[test]
        fn depth_counts_brackets_outside_strings(depth in 0usize..20, noise in "[\\[\\]{}]{0,20}") {
            let text = format!("{}\"{}\"{}", "[".repeat(depth), noise, "]".repeat(depth));
            prop_assert_eq!(json_depth(&text, 100), depth);
        }
    }
}
