//! Policies as written → the [`ExtAuthz`] checks they run, attached to the listeners
//! (gateway level) and routes (route level) they target.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderName, StatusCode};
use toml::Spanned;

use super::fields::{Errors, duration, header_name};
use super::raw::{self, RawTargetKind};
use super::validated::Listener;
use crate::ext_authz::{self, AuthzBackend, ExtAuthz, HeaderFilter, HttpSettings, Transport};
use crate::route::Route;

pub(super) fn attach_policy(
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
    let transport = compile_transport(p, backend.as_ref(), backend_name, errors);
    let status_on_error = compile_status_on_error(ext.status_on_error.as_ref(), errors);
    let headers = compile_header_filter(p, errors);
    let with_request_body = compile_with_request_body(p, errors);
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

/// `grpc = {}` or `http = { ... }` (gRPC when neither is given); the HTTP transport reaches only
/// plaintext servers and its `path_prefix` starts with `/`.
fn compile_transport(
    p: &raw::RawPolicy,
    backend: Option<&Arc<AuthzBackend>>,
    backend_name: &Spanned<String>,
    errors: &mut Errors,
) -> Transport {
    let ext = &p.ext_auth;
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
    if matches!(transport, Transport::Http(_)) && backend.is_some_and(|b| b.tls.is_some()) {
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
    transport
}

/// `status_on_error`: an HTTP status between 200 and 599 (403 when absent).
fn compile_status_on_error(raw: Option<&Spanned<u16>>, errors: &mut Errors) -> StatusCode {
    match raw {
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
    }
}

/// `allowed_headers` and `disallowed_headers`: which request headers go into the check.
fn compile_header_filter(p: &raw::RawPolicy, errors: &mut Errors) -> HeaderFilter {
    let ext = &p.ext_auth;
    let name_list = |list: &[String], errors: &mut Errors| -> Vec<HeaderName> {
        list.iter()
            .filter_map(|n| header_name(&Spanned::new(p.name.span(), n.clone()), errors))
            .collect()
    };
    HeaderFilter {
        allowed: ext.allowed_headers.as_ref().map(|l| name_list(l, errors)),
        disallowed: name_list(&ext.disallowed_headers, errors),
    }
}

/// `with_request_body`: how much of the body goes into the check.
fn compile_with_request_body(
    p: &raw::RawPolicy,
    errors: &mut Errors,
) -> Option<ext_authz::WithRequestBody> {
    p.ext_auth.with_request_body.as_ref().map(|b| {
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
    })
}
