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

pub mod balance;
mod connect;
pub mod deadline;
pub mod endpoint;
pub mod endpoint_health;
mod endpoints;
mod error;
pub mod health_check;
pub mod outlier;
mod protocol;
pub mod tls;

use std::time::Duration;

use http::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;

pub use connect::ConnectError;
pub use endpoint::Endpoint;
pub use error::UpstreamError;
pub use protocol::{AutoHost, Protocol};

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

/// An upstream service: its endpoints and how to reach them.
#[derive(Debug)]
pub struct Backend {
    /// The name routes use.
    pub name: String,
    /// Where requests go; at least one.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Which endpoint takes a try, and which are ejected (`endpoints`).
    pub balancing: balance::Balancing,
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
    /// Load balancing, outlier detection and health checks.
    pub lb: balance::LbSettings,
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
            balancing: balance::Balancing::new(&settings.lb, endpoints.len()),
            endpoints,
            settings,
        })
    }

    /// The first endpoint's `host:port`.
    pub fn authority(&self) -> Option<&http::uri::Authority> {
        self.endpoints.first().map(|e| &e.authority)
    }

    /// Sends `req` (its path and headers final) once, to the endpoint the balancer picks, and
    /// waits for the response headers at most `timeout`; the response body streams.
    pub async fn send(
        &self,
        req: Request<ProxyBody>,
        timeout: Duration,
    ) -> Result<Response<ProxyBody>, UpstreamError> {
        self.send_try(req, timeout, &mut Vec::new()).await
    }
}
