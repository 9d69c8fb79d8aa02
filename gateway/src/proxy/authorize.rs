//! Step 3, authorize: every policy in force, gateway level first, then route level; all must
//! allow. Each policy is one check (its body buffered first when it asks for one), counted in
//! the metrics, then decided: an allow changes the request and may add response headers,
//! failure mode lets it through, a deny or an error ends it with the response the client gets.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::header::{HeaderName, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};

use super::check_body::read_body_for_check;
use super::connection::Connection;
use super::record::AuthzRecord;
use super::reply::mark_local;
use crate::body::{BufferedBody, ProxyBody};
use crate::config::Listener;
use crate::ext_authz::{
    AppendAction, CheckInput, ExtAuthz, FAILURE_MODE_ALLOWED_HEADER, Resolution,
};
use crate::metrics::{Metrics, PolicyLabel};
use crate::redact;
use crate::request::CanonicalRequest;
use crate::route::Route;

/// Response headers the allows asked for, applied to the backend's response.
pub(super) type ResponseHeaders = Vec<(HeaderName, HeaderValue, AppendAction)>;

/// What a check needs to know besides the request head.
#[derive(Debug, Clone, Copy)]
pub(super) struct CheckContext<'a> {
    /// The connection the request arrived on.
    pub(super) conn: &'a Connection,
    /// The canonical request (the client address the check names comes from it).
    pub(super) canonical: &'a CanonicalRequest,
    /// `x-request-id`.
    pub(super) request_id: &'a str,
    /// When the request arrived.
    pub(super) time: SystemTime,
}

/// Runs every policy in force on `route`; `Ok` carries the response headers the allows asked
/// for, `Err` the response the client gets instead of the backend's.
pub(super) async fn authorize(
    ctx: CheckContext<'_>,
    listener: &Listener,
    route: &Route,
    parts: &mut Parts,
    body: &mut BufferedBody,
    record: &mut AuthzRecord,
) -> Result<ResponseHeaders, Response<ProxyBody>> {
    let metrics = &ctx.conn.shared.metrics;
    let mut response_headers = ResponseHeaders::new();
    for policy in gateway_policies(metrics, listener, route)
        .iter()
        .chain(route.policies.iter())
    {
        record.policy = Some(policy.label.policy.clone());
        let resolution = check(ctx, route, policy, parts, body, record).await?;
        if let ControlFlow::Break(refused) =
            decide(policy, resolution, parts, record, &mut response_headers)
        {
            return Err(refused);
        }
    }
    Ok(response_headers)
}

/// The gateway-level policies that run on `route`: none when a route policy switched them off
/// (each then counted as disabled).
fn gateway_policies<'a>(
    metrics: &Metrics,
    listener: &'a Listener,
    route: &Route,
) -> &'a [Arc<ExtAuthz>] {
    if route.gateway_policies_disabled {
        for policy in &listener.policies {
            metrics
                .ext_authz_disabled
                .get_or_create(&policy.label)
                .inc();
        }
        return &[];
    }
    &listener.policies
}

/// One policy's check: the body it asks for buffered first (a 413, 408 or 400 ends the request
/// there), then the check, timed and counted.
async fn check(
    ctx: CheckContext<'_>,
    route: &Route,
    policy: &ExtAuthz,
    parts: &Parts,
    body: &mut BufferedBody,
    record: &mut AuthzRecord,
) -> Result<Resolution, Response<ProxyBody>> {
    let check_body = match policy.with_request_body {
        None => None,
        Some(settings) => match read_body_for_check(body, parts, settings, policy.timeout).await {
            Ok(b) => Some(b),
            Err(resp) => {
                record.outcome = "body_rejected";
                return Err(resp);
            }
        },
    };
    let began = Instant::now();
    let resolution = policy
        .check(CheckInput {
            parts,
            peer: ctx.canonical.client,
            local: ctx.conn.local,
            request_id: ctx.request_id,
            time: ctx.time,
            context_extensions: [&policy.context_extensions, &route.context_extensions],
            body: check_body,
            scheme: ctx.conn.scheme(),
            tls: ctx.conn.tls.as_deref(),
        })
        .await;
    let took = began.elapsed();
    record.latency += took;
    count(&ctx.conn.shared.metrics, &policy.label, &resolution, took);
    Ok(resolution)
}

/// The check's latency and its outcome in the metrics (a failure-mode allow counts as an error
/// and as failure-mode allowed).
fn count(metrics: &Metrics, label: &PolicyLabel, resolution: &Resolution, took: Duration) {
    metrics
        .ext_authz_latency
        .get_or_create(label)
        .observe(took.as_secs_f64());
    let counter = match resolution {
        Resolution::Allow(_) => &metrics.ext_authz_ok,
        Resolution::Deny(_) => &metrics.ext_authz_denied,
        Resolution::FailureModeAllow { .. } => {
            metrics
                .ext_authz_failure_mode_allowed
                .get_or_create(label)
                .inc();
            &metrics.ext_authz_error
        }
        Resolution::Error { .. } => &metrics.ext_authz_error,
    };
    counter.get_or_create(label).inc();
}

/// What one policy's resolution does (continue to the next policy, or stop with the response
/// the client gets): an allow applies its changes to the request and collects
/// its response headers; failure mode lets the request through (marked when the policy says
/// so); a deny answers with the server's response (403 by default), an error with the policy's
/// `status_on_error`.
fn decide(
    policy: &ExtAuthz,
    resolution: Resolution,
    parts: &mut Parts,
    record: &mut AuthzRecord,
    response_headers: &mut ResponseHeaders,
) -> ControlFlow<Response<ProxyBody>> {
    match resolution {
        Resolution::Allow(mut allowed) => {
            record.outcome = "allowed";
            if let Some(m) = allowed.dynamic_metadata.take() {
                record.metadata.push(m);
            }
            allowed.apply_to_request(parts);
            response_headers.extend(allowed.take_response_headers());
            ControlFlow::Continue(())
        }
        Resolution::FailureModeAllow { reason } => {
            record.outcome = "failure_mode_allowed";
            tracing::warn!(policy = %redact::escape(&policy.policy), reason = %redact::escape(&reason), "ext_authz check failed; failure_mode_allow lets the request through");
            if policy.failure_mode_allow_header_add {
                parts.headers.insert(
                    HeaderName::from_static(FAILURE_MODE_ALLOWED_HEADER),
                    HeaderValue::from_static("true"),
                );
            }
            ControlFlow::Continue(())
        }
        Resolution::Deny(denied) => {
            record.outcome = "denied";
            let message = denied.body.clone();
            let mut refused = denied.into_response(StatusCode::FORBIDDEN);
            mark_local(&mut refused, message);
            ControlFlow::Break(refused)
        }
        Resolution::Error { reason, response } => {
            record.outcome = "error";
            tracing::warn!(policy = %redact::escape(&policy.policy), reason = %redact::escape(&reason), "ext_authz check failed");
            let message = response.body.clone();
            let mut refused = response.into_response(policy.status_on_error);
            mark_local(&mut refused, message);
            ControlFlow::Break(refused)
        }
    }
}

#[cfg(test)]
mod tests;
