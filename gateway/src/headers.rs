//! Header hygiene at the proxy boundary: hop-by-hop headers, header names with `_`, and the
//! headers in which a client describes its own address and request (`x-forwarded-*`).

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), never forwarded.
/// Parsed once (removing by `&str` parses the name on every call).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Headers a `Connection` token can never remove: `host` (routing, the check and the upstream
/// all depend on it; it is also rewritten from the canonical authority) and `content-length`
/// (framing: the check reports it as the request size and the upstream needs it).
const NEVER_CONNECTION_NAMED: [HeaderName; 2] = [header::HOST, header::CONTENT_LENGTH];

/// Removes hop-by-hop headers, including any the `Connection` header names (RFC 9110 §7.6.1)
/// except those in [`NEVER_CONNECTION_NAMED`].
///
/// On requests this runs while the request is made canonical, before routing and the check, so
/// that a header named by `Connection` is gone for the route, the check and the backend alike:
/// the check never sees a header the backend does not get, nor the reverse.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let te_trailers = asks_for_trailers(headers);
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !NEVER_CONNECTION_NAMED.contains(name))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Whether `te` offers `trailers`: the one `te` value that is kept (as Envoy keeps it), because
/// gRPC over HTTP/2 needs it end to end; the upstream endpoint drops it towards a backend that
/// speaks HTTP/1.1 only.
fn asks_for_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .eq_ignore_ascii_case("trailers")
        })
}

/// The protocols `Upgrade` offers, when `Connection` names `upgrade` (RFC 9110 §7.8: an
/// `Upgrade` that `Connection` does not name is ignored); none otherwise.
pub fn upgrade_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    let named = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    headers
        .get_all(header::UPGRADE)
        .iter()
        .filter(move |_| named)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// Headers in which a client (or a proxy in front) describes the request it made: its address,
/// scheme, host, port, path prefix or original URL. Backends behind a proxy build links and
/// decisions on them (Werkzeug's `ProxyFix`, Spring's `ForwardedHeaderFilter`, Rails, Tomcat's
/// `RemoteIpValve`; `x-original-url` and `x-rewrite-url` even replace the path in IIS-style
/// frameworks), so with no trusted hops none of them reaches the check or the backend from the
/// client (`x-forwarded-for` and `x-forwarded-proto` are then written by the gateway).
const CLIENT_FORWARDING_HEADERS: [HeaderName; 11] = [
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-forwarded-ssl"),
    HeaderName::from_static("x-forwarded-scheme"),
    header::FORWARDED,
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
];

/// Writes `x-forwarded-for` and `x-forwarded-proto`, as Envoy does at the edge
/// (`use_remote_address`) with `xff_num_trusted_hops = trusted_hops`.
///
/// - `0` (the default): nothing the client wrote about its address or request is trusted, so
///   every header in [`CLIENT_FORWARDING_HEADERS`] is dropped; `x-forwarded-for` becomes the
///   peer address and `x-forwarded-proto` our scheme.
/// - more: the proxies in front built the chain, so it is kept and the peer appended;
///   their `x-forwarded-proto` (ours when absent) and the other forwarding headers are kept.
pub fn set_forwarded(headers: &mut HeaderMap, peer: IpAddr, scheme: &str, trusted_hops: u32) {
    let xff = HeaderName::from_static("x-forwarded-for");
    let xfp = HeaderName::from_static("x-forwarded-proto");
    let value = if trusted_hops == 0 {
        for name in &CLIENT_FORWARDING_HEADERS {
            headers.remove(name);
        }
        ip_string(peer)
    } else {
        let mut chain = forwarded_for(headers);
        chain.push(ip_string(peer));
        chain.join(", ")
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(xff, value);
    }
    if !headers.contains_key(&xfp)
        && let Ok(value) = HeaderValue::from_str(scheme)
    {
        headers.insert(xfp, value);
    }
}

/// What a request header whose name holds `_` does (Envoy's `headers_with_underscores_action`,
/// its names and meanings). CGI, WSGI, Rack and nginx's FastCGI variables turn `-` and `_` alike
/// into `_` (`x_role` and `x-role` are both `HTTP_X_ROLE`), so a backend may read `x_role` as
/// `x-role` while a rule on `x-role` never saw it. See docs/security.md for the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnderscoresAction {
    /// Forward such headers as any other (Envoy's default).
    Allow,
    /// Remove them before routing and the check: neither the check nor the backend sees them.
    DropHeader,
    /// Answer 400 and send no check (ours, and Envoy's edge recommendation).
    #[default]
    RejectRequest,
}

/// A request header name with `_` under [`UnderscoresAction::RejectRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnderscoredHeader;

/// Applies `action` to every header whose name holds `_`.
pub fn underscored_headers(
    headers: &mut HeaderMap,
    action: UnderscoresAction,
) -> Result<(), UnderscoredHeader> {
    let has_underscore = |name: &HeaderName| name.as_str().contains('_');
    match action {
        UnderscoresAction::RejectRequest if headers.keys().any(has_underscore) => {
            Err(UnderscoredHeader)
        }
        UnderscoresAction::Allow | UnderscoresAction::RejectRequest => Ok(()),
        UnderscoresAction::DropHeader => {
            let named: Vec<HeaderName> = headers
                .keys()
                .filter(|n| has_underscore(n))
                .cloned()
                .collect();
            for name in named {
                headers.remove(name);
            }
            Ok(())
        }
    }
}

/// `ip` as `Display` writes it; IPv4 without the formatting machinery (~1.5k instructions per
/// address through `fmt`, and a request formats its peer's address several times).
pub fn ip_string(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let mut out = String::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
            out
        }
        IpAddr::V6(_) => ip.to_string(),
    }
}

/// The entries of every `x-forwarded-for` line, in order, trimmed (empty entries dropped).
pub fn forwarded_for(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(str::to_owned)
        .collect()
}

/// All values of `name` joined with `,`, as Envoy presents duplicate headers to ext_authz.
pub fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let mut out = String::from_utf8_lossy(first.as_bytes()).into_owned();
    for v in values {
        out.push(',');
        out.push_str(&String::from_utf8_lossy(v.as_bytes()));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_strings_are_what_display_writes() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "1.99.100.9",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:10.0.0.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_string(ip), ip.to_string());
        }
        for n in [0u8, 9, 10, 99, 100, 199, 200, 249, 250, 255] {
            let ip = IpAddr::from([n, 255 - n, n / 2, 7]);
            assert_eq!(ip_string(ip), ip.to_string());
        }
    }

    #[test]
    fn drops_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("gzip"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn te_is_kept_as_trailers_only() {
        let mut h = HeaderMap::new();
        h.insert("te", HeaderValue::from_static("gzip, trailers"));
        remove_hop_by_hop(&mut h);
        assert_eq!(
            h.get("te").map(HeaderValue::as_bytes),
            Some(&b"trailers"[..])
        );
    }

    #[test]
    fn connection_cannot_remove_host_or_content_length() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("host, content-length, x-ext-authz"),
        );
        h.insert("host", HeaderValue::from_static("example.com"));
        h.insert("content-length", HeaderValue::from_static("3"));
        h.insert("x-ext-authz", HeaderValue::from_static("allow"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
        assert_eq!(h["host"], "example.com");
        assert_eq!(h["content-length"], "3");
    }

    #[test]
    fn without_trusted_hops_the_clients_forwarding_headers_are_replaced() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-host", HeaderValue::from_static("admin"));
        h.append("x-original-url", HeaderValue::from_static("/admin"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.append("x-forwarded-proto", HeaderValue::from_static("https"));
        h.append("forwarded", HeaderValue::from_static("for=10.0.0.1"));
        h.append("x-real-ip", HeaderValue::from_static("10.0.0.1"));
        set_forwarded(&mut h, "127.0.0.1".parse().unwrap(), "http", 0);
        assert_eq!(h.len(), 2);
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
    }

    #[test]
    fn underscored_names_are_allowed_dropped_or_refused() {
        let mut h = HeaderMap::new();
        h.append("x_role", HeaderValue::from_static("admin"));
        h.append("x-role", HeaderValue::from_static("user"));
        let mut allowed = h.clone();
        assert_eq!(
            underscored_headers(&mut allowed, UnderscoresAction::Allow),
            Ok(())
        );
        assert_eq!(allowed, h);
        let mut refused = h.clone();
        assert_eq!(
            underscored_headers(&mut refused, UnderscoresAction::RejectRequest),
            Err(UnderscoredHeader)
        );
        assert_eq!(
            underscored_headers(&mut h, UnderscoresAction::DropHeader),
            Ok(())
        );
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-role"], "user");
    }

    #[test]
    fn with_trusted_hops_the_chain_is_kept_and_the_peer_appended() {
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("10.0.0.1, 10.0.0.2"),
        );
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.3"));
        h.append("x-forwarded-proto", HeaderValue::from_static("https"));
        set_forwarded(&mut h, "127.0.0.1".parse().unwrap(), "http", 1);
        assert_eq!(
            h["x-forwarded-for"],
            "10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1"
        );
        assert_eq!(h["x-forwarded-proto"], "https");
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, "127.0.0.1".parse().unwrap(), "https", 2);
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
    }
}
