//! Routes as written → [`Route`]: hosts, the path condition, methods, header conditions, the
//! prefix rewrite and the timeout, each checked on its own.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use toml::Spanned;

use super::fields::{Errors, anchored, duration, header_name};
use super::raw;
use crate::request::Upgrade;
use crate::route::{HeaderMatch, HeaderValueMatch, HostMatch, PathMatch, Route, RouteMatch};
use crate::upstream::Backend;

const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

pub(super) fn compile_route(
    r: &raw::RawRoute,
    backends: &HashMap<String, Arc<Backend>>,
    errors: &mut Errors,
) -> Option<Route> {
    let backend = backends.get(r.backend.get_ref()).cloned();
    if backend.is_none() {
        errors.at(
            &r.backend,
            format!("unknown backend `{}`", r.backend.get_ref()),
        );
    }
    let hosts = route_hosts(&r.hosts, errors);
    let path = r
        .path
        .as_ref()
        .map_or(PathMatch::Any, |p| route_path(p, errors));
    let methods = route_methods(&r.methods, errors);
    let headers = route_headers(&r.headers, errors);
    if let Some(rw) = &r.rewrite_prefix {
        if !matches!(path, PathMatch::Prefix(_)) {
            errors.at(rw, "rewrite_prefix needs a `path = { prefix = ... }` match");
        }
        if !rw.get_ref().starts_with('/') {
            errors.at(rw, "rewrite_prefix must start with `/`");
        }
    }
    let timeout = duration(&r.timeout, DEFAULT_ROUTE_TIMEOUT, errors);
    let upgrades = route_upgrades(&r.upgrades, errors);
    let retries = super::retries::route_retries(r, errors);
    let header_rules = super::header_rules::route_header_rules(r, errors);
    Some(Route {
        name: r.name.get_ref().clone(),
        label: Arc::from(r.name.get_ref().as_str()),
        matcher: RouteMatch {
            hosts,
            path,
            methods,
            headers,
        },
        backend: backend?,
        rewrite_prefix: r.rewrite_prefix.as_ref().map(|s| s.get_ref().clone()),
        timeout,
        policies: Vec::new(),
        gateway_policies_disabled: false,
        context_extensions: BTreeMap::new(),
        upgrades,
        retries,
        header_rules,
    })
}

/// `upgrades = [...]`: the protocols a route tunnels; `websocket` only (case-insensitive).
fn route_upgrades(raw: &[Spanned<String>], errors: &mut Errors) -> Vec<Upgrade> {
    let mut upgrades = Vec::new();
    for u in raw {
        match Upgrade::from_token(u.get_ref()) {
            Some(upgrade) if !upgrades.contains(&upgrade) => upgrades.push(upgrade),
            Some(_) => {}
            None if u.get_ref().eq_ignore_ascii_case("h2c") => {
                errors.at(
                    u,
                    "h2c upgrades are never tunnelled; only `websocket` is allowed",
                );
            }
            None => errors.at(
                u,
                format!("unknown upgrade `{}`: expected `websocket`", u.get_ref()),
            ),
        }
    }
    upgrades
}

/// `hosts = [...]`: exact hosts and `*.suffix` wildcards, lower-cased.
fn route_hosts(raw: &[Spanned<String>], errors: &mut Errors) -> Vec<HostMatch> {
    let mut hosts = Vec::new();
    for h in raw {
        let host = h.get_ref().to_ascii_lowercase();
        if let Some(suffix) = host.strip_prefix('*') {
            if suffix.starts_with('.') && suffix.len() > 1 && !suffix.contains('*') {
                hosts.push(HostMatch::Suffix(suffix.to_owned()));
                continue;
            }
        } else if !host.is_empty() && !host.contains(['*', '/', ':']) {
            hosts.push(HostMatch::Exact(host));
            continue;
        }
        errors.at(
            h,
            format!(
                "invalid host `{}`: expected example.com or *.example.com",
                h.get_ref()
            ),
        );
    }
    hosts
}

/// `path = { exact | prefix | regex }`: exactly one, exact and prefix in canonical form.
fn route_path(p: &Spanned<raw::RawPathMatch>, errors: &mut Errors) -> PathMatch {
    match (&p.get_ref().exact, &p.get_ref().prefix, &p.get_ref().regex) {
        (Some(e), None, None) if e.starts_with('/') => {
            route_path_is_canonical(p, e, errors);
            PathMatch::Exact(e.clone())
        }
        (None, Some(pre), None) if pre.starts_with('/') => {
            route_path_is_canonical(p, pre, errors);
            PathMatch::Prefix(pre.clone())
        }
        (None, None, Some(re)) => anchored(&Spanned::new(p.span(), re.clone()), errors)
            .map_or(PathMatch::Any, PathMatch::Regex),
        (Some(_), None, None) | (None, Some(_), None) => {
            errors.at(p, "path exact and prefix must start with `/`");
            PathMatch::Any
        }
        _ => {
            errors.at(p, "path needs exactly one of `exact`, `prefix`, `regex`");
            PathMatch::Any
        }
    }
}

/// `methods = [...]`, upper-cased.
fn route_methods(raw: &[Spanned<String>], errors: &mut Errors) -> Vec<Method> {
    let mut methods = Vec::new();
    for m in raw {
        match Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes()) {
            Ok(method) => methods.push(method),
            Err(_) => errors.at(m, format!("invalid method `{}`", m.get_ref())),
        }
    }
    methods
}

/// `headers = [...]`: present, exact value or anchored regex.
fn route_headers(raw: &[raw::RawHeaderMatch], errors: &mut Errors) -> Vec<HeaderMatch> {
    let mut headers = Vec::new();
    for h in raw {
        let Some(name) = header_name(&h.name, errors) else {
            continue;
        };
        let value = match (&h.value, &h.regex) {
            (None, None) => HeaderValueMatch::Present,
            (Some(v), None) => HeaderValueMatch::Exact(v.clone()),
            (None, Some(re)) => match anchored(re, errors) {
                Some(re) => HeaderValueMatch::Regex(re),
                None => continue,
            },
            (Some(_), Some(re)) => {
                errors.at(re, "a header match takes `value` or `regex`, not both");
                continue;
            }
        };
        headers.push(HeaderMatch { name, value });
    }
    headers
}

/// Routes match the canonical path, so a route written in another spelling (`/%7Euser`,
/// `/a/./b`) could never match: refuse it and name the spelling that would. The check uses the
/// normalisation every listener applies (slashes and escaped slashes are per-listener choices).
fn route_path_is_canonical<T>(at: &Spanned<T>, path: &str, errors: &mut Errors) {
    let always = canonical::PathOptions {
        merge_slashes: false,
        escaped_slashes: canonical::EscapedSlashes::Keep,
        path_parameters: canonical::PathParameters::Keep,
    };
    match canonical::canonical_path(path, &always) {
        Ok(canonical) if canonical == path => {}
        Ok(canonical) => errors.at(
            at,
            format!("route path `{path}` can never match: requests are matched in canonical form, write `{canonical}`"),
        ),
        Err(error) => errors.at(at, format!("route path `{path}` can never match: {error}")),
    }
}
