//! The gateway's OpenTelemetry spans and where their context goes. Setup and propagation live
//! in the `telemetry` crate; this module decides what each span is called and carries.
//!
//! One request makes, when tracing is on:
//!
//! - `gateway.request` (server), parented by the client's `traceparent` (a new trace without
//!   one);
//! - `ext_authz.check` (client) per policy checked, a child of the request span; its context
//!   goes to the authorization server as `traceparent` in the gRPC metadata (gRPC transport)
//!   or in the authorization request's headers (HTTP transport);
//! - `gateway.upstream` (client), a child of the request span; its context replaces the
//!   client's `traceparent`/`tracestate` on the request sent to the backend.
//!
//! With tracing off every function returns at once and builds nothing: a client's
//! `traceparent` then reaches the backend unchanged, like any other header.
//!
//! What spans carry: the method, the canonical host and path *without the query*, route, policy
//! and backend names, outcomes and status codes. Never a header value, a token or a query.

use http::HeaderMap;
use telemetry::{Headers, OpenTelemetrySpanExt, TARGET};
use tracing::Span;
use tracing::field::Empty;

/// `future` inside `span`, boxed: only on the traced path, so the untraced caller's future
/// keeps its size (a larger future is copied, at thousands of instructions per request).
pub(crate) fn traced<'a, T>(
    span: Span,
    future: impl Future<Output = T> + Send + 'a,
) -> std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>> {
    Box::pin(tracing::Instrument::instrument(future, span))
}

/// The span of one request through the gateway, parented by the client's trace context.
pub(crate) fn request(headers: &HeaderMap, method: &http::Method, host: &str, path: &str) -> Span {
    if !telemetry::enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: TARGET,
        "gateway.request",
        otel.kind = "server",
        http.request.method = method.as_str(),
        server.address = host,
        url.path = path.split_once('?').map_or(path, |(path, _)| path),
        http.route = Empty,
        http.response.status_code = Empty,
        authz.outcome = Empty,
        otel.status_code = Empty,
    );
    let _ = span.set_parent(telemetry::extract(&Headers(headers)));
    span
}

/// Records the outcome of a request on its span.
pub(crate) fn response(span: &Span, route: &str, status: u16, authz: &'static str) {
    if span.is_none() {
        return;
    }
    span.record("http.route", route);
    span.record("http.response.status_code", i64::from(status));
    span.record("authz.outcome", authz);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
}

/// The client span of one ext_authz check, a child of the current (request) span: `policy`
/// asks the server at `authority` over `transport` (`grpc` or `http`).
pub(crate) fn ext_authz(policy: &str, authority: &str, transport: &'static str) -> Span {
    if !telemetry::enabled() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "ext_authz.check",
        otel.kind = "client",
        rpc.system = transport,
        authz.policy = policy,
        server.address = authority,
        authz.outcome = Empty,
        otel.status_code = Empty,
    )
}

/// Records how a check resolved on its span: its `outcome`, and an error status when the check
/// `failed` (whatever failure mode then decided).
pub(crate) fn resolved(span: &Span, outcome: &'static str, failed: bool) {
    if span.is_none() {
        return;
    }
    span.record("authz.outcome", outcome);
    if failed {
        span.record("otel.status_code", "ERROR");
    }
}

/// Writes the current span's context (the ext_authz client span, during a check) into an
/// outgoing request's headers.
pub(crate) fn inject_current(headers: &mut HeaderMap) {
    if telemetry::enabled() {
        telemetry::inject(&Span::current().context(), headers);
    }
}

/// [`inject_current`] for a tonic call's metadata.
pub(crate) fn inject_current_metadata(metadata: &mut tonic::metadata::MetadataMap) {
    if telemetry::enabled() {
        let mut headers = std::mem::take(metadata).into_headers();
        telemetry::inject(&Span::current().context(), &mut headers);
        *metadata = tonic::metadata::MetadataMap::from_headers(headers);
    }
}

/// The client span of the call to the backend, a child of the current (request) span; its
/// context replaces the trace headers in `headers`.
pub(crate) fn upstream(backend: &str, headers: &mut HeaderMap) -> Span {
    if !telemetry::enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: TARGET,
        "gateway.upstream",
        otel.kind = "client",
        gateway.backend = backend,
        http.response.status_code = Empty,
        otel.status_code = Empty,
    );
    telemetry::inject(&span.context(), headers);
    span
}

/// Records the backend's answer (or its failure) on the upstream span.
pub(crate) fn upstream_status(span: &Span, status: Option<u16>) {
    if span.is_none() {
        return;
    }
    match status {
        Some(status) => span.record("http.response.status_code", i64::from(status)),
        None => span.record("otel.status_code", "ERROR"),
    };
}
