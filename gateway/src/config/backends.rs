//! `[[backends]]` as written → [`Backend`]: the URL (scheme, host, default port, no path), the
//! protocol, the connect timeout and TLS, each checked with its place. A backend whose settings
//! (and TLS files) did not change across a reload is taken over with its open connections.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::fields::{Errors, duration};
use super::raw;
use super::validated::Config;
use crate::upstream::tls::BackendTls;
use crate::upstream::{Backend, BackendSettings, Protocol};

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Every `[[backends]]`, names unique.
pub(super) fn compile_backends(
    raw: &[raw::RawBackend],
    previous: Option<&Config>,
    errors: &mut Errors,
) -> HashMap<String, Arc<Backend>> {
    let mut out = HashMap::new();
    for b in raw {
        let name = b.name.get_ref();
        if out.contains_key(name) {
            errors.at(&b.name, format!("duplicate backend name `{name}`"));
            continue;
        }
        let Some(settings) = backend_settings(b, errors) else {
            continue;
        };
        if let Some(old) = previous
            .and_then(|p| p.backends.get(name))
            .filter(|old| old.settings == settings)
        {
            out.insert(name.clone(), old.clone());
            continue;
        }
        match Backend::new(name, settings) {
            Ok(backend) => {
                let backend = Arc::new(backend);
                backend.start();
                out.insert(name.clone(), backend);
            }
            Err(e) => tls_error(b, e, errors),
        }
    }
    out
}

/// The checked settings of one backend; `None` when an error was recorded.
fn backend_settings(b: &raw::RawBackend, errors: &mut Errors) -> Option<BackendSettings> {
    let connect_timeout = duration(&b.connect_timeout, DEFAULT_CONNECT_TIMEOUT, errors);
    let protocol = protocol(b.protocol.as_ref(), errors);
    let urls = super::balancing::endpoint_urls(b, backend_url, errors);
    let lb = super::balancing::lb_settings(b, errors);
    let tls = backend_tls(b.tls.as_ref(), errors);
    let (urls, protocol, tls, lb) = (urls?, protocol?, tls?, lb?);
    if let Some(t) = &b.tls
        && !urls.first().is_some_and(|u| u.0)
    {
        let plain = b.url.as_ref().map_or("the endpoints", |u| u.get_ref());
        errors.at(
            t,
            format!("`tls` needs an https:// url; `{plain}` is plaintext"),
        );
        return None;
    }
    Some(BackendSettings {
        lb,
        urls,
        protocol,
        connect_timeout,
        tls,
    })
}

/// `"http1" | "http2" | "auto"`.
fn protocol(field: Option<&Spanned<String>>, errors: &mut Errors) -> Option<Protocol> {
    let Some(field) = field else {
        return Some(Protocol::Auto);
    };
    match field.get_ref().as_str() {
        "http1" => Some(Protocol::Http1),
        "http2" => Some(Protocol::Http2),
        "auto" => Some(Protocol::Auto),
        other => {
            errors.at(
                field,
                format!("unknown protocol `{other}`: expected \"http1\", \"http2\" or \"auto\""),
            );
            None
        }
    }
}

/// `http://host[:port]` or `https://host[:port]` → `(is https, host, port)`; a path, a query or
/// user info is refused, naming what was found.
pub(super) fn backend_url(
    url: &Spanned<String>,
    errors: &mut Errors,
) -> Option<(bool, String, u16)> {
    let text = url.get_ref();
    let expected = "expected http://host[:port] or https://host[:port]";
    let Ok(uri) = text.parse::<http::Uri>() else {
        errors.at(url, format!("invalid url `{text}`: {expected}"));
        return None;
    };
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            errors.at(url, format!("invalid url `{text}`: {expected}"));
            return None;
        }
    };
    let Some(authority) = uri.authority().filter(|a| !a.host().is_empty()) else {
        errors.at(url, format!("invalid url `{text}`: no host; {expected}"));
        return None;
    };
    if authority.as_str().contains('@') {
        errors.at(
            url,
            format!("invalid url `{text}`: user info is not allowed; {expected}"),
        );
        return None;
    }
    if let Some(pq) = uri.path_and_query().filter(|pq| pq.as_str() != "/") {
        errors.at(
            url,
            format!(
                "invalid url `{text}`: a backend url has no path (found `{pq}`); {expected}, and set the path with the route's `rewrite_prefix`"
            ),
        );
        return None;
    }
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Some((tls, authority.host().to_owned(), port))
}

/// The TLS table: `cert` and `key` together; the files are read when the backend is built.
fn backend_tls(t: Option<&Spanned<raw::RawBackendTls>>, errors: &mut Errors) -> Option<BackendTls> {
    let Some(t) = t.map(Spanned::get_ref) else {
        return Some(BackendTls::default());
    };
    let identity = match (&t.cert, &t.key) {
        (Some(c), Some(k)) => Some((c.get_ref().clone(), k.get_ref().clone())),
        (None, None) => None,
        (Some(c), None) | (None, Some(c)) => {
            errors.at(c, "tls `cert` and `key` go together");
            return None;
        }
    };
    let ca = t.ca.as_ref().map(|c| c.get_ref().clone());
    // The files' bytes take part in the reload comparison: a renewed certificate at the same
    // path builds a new client.
    let files = [
        ca.as_deref(),
        t.cert.as_ref().map(|c| c.get_ref().as_str()),
        t.key.as_ref().map(|k| k.get_ref().as_str()),
    ];
    let contents = files
        .into_iter()
        .flatten()
        .map(|f| std::fs::read(f).unwrap_or_default())
        .collect();
    Some(BackendTls {
        ca,
        identity,
        sni: t.sni.as_ref().map(|s| s.get_ref().clone()),
        contents,
    })
}

/// Places a failure to build the backend's TLS client at the file it names, else at `tls`.
fn tls_error(b: &raw::RawBackend, e: String, errors: &mut Errors) {
    let Some(t) = &b.tls else {
        match (&b.url, &b.endpoints) {
            (Some(url), _) => errors.at(url, e),
            (None, Some(list)) => errors.at(list, e),
            (None, None) => errors.at(&b.name, e),
        }
        return;
    };
    let inner = t.get_ref();
    let at = [
        inner.ca.as_ref(),
        inner.cert.as_ref(),
        inner.key.as_ref(),
        inner.sni.as_ref(),
    ]
    .into_iter()
    .flatten()
    .find(|f| e.contains(&format!("`{}`", f.get_ref())));
    match at {
        Some(at) => errors.at(at, format!("tls: {e}")),
        None => errors.at(t, format!("tls: {e}")),
    }
}
