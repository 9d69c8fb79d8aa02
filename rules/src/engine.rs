//! The compiled rule set and the one function that decides.

use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::action::{Action, DenyAction};
use crate::credential::{Credential, JwtKeys, Rejected, Verifier};
use crate::decision::{Decision, Deny, Evaluation, ShadowMatch};
use crate::hooks::{Hooks, LookupError, LookupQuery};
use crate::identity::Identity;
use crate::index::{Candidates, RuleIndex};
use crate::lookup::{DatabaseSpec, LookupSpec};
use crate::matcher::Condition;
use crate::prepare::{RequestOptions, Unusable, prepare};
use crate::request::Request;
use crate::template::Scope;
use crate::trace::{Trace, TraceEntry};

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
            let evaluation = pin!(self.run(request, &hooks, trace.as_deref_mut()));
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
        self.run(raw, hooks, None).await
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
        self.run(raw, hooks, Some(trace)).await
    }

    /// [`RuleSet::evaluate_traced`]'s steps, tracing when `trace` is given.
    async fn run(&self, raw: &Request, hooks: &Hooks, mut trace: Option<&mut Trace>) -> Evaluation {
        let request = match prepare(raw, &self.options) {
            Ok(request) => request,
            Err(unusable) => return self.refuse(raw, &unusable, trace),
        };
        let request = request.as_ref();
        let mut shadow = Vec::new();
        let mut failure = None;
        // Traced, every rule is tried so the trace shows why each one did not match; untraced,
        // only those the index cannot rule out (in the same order: see `crate::index`).
        let mut regex_hits = Vec::new();
        let positions = if trace.is_some() || self.index.is_trivial() {
            Positions::All(0..self.rules.len())
        } else {
            Positions::Indexed(self.index.candidates(request, &mut regex_hits))
        };
        for position in positions {
            let Some(rule) = self.rules.get(position) else {
                continue;
            };
            // 1. Checked here, before `try_rule`'s future is even built: most rules tried do
            //    not match, and for them this is all the work there is.
            if !when_holds(rule, request, &mut trace) {
                continue;
            }
            let Some(decision) = try_rule(
                rule,
                (raw, request),
                hooks,
                trace.as_deref_mut(),
                &mut failure,
            )
            .await
            else {
                continue;
            };
            if rule.shadow {
                failure = None;
                // 6. A shadow rule's verdict is recorded, and evaluation goes on as if it had
                //    not matched.
                record(&mut trace, || TraceEntry::Shadow {
                    rule: rule.name.to_string(),
                    outcome: decision.outcome(),
                });
                shadow.push(ShadowMatch {
                    rule: rule.name.clone(),
                    outcome: decision.outcome(),
                });
                continue;
            }
            return Evaluation {
                decision,
                rule: Some(rule.name.clone()),
                shadow,
                failure,
            };
        }
        let scope = Scope {
            request,
            rule: DEFAULT_NAME,
            identity: None,
        };
        let decision = self.default.render(&scope);
        record(&mut trace, || TraceEntry::Default {
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

    /// Names of the rules whose conditions look at `source_ip`, for the server to warn when the
    /// source address may be a proxy's.
    pub fn source_ip_rules(&self) -> Vec<&str> {
        self.rules
            .iter()
            .filter(|rule| {
                rule.when.uses_source_ip()
                    || rule.require.as_ref().is_some_and(Condition::uses_source_ip)
            })
            .map(|rule| &*rule.name)
            .collect()
    }

    /// The 1-based path segments some lookup binds as a parameter: they may be credentials, so
    /// logs must not show them.
    pub fn secret_path_segments(&self) -> &[usize] {
        &self.secret_segments
    }

    /// The request's path as a log line may show it: the query (which may carry credentials)
    /// replaced by `?<redacted>`; when lookups bind path segments, the canonical path with
    /// those segments replaced by `<redacted>` (segments are counted on the canonical path, as
    /// the lookup counts them), or `<redacted>` alone when the path has no canonical form.
    /// Control characters are the logger's business.
    pub fn path_for_log(&self, request: &Request) -> String {
        let raw_query = request.path.split_once('?');
        let marker = if raw_query.is_some() {
            "?<redacted>"
        } else {
            ""
        };
        if self.secret_segments.is_empty() {
            let path = raw_query.map_or(request.path.as_str(), |(path, _)| path);
            return format!("{path}{marker}");
        }
        let Ok(canonical) = crate::prepare::path(request, &self.options) else {
            return "<redacted>".to_owned();
        };
        let path = canonical.split('?').next().unwrap_or_default();
        let mut index = 0;
        let segments: Vec<&str> = path
            .split('/')
            .map(|segment| {
                if segment.is_empty() {
                    return segment;
                }
                index += 1;
                if self.secret_segments.contains(&index) {
                    "<redacted>"
                } else {
                    segment
                }
            })
            .collect();
        format!("{}{marker}", segments.join("/"))
    }

    /// The `[databases.<name>]` tables, sorted by name, for the server to open pools.
    pub fn databases(&self) -> &[DatabaseSpec] {
        &self.databases
    }

    /// Every JWKS URL a rule uses (each once, in rule order), for the server to prefetch.
    pub fn jwks_urls(&self) -> Vec<&str> {
        let mut urls: Vec<&str> = Vec::new();
        for rule in &self.rules {
            if let Some(Credential {
                verifier: Verifier::Jwt(jwt),
                ..
            }) = &rule.credential
                && let JwtKeys::Url(url) = &jwt.keys
                && !urls.contains(&url.as_str())
            {
                urls.push(url);
            }
        }
        urls
    }

    /// Whether some rule runs a Rego policy: the transport then renders
    /// [`Request::opa_attributes`] from the message it received.
    pub fn needs_opa_attributes(&self) -> bool {
        self.has_rego
    }

    /// The Rego policy and data files the rules read at load, for a reloader to watch.
    pub fn rego_files(&self) -> Vec<&std::path::Path> {
        self.rules
            .iter()
            .filter_map(|rule| rule.rego.as_ref())
            .flat_map(|policy| policy.files.iter().map(std::path::PathBuf::as_path))
            .collect()
    }

    /// Whether some template uses `{{received}}`; the transport renders
    /// [`Request::received`] only when this is true.
    pub fn needs_received(&self) -> bool {
        self.needs_received
    }

    /// The number of rules (the default not counted).
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules (only the default decides).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether the default (no rule matched) is an allow, so a server can warn about an
    /// open-by-default policy.
    pub fn default_allows(&self) -> bool {
        matches!(self.default, Action::Allow(_))
    }
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

/// Adds an entry to the trace when there is one; the entry is not even built otherwise.
fn record(trace: &mut Option<&mut Trace>, entry: impl FnOnce() -> TraceEntry) {
    if let Some(trace) = trace.as_deref_mut() {
        trace.push(entry());
    }
}

/// Steps 2-5 of [`RuleSet::evaluate_traced`] for one rule whose `when` holds (step 1): its
/// decision, or `None` when `require` fails and the next rule should be tried. Records the
/// rule's steps when traced.
async fn try_rule(
    rule: &Rule,
    (raw, request): (&Request, &Request),
    hooks: &Hooks,
    mut trace: Option<&mut Trace>,
    failure: &mut Option<crate::decision::PolicyFailure>,
) -> Option<Decision> {
    let mut identity = Identity::default();
    let mut verified = None;
    if let Some(credential) = &rule.credential {
        match credential.verify(request, hooks).await {
            Ok(ok) => {
                identity.claims.clone_from(&ok.claims);
                verified = Some(ok);
            }
            Err(rejected) => {
                record(&mut trace, || TraceEntry::Credential {
                    rule: rule.name.to_string(),
                    source: credential.source.describe(),
                    outcome: match rejected {
                        Rejected::Missing => "missing".to_owned(),
                        Rejected::Invalid(reason) => format!("invalid: {reason}"),
                    },
                });
                return Some(deny(rule, &credential.on_failure, request, None));
            }
        }
    }
    if let Some(lookup) = &rule.lookup {
        let with_claims = Identity {
            claims: identity.claims.clone(),
            row: None,
        };
        match run_lookup(lookup, request, verified.as_ref(), hooks).await {
            Ok(Some(row)) => identity.row = Some(row),
            Ok(None) => {
                record(&mut trace, || TraceEntry::LookupNoRow {
                    rule: rule.name.to_string(),
                });
                let on_missing = &lookup.on_missing;
                return Some(deny(rule, on_missing, request, Some(&with_claims)));
            }
            Err(missing @ LookupFailure::MissingParam(_)) => {
                record(&mut trace, || TraceEntry::LookupSkipped {
                    rule: rule.name.to_string(),
                    reason: missing.to_string(),
                });
                let on_missing = &lookup.on_missing;
                return Some(deny(rule, on_missing, request, Some(&with_claims)));
            }
            Err(error) => {
                record(&mut trace, || TraceEntry::LookupFailed {
                    rule: rule.name.to_string(),
                    reason: error.to_string(),
                });
                let on_error = &lookup.on_db_error;
                return Some(deny(rule, on_error, request, Some(&with_claims)));
            }
        }
    }
    if let Some(require) = &rule.require {
        let held = match trace.as_deref_mut() {
            None => require.holds(request, Some(&identity)),
            Some(trace) => match require.check_with(request, Some(&identity)) {
                Ok(()) => true,
                Err(reason) => {
                    trace.push(TraceEntry::NoMatch {
                        rule: rule.name.to_string(),
                        require: true,
                        reason,
                    });
                    false
                }
            },
        };
        if !held {
            return None;
        }
    }
    if let Some(policy) = &rule.rego {
        // 5, for a `rego` rule: the policy decides (see `crate::rego::step`).
        let decision =
            crate::rego::step::decide(policy, &rule.name, raw, request, &identity, trace);
        *failure = decision.1;
        return Some(decision.0);
    }
    record(&mut trace, || TraceEntry::Matched {
        rule: rule.name.to_string(),
    });
    let scope = Scope {
        request,
        rule: &rule.name,
        identity: Some(&identity),
    };
    Some(rule.action.render(&scope))
}

/// Step 1: whether the rule's request-level `when` holds. Untraced, nothing is built; traced,
/// the first failing condition is recorded.
fn when_holds(rule: &Rule, request: &Request, trace: &mut Option<&mut Trace>) -> bool {
    match trace.as_deref_mut() {
        None => rule.when.holds(request, None),
        Some(trace) => match rule.when.check(request) {
            Ok(()) => true,
            Err(reason) => {
                trace.push(TraceEntry::NoMatch {
                    rule: rule.name.to_string(),
                    require: false,
                    reason,
                });
                false
            }
        },
    }
}

/// Binds the parameters and asks the hook. A parameter the request lacks means no row can match
/// it: the query is skipped and the caller decides as for "no row".
async fn run_lookup(
    lookup: &LookupSpec,
    request: &Request,
    verified: Option<&crate::credential::Verified>,
    hooks: &Hooks,
) -> Result<Option<std::sync::Arc<crate::hooks::Row>>, LookupFailure> {
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

#[cfg(test)]
mod tests {
    #[test]
    fn rule_set_is_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<super::RuleSet>();
    }

    #[test]
    fn logged_paths_hide_the_query_and_segments_a_lookup_binds() {
        let plain = crate::load::<toml::Table>("p.toml", "[default]\nallow = {}\n")
            .unwrap()
            .1;
        let request = |path: &str| crate::Request {
            path: path.to_owned(),
            ..crate::Request::default()
        };
        assert_eq!(
            plain.path_for_log(&request("/a/b?key=s3cret")),
            "/a/b?<redacted>"
        );
        assert_eq!(plain.path_for_log(&request("//a/../b")), "//a/../b");
        let keyed = r#"
[databases.main]
url = "sqlite::memory:"
[default]
deny = {}
[[rules]]
name = "key"
allow = {}
[rules.lookup]
database = "main"
query = "SELECT 1 FROM keys WHERE key = $1"
params = [{ path_segment = 2 }]
"#;
        let keyed = crate::load::<toml::Table>("p.toml", keyed).unwrap().1;
        assert_eq!(keyed.secret_path_segments(), [2]);
        assert_eq!(
            keyed.path_for_log(&request("/keys/s3cret/items?x=1")),
            "/keys/<redacted>/items?<redacted>"
        );
        // Counted as the lookup counts: on the canonical path.
        assert_eq!(
            keyed.path_for_log(&request("//keys/./s3cret")),
            "/keys/<redacted>"
        );
        assert_eq!(
            keyed.path_for_log(&request("/keys/s3cret%zz")),
            "<redacted>"
        );
    }

    /// The server awaits `evaluate` inside `Send` tasks.
    #[test]
    fn evaluate_future_is_send() {
        fn check<T: Send>(_: &T) {}
        let (_, rules) = crate::load::<toml::Table>("p.toml", "[default]\nallow = {}\n").unwrap();
        let request = crate::Request::default();
        let hooks = crate::Hooks::default();
        check(&rules.evaluate(&request, &hooks));
    }
}
