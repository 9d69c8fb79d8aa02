//! The compiled rule set and the one function that decides.

use crate::action::Action;
use crate::decision::Evaluation;
use crate::matcher::Condition;
use crate::request::Request;
use crate::template::Scope;

/// One compiled rule.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    /// Unique name.
    pub name: String,
    /// The rule's `when`, as an [`Condition::All`].
    pub when: Condition,
    /// What the rule does when it matches.
    pub action: Action,
}

/// A compiled policy: rules in file order plus the explicit default. Immutable, `Send + Sync`,
/// cheap to share in an `Arc`; built only by [`crate::load`].
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<Rule>,
    default: Action,
    needs_received: bool,
}

/// The name `{{rule.name}}` renders and the trace shows when no rule matched.
const DEFAULT_NAME: &str = "default";

impl RuleSet {
    /// Assembles a compiled rule set (the compile boundary is the only caller).
    pub(crate) fn new(rules: Vec<Rule>, default: Action, needs_received: bool) -> Self {
        Self {
            rules,
            default,
            needs_received,
        }
    }

    /// Decides one request. This is the only place precedence lives:
    ///
    /// 1. rules are tried in file order, and the **first** whose `when` holds decides;
    /// 2. when none holds, the `[default]` table (which the config must spell out) decides.
    ///
    /// Evaluation is pure and infallible: conditions either hold or not (a missing header,
    /// address or principal makes a value condition fail, never succeed), and rendering a
    /// template cannot fail, so there is no error path that could turn into an allow.
    ///
    /// ```
    /// use rules::{Decision, Request};
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
    /// let evaluation = rules.decide(&Request::default());
    /// assert!(!evaluation.decision.is_allow());
    /// assert_eq!(evaluation.trace.last().map(String::as_str), Some("default: deny"));
    /// ```
    pub fn decide(&self, request: &Request) -> Evaluation {
        let mut trace = Vec::with_capacity(self.rules.len().min(64) + 1);
        for rule in &self.rules {
            match rule.when.check(request) {
                Ok(()) => {
                    trace.push(format!("rule {:?}: matched", rule.name));
                    let scope = Scope {
                        request,
                        rule: &rule.name,
                    };
                    return Evaluation {
                        decision: rule.action.render(&scope),
                        rule: Some(rule.name.clone()),
                        trace,
                    };
                }
                Err(reason) => trace.push(format!("rule {:?}: no match: {reason}", rule.name)),
            }
        }
        let scope = Scope {
            request,
            rule: DEFAULT_NAME,
        };
        let decision = self.default.render(&scope);
        trace.push(format!("{DEFAULT_NAME}: {}", decision.outcome()));
        Evaluation {
            decision,
            rule: None,
            trace,
        }
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

#[cfg(test)]
mod tests {
    #[test]
    fn rule_set_is_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<super::RuleSet>();
    }
}
