//! One compiled rule and how it is tried: steps 1-5 of [`crate::RuleSet::evaluate_traced`],
//! which is where their order and meaning are written down. Each step here either passes the
//! request on to the next, decides, or sends the evaluation on to the next rule.

use std::sync::Arc;

use crate::action::{Action, DenyAction};
use crate::credential::{Credential, Rejected, Verified};
use crate::decision::{Decision, PolicyFailure};
use crate::hooks::{Hooks, LookupError, LookupQuery, Row};
use crate::identity::Identity;
use crate::lookup::LookupSpec;
use crate::matcher::Condition;
use crate::request::Request;
use crate::template::Scope;
use crate::trace::{Trace, TraceEntry, record};

/// One compiled rule.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    /// Unique name, shared with every evaluation it decides (no copy per check).
    pub name: Arc<str>,
    /// Evaluated and reported, never enforced.
    pub shadow: bool,
    /// The rule's `when`, as an [`Condition::All`].
    pub when: Condition,
    /// The credential verified once `when` holds.
    pub credential: Option<Credential>,
    /// The lookup run after the credential.
    pub lookup: Option<LookupSpec>,
    /// Identity-level conditions checked after the lookup.
    pub require: Option<Condition>,
    /// What the rule does when it matches; for a `rego` rule, the fail-closed deny.
    pub action: Action,
    /// A Rego policy that decides in place of `action` (see `crate::rego`).
    pub rego: Option<crate::rego::SharedPolicy>,
}

/// Step 1: whether the rule's request-level `when` holds. Untraced, nothing is built; traced,
/// the first failing condition is recorded.
pub(crate) fn when_holds(rule: &Rule, request: &Request, trace: &mut Option<&mut Trace>) -> bool {
    condition_holds(rule, &rule.when, request, None, trace)
}

/// Steps 2-5 for one rule whose `when` holds (step 1): its decision, or `None` when `require`
/// fails and the next rule should be tried. Records the rule's steps when traced.
pub(crate) async fn try_rule(
    rule: &Rule,
    (raw, request): (&Request, &Request),
    hooks: &Hooks,
    mut trace: Option<&mut Trace>,
    failure: &mut Option<PolicyFailure>,
) -> Option<Decision> {
    let mut identity = Identity::default();
    // 2. The credential: missing or invalid decides.
    let verified = match &rule.credential {
        None => None,
        Some(credential) => {
            match verify_credential(rule, credential, request, hooks, &mut trace).await {
                Ok(verified) => Some(verified),
                Err(deny) => return Some(deny),
            }
        }
    };
    if let Some(verified) = &verified {
        identity.claims.clone_from(&verified.claims);
    }
    // 3. The lookup: no row or no answer decides.
    if let Some(lookup) = &rule.lookup {
        let bound = (request, verified.as_ref());
        match look_up(rule, lookup, bound, &identity, hooks, &mut trace).await {
            Ok(row) => identity.row = Some(row),
            Err(deny) => return Some(deny),
        }
    }
    // 4. `require`: when it fails, the next rule is tried.
    if let Some(require) = &rule.require
        && !condition_holds(rule, require, request, Some(&identity), &mut trace)
    {
        return None;
    }
    // 5. The rule decides.
    Some(rule_decision(
        rule,
        (raw, request),
        &identity,
        trace,
        failure,
    ))
}

/// Step 2: the verified credential, or the rule's `on_failure` deny.
async fn verify_credential(
    rule: &Rule,
    credential: &Credential,
    request: &Request,
    hooks: &Hooks,
    trace: &mut Option<&mut Trace>,
) -> Result<Verified, Decision> {
    credential.verify(request, hooks).await.map_err(|rejected| {
        record(trace, || TraceEntry::Credential {
            rule: rule.name.to_string(),
            source: credential.source.describe(),
            outcome: match rejected {
                Rejected::Missing => "missing".to_owned(),
                Rejected::Invalid(reason) => format!("invalid: {reason}"),
            },
        });
        deny(rule, &credential.on_failure, request, None)
    })
}

/// Step 3: the row, or the deny when there is none: `on_missing` when the query found nothing
/// or could not be bound, `on_db_error` when the database did not answer; rendered with the
/// claims (the row is what is missing).
async fn look_up(
    rule: &Rule,
    lookup: &LookupSpec,
    (request, verified): (&Request, Option<&Verified>),
    identity: &Identity,
    hooks: &Hooks,
    trace: &mut Option<&mut Trace>,
) -> Result<Arc<Row>, Decision> {
    let action = match run_lookup(lookup, request, verified, hooks).await {
        Ok(Some(row)) => return Ok(row),
        Ok(None) => {
            record(trace, || TraceEntry::LookupNoRow {
                rule: rule.name.to_string(),
            });
            &lookup.on_missing
        }
        Err(missing @ LookupFailure::MissingParam(_)) => {
            record(trace, || TraceEntry::LookupSkipped {
                rule: rule.name.to_string(),
                reason: missing.to_string(),
            });
            &lookup.on_missing
        }
        Err(error) => {
            record(trace, || TraceEntry::LookupFailed {
                rule: rule.name.to_string(),
                reason: error.to_string(),
            });
            &lookup.on_db_error
        }
    };
    Err(deny(rule, action, request, Some(identity)))
}

/// Binds the parameters and asks the hook. A parameter the request lacks means no row can match
/// it: the query is skipped and the caller decides as for "no row".
async fn run_lookup(
    lookup: &LookupSpec,
    request: &Request,
    verified: Option<&Verified>,
    hooks: &Hooks,
) -> Result<Option<Arc<Row>>, LookupFailure> {
    let params = lookup
        .bind(request, verified)
        .map_err(LookupFailure::MissingParam)?;
    let hook = hooks.lookup.as_ref().ok_or(LookupFailure::NoHook)?;
    let query = LookupQuery {
        database: &lookup.database,
        sql: &lookup.sql,
        params: &params,
        policy: &lookup.policy,
    };
    hook.lookup(query).await.map_err(LookupFailure::Hook)
}

/// Steps 1 and 4: whether `condition` holds. Untraced, nothing is built; traced, the first
/// failing condition is recorded, as the rule's `require` when `identity` is given.
fn condition_holds(
    rule: &Rule,
    condition: &Condition,
    request: &Request,
    identity: Option<&Identity>,
    trace: &mut Option<&mut Trace>,
) -> bool {
    let Some(trace) = trace.as_deref_mut() else {
        return condition.holds(request, identity);
    };
    match condition.holds_or_why(request, identity) {
        Ok(()) => true,
        Err(reason) => {
            trace.push(TraceEntry::NoMatch {
                rule: rule.name.to_string(),
                require: identity.is_some(),
                reason,
            });
            false
        }
    }
}

/// Step 5: the rule's `allow` / `deny` rendered with the identity, or, for a `rego` rule, the
/// policy's decision (see `crate::rego::step`), whose failure is left in `failure`.
fn rule_decision(
    rule: &Rule,
    (raw, request): (&Request, &Request),
    identity: &Identity,
    mut trace: Option<&mut Trace>,
    failure: &mut Option<PolicyFailure>,
) -> Decision {
    if let Some(policy) = &rule.rego {
        let decision =
            crate::rego::step::policy_decision(policy, &rule.name, raw, request, identity, trace);
        *failure = decision.1;
        return decision.0;
    }
    record(&mut trace, || TraceEntry::Matched {
        rule: rule.name.to_string(),
    });
    let scope = Scope {
        request,
        rule: &rule.name,
        identity: Some(identity),
    };
    rule.action.render(&scope)
}

/// A rule's credential or lookup deny, rendered with what is known so far.
fn deny(
    rule: &Rule,
    action: &DenyAction,
    request: &Request,
    identity: Option<&Identity>,
) -> Decision {
    let scope = Scope {
        request,
        rule: &rule.name,
        identity,
    };
    Decision::Deny(action.render_deny(&scope))
}

/// Why a lookup gave no answer, for the trace: the kind only, because a database's message may
/// quote the bound values.
#[derive(Debug)]
enum LookupFailure {
    /// No lookup hook is installed.
    NoHook,
    /// A parameter's source is absent from the request.
    MissingParam(usize),
    /// The hook failed.
    Hook(LookupError),
}

impl std::fmt::Display for LookupFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LookupFailure::NoHook => f.write_str("no database hook"),
            LookupFailure::MissingParam(n) => write!(f, "parameter {n} absent from the request"),
            LookupFailure::Hook(LookupError::UnknownDatabase(name)) => {
                write!(f, "database `{name}` is not open")
            }
            LookupFailure::Hook(LookupError::Timeout(after)) => {
                write!(f, "timed out after {after:?}")
            }
            LookupFailure::Hook(LookupError::Failed(_)) => f.write_str("database error"),
        }
    }
}
