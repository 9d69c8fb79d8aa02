//! The HTTP transport: Envoy's `http_service` protocol.
//!
//! The authorization request keeps the method; its path is `path_prefix` + the original path; it
//! carries `host`, `authorization`, the allowed headers and (when asked) the body. A 200 allows,
//! a 5xx is an error, anything else is a deny passed to the client.

use std::time::Duration;

use ::http::header::{self, HeaderName, HeaderValue};
use ::http::{Request, StatusCode, Uri};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::backend::AuthzBackend;
use super::check_request::{HeaderFilter, PARTIAL_BODY_HEADER};
use super::input::CheckInput;
use super::mutation::{Allowed, AppendAction, Denied, is_protected};
use super::verdict::Verdict;
use crate::body;
use crate::request::{authority, path_and_query};

/// The largest denied body read from an HTTP authorization server; a longer one is truncated.
const MAX_DENIED_BODY: usize = 1 << 20;

/// The header an HTTP authorization server uses to name request headers to remove on allow.
const HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";

/// Settings of the HTTP transport (Envoy's `http_service`).
#[derive(Debug, Default)]
pub struct HttpSettings {
    /// Prepended to the original path.
    pub path_prefix: String,
    /// Authorization-response headers copied to the upstream request on allow.
    pub allowed_upstream_headers: Vec<HeaderName>,
    /// Authorization-response headers passed to the client on deny (empty: all).
    pub allowed_client_headers: Vec<HeaderName>,
    /// Authorization-response headers added to the client's response on allow.
    pub allowed_client_headers_on_success: Vec<HeaderName>,
}

/// Sends one authorization request and waits at most `timeout` for the whole answer (a denial
/// whose body is late is still a denial).
pub async fn check(
    backend: &AuthzBackend,
    settings: &HttpSettings,
    filter: &HeaderFilter,
    input: &CheckInput<'_>,
    timeout: Duration,
) -> Verdict {
    let request = match auth_request(backend, settings, filter, input) {
        Ok(r) => r,
        Err(reason) => {
            return Verdict::Error {
                reason,
                response: None,
            };
        }
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let head = match tokio::time::timeout_at(deadline, backend.http_client().request(request)).await
    {
        Err(_) => {
            return Verdict::Error {
                reason: format!("timeout after {}ms", timeout.as_millis()),
                response: None,
            };
        }
        Ok(Err(e)) => {
            return Verdict::Error {
                reason: format!("http transport: {e}"),
                response: None,
            };
        }
        Ok(Ok(response)) => response,
    };
    // The status decides before any body is read: an allow or an error needs no body, and a
    // deny must stay a deny whatever happens to its body (an error would let
    // `failure_mode_allow` through).
    let (parts, body) = head.into_parts();
    let body = if parts.status == StatusCode::OK || parts.status.is_server_error() {
        Bytes::new()
    } else {
        denied_body(body, deadline).await
    };
    verdict(settings, parts.status, &parts.headers, body)
}

/// Reads a denial's body: the first [`MAX_DENIED_BODY`] bytes of a longer one, nothing when it
/// fails or does not arrive before `deadline` (a cut-off body is not what the server meant).
async fn denied_body(body: Incoming, deadline: tokio::time::Instant) -> Bytes {
    let read = async {
        let mut body = std::pin::pin!(body);
        let mut out = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            let room = MAX_DENIED_BODY - out.len();
            if data.len() > room {
                out.extend_from_slice(&data[..room]);
                tracing::warn!(
                    limit = MAX_DENIED_BODY,
                    "ext_authz denial body over the limit; truncated"
                );
                break;
            }
            out.extend_from_slice(&data);
        }
        Ok::<_, hyper::Error>(out.freeze())
    };
    match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "ext_authz denial body failed; denying with an empty body");
            Bytes::new()
        }
        Err(_) => {
            tracing::warn!("ext_authz denial body timed out; denying with an empty body");
            Bytes::new()
        }
    }
}

fn auth_request(
    backend: &AuthzBackend,
    settings: &HttpSettings,
    filter: &HeaderFilter,
    input: &CheckInput<'_>,
) -> Result<Request<body::ProxyBody>, String> {
    let parts = input.parts;
    let uri: Uri = format!(
        "http://{}{}{}",
        backend.authority,
        settings.path_prefix,
        path_and_query(parts)
    )
    .parse()
    .map_err(|e| format!("authorization request path: {e}"))?;
    let mut request = Request::builder().method(parts.method.clone()).uri(uri);
    let headers = request.headers_mut().ok_or("request builder failed")?;
    if let Ok(host) = HeaderValue::from_str(&authority(parts)) {
        headers.insert(header::HOST, host);
    }
    if let Some(auth) = parts.headers.get(header::AUTHORIZATION) {
        headers.insert(header::AUTHORIZATION, auth.clone());
    }
    // Only headers named by `allowed_headers` go beyond Envoy's fixed set; an unset list sends
    // none, as Envoy's HTTP service does.
    if filter.allowed.is_some() {
        for (name, value) in &parts.headers {
            if filter.allows(name) && *name != header::CONTENT_LENGTH && *name != header::HOST {
                headers.append(name.clone(), value.clone());
            }
        }
    }
    let body = match &input.body {
        Some(b) => {
            headers.insert(
                HeaderName::from_static(PARTIAL_BODY_HEADER),
                HeaderValue::from_static(if b.partial { "true" } else { "false" }),
            );
            b.bytes.clone()
        }
        None => Bytes::new(),
    };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    crate::otel::inject_current(headers);
    request
        .body(body::full(body))
        .map_err(|e| format!("authorization request: {e}"))
}

/// Reads the authorization server's HTTP answer: 200 allows, a 5xx is an error, anything else
/// denies.
pub fn verdict(
    settings: &HttpSettings,
    status: StatusCode,
    headers: &header::HeaderMap,
    body: Bytes,
) -> Verdict {
    if status == StatusCode::OK {
        return Verdict::Allow(allowed(settings, headers));
    }
    if status.is_server_error() {
        return Verdict::Error {
            reason: format!("authorization server answered {status}"),
            response: None,
        };
    }
    Verdict::Deny(Denied {
        status: Some(status),
        headers: passed_to_client(settings, headers),
        body,
    })
}

/// An allow: the upstream headers the policy lets through, the headers the server names in
/// `x-envoy-auth-headers-to-remove` (never a protected one), the response headers on success.
fn allowed(settings: &HttpSettings, headers: &header::HeaderMap) -> Allowed {
    let mut allowed = Allowed::default();
    for name in &settings.allowed_upstream_headers {
        if let Some(value) = headers.get(name) {
            allowed.headers_to_set.push((name.clone(), value.clone()));
        }
    }
    for value in headers.get_all(HEADERS_TO_REMOVE) {
        let Ok(value) = value.to_str() else { continue };
        for name in value.split(',').map(str::trim).filter(|n| !is_protected(n)) {
            if let Ok(name) = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
                allowed.headers_to_remove.push(name);
            }
        }
    }
    for name in &settings.allowed_client_headers_on_success {
        for value in headers.get_all(name) {
            allowed.response_headers.push((
                name.clone(),
                value.clone(),
                AppendAction::AppendIfExistsOrAdd,
            ));
        }
    }
    allowed
}

/// A denial's headers the client gets: all but `host` when no list is set, else the listed ones
/// plus `www-authenticate` and `location`; never framing headers.
fn passed_to_client(
    settings: &HttpSettings,
    headers: &header::HeaderMap,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut passed = Vec::new();
    for (name, value) in headers {
        let wanted = if settings.allowed_client_headers.is_empty() {
            *name != header::HOST
        } else {
            settings.allowed_client_headers.contains(name)
                || [header::WWW_AUTHENTICATE, header::LOCATION].contains(name)
        };
        let framing = [
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
            header::CONNECTION,
        ]
        .contains(name);
        if wanted && !framing {
            passed.push((name.clone(), value.clone()));
        }
    }
    passed
}
