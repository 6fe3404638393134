//! The RTMP server shared by the plugin's elements: one listener per address,
//! mounts registered by elements (application + stream name, like RTSP mount
//! points), publish authorisation with stream keys, and FLV framing.

pub mod flv;
pub mod keys;
pub mod server;

pub use server::{Event, Limits, MountConfig, Registration};
