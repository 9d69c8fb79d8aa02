//! A route's own changes to what goes upstream and what comes back: `host_rewrite`,
//! `request_headers` and `response_headers`. They run in the forward step, after the check, so a
//! header the route sets always wins over one the client sent (a client can never supply the
//! route's `authorization`), and the check decided on the request the client sent.
//!
//! Order, as Envoy's: remove, then set (replaces every value), then add (appends a value).
//! Configured values can hold secrets (`${VAR}`): [`ConfiguredValue`] prints as `<redacted>`.

use std::fmt;

use http::header::{HOST, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;

use crate::upstream::AutoHost;

/// A header value from the config; never printed (it may hold an API key from `${VAR}`).
#[derive(Clone, PartialEq, Eq)]
pub struct ConfiguredValue(pub HeaderValue);

impl fmt::Debug for ConfiguredValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Headers to remove, set and add.
#[derive(Debug, Clone, Default)]
pub struct HeaderMutation {
    /// Removed first.
    pub remove: Vec<HeaderName>,
    /// Then set: every value the header had is replaced.
    pub set: Vec<(HeaderName, ConfiguredValue)>,
    /// Then added: appended to what is there.
    pub add: Vec<(HeaderName, ConfiguredValue)>,
}

impl HeaderMutation {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Applies the mutation to `headers`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.0.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.0.clone());
        }
    }
}

/// What `host_rewrite` sets upstream.
#[derive(Debug, Clone)]
pub enum HostRewrite {
    /// The chosen endpoint's host (with its port unless the scheme's default): Envoy's
    /// `auto_host_rewrite`, as hosted APIs behind a shared address require.
    Auto,
    /// This host.
    Literal(ConfiguredValue),
}

/// A route's header rules, compiled.
#[derive(Debug, Clone, Default)]
pub struct RouteHeaders {
    /// `host_rewrite`.
    pub host_rewrite: Option<HostRewrite>,
    /// `request_headers`: applied to the request sent upstream.
    pub request: HeaderMutation,
    /// `response_headers`: applied to the backend's response.
    pub response: HeaderMutation,
}

impl RouteHeaders {
    /// The route's changes to the upstream request head.
    pub fn apply_to_request(&self, parts: &mut Parts) {
        self.request.apply(&mut parts.headers);
        match &self.host_rewrite {
            None => {}
            Some(HostRewrite::Literal(host)) => {
                parts.headers.insert(HOST, host.0.clone());
            }
            // The endpoint is chosen per try, so the try sets it.
            Some(HostRewrite::Auto) => {
                parts.extensions.insert(AutoHost);
            }
        }
    }

    /// The route's changes to the backend's response head.
    pub fn apply_to_response(&self, headers: &mut HeaderMap) {
        self.response.apply(headers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(v: &'static str) -> ConfiguredValue {
        ConfiguredValue(HeaderValue::from_static(v))
    }

    #[test]
    fn remove_then_set_then_add_and_the_client_cannot_preempt_a_set() {
        let rules = RouteHeaders {
            host_rewrite: Some(HostRewrite::Literal(value("api.example"))),
            request: HeaderMutation {
                remove: vec![HeaderName::from_static("x-internal")],
                set: vec![(HeaderName::from_static("authorization"), value("Bearer k"))],
                add: vec![(HeaderName::from_static("x-team"), value("blue"))],
            },
            response: HeaderMutation::default(),
        };
        let (mut parts, ()) = http::Request::builder()
            .header("authorization", "Bearer client")
            .header("authorization", "Bearer other")
            .header("x-internal", "1")
            .header("x-team", "red")
            .header("host", "gw.local")
            .body(())
            .expect("a request")
            .into_parts();
        rules.apply_to_request(&mut parts);
        let all = |n: &str| {
            parts
                .headers
                .get_all(n)
                .iter()
                .map(|v| v.to_str().expect("ascii").to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(all("authorization"), ["Bearer k"]);
        assert_eq!(all("x-team"), ["red", "blue"]);
        assert!(all("x-internal").is_empty());
        assert_eq!(all("host"), ["api.example"]);
    }

    #[test]
    fn values_never_print() {
        let printed = format!("{:?}", value("Bearer sk-secret"));
        assert_eq!(printed, "<redacted>");
        let rules = RouteHeaders {
            host_rewrite: Some(HostRewrite::Auto),
            request: HeaderMutation {
                set: vec![(HeaderName::from_static("authorization"), value("sk-secret"))],
                ..HeaderMutation::default()
            },
            response: HeaderMutation::default(),
        };
        assert!(!format!("{rules:?}").contains("sk-secret"));
    }

    #[test]
    fn auto_host_is_left_to_the_endpoint() {
        let rules = RouteHeaders {
            host_rewrite: Some(HostRewrite::Auto),
            ..RouteHeaders::default()
        };
        let (mut parts, ()) = http::Request::new(()).into_parts();
        rules.apply_to_request(&mut parts);
        assert!(parts.extensions.get::<AutoHost>().is_some());
    }
}
