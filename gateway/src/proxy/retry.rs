//! Retries, per route (`retries = { attempts, on, per_try_timeout, budget_percent,
//! min_retry_concurrency, max_body_bytes }`): a try that failed in a way `on` names is sent again,
//! to another endpoint when there is one, while attempts, time and the retry budget last.
//!
//! What is never retried, and why:
//! - the check: it ran once, before forward; a retry resends the request the check allowed;
//! - a request whose body is not fully read and at most `max_body_bytes` (a body of unknown
//!   length, such as a gRPC stream, is sent once and never waited for: buffering it could stall a
//!   client that waits for the response before it sends more);
//! - a response that has started: only a failed try, or response headers whose status `on`
//!   names, lead to a retry, never a body already on its way to the client;
//! - past the budget: retries in flight stay under `budget_percent` % of the route's active
//!   requests (at least `min_retry_concurrency`), as Envoy's retry budget, so retries cannot
//!   multiply the load on a backend that is already failing.

pub mod policy;

use std::time::Duration;

use http::{Request, Response};
use tokio::time::Instant;

pub use policy::{
    Active, DEFAULT_BUDGET_PERCENT, DEFAULT_MAX_BODY_BYTES, DEFAULT_MIN_RETRY_CONCURRENCY,
    RetryBudget, RetryOn, RetryPolicy, Retrying,
};

use crate::body::{BufferedBody, ProxyBody};
use crate::metrics::{Metrics, RetryLabels, RouteLabel};
use crate::route::Route;
use crate::upstream::UpstreamError;

/// Envoy's default backoff: 25 ms base, ten times that at most, fully jittered.
const BACKOFF_BASE: Duration = Duration::from_millis(25);
const BACKOFF_MAX: Duration = Duration::from_millis(250);

/// Reads the body ahead when the route retries and the body is small enough to be sent again;
/// returns the copy each retry sends. A body of unknown length is not waited for.
pub(super) async fn replayable(route: &Route, body: &mut BufferedBody) -> Option<BufferedBody> {
    let policy = route.retries.as_deref()?;
    let len = body.exact_len()?;
    if len > policy.max_body_bytes as u64 {
        return None;
    }
    // The length is known and small: reading it all ends once the client has sent it.
    body.fill_to(policy.max_body_bytes.saturating_add(1))
        .await
        .ok()?;
    body.try_clone()
}

/// Sends `req` to the route's backend, with the retries its policy allows. `replay` is the body
/// to send again ([`replayable`]); without it the request is sent once.
pub(super) async fn send(
    metrics: &Metrics,
    route: &Route,
    req: Request<ProxyBody>,
    replay: Option<BufferedBody>,
    wait: Duration,
) -> Result<Response<ProxyBody>, UpstreamError> {
    let backend = &route.backend;
    let mut tried = Vec::new();
    let (Some(policy), Some(replay)) = (route.retries.as_deref(), replay) else {
        return backend.send_try(req, wait, &mut tried).await;
    };
    let _active = policy.budget.admit();
    let deadline = Instant::now() + wait;
    let head = Head::of(&req);
    let mut next = Some(req);
    // The retry in flight, counted against the budget until the next one is asked for.
    let mut retrying: Option<Retrying<'_>> = None;
    let mut last: Option<Result<Response<ProxyBody>, UpstreamError>> = None;
    for attempt in 1..=policy.attempts {
        let req = match next.take() {
            Some(req) => req,
            None => match replay.try_clone() {
                Some(body) => head.rebuild(body.into_body()),
                None => break,
            },
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = policy.per_try_timeout.map_or(left, |t| t.min(left));
        let result = backend.send_try(req, timeout, &mut tried).await;
        // Every endpoint went down after a failed try: the client hears about that failure.
        if matches!(result, Err(UpstreamError::NoHealthyUpstream)) && last.is_some() {
            break;
        }
        let reason = policy.on.reason(result.as_ref().map(Response::status));
        let out_of_time = deadline.saturating_duration_since(Instant::now()).is_zero();
        let Some(reason) = reason.filter(|_| attempt < policy.attempts && !out_of_time) else {
            return result;
        };
        // The retry that just failed no longer counts against the budget.
        drop(retrying.take());
        retrying = admit_retry(metrics, route, policy, reason);
        if retrying.is_none() {
            return result;
        }
        last = Some(result);
        tokio::time::sleep_until(deadline.min(Instant::now() + backoff(attempt))).await;
    }
    drop(retrying);
    last.unwrap_or(Err(UpstreamError::NoHealthyUpstream))
}

/// A retry if the budget has room (counted by reason), else `None` (counted as overflow).
fn admit_retry<'a>(
    metrics: &Metrics,
    route: &Route,
    policy: &'a RetryPolicy,
    reason: String,
) -> Option<Retrying<'a>> {
    let route = route.label.clone();
    match policy.budget.try_retry() {
        Some(guard) => {
            let labels = RetryLabels { route, reason };
            metrics.upstream_retries.get_or_create(&labels).inc();
            Some(guard)
        }
        None => {
            let labels = RouteLabel { route };
            metrics.upstream_retry_overflow.get_or_create(&labels).inc();
            None
        }
    }
}

/// Envoy's fully jittered exponential backoff before retry `attempt` (1 = the first retry).
fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1 << attempt.saturating_sub(1).min(4))
        .min(BACKOFF_MAX);
    let ceiling = usize::try_from(ceiling.as_millis()).unwrap_or(usize::MAX);
    let jittered = crate::upstream::balance::random_below(ceiling.saturating_add(1));
    Duration::from_millis(u64::try_from(jittered).unwrap_or(u64::MAX))
}

/// What a retry needs to rebuild the request: everything but the body.
struct Head {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: http::HeaderMap,
    extensions: http::Extensions,
}

impl Head {
    fn of(req: &Request<ProxyBody>) -> Head {
        Head {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
            extensions: req.extensions().clone(),
        }
    }

    fn rebuild(&self, body: ProxyBody) -> Request<ProxyBody> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        *req.extensions_mut() = self.extensions.clone();
        req
    }
}

#[cfg(test)]
mod tests;
