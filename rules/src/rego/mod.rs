//! Rules that delegate their decision to a Rego policy, evaluated in process by `regorus`, with
//! OPA-Envoy's input document and decision shapes so its policies run unchanged.
//!
//! - [`load`]: policies and data read, parsed and checked at config load (errors as
//!   `file:line:col`);
//! - [`input`]: the input document, field for field as OPA-Envoy builds it;
//! - [`decision`]: a result mapped onto allow / deny as OPA-Envoy maps it;
//! - [`jwt`]: the `io.jwt.*` builtins regorus lacks, backed by our JWT code.
//!
//! Fail closed: an undefined result, an evaluation error, a result of the wrong shape or an
//! evaluation past its time budget is a deny ([`Failure`]), never an allow.

pub(crate) mod decision;
pub(crate) mod input;
pub(crate) mod jwt;
mod load;
pub(crate) mod step;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value as Json;

use crate::decision::{Decision, PolicyFailure};
use crate::identity::Identity;
use crate::request::Request;

pub(crate) use load::compile;

/// The query OPA-Envoy evaluates unless configured otherwise.
pub const DEFAULT_QUERY: &str = "data.envoy.authz.allow";

/// The time budget of one evaluation unless `timeout_ms` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);

/// Engines kept for reuse; more run at once only under more concurrency, and are dropped after.
const POOL_SIZE: usize = 64;

/// A compiled `rego = { ... }` table: the prepared engine, the query, the budget.
pub(crate) struct RegoPolicy {
    /// The query as configured, e.g. `data.envoy.authz.allow`.
    pub query: String,
    /// How the query is evaluated.
    pub mode: QueryMode,
    /// The package holding the queried rule (`data.envoy.authz`), shown by `explain`.
    package: Option<String>,
    /// Per-evaluation wall-clock budget.
    pub timeout: Duration,
    /// Policy and data files, for the reloader to watch.
    pub files: Vec<PathBuf>,
    /// The engine every evaluation clones from: policies parsed, data merged, extensions added.
    template: regorus::Engine,
    /// Engines ready for the next evaluation (an engine is `&mut` while it evaluates).
    pool: Mutex<Vec<regorus::Engine>>,
}

impl std::fmt::Debug for RegoPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegoPolicy")
            .field("query", &self.query)
            .field("timeout", &self.timeout)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// How a query is evaluated: a complete rule by its path (the fast way), or, for rules regorus
/// cannot address by path (an object built from partial rules, `result["allowed"] := ...`), as
/// a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueryMode {
    /// `Engine::eval_rule`.
    Rule,
    /// `Engine::eval_query`.
    Query,
}

/// Evaluates `query` on `engine` as `mode` says: the value, `Undefined` when there is none.
pub(crate) fn run_query(
    engine: &mut regorus::Engine,
    query: &str,
    mode: QueryMode,
) -> Result<regorus::Value, String> {
    match mode {
        QueryMode::Rule => engine
            .eval_rule(query.to_owned())
            .map_err(|error| format!("{error:#}")),
        QueryMode::Query => {
            let results = engine
                .eval_query(query.to_owned(), false)
                .map_err(|error| format!("{error:#}"))?;
            let mut results = results.result.into_iter();
            match (results.next(), results.next()) {
                (None, _) => Ok(regorus::Value::Undefined),
                (Some(_), Some(_)) => Err("multiple evaluation results".to_owned()),
                (Some(first), None) => Ok(first
                    .expressions
                    .into_iter()
                    .next()
                    .map_or(regorus::Value::Undefined, |expression| expression.value)),
            }
        }
    }
}

/// Why a policy did not decide. Each is a deny; `kind` labels the metric.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Failure {
    /// The query has no value for this input.
    #[error("undefined decision")]
    Undefined,
    /// The evaluation ran past its time budget.
    #[error("evaluation exceeded its time limit of {0:?}")]
    Limit(Duration),
    /// The evaluation failed.
    #[error("evaluation error: {0}")]
    Error(String),
    /// The value is not a decision OPA-Envoy accepts.
    #[error("invalid decision: {0}")]
    Invalid(String),
    /// The input document could not be built (answered 400, as OPA-Envoy does).
    #[error("{0}")]
    Input(input::InputError),
}

impl Failure {
    fn kind(&self) -> &'static str {
        match self {
            Failure::Undefined => "undefined",
            Failure::Limit(_) => "limit",
            Failure::Error(_) => "error",
            Failure::Invalid(_) => "invalid",
            Failure::Input(_) => "input",
        }
    }

    /// The deny a failure answers: 400 with the reason for an unreadable request (OPA-Envoy's
    /// answer), else 403 with an empty body: what Envoy sends for a failed check under its
    /// default `status_on_error`, without depending on the proxy's failure mode.
    fn deny(&self) -> Decision {
        match self {
            Failure::Input(error) => Decision::Deny(decision::plain_deny(400, error.to_string())),
            _ => Decision::Deny(decision::plain_deny(403, String::new())),
        }
    }
}

/// What one evaluation produced, for the engine and `explain`.
pub(crate) struct Outcome {
    /// The decision (a deny whenever `failure` is set).
    pub decision: Decision,
    /// Why the policy did not decide, if it did not.
    pub failure: Option<PolicyFailure>,
    /// The query's value as JSON (`None` when undefined or failed before evaluating).
    pub result: Option<Json>,
}

impl RegoPolicy {
    /// Evaluates the policy for one request. `raw` is the request as received (OPA-Envoy's
    /// input is built from it), `canonical` the same after step 0, `identity` what earlier
    /// stages of the rule verified.
    pub(crate) fn evaluate(
        &self,
        raw: &Request,
        canonical: &Request,
        identity: Option<&Identity>,
    ) -> Outcome {
        let input = match input::document(raw, canonical, identity) {
            Ok(input) => input,
            Err(error) => return failed(&Failure::Input(error), None),
        };
        let mut engine = self.engine();
        engine.set_input(regorus::Value::from(input));
        let value = run_query(&mut engine, &self.query, self.mode);
        self.give_back(engine);
        let value = match value {
            Ok(value) => value,
            Err(error) => return failed(&self.evaluation_error(&error), None),
        };
        if value == regorus::Value::Undefined {
            return failed(&Failure::Undefined, None);
        }
        let result = match serde_json::to_value(&value) {
            Ok(result) => result,
            Err(error) => return failed(&Failure::Invalid(error.to_string()), None),
        };
        match decision::map(&result) {
            Ok(decision) => Outcome {
                decision,
                failure: None,
                result: Some(result),
            },
            Err(reason) => failed(&Failure::Invalid(reason), Some(result)),
        }
    }

    /// The values of every rule in the queried package for this request, for `explain`: which
    /// rules produced the result. Evaluated like a check, under the same budget.
    pub(crate) fn package_values(&self, raw: &Request, canonical: &Request) -> Option<Json> {
        let package = self.package.as_ref()?;
        let input = input::document(raw, canonical, None).ok()?;
        let mut engine = self.engine();
        engine.set_input(regorus::Value::from(input));
        let results = engine.eval_query(package.clone(), false).ok();
        self.give_back(engine);
        let value = results?
            .result
            .into_iter()
            .next()?
            .expressions
            .into_iter()
            .next()?
            .value;
        serde_json::to_value(&value).ok()
    }

    fn engine(&self) -> regorus::Engine {
        let pooled = self
            .pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        pooled.unwrap_or_else(|| self.template.clone())
    }

    fn give_back(&self, engine: regorus::Engine) {
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < POOL_SIZE {
            pool.push(engine);
        }
    }

    fn evaluation_error(&self, text: &str) -> Failure {
        if text.contains("exceeded time limit") {
            Failure::Limit(self.timeout)
        } else {
            Failure::Error(text.lines().last().unwrap_or_default().trim().to_owned())
        }
    }
}

fn failed(failure: &Failure, result: Option<Json>) -> Outcome {
    Outcome {
        decision: failure.deny(),
        failure: Some(PolicyFailure {
            kind: failure.kind(),
            reason: failure.to_string(),
        }),
        result,
    }
}

/// Shared so that rule sets compiled from the same config share nothing mutable but the pool.
pub(crate) type SharedPolicy = Arc<RegoPolicy>;

#[cfg(test)]
mod tests;
