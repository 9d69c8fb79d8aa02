//! Envoy's `AttributeContext` (v3 and v2) turned into the rule engine's neutral [`Request`].

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use extauthz_proto::{v2, v3};
use rules::{Peer, Request, Transport};

use crate::authorizer::Renders;

mod opa;
mod received;

/// The neutral view of a v3 check, moving the strings out of the decoded message rather than
/// copying them. `renders` asks for the one-line attribute dump and for the attributes in
/// OPA-Envoy's shape (each written before the message is taken apart, and only then).
pub fn from_v3(check: v3::CheckRequest, renders: Renders) -> Request {
    let Some(attributes) = check.attributes else {
        return Request::default();
    };
    let received = if renders.received {
        received::v3(&attributes)
    } else {
        String::new()
    };
    let opa_attributes = if renders.opa_attributes {
        opa::v3(&attributes)
    } else {
        None
    };
    let v3::AttributeContext {
        source,
        destination,
        request,
        context_extensions,
        metadata_context: _,
        route_metadata_context: _,
        tls_session: _,
    } = attributes;
    let mut view = Request {
        transport: Transport::Grpc,
        source: source.map(peer_v3).unwrap_or_default(),
        destination: destination.map(peer_v3).unwrap_or_default(),
        context_extensions: context_extensions.into_iter().collect(),
        received,
        opa_attributes,
        ..Request::default()
    };
    if let Some(http) = request.and_then(|r| r.http) {
        take_http_v3(&mut view, http);
    }
    view
}

/// Moves a v3 check's HTTP request (headers, body, method, path, host, scheme, protocol) into
/// the view.
fn take_http_v3(view: &mut Request, http: v3::attribute_context::HttpRequest) {
    let v3::attribute_context::HttpRequest {
        id: _,
        method,
        headers,
        header_map,
        path,
        host,
        scheme,
        query: _,
        fragment: _,
        size: _,
        protocol,
        body,
        raw_body,
    } = http;
    view.headers = match header_map {
        // Envoy sends `header_map` instead of `headers` when raw header encoding is on.
        Some(map) if !map.headers.is_empty() => joined_headers(
            map.headers
                .into_iter()
                .map(|h| (h.key, raw_or_text(h.raw_value, h.value))),
        ),
        _ => lower_cased(headers),
    };
    view.body = if raw_body.is_empty() {
        body
    } else {
        String::from_utf8(raw_body)
            .unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned())
    };
    fill_http(view, method, path, host, scheme, protocol);
}

/// The proxy's request id (`attributes.request.http.id`) for the decision log, when the request
/// carries no `x-request-id` header of its own (agentgateway sends the id, not the header). Empty
/// otherwise, so a check from Envoy (which sends both) copies nothing.
pub fn fallback_request_id_v3(check: &v3::CheckRequest) -> String {
    let Some(http) = check
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
    else {
        return String::new();
    };
    let has_header = http.headers.contains_key("x-request-id")
        || http.header_map.as_ref().is_some_and(|map| {
            map.headers
                .iter()
                .any(|h| h.key.eq_ignore_ascii_case("x-request-id"))
        });
    if has_header {
        String::new()
    } else {
        http.id.clone()
    }
}

/// [`fallback_request_id_v3`] for a v2 check.
pub fn fallback_request_id_v2(check: &v2::CheckRequest) -> String {
    match check
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
    {
        Some(http) if !http.headers.contains_key("x-request-id") => http.id.clone(),
        _ => String::new(),
    }
}

/// The neutral view of a v2 check (see [`from_v3`]). A Rego policy's `input.attributes` is
/// built from this view in the v3 shape (OPA-Envoy's `encoding/json` form of v2 is not written).
pub fn from_v2(check: v2::CheckRequest, renders: Renders) -> Request {
    let Some(attributes) = check.attributes else {
        return Request::default();
    };
    let received = if renders.received {
        received::v2(&attributes)
    } else {
        String::new()
    };
    let v2::AttributeContext {
        source,
        destination,
        request,
        context_extensions,
        metadata_context: _,
    } = attributes;
    let mut view = Request {
        transport: Transport::Grpc,
        source: source.map(peer_v2).unwrap_or_default(),
        destination: destination.map(peer_v2).unwrap_or_default(),
        context_extensions: context_extensions.into_iter().collect(),
        received,
        ..Request::default()
    };
    if let Some(http) = request.and_then(|r| r.http) {
        let v2::attribute_context::HttpRequest {
            id: _,
            method,
            headers,
            path,
            host,
            scheme,
            query: _,
            fragment: _,
            size: _,
            protocol,
            body,
        } = http;
        view.headers = lower_cased(headers);
        view.body = body;
        fill_http(&mut view, method, path, host, scheme, protocol);
    }
    view
}

/// Takes the request line, falling back to the pseudo headers a proxy may send instead.
fn fill_http(
    view: &mut Request,
    method: String,
    path: String,
    host: String,
    scheme: String,
    protocol: String,
) {
    let or_header = |value: String, header: &str| {
        if value.is_empty() {
            view.header(header).unwrap_or_default().to_owned()
        } else {
            value
        }
    };
    let method = or_header(method, ":method");
    let path = or_header(path, ":path");
    let scheme = or_header(scheme, ":scheme");
    let mut host = or_header(host, ":authority");
    if host.is_empty() {
        host = view.header("host").unwrap_or_default().to_owned();
    }
    view.method = method;
    view.path = path;
    view.host = host;
    view.scheme = scheme;
    view.protocol = protocol;
}

/// Header maps from the wire are supposed to be lower-case already; a hand-written client may
/// not comply, and rules match on lower-case names.
fn lower_cased(headers: HashMap<String, String>) -> BTreeMap<String, String> {
    joined_headers(headers.into_iter())
}

/// Lower-cases names and joins repeated headers with `,`, as Envoy does. A name already in
/// lower case (what Envoy sends) is kept as it is, not copied.
pub fn joined_headers(headers: impl Iterator<Item = (String, String)>) -> BTreeMap<String, String> {
    let mut joined: BTreeMap<String, String> = BTreeMap::new();
    for (mut name, value) in headers {
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            name.make_ascii_lowercase();
        }
        match joined.entry(name) {
            std::collections::btree_map::Entry::Occupied(mut existing) => {
                let existing = existing.get_mut();
                existing.push(',');
                existing.push_str(&value);
            }
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(value);
            }
        }
    }
    joined
}

fn raw_or_text(raw: Vec<u8>, text: String) -> String {
    if raw.is_empty() {
        text
    } else {
        String::from_utf8(raw)
            .unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned())
    }
}

fn peer_v3(peer: v3::attribute_context::Peer) -> Peer {
    let socket = match &peer.address {
        Some(v3::Address {
            address: Some(v3::address::Address::SocketAddress(socket)),
        }) => Some((
            socket.address.as_str(),
            match socket.port_specifier {
                Some(v3::socket_address::PortSpecifier::PortValue(port)) => port,
                _ => 0,
            },
        )),
        _ => None,
    };
    neutral_peer(socket, peer.principal)
}

fn peer_v2(peer: v2::attribute_context::Peer) -> Peer {
    let socket = match &peer.address {
        Some(v2::Address {
            address: Some(v2::address::Address::SocketAddress(socket)),
        }) => Some((
            socket.address.as_str(),
            match socket.port_specifier {
                Some(v2::socket_address::PortSpecifier::PortValue(port)) => port,
                _ => 0,
            },
        )),
        _ => None,
    };
    neutral_peer(socket, peer.principal)
}

/// A peer from its socket address (an IP address and a port, when it has one) and principal.
fn neutral_peer(socket: Option<(&str, u32)>, principal: String) -> Peer {
    let (ip, port) = socket
        .map(|(address, port)| (address.parse::<IpAddr>().ok(), port))
        .unwrap_or((None, 0));
    Peer {
        ip,
        port,
        principal,
    }
}

#[cfg(test)]
mod tests;
