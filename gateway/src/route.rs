//! Routes and the route table: what a validated route is ([`Route`], built by the config
//! compiler) and which route serves a request, decided in one documented precedence.
//!
//! Precedence (Gateway API's, which is what an operator of Envoy Gateway or agentgateway
//! expects), highest first:
//!
//! 1. host: an exact host beats a wildcard (`*.example.com`, longer suffix first) beats no host;
//! 2. path: exact beats prefix (longer prefix first) beats regex beats no path condition;
//! 3. a route with a method condition beats one without;
//! 4. more header conditions beat fewer;
//! 5. file order.
//!
//! The first route in that order whose conditions all hold serves the request. This order is
//! computed once at load time by [`RouteTable::new`].

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method};
use regex::Regex;

use crate::ext_authz::ExtAuthz;
use crate::request::strip_port;
use crate::upstream::Backend;

/// A validated route.
#[derive(Debug)]
pub struct Route {
    /// The route's name.
    pub name: String,
    /// The name as metric label and log field, shared rather than copied per request.
    pub label: Arc<str>,
    /// What a request must look like to take this route.
    pub matcher: RouteMatch,
    /// Where the request goes.
    pub backend: Arc<Backend>,
    /// Replaces the matched prefix of the path when set.
    pub rewrite_prefix: Option<String>,
    /// The upstream response-header timeout.
    pub timeout: Duration,
    /// Route-level ext_auth checks, run after the gateway-level ones.
    pub policies: Vec<Arc<ExtAuthz>>,
    /// A route policy said `disabled = true`: the listener's policies do not run on this route.
    pub gateway_policies_disabled: bool,
    /// Context extensions from route policies; they override the gateway policy's on this route.
    pub context_extensions: BTreeMap<String, String>,
    /// The upgrades this route tunnels after the check (`upgrades = ["websocket"]`).
    pub upgrades: Vec<crate::request::Upgrade>,
    /// How failed tries are retried (`retries = { ... }`); `None`: each request is sent once.
    pub retries: Option<Arc<crate::proxy::retry::policy::RetryPolicy>>,
    /// `host_rewrite`, `request_headers` and `response_headers`, applied after the check.
    pub header_rules: crate::proxy::route_headers::RouteHeaders,
}

/// Every route, sorted by precedence.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    /// Sorts `routes` (given in file order) into match precedence.
    pub fn new(routes: Vec<Route>) -> RouteTable {
        let mut indexed: Vec<(usize, Route)> = routes.into_iter().enumerate().collect();
        indexed.sort_by_key(|(index, route)| (Reverse(route.matcher.rank()), *index));
        RouteTable {
            routes: indexed.into_iter().map(|(_, r)| Arc::new(r)).collect(),
        }
    }

    /// The route that serves this request, if any. `host` is normally the canonical one (lower
    /// case already), so it is copied only when it is not.
    pub fn find(
        &self,
        host: &str,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<&Arc<Route>> {
        let host = strip_port(host);
        let host: Cow<'_, str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(host)
        };
        self.routes
            .iter()
            .find(|r| r.matcher.matches(&host, method, path, headers))
    }

    /// The routes in precedence order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter()
    }
}

/// The conditions of one route; all must hold.
#[derive(Debug, Default)]
pub struct RouteMatch {
    /// Any of these hosts; empty means any host.
    pub hosts: Vec<HostMatch>,
    /// The path condition.
    pub path: PathMatch,
    /// Any of these methods; empty means any method.
    pub methods: Vec<Method>,
    /// All of these headers.
    pub headers: Vec<HeaderMatch>,
}

/// A host condition, lower-case, without port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// `example.com`.
    Exact(String),
    /// `*.example.com`, stored as `.example.com`.
    Suffix(String),
}

/// A path condition, on the path without its query.
#[derive(Debug, Default)]
pub enum PathMatch {
    /// Any path.
    #[default]
    Any,
    /// The path equals this.
    Exact(String),
    /// The path starts with this on a segment boundary.
    Prefix(String),
    /// The whole path matches this (anchored at load time).
    Regex(Regex),
}

/// A header condition.
#[derive(Debug)]
pub struct HeaderMatch {
    /// The header name.
    pub name: http::HeaderName,
    /// What a value must look like.
    pub value: HeaderValueMatch,
}

/// How a header's value is compared.
#[derive(Debug)]
pub enum HeaderValueMatch {
    /// The header is present.
    Present,
    /// One value equals this.
    Exact(String),
    /// One value matches this (anchored at load time).
    Regex(Regex),
}

impl RouteMatch {
    fn matches(&self, host: &str, method: &Method, path: &str, headers: &HeaderMap) -> bool {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        (self.hosts.is_empty() || self.hosts.iter().any(|h| h.matches(host)))
            && self.path.matches(path)
            && (self.methods.is_empty() || self.methods.contains(method))
            && self.headers.iter().all(|h| h.matches(headers))
    }

    /// The sort key of the precedence documented at the top of this module (higher wins).
    fn rank(&self) -> (u8, usize, u8, usize, bool, usize) {
        let (host_kind, host_len) = self
            .hosts
            .iter()
            .map(|h| match h {
                HostMatch::Exact(s) => (2, s.len()),
                HostMatch::Suffix(s) => (1, s.len()),
            })
            .max()
            .unwrap_or((0, 0));
        let (path_kind, path_len) = match &self.path {
            PathMatch::Exact(p) => (3, p.len()),
            PathMatch::Prefix(p) => (2, p.len()),
            PathMatch::Regex(_) => (1, 0),
            PathMatch::Any => (0, 0),
        };
        (
            host_kind,
            host_len,
            path_kind,
            path_len,
            !self.methods.is_empty(),
            self.headers.len(),
        )
    }
}

impl HostMatch {
    fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(h) => h == host,
            HostMatch::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }
}

impl PathMatch {
    /// Whether `path` (without query) satisfies this condition.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Any => true,
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => {
                path.starts_with(p.as_str())
                    && (p.ends_with('/')
                        || path.len() == p.len()
                        || path.as_bytes()[p.len()] == b'/')
            }
            PathMatch::Regex(r) => r.is_match(path),
        }
    }
}

impl HeaderMatch {
    fn matches(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(&self.name).iter().peekable();
        match &self.value {
            HeaderValueMatch::Present => values.peek().is_some(),
            HeaderValueMatch::Exact(want) => values.any(|v| v.as_bytes() == want.as_bytes()),
            HeaderValueMatch::Regex(re) => values.any(|v| v.to_str().is_ok_and(|v| re.is_match(v))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_matches_on_segment_boundaries() {
        let p = PathMatch::Prefix("/openai".into());
        assert!(p.matches("/openai"));
        assert!(p.matches("/openai/v1"));
        assert!(!p.matches("/openaix"));
        assert!(PathMatch::Prefix("/".into()).matches("/anything"));
    }

    #[test]
    fn hosts_ignore_port_and_case() {
        assert_eq!(strip_port("Example.com:8080"), "Example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert!(HostMatch::Suffix(".example.com".into()).matches("a.example.com"));
        assert!(!HostMatch::Suffix(".example.com".into()).matches("example.com"));
    }
}
