//! The `CheckRequest`, filled as Envoy fills it (`check_request_utils.cc`).

use std::collections::HashMap;
use std::net::SocketAddr;

use extauthz_proto::v3::{
    Address, AttributeContext, CheckRequest, SocketAddress, address, attribute_context,
    socket_address,
};
use http::{HeaderName, Version};

use super::input::CheckInput;
use crate::headers::joined;
use crate::request::{authority, path_and_query};

/// The header Envoy adds to a check that carries a body: whether the body was cut short.
pub const PARTIAL_BODY_HEADER: &str = "x-envoy-auth-partial-body";

/// Which request headers a check carries. Pseudo headers are always sent.
#[derive(Debug, Default)]
pub struct HeaderFilter {
    /// Only these (when set).
    pub allowed: Option<Vec<HeaderName>>,
    /// Never these.
    pub disallowed: Vec<HeaderName>,
}

impl HeaderFilter {
    /// Whether header `name` goes into the check.
    pub fn allows(&self, name: &HeaderName) -> bool {
        self.allowed.as_ref().is_none_or(|a| a.contains(name)) && !self.disallowed.contains(name)
    }
}

/// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`, as Envoy names them.
pub fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 | Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// The request's size as Envoy reports it: `content-length` when known, else the bytes buffered
/// for the check, else -1 (unknown).
fn size(input: &CheckInput<'_>) -> i64 {
    let declared = input
        .parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    match (declared, &input.body) {
        (Some(n), _) => n,
        (None, Some(body)) if !body.partial => body.bytes.len() as i64,
        _ => -1,
    }
}

/// The header map a check carries: lower-case names, duplicates joined with `,`, the pseudo
/// headers, and the partial-body marker when a body is attached.
pub fn check_headers(input: &CheckInput<'_>, filter: &HeaderFilter) -> HashMap<String, String> {
    let parts = input.parts;
    // The pseudo headers and the partial-body marker come on top of the request's own.
    let mut headers = HashMap::with_capacity(parts.headers.keys_len() + 5);
    for name in parts.headers.keys() {
        if filter.allows(name)
            && let Some(value) = joined(&parts.headers, name)
        {
            headers.insert(name.as_str().to_owned(), value);
        }
    }
    headers.insert(":authority".into(), authority(parts));
    headers.insert(":method".into(), parts.method.as_str().to_owned());
    headers.insert(":path".into(), path_and_query(parts));
    headers.insert(":scheme".into(), input.scheme.into());
    if let Some(body) = &input.body {
        headers.insert(PARTIAL_BODY_HEADER.into(), body.partial.to_string());
    }
    headers
}

/// Builds the `CheckRequest` for one request; `include_peer_certificate` adds the client
/// certificate as `source.certificate`.
pub fn build(
    input: &CheckInput<'_>,
    filter: &HeaderFilter,
    include_peer_certificate: bool,
) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(attribute_context::Peer {
                principal: input.tls.map(|t| t.principal.clone()).unwrap_or_default(),
                certificate: input
                    .tls
                    .filter(|_| include_peer_certificate)
                    .map(|t| t.certificate.clone())
                    .unwrap_or_default(),
                ..peer(input.peer)
            }),
            destination: Some(attribute_context::Peer {
                principal: input
                    .tls
                    .map(|t| t.local_principal.clone())
                    .unwrap_or_default(),
                ..peer(input.local)
            }),
            request: Some(attribute_context::Request {
                time: Some(input.time.into()),
                http: Some(http_request(input, filter)),
            }),
            context_extensions: input
                .context_extensions
                .iter()
                .flat_map(|m| m.iter())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ..AttributeContext::default()
        }),
    }
}

/// `attributes.request.http`: the head, the headers the filter lets through, the body.
fn http_request(input: &CheckInput<'_>, filter: &HeaderFilter) -> attribute_context::HttpRequest {
    let parts = input.parts;
    let (body, raw_body) = match &input.body {
        None => (String::new(), Vec::new()),
        Some(b) if b.pack_as_bytes => (String::new(), b.bytes.to_vec()),
        Some(b) => (String::from_utf8_lossy(&b.bytes).into_owned(), Vec::new()),
    };
    let headers = check_headers(input, filter);
    // The same strings as `:path` and `:authority`, copied rather than rebuilt from the head.
    let path = headers.get(":path").cloned().unwrap_or_default();
    let host = headers.get(":authority").cloned().unwrap_or_default();
    attribute_context::HttpRequest {
        id: input.request_id.to_owned(),
        method: parts.method.as_str().to_owned(),
        headers,
        header_map: None,
        path,
        host,
        scheme: input.scheme.into(),
        query: String::new(),
        fragment: String::new(),
        size: size(input),
        protocol: protocol(parts.version).into(),
        body,
        raw_body,
    }
}

fn peer(addr: SocketAddr) -> attribute_context::Peer {
    attribute_context::Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: crate::headers::ip_string(addr.ip()),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                    addr.port(),
                ))),
                ..SocketAddress::default()
            })),
        }),
        ..attribute_context::Peer::default()
    }
}
