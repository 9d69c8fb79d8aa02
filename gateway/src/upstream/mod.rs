//! Backends and the pooled keep-alive client that reaches them.

use std::error::Error as _;
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::body::ProxyBody;

/// The pooled HTTP/1.1 client type shared by backends and the HTTP ext_authz transport.
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

/// An upstream service: where it is and the connection pool to it.
#[derive(Debug)]
pub struct Backend {
    /// The name routes use.
    pub name: String,
    /// `host:port`.
    pub authority: Authority,
    /// How long a connect may take.
    pub connect_timeout: Duration,
    client: HttpClient,
}

/// Why a request did not get a response from upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made (refused, unreachable, connect timeout).
    #[error("upstream connect error: {0}")]
    Connect(String),
    /// The connection failed after the request was sent, or the response was malformed.
    #[error("upstream reset or bad response: {0}")]
    Reset(String),
    /// No response headers within the route's timeout.
    #[error("upstream request timeout")]
    Timeout,
}

impl UpstreamError {
    /// The status the client sees, as Envoy answers: 503 when no connection could be made, 502
    /// when one broke, 504 on timeout.
    pub fn status(&self) -> StatusCode {
        match self {
            UpstreamError::Connect(_) => StatusCode::SERVICE_UNAVAILABLE,
            UpstreamError::Reset(_) => StatusCode::BAD_GATEWAY,
            UpstreamError::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

impl Backend {
    /// A backend at `authority` with its own pool.
    pub fn new(name: String, authority: Authority, connect_timeout: Duration) -> Backend {
        Backend {
            name,
            authority,
            connect_timeout,
            client: http_client(connect_timeout),
        }
    }

    /// Sends `req` (whose URI is already absolute and points here) and waits for the response
    /// headers at most `timeout`; the response body streams.
    pub async fn send(
        &self,
        req: Request<ProxyBody>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(timeout, self.client.request(req)).await {
            Err(_) => Err(UpstreamError::Timeout),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) if e.is_connect() => Err(UpstreamError::Connect(describe(&e))),
            Ok(Err(e)) => Err(UpstreamError::Reset(describe(&e))),
        }
    }
}

fn describe(e: &hyper_util::client::legacy::Error) -> String {
    match e.source() {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}
