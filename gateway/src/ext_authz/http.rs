//! The HTTP transport: Envoy's `http_service` protocol.
//!
//! The authorization request keeps the method; its path is `path_prefix` + the original path; it
//! carries `host`, `authorization`, the allowed headers and (when asked) the body. A 200 allows,
//! a 5xx is an error, anything else is a deny passed to the client.

use std::time::Duration;

use ::http::header::{self, HeaderName, HeaderValue};
use ::http::{Request, StatusCode, Uri};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};

use super::check_request::{authority, path_and_query};
use super::mutation::{AppendAction, is_protected};
use super::{
    Allowed, AuthzBackend, CheckInput, Denied, HeaderFilter, HttpSettings, PARTIAL_BODY_HEADER,
    Verdict,
};
use crate::body;

/// The largest denied body read from an HTTP authorization server.
const MAX_DENIED_BODY: usize = 1 << 20;

/// The header an HTTP authorization server uses to name request headers to remove on allow.
const HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";

/// Sends one authorization request and waits at most `timeout` for the whole answer.
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
    let exchange = async {
        let response = backend
            .http_client()
            .request(request)
            .await
            .map_err(|e| format!("http transport: {e}"))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_DENIED_BODY)
            .collect()
            .await
            .map_err(|e| format!("http transport body: {e}"))?
            .to_bytes();
        Ok::<_, String>((parts, body))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Verdict::Error {
            reason: format!("timeout after {}ms", timeout.as_millis()),
            response: None,
        },
        Ok(Err(reason)) => Verdict::Error {
            reason,
            response: None,
        },
        Ok(Ok((parts, body))) => verdict(settings, parts.status, parts.headers, body),
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
    request
        .body(body::full(body))
        .map_err(|e| format!("authorization request: {e}"))
}

/// Reads the authorization server's HTTP answer.
pub fn verdict(
    settings: &HttpSettings,
    status: StatusCode,
    headers: header::HeaderMap,
    body: Bytes,
) -> Verdict {
    if status == StatusCode::OK {
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
        return Verdict::Allow(allowed);
    }
    if status.is_server_error() {
        return Verdict::Error {
            reason: format!("authorization server answered {status}"),
            response: None,
        };
    }
    let mut passed = Vec::new();
    for (name, value) in &headers {
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
    Verdict::Deny(Denied {
        status: Some(status),
        headers: passed,
        body,
    })
}
