#![allow(clippy::non_send_fields_in_send_ty)]
//! rtai gRPC plugin: `grpcsink` and `grpcsrc` carry one GStreamer stream over
//! one bidirectional gRPC call (proto/rtai_stream.proto, docs/grpc.md).

use gst::glib;
use gst::prelude::*;

mod grpcsink;
mod grpcsrc;
pub mod transport;
pub mod wire;

use transport::{Compression, NetSettings};

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    rtai_core::SegmentIdMeta::register();
    grpcsink::register(plugin)?;
    grpcsrc::register(plugin)
}

/// Posts the warning of a server reachable beyond loopback without TLS or token.
fn warn_if_exposed(element: &gst::Element, serving: &transport::Serving) {
    if let Some(text) = &serving.exposure {
        gst::element_warning!(
            element,
            gst::ResourceError::Settings,
            ("Serving the stream beyond loopback without TLS or auth-token"),
            ["{text}"]
        );
    }
}

/// The network properties both elements share.
fn net_properties() -> Vec<glib::ParamSpec> {
    vec![
        glib::ParamSpecString::builder("uri")
            .nick("URI")
            .blurb("Client mode: the peer to dial, http://host:port (https:// for TLS)")
            .default_value(Some(transport::DEFAULT_URI))
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("listen")
            .nick("Listen")
            .blurb("Server mode: address:port to listen on (loopback by default; port 0 picks a free port)")
            .default_value(Some(transport::DEFAULT_LISTEN))
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("bound-port")
            .nick("Bound port")
            .blurb("Server mode: the port actually listened on (useful with listen port 0)")
            .maximum(65535)
            .read_only()
            .build(),
        glib::ParamSpecString::builder("auth-token")
            .nick("Auth token")
            .blurb("Bearer token: sent by the client, required by the server when set (write-only, never logged)")
            .write_only()
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("tls-certificate")
            .nick("TLS certificate")
            .blurb("PEM file: the server's certificate, or the client's certificate for mutual TLS")
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("tls-key")
            .nick("TLS key")
            .blurb("PEM file: the private key of tls-certificate")
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("tls-ca")
            .nick("TLS CA")
            .blurb("PEM file: client: the CA that signed the server's certificate; server: require client certificates signed by it")
            .mutable_ready()
            .build(),
        glib::ParamSpecEnum::builder_with_default("compression", Compression::None)
            .nick("Compression")
            .blurb("Compression of the messages this side sends (either side accepts gzip and zstd)")
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("keepalive-interval")
            .nick("Keepalive interval")
            .blurb("HTTP/2 PING after this many ms without traffic, to notice a peer that died silently (0 = off)")
            .maximum(3_600_000)
            .default_value(transport::DEFAULT_KEEPALIVE_INTERVAL_MS)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("keepalive-timeout")
            .nick("Keepalive timeout")
            .blurb("A PING unanswered for this many ms ends the connection (client mode then reconnects)")
            .minimum(1)
            .maximum(3_600_000)
            .default_value(transport::DEFAULT_KEEPALIVE_TIMEOUT_MS)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("max-message-size")
            .nick("Max message size")
            .blurb("Largest message (bytes) sent or accepted; larger ones are refused with an error (at most 2 GiB, what gRPC implementations take)")
            .minimum(1024)
            .maximum(i32::MAX as u32)
            .default_value(transport::DEFAULT_MAX_MESSAGE_SIZE)
            .mutable_ready()
            .build(),
    ]
}

fn set_net_property(net: &mut NetSettings, name: &str, value: &glib::Value) {
    let string = || {
        value
            .get::<Option<String>>()
            .expect("type checked upstream")
            .filter(|s| !s.is_empty())
    };
    match name {
        "uri" => net.uri = string().unwrap_or_else(|| transport::DEFAULT_URI.into()),
        "listen" => net.listen = string().unwrap_or_else(|| transport::DEFAULT_LISTEN.into()),
        "auth-token" => net.auth_token = string(),
        "tls-certificate" => net.tls_certificate = string(),
        "tls-key" => net.tls_key = string(),
        "tls-ca" => net.tls_ca = string(),
        "compression" => net.compression = value.get().expect("type checked upstream"),
        "max-message-size" => net.max_message_size = value.get().expect("type checked upstream"),
        "keepalive-interval" => {
            net.keepalive_interval_ms = value.get().expect("type checked upstream")
        }
        "keepalive-timeout" => {
            net.keepalive_timeout_ms = value.get().expect("type checked upstream")
        }
        other => unreachable!("no property {other}"),
    }
}

fn net_property(net: &NetSettings, name: &str) -> glib::Value {
    match name {
        "uri" => rtai_core::secrets::redact(&net.uri).to_value(),
        "listen" => net.listen.to_value(),
        "tls-certificate" => net.tls_certificate.to_value(),
        "tls-key" => net.tls_key.to_value(),
        "tls-ca" => net.tls_ca.to_value(),
        "compression" => net.compression.to_value(),
        "max-message-size" => net.max_message_size.to_value(),
        "keepalive-interval" => net.keepalive_interval_ms.to_value(),
        "keepalive-timeout" => net.keepalive_timeout_ms.to_value(),
        other => unreachable!("no readable property {other}"),
    }
}

gst::plugin_define!(
    rtaigrpc,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
