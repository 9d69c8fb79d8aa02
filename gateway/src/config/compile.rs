//! The one conversion from the file as written to the validated [`Config`], collecting every
//! error with its byte offset (turned into `file:line:col` by the caller).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use http::{HeaderName, Method, StatusCode};
use regex::Regex;
use toml::Spanned;

use super::raw::{self, RawTargetKind};
use super::{Config, Listener, Overrides, parse_duration};
use crate::ext_authz::{self, AuthzBackend, ExtAuthz, HeaderFilter, HttpSettings, Transport};
use crate::route::{
    HeaderMatch, HeaderValueMatch, HostMatch, PathMatch, Route, RouteMatch, RouteTable,
};
use crate::tls::ListenerTls;
use crate::upstream::Backend;

const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_MAX_HEADERS_KB: u32 = 60;

#[derive(Default)]
struct Errors(Vec<(usize, String)>);

impl Errors {
    fn at<T>(&mut self, spanned: &Spanned<T>, message: impl Into<String>) {
        self.0.push((spanned.span().start, message.into()));
    }
}

pub(super) fn compile(
    mut raw: raw::RawConfig,
    overrides: &Overrides,
    previous: Option<&Config>,
) -> Result<Config, Vec<(usize, String)>> {
    let mut errors = Errors::default();
    apply_overrides(&mut raw, overrides, &mut errors);

    let backends = compile_backends(&raw.backends, previous, &mut errors);
    let authz_backends = compile_authz_backends(&raw.authz_backends, previous, &mut errors);
    let admin = raw.admin.as_ref().and_then(|a| {
        a.address
            .get_ref()
            .parse::<SocketAddr>()
            .map_err(|_| {
                errors.at(
                    &a.address,
                    format!(
                        "invalid admin address `{}`: expected ip:port, e.g. 127.0.0.1:9901",
                        a.address.get_ref()
                    ),
                );
            })
            .ok()
    });

    let admin_limits = super::limits::compile(
        raw.admin.as_ref().and_then(|a| a.limits.as_ref()),
        super::limits::Limits::default().for_admin(),
        &mut errors.0,
    );

    let mut listeners: Vec<Listener> = Vec::new();
    for l in &raw.listeners {
        if listeners.iter().any(|x| x.name == *l.name.get_ref()) {
            errors.at(
                &l.name,
                format!("duplicate listener name `{}`", l.name.get_ref()),
            );
        }
        let address = match l.address.get_ref().parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                errors.at(
                    &l.address,
                    format!(
                        "invalid listener address `{}`: expected ip:port, e.g. 0.0.0.0:8080",
                        l.address.get_ref()
                    ),
                );
                continue;
            }
        };
        let kb = l
            .max_request_headers_kb
            .as_ref()
            .map_or(DEFAULT_MAX_HEADERS_KB, |k| *k.get_ref());
        if let Some(k) = &l.max_request_headers_kb
            && !(1..=8192).contains(k.get_ref())
        {
            errors.at(k, "max_request_headers_kb must be between 1 and 8192");
        }
        let tls = l
            .tls
            .as_ref()
            .and_then(|t| compile_listener_tls(t, &mut errors));
        let limits = super::limits::compile(
            l.limits.as_ref(),
            super::limits::Limits {
                max_request_header_bytes: kb as usize * 1024,
                ..super::limits::Limits::default()
            },
            &mut errors.0,
        );
        listeners.push(Listener {
            name: l.name.get_ref().clone(),
            address,
            limits,
            policies: Vec::new(),
            tls,
            canonical: canonical_options(l),
        });
    }
    if raw.listeners.is_empty() {
        errors
            .0
            .push((0, "no listeners: add at least one [[listeners]]".into()));
    }

    let mut routes: Vec<Route> = Vec::new();
    for r in &raw.routes {
        if routes.iter().any(|x| x.name == *r.name.get_ref()) {
            errors.at(
                &r.name,
                format!("duplicate route name `{}`", r.name.get_ref()),
            );
        }
        if let Some(route) = compile_route(r, &backends, &mut errors) {
            routes.push(route);
        }
    }

    for p in &raw.policies {
        attach_policy(p, &authz_backends, &mut listeners, &mut routes, &mut errors);
    }
    let header_bytes = listeners
        .iter()
        .map(|l| l.limits.max_request_header_bytes)
        .max();
    super::limits::check_body_limits(&raw.policies, header_bytes.unwrap_or(0), &mut errors.0);

    if errors.0.is_empty() {
        Ok(Config {
            listeners,
            routes: RouteTable::new(routes),
            admin,
            admin_limits,
            backends,
            authz_backends,
        })
    } else {
        Err(errors.0)
    }
}

fn apply_overrides(raw: &mut raw::RawConfig, overrides: &Overrides, errors: &mut Errors) {
    for (name, address) in &overrides.listen {
        let target = match name {
            None => raw.listeners.first_mut(),
            Some(n) => raw.listeners.iter_mut().find(|l| l.name.get_ref() == n),
        };
        match target {
            Some(l) => {
                let span = l.address.span();
                l.address = Spanned::new(span, address.clone());
            }
            None => errors.0.push((
                0,
                format!(
                    "--listen: no listener {}",
                    name.as_deref().unwrap_or("at all")
                ),
            )),
        }
    }
    for (name, url) in &overrides.backend_urls {
        match raw.backends.iter_mut().find(|b| b.name.get_ref() == name) {
            Some(b) => b.url = Spanned::new(b.url.span(), url.clone()),
            None => errors
                .0
                .push((0, format!("--backend-url: no backend `{name}`"))),
        }
    }
    for (name, url) in &overrides.authz_urls {
        match raw
            .authz_backends
            .iter_mut()
            .find(|b| b.name.get_ref() == name)
        {
            Some(b) => b.url = Spanned::new(b.url.span(), url.clone()),
            None => errors
                .0
                .push((0, format!("--authz-url: no authz backend `{name}`"))),
        }
    }
    if let Some(address) = &overrides.admin {
        let span = raw.admin.as_ref().map_or(0..0, |a| a.address.span());
        let limits = raw.admin.take().and_then(|a| a.limits);
        raw.admin = Some(raw::RawAdmin {
            address: Spanned::new(span, address.clone()),
            limits,
        });
    }
}

/// The listener's canonicalisation keys, with their documented defaults (every value the
/// types accept is valid, so nothing here can fail).
fn canonical_options(l: &raw::RawListener) -> crate::request::CanonicalOptions {
    let defaults = canonical::PathOptions::default();
    crate::request::CanonicalOptions {
        path: canonical::PathOptions {
            merge_slashes: l.merge_slashes.unwrap_or(defaults.merge_slashes),
            escaped_slashes: l
                .path_with_escaped_slashes_action
                .unwrap_or(defaults.escaped_slashes),
        },
        host: canonical::HostOptions {
            strip_any_port: l.strip_any_host_port.unwrap_or(false),
        },
        xff_num_trusted_hops: l.xff_num_trusted_hops.unwrap_or(0),
    }
}

fn compile_listener_tls(t: &raw::RawListenerTls, errors: &mut Errors) -> Option<Arc<ListenerTls>> {
    let require = t.require_client_cert.as_ref().is_none_or(|r| *r.get_ref());
    if let Some(r) = &t.require_client_cert
        && t.client_ca.is_none()
    {
        errors.at(r, "require_client_cert needs `client_ca`");
    }
    match crate::tls::listener_tls(
        t.cert.get_ref(),
        t.key.get_ref(),
        t.client_ca.as_ref().map(|c| c.get_ref().as_str()),
        require,
    ) {
        Ok(tls) => Some(Arc::new(tls)),
        Err(e) => {
            // Point at the file the message names when it names one.
            let at = [Some(&t.cert), Some(&t.key), t.client_ca.as_ref()]
                .into_iter()
                .flatten()
                .find(|f| e.contains(&format!("`{}`", f.get_ref())))
                .unwrap_or(&t.cert);
            errors.at(at, format!("tls: {e}"));
            None
        }
    }
}

/// `http://host:port` (optionally with a trailing `/`) → `host:port`.
fn http_authority(url: &Spanned<String>, errors: &mut Errors) -> Option<Authority> {
    url_authority(url, &["http"], errors).map(|(_, a)| a)
}

/// `<scheme>://host:port` with one of `schemes` → `(scheme, host:port)`.
fn url_authority(
    url: &Spanned<String>,
    schemes: &[&str],
    errors: &mut Errors,
) -> Option<(String, Authority)> {
    let text = url.get_ref();
    let parsed = text.parse::<http::Uri>().ok().filter(|u| {
        u.scheme_str().is_some_and(|s| schemes.contains(&s))
            && u.authority().is_some_and(|a| a.port_u16().is_some())
            && u.path_and_query().is_none_or(|pq| pq.as_str() == "/")
    });
    match parsed.and_then(|u| Some((u.scheme_str()?.to_owned(), u.authority()?.clone()))) {
        Some(a) => Some(a),
        None => {
            errors.at(
                url,
                format!(
                    "invalid url `{text}`: expected {}://host:port with no path",
                    schemes.join("|")
                ),
            );
            None
        }
    }
}

fn duration(field: &Option<Spanned<String>>, default: Duration, errors: &mut Errors) -> Duration {
    let Some(field) = field else { return default };
    match parse_duration(field.get_ref()) {
        Some(d) if !d.is_zero() => d,
        _ => {
            errors.at(
                field,
                format!(
                    "invalid duration `{}`: expected a positive whole number with unit ms, s or m, e.g. \"200ms\"",
                    field.get_ref()
                ),
            );
            default
        }
    }
}

fn compile_backends(
    raw: &[raw::RawBackend],
    previous: Option<&Config>,
    errors: &mut Errors,
) -> HashMap<String, Arc<Backend>> {
    let mut out = HashMap::new();
    for b in raw {
        if out.contains_key(b.name.get_ref()) {
            errors.at(
                &b.name,
                format!("duplicate backend name `{}`", b.name.get_ref()),
            );
            continue;
        }
        let connect_timeout = duration(&b.connect_timeout, DEFAULT_CONNECT_TIMEOUT, errors);
        if let Some(authority) = http_authority(&b.url, errors) {
            let kept = previous
                .and_then(|p| p.backends.get(b.name.get_ref()))
                .filter(|old| old.authority == authority && old.connect_timeout == connect_timeout)
                .cloned();
            out.insert(
                b.name.get_ref().clone(),
                kept.unwrap_or_else(|| {
                    Arc::new(Backend::new(
                        b.name.get_ref().clone(),
                        authority,
                        connect_timeout,
                    ))
                }),
            );
        }
    }
    out
}

fn compile_authz_backends(
    raw: &[raw::RawAuthzBackend],
    previous: Option<&Config>,
    errors: &mut Errors,
) -> HashMap<String, Arc<AuthzBackend>> {
    let mut out = HashMap::new();
    for b in raw {
        if out.contains_key(b.name.get_ref()) {
            errors.at(
                &b.name,
                format!("duplicate authz backend name `{}`", b.name.get_ref()),
            );
            continue;
        }
        let Some((scheme, authority)) = url_authority(&b.url, &["http", "https"], errors) else {
            continue;
        };
        let tls = match (&b.tls, scheme.as_str()) {
            (None, "https") => {
                errors.at(
                    &b.url,
                    "an https:// authz backend needs `tls = { ca = ... }`",
                );
                continue;
            }
            (Some(t), "http") => {
                errors.at(&t.ca, "`tls` needs an https:// url");
                continue;
            }
            (None, _) => None,
            (Some(t), _) => {
                let identity = match (&t.cert, &t.key) {
                    (Some(c), Some(k)) => Some((c.get_ref().as_str(), k.get_ref().as_str())),
                    (None, None) => None,
                    (Some(c), None) | (None, Some(c)) => {
                        errors.at(c, "tls `cert` and `key` go together");
                        continue;
                    }
                };
                match crate::tls::ClientTls::load(
                    t.ca.get_ref(),
                    identity,
                    t.sni.as_ref().map(|s| s.get_ref().clone()),
                ) {
                    Ok(tls) => Some(tls),
                    Err(e) => {
                        let at = [Some(&t.ca), t.cert.as_ref(), t.key.as_ref()]
                            .into_iter()
                            .flatten()
                            .find(|f| e.contains(&format!("`{}`", f.get_ref())))
                            .unwrap_or(&t.ca);
                        errors.at(at, format!("tls: {e}"));
                        continue;
                    }
                }
            }
        };
        if let Some(old) = previous
            .and_then(|p| p.authz_backends.get(b.name.get_ref()))
            .filter(|old| old.authority == authority && old.tls == tls)
        {
            out.insert(b.name.get_ref().clone(), old.clone());
            continue;
        }
        match AuthzBackend::new(b.name.get_ref().clone(), authority, tls) {
            Ok(backend) => {
                out.insert(b.name.get_ref().clone(), Arc::new(backend));
            }
            Err(e) => errors.at(&b.url, format!("invalid url: {e}")),
        }
    }
    out
}

fn anchored(pattern: &Spanned<String>, errors: &mut Errors) -> Option<Regex> {
    // Check the pattern as written so the message shows the user's text, then anchor it.
    let checked = Regex::new(pattern.get_ref())
        .and_then(|_| Regex::new(&format!("^(?:{})$", pattern.get_ref())));
    match checked {
        Ok(re) => Some(re),
        Err(e) => {
            let text = e.to_string();
            let reason = text
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("error: "))
                .unwrap_or(text.as_str());
            errors.at(
                pattern,
                format!("invalid regex `{}`: {reason}", pattern.get_ref()),
            );
            None
        }
    }
}

fn header_name(name: &Spanned<String>, errors: &mut Errors) -> Option<HeaderName> {
    match HeaderName::from_bytes(name.get_ref().to_ascii_lowercase().as_bytes()) {
        Ok(n) => Some(n),
        Err(_) => {
            errors.at(name, format!("invalid header name `{}`", name.get_ref()));
            None
        }
    }
}

fn compile_route(
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
    let mut hosts = Vec::new();
    for h in &r.hosts {
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
    let path = match &r.path {
        None => PathMatch::Any,
        Some(p) => match (&p.get_ref().exact, &p.get_ref().prefix, &p.get_ref().regex) {
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
        },
    };
    let mut methods = Vec::new();
    for m in &r.methods {
        match Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes()) {
            Ok(method) => methods.push(method),
            Err(_) => errors.at(m, format!("invalid method `{}`", m.get_ref())),
        }
    }
    let mut headers = Vec::new();
    for h in &r.headers {
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
    if let Some(rw) = &r.rewrite_prefix {
        if !matches!(path, PathMatch::Prefix(_)) {
            errors.at(rw, "rewrite_prefix needs a `path = { prefix = ... }` match");
        }
        if !rw.get_ref().starts_with('/') {
            errors.at(rw, "rewrite_prefix must start with `/`");
        }
    }
    let timeout = duration(&r.timeout, DEFAULT_ROUTE_TIMEOUT, errors);
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
    })
}

fn attach_policy(
    p: &raw::RawPolicy,
    authz_backends: &HashMap<String, Arc<AuthzBackend>>,
    listeners: &mut [Listener],
    routes: &mut [Route],
    errors: &mut Errors,
) {
    let ext = &p.ext_auth;
    let check = compile_ext_auth(p, authz_backends, errors).map(Arc::new);
    if p.target_refs.get_ref().is_empty() {
        errors.at(&p.target_refs, "a policy needs at least one target_ref");
    }
    for target in p.target_refs.get_ref() {
        let name = target.name.get_ref();
        match target.kind {
            RawTargetKind::Gateway => {
                let Some(listener) = listeners.iter_mut().find(|l| l.name == *name) else {
                    errors.at(&target.name, format!("unknown listener `{name}`"));
                    continue;
                };
                if ext.disabled {
                    errors.at(
                        &p.name,
                        "`disabled` only applies to policies that target routes",
                    );
                } else if ext.backend.is_none() {
                    errors.at(&p.name, "a gateway-level ext_auth policy needs `backend`");
                }
                if let Some(check) = &check {
                    listener.policies.push(check.clone());
                }
            }
            RawTargetKind::HTTPRoute => {
                let Some(route) = routes.iter_mut().find(|r| r.name == *name) else {
                    errors.at(&target.name, format!("unknown route `{name}`"));
                    continue;
                };
                route.gateway_policies_disabled |= ext.disabled;
                route
                    .context_extensions
                    .extend(ext.context_extensions.clone());
                if let Some(check) = &check {
                    route.policies.push(check.clone());
                }
            }
        }
    }
}

/// The ext_auth check a policy runs, or `None` for a route policy that only disables or carries
/// context extensions.
fn compile_ext_auth(
    p: &raw::RawPolicy,
    authz_backends: &HashMap<String, Arc<AuthzBackend>>,
    errors: &mut Errors,
) -> Option<ExtAuthz> {
    let ext = &p.ext_auth;
    let backend_name = ext.backend.as_ref()?;
    if ext.disabled {
        errors.at(
            backend_name,
            "`disabled = true` and `backend` exclude each other",
        );
        return None;
    }
    let backend = authz_backends.get(backend_name.get_ref()).cloned();
    if backend.is_none() {
        errors.at(
            backend_name,
            format!("unknown authz backend `{}`", backend_name.get_ref()),
        );
    }
    let transport = match (&ext.grpc, &ext.http) {
        (Some(_), Some(_)) => {
            errors.at(&p.name, "ext_auth takes `grpc` or `http`, not both");
            Transport::Grpc
        }
        (_, None) => Transport::Grpc,
        (None, Some(h)) => {
            let mut names = |list: &[String]| -> Vec<HeaderName> {
                list.iter()
                    .filter_map(|n| header_name(&Spanned::new(p.name.span(), n.clone()), errors))
                    .collect()
            };
            Transport::Http(HttpSettings {
                path_prefix: h.path_prefix.clone(),
                allowed_upstream_headers: names(&h.allowed_upstream_headers),
                allowed_client_headers: names(&h.allowed_client_headers),
                allowed_client_headers_on_success: names(&h.allowed_client_headers_on_success),
            })
        }
    };
    if matches!(transport, Transport::Http(_)) && backend.as_ref().is_some_and(|b| b.tls.is_some())
    {
        errors.at(
            backend_name,
            "the http transport reaches only http:// authz backends; use grpc for https://",
        );
    }
    if let Transport::Http(h) = &transport
        && !h.path_prefix.is_empty()
        && !h.path_prefix.starts_with('/')
    {
        errors.at(&p.name, "http.path_prefix must start with `/`");
    }
    let status_on_error = match &ext.status_on_error {
        None => StatusCode::FORBIDDEN,
        Some(s) => match StatusCode::from_u16(*s.get_ref()) {
            Ok(code) if (200..=599).contains(s.get_ref()) => code,
            _ => {
                errors.at(
                    s,
                    "status_on_error must be an HTTP status between 200 and 599",
                );
                StatusCode::FORBIDDEN
            }
        },
    };
    let name_list = |list: &[String], errors: &mut Errors| -> Vec<HeaderName> {
        list.iter()
            .filter_map(|n| header_name(&Spanned::new(p.name.span(), n.clone()), errors))
            .collect()
    };
    let headers = HeaderFilter {
        allowed: ext.allowed_headers.as_ref().map(|l| name_list(l, errors)),
        disallowed: name_list(&ext.disallowed_headers, errors),
    };
    let with_request_body = ext.with_request_body.as_ref().map(|b| {
        if *b.max_request_bytes.get_ref() == 0 {
            errors.at(
                &p.name,
                "with_request_body.max_request_bytes must be positive",
            );
        }
        ext_authz::WithRequestBody {
            max_request_bytes: *b.max_request_bytes.get_ref() as usize,
            allow_partial_message: b.allow_partial_message,
            pack_as_bytes: b.pack_as_bytes,
        }
    });
    Some(ExtAuthz {
        policy: p.name.get_ref().clone(),
        label: crate::metrics::Metrics::policy(p.name.get_ref()),
        backend: backend?,
        transport,
        timeout: duration(&ext.timeout, ext_authz::DEFAULT_TIMEOUT, errors),
        failure_mode_allow: ext.failure_mode_allow,
        failure_mode_allow_header_add: ext.failure_mode_allow_header_add,
        status_on_error,
        headers,
        with_request_body,
        context_extensions: ext.context_extensions.clone(),
        include_peer_certificate: ext.include_peer_certificate,
    })
}

/// Routes match the canonical path, so a route written in another spelling (`/%7Euser`,
/// `/a/./b`) could never match: refuse it and name the spelling that would. The check uses the
/// normalisation every listener applies (slashes and escaped slashes are per-listener choices).
fn route_path_is_canonical<T>(at: &Spanned<T>, path: &str, errors: &mut Errors) {
    let always = canonical::PathOptions {
        merge_slashes: false,
        escaped_slashes: canonical::EscapedSlashes::Keep,
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
