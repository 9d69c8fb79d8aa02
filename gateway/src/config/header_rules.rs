//! A route's `host_rewrite`, `request_headers` and `response_headers` as written →
//! [`RouteHeaders`]: names checked, values expanded (`${VAR}`) and checked, each error at its
//! place. An error message may name a header or a variable, never a value.

use http::HeaderValue;
use http::header::{self, HeaderName};
use toml::Spanned;

use super::env::{self, EnvError};
use super::fields::{Errors, header_name};
use super::raw;
use crate::proxy::route_headers::{ConfiguredValue, HeaderMutation, HostRewrite, RouteHeaders};

/// Headers a route may not touch: framing and connection headers the proxy owns, and `host`,
/// which `host_rewrite` sets.
const NOT_MUTABLE: [HeaderName; 8] = [
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::CONNECTION,
    header::TE,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// The route's header rules.
pub(super) fn route_header_rules(r: &raw::RawRoute, errors: &mut Errors) -> RouteHeaders {
    RouteHeaders {
        host_rewrite: r
            .host_rewrite
            .as_ref()
            .and_then(|h| host_rewrite(h, errors)),
        request: r
            .request_headers
            .as_ref()
            .map(|m| mutation(m.get_ref(), errors))
            .unwrap_or_default(),
        response: r
            .response_headers
            .as_ref()
            .map(|m| mutation(m.get_ref(), errors))
            .unwrap_or_default(),
    }
}

fn host_rewrite(field: &Spanned<String>, errors: &mut Errors) -> Option<HostRewrite> {
    if field.get_ref() == "auto" {
        return Some(HostRewrite::Auto);
    }
    let value = configured_value(field, errors)?;
    if http::uri::Authority::try_from(value.0.as_bytes()).is_err() {
        errors.at(
            field,
            "host_rewrite must be \"auto\" or a host (with an optional port)",
        );
        return None;
    }
    Some(HostRewrite::Literal(value))
}

fn mutation(m: &raw::RawHeaderMutation, errors: &mut Errors) -> HeaderMutation {
    let mut out = HeaderMutation::default();
    for name in &m.remove {
        if let Some(n) = mutable_name(name, errors) {
            out.remove.push(n);
        }
    }
    for (map, into) in [(&m.set, &mut out.set), (&m.add, &mut out.add)] {
        for (name, value) in map {
            let n = mutable_name(name, errors);
            let v = configured_value(value, errors);
            if let (Some(n), Some(v)) = (n, v) {
                into.push((n, v));
            }
        }
    }
    out
}

fn mutable_name(name: &Spanned<String>, errors: &mut Errors) -> Option<HeaderName> {
    let n = header_name(name, errors)?;
    if n == header::HOST {
        errors.at(
            name,
            "a route cannot change `host` here: use `host_rewrite`",
        );
        return None;
    }
    if NOT_MUTABLE.contains(&n) {
        errors.at(
            name,
            format!("a route cannot change `{n}`: the proxy owns framing and connection headers"),
        );
        return None;
    }
    Some(n)
}

/// The value with `${VAR}` expanded; marked sensitive (HTTP/2 never indexes it) when it came
/// from the environment.
fn configured_value(field: &Spanned<String>, errors: &mut Errors) -> Option<ConfiguredValue> {
    let (text, from_env) = match env::expand(field.get_ref()) {
        Ok(expanded) => expanded,
        Err(e @ (EnvError::Unset(_) | EnvError::Invalid)) => {
            errors.at(field, e.to_string());
            return None;
        }
    };
    match HeaderValue::from_str(&text) {
        Ok(mut v) => {
            v.set_sensitive(from_env);
            Some(ConfiguredValue(v))
        }
        Err(_) => {
            // The text may hold a secret: say what is wrong, not what it is.
            let what = if from_env {
                "the value (after `${...}`) is not a valid header value"
            } else {
                "not a valid header value (control characters or non-ASCII)"
            };
            errors.at(field, what);
            None
        }
    }
}
