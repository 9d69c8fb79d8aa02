//! The canonical request: one spelling of the path, the authority and the client address,
//! computed once per request before routing, and the only spelling routing, the check and the
//! upstream ever see.
//!
//! Why: backends normalise what they receive (`//admin` → `/admin`, `/a/../admin` → `/admin`,
//! `%61dmin` → `admin`, `Admin.Example.com:80` → `admin.example.com`). A gateway that routes and
//! checks the raw spelling while the backend serves the normalised one can be walked around by
//! choosing the spelling. So [`canonicalise`] rewrites the request head in place, and everything
//! after it reads the rewritten head.
//!
//! The steps, in this order (first, a standard method in another case is refused, per
//! `method_case`):
//! 1. the authority: from an absolute-form target (RFC 9112 §3.2.2: it replaces `Host`), from
//!    `:authority` on HTTP/2 (a `host` header that disagrees is a 400), else from the one `Host`
//!    header. Taken before hop-by-hop headers are removed, so `Connection: host` cannot hide it;
//! 2. the path: [`canonical::canonical_path`] with the listener's options; the query is kept as
//!    sent once [`canonical::split_target`] has refused fragments and control characters;
//! 3. hop-by-hop headers, including every header `Connection` names, are removed now — before
//!    routing and the check — so the route and the check see exactly the headers the backend
//!    will receive (see [`crate::headers::remove_hop_by_hop`] for the few it never removes);
//!    then header names with `_`, per `headers_with_underscores_action`;
//! 4. the client address and `x-forwarded-*`, per `xff_num_trusted_hops`;
//! 5. the head is rewritten: the URI becomes origin-form `path?query`, `host` the canonical
//!    authority.
//!
//! Anything that has no single meaning is a [`Rejected`]: the client gets 400 and no check is
//! sent.
//!
//! The request helpers every later room reads the head with live here too: [`target`],
//! [`authority`], [`path_and_query`] (the check's `:authority` and `:path`, the HTTP
//! authorization request, the access log and the prefix rewrite) and [`strip_port`] (routing).

use std::net::{IpAddr, SocketAddr};

use canonical::{HostError, HostOptions, PathError, PathOptions};
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Method, Uri, Version};
use serde::Deserialize;

use crate::headers::{self, UnderscoresAction};

/// How one listener makes requests canonical (its `merge_slashes`,
/// `path_with_escaped_slashes_action`, `path_parameters`, `strip_any_host_port`,
/// `xff_num_trusted_hops`, `headers_with_underscores_action` and `method_case`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CanonicalOptions {
    /// How the path is made canonical.
    pub path: PathOptions,
    /// How the authority is made canonical.
    pub host: HostOptions,
    /// How many proxies in front of the gateway add to `x-forwarded-for` and are trusted to.
    pub xff_num_trusted_hops: u32,
    /// What a header name with `_` does.
    pub underscores: UnderscoresAction,
    /// What a standard method spelt in another case (`delete`) does.
    pub method_case: MethodCase,
}

/// What a method that differs from a standard one (RFC 9110 §9, RFC 5789) only by case does.
/// Methods are case-sensitive, so `delete` is not `DELETE` to routing, the check or a rule
/// `methods = ["DELETE"]`; but Django, Werkzeug (Flask) and other backends upper-case the method
/// and serve it as `DELETE`. See docs/security.md for the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MethodCase {
    /// Answer 400 and send no check.
    #[default]
    Reject,
    /// Route, check and forward it as sent (an extension method, as RFC 9110 reads it).
    Keep,
}

/// The standard methods, as they are spelt.
const STANDARD_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// The request as routing, the check and the upstream see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalRequest {
    /// The canonical path, without query (`*` only for `OPTIONS *`).
    pub path: String,
    /// The query as sent, without `?`.
    pub query: Option<String>,
    /// The canonical authority: lower case, no trailing dot, no default port.
    pub host: String,
    /// The client's address: the TCP peer, or with trusted hops the address they vouch for.
    pub client: SocketAddr,
    /// The upgrade the client asked for, kept aside while its `Upgrade` and `Connection`
    /// headers are removed with the other hop-by-hop headers; a route that allows it puts them
    /// back (see `proxy::tunnel`).
    pub upgrade: Option<Upgrade>,
}

/// A protocol a client may switch to on a route that allows it. `h2c` is not one: it is always
/// refused (its `Upgrade` header removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upgrade {
    /// `Upgrade: websocket` (RFC 6455) on an HTTP/1.1 GET.
    WebSocket,
}

impl Upgrade {
    /// The upgrade an `Upgrade` token (or a config entry) names, case-insensitive.
    pub fn from_token(token: &str) -> Option<Upgrade> {
        token
            .trim()
            .eq_ignore_ascii_case("websocket")
            .then_some(Upgrade::WebSocket)
    }

    /// The token as sent in `Upgrade`.
    pub fn token(self) -> &'static str {
        match self {
            Upgrade::WebSocket => "websocket",
        }
    }
}

impl CanonicalRequest {
    /// `path?query`, as the request target sent upstream and the check's `:path`.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(query) => format!("{}?{query}", self.path),
            None => self.path.clone(),
        }
    }
}

/// Why a request has no canonical form; each answers 400 and is never checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// The path or query cannot be made canonical (including an escaped slash under `reject`).
    #[error("{0}")]
    Path(#[from] PathError),
    /// The authority is not a valid host.
    #[error("{0}")]
    Host(#[from] HostError),
    /// No `Host` header (HTTP/1) and no `:authority` (HTTP/2).
    #[error("missing host")]
    MissingHost,
    /// More than one `Host` header (RFC 9112 §3.2).
    #[error("more than one host header")]
    DuplicateHost,
    /// HTTP/2 `:authority` and a `host` header name different hosts.
    #[error(":authority and host differ")]
    ConflictingHost,
    /// A target with a scheme other than `http` or `https`.
    #[error("request target scheme is not http or https")]
    UnsupportedScheme,
    /// A header name with `_` under `headers_with_underscores_action = "reject_request"`.
    #[error("header name with an underscore")]
    UnderscoreInHeaderName,
    /// A standard method in another case (`delete`) under `method_case = "reject"`.
    #[error("method differs from a standard one only by case")]
    MethodCase,
}

impl Rejected {
    /// The reason as the 400's body says it.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejected::Path(PathError::NotOriginForm) => "request target is not origin-form",
            Rejected::Path(PathError::ControlCharacter) => "control character in request target",
            Rejected::Path(PathError::Fragment) => "fragment in request target",
            Rejected::Path(PathError::InvalidPercentEncoding) => "invalid percent-encoding in path",
            Rejected::Path(PathError::EscapedSlash) => "escaped slash or backslash in path",
            Rejected::Path(PathError::QueryInPath) => "invalid request target",
            Rejected::Path(PathError::PathParameter) => "path parameter (`;`) in path",
            Rejected::Host(_) => "invalid host",
            Rejected::MissingHost => "missing host",
            Rejected::DuplicateHost => "more than one host header",
            Rejected::ConflictingHost => ":authority and host differ",
            Rejected::UnsupportedScheme => "request target scheme is not http or https",
            Rejected::UnderscoreInHeaderName => "header name with an underscore",
            Rejected::MethodCase => "method differs from a standard one only by case",
        }
    }
}

/// Makes the request head canonical in place (see the module doc for the steps) and returns
/// what routing and the check use. `scheme` is the listener's (`http` or `https`).
pub fn canonicalise(
    parts: &mut Parts,
    peer: SocketAddr,
    scheme: &'static str,
    options: &CanonicalOptions,
) -> Result<CanonicalRequest, Rejected> {
    if options.method_case == MethodCase::Reject && differs_only_by_case(&parts.method) {
        return Err(Rejected::MethodCase);
    }
    let host = canonical_authority(parts, scheme, &options.host)?;
    let (path, query) = canonical_target(parts, &options.path)?;
    let query = query.map(str::to_owned);

    let upgrade = requested_upgrade(parts);
    headers::remove_hop_by_hop(&mut parts.headers);
    headers::underscored_headers(&mut parts.headers, options.underscores)
        .map_err(|_| Rejected::UnderscoreInHeaderName)?;

    let client = client_address(&parts.headers, peer, options.xff_num_trusted_hops);
    headers::set_forwarded(
        &mut parts.headers,
        peer.ip(),
        scheme,
        options.xff_num_trusted_hops,
    );

    let request = CanonicalRequest {
        path,
        query,
        host,
        client,
        upgrade,
    };
    // Both parse: the path is canonical (only pchars, `/` and escapes), the query passed
    // `split_target` after the URI parser had already accepted it, the host is canonical.
    parts.uri = request
        .path_and_query()
        .parse::<Uri>()
        .map_err(|_| Rejected::Path(PathError::NotOriginForm))?;
    let host_value = HeaderValue::from_str(&request.host)
        .map_err(|_| Rejected::Host(HostError::InvalidCharacter))?;
    parts.headers.insert(header::HOST, host_value);
    Ok(request)
}

/// Whether `method` is not a standard method but equals one ignoring case (`delete`, `Get`).
/// The `http` crate keeps the standard ones as constants, so they pass without a comparison.
fn differs_only_by_case(method: &Method) -> bool {
    let m = method.as_str();
    !STANDARD_METHODS.contains(&m) && STANDARD_METHODS.iter().any(|s| s.eq_ignore_ascii_case(m))
}

/// Step 3, before the hop-by-hop headers go: the upgrade an HTTP/1.1 GET asks for with
/// `Connection: upgrade` and `Upgrade: websocket` (only a WebSocket; h2c and the rest are
/// dropped with the headers).
fn requested_upgrade(parts: &Parts) -> Option<Upgrade> {
    if parts.method != Method::GET || parts.version != Version::HTTP_11 {
        return None;
    }
    headers::upgrade_tokens(&parts.headers).find_map(Upgrade::from_token)
}

/// Step 1: the one authority of the request, canonical.
fn canonical_authority(
    parts: &Parts,
    scheme: &str,
    options: &HostOptions,
) -> Result<String, Rejected> {
    let mut host_headers = parts.headers.get_all(header::HOST).iter();
    let host_header = host_headers.next();
    if host_headers.next().is_some() {
        return Err(Rejected::DuplicateHost);
    }
    // The authority is read under the scheme that comes with it — an absolute-form target's or
    // HTTP/2's `:scheme` (they may differ from the listener's: `http://` over TLS) — so its
    // default port is the one removed.
    let listener_scheme = scheme;
    let scheme = match parts.uri.scheme_str() {
        None => scheme,
        Some(s) if s.eq_ignore_ascii_case("http") => "http",
        Some(s) if s.eq_ignore_ascii_case("https") => "https",
        Some(_) => return Err(Rejected::UnsupportedScheme),
    };
    let canonical = |raw: &str| -> Result<String, Rejected> {
        let mut host = canonical::canonical_host(raw, scheme, options)?;
        // The head is rewritten to origin-form, so everything after this step (the check's
        // `scheme`, `authz-server`'s own canonical host, a second pass) reads the authority
        // under the listener's scheme: its default port goes too, or `https://a:80` on a plain
        // listener would be `a:80` here and `a` to them (found by fuzz/canonical_request).
        if scheme != listener_scheme {
            host = canonical::canonical_host(&host, listener_scheme, options)?;
        }
        if host.is_empty() {
            return Err(Rejected::MissingHost);
        }
        Ok(host)
    };
    // RFC 9112 §3.2: a Host field with an invalid value is a 400 even when the target
    // carries the authority.
    let from_header = match host_header {
        None => None,
        Some(v) => Some(canonical(
            v.to_str()
                .map_err(|_| Rejected::Host(HostError::InvalidCharacter))?,
        )?),
    };
    let Some(target) = parts.uri.authority() else {
        return from_header.ok_or(Rejected::MissingHost);
    };
    let from_target = canonical(target.as_str())?;
    match parts.version {
        // `:authority` and `host` are two spellings of one thing on HTTP/2; when both are sent
        // they must agree, or routing and the backend could each pick a different one.
        Version::HTTP_2 => match from_header {
            Some(h) if h != from_target => Err(Rejected::ConflictingHost),
            _ => Ok(from_target),
        },
        // Absolute-form on HTTP/1: the target's authority wins and `Host` is replaced
        // (RFC 9112 §3.2.2). RFC 9112 §3.2 also wants the field present on HTTP/1.1, but with
        // the authority in the target there is nothing ambiguous to refuse, so it may be absent.
        _ => Ok(from_target),
    }
}

/// Step 2: the canonical path and the query as sent.
fn canonical_target<'a>(
    parts: &'a Parts,
    options: &PathOptions,
) -> Result<(String, Option<&'a str>), Rejected> {
    // Authority-form (`CONNECT host:443`) names no resource: nothing to route or check.
    if parts.uri.authority().is_some() && parts.uri.scheme().is_none() {
        return Err(Rejected::Path(PathError::NotOriginForm));
    }
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    if target == "*" {
        // The asterisk form is only for a server-wide OPTIONS (RFC 9112 §3.2.4).
        return if parts.method == Method::OPTIONS {
            Ok(("*".to_owned(), None))
        } else {
            Err(Rejected::Path(PathError::NotOriginForm))
        };
    }
    let (path, query) = canonical::split_target(target)?;
    // An absolute-form target with no path means `/` (RFC 9112 §3.2.2).
    let path = if path.is_empty() && parts.uri.authority().is_some() {
        "/"
    } else {
        path
    };
    Ok((canonical::canonical_path(path, options)?, query))
}

/// Step 4: the address the check names as the source. The TCP peer, unless the listener
/// trusts `n` proxies in front of it: then the `n`th address from the right of the
/// `x-forwarded-for` they built (Envoy's `xff_num_trusted_hops`), or the peer when there are
/// fewer entries or that one is not an IP address.
pub fn client_address(
    headers: &http::HeaderMap,
    peer: SocketAddr,
    trusted_hops: u32,
) -> SocketAddr {
    if trusted_hops == 0 {
        return peer;
    }
    let entries = headers::forwarded_for(headers);
    let Some(index) = entries.len().checked_sub(trusted_hops as usize) else {
        return peer;
    };
    match entries[index].parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, 0),
        Err(_) => peer,
    }
}

/// The request target's path and query as sent, `/` when the target has none (authority-form,
/// `*` aside); borrowed, nothing is copied.
pub fn target(uri: &Uri) -> &str {
    uri.path_and_query().map_or("/", PathAndQuery::as_str)
}

/// The `:authority` of a request: the URI's (HTTP/2, absolute-form HTTP/1) or the `Host` header.
/// After [`canonicalise`] that is the canonical authority.
pub fn authority(parts: &Parts) -> String {
    if let Some(a) = parts.uri.authority() {
        return a.as_str().to_owned();
    }
    parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The request's path with its query, as a check's `:path` (see [`target`]).
pub fn path_and_query(parts: &Parts) -> String {
    target(&parts.uri).to_owned()
}

/// `host:port` → `host`, leaving IPv6 literals (`[::1]:80` → `[::1]`) intact.
pub fn strip_port(authority: &str) -> &str {
    if let Some(end) = authority.rfind(']') {
        return &authority[..=end];
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

#[cfg(test)]
mod tests;
