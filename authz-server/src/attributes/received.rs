//! `{{received}}`: the attributes in one line of protobuf text format, written straight from the
//! decoded message. It used to be a reflection round trip (encode, decode as a dynamic message,
//! print) on every check a rule echoed it on; this writes the same text — prost-reflect's
//! compact format: fields in field-number order, `,` between them, maps as `[{key:..,value:..}]`
//! — with map entries sorted, so the line is also stable. The rare shapes not written here (a
//! non-empty metadata context, a pipe or internal address, a raw `header_map`) still take the
//! reflection path, so nothing received is ever left out.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::LazyLock;

use extauthz_proto::{v2, v3};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};

/// The v3 attributes as one line.
pub(super) fn v3(attributes: &v3::AttributeContext) -> String {
    let http = attributes.request.as_ref().and_then(|r| r.http.as_ref());
    let mut text = Text::sized(
        http.and_then(http_v3)
            .map_or(0, |(http, raw_body)| http.len() + raw_body.len()),
    );
    if text.context_v3(attributes).is_some() {
        text.out
    } else {
        reflected("envoy.service.auth.v3.AttributeContext", attributes)
    }
}

/// The v2 attributes as one line.
pub(super) fn v2(attributes: &v2::AttributeContext) -> String {
    let http = attributes.request.as_ref().and_then(|r| r.http.as_ref());
    let mut text = Text::sized(http.map_or(0, |http| http_v2(http).len()));
    if text.context_v2(attributes).is_some() {
        text.out
    } else {
        reflected("envoy.service.auth.v2.AttributeContext", attributes)
    }
}

/// The fields of an `HttpRequest` that v3 and v2 share, in field-number order.
struct HttpFields<'a> {
    id: &'a str,
    method: &'a str,
    headers: &'a HashMap<String, String>,
    path: &'a str,
    host: &'a str,
    scheme: &'a str,
    query: &'a str,
    fragment: &'a str,
    size: i64,
    protocol: &'a str,
    body: &'a str,
}

impl HttpFields<'_> {
    /// Bytes the request's fields take in the line, before escapes (for sizing the buffer).
    fn len(&self) -> usize {
        let Self {
            id,
            method,
            headers,
            path,
            host,
            scheme,
            protocol,
            body,
            ..
        } = self;
        [id, method, path, host, scheme, protocol, body]
            .iter()
            .map(|s| s.len())
            .sum::<usize>()
            + map_size(headers)
    }
}

/// A v3 request's shared fields and its `raw_body`; `None` when it carries a `header_map`
/// (written by reflection).
fn http_v3(http: &v3::attribute_context::HttpRequest) -> Option<(HttpFields<'_>, &[u8])> {
    let v3::attribute_context::HttpRequest {
        id,
        method,
        headers,
        header_map,
        path,
        host,
        scheme,
        query,
        fragment,
        size,
        protocol,
        body,
        raw_body,
    } = http;
    if header_map.is_some() {
        return None;
    }
    let fields = HttpFields {
        id,
        method,
        headers,
        path,
        host,
        scheme,
        query,
        fragment,
        size: *size,
        protocol,
        body,
    };
    Some((fields, raw_body))
}

fn http_v2(http: &v2::attribute_context::HttpRequest) -> HttpFields<'_> {
    let v2::attribute_context::HttpRequest {
        id,
        method,
        headers,
        path,
        host,
        scheme,
        query,
        fragment,
        size,
        protocol,
        body,
    } = http;
    HttpFields {
        id,
        method,
        headers,
        path,
        host,
        scheme,
        query,
        fragment,
        size: *size,
        protocol,
        body,
    }
}

/// The fields of a peer the line shows, from v3 or v2.
struct PeerFields<'a> {
    socket: Option<SocketFields<'a>>,
    service: &'a str,
    labels: &'a HashMap<String, String>,
    principal: &'a str,
    certificate: &'a str,
}

/// A `SocketAddress`'s fields; v2 has no network namespace (empty, so not written).
struct SocketFields<'a> {
    protocol: i32,
    address: &'a str,
    port: Option<Port<'a>>,
    resolver_name: &'a str,
    ipv4_compat: bool,
    network_namespace_filepath: &'a str,
}

enum Port<'a> {
    Value(u32),
    Named(&'a str),
}

/// `None` for an address other than a socket address (a pipe or an internal address: written
/// by reflection).
fn peer_v3(peer: &v3::attribute_context::Peer) -> Option<PeerFields<'_>> {
    let v3::attribute_context::Peer {
        address,
        service,
        labels,
        principal,
        certificate,
    } = peer;
    let socket = match address.as_ref().map(|a| &a.address) {
        None => None,
        Some(Some(v3::address::Address::SocketAddress(socket))) => {
            let v3::SocketAddress {
                protocol,
                address,
                resolver_name,
                ipv4_compat,
                network_namespace_filepath,
                port_specifier,
            } = socket;
            let port = port_specifier.as_ref().map(|port| match port {
                v3::socket_address::PortSpecifier::PortValue(port) => Port::Value(*port),
                v3::socket_address::PortSpecifier::NamedPort(name) => Port::Named(name),
            });
            Some(SocketFields {
                protocol: *protocol,
                address,
                port,
                resolver_name,
                ipv4_compat: *ipv4_compat,
                network_namespace_filepath,
            })
        }
        Some(_) => return None,
    };
    Some(PeerFields {
        socket,
        service,
        labels,
        principal,
        certificate,
    })
}

/// [`peer_v3`] for a v2 peer.
fn peer_v2(peer: &v2::attribute_context::Peer) -> Option<PeerFields<'_>> {
    let v2::attribute_context::Peer {
        address,
        service,
        labels,
        principal,
        certificate,
    } = peer;
    let socket = match address.as_ref().map(|a| &a.address) {
        None => None,
        Some(Some(v2::address::Address::SocketAddress(socket))) => {
            let v2::SocketAddress {
                protocol,
                address,
                resolver_name,
                ipv4_compat,
                port_specifier,
            } = socket;
            let port = port_specifier.as_ref().map(|port| match port {
                v2::socket_address::PortSpecifier::PortValue(port) => Port::Value(*port),
                v2::socket_address::PortSpecifier::NamedPort(name) => Port::Named(name),
            });
            Some(SocketFields {
                protocol: *protocol,
                address,
                port,
                resolver_name,
                ipv4_compat: *ipv4_compat,
                network_namespace_filepath: "",
            })
        }
        Some(_) => return None,
    };
    Some(PeerFields {
        socket,
        service,
        labels,
        principal,
        certificate,
    })
}

/// A text-format writer. Each method returns `None` for a shape it does not write, and the
/// caller falls back to reflection.
#[derive(Default)]
struct Text {
    out: String,
    /// Whether the next field is the first of its message (no `,` before it).
    first: bool,
}

/// Bytes a map's entries take in the line (`{key:"..",value:".."},` each), before escapes.
fn map_size(map: &HashMap<String, String>) -> usize {
    map.iter().map(|(k, v)| k.len() + v.len() + 20).sum()
}

impl Text {
    /// A writer whose buffer holds the whole line at once in the usual case (no escapes):
    /// `http_bytes` of request fields plus room for the field names, the addresses and the
    /// punctuation. The line is then written without growing the buffer.
    fn sized(http_bytes: usize) -> Self {
        Text {
            out: String::with_capacity(http_bytes + 384),
            first: false,
        }
    }

    fn name(&mut self, name: &str) {
        if !std::mem::replace(&mut self.first, false) {
            self.out.push(',');
        }
        self.out.push_str(name);
    }

    fn string(&mut self, name: &str, value: &str) {
        self.bytes(name, value.as_bytes());
    }

    fn bytes(&mut self, name: &str, value: &[u8]) {
        if !value.is_empty() {
            self.name(name);
            self.out.push(':');
            quoted(&mut self.out, value);
        }
    }

    fn number(&mut self, name: &str, value: impl std::fmt::Display + PartialEq + Default + Copy) {
        if value != Default::default() {
            self.name(name);
            let _ = write!(self.out, ":{value}");
        }
    }

    fn map(&mut self, name: &str, map: &HashMap<String, String>) {
        if map.is_empty() {
            return;
        }
        self.name(name);
        self.out.push_str(":[");
        let mut entries: Vec<_> = map.iter().collect();
        entries.sort_unstable();
        for (i, (key, value)) in entries.into_iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.out.push_str("{key:");
            quoted(&mut self.out, key.as_bytes());
            self.out.push_str(",value:");
            quoted(&mut self.out, value.as_bytes());
            self.out.push('}');
        }
        self.out.push(']');
    }

    /// `name{...}` with the fields `inner` writes.
    fn message(&mut self, name: &str, inner: impl FnOnce(&mut Self) -> Option<()>) -> Option<()> {
        self.name(name);
        self.out.push('{');
        self.first = true;
        inner(self)?;
        self.first = false;
        self.out.push('}');
        Some(())
    }

    fn context_v3(&mut self, context: &v3::AttributeContext) -> Option<()> {
        let v3::AttributeContext {
            source,
            destination,
            request,
            context_extensions,
            metadata_context,
            route_metadata_context,
            tls_session,
        } = context;
        self.first = true;
        if let Some(peer) = source {
            self.message("source", |t| t.peer(peer_v3(peer)))?;
        }
        if let Some(peer) = destination {
            self.message("destination", |t| t.peer(peer_v3(peer)))?;
        }
        if let Some(request) = request {
            self.message("request", |t| {
                t.time(request.time.as_ref());
                match &request.http {
                    Some(http) => t.message("http", |t| {
                        let (http, raw_body) = http_v3(http)?;
                        t.http(&http);
                        t.bytes("raw_body", raw_body);
                        Some(())
                    }),
                    None => Some(()),
                }
            })?;
        }
        self.map("context_extensions", context_extensions);
        if let Some(metadata) = metadata_context {
            empty_metadata_v3(metadata)?;
            self.message("metadata_context", |_| Some(()))?;
        }
        if let Some(tls) = tls_session {
            self.message("tls_session", |t| {
                t.string("sni", &tls.sni);
                Some(())
            })?;
        }
        if let Some(metadata) = route_metadata_context {
            empty_metadata_v3(metadata)?;
            self.message("route_metadata_context", |_| Some(()))?;
        }
        Some(())
    }

    fn context_v2(&mut self, context: &v2::AttributeContext) -> Option<()> {
        let v2::AttributeContext {
            source,
            destination,
            request,
            context_extensions,
            metadata_context,
        } = context;
        self.first = true;
        if let Some(peer) = source {
            self.message("source", |t| t.peer(peer_v2(peer)))?;
        }
        if let Some(peer) = destination {
            self.message("destination", |t| t.peer(peer_v2(peer)))?;
        }
        if let Some(request) = request {
            self.message("request", |t| {
                t.time(request.time.as_ref());
                match &request.http {
                    Some(http) => t.message("http", |t| {
                        t.http(&http_v2(http));
                        Some(())
                    }),
                    None => Some(()),
                }
            })?;
        }
        self.map("context_extensions", context_extensions);
        if let Some(metadata) = metadata_context {
            metadata.filter_metadata.is_empty().then_some(())?;
            self.message("metadata_context", |_| Some(()))?;
        }
        Some(())
    }

    fn time(&mut self, time: Option<&prost_types::Timestamp>) {
        if let Some(time) = time {
            let _ = self.message("time", |t| {
                t.number("seconds", time.seconds);
                t.number("nanos", time.nanos);
                Some(())
            });
        }
    }

    fn peer(&mut self, peer: Option<PeerFields<'_>>) -> Option<()> {
        let PeerFields {
            socket,
            service,
            labels,
            principal,
            certificate,
        } = peer?;
        if let Some(socket) = socket {
            self.message("address", |t| {
                t.message("socket_address", |t| t.socket_address(&socket))
            })?;
        }
        self.string("service", service);
        self.map("labels", labels);
        self.string("principal", principal);
        self.string("certificate", certificate);
        Some(())
    }

    fn socket_address(&mut self, socket: &SocketFields<'_>) -> Option<()> {
        self.protocol(socket.protocol)?;
        self.string("address", socket.address);
        match socket.port {
            Some(Port::Value(port)) => {
                self.name("port_value");
                let _ = write!(self.out, ":{port}");
            }
            Some(Port::Named(name)) => {
                self.name("named_port");
                self.out.push(':');
                quoted(&mut self.out, name.as_bytes());
            }
            None => {}
        }
        self.string("resolver_name", socket.resolver_name);
        self.number("ipv4_compat", socket.ipv4_compat);
        self.string(
            "network_namespace_filepath",
            socket.network_namespace_filepath,
        );
        Some(())
    }

    /// `SocketAddress.protocol`: TCP (0) is the default and not written; UDP by name; any
    /// other number is left to reflection.
    fn protocol(&mut self, protocol: i32) -> Option<()> {
        match protocol {
            0 => Some(()),
            1 => {
                self.name("protocol:UDP");
                Some(())
            }
            _ => None,
        }
    }

    fn http(&mut self, http: &HttpFields<'_>) {
        self.string("id", http.id);
        self.string("method", http.method);
        self.map("headers", http.headers);
        self.string("path", http.path);
        self.string("host", http.host);
        self.string("scheme", http.scheme);
        self.string("query", http.query);
        self.string("fragment", http.fragment);
        self.number("size", http.size);
        self.string("protocol", http.protocol);
        self.string("body", http.body);
    }
}

/// Envoy sends an empty metadata context on every check; a non-empty one goes to reflection.
fn empty_metadata_v3(metadata: &extauthz_proto::envoy::config::core::v3::Metadata) -> Option<()> {
    (metadata.filter_metadata.is_empty() && metadata.typed_filter_metadata.is_empty()).then_some(())
}

/// A text-format string literal, escaped as prost-reflect does (octal for bytes outside
/// printable ASCII). Runs of bytes that need no escape are found with a table and copied whole.
fn quoted(out: &mut String, bytes: &[u8]) {
    out.push('"');
    let mut rest = bytes;
    while let Some(at) = rest.iter().position(|&b| !PLAIN[usize::from(b)]) {
        let (run, tail) = rest.split_at(at);
        push_ascii(out, run);
        let Some((&byte, tail)) = tail.split_first() else {
            break;
        };
        match byte {
            b'\t' => out.push_str("\\t"),
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            b'\\' => out.push_str("\\\\"),
            b'\'' => out.push_str("\\'"),
            b'"' => out.push_str("\\\""),
            _ => {
                let _ = write!(out, "\\{byte:03o}");
            }
        }
        rest = tail;
    }
    push_ascii(out, rest);
    out.push('"');
}

/// Bytes written as they are inside a string literal: printable ASCII but `\`, `'` and `"`.
static PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b: u8 = 0x20;
    while b <= 0x7e {
        table[b as usize] = !matches!(b, b'\\' | b'\'' | b'"');
        b += 1;
    }
    table
};

/// Appends bytes known to be printable ASCII (so valid UTF-8; checked all the same).
fn push_ascii(out: &mut String, run: &[u8]) {
    if let Ok(run) = std::str::from_utf8(run) {
        out.push_str(run);
    }
}

/// Our own descriptors, for the shapes written by reflection.
pub(super) static DESCRIPTORS: LazyLock<Option<DescriptorPool>> =
    LazyLock::new(|| DescriptorPool::decode(extauthz_proto::FILE_DESCRIPTOR_SET).ok());

/// The attributes in protobuf text format through reflection: encode, decode as a dynamic
/// message, print.
pub(super) fn reflected(message_name: &str, attributes: &impl Message) -> String {
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
