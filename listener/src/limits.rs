//! The bounds one listener puts on its clients, with safe defaults named after Envoy's settings
//! where Envoy has one, so a config that says nothing still bounds what one client can hold.

use std::time::Duration;

/// Envoy's `max_concurrent_streams` as Envoy's edge guide sets it.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Connections one listener serves at once. With a 20,000-descriptor `ulimit -n` this leaves
/// room for the upstream and authorization connections the requests need.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10_000;
/// Envoy's `max_headers_count` default.
pub const DEFAULT_MAX_REQUEST_HEADERS: u32 = 100;
/// Envoy's `max_request_headers_kb` default, 60 KiB.
pub const DEFAULT_MAX_REQUEST_HEADER_BYTES: usize = 60 * 1024;
/// How long a client may take to send a request's headers. Envoy leaves its
/// `request_headers_timeout` off; a slowloris client then holds a connection until the idle
/// timeout (an hour). Legitimate clients send their headers in one packet, so 10 s is generous.
pub const DEFAULT_REQUEST_HEADERS_TIMEOUT: Duration = Duration::from_secs(10);
/// Envoy's `stream_idle_timeout` default.
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Envoy's `idle_timeout` default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// Envoy's `connection_keepalive.timeout` default (and hyper's).
pub const DEFAULT_HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// h2's own default: streams a client may reset before the server has accepted them.
pub const DEFAULT_HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS: u32 = 20;
/// hyper's default: streams the server may reset for protocol errors before it sends GOAWAY.
pub const DEFAULT_HTTP2_MAX_LOCAL_ERROR_RESET_STREAMS: u32 = 1024;

/// A listener's validated limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Request header fields per request (Envoy's `max_headers_count`).
    pub max_request_headers: usize,
    /// Total request header bytes (Envoy's `max_request_headers_kb`).
    pub max_request_header_bytes: usize,
    /// The time a client has to send a request's headers.
    pub request_headers_timeout: Duration,
    /// The time a request may make no progress; `None` is off.
    pub stream_idle_timeout: Option<Duration>,
    /// The time a connection may have no request in flight; `None` is off.
    pub idle_timeout: Option<Duration>,
    /// Requests per connection; `None` is unlimited.
    pub max_requests_per_connection: Option<u64>,
    /// The HTTP/2 PING interval; `None` is off.
    pub http2_keepalive_interval: Option<Duration>,
    /// How long a PING may go unanswered.
    pub http2_keepalive_timeout: Duration,
    /// Client-reset streams not yet accepted, before GOAWAY.
    pub http2_max_pending_accept_reset_streams: usize,
    /// Server-reset streams for protocol errors, before GOAWAY.
    pub http2_max_local_error_reset_streams: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS as usize,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            max_request_headers: DEFAULT_MAX_REQUEST_HEADERS as usize,
            max_request_header_bytes: DEFAULT_MAX_REQUEST_HEADER_BYTES,
            request_headers_timeout: DEFAULT_REQUEST_HEADERS_TIMEOUT,
            stream_idle_timeout: Some(DEFAULT_STREAM_IDLE_TIMEOUT),
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            max_requests_per_connection: None,
            http2_keepalive_interval: None,
            http2_keepalive_timeout: DEFAULT_HTTP2_KEEPALIVE_TIMEOUT,
            http2_max_pending_accept_reset_streams: DEFAULT_HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS
                as usize,
            http2_max_local_error_reset_streams: DEFAULT_HTTP2_MAX_LOCAL_ERROR_RESET_STREAMS
                as usize,
        }
    }
}

impl Limits {
    /// An admin port's limits derived from its process's listeners: few connections and short
    /// idle times — it serves probes and scrapes, never long requests — with the same header
    /// limits and header timeout.
    pub fn for_admin(&self) -> Limits {
        Limits {
            max_connections: 64,
            stream_idle_timeout: Some(Duration::from_secs(60)),
            idle_timeout: Some(Duration::from_secs(5 * 60)),
            ..self.clone()
        }
    }
}
