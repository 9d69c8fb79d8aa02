//! What an evaluation did, step by step, as data: recorded only into a sink a caller passes
//! ([`crate::RuleSet::evaluate_traced`], [`crate::RuleSet::decide_traced`]) and rendered to
//! text only when shown (`authz-server explain`, tests). An evaluation nobody traces builds
//! none of it.
//!
//! Entries name rules and conditions, never credential values or header values.

use std::fmt;

/// A trace: one entry per step, in order.
pub type Trace = Vec<TraceEntry>;

/// One step of an evaluation. `Display` renders the line `explain` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceEntry {
    /// Step 0: the request has no canonical form, so no rule was tried.
    Unusable {
        /// Why (names the part of the request, never its value).
        reason: String,
    },
    /// Step 1 or 4: the rule's `when` (or, with `require`, its `require`) did not hold.
    NoMatch {
        /// The rule.
        rule: String,
        /// Whether it was the `require` table that failed.
        require: bool,
        /// The first condition that failed.
        reason: String,
    },
    /// Step 2: the rule's credential was missing or invalid; its `on_failure` decided.
    Credential {
        /// The rule.
        rule: String,
        /// Where the credential is read from, e.g. `header x-api-key`.
        source: String,
        /// `missing`, or `invalid: <reason>`.
        outcome: String,
    },
    /// Step 3: the lookup found no row; `on_missing` decided.
    LookupNoRow {
        /// The rule.
        rule: String,
    },
    /// Step 3: a lookup parameter was absent, so no query ran; `on_missing` decided.
    LookupSkipped {
        /// The rule.
        rule: String,
        /// Which parameter.
        reason: String,
    },
    /// Step 3: the lookup failed; `on_db_error` decided.
    LookupFailed {
        /// The rule.
        rule: String,
        /// The kind of failure (never the database's message).
        reason: String,
    },
    /// Step 5: the rule matched and decided.
    Matched {
        /// The rule.
        rule: String,
    },
    /// Step 6: a shadow rule matched; its verdict was recorded, not enforced.
    Shadow {
        /// The rule.
        rule: String,
        /// `allow` or `deny`.
        outcome: &'static str,
    },
    /// Step 5 of a `rego` rule: the policy's result and what it decided.
    Rego {
        /// The rule.
        rule: String,
        /// The query evaluated.
        query: String,
        /// The query's value as compact JSON (`undefined` when it has none).
        result: String,
        /// The values of the rules in the query's package (compact JSON), when known.
        rules: Option<String>,
        /// `allow`, `deny`, or `deny (fail closed: <reason>)`.
        outcome: String,
    },
    /// No rule decided: the `[default]` table did.
    Default {
        /// `allow` or `deny`.
        outcome: &'static str,
    },
    /// [`crate::RuleSet::decide`] found a rule waiting on a hook it does not have: deny.
    Incomplete,
}

impl fmt::Display for TraceEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceEntry::Unusable { reason } => write!(f, "request: {reason}; no rule is tried"),
            TraceEntry::NoMatch {
                rule,
                require: false,
                reason,
            } => write!(f, "rule {rule:?}: no match: {reason}"),
            TraceEntry::NoMatch {
                rule,
                require: true,
                reason,
            } => write!(f, "rule {rule:?}: no match: require: {reason}"),
            TraceEntry::Credential {
                rule,
                source,
                outcome,
            } => write!(f, "rule {rule:?}: credential ({source}) {outcome}"),
            TraceEntry::LookupNoRow { rule } => write!(f, "rule {rule:?}: lookup found no row"),
            TraceEntry::LookupSkipped { rule, reason } => {
                write!(f, "rule {rule:?}: lookup skipped: {reason}")
            }
            TraceEntry::LookupFailed { rule, reason } => {
                write!(f, "rule {rule:?}: lookup failed: {reason}")
            }
            TraceEntry::Matched { rule } => write!(f, "rule {rule:?}: matched"),
            TraceEntry::Shadow { rule, outcome } => {
                write!(f, "rule {rule:?} (shadow): would {outcome}; not enforced")
            }
            TraceEntry::Rego {
                rule,
                query,
                result,
                rules,
                outcome,
            } => {
                write!(f, "rule {rule:?}: rego {query} = {result}: {outcome}")?;
                if let Some(rules) = rules {
                    write!(f, "; package rules: {rules}")?;
                }
                Ok(())
            }
            TraceEntry::Default { outcome } => write!(f, "default: {outcome}"),
            TraceEntry::Incomplete => {
                f.write_str("evaluation did not complete without hooks: deny")
            }
        }
    }
}

/// The trace as the lines `explain` prints.
pub fn lines(trace: &[TraceEntry]) -> Vec<String> {
    trace.iter().map(ToString::to_string).collect()
}

/// Adds an entry to the trace when there is one; the entry is not even built otherwise.
pub(crate) fn record(trace: &mut Option<&mut Trace>, entry: impl FnOnce() -> TraceEntry) {
    if let Some(trace) = trace.as_deref_mut() {
        trace.push(entry());
    }
}
