//! Shared helpers for the hook-driven test suites: running `evaluate` to completion, loading a
//! policy, and reading a decision's parts.

// Each suite uses its own subset of these helpers; the rest are dead code in that crate.
#![allow(dead_code)]

pub(crate) mod tokens;

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use rules::{Allow, Decision, Deny, Evaluation, Hooks, Request, RuleSet};

/// Runs a future to completion on this thread (the test doubles never wait on I/O).
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
        std::thread::yield_now();
    }
}

/// Loads a policy or panics with its errors.
pub(crate) fn policy(text: &str) -> RuleSet {
    rules::load::<toml::Table>("policy.toml", text)
        .unwrap_or_else(|errors| panic!("policy rejected:\n{errors}"))
        .1
}

/// An evaluation with its trace rendered as the lines `explain` prints; reads as the
/// [`Evaluation`] it holds.
#[derive(Debug)]
pub(crate) struct Traced {
    pub evaluation: Evaluation,
    pub trace: Vec<String>,
}

impl std::ops::Deref for Traced {
    type Target = Evaluation;
    fn deref(&self) -> &Evaluation {
        &self.evaluation
    }
}

/// [`RuleSet::decide`] with its trace.
pub(crate) trait DecideTraced {
    fn traced(&self, request: &Request) -> Traced;
}

impl DecideTraced for RuleSet {
    fn traced(&self, request: &Request) -> Traced {
        let mut trace = Vec::new();
        let evaluation = self.decide_traced(request, &mut trace);
        // The untraced path must decide the same.
        assert_eq!(
            self.decide(request),
            evaluation,
            "traced and untraced disagree"
        );
        Traced {
            evaluation,
            trace: rules::trace::lines(&trace),
        }
    }
}

/// Evaluates with hooks, traced.
pub(crate) fn evaluate(rules: &RuleSet, request: &Request, hooks: &Hooks) -> Traced {
    let mut trace = Vec::new();
    let evaluation = block_on(rules.evaluate_traced(request, hooks, &mut trace));
    Traced {
        evaluation,
        trace: rules::trace::lines(&trace),
    }
}

/// A request with these headers.
pub(crate) fn request(path: &str, headers: &[(&str, &str)]) -> Request {
    let mut request = Request {
        method: "GET".into(),
        path: path.into(),
        ..Request::default()
    };
    for (name, value) in headers {
        request
            .headers
            .insert(name.to_ascii_lowercase(), (*value).to_owned());
    }
    request
}

/// The allow, or a panic showing the evaluation.
pub(crate) fn allowed(evaluation: &Evaluation) -> &Allow {
    match &evaluation.decision {
        Decision::Allow(allow) => allow,
        Decision::Deny(_) => panic!("expected an allow: {evaluation:#?}"),
    }
}

/// The deny, or a panic showing the evaluation.
pub(crate) fn denied(evaluation: &Evaluation) -> &Deny {
    match &evaluation.decision {
        Decision::Deny(deny) => deny,
        Decision::Allow(_) => panic!("expected a deny: {evaluation:#?}"),
    }
}

/// The upstream request headers of an allow, as (name, value) pairs in order.
pub(crate) fn request_headers(evaluation: &Evaluation) -> Vec<(String, String)> {
    allowed(evaluation)
        .request_headers
        .iter()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect()
}

/// Asserts the default credential failure: 401, UNAUTHENTICATED, the challenge, empty body,
/// and that the trace ends with `reason`.
pub(crate) fn assert_unauthenticated(evaluation: &Traced, challenge: &str, reason: &str) {
    let deny = denied(evaluation);
    assert_eq!(deny.http_status, 401, "{evaluation:#?}");
    assert_eq!(deny.grpc_code, 16, "{evaluation:#?}");
    assert_eq!(
        deny.headers,
        vec![("www-authenticate".to_owned(), challenge.to_owned())]
    );
    assert_eq!(deny.body, "");
    let last = evaluation.trace.last().map(String::as_str).unwrap_or("");
    assert!(
        last.ends_with(reason),
        "trace {:?} should end with {reason:?}",
        evaluation.trace
    );
}

/// Loads each `(what, config, expected error lines)` case and asserts it is rejected with exactly
/// those lines; every mismatch is reported, not only the first.
pub(crate) fn assert_rejected(cases: &[(&str, &str, &[&str])]) {
    let mut failures = Vec::new();
    for (what, text, want) in cases {
        let got = match rules::load::<toml::Table>("policy.toml", text) {
            Ok(_) => "<accepted>".to_owned(),
            Err(errors) => errors.to_string(),
        };
        let want = want.join("\n");
        if got != want {
            failures.push(format!("{what}:\n  got:  {got}\n  want: {want}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
