//! The one log line per decision.

use std::time::Duration;

use rules::{Evaluation, Request};

use crate::authorizer::AuthorizeError;

/// Logs a decision (or the failure to make one) with the deciding rule and the latency.
/// Header values are not logged: they may carry credentials.
pub fn decision(
    api: &'static str,
    request: &Request,
    evaluation: &Result<Evaluation, AuthorizeError>,
    latency: Duration,
) {
    let latency_us = latency.as_micros() as u64;
    match evaluation {
        Ok(evaluation) => tracing::info!(
            target: "authz::decision",
            api,
            method = %request.method,
            host = %request.host,
            path = %request.path,
            outcome = evaluation.decision.outcome(),
            rule = evaluation.rule.as_deref().unwrap_or("default"),
            latency_us,
            "decision"
        ),
        Err(error) => tracing::warn!(
            target: "authz::decision",
            api,
            method = %request.method,
            host = %request.host,
            path = %request.path,
            outcome = "error",
            %error,
            latency_us,
            "decision"
        ),
    }
}
