//! Step 5 of a `rego` rule (see [`crate::RuleSet::evaluate_traced`]): the policy decides, and
//! the trace records its result and, for `explain`, the values of its package's rules.

use crate::decision::{Decision, PolicyFailure};
use crate::identity::Identity;
use crate::request::Request;
use crate::trace::{Trace, TraceEntry};

use super::RegoPolicy;

/// Longest JSON text a trace line shows of a result.
const SHOWN_BYTES: usize = 2_000;

/// The policy's decision for this request, and why it failed if it did.
pub(crate) fn policy_decision(
    policy: &RegoPolicy,
    rule: &str,
    raw: &Request,
    canonical: &Request,
    identity: &Identity,
    trace: Option<&mut Trace>,
) -> (Decision, Option<PolicyFailure>) {
    let identity = (identity.claims.is_some() || identity.row.is_some()).then_some(identity);
    let outcome = policy.evaluate(raw, canonical, identity);
    if let Some(trace) = trace {
        let result = outcome
            .result
            .as_ref()
            .map_or_else(|| "undefined".to_owned(), shown);
        let rules = policy
            .package_values(raw, canonical)
            .map(|values| shown(&values));
        let verdict = match &outcome.failure {
            None => outcome.decision.outcome().to_owned(),
            Some(failure) => format!("deny (fail closed: {})", failure.reason),
        };
        trace.push(TraceEntry::Rego {
            rule: rule.to_owned(),
            query: policy.query.clone(),
            result,
            rules,
            outcome: verdict,
        });
    }
    (outcome.decision, outcome.failure)
}

fn shown(value: &serde_json::Value) -> String {
    let mut text = value.to_string();
    if text.len() > SHOWN_BYTES {
        let mut end = SHOWN_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}
