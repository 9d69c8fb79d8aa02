//! The raw policy model: exactly what the TOML says, before any validation. `docs/rules.md` is the
//! reference for every field; [`crate::compile`] turns this into the compiled [`crate::RuleSet`].

mod action;
mod auth;
mod list;
mod rego;

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

pub(crate) use action::{
    ActionName, RawAllow, RawDeny, RawGrpcCode, RawHeaderValue, RawQueryParam, RawRequestHeader,
    RawResponseHeader,
};
pub(crate) use auth::{
    RawClaimMatch, RawCredential, RawDatabase, RawDbMatch, RawJwt, RawKeyList, RawLookup,
    RawOnError, RawOnFailure, RawParam, RawSource,
};
pub(crate) use list::OneOrMany;
pub(crate) use rego::RawRego;

/// The whole policy document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "S: Deserialize<'de>"))]
pub(crate) struct RawDocument<S> {
    /// The embedding server's own settings; opaque to the rule engine.
    #[serde(default)]
    pub server: Option<S>,
    /// Named databases that rule lookups query.
    #[serde(default)]
    pub databases: BTreeMap<String, Spanned<RawDatabase>>,
    /// What happens when no rule matches. Required (checked at compile so the error is clear).
    #[serde(default)]
    pub default: Option<Spanned<RawDefault>>,
    /// The rules, evaluated in file order.
    #[serde(default)]
    pub rules: Vec<Spanned<RawRule>>,
}

/// The `[default]` table: exactly one of `allow` / `deny`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDefault {
    /// Allow, with these mutations, when no rule matches.
    pub allow: Option<Spanned<RawAllow>>,
    /// Deny, with this response, when no rule matches.
    pub deny: Option<Spanned<RawDeny>>,
}

/// One `[[rules]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    /// Unique name, shown in traces and available as `{{rule.name}}`.
    pub name: Spanned<String>,
    /// A shadow rule is evaluated, logged and counted as if enforced, but never decides: the
    /// next rules go on as if it had not matched. For trialling a rule on live traffic.
    #[serde(default)]
    pub shadow: bool,
    /// Conditions that must all hold; absent or empty means the rule always matches.
    #[serde(default)]
    pub when: Option<Spanned<RawWhen>>,
    /// A credential verified after `when` holds; missing or invalid decides `on_failure`.
    pub credential: Option<Spanned<RawCredential>>,
    /// A database lookup run after the credential; its row feeds `require` and templates.
    pub lookup: Option<Spanned<RawLookup>>,
    /// Identity-level conditions (`when` plus `claims` and `db`); failing ones pass the request
    /// on to the next rule.
    pub require: Option<Spanned<RawWhen>>,
    /// Allow with these mutations when the rule matches.
    pub allow: Option<Spanned<RawAllow>>,
    /// Deny with this response when the rule matches.
    pub deny: Option<Spanned<RawDeny>>,
    /// A Rego policy that decides instead of `allow` / `deny` (see `docs/rules.md`, "Coming
    /// from OPA-Envoy").
    pub rego: Option<Spanned<RawRego>>,
}

/// A `when` table: every listed condition must hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWhen {
    /// Which API delivered the check.
    pub transport: Option<TransportName>,
    /// Accepted methods, case-sensitive; where holding leads to a deny, a standard method in
    /// another case counts as its upper-case name (`matcher::MethodCase`).
    pub method: Option<Spanned<OneOrMany>>,
    /// Matcher on the path without its query string.
    pub path: Option<Spanned<RawStringMatch>>,
    /// Matcher on the authority.
    pub host: Option<Spanned<RawStringMatch>>,
    /// Matcher on the source principal (client certificate identity).
    pub principal: Option<Spanned<RawStringMatch>>,
    /// Accepted protocols, e.g. `HTTP/1.1`, exact.
    pub protocol: Option<Spanned<OneOrMany>>,
    /// CIDRs the source IP must be in (any of them).
    pub source_ip: Option<Spanned<OneOrMany>>,
    /// CIDRs the destination IP must be in (any of them).
    pub destination_ip: Option<Spanned<OneOrMany>>,
    /// Header conditions, all of which must hold.
    #[serde(default)]
    pub headers: Vec<Spanned<RawHeaderMatch>>,
    /// Context-extension conditions, all of which must hold.
    #[serde(default)]
    pub context_extensions: Vec<Spanned<RawHeaderMatch>>,
    /// Nested `when` tables that must all hold.
    #[serde(default)]
    pub all: Vec<Spanned<RawWhen>>,
    /// Nested `when` tables of which at least one must hold.
    #[serde(default)]
    pub any: Vec<Spanned<RawWhen>>,
    /// A nested `when` table that must not hold.
    pub not: Option<Box<Spanned<RawWhen>>>,
    /// Conditions on the verified JWT's claims (only in `require`).
    #[serde(default)]
    pub claims: Vec<Spanned<RawClaimMatch>>,
    /// Conditions on the lookup's row (only in `require`).
    #[serde(default)]
    pub db: Vec<Spanned<RawDbMatch>>,
}

/// The two transports, by their config names.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TransportName {
    /// gRPC `Check` (v3 or v2).
    Grpc,
    /// Envoy's HTTP ext_authz mode.
    Http,
}

/// A string matcher: exactly one operation, optionally case-insensitive.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStringMatch {
    /// The whole value equals this.
    pub exact: Option<Spanned<String>>,
    /// The value starts with this.
    pub prefix: Option<Spanned<String>>,
    /// The value ends with this.
    pub suffix: Option<Spanned<String>>,
    /// The value contains this.
    pub contains: Option<Spanned<String>>,
    /// The whole value matches this regex (anchored at both ends).
    pub regex: Option<Spanned<String>>,
    /// Compare ASCII letters case-insensitively.
    #[serde(default)]
    pub ignore_case: bool,
}

/// A header or context-extension matcher: a name plus exactly one operation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaderMatch {
    /// Header name (case-insensitive) or context-extension key (case-sensitive).
    pub name: Spanned<String>,
    /// The value equals this.
    pub exact: Option<Spanned<String>>,
    /// The value starts with this.
    pub prefix: Option<Spanned<String>>,
    /// The value ends with this.
    pub suffix: Option<Spanned<String>>,
    /// The value contains this.
    pub contains: Option<Spanned<String>>,
    /// The whole value matches this regex (anchored at both ends).
    pub regex: Option<Spanned<String>>,
    /// `true`: the entry must be present; `false`: it must be absent.
    pub present: Option<bool>,
    /// `true`: the entry must be absent; `false`: it must be present.
    pub absent: Option<bool>,
    /// Compare ASCII letters case-insensitively.
    #[serde(default)]
    pub ignore_case: bool,
}
