//! Talking to inference endpoints: request bodies per protocol, reply parsers
//! (table-tested: a bad reply is an error string, never a panic), retries with
//! exponential backoff and jitter, and a circuit breaker.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

pub mod kserve_grpc {
    tonic::include_proto!("inference");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    KserveRest,
    KserveGrpc,
    Runpod,
    OpenaiChat,
    OpenaiTranscriptions,
}

/// Where and how to send (secrets stay in here, never in messages).
#[derive(Clone)]
pub struct Endpoint {
    pub protocol: Protocol,
    pub url: String,
    pub model: String,
    pub api_key: Option<String>,
    pub timeout: Duration,
    pub max_retries: u32,
    /// Longest a RunPod job is polled after `/runsync` returned it unfinished.
    pub poll_limit: Duration,
    /// KServe gRPC: one HTTP/2 channel, connected on first use and shared by all calls.
    pub grpc: Option<tonic::transport::Channel>,
    /// KServe REST: tensors as raw bytes after the JSON (Triton's binary tensor extension).
    pub binary_data: bool,
    /// RunPod: set once `/runsync` answered 404 or 405; requests then use `/run`.
    pub runsync_missing: Arc<AtomicBool>,
}

/// Little-endian tensor bytes of `datatype` as numbers (or strings for BYTES).
pub fn decode_raw(
    name: &str,
    datatype: &str,
    raw: &[u8],
) -> Result<(Vec<f64>, Vec<String>), String> {
    let width = match datatype {
        "FP32" | "INT32" | "UINT32" => 4,
        "FP64" | "INT64" | "UINT64" => 8,
        "UINT8" | "INT8" | "BOOL" => 1,
        "INT16" | "UINT16" | "FP16" => 2,
        "BYTES" => 0,
        other => return Err(format!("output {name}: datatype {other} not supported")),
    };
    if width == 0 {
        let (mut rest, mut strings) = (raw, Vec::new());
        while rest.len() >= 4 {
            let n = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            let s = rest
                .get(4..4 + n)
                .ok_or_else(|| format!("output {name}: BYTES element runs past the end"))?;
            strings.push(String::from_utf8_lossy(s).into_owned());
            rest = &rest[4 + n..];
        }
        return Ok((Vec::new(), strings));
    }
    if !raw.len().is_multiple_of(width) {
        return Err(format!(
            "output {name}: {} bytes is not a whole number of {datatype}",
            raw.len()
        ));
    }
    if datatype == "FP16" {
        return Err(format!("output {name}: FP16 is not supported"));
    }
    let numbers = raw
        .chunks_exact(width)
        .map(|c| match datatype {
            "FP32" => f32::from_le_bytes(c.try_into().unwrap()) as f64,
            "INT32" => i32::from_le_bytes(c.try_into().unwrap()) as f64,
            "UINT32" => u32::from_le_bytes(c.try_into().unwrap()) as f64,
            "FP64" => f64::from_le_bytes(c.try_into().unwrap()),
            "INT64" => i64::from_le_bytes(c.try_into().unwrap()) as f64,
            "UINT64" => u64::from_le_bytes(c.try_into().unwrap()) as f64,
            "INT16" => i16::from_le_bytes(c.try_into().unwrap()) as f64,
            "UINT16" => u16::from_le_bytes(c.try_into().unwrap()) as f64,
            "INT8" => c[0] as i8 as f64,
            _ => c[0] as f64,
        })
        .collect();
    Ok((numbers, Vec::new()))
}

/// A KServe REST reply with the binary tensor extension: `json_len` bytes of JSON,
/// then the outputs that say `binary_data_size`, in order.
pub fn parse_kserve_binary(body: &[u8], json_len: usize) -> Result<Vec<Tensor>, String> {
    let (json, mut binary) = body.split_at_checked(json_len).ok_or_else(|| {
        format!(
            "header length {json_len} beyond a {}-byte reply",
            body.len()
        )
    })?;
    let v = json_of(json)?;
    let outputs = v
        .get("outputs")
        .and_then(Value::as_array)
        .ok_or("reply has no \"outputs\" array")?;
    let mut tensors = Vec::new();
    for o in outputs {
        match o
            .pointer("/parameters/binary_data_size")
            .and_then(Value::as_u64)
        {
            Some(size) => {
                let name = o
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or("output without a name")?
                    .to_string();
                let datatype = o.get("datatype").and_then(Value::as_str).unwrap_or("");
                let shape = o
                    .get("shape")
                    .and_then(Value::as_array)
                    .ok_or_else(|| format!("output {name} has no shape"))?
                    .iter()
                    .map(|d| {
                        d.as_u64()
                            .map(|d| d as usize)
                            .ok_or_else(|| format!("output {name}: bad dimension {d}"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let (bytes, rest) = binary.split_at_checked(size as usize).ok_or_else(|| {
                    format!(
                        "output {name}: {size} bytes announced, {} left",
                        binary.len()
                    )
                })?;
                binary = rest;
                let (numbers, strings) = decode_raw(&name, datatype, bytes)?;
                tensors.push(Tensor {
                    name,
                    datatype: datatype.to_string(),
                    shape,
                    numbers,
                    strings,
                });
            }
            None => tensors.extend(parse_kserve(
                &serde_json::to_vec(&json!({ "outputs": [o] })).unwrap(),
            )?),
        }
    }
    Ok(tensors)
}

/// A lazily connecting channel to `url` (call inside the runtime: tonic spawns its worker there).
/// `https://` uses TLS (rustls with ring) verified against the system's roots, which
/// honour `SSL_CERT_FILE`/`SSL_CERT_DIR` for a private CA.
pub fn grpc_channel(url: &str, timeout: Duration) -> Result<tonic::transport::Channel, String> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("bad gRPC URL: {e}"))?;
    if endpoint.uri().scheme_str() == Some("https") {
        // gRPC is HTTP/2 whatever the ALPN says: some TLS terminators negotiate none.
        let tls = tonic::transport::ClientTlsConfig::new()
            .with_native_roots()
            .assume_http2(true)
            .timeout(timeout);
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| format!("cannot set up TLS: {e}"))?;
    }
    Ok(endpoint
        .timeout(timeout)
        .connect_timeout(timeout)
        .connect_lazy())
}

/// Tensors from a gRPC `ModelInferResponse` (raw little-endian contents or typed contents).
pub fn parse_grpc_response(r: &kserve_grpc::ModelInferResponse) -> Result<Vec<Tensor>, String> {
    if !r.raw_output_contents.is_empty() && r.raw_output_contents.len() != r.outputs.len() {
        return Err(format!(
            "{} outputs but {} raw contents",
            r.outputs.len(),
            r.raw_output_contents.len()
        ));
    }
    r.outputs
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let shape = o
                .shape
                .iter()
                .map(|&d| {
                    usize::try_from(d).map_err(|_| format!("output {}: bad dimension {d}", o.name))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut t = Tensor {
                name: o.name.clone(),
                datatype: o.datatype.clone(),
                shape,
                numbers: Vec::new(),
                strings: Vec::new(),
            };
            if let Some(raw) = r.raw_output_contents.get(i) {
                let (numbers, strings) = decode_raw(&o.name, &o.datatype, raw)?;
                t.numbers = numbers;
                t.strings = strings;
            } else if let Some(c) = &o.contents {
                t.numbers = c
                    .fp32_contents
                    .iter()
                    .map(|&v| v as f64)
                    .chain(c.fp64_contents.iter().copied())
                    .chain(c.int_contents.iter().map(|&v| v as f64))
                    .chain(c.int64_contents.iter().map(|&v| v as f64))
                    .chain(c.uint_contents.iter().map(|&v| v as f64))
                    .chain(c.uint64_contents.iter().map(|&v| v as f64))
                    .chain(c.bool_contents.iter().map(|&v| v as u8 as f64))
                    .collect();
                t.strings = c
                    .bytes_contents
                    .iter()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect();
            }
            Ok(t)
        })
        .collect()
}

fn grpc_error(status: tonic::Status) -> CallError {
    use tonic::Code::*;
    let message = format!(
        "gRPC {:?}: {}",
        status.code(),
        status.message().chars().take(200).collect::<String>()
    );
    match status.code() {
        Unavailable | DeadlineExceeded | ResourceExhausted | Aborted | Internal | Unknown
        | Cancelled => CallError::Transient(message),
        _ => CallError::Fatal(message),
    }
}

/// The datatype a numeric input tensor travels as (its samples are prepared as f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputDatatype {
    Fp32,
    /// IEEE half precision, rounded to nearest.
    Fp16,
    /// Samples rounded and clamped to 0..255.
    Uint8,
}

impl InputDatatype {
    pub fn as_str(self) -> &'static str {
        match self {
            InputDatatype::Fp32 => "FP32",
            InputDatatype::Fp16 => "FP16",
            InputDatatype::Uint8 => "UINT8",
        }
    }

    /// The samples as little-endian raw bytes of this datatype.
    pub fn raw(self, data: &[f32]) -> Vec<u8> {
        match self {
            InputDatatype::Fp32 => data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            InputDatatype::Fp16 => data
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
            InputDatatype::Uint8 => data.iter().map(|v| to_u8(*v)).collect(),
        }
    }
}

fn to_u8(v: f32) -> u8 {
    // NaN becomes 0 (`as` saturates).
    v.round().clamp(0.0, 255.0) as u8
}

pub enum Request {
    /// A KServe v2 numeric tensor.
    Tensor {
        name: String,
        shape: Vec<usize>,
        datatype: InputDatatype,
        data: Vec<f32>,
    },
    /// A KServe v2 BYTES tensor [N]: encoded images (JPEG) a server decodes itself.
    Bytes { name: String, items: Vec<Vec<u8>> },
    /// Frames as JPEG (the last one current, the others context) with a prompt.
    Images {
        jpegs: Vec<Vec<u8>>,
        width: u32,
        height: u32,
        prompt: String,
        previous_answer: Option<String>,
    },
    /// A WAV file.
    Audio { wav: Vec<u8>, prompt: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    /// The KServe v2 datatype as the reply said it (FP32, INT64, BYTES, ...).
    pub datatype: String,
    pub shape: Vec<usize>,
    pub numbers: Vec<f64>,
    pub strings: Vec<String>,
}

impl Tensor {
    /// The values as KServe v2 raw bytes of `datatype`: little-endian, row-major;
    /// BYTES elements each after a 4-byte length (the binary tensor extension's layout).
    pub fn raw_bytes(&self) -> Vec<u8> {
        if self.datatype == "BYTES" {
            return self
                .strings
                .iter()
                .flat_map(|s| (s.len() as u32).to_le_bytes().into_iter().chain(s.bytes()))
                .collect();
        }
        let mut out = Vec::with_capacity(self.numbers.len() * 4);
        for &v in &self.numbers {
            match self.datatype.as_str() {
                "FP64" => out.extend(v.to_le_bytes()),
                "INT64" => out.extend((v as i64).to_le_bytes()),
                "UINT64" => out.extend((v as u64).to_le_bytes()),
                "INT32" => out.extend((v as i32).to_le_bytes()),
                "UINT32" => out.extend((v as u32).to_le_bytes()),
                "INT16" => out.extend((v as i16).to_le_bytes()),
                "UINT16" => out.extend((v as u16).to_le_bytes()),
                "INT8" => out.push(v as i8 as u8),
                "UINT8" | "BOOL" => out.push(v as u8),
                _ => out.extend((v as f32).to_le_bytes()),
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Tensors(Vec<Tensor>),
    /// RunPod's `output`, whatever the handler returned.
    Output(Value),
    Text(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// 5xx, timeouts, broken connections: worth retrying (the request may have been seen).
    Transient(String),
    /// The request never reached the endpoint (connection refused, DNS): safe to send again.
    NotSent(String),
    /// 429 or 503 with `Retry-After`: the endpoint asks for this pause before a retry.
    RetryAfter(String, Duration),
    /// 4xx: the request is wrong (URL, model, key); retrying will not help.
    Fatal(String),
    /// A reply that cannot be used (malformed JSON, wrong shapes, a failed job): this
    /// request is lost, the next one may do better.
    BadReply(String),
    Cancelled,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transient(m)
            | Self::NotSent(m)
            | Self::RetryAfter(m, _)
            | Self::Fatal(m)
            | Self::BadReply(m) => f.write_str(m),
            Self::Cancelled => f.write_str("cancelled"),
        }
    }
}

impl CallError {
    /// Worth retrying.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Transient(_) | Self::NotSent(_) | Self::RetryAfter(..)
        )
    }

    /// The endpoint did no work for the request: it never arrived, or was turned away
    /// with 429. Only these are safe to repeat where a repeat costs (a RunPod job).
    pub fn never_reached(&self) -> bool {
        match self {
            Self::NotSent(_) => true,
            Self::RetryAfter(m, _) | Self::Transient(m) => m.starts_with("HTTP 429"),
            _ => false,
        }
    }

    /// A wrong configuration (bad key, unknown model or route) rather than one request the
    /// endpoint refused (400, 413, 422: too long, too large, content policy).
    pub fn is_configuration(&self) -> bool {
        let Self::Fatal(m) = self else {
            return false;
        };
        const PER_REQUEST: [&str; 6] = [
            "HTTP 400",
            "HTTP 413",
            "HTTP 422",
            "gRPC InvalidArgument",
            "gRPC OutOfRange",
            "gRPC FailedPrecondition",
        ];
        !PER_REQUEST.iter().any(|p| m.starts_with(p))
    }
}

/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The pause before retry `attempt`: the backoff, or longer when the endpoint said so.
pub fn retry_delay(err: &CallError, attempt: u32) -> Duration {
    let asked = match err {
        CallError::RetryAfter(_, d) => (*d).min(MAX_RETRY_AFTER),
        _ => Duration::ZERO,
    };
    backoff(attempt, jitter()).max(asked)
}

/// A `Retry-After` value in seconds (the HTTP-date form is not used by inference servers).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

// ---- reply parsers -------------------------------------------------------

fn json_of(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(body).map_err(|e| format!("reply is not JSON: {e}"))
}

/// A KServe v2 `/infer` reply.
pub fn parse_kserve(body: &[u8]) -> Result<Vec<Tensor>, String> {
    let v = json_of(body)?;
    if let Some(err) = v.get("error").and_then(Value::as_str) {
        return Err(format!("server error: {err}"));
    }
    let outputs = v
        .get("outputs")
        .and_then(Value::as_array)
        .ok_or("reply has no \"outputs\" array")?;
    outputs
        .iter()
        .map(|o| {
            let name = o
                .get("name")
                .and_then(Value::as_str)
                .ok_or("output without a name")?
                .to_string();
            let shape = o
                .get("shape")
                .and_then(Value::as_array)
                .ok_or_else(|| format!("output {name} has no shape"))?
                .iter()
                .map(|d| {
                    d.as_u64()
                        .map(|d| d as usize)
                        .ok_or_else(|| format!("output {name}: bad dimension {d}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let data = o
                .get("data")
                .and_then(Value::as_array)
                .ok_or_else(|| format!("output {name} has no data array"))?;
            let mut flat = Vec::new();
            flatten(data, &mut flat, 0)?;
            let datatype = o.get("datatype").and_then(Value::as_str).unwrap_or("");
            if datatype == "BYTES" {
                let strings = flat
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(String::from)
                            .ok_or("BYTES output holds a non-string")
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Tensor {
                    name,
                    datatype: "BYTES".into(),
                    shape,
                    numbers: Vec::new(),
                    strings,
                })
            } else {
                let numbers = flat
                    .iter()
                    .map(|v| {
                        v.as_f64()
                            .or_else(|| v.as_bool().map(|b| b as u8 as f64))
                            .ok_or_else(|| format!("output {name} holds a non-number"))
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Tensor {
                    name,
                    datatype: if datatype.is_empty() {
                        "FP32"
                    } else {
                        datatype
                    }
                    .to_string(),
                    shape,
                    numbers,
                    strings: Vec::new(),
                })
            }
        })
        .collect()
}

fn flatten<'a>(v: &'a [Value], out: &mut Vec<&'a Value>, depth: usize) -> Result<(), String> {
    if depth > 8 {
        return Err("output data nested too deeply".into());
    }
    for item in v {
        match item {
            Value::Array(inner) => flatten(inner, out, depth + 1)?,
            other => out.push(other),
        }
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq)]
pub enum RunpodStatus {
    Completed(Value),
    Pending(String),
    Failed(String),
}

/// A RunPod `/runsync`, `/run` or `/status` reply.
pub fn parse_runpod(body: &[u8]) -> Result<RunpodStatus, String> {
    let v = json_of(body)?;
    let status = v
        .get("status")
        .and_then(Value::as_str)
        .ok_or("reply has no \"status\"")?;
    match status {
        "COMPLETED" => Ok(RunpodStatus::Completed(
            v.get("output").cloned().unwrap_or(Value::Null),
        )),
        "IN_QUEUE" | "IN_PROGRESS" => {
            let id = v
                .get("id")
                .and_then(Value::as_str)
                .ok_or("unfinished job without an id")?;
            Ok(RunpodStatus::Pending(id.to_string()))
        }
        "FAILED" | "CANCELLED" | "TIMED_OUT" => {
            let err = v
                .get("error")
                .map(|e| {
                    e.as_str()
                        .map(String::from)
                        .unwrap_or_else(|| e.to_string())
                })
                .unwrap_or_default();
            Ok(RunpodStatus::Failed(format!("job {status}: {err}")))
        }
        other => Err(format!("unknown job status {other:?}")),
    }
}

/// The assistant's text in a `/v1/chat/completions` reply.
pub fn parse_openai_chat(body: &[u8]) -> Result<String, String> {
    let v = json_of(body)?;
    if let Some(err) = v.get("error") {
        return Err(format!(
            "server error: {}",
            err.get("message")
                .and_then(Value::as_str)
                .unwrap_or("(no message)")
        ));
    }
    v.pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .map(String::from)
        .ok_or_else(|| "reply has no choices[0].message.content".into())
}

/// The text of a `/v1/audio/transcriptions` reply (`response_format=json`).
pub fn parse_openai_transcription(body: &[u8]) -> Result<String, String> {
    let v = json_of(body)?;
    v.get("text")
        .and_then(Value::as_str)
        .map(String::from)
        .ok_or_else(|| "reply has no \"text\"".into())
}

// ---- requests ------------------------------------------------------------

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn check_status(
    status: reqwest::StatusCode,
    body: &[u8],
    retry_after: Option<Duration>,
) -> Result<(), CallError> {
    if status.is_success() {
        return Ok(());
    }
    let snippet: String = String::from_utf8_lossy(body).chars().take(200).collect();
    let message = format!("HTTP {status}: {snippet}");
    if let (429 | 503, Some(d)) = (status.as_u16(), retry_after) {
        return Err(CallError::RetryAfter(message, d));
    }
    if status.as_u16() == 429 || status.is_server_error() || status.as_u16() == 408 {
        Err(CallError::Transient(message))
    } else {
        Err(CallError::Fatal(message))
    }
}

fn transport(err: reqwest::Error) -> CallError {
    if err.is_timeout() {
        return CallError::Transient("request timed out".into());
    }
    // reqwest's messages carry the URL (never headers): shown redacted, as a
    // password or a key in its query would be.
    let url = err
        .url()
        .map(|u| format!(" to {}", rtai_core::secrets::redact(u.as_str())))
        .unwrap_or_default();
    let never_sent = err.is_connect();
    let err = err.without_url();
    let mut message = err.to_string();
    // The causes say why (connection refused, DNS, TLS); reqwest's own message does not.
    let mut cause = std::error::Error::source(&err);
    while let Some(c) = cause {
        message = format!("{message}: {c}");
        cause = c.source();
    }
    let message = format!("request{url} failed: {message}");
    if never_sent {
        CallError::NotSent(message)
    } else {
        CallError::Transient(message)
    }
}

async fn send(ep: &Endpoint, builder: reqwest::RequestBuilder) -> Result<Vec<u8>, CallError> {
    send_with_header(ep, builder, "", ep.timeout)
        .await
        .map(|(body, _)| body)
}

/// The largest reply read (a YOLOv5 output [1, 25200, 85] as JSON is about 25 MB).
pub const MAX_REPLY_BYTES: usize = 128 << 20;

/// Sends; returns the body and the reply header `header` (when named and present).
async fn send_with_header(
    ep: &Endpoint,
    builder: reqwest::RequestBuilder,
    header: &str,
    timeout: Duration,
) -> Result<(Vec<u8>, Option<String>), CallError> {
    let builder = match &ep.api_key {
        Some(key) => builder.bearer_auth(key),
        None => builder,
    };
    let response = builder.timeout(timeout).send().await.map_err(transport)?;
    let status = response.status();
    let value = (!header.is_empty())
        .then(|| {
            response
                .headers()
                .get(header)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        })
        .flatten();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    if response
        .content_length()
        .is_some_and(|n| n > MAX_REPLY_BYTES as u64)
    {
        return Err(CallError::BadReply(format!(
            "reply of {} bytes (more than {MAX_REPLY_BYTES})",
            response.content_length().unwrap_or_default()
        )));
    }
    let mut response = response;
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > MAX_REPLY_BYTES {
            return Err(CallError::BadReply(format!(
                "reply longer than {MAX_REPLY_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    check_status(status, &body, retry_after)?;
    Ok((body, value))
}

/// The KServe REST body for one numeric tensor, written straight from the samples: no
/// `serde_json::Value` per element (a 640x640 frame has 1.2 million of them).
pub fn tensor_json(name: &str, shape: &[usize], datatype: InputDatatype, data: &[f32]) -> Vec<u8> {
    let mut body = Vec::with_capacity(64 + name.len() + data.len() * 10);
    body.extend_from_slice(br#"{"inputs":[{"name":"#);
    serde_json::to_writer(&mut body, name).expect("a string serializes");
    body.extend_from_slice(br#","shape":"#);
    serde_json::to_writer(&mut body, shape).expect("numbers serialize");
    body.extend_from_slice(br#","datatype":""#);
    body.extend_from_slice(datatype.as_str().as_bytes());
    body.extend_from_slice(br#"","data":"#);
    // NaN and infinities (not JSON) are written as null, as serde_json does for floats.
    match datatype {
        InputDatatype::Fp32 => serde_json::to_writer(&mut body, data),
        InputDatatype::Fp16 => {
            let halves: Vec<f32> = data
                .iter()
                .map(|v| half::f16::from_f32(*v).to_f32())
                .collect();
            serde_json::to_writer(&mut body, &halves)
        }
        InputDatatype::Uint8 => {
            let bytes: Vec<u8> = data.iter().map(|v| to_u8(*v)).collect();
            serde_json::to_writer(&mut body, &bytes)
        }
    }
    .expect("numbers serialize");
    body.extend_from_slice(b"}]}");
    body
}

/// The KServe REST body for a BYTES tensor of encoded images: base64 strings, marked with
/// MLServer's `content_type` "base64" (JSON strings cannot carry raw bytes; Triton takes
/// them with `binary-data`).
pub fn bytes_json(name: &str, items: &[Vec<u8>]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "inputs": [{
            "name": name,
            "shape": [items.len()],
            "datatype": "BYTES",
            "parameters": { "content_type": "base64" },
            "data": items.iter().map(|i| b64(i)).collect::<Vec<_>>(),
        }]
    }))
    .expect("JSON")
}

/// BYTES elements in the binary tensor extension's layout: each after a 4-byte length.
pub fn bytes_raw(items: &[Vec<u8>]) -> Vec<u8> {
    items
        .iter()
        .flat_map(|i| {
            (i.len() as u32)
                .to_le_bytes()
                .into_iter()
                .chain(i.iter().copied())
        })
        .collect()
}

/// A gRPC request with the endpoint's timeout and API key (as a bearer token).
fn grpc_request<T>(ep: &Endpoint, message: T) -> Result<tonic::Request<T>, CallError> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(ep.timeout);
    if let Some(key) = &ep.api_key {
        let value = format!("Bearer {key}")
            .parse()
            .map_err(|_| CallError::Fatal("the API key is not a valid header value".into()))?;
        request.metadata_mut().insert("authorization", value);
    }
    Ok(request)
}

/// One tensor of a model's metadata (KServe v2 `GET /v2/models/{name}`, gRPC ModelMetadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMetadata {
    pub name: String,
    pub datatype: String,
    /// -1 for a dimension the model leaves open (batch, dynamic sizes).
    pub shape: Vec<i64>,
}

/// What a model says about its inputs and outputs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelMetadata {
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

/// The most tensors and dimensions read from a metadata reply (more are an error).
const MAX_METADATA_TENSORS: usize = 1024;
const MAX_METADATA_DIMS: usize = 16;

fn tensor_metadata(v: &Value) -> Result<TensorMetadata, String> {
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .ok_or("a tensor without a name")?;
    let datatype = v.get("datatype").and_then(Value::as_str).unwrap_or("");
    let shape = match v.get("shape") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(dims)) if dims.len() <= MAX_METADATA_DIMS => dims
            .iter()
            .map(|d| {
                d.as_i64()
                    .ok_or_else(|| format!("tensor {name}: shape {d} is not a number"))
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(format!("tensor {name}: bad shape {other}")),
    };
    Ok(TensorMetadata {
        name: name.chars().take(1024).collect(),
        datatype: datatype.chars().take(16).collect(),
        shape,
    })
}

/// A KServe v2 REST model metadata reply.
pub fn parse_model_metadata(body: &[u8]) -> Result<ModelMetadata, String> {
    let v = json_of(body)?;
    let list = |key: &str| -> Result<Vec<TensorMetadata>, String> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) if items.len() <= MAX_METADATA_TENSORS => {
                items.iter().map(tensor_metadata).collect()
            }
            Some(_) => Err(format!("\"{key}\" is not a list of tensors")),
        }
    };
    if !v.is_object() {
        return Err("model metadata is not a JSON object".into());
    }
    Ok(ModelMetadata {
        inputs: list("inputs")?,
        outputs: list("outputs")?,
    })
}

/// The model's metadata over the endpoint's protocol (KServe REST or gRPC), one try.
pub async fn model_metadata(
    client: &reqwest::Client,
    ep: &Endpoint,
) -> Result<ModelMetadata, CallError> {
    match ep.protocol {
        Protocol::KserveRest => {
            let url = format!("{}/v2/models/{}", ep.url.trim_end_matches('/'), ep.model);
            let bytes = send(ep, client.get(url)).await?;
            parse_model_metadata(&bytes).map_err(CallError::BadReply)
        }
        Protocol::KserveGrpc => {
            let channel = ep
                .grpc
                .clone()
                .ok_or_else(|| CallError::Fatal("no gRPC channel".into()))?;
            let mut client =
                kserve_grpc::grpc_inference_service_client::GrpcInferenceServiceClient::new(
                    channel,
                );
            let request = grpc_request(
                ep,
                kserve_grpc::ModelMetadataRequest {
                    name: ep.model.clone(),
                    version: String::new(),
                },
            )?;
            let reply = client.model_metadata(request).await.map_err(grpc_error)?;
            let r = reply.get_ref();
            let list = |t: &[kserve_grpc::model_metadata_response::TensorMetadata]| {
                t.iter()
                    .take(MAX_METADATA_TENSORS)
                    .map(|t| TensorMetadata {
                        name: t.name.clone(),
                        datatype: t.datatype.clone(),
                        shape: t.shape.iter().take(MAX_METADATA_DIMS).copied().collect(),
                    })
                    .collect()
            };
            Ok(ModelMetadata {
                inputs: list(&r.inputs),
                outputs: list(&r.outputs),
            })
        }
        _ => Err(CallError::Fatal(
            "model metadata is a KServe v2 feature".into(),
        )),
    }
}

/// The id of a RunPod job in flight, so a cancel can reach `/cancel/{id}`.
pub type JobId = Arc<Mutex<Option<String>>>;

/// One call, no retries.
pub async fn call_once(
    client: &reqwest::Client,
    ep: &Endpoint,
    req: &Request,
    job: &JobId,
) -> Result<Reply, CallError> {
    let base = ep.url.trim_end_matches('/');
    match (ep.protocol, req) {
        (Protocol::KserveRest, Request::Tensor { .. } | Request::Bytes { .. }) => {
            let url = format!("{base}/v2/models/{}/infer", ep.model);
            let (name, shape, datatype, raw) = match req {
                Request::Tensor {
                    name,
                    shape,
                    datatype,
                    data,
                } => (name, shape.clone(), datatype.as_str(), datatype.raw(data)),
                Request::Bytes { name, items } => {
                    (name, vec![items.len()], "BYTES", bytes_raw(items))
                }
                _ => unreachable!("matched above"),
            };
            if ep.binary_data {
                let header = serde_json::to_vec(&json!({
                    "inputs": [{ "name": name, "shape": shape, "datatype": datatype, "parameters": { "binary_data_size": raw.len() } }],
                    "parameters": { "binary_data_output": true },
                }))
                .expect("JSON");
                let header_len = header.len();
                let builder = client
                    .post(url)
                    .header("Inference-Header-Content-Length", header_len)
                    .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                    .body([header, raw].concat());
                let (bytes, reply_header) =
                    send_with_header(ep, builder, "inference-header-content-length", ep.timeout)
                        .await?;
                return match reply_header.and_then(|h| h.parse::<usize>().ok()) {
                    Some(n) => parse_kserve_binary(&bytes, n),
                    None => parse_kserve(&bytes),
                }
                .map(Reply::Tensors)
                .map_err(CallError::BadReply);
            }
            let body = match req {
                Request::Tensor {
                    name,
                    shape,
                    datatype,
                    data,
                } => tensor_json(name, shape, *datatype, data),
                Request::Bytes { name, items } => bytes_json(name, items),
                _ => unreachable!("matched above"),
            };
            let builder = client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
            let bytes = send(ep, builder).await?;
            parse_kserve(&bytes)
                .map(Reply::Tensors)
                .map_err(CallError::BadReply)
        }
        (Protocol::KserveGrpc, Request::Tensor { .. } | Request::Bytes { .. }) => {
            use kserve_grpc::model_infer_request::InferInputTensor;
            let channel = ep
                .grpc
                .clone()
                .ok_or_else(|| CallError::Fatal("no gRPC channel".into()))?;
            let mut client =
                kserve_grpc::grpc_inference_service_client::GrpcInferenceServiceClient::new(
                    channel,
                );
            // Numbers as raw little-endian contents; BYTES as bytes_contents, which
            // Triton and MLServer both read.
            let (input, raw_input_contents) = match req {
                Request::Tensor {
                    name,
                    shape,
                    datatype,
                    data,
                } => (
                    InferInputTensor {
                        name: name.clone(),
                        datatype: datatype.as_str().into(),
                        shape: shape.iter().map(|&d| d as i64).collect(),
                        ..Default::default()
                    },
                    vec![datatype.raw(data)],
                ),
                Request::Bytes { name, items } => (
                    InferInputTensor {
                        name: name.clone(),
                        datatype: "BYTES".into(),
                        shape: vec![items.len() as i64],
                        contents: Some(kserve_grpc::InferTensorContents {
                            bytes_contents: items.clone(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    Vec::new(),
                ),
                _ => unreachable!("matched above"),
            };
            let request = grpc_request(
                ep,
                kserve_grpc::ModelInferRequest {
                    model_name: ep.model.clone(),
                    inputs: vec![input],
                    raw_input_contents,
                    ..Default::default()
                },
            )?;
            let reply = client.model_infer(request).await.map_err(grpc_error)?;
            parse_grpc_response(reply.get_ref())
                .map(Reply::Tensors)
                .map_err(CallError::BadReply)
        }
        (Protocol::Runpod, _) => call_runpod(client, ep, req, job).await.0,
        (
            Protocol::OpenaiChat,
            Request::Images {
                jpegs,
                prompt,
                previous_answer,
                ..
            },
        ) => {
            let mut content = vec![json!({ "type": "text", "text": prompt })];
            for jpeg in jpegs {
                content.push(json!({ "type": "image_url", "image_url": { "url": format!("data:image/jpeg;base64,{}", b64(jpeg)), "detail": "low" } }));
            }
            let mut messages = Vec::new();
            if let Some(previous) = previous_answer {
                messages.push(json!({ "role": "assistant", "content": previous }));
            }
            messages.push(json!({ "role": "user", "content": content }));
            let body = json!({ "model": ep.model, "messages": messages });
            let bytes = send(
                ep,
                client
                    .post(format!("{base}/v1/chat/completions"))
                    .json(&body),
            )
            .await?;
            parse_openai_chat(&bytes)
                .map(Reply::Text)
                .map_err(CallError::BadReply)
        }
        (Protocol::OpenaiTranscriptions, Request::Audio { wav, prompt }) => {
            let file = reqwest::multipart::Part::bytes(wav.clone())
                .file_name("audio.wav")
                .mime_str("audio/wav")
                .expect("a valid MIME type");
            let mut form = reqwest::multipart::Form::new()
                .part("file", file)
                .text("model", ep.model.clone())
                .text("response_format", "json");
            if !prompt.is_empty() {
                form = form.text("prompt", prompt.clone());
            }
            let bytes = send(
                ep,
                client
                    .post(format!("{base}/v1/audio/transcriptions"))
                    .multipart(form),
            )
            .await?;
            parse_openai_transcription(&bytes)
                .map(Reply::Text)
                .map_err(CallError::BadReply)
        }
        (protocol, _) => Err(CallError::Fatal(format!(
            "{protocol:?} cannot carry this media"
        ))),
    }
}

/// Backoff before retry `attempt` (1-based): 100 ms × 2^(attempt−1), ± 50 % jitter, at most 5 s.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let base = 0.1 * 2f64.powi(attempt.saturating_sub(1).min(10) as i32);
    Duration::from_secs_f64((base * (0.5 + jitter.clamp(0.0, 1.0))).min(5.0))
}

/// A cheap jitter source in 0..1 (no need for cryptographic randomness).
pub fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut x = nanos as u64 ^ 0x9e37_79b9_7f4a_7c15;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Calls with retries for transient failures (after `Retry-After` when the endpoint
/// says it); returns the reply and how many retries it took. RunPod retries inside
/// (never a second job, see `call_runpod`).
pub async fn call(
    client: &reqwest::Client,
    ep: &Endpoint,
    req: &Request,
    job: &JobId,
) -> (Result<Reply, CallError>, u32) {
    if ep.protocol == Protocol::Runpod {
        return call_runpod(client, ep, req, job).await;
    }
    let mut retries = 0;
    loop {
        match call_once(client, ep, req, job).await {
            Err(e) if e.is_transient() && retries < ep.max_retries => {
                retries += 1;
                tokio::time::sleep(retry_delay(&e, retries)).await;
            }
            other => return (other, retries),
        }
    }
}

/// The RunPod `input` of a request.
fn runpod_input(ep: &Endpoint, req: &Request) -> Value {
    match req {
        Request::Images {
            jpegs,
            width,
            height,
            prompt,
            ..
        } => json!({
            "image": b64(jpegs.last().map(Vec::as_slice).unwrap_or_default()),
            "width": width, "height": height, "prompt": prompt, "model": ep.model,
        }),
        Request::Audio { wav, prompt } => {
            json!({ "audio": b64(wav), "format": "wav", "prompt": prompt, "model": ep.model })
        }
        Request::Tensor {
            name,
            shape,
            datatype,
            data,
        } => {
            json!({ "name": name, "shape": shape, "datatype": datatype.as_str(), "data": data })
        }
        Request::Bytes { name, items } => {
            json!({ "name": name, "datatype": "BYTES", "data": items.iter().map(|i| b64(i)).collect::<Vec<_>>() })
        }
    }
}

/// How long RunPod's `/runsync` may hold a job before it answers with the job's id
/// (`?wait=`, 1 to 300 s): the request timeout, so a slow job is polled, not re-submitted.
fn runsync_wait(ep: &Endpoint) -> Duration {
    ep.timeout
        .clamp(Duration::from_secs(1), Duration::from_secs(300))
}

/// Submits a job: `/runsync?wait=` (its HTTP timeout is the wait plus the request
/// timeout), or `/run` on an endpoint without `/runsync` (404, 405; remembered).
async fn runpod_submit(
    client: &reqwest::Client,
    ep: &Endpoint,
    body: &Value,
) -> Result<Vec<u8>, CallError> {
    let base = ep.url.trim_end_matches('/');
    if !ep.runsync_missing.load(Ordering::Relaxed) {
        let wait = runsync_wait(ep);
        let url = format!("{base}/runsync?wait={}", wait.as_millis());
        match send_with_header(ep, client.post(url).json(body), "", wait + ep.timeout).await {
            Err(CallError::Fatal(m)) if m.starts_with("HTTP 404") || m.starts_with("HTTP 405") => {
                ep.runsync_missing.store(true, Ordering::Relaxed);
            }
            other => return other.map(|(body, _)| body),
        }
    }
    send(ep, client.post(format!("{base}/run")).json(body)).await
}

/// One `/status/{id}` poll (GET as the hosted API; POST where GET is 405, as the SDK's local API).
async fn runpod_status(
    client: &reqwest::Client,
    ep: &Endpoint,
    id: &str,
) -> Result<RunpodStatus, CallError> {
    let url = format!("{}/status/{id}", ep.url.trim_end_matches('/'));
    let bytes = match send(ep, client.get(&url)).await {
        Err(CallError::Fatal(m)) if m.starts_with("HTTP 405") => {
            send(ep, client.post(&url)).await?
        }
        other => other?,
    };
    parse_runpod(&bytes).map_err(CallError::BadReply)
}

/// A RunPod call: one job, however long it takes. The submit is retried only when it
/// never reached the endpoint (connection refused) or was turned away (429): anything
/// else may have queued a job, and a second submit would be a second paid job. Polls are
/// retried. A job abandoned (unfinished after `poll_limit`, or its polls failing) gets
/// `/cancel/{id}`. Returns the reply and the retries it took.
async fn call_runpod(
    client: &reqwest::Client,
    ep: &Endpoint,
    req: &Request,
    job: &JobId,
) -> (Result<Reply, CallError>, u32) {
    let body = json!({ "input": runpod_input(ep, req) });
    let mut retries = 0;
    let submitted = loop {
        match runpod_submit(client, ep, &body).await {
            Err(e) if e.never_reached() && retries < ep.max_retries => {
                retries += 1;
                tokio::time::sleep(retry_delay(&e, retries)).await;
            }
            other => break other,
        }
    };
    let mut status = match submitted.and_then(|b| parse_runpod(&b).map_err(CallError::BadReply)) {
        Ok(status) => status,
        Err(e) => return (Err(e), retries),
    };
    let started = Instant::now();
    let mut wait = Duration::from_millis(50);
    while let RunpodStatus::Pending(id) = &status {
        let id = id.clone();
        *job.lock().unwrap() = Some(id.clone());
        if started.elapsed() > ep.poll_limit {
            let _ = cancel_runpod(client, ep, &id).await;
            *job.lock().unwrap() = None;
            let message = format!("job {id} unfinished after {:?}: cancelled", ep.poll_limit);
            return (Err(CallError::Transient(message)), retries);
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(1));
        match runpod_status(client, ep, &id).await {
            Ok(s) => status = s,
            Err(e) if e.is_transient() && retries < ep.max_retries => {
                retries += 1;
                tokio::time::sleep(retry_delay(&e, retries)).await;
            }
            Err(e) => {
                let _ = cancel_runpod(client, ep, &id).await;
                *job.lock().unwrap() = None;
                return (Err(e), retries);
            }
        }
    }
    *job.lock().unwrap() = None;
    let result = match status {
        RunpodStatus::Completed(output) => Ok(Reply::Output(output)),
        RunpodStatus::Failed(m) => Err(CallError::BadReply(m)),
        RunpodStatus::Pending(_) => unreachable!("the loop ends on a finished job"),
    };
    (result, retries)
}

/// Asks RunPod to cancel job `id` (best effort).
pub async fn cancel_runpod(
    client: &reqwest::Client,
    ep: &Endpoint,
    id: &str,
) -> Result<(), CallError> {
    let url = format!("{}/cancel/{id}", ep.url.trim_end_matches('/'));
    send(ep, client.post(url)).await.map(|_| ())
}

/// Circuit breaker: opens after `threshold` consecutive failures, lets one
/// request through after `cooldown`, closes on its success.
#[derive(Debug)]
pub struct Breaker {
    pub threshold: u32,
    pub cooldown: Duration,
    failures: u32,
    opened: Option<Instant>,
    probing: bool,
}

/// How [`Breaker::admit`] let a request go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Normal,
    /// The one request of the half-open state.
    Probe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half-open",
        }
    }
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold,
            cooldown,
            failures: 0,
            opened: None,
            probing: false,
        }
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        match self.opened {
            None => BreakerState::Closed,
            Some(t) if now.duration_since(t) >= self.cooldown => BreakerState::HalfOpen,
            Some(_) => BreakerState::Open,
        }
    }

    /// Whether a request may go now (in half-open, only one at a time).
    pub fn allow(&mut self, now: Instant) -> bool {
        self.admit(now).is_some()
    }

    /// Lets a request go, telling whether it is the half-open probe: the one request
    /// whose end (success, failure or [`Breaker::abandon`]) must clear `probing`.
    pub fn admit(&mut self, now: Instant) -> Option<Admission> {
        match self.state(now) {
            BreakerState::Closed => Some(Admission::Normal),
            BreakerState::Open => None,
            BreakerState::HalfOpen if self.probing => None,
            BreakerState::HalfOpen => {
                self.probing = true;
                Some(Admission::Probe)
            }
        }
    }

    /// A request ended without telling anything about the endpoint (cancelled or
    /// flushed): an abandoned probe lets the next request probe instead.
    pub fn abandon(&mut self, admission: Admission) {
        if admission == Admission::Probe {
            self.probing = false;
        }
    }

    pub fn success(&mut self) {
        self.failures = 0;
        self.opened = None;
        self.probing = false;
    }

    pub fn failure(&mut self, now: Instant) {
        self.failures += 1;
        if self.probing || (self.threshold > 0 && self.failures >= self.threshold) {
            self.opened = Some(now);
        }
        self.probing = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_errors_show_the_url_without_its_secrets() {
        rtai_core::runtime::ensure_tls_provider();
        // Nothing listens on port 1: the connection is refused at once.
        let url = "http://app:s3cret@127.0.0.1:1/v2/models/m/infer?api_key=s3cret&x=1";
        let err = rtai_core::runtime::runtime()
            .block_on(reqwest::Client::new().get(url).send())
            .unwrap_err();
        let CallError::NotSent(message) = transport(err) else {
            panic!("a refused connection never reached the endpoint")
        };
        assert!(!message.contains("s3cret"), "{message}");
        // (reqwest moves the user info into an Authorization header before sending.)
        assert!(
            message.contains(" to http://127.0.0.1:1/v2/models/m/infer?api_key=***&x=1 failed: "),
            "{message}"
        );
        assert!(message.contains("refused"), "the cause is named: {message}");
    }

    #[test]
    fn kserve_replies_table() {
        let ok = br#"{"model_name":"m","outputs":[{"name":"boxes","shape":[1,2],"datatype":"FP32","data":[[0.5, 1]]},{"name":"t","shape":[1],"datatype":"BYTES","data":["hi"]}]}"#;
        let t = parse_kserve(ok).unwrap();
        assert_eq!(t[0].numbers, vec![0.5, 1.0]);
        assert_eq!(t[1].strings, vec!["hi".to_string()]);
        let bad: &[(&[u8], &str)] = &[
            (b"", "not JSON"),
            (b"[1,2]", "no \"outputs\""),
            (br#"{"error":"model x not found"}"#, "model x not found"),
            (
                br#"{"outputs":[{"shape":[1],"data":[1]}]}"#,
                "without a name",
            ),
            (br#"{"outputs":[{"name":"a","data":[1]}]}"#, "no shape"),
            (
                br#"{"outputs":[{"name":"a","shape":[-1],"data":[1]}]}"#,
                "bad dimension",
            ),
            (br#"{"outputs":[{"name":"a","shape":[1]}]}"#, "no data"),
            (
                br#"{"outputs":[{"name":"a","shape":[1],"data":["x"]}]}"#,
                "non-number",
            ),
            (
                br#"{"outputs":[{"name":"a","shape":[1],"datatype":"BYTES","data":[1]}]}"#,
                "non-string",
            ),
            (
                br#"{"outputs":[{"name":"a","shape":[1],"data":[[[[[[[[[[[1]]]]]]]]]]]}]}"#,
                "nested",
            ),
        ];
        for (body, part) in bad {
            let err = parse_kserve(body).unwrap_err();
            assert!(err.contains(part), "{err} lacks {part}");
        }
    }

    #[test]
    fn model_metadata_table() {
        let m = parse_model_metadata(br#"{"name":"faces","versions":[],"platform":"","inputs":[{"name":"images","datatype":"FP32","shape":[-1,3,320,320]}],"outputs":[{"name":"output0","datatype":"FP32","shape":[-1,22,2100]}],"parameters":{}}"#).unwrap();
        assert_eq!(
            m.inputs,
            vec![TensorMetadata {
                name: "images".into(),
                datatype: "FP32".into(),
                shape: vec![-1, 3, 320, 320]
            }]
        );
        assert_eq!(m.outputs[0].name, "output0");
        // MLServer answers no inputs for a model that declares none.
        assert_eq!(
            parse_model_metadata(br#"{"name":"ball"}"#).unwrap(),
            ModelMetadata::default()
        );
        for bad in [
            &br#"[]"#[..],
            br#"{"inputs":{}}"#,
            br#"{"inputs":[{"datatype":"FP32"}]}"#,
            br#"{"inputs":[{"name":"x","shape":[1.5]}]}"#,
            br#"{"inputs":[{"name":"x","shape":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]}]}"#,
            b"not json",
        ] {
            assert!(
                parse_model_metadata(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn runpod_replies_table() {
        assert_eq!(
            parse_runpod(br#"{"id":"a","status":"COMPLETED","output":{"x":1}}"#).unwrap(),
            RunpodStatus::Completed(json!({"x": 1}))
        );
        assert_eq!(
            parse_runpod(br#"{"id":"a","status":"IN_QUEUE"}"#).unwrap(),
            RunpodStatus::Pending("a".into())
        );
        assert!(
            matches!(parse_runpod(br#"{"id":"a","status":"FAILED","error":"boom"}"#).unwrap(), RunpodStatus::Failed(m) if m.contains("boom"))
        );
        for body in [
            &b"{"[..],
            br#"{"id":"a"}"#,
            br#"{"status":"IN_PROGRESS"}"#,
            br#"{"status":"WEIRD"}"#,
            br#"{"status":7}"#,
        ] {
            assert!(
                parse_runpod(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn openai_replies_table() {
        assert_eq!(
            parse_openai_chat(
                br#"{"choices":[{"message":{"role":"assistant","content":"a ball"}}]}"#
            )
            .unwrap(),
            "a ball"
        );
        assert!(
            parse_openai_chat(br#"{"error":{"message":"bad key"}}"#)
                .unwrap_err()
                .contains("bad key")
        );
        assert!(parse_openai_chat(br#"{"choices":[]}"#).is_err());
        assert!(parse_openai_chat(b"<html>").is_err());
        assert_eq!(
            parse_openai_transcription(br#"{"text":"hello"}"#).unwrap(),
            "hello"
        );
        assert!(parse_openai_transcription(br#"{"txt":"hello"}"#).is_err());
    }

    #[test]
    fn parsers_never_panic_on_mangled_replies() {
        let seeds: [&[u8]; 3] = [
            br#"{"outputs":[{"name":"boxes","shape":[1,6],"datatype":"FP32","data":[1,2,3,4,0.9,0]}]}"#,
            br#"{"id":"a","status":"COMPLETED","output":{"detections":[{"box":[1,2,3,4],"score":0.5}]}}"#,
            br#"{"choices":[{"message":{"content":"x"}}],"text":"y"}"#,
        ];
        let mut x = 0x1234_5678_u64;
        for seed in seeds {
            for _ in 0..2000 {
                let mut b = seed.to_vec();
                for _ in 0..3 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let i = (x as usize) % b.len();
                    match x % 3 {
                        0 => b[i] = (x >> 8) as u8,
                        1 => b.truncate(i),
                        _ => b.insert(i, b"[]{}\",:0"[(x >> 16) as usize % 8]),
                    }
                    if b.is_empty() {
                        break;
                    }
                }
                let _ = parse_kserve(&b);
                let _ = parse_runpod(&b);
                let _ = parse_openai_chat(&b);
                let _ = parse_openai_transcription(&b);
            }
        }
    }

    #[test]
    fn grpc_responses_table() {
        use kserve_grpc::model_infer_response::InferOutputTensor;
        let out = |datatype: &str, shape: Vec<i64>| InferOutputTensor {
            name: "o".into(),
            datatype: datatype.into(),
            shape,
            ..Default::default()
        };
        let raw_f32: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let ok = kserve_grpc::ModelInferResponse {
            outputs: vec![out("FP32", vec![1, 2])],
            raw_output_contents: vec![raw_f32.clone()],
            ..Default::default()
        };
        assert_eq!(
            parse_grpc_response(&ok).unwrap()[0].numbers,
            vec![1.5, -2.0]
        );
        let bytes = kserve_grpc::ModelInferResponse {
            outputs: vec![out("BYTES", vec![1])],
            raw_output_contents: vec![[2u32.to_le_bytes().as_slice(), b"hi"].concat()],
            ..Default::default()
        };
        assert_eq!(
            parse_grpc_response(&bytes).unwrap()[0].strings,
            vec!["hi".to_string()]
        );
        let typed = kserve_grpc::ModelInferResponse {
            outputs: vec![InferOutputTensor {
                contents: Some(kserve_grpc::InferTensorContents {
                    fp32_contents: vec![3.0],
                    ..Default::default()
                }),
                ..out("FP32", vec![1])
            }],
            ..Default::default()
        };
        assert_eq!(parse_grpc_response(&typed).unwrap()[0].numbers, vec![3.0]);
        let bad = [
            (
                kserve_grpc::ModelInferResponse {
                    outputs: vec![out("FP32", vec![1])],
                    raw_output_contents: vec![vec![0; 3]],
                    ..Default::default()
                },
                "whole number",
            ),
            (
                kserve_grpc::ModelInferResponse {
                    outputs: vec![out("FP32", vec![-1])],
                    raw_output_contents: vec![vec![]],
                    ..Default::default()
                },
                "bad dimension",
            ),
            (
                kserve_grpc::ModelInferResponse {
                    outputs: vec![out("COMPLEX", vec![1])],
                    raw_output_contents: vec![vec![0; 8]],
                    ..Default::default()
                },
                "not supported",
            ),
            (
                kserve_grpc::ModelInferResponse {
                    outputs: vec![out("BYTES", vec![1])],
                    raw_output_contents: vec![[9u32.to_le_bytes().as_slice(), b"x"].concat()],
                    ..Default::default()
                },
                "past the end",
            ),
            (
                kserve_grpc::ModelInferResponse {
                    outputs: vec![out("FP32", vec![1]), out("FP32", vec![1])],
                    raw_output_contents: vec![raw_f32],
                    ..Default::default()
                },
                "raw contents",
            ),
        ];
        for (r, part) in bad {
            let err = parse_grpc_response(&r).unwrap_err();
            assert!(err.contains(part), "{err}");
        }
    }

    #[test]
    fn kserve_binary_replies_table() {
        let header = br#"{"outputs":[{"name":"boxes","shape":[1,2],"datatype":"FP32","parameters":{"binary_data_size":8}},{"name":"t","shape":[1],"datatype":"BYTES","data":["x"]}]}"#;
        let body = [
            header.as_slice(),
            &1.5f32.to_le_bytes(),
            &2.5f32.to_le_bytes(),
        ]
        .concat();
        let t = parse_kserve_binary(&body, header.len()).unwrap();
        assert_eq!(t[0].numbers, vec![1.5, 2.5]);
        assert_eq!(t[1].strings, vec!["x".to_string()]);
        assert!(
            parse_kserve_binary(&body, body.len() + 1)
                .unwrap_err()
                .contains("beyond")
        );
        assert!(
            parse_kserve_binary(&body[..body.len() - 1], header.len())
                .unwrap_err()
                .contains("announced")
        );
        assert!(
            parse_kserve_binary(&body, 5).is_err(),
            "a cut header is not JSON"
        );
        let odd = [header.as_slice(), &[0u8; 8]].concat();
        assert!(parse_kserve_binary(&odd, header.len()).is_ok());
        let bad_type = br#"{"outputs":[{"name":"b","shape":[1],"datatype":"FP16","parameters":{"binary_data_size":2}}]}"#;
        assert!(
            parse_kserve_binary(&[bad_type.as_slice(), &[0, 0]].concat(), bad_type.len())
                .unwrap_err()
                .contains("FP16")
        );
    }

    #[test]
    fn the_tensor_body_is_the_json_serde_would_write() {
        let data = [0.5f32, 1.0, 0.25, 114.0 / 255.0];
        let body = tensor_json("images\"x", &[1, 1, 2, 2], InputDatatype::Fp32, &data);
        let v: Value = serde_json::from_slice(&body).unwrap();
        let input = &v["inputs"][0];
        assert_eq!(
            (&input["name"], &input["shape"], &input["datatype"]),
            (&json!("images\"x"), &json!([1, 1, 2, 2]), &json!("FP32"))
        );
        // Each sample in its shortest f32 form: it reads back exactly.
        let back: Vec<f32> = input["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(back, data);
        assert!(body.len() < 120, "{}", String::from_utf8_lossy(&body));
    }

    #[test]
    fn retry_after_and_what_may_be_repeated() {
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        let busy = check_status(
            reqwest::StatusCode::TOO_MANY_REQUESTS,
            b"",
            Some(Duration::from_secs(3)),
        )
        .unwrap_err();
        assert!(busy.is_transient() && busy.never_reached());
        assert!(retry_delay(&busy, 1) >= Duration::from_secs(3));
        let huge = CallError::RetryAfter("HTTP 429".into(), Duration::from_secs(3600));
        assert_eq!(retry_delay(&huge, 1), MAX_RETRY_AFTER);
        let unavailable =
            check_status(reqwest::StatusCode::SERVICE_UNAVAILABLE, b"", None).unwrap_err();
        assert!(unavailable.is_transient() && !unavailable.never_reached());
        for (code, configuration) in [
            (400, false),
            (413, false),
            (422, false),
            (401, true),
            (403, true),
            (404, true),
        ] {
            let e =
                check_status(reqwest::StatusCode::from_u16(code).unwrap(), b"x", None).unwrap_err();
            assert!(!e.is_transient(), "{code}");
            assert_eq!(e.is_configuration(), configuration, "{code}");
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        assert_eq!(backoff(1, 0.5), Duration::from_millis(100));
        assert_eq!(backoff(3, 0.5), Duration::from_millis(400));
        assert_eq!(backoff(1, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(20, 1.0), Duration::from_secs(5));
        let j = jitter();
        assert!((0.0..1.0).contains(&j));
    }

    #[test]
    fn breaker_opens_probes_and_closes() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(5));
        for _ in 0..2 {
            b.failure(t0);
        }
        assert!(b.allow(t0));
        b.failure(t0);
        assert_eq!(b.state(t0), BreakerState::Open);
        assert!(!b.allow(t0 + Duration::from_secs(1)));
        let later = t0 + Duration::from_secs(5);
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert!(b.allow(later), "one probe");
        assert!(!b.allow(later), "only one");
        b.failure(later);
        assert_eq!(b.state(later), BreakerState::Open, "a failed probe reopens");
        let again = later + Duration::from_secs(5);
        assert!(b.allow(again));
        b.success();
        assert_eq!(b.state(again), BreakerState::Closed);
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_one_through() {
        let t0 = Instant::now();
        let mut b = Breaker::new(1, Duration::from_secs(5));
        assert_eq!(b.admit(t0), Some(Admission::Normal));
        b.failure(t0);
        let later = t0 + Duration::from_secs(5);
        assert_eq!(b.admit(later), Some(Admission::Probe));
        assert_eq!(b.admit(later), None, "one probe at a time");
        // A request admitted while closed that ends without a verdict leaves the probe alone.
        b.abandon(Admission::Normal);
        assert_eq!(b.admit(later), None);
        // The probe cancelled or flushed: no verdict, so the next request probes (no lock-up).
        b.abandon(Admission::Probe);
        assert_eq!(
            b.state(later),
            BreakerState::HalfOpen,
            "abandoning neither closes nor reopens"
        );
        assert_eq!(b.admit(later), Some(Admission::Probe));
        b.success();
        assert_eq!(b.state(later), BreakerState::Closed);
    }
}
