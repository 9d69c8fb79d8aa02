//! The request as the rules see it: made canonical once per check, before any rule is tried.
//!
//! A proxy in front of the server may not normalise (Envoy's default does not), while backends
//! do: `/public/../admin/x`, `//admin/x` and `/%61dmin/x` all reach a backend's `/admin/x`. So
//! path and host matchers, path-segment lookups and templates see the canonical spelling the
//! `canonical` crate computes — the same one the gateway routes and forwards — and a request
//! that has no canonical spelling is never tried against the rules at all (see
//! [`crate::RuleSet::evaluate`], step 0).
//!
//! Over Envoy's HTTP mode two more facts are settled here: the `path_prefix` the proxy put in
//! front of the original path is removed, and the client address is read from
//! `x-forwarded-for` when (and only when) the TCP peer is a trusted proxy.

use std::borrow::Cow;
use std::net::IpAddr;

use canonical::{HostOptions, PathOptions};
use ipnet::IpNet;

use crate::request::{Request, Transport};

/// How requests are read before matching. The defaults are the safe ones; an embedding server
/// fills them from its own config (`authz-server` from `[server]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestOptions {
    /// Match the canonical path (`true`, the default) or the path exactly as received
    /// (`false`: only safe when every proxy in front normalises). Envoy's `normalize_path`.
    pub normalize_path: bool,
    /// How the path is made canonical: merged slashes, the escaped-slash policy.
    pub path: PathOptions,
    /// HTTP mode only: the `path_prefix` the proxy's `http_service` puts in front of the
    /// original path, removed before matching; empty for none. A request without it is not
    /// matched against the rules.
    pub http_path_prefix: String,
    /// HTTP mode only: proxies (CIDRs) whose `x-forwarded-for` is believed. When the TCP peer
    /// is one of them, the client is the rightmost `x-forwarded-for` address that is not;
    /// otherwise the client is the TCP peer.
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for RequestOptions {
    fn default() -> Self {
        Self {
            normalize_path: true,
            path: PathOptions::default(),
            http_path_prefix: String::new(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// Why a request cannot be matched against the rules. The text goes into the trace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Unusable {
    /// The path has no canonical form.
    #[error("path cannot be made canonical: {0}")]
    Path(canonical::PathError),
    /// The authority has no canonical form.
    #[error("host cannot be made canonical: {0}")]
    Host(canonical::HostError),
    /// HTTP mode: the path does not start with the declared prefix.
    #[error("path does not start with the configured path_prefix {0:?}")]
    MissingPrefix(String),
}

/// The request with its path, host and (HTTP mode) client made canonical; borrowed unchanged
/// when it already was, so the common case copies nothing.
pub(crate) fn prepare<'r>(
    request: &'r Request,
    options: &RequestOptions,
) -> Result<Cow<'r, Request>, Unusable> {
    let path = path(request, options)?;
    let host_options = HostOptions::default();
    let host = if canonical::is_canonical_host(&request.host, &request.scheme, &host_options) {
        Cow::Borrowed(request.host.as_str())
    } else {
        let host = canonical::canonical_host(&request.host, &request.scheme, &host_options)
            .map_err(Unusable::Host)?;
        Cow::Owned(host)
    };
    let client = match request.transport {
        Transport::Http if !options.trusted_proxies.is_empty() => {
            Some(client_ip(request, &options.trusted_proxies))
        }
        _ => None,
    };
    let unchanged = path == request.path
        && host == request.host
        && client.is_none_or(|ip| ip == request.source.ip);
    if unchanged {
        return Ok(Cow::Borrowed(request));
    }
    let mut prepared = request.clone();
    prepared.path = path.into_owned();
    prepared.host = host.into_owned();
    if let Some(ip) = client
        && ip != request.source.ip
    {
        // The port of a forwarded client is unknown.
        prepared.source.ip = ip;
        prepared.source.port = 0;
    }
    Ok(Cow::Owned(prepared))
}

/// The path (with its query, unchanged) as the rules see it. An empty path (a gRPC check
/// without one) stays empty; `*` (a server-wide `OPTIONS`) stays `*`.
pub(crate) fn path<'r>(
    request: &'r Request,
    options: &RequestOptions,
) -> Result<Cow<'r, str>, Unusable> {
    let mut target = request.path.as_str();
    if request.transport == Transport::Http && !options.http_path_prefix.is_empty() {
        target = target
            .strip_prefix(options.http_path_prefix.as_str())
            .filter(|rest| rest.starts_with('/'))
            .ok_or_else(|| Unusable::MissingPrefix(options.http_path_prefix.clone()))?;
    }
    if !options.normalize_path || target.is_empty() || target == "*" {
        return Ok(Cow::Borrowed(target));
    }
    let (raw_path, query) = canonical::split_target(target).map_err(Unusable::Path)?;
    // What proxies send is nearly always canonical already: one scan, nothing copied.
    if canonical::is_canonical_path(raw_path, &options.path) {
        return Ok(Cow::Borrowed(target));
    }
    let path = canonical::canonical_path(raw_path, &options.path).map_err(Unusable::Path)?;
    Ok(match query {
        None if path == raw_path => Cow::Borrowed(target),
        None => Cow::Owned(path),
        Some(query) => Cow::Owned(format!("{path}?{query}")),
    })
}

/// The client of an HTTP-mode request whose peer may be a trusted proxy: the peer itself when
/// it is not trusted or sent no `x-forwarded-for`; else the rightmost forwarded address that is
/// not a trusted proxy (the leftmost when all are). An entry that is not an address makes the
/// client unknown (`None`): the chain cannot be followed past it.
fn client_ip(request: &Request, trusted: &[IpNet]) -> Option<IpAddr> {
    let is_trusted = |ip: IpAddr| {
        let plain = ip.to_canonical();
        trusted
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&plain))
    };
    let peer = request.source.ip?;
    if !is_trusted(peer) {
        return Some(peer);
    }
    let Some(forwarded) = request.header("x-forwarded-for") else {
        return Some(peer);
    };
    let mut client = peer;
    for entry in forwarded.rsplit(',') {
        let ip = parse_forwarded(entry.trim())?;
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    Some(client)
}

/// One `x-forwarded-for` entry: an IPv4 or IPv6 address, possibly `[v6]` or with a port.
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(socket) = entry.parse::<std::net::SocketAddr>() {
        return Some(socket.ip());
    }
    entry
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse().ok())
}

#[cfg(test)]
mod tests;
