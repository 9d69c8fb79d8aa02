//! The compiled rule set and the one function that decides.
//!
//! - `engine.rs` (here): the rule set, the entry points, and the precedence between rules,
//!   written once in [`RuleSet::evaluate_traced`];
//! - `engine/rule.rs`: one rule and the steps that try it (credential, lookup, `require`,
//!   decision);
//! - `engine/inspect.rs`: what a server reads from a rule set besides decisions.

mod inspect;
mod rule;
#[cfg(test)]
mod tests;

use std::pin::pin;
use std::task::{Context, Poll, Waker};

use crate::action::Action;
use crate::decision::{Decision, Deny, Evaluation, ShadowMatch};
use crate::hooks::Hooks;
use crate::index::{Candidates, RuleIndex};
use crate::lookup::{DatabaseSpec, LookupSpec};
use crate::prepare::{RequestOptions, Unusable, prepare};
use crate::request::Request;
use crate::template::Scope;
use crate::trace::{Trace, TraceEntry, record};
pub(crate) use rule::Rule;
use rule::{try_rule, when_holds};

/// A compiled policy: rules in file order plus the explicit default. Immutable, `Send + Sync`,
/// cheap to share in an `Arc`; built only by [`crate::load`].
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<Rule>,
    default: Action,
    needs_received: bool,
    databases: Vec<DatabaseSpec>,
    options: RequestOptions,
    /// The 1-based path segments some lookup binds (sorted, each once).
    secret_segments: Vec<usize>,
    /// Finds the rules a request may match without trying the others.
    index: RuleIndex,
    /// Whether some rule delegates to a Rego policy (which reads OPA-Envoy's attributes).
    has_rego: bool,
}

/// The name `{{rule.name}}` renders and the trace shows when no rule matched.
const DEFAULT_NAME: &str = "default";

impl RuleSet {
    /// Assembles a compiled rule set (the compile boundary is the only caller).
    pub(crate) fn new(
        rules: Vec<Rule>,
        default: Action,
        needs_received: bool,
        databases: Vec<DatabaseSpec>,
    ) -> Self {
        let mut secret_segments: Vec<usize> = rules
            .iter()
            .filter_map(|rule| rule.lookup.as_ref())
            .flat_map(LookupSpec::path_segments)
            .collect();
        secret_segments.sort_unstable();
        secret_segments.dedup();
        let index = RuleIndex::new(rules.iter().map(|rule| &rule.when));
        let has_rego = rules.iter().any(|rule| rule.rego.is_some());
        Self {
            has_rego,
            index,
            rules,
            default,
            needs_received,
            databases,
            options: RequestOptions::default(),
            secret_segments,
        }
    }

    /// This rule set reading requests with `options` (how paths are made canonical, HTTP mode's
    /// path prefix and trusted proxies) instead of the safe defaults.
    pub fn with_request_options(mut self, options: RequestOptions) -> Self {
        self.options = options;
        self
    }

    /// How this rule set reads requests.
    pub fn request_options(&self) -> &RequestOptions {
        &self.options
    }

    /// Decides one request with no hooks: [`RuleSet::evaluate`] with [`Hooks::default`], run to
    /// completion on the spot. Rules that need a hook (a JWKS URL, a lookup) fail closed: the
    /// token is invalid, the lookup answers `on_db_error`.
    ///
    /// ```
    /// use rules::{Decision, Request, TraceEntry};
    ///
    /// let policy = r#"
    /// [default]
    /// deny = { status = 403 }
    ///
    /// [[rules]]
    /// name = "ops"
    /// when = { headers = [{ name = "x-team", exact = "ops" }] }
    /// allow = { request_headers = [{ name = "x-by", value = "{{rule.name}}" }] }
    /// "#;
    /// let (_, rules) = rules::load::<toml::Table>("policy.toml", policy).unwrap();
    ///
    /// let mut request = Request::default();
    /// request.headers.insert("x-team".into(), "ops".into());
    /// let evaluation = rules.decide(&request);
    /// assert_eq!(evaluation.rule.as_deref(), Some("ops"));
    /// let Decision::Allow(allow) = evaluation.decision else { panic!() };
    /// assert_eq!(allow.request_headers[0].value, "ops");
    ///
    /// let mut trace = Vec::new();
    /// let evaluation = rules.decide_traced(&Request::default(), &mut trace);
    /// assert!(!evaluation.decision.is_allow());
    /// assert_eq!(trace.last(), Some(&TraceEntry::Default { outcome: "deny" }));
    /// assert_eq!(trace.last().unwrap().to_string(), "default: deny");
    /// ```
    pub fn decide(&self, request: &Request) -> Evaluation {
        self.decide_with(request, None)
    }

    /// [`RuleSet::decide`], recording every step into `trace`.
    pub fn decide_traced(&self, request: &Request, trace: &mut Trace) -> Evaluation {
        self.decide_with(request, Some(trace))
    }

    fn decide_with(&self, request: &Request, mut trace: Option<&mut Trace>) -> Evaluation {
        let hooks = Hooks::default();
        let polled = {
            let evaluation = pin!(self.evaluate_with(request, &hooks, trace.as_deref_mut()));
            evaluation.poll(&mut Context::from_waker(Waker::noop()))
        };
        match polled {
            Poll::Ready(evaluation) => evaluation,
            // Without hooks nothing waits, so this is unreachable; if it ever happens, deny.
            Poll::Pending => {
                record(&mut trace, || TraceEntry::Incomplete);
                Evaluation {
                    decision: Decision::Deny(Deny {
                        http_status: 500,
                        grpc_code: 13,
                        headers: Vec::new(),
                        body: String::new(),
                        dynamic_metadata: Default::default(),
                    }),
                    rule: None,
                    shadow: Vec::new(),
                    failure: None,
                }
            }
        }
    }

    /// Decides one request, calling `hooks` for rules that need them. No trace is kept (see
    /// [`RuleSet::evaluate_traced`]); precedence is documented there, the only place it lives.
    pub async fn evaluate(&self, raw: &Request, hooks: &Hooks) -> Evaluation {
        self.evaluate_with(raw, hooks, None).await
    }

    /// Decides one request, calling `hooks` for rules that need them, and records each step
    /// into `trace`. This is the only place precedence lives.
    ///
    /// 0. The request is made canonical once, before any rule sees it (see [`RequestOptions`]):
    ///    over HTTP mode the configured `path_prefix` is removed and the client address is taken
    ///    from `x-forwarded-for` when the peer is a trusted proxy; the path (query excluded) and
    ///    the host get their canonical spelling. A request that has none — invalid
    ///    percent-encoding, a control character, a fragment, an escaped slash under `reject`, a
    ///    path not in origin form, an invalid host, a missing `path_prefix` — is **decided
    ///    here** and no rule is tried: by the `[default]` deny, or, when the default allows, by a
    ///    fixed `400` / `INVALID_ARGUMENT` deny, since a request nobody can read must not be let
    ///    through by an open default. The trace says why.
    ///
    /// Then rules are tried in file order, against the canonical request; for each:
    ///
    /// 1. its request-level `when` must hold, else the next rule is tried;
    /// 2. its `credential`, if any, is read and verified; missing or invalid **decides**: the
    ///    rule's `on_failure` deny (401 by default);
    /// 3. its `lookup`, if any, runs with the bound parameters: no row **decides** `on_missing`
    ///    (403), a database failure (or no lookup hook) **decides** `on_db_error` (503); serving
    ///    stale answers is the hook's job;
    /// 4. its `require`, if any, is checked against the request, the claims and the row; when it
    ///    fails the next rule is tried;
    /// 5. its `allow` / `deny` decides, with claims and row available to templates.
    ///
    /// 6. a rule marked `shadow = true` goes through steps 1-5, but its verdict is only recorded
    ///    in [`Evaluation::shadow`] and the trace; the next rules decide.
    ///
    /// When no rule decides, the `[default]` table (which the config must spell out) does.
    /// Conditions either hold or not (something missing makes a value condition fail), and every
    /// failure of a credential, a key source or a database is a deny: no error path leads to an
    /// allow. Traces name conditions and reasons, never credential values.
    pub async fn evaluate_traced(
        &self,
        raw: &Request,
        hooks: &Hooks,
        trace: &mut Trace,
    ) -> Evaluation {
        self.evaluate_with(raw, hooks, Some(trace)).await
    }

    /// [`RuleSet::evaluate_traced`]'s steps, tracing when `trace` is given.
    async fn evaluate_with(
        &self,
        raw: &Request,
        hooks: &Hooks,
        mut trace: Option<&mut Trace>,
    ) -> Evaluation {
        let request = match prepare(raw, &self.options) {
            Ok(request) => request,
            Err(unusable) => return self.refuse(raw, &unusable, trace),
        };
        let request = request.as_ref();
        let mut shadow = Vec::new();
        let mut failure = None;
        let mut regex_hits = Vec::new();
        for position in self.positions(request, trace.is_some(), &mut regex_hits) {
            let Some(rule) = self.rules.get(position) else {
                continue;
            };
            // 1. Checked here, before `try_rule`'s future is even built: most rules tried do
            //    not match, and for them this is all the work there is.
            if !when_holds(rule, request, &mut trace) {
                continue;
            }
            let tried = try_rule(
                rule,
                (raw, request),
                hooks,
                trace.as_deref_mut(),
                &mut failure,
            );
            let Some(decision) = tried.await else {
                continue;
            };
            if rule.shadow {
                failure = None;
                // 6. A shadow rule's verdict is recorded, and evaluation goes on as if it had
                //    not matched.
                record_shadow(rule, &decision, &mut shadow, &mut trace);
                continue;
            }
            return Evaluation {
                decision,
                rule: Some(rule.name.clone()),
                shadow,
                failure,
            };
        }
        self.by_default(request, shadow, &mut trace)
    }

    /// The rules one evaluation tries, in file order. Traced, every rule, so the trace shows why
    /// each one did not match; untraced, only those the index cannot rule out (in the same
    /// order: see `crate::index`).
    fn positions<'i>(
        &'i self,
        request: &Request,
        traced: bool,
        regex_hits: &'i mut Vec<u32>,
    ) -> Positions<'i> {
        if traced || self.index.is_trivial() {
            Positions::All(0..self.rules.len())
        } else {
            Positions::Indexed(self.index.candidates(request, regex_hits))
        }
    }

    /// No rule decided: the `[default]` table does.
    fn by_default(
        &self,
        request: &Request,
        shadow: Vec<ShadowMatch>,
        trace: &mut Option<&mut Trace>,
    ) -> Evaluation {
        let scope = Scope {
            request,
            rule: DEFAULT_NAME,
            identity: None,
        };
        let decision = self.default.render(&scope);
        record(trace, || TraceEntry::Default {
            outcome: decision.outcome(),
        });
        Evaluation {
            decision,
            rule: None,
            shadow,
            failure: None,
        }
    }

    /// Step 0 of [`RuleSet::evaluate_traced`] failed: the default's deny, or a fixed 400 when
    /// the default would allow.
    fn refuse(
        &self,
        raw: &Request,
        unusable: &Unusable,
        mut trace: Option<&mut Trace>,
    ) -> Evaluation {
        record(&mut trace, || TraceEntry::Unusable {
            reason: unusable.to_string(),
        });
        let decision = match &self.default {
            Action::Deny(_) => {
                let scope = Scope {
                    request: raw,
                    rule: DEFAULT_NAME,
                    identity: None,
                };
                self.default.render(&scope)
            }
            Action::Allow(_) => Decision::Deny(Deny {
                http_status: 400,
                grpc_code: 3,
                headers: Vec::new(),
                body: String::new(),
                dynamic_metadata: Default::default(),
            }),
        };
        record(&mut trace, || TraceEntry::Default {
            outcome: decision.outcome(),
        });
        Evaluation {
            decision,
            rule: None,
            shadow: Vec::new(),
            failure: None,
        }
    }
}

/// The rule positions one evaluation tries, ascending.
enum Positions<'i> {
    /// Every rule.
    All(std::ops::Range<usize>),
    /// The index's candidates.
    Indexed(Candidates<'i>),
}

impl Iterator for Positions<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        match self {
            Positions::All(range) => range.next(),
            Positions::Indexed(candidates) => candidates.next(),
        }
    }
}

/// Step 6: a shadow rule's verdict, kept beside the evaluation and in the trace.
fn record_shadow(
    rule: &Rule,
    decision: &Decision,
    shadow: &mut Vec<ShadowMatch>,
    trace: &mut Option<&mut Trace>,
) {
    record(trace, || TraceEntry::Shadow {
        rule: rule.name.to_string(),
        outcome: decision.outcome(),
    });
    shadow.push(ShadowMatch {
        rule: rule.name.clone(),
        outcome: decision.outcome(),
    });
}
