//! The one log line (and the metrics) per decision.

use std::time::Duration;

use rules::{Evaluation, Request};

use crate::authorizer::AuthorizeError;
use crate::metrics::Metrics;

/// Logs and counts a decision (or the failure to make one) with the deciding rule and the
/// latency. Header values and the query string are not logged: they may carry credentials.
pub fn decision(
    metrics: &Metrics,
    api: &'static str,
    request: &Request,
    evaluation: &Result<Evaluation, AuthorizeError>,
    latency: Duration,
) {
    let latency_us = latency.as_micros() as u64;
    let path = request.path.split('?').next().unwrap_or_default();
    let request_id = request.header("x-request-id").unwrap_or_default();
    match evaluation {
        Ok(evaluation) => {
            let rule = evaluation.rule.as_deref().unwrap_or("default");
            let outcome = evaluation.decision.outcome();
            metrics.check(api, rule, outcome, latency);
            for shadow in &evaluation.shadow {
                metrics.shadow_match(&shadow.rule, shadow.outcome);
            }
            let shadow = shadow_summary(evaluation);
            tracing::info!(
            target: "authz::decision",
            api,
            request_id,
            method = %request.method,
            host = %request.host,
            path,
            outcome,
            rule,
            shadow,
            latency_us,
            "decision"
            );
        }
        Err(error) => {
            metrics.check(api, "", "error", latency);
            tracing::warn!(
            target: "authz::decision",
            api,
            request_id,
            method = %request.method,
            host = %request.host,
            path,
            outcome = "error",
            %error,
            latency_us,
            "decision"
            );
        }
    }
}

/// `rule:outcome` for each shadow rule that matched, comma-separated; empty when none did.
fn shadow_summary(evaluation: &Evaluation) -> String {
    evaluation
        .shadow
        .iter()
        .map(|s| format!("{}:{}", s.rule, s.outcome))
        .collect::<Vec<_>>()
        .join(",")
}
