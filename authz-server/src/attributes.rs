//! Envoy's `AttributeContext` (v3 and v2) turned into the rule engine's neutral [`Request`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::LazyLock;

use extauthz_proto::{v2, v3};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};
use rules::{Peer, Request, Transport};

/// The neutral view of a v3 check. `render_received` asks for the one-line attribute dump.
pub fn from_v3(check: &v3::CheckRequest, render_received: bool) -> Request {
    let Some(attributes) = &check.attributes else {
        return Request::default();
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
        source: source.as_ref().map(peer_v3).unwrap_or_default(),
        destination: destination.as_ref().map(peer_v3).unwrap_or_default(),
        context_extensions: context_extensions.clone().into_iter().collect(),
        ..Request::default()
    };
    if let Some(http) = request.as_ref().and_then(|r| r.http.as_ref()) {
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
                    .iter()
                    .map(|h| (h.key.as_str(), raw_or_text(&h.raw_value, &h.value))),
            ),
            _ => lower_cased(headers.iter()),
        };
        view.body = if raw_body.is_empty() {
            body.clone()
        } else {
            String::from_utf8_lossy(raw_body).into_owned()
        };
        fill_http(&mut view, method, path, host, scheme, protocol);
    }
    if render_received {
        view.received = received_text("envoy.service.auth.v3.AttributeContext", attributes);
    }
    view
}

/// The neutral view of a v2 check.
pub fn from_v2(check: &v2::CheckRequest, render_received: bool) -> Request {
    let Some(attributes) = &check.attributes else {
        return Request::default();
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
        source: source.as_ref().map(peer_v2).unwrap_or_default(),
        destination: destination.as_ref().map(peer_v2).unwrap_or_default(),
        context_extensions: context_extensions.clone().into_iter().collect(),
        ..Request::default()
    };
    if let Some(http) = request.as_ref().and_then(|r| r.http.as_ref()) {
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
        view.headers = lower_cased(headers.iter());
        view.body = body.clone();
        fill_http(&mut view, method, path, host, scheme, protocol);
    }
    if render_received {
        view.received = received_text("envoy.service.auth.v2.AttributeContext", attributes);
    }
    view
}

/// Copies the request line, falling back to the pseudo headers a proxy may send instead.
fn fill_http(
    view: &mut Request,
    method: &str,
    path: &str,
    host: &str,
    scheme: &str,
    protocol: &str,
) {
    let or_header = |value: &str, header: &str| {
        if value.is_empty() {
            view.header(header).unwrap_or_default().to_owned()
        } else {
            value.to_owned()
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
    view.protocol = protocol.to_owned();
}

/// Header maps from the wire are supposed to be lower-case already; a hand-written client may
/// not comply, and rules match on lower-case names.
fn lower_cased<'a>(
    headers: impl Iterator<Item = (&'a String, &'a String)>,
) -> BTreeMap<String, String> {
    joined_headers(headers.map(|(k, v)| (k.as_str(), v.clone())))
}

/// Lower-cases names and joins repeated headers with `,`, as Envoy does.
pub fn joined_headers<'a>(
    headers: impl Iterator<Item = (&'a str, String)>,
) -> BTreeMap<String, String> {
    let mut joined: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        joined
            .entry(name.to_ascii_lowercase())
            .and_modify(|existing| {
                existing.push(',');
                existing.push_str(&value);
            })
            .or_insert(value);
    }
    joined
}

fn raw_or_text(raw: &[u8], text: &str) -> String {
    if raw.is_empty() {
        text.to_owned()
    } else {
        String::from_utf8_lossy(raw).into_owned()
    }
}

fn peer_v3(peer: &v3::attribute_context::Peer) -> Peer {
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
    neutral_peer(socket, &peer.principal)
}

fn peer_v2(peer: &v2::attribute_context::Peer) -> Peer {
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
    neutral_peer(socket, &peer.principal)
}

fn neutral_peer(socket: Option<(&str, u32)>, principal: &str) -> Peer {
    let (ip, port) = socket
        .map(|(address, port)| (address.parse::<IpAddr>().ok(), port))
        .unwrap_or((None, 0));
    Peer {
        ip,
        port,
        principal: principal.to_owned(),
    }
}

/// Our own descriptors, for rendering messages in protobuf text format.
static DESCRIPTORS: LazyLock<Option<DescriptorPool>> =
    LazyLock::new(|| DescriptorPool::decode(extauthz_proto::FILE_DESCRIPTOR_SET).ok());

/// The attributes in protobuf text format, on one line: what Istio's test server echoes back in
/// `x-ext-authz-check-received`.
fn received_text(message_name: &str, attributes: &impl Message) -> String {
    let Some(descriptor) = DESCRIPTORS
        .as_ref()
        .and_then(|pool| pool.get_message_by_name(message_name))
    else {
        return String::new();
    };
    match DynamicMessage::decode(descriptor, attributes.encode_to_vec().as_slice()) {
        Ok(message) => message.to_string(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests;
