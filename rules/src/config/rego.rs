//! The raw `rego = { ... }` table of a rule: a Rego policy that decides in the rule's place.

use serde::Deserialize;
use toml::Spanned;

/// `rego = { files = [...], query = "data.envoy.authz.allow" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRego {
    /// `.rego` policy files, relative to the config file's directory.
    pub files: Vec<Spanned<String>>,
    /// JSON data files merged into `data` at its root, relative to the config file's directory.
    #[serde(default)]
    pub data: Vec<Spanned<String>>,
    /// The rule whose value is the decision, as OPA-Envoy's `path`/`query` names it; default
    /// `data.envoy.authz.allow`.
    pub query: Option<Spanned<String>>,
    /// Wall-clock budget of one evaluation in milliseconds (1..=10000); default 50.
    pub timeout_ms: Option<Spanned<i64>>,
    /// Parse the policies as Rego v0 (OPA before 1.0, `opa run --v0-compatible`); default false.
    #[serde(default)]
    pub v0_compatible: bool,
}
