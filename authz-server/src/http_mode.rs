//! Envoy's HTTP ext_authz mode: the proxy replays the client's request (method, path, headers,
//! optionally the body) and reads our status: 200 allows, 5xx is an error, anything else denies
//! and is passed to the client as it is.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Response, StatusCode, Version};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use rules::{Decision, Peer, Request, Transport};

use crate::attributes::joined_headers;
use crate::authorizer::Authorizer;
use crate::authorizer::{Checked, Renders};
use crate::metrics::Metrics;

/// The largest body we read from a replayed request; a proxy forwarding more gets 413.
pub(crate) const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Longest a client may take to send a request's headers, and then its body.
pub(crate) const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The header through which HTTP mode asks the proxy to remove upstream request headers.
const HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";

/// Answers one replayed request.
pub(crate) async fn handle<A: Authorizer, B>(
    authorizer: Arc<A>,
    metrics: Arc<Metrics>,
    request: http::Request<B>,
    source: SocketAddr,
    destination: SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let span = crate::otel::http_check(&parts.headers);
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(refused) => return Ok(refused),
    };
    // HTTP mode has no CheckRequest to render for a Rego policy (OPA-Envoy serves gRPC only):
    // the policy's input is built from the neutral view.
    let build = |renders: Renders| {
        let mut view = neutral_request(&parts, &body, source, destination);
        if renders.received {
            view.received = received_line(&parts, &body);
        }
        view
    };
    let Checked {
        request: view,
        evaluation,
        path_for_log,
    } = if span.is_none() {
        authorizer.decide(build).await
    } else {
        crate::otel::decide(span, authorizer.decide(build)).await
    };
    let elapsed = started.elapsed();
    crate::log::decision(
        &metrics,
        "http",
        &view,
        "",
        &path_for_log,
        &evaluation,
        elapsed,
    );
    Ok(match evaluation {
        Ok(evaluation) => to_response(&evaluation.decision),
        Err(_) => plain(StatusCode::SERVICE_UNAVAILABLE, "authorizer unavailable"),
    })
}

/// The replayed request's body, read within [`READ_TIMEOUT`] and [`MAX_BODY_BYTES`]; else the
/// answer naming the bound it broke.
async fn read_body<B>(body: B) -> Result<Bytes, Response<Full<Bytes>>>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let reading = tokio::time::timeout(READ_TIMEOUT, Limited::new(body, MAX_BODY_BYTES).collect());
    match reading.await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => Err(plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large",
        )),
        Ok(Err(_)) => Err(plain(
            StatusCode::BAD_REQUEST,
            "request body could not be read",
        )),
        Err(_) => Err(plain(StatusCode::REQUEST_TIMEOUT, "request body too slow")),
    }
}

fn neutral_request(
    parts: &http::request::Parts,
    body: &Bytes,
    source: SocketAddr,
    destination: SocketAddr,
) -> Request {
    let headers = joined_headers(parts.headers.iter().map(|(name, value)| {
        (
            // http's names are lower case already.
            name.as_str().to_owned(),
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        )
    }));
    let host = parts
        .uri
        .authority()
        .map(std::string::ToString::to_string)
        .or_else(|| headers.get("host").cloned())
        .unwrap_or_default();
    Request {
        transport: Transport::Http,
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(std::string::ToString::to_string)
            .unwrap_or_else(|| "/".to_owned()),
        host,
        // The proxy's connection to us says nothing of the client's scheme; only an
        // absolute-form target does. Unknown stays empty, so host matching strips both default
        // ports (`:80` and `:443`) instead of guessing `http` and keeping a `:443`.
        scheme: parts.uri.scheme_str().unwrap_or_default().to_owned(),
        protocol: protocol(parts.version).to_owned(),
        headers,
        body: String::from_utf8_lossy(body).into_owned(),
        source: peer(source),
        destination: peer(destination),
        ..Request::default()
    }
}

fn peer(address: SocketAddr) -> Peer {
    Peer {
        ip: Some(address.ip()),
        port: u32::from(address.port()),
        principal: String::new(),
    }
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// What Istio's test server echoes in HTTP mode: `METHOD host/path, headers: map[...], body: [...]`,
/// header names in canonical form, sorted.
fn received_line(parts: &http::request::Parts, body: &Bytes) -> String {
    let mut headers: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (name, value) in &parts.headers {
        if name != http::header::HOST {
            headers
                .entry(canonical(name.as_str()))
                .or_default()
                .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
    }
    let headers: Vec<String> = headers
        .into_iter()
        .map(|(name, values)| format!("{name}:[{}]", values.join(" ")))
        .collect();
    let host = parts
        .headers
        .get(http::header::HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(http::uri::PathAndQuery::as_str)
        .unwrap_or("/");
    format!(
        "{} {host}{path}, headers: map[{}], body: [{}]",
        parts.method,
        headers.join(" "),
        String::from_utf8_lossy(body)
    )
}

/// `x-ext-authz` → `X-Ext-Authz`.
fn canonical(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Writes a decision as the HTTP mode's reply.
fn to_response(decision: &Decision) -> Response<Full<Bytes>> {
    match decision {
        Decision::Allow(allow) => {
            let mut response = Response::new(Full::new(Bytes::new()));
            let headers = response.headers_mut();
            for header in &allow.request_headers {
                insert(headers, &header.name, &header.value, header.append);
            }
            for header in &allow.response_headers {
                insert(headers, &header.name, &header.value, true);
            }
            if !allow.headers_to_remove.is_empty() {
                insert(
                    headers,
                    HEADERS_TO_REMOVE,
                    &allow.headers_to_remove.join(","),
                    false,
                );
            }
            response
        }
        Decision::Deny(deny) => {
            let mut response = Response::new(Full::new(Bytes::from(deny.body.clone())));
            // Only 200 means OK to the proxy, so a deny can never be sent as 200; a 1xx is not
            // a final response (the config refuses both; this guards custom authorizers).
            let (_, status) = crate::response::deny_codes(deny);
            *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
            for (name, value) in &deny.headers {
                insert(response.headers_mut(), name, value, true);
            }
            response
        }
    }
}

/// Adds a header; rule output was validated at load, so a name or value that still does not
/// parse is skipped rather than failing the reply.
fn insert(headers: &mut http::HeaderMap, name: &str, value: &str, append: bool) {
    let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) else {
        tracing::warn!(header = name, "dropping a header that is not valid HTTP");
        return;
    };
    if append {
        headers.append(name, value);
    } else {
        headers.insert(name, value);
    }
}

fn plain(status: StatusCode, message: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(message.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
