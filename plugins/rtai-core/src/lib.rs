//! Shared code of the rtai plugin collection.
//!
//! - [`protocol`]: the speculation / control protocol (segment-id meta, segment
//!   start/commit/end/cancel events and the `cancel-ack` bus message) that
//!   specvadgate, batcher, inferclient, analyticssink and the gRPC bridge agree on.
//! - [`control`]: control messages across transports (JSON wire form, acks,
//!   retries, dedupe, rate limit), mapped to and from the protocol's events;
//!   `control_http` (feature `control-http`): its SSE / POST routes for axum servers.
//! - [`prosody`]: a speech segment's pitch, level and rate (`rtai-prosody` event).
//! - [`runtime`]: the shared tokio runtime for network work.
//! - [`http_auth`]: bearer tokens and the Host check of the embedded HTTP servers.
//! - [`inference`]: how inference results travel on buffers (ROI params, result meta).
//! - [`secrets`]: redaction of credentials in URLs for logs, errors and readable properties.
//! - `store` (feature `store`): the SQL store (SQLite or PostgreSQL) with
//!   per-schema migrations, shared by analyticssink and live delivery.
//! - [`stats`]: latency histograms with P50/P95/P99 for `stats` properties and metrics.
//! - [`tensor`]: raw model output tensors on buffers (`RtaiTensorMeta`).

pub mod control;
#[cfg(feature = "control-http")]
pub mod control_http;
mod custom_meta;
pub mod http_auth;
pub mod inference;
pub mod inferred;
pub mod prosody;
pub mod protocol;
pub mod runtime;
pub mod secrets;
pub mod stats;
#[cfg(feature = "store")]
pub mod store;
pub mod tensor;
#[cfg(feature = "testing")]
pub mod testing;

pub use inference::InferenceResult;
pub use inferred::{INFERRED_META_NAME, InferredMeta};
pub use protocol::{CancelAck, CancelTracker, SegmentEvent, SegmentIdMeta};
