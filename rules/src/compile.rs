//! The one boundary from raw config to a compiled [`RuleSet`]: every regex, CIDR, template and
//! header name is checked and compiled here, and every problem is collected with its position
//! rather than stopping at the first. Nothing after this boundary re-checks or re-parses.

mod actions;
mod conditions;
mod credential;
mod database;
mod fields;
mod jwt;
mod lookup;

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml::Spanned;

use crate::config::{RawDefault, RawDocument, RawRule};
use crate::engine::{Rule, RuleSet};
use crate::error::{ConfigError, ConfigErrors, Invalid, Locator};
use crate::files::FileRead;
use crate::lookup::DatabaseSpec;
use crate::template::{Namespaces, Template};

/// At most this many rules in one policy.
pub const MAX_RULES: usize = 10_000;

/// At most this many levels of `all`/`any`/`not` nesting.
pub const MAX_NESTING: usize = 32;

/// Parses and compiles a policy document.
///
/// The optional top-level `[server]` table is deserialized as `S` (its own serde attributes
/// decide what it accepts) and defaults when absent; everything else is the policy described in
/// `docs/rules.md`. A TOML syntax or type error is reported alone, at the position toml gives;
/// semantic errors (bad regex, bad CIDR, duplicate rule names, ...) are all reported together.
///
/// `file` names the policy in errors, and its directory is where relative `api_keys.file` and
/// `jwks_file` paths are read from (at load; the engine does no I/O per request).
///
/// ```
/// let policy = r#"
/// [default]
/// deny = { status = 403, body = "no rule matched" }
///
/// [[rules]]
/// name = "health"
/// when = { path = { exact = "/healthz" } }
/// allow = {}
/// "#;
/// let (server, rules): (toml::Table, rules::RuleSet) = rules::load("policy.toml", policy).unwrap();
/// assert!(server.is_empty());
/// assert_eq!(rules.len(), 1);
/// ```
pub fn load<S>(file: &str, text: &str) -> Result<(S, RuleSet), ConfigErrors>
where
    S: DeserializeOwned + Default,
{
    load_reading(file, text).result
}

/// What [`load_reading`] made of a policy, and the files it read for it.
#[derive(Debug)]
pub struct Loading<S> {
    /// The policy, or every problem with it.
    pub result: Result<(S, RuleSet), ConfigErrors>,
    /// Each file the load read (Rego policy and data files), with a digest of the bytes read,
    /// whether or not the policy compiled: a reloader retries a refused load when one changes.
    pub files: Vec<FileRead>,
}

/// [`load`], also saying which files were read and what they held.
pub fn load_reading<S>(file: &str, text: &str) -> Loading<S>
where
    S: DeserializeOwned + Default,
{
    let at = Locator::new(file, text);
    let document: RawDocument<S> = match toml::from_str(text) {
        Ok(document) => document,
        Err(error) => {
            return Loading {
                result: Err(ConfigErrors(vec![at.syntax(&error)])),
                files: Vec::new(),
            };
        }
    };
    let RawDocument {
        server,
        databases,
        default,
        rules,
    } = document;
    let base_dir = Path::new(file).parent().map(Path::to_path_buf);
    let mut compiler = Compiler::new(at, base_dir.unwrap_or_default());
    let databases = compiler.databases(&databases);
    let rule_set = compiler.rule_set(default.as_ref(), &rules, databases);
    let files = std::mem::take(&mut compiler.reads);
    let result = match rule_set {
        Some(rule_set) if compiler.errors.is_empty() => Ok((server.unwrap_or_default(), rule_set)),
        _ => Err(compiler.finish()),
    };
    Loading { result, files }
}

/// Collects errors while compiling. Each step returns `None` after recording why, and callers
/// keep going so one load reports every problem.
pub(crate) struct Compiler<'a> {
    at: Locator<'a>,
    errors: Vec<ConfigError>,
    uses_received: bool,
    /// Where relative key and JWKS files are read from.
    base_dir: PathBuf,
    /// Names declared under `[databases]`.
    database_names: Vec<String>,
    /// The identity variables templates compiled now may use.
    namespaces: Namespaces,
    /// Whether `claims` / `db` conditions may appear where conditions are compiled now
    /// (`None`: in a request-level `when`, where neither may).
    identity_conditions: Option<Namespaces>,
    /// The Rego files read so far, with digests of what was read.
    reads: Vec<FileRead>,
    /// How header value conditions compiled now read a value joined from several copies: any
    /// copy where holding leads to a deny, every copy where it leads to an allow. Method
    /// conditions follow it: a standard method in another case counts where it is `Any`.
    header_copies: crate::matcher::Copies,
}

impl<'a> Compiler<'a> {
    fn new(at: Locator<'a>, base_dir: PathBuf) -> Self {
        Self {
            at,
            errors: Vec::new(),
            uses_received: false,
            base_dir,
            database_names: Vec::new(),
            namespaces: Namespaces::REQUEST,
            identity_conditions: None,
            reads: Vec::new(),
            header_copies: crate::matcher::Copies::Every,
        }
    }

    /// Records an error at a byte offset.
    fn fail(&mut self, offset: usize, invalid: Invalid) {
        self.errors.push(self.at.error(offset, invalid));
    }

    /// All errors, in document order. Never empty: a step that failed without saying why would
    /// be a bug, and it must still reject the config rather than load half of it.
    fn finish(mut self) -> ConfigErrors {
        if self.errors.is_empty() {
            let message = "policy rejected without a specific reason (please report this)";
            self.errors.push(self.at.error(0, message));
        }
        self.errors.sort_by_key(|error| (error.line, error.column));
        ConfigErrors(self.errors)
    }

    fn rule_set(
        &mut self,
        default: Option<&Spanned<RawDefault>>,
        raw_rules: &[Spanned<RawRule>],
        databases: Vec<DatabaseSpec>,
    ) -> Option<RuleSet> {
        if let Some(extra) = raw_rules.get(MAX_RULES) {
            self.fail(
                extra.span().start,
                Invalid::TooManyRules {
                    count: raw_rules.len(),
                    max: MAX_RULES,
                },
            );
        }
        let mut first_seen: HashMap<&str, usize> = HashMap::new();
        let mut rules = Vec::with_capacity(raw_rules.len().min(MAX_RULES));
        let mut all_ok = true;
        for raw in raw_rules.iter().take(MAX_RULES) {
            let name = &raw.get_ref().name;
            if let Some(&first) = first_seen.get(name.get_ref().as_str()) {
                let (first_line, _) = self.at.line_col(first);
                self.fail(
                    name.span().start,
                    Invalid::DuplicateRule {
                        name: name.get_ref().clone(),
                        first_line,
                    },
                );
            } else {
                first_seen.insert(name.get_ref(), name.span().start);
            }
            match self.rule(raw) {
                Some(rule) => rules.push(rule),
                None => all_ok = false,
            }
        }
        let default = match default {
            Some(default) => {
                let RawDefault { allow, deny } = default.get_ref();
                self.decision("`[default]`", default.span().start, allow, deny)
            }
            None => {
                self.fail(0, Invalid::MissingDefault);
                None
            }
        };
        let default = default?;
        all_ok.then(|| RuleSet::new(rules, default, self.uses_received, databases))
    }

    fn rule(&mut self, raw: &Spanned<RawRule>) -> Option<Rule> {
        let RawRule {
            name,
            shadow,
            when,
            credential,
            lookup,
            require,
            allow,
            deny,
            rego,
        } = raw.get_ref();
        let name_ok = self.rule_name(name);
        self.identity_conditions = None;
        // A deny rule's conditions lead to a deny when they hold; every other rule's (allow,
        // Rego) may lead to an allow. `require` reads the same way.
        self.header_copies = if deny.is_some() {
            crate::matcher::Copies::Any
        } else {
            crate::matcher::Copies::Every
        };
        let when = match when {
            Some(when) => self.when(when, 0),
            None => Some(crate::matcher::Condition::All(Vec::new())),
        };
        let credential = credential.as_ref().map(|c| self.credential(c));
        let has_jwt = credential_is_jwt(raw.get_ref());
        if let Some(unchecked) = unchecked_credential(raw.get_ref()) {
            self.fail(unchecked, Invalid::UncheckedCredential);
        }
        let lookup = lookup
            .as_ref()
            .map(|l| self.lookup(l, credential.is_some(), has_jwt));
        let available = Namespaces {
            claims: has_jwt,
            db: lookup.is_some(),
        };
        self.identity_conditions = Some(available);
        let require = require.as_ref().map(|r| self.when(r, 0));
        self.identity_conditions = None;
        self.namespaces = available;
        let owner = format!("rule `{}`", name.get_ref());
        let (action, rego) = match rego {
            None => (self.decision(&owner, name.span().start, allow, deny), None),
            Some(rego) => self.rego(&owner, rego, allow, deny),
        };
        self.namespaces = Namespaces::REQUEST;
        Some(Rule {
            name: name.get_ref().as_str().into(),
            shadow: *shadow,
            when: when?,
            credential: optional(credential)?,
            lookup: optional(lookup)?,
            require: optional(require)?,
            action: action?,
            rego: optional(rego)?,
        })
        .filter(|_| name_ok)
    }

    /// Whether a rule's name is usable: not empty, and not `default` (the name traces and
    /// `{{rule.name}}` give the default).
    fn rule_name(&mut self, name: &Spanned<String>) -> bool {
        let invalid = match name.get_ref().as_str() {
            "" => Invalid::EmptyRuleName,
            "default" => Invalid::ReservedRuleName,
            _ => return true,
        };
        self.fail(name.span().start, invalid);
        false
    }

    /// A `rego` rule: the policy compiled, and the fail-closed deny (403, `PERMISSION_DENIED`)
    /// as the rule's action. The policy decides, so `allow` / `deny` may not be given too.
    #[allow(clippy::type_complexity)]
    fn rego(
        &mut self,
        owner: &str,
        raw: &Spanned<crate::config::RawRego>,
        allow: &Option<Spanned<crate::config::RawAllow>>,
        deny: &Option<Spanned<crate::config::RawDeny>>,
    ) -> (
        Option<crate::action::Action>,
        Option<Option<crate::rego::SharedPolicy>>,
    ) {
        if let Some(offset) = allow
            .as_ref()
            .map(|a| a.span().start)
            .or_else(|| deny.as_ref().map(|d| d.span().start))
        {
            let message = format!(
                "{owner}: a `rego` policy decides, so `allow` / `deny` cannot be given too"
            );
            self.errors.push(self.at.error(offset, message));
        }
        let action = self
            .deny(&crate::config::RawDeny::default(), 403, 7)
            .map(crate::action::Action::Deny);
        let policy = match crate::rego::compile(&self.at, &self.base_dir, raw, &mut self.reads) {
            Ok(policy) => Some(std::sync::Arc::new(policy)),
            Err(errors) => {
                self.errors.extend(errors);
                None
            }
        };
        (action, Some(policy))
    }

    /// Compiles a template, mapping an error inside it to its position in the file.
    fn template(&mut self, raw: &Spanned<String>) -> Option<Template> {
        match Template::parse_in(raw.get_ref(), self.namespaces) {
            Ok(template) => {
                self.uses_received |= template.uses_received();
                Some(template)
            }
            Err(fault) => {
                let offset = string_offset(self.at.text(), raw.span(), fault.at);
                self.fail(offset, fault.error.into());
                None
            }
        }
    }
}

/// An optional part that compiled (`Some(Some)`), was absent (`Some(None)`) or failed (`None`).
fn optional<T>(part: Option<Option<T>>) -> Option<Option<T>> {
    match part {
        None => Some(None),
        Some(compiled) => compiled.map(Some),
    }
}

/// The offset of a credential with no verifier of its own that no lookup parameter checks.
fn unchecked_credential(raw: &RawRule) -> Option<usize> {
    let credential = raw.credential.as_ref()?;
    let c = credential.get_ref();
    if c.api_keys.is_some() || c.bearer.is_some() || c.jwt.is_some() {
        return None;
    }
    let checked = raw.lookup.as_ref().is_some_and(|lookup| {
        lookup
            .get_ref()
            .params
            .iter()
            .any(|param| param.get_ref().credential.is_some())
    });
    (!checked).then(|| credential.span().start)
}

/// Whether the rule's raw credential is a `jwt` one (so claims are in scope even when the
/// credential itself failed to compile, and its errors don't cascade into template errors).
fn credential_is_jwt(raw: &RawRule) -> bool {
    raw.credential
        .as_ref()
        .is_some_and(|c| c.get_ref().jwt.is_some())
}

/// The byte offset in the document of byte `index` of a string value whose literal spans
/// `span`. Exact for literal strings and for basic strings without escapes; otherwise the start
/// of the literal.
fn string_offset(text: &str, span: Range<usize>, index: usize) -> usize {
    let raw = text.get(span.clone()).unwrap_or_default();
    let (open, escapes) = if raw.starts_with("'''") {
        (3, false)
    } else if raw.starts_with("\"\"\"") {
        (3, true)
    } else if raw.starts_with('\'') {
        (1, false)
    } else if raw.starts_with('"') {
        (1, true)
    } else {
        return span.start;
    };
    if escapes && raw.contains('\\') {
        return span.start;
    }
    // A newline right after a multi-line string's opening quotes is not part of the value.
    let after_open = raw.get(open..).unwrap_or_default();
    let trimmed = if open == 3 && after_open.starts_with("\r\n") {
        2
    } else if open == 3 && after_open.starts_with('\n') {
        1
    } else {
        0
    };
    span.start + open + trimmed + index
}

#[cfg(test)]
mod tests {
    use super::string_offset;

    #[test]
    fn string_offset_maps_into_literals() {
        let text = r#"a = "x{{y}}""#;
        assert_eq!(string_offset(text, 4..12, 1), 6);
        let text = "a = '''\nx{{y}}'''";
        assert_eq!(string_offset(text, 4..17, 1), 9);
        let text = r#"a = "\tx{{y}}""#;
        assert_eq!(string_offset(text, 4..14, 2), 4);
    }
}
