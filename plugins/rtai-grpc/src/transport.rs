//! What grpcsink and grpcsrc share: the network settings, dialing (client
//! role), serving (server role), the auth token check and compression.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gst::glib;
use subtle::ConstantTimeEq;
use tonic::codec::CompressionEncoding;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig,
};
use tonic::{Request, Status};

use crate::wire::proto::stream_bridge_client::StreamBridgeClient;
use crate::wire::proto::stream_bridge_server::{StreamBridge, StreamBridgeServer};

pub const DEFAULT_URI: &str = "http://127.0.0.1:50051";
/// Loopback by default: exposing a stream beyond the host is a decision.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
pub const DEFAULT_MAX_MESSAGE_SIZE: u32 = 64 * 1024 * 1024;
/// HTTP/2 keepalive: a PING after this long without traffic (ms; 0 = off).
pub const DEFAULT_KEEPALIVE_INTERVAL_MS: u32 = 10_000;
/// A PING not answered within this long (ms) ends the connection: the peer is gone.
pub const DEFAULT_KEEPALIVE_TIMEOUT_MS: u32 = 20_000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 flow-control windows: the 64 KiB default stalls a stream of 1 MB video
/// frames on every frame; the bridge's own credit bounds memory instead.
const STREAM_WINDOW: u32 = 8 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstRtaiGrpcRole")]
pub enum Role {
    #[enum_value(name = "Client: dial the peer at uri", nick = "client")]
    Client = 0,
    #[enum_value(name = "Server: listen for the peer on listen", nick = "server")]
    Server = 1,
}

#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstRtaiGrpcCompression")]
pub enum Compression {
    #[enum_value(name = "No compression", nick = "none")]
    None = 0,
    #[enum_value(name = "gzip: widely supported, smaller at more CPU", nick = "gzip")]
    Gzip = 1,
    #[enum_value(name = "zstd: faster than gzip at a like ratio", nick = "zstd")]
    Zstd = 2,
}

impl Compression {
    fn encoding(self) -> Option<CompressionEncoding> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some(CompressionEncoding::Gzip),
            Compression::Zstd => Some(CompressionEncoding::Zstd),
        }
    }
}

/// Network settings of either element. `Debug` never shows the token.
#[derive(Clone)]
pub struct NetSettings {
    pub uri: String,
    pub listen: String,
    pub auth_token: Option<String>,
    pub tls_certificate: Option<String>,
    pub tls_key: Option<String>,
    pub tls_ca: Option<String>,
    pub compression: Compression,
    pub max_message_size: u32,
    pub keepalive_interval_ms: u32,
    pub keepalive_timeout_ms: u32,
}

impl NetSettings {
    /// The keepalive interval and timeout, or None when keepalive is off.
    fn keepalive(&self) -> Option<(Duration, Duration)> {
        (self.keepalive_interval_ms > 0).then(|| {
            (
                Duration::from_millis(self.keepalive_interval_ms as u64),
                Duration::from_millis(self.keepalive_timeout_ms.max(1) as u64),
            )
        })
    }
}

impl Default for NetSettings {
    fn default() -> Self {
        Self {
            uri: DEFAULT_URI.into(),
            listen: DEFAULT_LISTEN.into(),
            auth_token: None,
            tls_certificate: None,
            tls_key: None,
            tls_ca: None,
            compression: Compression::None,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            keepalive_interval_ms: DEFAULT_KEEPALIVE_INTERVAL_MS,
            keepalive_timeout_ms: DEFAULT_KEEPALIVE_TIMEOUT_MS,
        }
    }
}

impl std::fmt::Debug for NetSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetSettings")
            .field("uri", &self.uri)
            .field("listen", &self.listen)
            .field("auth_token", &self.auth_token.as_ref().map(|_| "<set>"))
            .field("tls_certificate", &self.tls_certificate)
            .field("tls_ca", &self.tls_ca)
            .field("compression", &self.compression)
            .field("keepalive_interval_ms", &self.keepalive_interval_ms)
            .field("keepalive_timeout_ms", &self.keepalive_timeout_ms)
            .finish()
    }
}

/// An error and its causes on one line (tonic keeps the useful part in `source()`).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

fn read(path: &str, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the {what} {path}: {e}"))
}

/// Server side: every call must carry `authorization: Bearer <auth-token>` when a
/// token is set. Compared in constant time; the token never appears in errors.
#[derive(Clone)]
pub struct TokenCheck(Option<Arc<[u8]>>);

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.0 else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if bool::from(presented.as_bytes().ct_eq(expected)) {
            Ok(request)
        } else {
            Err(Status::unauthenticated("missing or wrong auth token"))
        }
    }
}

/// Client side: adds the token to every call.
#[derive(Clone)]
pub struct TokenInsert(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for TokenInsert {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type Client = StreamBridgeClient<InterceptedService<Channel, TokenInsert>>;

/// Dials `net.uri` (https:// → TLS, verified against `tls-ca` when set, else the
/// system roots are not used: a CA file is required for TLS).
pub async fn connect(net: &NetSettings) -> Result<Client, String> {
    let uri = net.uri.clone();
    let mut endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|e| format!("invalid uri {uri:?}: {e}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW);
    if let Some((interval, timeout)) = net.keepalive() {
        // Pings also while no call is open: a reconnect finds out at once.
        endpoint = endpoint
            .http2_keep_alive_interval(interval)
            .keep_alive_timeout(timeout)
            .keep_alive_while_idle(true);
    }
    if uri.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &net.tls_ca {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca, "CA certificate")?));
        }
        if let (Some(cert), Some(key)) = (&net.tls_certificate, &net.tls_key) {
            tls = tls.identity(Identity::from_pem(
                read(cert, "client certificate")?,
                read(key, "client key")?,
            ));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| format!("TLS setup for {uri}: {}", error_chain(&e)))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {uri}: {}", error_chain(&e)))?;
    let token = match &net.auth_token {
        Some(t) => Some(
            format!("Bearer {t}")
                .parse()
                .map_err(|_| "auth-token must be printable ASCII".to_string())?,
        ),
        None => None,
    };
    let mut client = StreamBridgeClient::with_interceptor(channel, TokenInsert(token))
        .max_decoding_message_size(net.max_message_size as usize)
        .max_encoding_message_size(net.max_message_size as usize)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd);
    if let Some(enc) = net.compression.encoding() {
        client = client.send_compressed(enc);
    }
    Ok(client)
}

/// A running server; dropping it closes the listening socket at once (a stopped
/// element frees its port for the next one) and ends the calls in progress.
pub struct Serving {
    pub local_addr: SocketAddr,
    /// Set when the server is reachable beyond this host without TLS or a token:
    /// the element posts it as a warning.
    pub exposure: Option<String>,
    task: tokio::task::JoinHandle<()>,
}

/// A warning when `addr` is reachable from other hosts and neither TLS nor a
/// token protects what is served there.
pub fn exposure_warning(addr: &SocketAddr, net: &NetSettings) -> Option<String> {
    if addr.ip().is_loopback() || net.tls_certificate.is_some() || net.auth_token.is_some() {
        return None;
    }
    Some(format!(
        "listening on {addr}, beyond loopback, without TLS (tls-certificate) or auth-token: \
         anyone who can reach this address can send or take the stream"
    ))
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.task.abort();
        // Wait until the listener is really closed, unless we are on the runtime itself.
        if tokio::runtime::Handle::try_current().is_err() {
            let task = &mut self.task;
            let _ = rtai_core::runtime::runtime()
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), task).await });
        }
    }
}

/// Binds `net.listen` at once (so a busy port is an error now, and port 0 is
/// resolved) and serves `service` on the shared runtime. `on_error` gets a
/// fatal server error.
pub fn serve<S: StreamBridge>(
    service: S,
    net: &NetSettings,
    on_error: impl FnOnce(String) + Send + 'static,
) -> Result<Serving, String> {
    let addr: SocketAddr = net
        .listen
        .parse()
        .map_err(|_| format!("listen must be host:port, got {:?}", net.listen))?;
    let listener =
        std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("listen socket: {e}"))?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| format!("listen socket: {e}"))?;
    let mut builder = Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW);
    if let Some((interval, timeout)) = net.keepalive() {
        builder = builder
            .http2_keepalive_interval(Some(interval))
            .http2_keepalive_timeout(Some(timeout));
    }
    if let Some(cert) = &net.tls_certificate {
        let key = net
            .tls_key
            .as_ref()
            .ok_or("tls-certificate needs tls-key")?;
        let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(
            read(cert, "certificate")?,
            read(key, "key")?,
        ));
        if let Some(ca) = &net.tls_ca {
            // A CA on the server side means client certificates are required.
            tls = tls.client_ca_root(Certificate::from_pem(read(ca, "client CA certificate")?));
        }
        builder = builder
            .tls_config(tls)
            .map_err(|e| format!("TLS setup: {}", error_chain(&e)))?;
    }
    let mut server = StreamBridgeServer::new(service)
        .max_decoding_message_size(net.max_message_size as usize)
        .max_encoding_message_size(net.max_message_size as usize)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd);
    if let Some(enc) = net.compression.encoding() {
        server = server.send_compressed(enc);
    }
    let token = TokenCheck(net.auth_token.as_ref().map(|t| Arc::from(t.as_bytes())));
    let runtime = rtai_core::runtime::runtime();
    let task = runtime.spawn(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => return on_error(format!("listen socket: {e}")),
        };
        // serve_with_incoming does not apply the builder's tcp_nodelay: set it on each
        // accepted socket, or Nagle holds a small reply (credit, control ack) until the
        // peer's next packet.
        let incoming = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            |conn| {
                if let Ok(socket) = &conn {
                    let _ = socket.set_nodelay(true);
                }
                conn
            },
        );
        let service = InterceptedService::new(server, token);
        if let Err(e) = builder
            .add_service(service)
            .serve_with_incoming(incoming)
            .await
        {
            on_error(format!(
                "gRPC server on {local_addr} stopped: {}",
                error_chain(&e)
            ));
        }
    });
    Ok(Serving {
        local_addr,
        exposure: exposure_warning(&local_addr, net),
        task,
    })
}

/// Reconnect delays: 100 ms doubling to 5 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(6)).min(5_000))
}

/// Validates the peer's Hello.
pub fn check_hello(hello: &crate::wire::proto::Hello) -> Result<(), Status> {
    if hello.protocol_version != crate::wire::PROTOCOL_VERSION {
        return Err(Status::failed_precondition(format!(
            "protocol version {} is not supported; this peer speaks rtai.stream.v1 version {}",
            hello.protocol_version,
            crate::wire::PROTOCOL_VERSION
        )));
    }
    Ok(())
}

/// Adds the likely cause to a bare transport failure of a plain-text call.
pub fn with_hint(uri: &str, message: String) -> String {
    if uri.starts_with("http://") && message.contains("transport error") {
        format!("{message} (if the peer uses TLS, dial https:// with tls-ca)")
    } else {
        message
    }
}

/// A status text, and whether retrying cannot help (auth, version, bad data).
pub fn status_error(status: &Status) -> (String, bool) {
    use tonic::Code;
    let permanent = matches!(
        status.code(),
        Code::Unauthenticated
            | Code::PermissionDenied
            | Code::FailedPrecondition
            | Code::InvalidArgument
            | Code::AlreadyExists
            | Code::Unimplemented
            | Code::OutOfRange
            | Code::ResourceExhausted
    );
    (
        format!("{:?}: {}", status.code(), error_chain(status)),
        permanent,
    )
}

/// What an element runs while started: a server, or the task that dials.
pub enum Running {
    // Held for its Drop, which shuts the server down.
    Server(#[allow(dead_code)] Serving),
    Client(tokio::task::JoinHandle<()>),
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Running::Client(task) = self {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which servers are exposed: one row per combination.
    #[test]
    fn exposure_warning_only_beyond_loopback_without_tls_or_token() {
        let net = |token: bool, tls: bool| NetSettings {
            auth_token: token.then(|| "t".to_string()),
            tls_certificate: tls.then(|| "cert.pem".to_string()),
            ..NetSettings::default()
        };
        let rows = [
            ("127.0.0.1:1", false, false, false),
            ("127.0.0.2:1", false, false, false),
            ("[::1]:1", false, false, false),
            ("0.0.0.0:1", false, false, true),
            ("[::]:1", false, false, true),
            ("192.168.1.5:1", false, false, true),
            ("0.0.0.0:1", true, false, false),
            ("0.0.0.0:1", false, true, false),
            ("0.0.0.0:1", true, true, false),
        ];
        for (addr, token, tls, warns) in rows {
            let addr: SocketAddr = addr.parse().unwrap();
            let warning = exposure_warning(&addr, &net(token, tls));
            assert_eq!(warning.is_some(), warns, "{addr} token={token} tls={tls}");
            if let Some(w) = warning {
                assert!(
                    w.contains(&addr.to_string()) && w.contains("auth-token"),
                    "{w}"
                );
            }
        }
    }
}
