//! One endpoint of a backend: its address, the pooled client that keeps connections to it open
//! (HTTP/1.1 keep-alive, or one multiplexed HTTP/2 connection), and one try of a request.

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HOST, TE};
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::connect::{ConnectError, Connector};
use super::error::UpstreamError;
use super::protocol::{AutoHost, Protocol};
use super::tls::TlsClient;
use crate::body::ProxyBody;
use crate::metrics::{self, EndpointLabels, UpstreamOutcomeLabels};
use crate::redact;

/// How idle pooled connections may stay open.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// One address of a backend and its connection pool.
#[derive(Debug)]
pub struct Endpoint {
    /// `host:port`, the port always written out (metric label and log field).
    pub label: Arc<str>,
    /// The backend's name.
    pub backend: Arc<str>,
    /// `host:port`.
    pub authority: Authority,
    /// The host as written in the URL (a name, an IPv4 address or a bracketed IPv6 address).
    pub host: String,
    /// The port (the scheme's default when the URL has none).
    pub port: u16,
    /// `http` or `https`.
    pub scheme: Scheme,
    /// The HTTP version policy towards this endpoint.
    pub protocol: Protocol,
    /// What `host_rewrite = "auto"` sets: `host`, with `:port` unless it is the scheme's default.
    auto_host: HeaderValue,
    pub(super) client: Client<Connector, ProxyBody>,
    /// Requests in flight, ejection and active health (`endpoints`).
    pub health: super::endpoint_health::EndpointHealth,
}

impl Endpoint {
    /// An endpoint at `host:port`; `tls` is set exactly for `https://`. Nothing connects until the
    /// first request.
    pub fn new(
        backend: &str,
        host: &str,
        port: u16,
        protocol: Protocol,
        connect_timeout: Duration,
        tls: Option<TlsClient>,
    ) -> Result<Endpoint, String> {
        let scheme = if tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        let authority: Authority = format!("{host}:{port}")
            .parse()
            .map_err(|_| format!("`{host}:{port}` is not a valid host and port"))?;
        let default_port = if tls.is_some() { 443 } else { 80 };
        let auto_host = if port == default_port {
            host.to_owned()
        } else {
            authority.to_string()
        };
        let auto_host = HeaderValue::from_str(&auto_host)
            .map_err(|_| format!("`{host}` is not a valid host"))?;
        let labels = EndpointLabels {
            backend: Arc::from(backend),
            endpoint: Arc::from(authority.as_str()),
        };
        let connector = Connector::new(host, port, connect_timeout, tls, labels.clone());
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            // `http2` speaks h2 from the first byte (prior knowledge on http://, the only ALPN
            // offer on https://); `auto` speaks what ALPN chose, HTTP/1.1 without TLS.
            .http2_only(protocol == Protocol::Http2)
            .build(connector);
        let health = super::endpoint_health::EndpointHealth::for_endpoint(&labels);
        Ok(Endpoint {
            health,
            label: labels.endpoint,
            backend: labels.backend,
            authority,
            host: host.to_owned(),
            port,
            scheme,
            protocol,
            auto_host,
            client,
        })
    }

    /// One try: sends `req` here and waits at most `timeout` for the response headers; the
    /// response body streams past the timeout. Counts the outcome and logs a failure with the
    /// backend, the endpoint and the reason.
    pub async fn send(
        &self,
        mut req: Request<ProxyBody>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        self.aim(&mut req);
        let result = match tokio::time::timeout(timeout, self.client.request(req)).await {
            Err(_) => Err(UpstreamError::Timeout),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(classify(&e)),
        };
        let outcome = match &result {
            Ok(resp) => status_class(resp.status().as_u16()),
            Err(e) => e.reason(),
        };
        metrics::upstream()
            .requests
            .get_or_create(&UpstreamOutcomeLabels {
                backend: self.backend.clone(),
                endpoint: self.label.clone(),
                outcome,
            })
            .inc();
        if let Err(e) = &result {
            tracing::warn!(backend = %redact::escape(&self.backend), endpoint = %redact::escape(&self.label), reason = e.reason(), error = %redact::escape(&e.to_string()), "upstream try failed");
        }
        result
    }

    /// Points the request at this endpoint: scheme, `:authority` and `Host` (the route's host
    /// rewrite, else the canonical host), the HTTP version the pool will speak, and `te:
    /// trailers` only where h2 may carry it.
    fn aim(&self, req: &mut Request<ProxyBody>) {
        if req.extensions_mut().remove::<AutoHost>().is_some() {
            req.headers_mut().insert(HOST, self.auto_host.clone());
        }
        // h2 sends the URI's authority as `:authority`; it must equal `Host` (RFC 9113 §8.3.1).
        // HTTP/1.1 sends the path only, so the authority is then just the pool's key.
        let authority = req
            .headers()
            .get(HOST)
            .and_then(|h| Authority::try_from(h.as_bytes()).ok())
            .unwrap_or_else(|| self.authority.clone());
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(authority);
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
        // An h2 request on an `auto` pool would force h2c prior knowledge: say HTTP/1.1 there
        // and let ALPN upgrade the connection.
        *req.version_mut() = match self.protocol {
            Protocol::Http2 => Version::HTTP_2,
            Protocol::Http1 | Protocol::Auto => Version::HTTP_11,
        };
        let may_be_h2 = match self.protocol {
            Protocol::Http2 => true,
            Protocol::Auto => self.scheme == Scheme::HTTPS,
            Protocol::Http1 => false,
        };
        if !may_be_h2 {
            req.headers_mut().remove(TE);
        }
    }
}

/// `2xx`, `4xx`, ... for the outcome label.
fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The kind of failure hyper-util's error stands for.
fn classify(e: &hyper_util::client::legacy::Error) -> UpstreamError {
    let mut source = e.source();
    while let Some(err) = source {
        if let Some(connect) = err.downcast_ref::<ConnectError>() {
            return match connect {
                ConnectError::Tls(reason) => UpstreamError::Tls(reason.clone()),
                other => UpstreamError::Connect(other.to_string()),
            };
        }
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return match h2.reason() {
                Some(h2::Reason::REFUSED_STREAM) => UpstreamError::RefusedStream(h2.to_string()),
                Some(
                    h2::Reason::PROTOCOL_ERROR
                    | h2::Reason::FRAME_SIZE_ERROR
                    | h2::Reason::COMPRESSION_ERROR,
                ) => UpstreamError::Protocol(h2.to_string()),
                _ => UpstreamError::Reset(h2.to_string()),
            };
        }
        if let Some(hyper) = err.downcast_ref::<hyper::Error>()
            && (hyper.is_parse() || hyper.is_parse_status())
        {
            return UpstreamError::Protocol(hyper.to_string());
        }
        source = err.source();
    }
    if e.is_connect() {
        UpstreamError::Connect(describe(e))
    } else {
        UpstreamError::Reset(describe(e))
    }
}

fn describe(e: &hyper_util::client::legacy::Error) -> String {
    match e.source() {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}
