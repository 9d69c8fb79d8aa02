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
    path: String,
    evaluation: &Result<Evaluation, AuthorizeError>,
    latency: Duration,
) {
    let latency_us = latency.as_micros() as u64;
    let path = escape(&path);
    let method = escape(&request.method);
    let host = escape(&request.host);
    let request_id = escape(request.header("x-request-id").unwrap_or(proxy_request_id));
    match evaluation {
        Ok(evaluation) => {
            let outcome = evaluation.decision.outcome();
            metrics.count_decision(api, evaluation.rule.as_ref(), outcome, latency);
            for shadow in &evaluation.shadow {
                metrics.shadow_match(&shadow.rule, shadow.outcome);
            }
            if let (Some(failure), Some(rule)) = (&evaluation.failure, &evaluation.rule) {
                // Fail closed, and say why: the policy's own message, never request values.
                metrics.rego_failure(rule, failure.kind);
                tracing::warn!(
                    target: "authz::decision",
                    api,
                    request_id = %request_id,
                    rule = %escape(rule),
                    kind = failure.kind,
                    "rego policy did not decide, denied: {}",
                    escape(&failure.reason)
                );
            }
            let rule = evaluation.rule.as_deref().unwrap_or("default");
            if !tracing::enabled!(target: "authz::decision", tracing::Level::INFO) {
                return;
            }
            let rule = escape(rule);
            let shadow = if evaluation.shadow.is_empty() {
                String::new()
            } else {
                escape(&shadow_summary(evaluation)).into_owned()
            };
            let fields = line::Fields {
                api,
                request_id: &request_id,
                method: &method,
                host: &host,
                path: &path,
                outcome,
                rule: &rule,
                shadow: &shadow,
                latency_us,
            };
            if !line::write(&fields) {
                via_tracing(&fields);
            }
        }
        Err(error) => {
            metrics.count_failed_check(api, latency);
            let error = escape(&error.to_string()).into_owned();
            tracing::warn!(
            target: "authz::decision",
            api,
            request_id = %request_id,
            method = %method,
            host = %host,
            path = %path,
            outcome = "error",
            error = %error,
            latency_us,
            "decision"
            );
        }
    }
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
