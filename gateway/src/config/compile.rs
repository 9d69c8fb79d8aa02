//! The one conversion from the file as written to the validated [`Config`], collecting every
//! error with its byte offset (turned into `file:line:col` by the caller): the admin section,
//! listeners, backends and authorization servers here; routes and policies in their own modules.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::backends::compile_backends;
use super::fields::{Errors, url_authority};
use super::limits::{self, Limits};
use super::overrides::{Overrides, apply_overrides};
use super::policies::attach_policy;
use super::raw;
use super::routes::compile_route;
use super::validated::{Config, Listener};
use crate::ext_authz::AuthzBackend;
use crate::route::{Route, RouteTable};
use crate::tls::{ClientTls, ListenerTls};
use crate::upstream::Backend;

const DEFAULT_MAX_HEADERS_KB: u32 = 60;

/// The whole file, section by section; every section is checked even after an error, so the
/// caller reports every problem at once.
pub(super) fn compile(
    mut raw: raw::RawConfig,
    overrides: &Overrides,
    previous: Option<&Config>,
) -> Result<Config, Vec<(usize, String)>> {
    let mut errors = Errors::default();
    apply_overrides(&mut raw, overrides, &mut errors);

    let backends = compile_backends(&raw.backends, previous, &mut errors);
    let authz_backends = compile_authz_backends(&raw.authz_backends, previous, &mut errors);
    let admin = compile_admin_address(raw.admin.as_ref(), &mut errors);
    let admin_limits = limits::compile(
        raw.admin.as_ref().and_then(|a| a.limits.as_ref()),
        Limits::default().for_admin(),
        &mut errors.0,
    );
    let mut listeners = compile_listeners(&raw.listeners, &mut errors);
    let mut routes = compile_routes(&raw.routes, &backends, &mut errors);
    for p in &raw.policies {
        attach_policy(p, &authz_backends, &mut listeners, &mut routes, &mut errors);
    }
    let header_bytes = listeners
        .iter()
        .map(|l| l.limits.max_request_header_bytes)
        .max();
    limits::check_body_limits(&raw.policies, header_bytes.unwrap_or(0), &mut errors.0);

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

/// `[admin] address`, when there is an admin section.
fn compile_admin_address(admin: Option<&raw::RawAdmin>, errors: &mut Errors) -> Option<SocketAddr> {
    let a = admin?;
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
}

/// Every `[[listeners]]`, names unique, at least one.
fn compile_listeners(raw: &[raw::RawListener], errors: &mut Errors) -> Vec<Listener> {
    let mut listeners: Vec<Listener> = Vec::new();
    for l in raw {
        if listeners.iter().any(|x| x.name == *l.name.get_ref()) {
            errors.at(
                &l.name,
                format!("duplicate listener name `{}`", l.name.get_ref()),
            );
        }
        if let Some(listener) = compile_listener(l, errors) {
            listeners.push(listener);
        }
    }
    if raw.is_empty() {
        errors
            .0
            .push((0, "no listeners: add at least one [[listeners]]".into()));
    }
    listeners
}

/// One listener (its policies are attached later); `None` when its address is invalid.
fn compile_listener(l: &raw::RawListener, errors: &mut Errors) -> Option<Listener> {
    let Ok(address) = l.address.get_ref().parse::<SocketAddr>() else {
        errors.at(
            &l.address,
            format!(
                "invalid listener address `{}`: expected ip:port, e.g. 0.0.0.0:8080",
                l.address.get_ref()
            ),
        );
        return None;
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
    let tls = l.tls.as_ref().and_then(|t| compile_listener_tls(t, errors));
    let limits = limits::compile(
        l.limits.as_ref(),
        Limits {
            max_request_header_bytes: kb as usize * 1024,
            ..Limits::default()
        },
        &mut errors.0,
    );
    Some(Listener {
        name: l.name.get_ref().clone(),
        address,
        limits,
        policies: Vec::new(),
        tls,
        canonical: canonical_options(l),
    })
}

/// Every `[[routes]]`, names unique.
fn compile_routes(
    raw: &[raw::RawRoute],
    backends: &HashMap<String, Arc<Backend>>,
    errors: &mut Errors,
) -> Vec<Route> {
    let mut routes: Vec<Route> = Vec::new();
    for r in raw {
        if routes.iter().any(|x| x.name == *r.name.get_ref()) {
            errors.at(
                &r.name,
                format!("duplicate route name `{}`", r.name.get_ref()),
            );
        }
        if let Some(route) = compile_route(r, backends, errors) {
            routes.push(route);
        }
    }
    routes
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
            path_parameters: l.path_parameters.unwrap_or(defaults.path_parameters),
        },
        host: canonical::HostOptions {
            strip_any_port: l.strip_any_host_port.unwrap_or(false),
        },
        xff_num_trusted_hops: l.xff_num_trusted_hops.unwrap_or(0),
        underscores: l.headers_with_underscores_action.unwrap_or_default(),
        method_case: l.method_case.unwrap_or_default(),
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

/// Every `[[authz_backends]]`, names unique; an unchanged one is taken over from `previous`
/// with its connections.
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
        let Ok(tls) = compile_authz_tls(b, &scheme, errors) else {
            continue;
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

/// An authorization server's TLS: required by `https://`, refused on `http://`; `Err` when the
/// server is to be skipped (the error is recorded).
fn compile_authz_tls(
    b: &raw::RawAuthzBackend,
    scheme: &str,
    errors: &mut Errors,
) -> Result<Option<ClientTls>, ()> {
    match (&b.tls, scheme) {
        (None, "https") => {
            errors.at(
                &b.url,
                "an https:// authz backend needs `tls = { ca = ... }`",
            );
            Err(())
        }
        (Some(t), "http") => {
            errors.at(&t.ca, "`tls` needs an https:// url");
            Err(())
        }
        (None, _) => Ok(None),
        (Some(t), _) => load_client_tls(t, errors).map(Some),
    }
}

/// The CA, the optional client identity (`cert` and `key` together) and SNI, loaded now.
fn load_client_tls(t: &raw::RawClientTls, errors: &mut Errors) -> Result<ClientTls, ()> {
    let identity = match (&t.cert, &t.key) {
        (Some(c), Some(k)) => Some((c.get_ref().as_str(), k.get_ref().as_str())),
        (None, None) => None,
        (Some(c), None) | (None, Some(c)) => {
            errors.at(c, "tls `cert` and `key` go together");
            return Err(());
        }
    };
    ClientTls::load(
        t.ca.get_ref(),
        identity,
        t.sni.as_ref().map(|s| s.get_ref().clone()),
    )
    .map_err(|e| {
        // Point at the file the message names when it names one.
        let at = [Some(&t.ca), t.cert.as_ref(), t.key.as_ref()]
            .into_iter()
            .flatten()
            .find(|f| e.contains(&format!("`{}`", f.get_ref())))
            .unwrap_or(&t.ca);
        errors.at(at, format!("tls: {e}"));
    })
}
