//! The authz-server's OpenTelemetry spans: the check (server side), the rule evaluation that
//! names the deciding rule, each database lookup and each JWKS fetch. Setup and propagation
//! live in the `telemetry` crate; this module decides what each span is called and carries.
//!
//! Every function here returns at once, building nothing, while tracing is off
//! ([`telemetry::enabled`]): the check path pays one relaxed load per hook.
//!
//! **Which parent a check span gets.** A gRPC check can carry two trace contexts: the gRPC
//! metadata's `traceparent` (the calling proxy's own client span for this RPC) and the one
//! inside `attributes.request.http.headers` (the client request's context as the proxy saw it;
//! this is how Envoy passes it when only the request is traced). The metadata wins: it is the
//! direct caller, so the check nests under the proxy's ext_authz span. The request's header is
//! used when the metadata has none. In HTTP mode the replayed request's headers are the one
//! source. Neither present: the check starts a trace of its own.
//!
//! **What spans carry.** Names (api, rule, database), outcomes, status codes, the method, the
//! host, and the path as the decision log shows it (query and lookup-bound segments redacted,
//! see [`crate::Authorizer::path_for_log`]). Never a header value, a token, a key or a query.

use std::collections::HashMap;
use std::pin::Pin;

use extauthz_proto::{v2, v3};
use rules::Evaluation;
use telemetry::{Headers, Metadata, OpenTelemetrySpanExt, TARGET};
use tonic::metadata::MetadataMap;
use tracing::Span;
use tracing::field::Empty;

use crate::authorizer::{AuthorizeError, Checked};

/// The server span of one v3 gRPC check, parented as the module doc says; `Span::none()` when
/// tracing is off.
pub(crate) fn grpc_v3(metadata: MetadataMap, check: &v3::CheckRequest) -> Span {
    grpc_check("grpc.v3", metadata, || {
        let http = check.attributes.as_ref()?.request.as_ref()?.http.as_ref()?;
        Some(&http.headers)
    })
}

/// [`grpc_v3`] for a v2 check.
pub(crate) fn grpc_v2(metadata: MetadataMap, check: &v2::CheckRequest) -> Span {
    grpc_check("grpc.v2", metadata, || {
        let http = check.attributes.as_ref()?.request.as_ref()?.http.as_ref()?;
        Some(&http.headers)
    })
}

/// The check span of either gRPC version. The request's headers are looked up only when tracing
/// is on. `metadata` is taken by value so that the caller's future does not hold it across the
/// check's await (a larger future costs a copy per check).
#[allow(clippy::needless_pass_by_value)] // by value on purpose: see above.
fn grpc_check<'a>(
    api: &'static str,
    metadata: MetadataMap,
    request_headers: impl FnOnce() -> Option<&'a HashMap<String, String>>,
) -> Span {
    if !telemetry::enabled() {
        return Span::none();
    }
    check_span(api, "grpc", grpc_parent(&metadata, request_headers()))
}

/// The precedence between the two contexts a gRPC check can carry (see the module doc); this
/// is the only place it is decided.
fn grpc_parent(
    metadata: &MetadataMap,
    request_headers: Option<&HashMap<String, String>>,
) -> telemetry::Context {
    if telemetry::has_traceparent(&Metadata(metadata)) {
        telemetry::extract(&Metadata(metadata))
    } else {
        match request_headers {
            Some(headers) => telemetry::extract(headers),
            None => telemetry::Context::new(),
        }
    }
}

/// The server span of one HTTP-mode check, parented by the replayed request's `traceparent`.
pub(crate) fn http_check(headers: &http::HeaderMap) -> Span {
    if !telemetry::enabled() {
        return Span::none();
    }
    check_span("http", "http", telemetry::extract(&Headers(headers)))
}

fn check_span(api: &'static str, rpc_system: &'static str, parent: telemetry::Context) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "authz.check",
        otel.name = "authz.check",
        otel.kind = "server",
        rpc.system = rpc_system,
        authz.api = api,
        http.request.method = Empty,
        server.address = Empty,
        url.path = Empty,
        authz.rule = Empty,
        authz.outcome = Empty,
        otel.status_code = Empty,
    );
    let _ = span.set_parent(parent);
    span
}

/// Decides within a child span of `check` named after the evaluation, recording the deciding
/// rule and the outcome on both; lookups and JWKS fetches made while deciding nest under it.
///
/// Call it only when `check` is a real span (tracing on): the traced future is boxed so that
/// the caller's future, which holds the untraced path inline, does not grow (a larger check
/// future is copied, at a cost measured in thousands of instructions per check).
pub(crate) fn decide<'a, F>(
    check: Span,
    deciding: F,
) -> Pin<Box<dyn Future<Output = Checked> + Send + 'a>>
where
    F: Future<Output = Checked> + Send + 'a,
{
    use tracing::Instrument;
    Box::pin(async move {
        let rule = tracing::info_span!(
            target: TARGET,
            parent: &check,
            "authz.rule",
            authz.rule = Empty,
            authz.outcome = Empty,
            otel.status_code = Empty,
        );
        let checked = deciding.instrument(rule.clone()).await;
        let (name, outcome) = summary(&checked.evaluation);
        for span in [&rule, &check] {
            span.record("authz.rule", name);
            span.record("authz.outcome", outcome);
            if checked.evaluation.is_err() {
                span.record("otel.status_code", "ERROR");
            }
        }
        let request = &checked.request;
        check.record("http.request.method", request.method.as_str());
        check.record("server.address", request.host.as_str());
        check.record("url.path", checked.path_for_log.as_str());
        checked
    })
}

/// The deciding rule's name (`default` when none matched) and the outcome.
fn summary(evaluation: &Result<Evaluation, AuthorizeError>) -> (&str, &'static str) {
    match evaluation {
        Ok(evaluation) => (
            evaluation.rule.as_deref().unwrap_or("default"),
            evaluation.decision.outcome(),
        ),
        Err(_) => ("-", "error"),
    }
}

/// The span of one database lookup, under the current span (the rule evaluation). `database`
/// is the config's name for it, never its URL (which can hold a password).
pub(crate) fn lookup(database: &str) -> Span {
    if !telemetry::enabled() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "authz.lookup",
        otel.kind = "client",
        db.namespace = database,
        authz.lookup.cache = Empty,
        error.type = Empty,
        otel.status_code = Empty,
    )
}

/// Records how the lookup cache answered (`hit`, `miss`, `coalesced`, `stale`) on the current
/// lookup span.
pub(crate) fn lookup_cache(result: &'static str) {
    if telemetry::enabled() {
        Span::current().record("authz.lookup.cache", result);
    }
}

/// Marks `span` failed with `kind` (a fixed word, never a database's message).
pub(crate) fn failed(span: &Span, kind: &'static str) {
    if !span.is_none() {
        span.record("error.type", kind);
        span.record("otel.status_code", "ERROR");
    }
}

/// The span of one JWKS lookup (cache or fetch), under the current span. The URL is shown
/// without user info and query.
pub(crate) fn jwks(url: &str) -> Span {
    if !telemetry::enabled() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "authz.jwks",
        url.full = %safe_url(url),
        error.type = Empty,
        otel.status_code = Empty,
    )
}

/// The span of one JWKS document fetch (the HTTP GET), a child of the current span.
pub(crate) fn jwks_fetch(url: &str) -> Span {
    if !telemetry::enabled() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "authz.jwks.fetch",
        otel.kind = "client",
        http.request.method = "GET",
        url.full = %safe_url(url),
        http.response.status_code = Empty,
        error.type = Empty,
        otel.status_code = Empty,
    )
}

/// `url` without user info, query and fragment: what a span may show of a configured URL.
fn safe_url(url: &str) -> String {
    match url.parse::<http::Uri>() {
        Ok(uri) => {
            let host = uri.host().unwrap_or_default();
            let port = uri.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!(
                "{}://{host}{port}{}",
                uri.scheme_str().unwrap_or("http"),
                uri.path()
            )
        }
        Err(_) => "<invalid>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::safe_url;

    #[test]
    fn urls_lose_user_info_and_query() {
        assert_eq!(
            safe_url("https://user:pw@idp.example:8443/keys.json?token=abc#x"),
            "https://idp.example:8443/keys.json"
        );
        assert_eq!(safe_url("http://idp/jwks"), "http://idp/jwks");
    }
}
