//! The one log line (and the metrics) per decision.
//!
//! Everything in that line that a client can choose — method, host, path, request id, and a
//! custom authorizer's rule names and errors — is escaped ([`escape`]), so a value carrying a
//! newline or another control character cannot forge a log line or hide one. What can carry a
//! credential is left out: header values are never logged, the query string is replaced by
//! `?<redacted>`, and path segments that a lookup binds are replaced by `<redacted>`
//! ([`crate::Authorizer::path_for_log`]).

use std::borrow::Cow;
use std::fmt::Write;
use std::time::Duration;

use rules::{Evaluation, Request};

use crate::authorizer::AuthorizeError;
use crate::metrics::Metrics;

mod line;

pub use line::{LineFormat, write_decisions_to};

/// Logs and counts a decision (or the failure to make one) with the deciding rule and the
/// latency. `path` is the request's path as logs may show it (already redacted). The request id
/// is the `x-request-id` header, else `proxy_request_id` (the check's own id field).
pub(crate) fn decision(
    metrics: &Metrics,
    api: &'static str,
    request: &Request,
    proxy_request_id: &str,
    path: &str,
    evaluation: &Result<Evaluation, AuthorizeError>,
    latency: Duration,
) {
    let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    let shown = Shown::escape(request, proxy_request_id, path);
    match evaluation {
        Ok(evaluation) => {
            count_decision(metrics, api, evaluation, latency);
            if let (Some(failure), Some(rule)) = (&evaluation.failure, &evaluation.rule) {
                // Fail closed, and say why: the policy's own message, never request values.
                metrics.rego_failure(rule, failure.kind);
                tracing::warn!(
                    target: "authz::decision",
                    api,
                    request_id = %shown.request_id,
                    rule = %escape(rule),
                    kind = failure.kind,
                    "rego policy did not decide, denied: {}",
                    escape(&failure.reason)
                );
            }
            if tracing::enabled!(target: "authz::decision", tracing::Level::INFO) {
                log_decision(api, &shown, evaluation, latency_us);
            }
        }
        Err(error) => {
            metrics.count_failed_check(api, latency);
            log_failure(api, &shown, error, latency_us);
        }
    }
}

/// The request's fields as the decision line shows them: escaped, borrowed when clean.
struct Shown<'a> {
    request_id: Cow<'a, str>,
    method: Cow<'a, str>,
    host: Cow<'a, str>,
    path: Cow<'a, str>,
}

impl<'a> Shown<'a> {
    fn escape(request: &'a Request, proxy_request_id: &'a str, path: &'a str) -> Self {
        Self {
            request_id: escape(request.header("x-request-id").unwrap_or(proxy_request_id)),
            method: escape(&request.method),
            host: escape(&request.host),
            path: escape(path),
        }
    }
}

/// The decision, its deciding rule and each shadow rule that matched, into the metrics.
fn count_decision(
    metrics: &Metrics,
    api: &'static str,
    evaluation: &Evaluation,
    latency: Duration,
) {
    let outcome = evaluation.decision.outcome();
    metrics.count_decision(api, evaluation.rule.as_ref(), outcome, latency);
    for shadow in &evaluation.shadow {
        metrics.shadow_match(&shadow.rule, shadow.outcome);
    }
}

/// The decision line: through our own writer when one is installed, else through tracing.
fn log_decision(api: &'static str, shown: &Shown<'_>, evaluation: &Evaluation, latency_us: u64) {
    let rule = escape(evaluation.rule.as_deref().unwrap_or("default"));
    let shadow = if evaluation.shadow.is_empty() {
        String::new()
    } else {
        escape(&shadow_summary(evaluation)).into_owned()
    };
    let fields = line::Fields {
        api,
        request_id: &shown.request_id,
        method: &shown.method,
        host: &shown.host,
        path: &shown.path,
        outcome: evaluation.decision.outcome(),
        rule: &rule,
        shadow: &shadow,
        latency_us,
    };
    if !line::write(&fields) {
        via_tracing(&fields);
    }
}

/// The line for a check that could not be decided, with the authorizer's error.
fn log_failure(api: &'static str, shown: &Shown<'_>, error: &AuthorizeError, latency_us: u64) {
    let error = escape(&error.to_string()).into_owned();
    tracing::warn!(
        target: "authz::decision",
        api,
        request_id = %shown.request_id,
        method = %shown.method,
        host = %shown.host,
        path = %shown.path,
        outcome = "error",
        error = %error,
        latency_us,
        "decision"
    );
}

/// The decision line through tracing's formatter: when no writer of our own is installed (the
/// server as a library), or the terminal wants colours. [`line`] reproduces this layout.
fn via_tracing(f: &line::Fields<'_>) {
    tracing::info!(
        target: "authz::decision",
        api = f.api,
        request_id = %f.request_id,
        method = %f.method,
        host = %f.host,
        path = %f.path,
        outcome = f.outcome,
        rule = %f.rule,
        shadow = f.shadow,
        latency_us = f.latency_us,
        "decision"
    );
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

/// `value` safe for one log line: control characters (C0, DEL, C1, and the Unicode line and
/// paragraph separators) become `\n`, `\r`, `\t` or `\u{..}`, and `\` becomes `\\` so an
/// escape in the value cannot pass for one of ours. Borrowed when nothing needs escaping.
pub(crate) fn escape(value: &str) -> Cow<'_, str> {
    let needs = |c: char| c == '\\' || c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
    if !value.chars().any(needs) {
        return Cow::Borrowed(value);
    }
    let mut escaped = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if needs(c) => {
                let _ = write!(escaped, "\\u{{{:x}}}", u32::from(c));
            }
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_borrowed() {
        assert!(matches!(
            escape("/api/items"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            escape("/x\r\n2026-01-01 INFO decision outcome=allow"),
            "/x\\r\\n2026-01-01 INFO decision outcome=allow"
        );
        assert_eq!(
            escape("a\tb\u{0}c\u{1b}[31m\u{7f}"),
            "a\\tb\\u{0}c\\u{1b}[31m\\u{7f}"
        );
        assert_eq!(
            escape("\u{85}\u{2028}\u{2029}"),
            "\\u{85}\\u{2028}\\u{2029}"
        );
        assert_eq!(escape("a\\nb"), "a\\\\nb");
        assert_eq!(escape("héllo wörld"), "héllo wörld");
    }
}
