//! Backends: where a routed request goes after the check, and how it gets there.
//!
//! Module map (who plugs in where):
//! - this file: [`Backend`] (a named service: its endpoints and transport settings),
//!   [`UpstreamError`] (every way a try fails, with the status and body the client sees),
//!   [`Protocol`], and the plain HTTP/1.1 client the ext_authz HTTP transport shares.
//! - `endpoint`: [`Endpoint`], one address with its own pooled client;
//!   [`Endpoint::send`] is one try (metrics `gateway_upstream_requests_total` and the warn log
//!   name backend, endpoint and reason).
//! - `connect`: the connector the pool calls: resolve at connect time, TCP, TLS; counts
//!   connections and handshakes.
//! - `tls`: rustls client settings (roots, mTLS identity, SNI, ALPN by protocol).
//! - `deadline`: the upstream wait of one request (route timeout, or a smaller `grpc-timeout`).
//! - `endpoints`, `balance`, `outlier`, `health_check`: choosing an endpoint per try, passive
//!   and active health. [`Backend::send`] is where a try's endpoint is chosen; retries live in
//!   `proxy/retry.rs` and call [`Endpoint::send`] per try.
//!
//! Failures are never retried here (hyper-util only re-sends a request that never left on a
//! reused connection); a certificate that does not verify is a failed connect, never a
//! downgrade.

mod connect;
pub mod deadline;
pub mod endpoint;
pub mod tls;

use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;

pub use connect::ConnectError;
pub use endpoint::Endpoint;

use crate::body::ProxyBody;

/// The pooled HTTP/1.1 client type of the HTTP ext_authz transport.
pub type HttpClient = Client<HttpConnector, ProxyBody>;

/// Builds a keep-alive client whose connects give up after `connect_timeout`.
pub fn http_client(connect_timeout: Duration) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

/// Which HTTP version the gateway speaks to a backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only: h2c with prior knowledge on `http://`, ALPN offering only `h2` on `https://`.
    Http2,
    /// ALPN offers `h2` and `http/1.1` on `https://`; HTTP/1.1 on `http://`.
    #[default]
    Auto,
}

/// A request extension: set `Host` (and `:authority`) to the chosen endpoint's host, as
/// `host_rewrite = "auto"` asks; the endpoint that sends the try applies it.
#[derive(Debug, Clone, Copy)]
pub struct AutoHost;

/// An upstream service: its endpoints and how to reach them.
#[derive(Debug)]
pub struct Backend {
    /// The name routes use.
    pub name: String,
    /// Where requests go; at least one.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// The settings it was built from: a reload that leaves them unchanged keeps this backend
    /// and its connections.
    pub settings: BackendSettings,
}

/// What a backend is built from (compared across reloads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSettings {
    /// `(tls, host, port)` of each endpoint URL.
    pub urls: Vec<(bool, String, u16)>,
    /// The HTTP version policy.
    pub protocol: Protocol,
    /// How long a connect (TCP and TLS) may take.
    pub connect_timeout: Duration,
    /// TLS settings for `https://` URLs.
    pub tls: tls::BackendTls,
}

impl Backend {
    /// Builds the backend and one endpoint per URL (TLS clients loaded now).
    pub fn new(name: &str, settings: BackendSettings) -> Result<Backend, String> {
        let mut endpoints = Vec::with_capacity(settings.urls.len());
        for (is_tls, host, port) in &settings.urls {
            let tls = if *is_tls {
                Some(tls::TlsClient::new(&settings.tls, host, settings.protocol)?)
            } else {
                None
            };
            endpoints.push(Arc::new(Endpoint::new(
                name,
                host,
                *port,
                settings.protocol,
                settings.connect_timeout,
                tls,
            )?));
        }
        Ok(Backend {
            name: name.to_owned(),
            endpoints,
            settings,
        })
    }

    /// The first endpoint's `host:port`.
    pub fn authority(&self) -> Option<&http::uri::Authority> {
        self.endpoints.first().map(|e| &e.authority)
    }

    /// Sends `req` (its path and headers final) and waits for the response headers at most
    /// `timeout`; the response body streams.
    pub async fn send(
        &self,
        req: Request<ProxyBody>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match self.endpoints.first() {
            Some(endpoint) => endpoint.send(req, timeout).await,
            None => Err(UpstreamError::NoHealthyUpstream),
        }
    }
}

/// Why a try did not get a response from upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made (refused, unreachable, unresolvable, connect timeout).
    #[error("upstream connect error: {0}")]
    Connect(String),
    /// The TLS handshake failed; rustls's words for what did not verify.
    #[error("upstream TLS error: {0}")]
    Tls(String),
    /// The connection failed after the request was sent.
    #[error("upstream reset: {0}")]
    Reset(String),
    /// The backend refused the stream before processing it (HTTP/2 `REFUSED_STREAM`).
    #[error("upstream refused the stream: {0}")]
    RefusedStream(String),
    /// The response was malformed.
    #[error("upstream protocol error: {0}")]
    Protocol(String),
    /// No response headers within the request's upstream wait.
    #[error("upstream request timeout")]
    Timeout,
    /// Every endpoint is ejected or unhealthy.
    #[error("no healthy upstream")]
    NoHealthyUpstream,
}

impl UpstreamError {
    /// The status the client sees, as Envoy answers: 503 when no connection could be made, 502
    /// when one broke or answered nonsense, 504 on timeout.
    pub fn status(&self) -> StatusCode {
        match self {
            UpstreamError::Connect(_)
            | UpstreamError::Tls(_)
            | UpstreamError::RefusedStream(_)
            | UpstreamError::NoHealthyUpstream => StatusCode::SERVICE_UNAVAILABLE,
            UpstreamError::Reset(_) | UpstreamError::Protocol(_) => StatusCode::BAD_GATEWAY,
            UpstreamError::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The body of the local reply (Envoy's texts).
    pub fn body(&self) -> String {
        const BEFORE: &str = "upstream connect error or disconnect/reset before headers";
        match self {
            UpstreamError::Connect(_) => format!("{BEFORE}. reset reason: connection failure"),
            UpstreamError::Tls(reason) => format!(
                "{BEFORE}. reset reason: connection failure, transport failure reason: TLS_error: {reason}"
            ),
            UpstreamError::Reset(_) => format!("{BEFORE}. reset reason: remote reset"),
            UpstreamError::RefusedStream(_) => {
                format!("{BEFORE}. reset reason: remote refused stream reset")
            }
            UpstreamError::Protocol(_) => format!("{BEFORE}. reset reason: protocol error"),
            UpstreamError::Timeout => "upstream request timeout".to_owned(),
            UpstreamError::NoHealthyUpstream => "no healthy upstream".to_owned(),
        }
    }

    /// The failure kind, for metric labels, logs and retry conditions.
    pub fn reason(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect_failure",
            UpstreamError::Tls(_) => "tls_failure",
            UpstreamError::Reset(_) => "reset",
            UpstreamError::RefusedStream(_) => "refused_stream",
            UpstreamError::Protocol(_) => "protocol_error",
            UpstreamError::Timeout => "timeout",
            UpstreamError::NoHealthyUpstream => "no_healthy_upstream",
        }
    }
}
