//! A route's retry policy as validated: how many tries, which failures are retried, the
//! per-try timeout, the body limit, and Envoy's retry budget. No I/O here; `super` runs the tries.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;

use crate::upstream::UpstreamError;

/// Envoy's retry budget default: retries may be 20 % of active requests.
pub const DEFAULT_BUDGET_PERCENT: u32 = 20;
/// Envoy's retry budget default floor.
pub const DEFAULT_MIN_RETRY_CONCURRENCY: u32 = 3;
/// The largest body kept for a retry unless the route says otherwise.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// A route's retry policy (validated).
#[derive(Debug)]
pub struct RetryPolicy {
    /// Tries in all, the first included (at least 1).
    pub attempts: u32,
    /// Which failures are retried.
    pub on: RetryOn,
    /// The wait for one try's response headers; the route's timeout bounds them all.
    pub per_try_timeout: Option<Duration>,
    /// Bodies larger than this are sent once.
    pub max_body_bytes: usize,
    /// Retries in flight against active requests.
    pub budget: RetryBudget,
}

/// The failures a route retries (`on = [...]`), Envoy's `retry_on` names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryOn {
    /// `connect-failure`: no connection could be made (TLS failures included).
    pub connect_failure: bool,
    /// `refused-stream`: the backend refused the HTTP/2 stream before processing it.
    pub refused_stream: bool,
    /// `reset`: the connection broke, the answer was malformed, or the try timed out.
    pub reset: bool,
    /// `5xx`: any 5xx answer, and every failure above.
    pub any_5xx: bool,
    /// `gateway-error`: a 502, 503 or 504 answer, and every failure above.
    pub gateway_error: bool,
    /// Listed status codes (`"503"`).
    pub statuses: Vec<u16>,
}

impl RetryOn {
    /// Parses one `on` entry; `Err` says what is accepted.
    pub fn add(&mut self, name: &str) -> Result<(), String> {
        match name {
            "connect-failure" => self.connect_failure = true,
            "refused-stream" => self.refused_stream = true,
            "reset" => self.reset = true,
            "5xx" => self.any_5xx = true,
            "gateway-error" => self.gateway_error = true,
            code => match code.parse::<u16>() {
                Ok(status @ 400..=599) if code.len() == 3 => self.statuses.push(status),
                _ => {
                    return Err(format!(
                        "unknown retry condition `{name}`: expected \"connect-failure\", \"refused-stream\", \"reset\", \"5xx\", \"gateway-error\" or a status code 400-599"
                    ));
                }
            },
        }
        Ok(())
    }

    /// Why this try's result is worth another try (the metric's `reason`), or `None`.
    pub fn reason(&self, result: Result<StatusCode, &UpstreamError>) -> Option<String> {
        let any_failure = self.any_5xx || self.gateway_error;
        let retried = match result {
            Ok(status) => {
                let code = status.as_u16();
                self.statuses.contains(&code)
                    || (self.any_5xx && status.is_server_error())
                    || (self.gateway_error && matches!(code, 502..=504))
            }
            Err(UpstreamError::NoHealthyUpstream) => false,
            Err(UpstreamError::Connect(_) | UpstreamError::Tls(_)) => {
                self.connect_failure || any_failure
            }
            Err(UpstreamError::RefusedStream(_)) => self.refused_stream || any_failure,
            Err(UpstreamError::Reset(_) | UpstreamError::Protocol(_) | UpstreamError::Timeout) => {
                self.reset || any_failure
            }
        };
        retried.then(|| match result {
            Ok(status) => status.as_str().to_owned(),
            Err(e) => e.reason().to_owned(),
        })
    }
}

/// Envoy's retry budget: retries in flight may be `percent` % of the active requests, and at
/// least `min_concurrency`. Counted per route.
#[derive(Debug)]
pub struct RetryBudget {
    percent: u32,
    min_concurrency: u32,
    active: AtomicUsize,
    retrying: AtomicUsize,
}

/// One request counted active on its route until dropped.
#[derive(Debug)]
pub struct Active<'a>(&'a AtomicUsize);

/// One retry counted in flight until dropped.
#[derive(Debug)]
pub struct Retrying<'a>(&'a AtomicUsize);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Retrying<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl RetryBudget {
    /// A budget of `percent` % of active requests, at least `min_concurrency` retries.
    pub fn new(percent: u32, min_concurrency: u32) -> RetryBudget {
        RetryBudget {
            percent,
            min_concurrency,
            active: AtomicUsize::new(0),
            retrying: AtomicUsize::new(0),
        }
    }

    /// Counts a request active until the guard drops.
    pub fn admit(&self) -> Active<'_> {
        self.active.fetch_add(1, Ordering::AcqRel);
        Active(&self.active)
    }

    /// A retry, if the budget has room for one more.
    pub fn try_retry(&self) -> Option<Retrying<'_>> {
        let active = self.active.load(Ordering::Acquire);
        let limit = (active * self.percent as usize / 100).max(self.min_concurrency as usize);
        self.retrying
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        Some(Retrying(&self.retrying))
    }
}
