//! What a server reads from a compiled rule set besides decisions: which rules look at the
//! source address, which path segments are secret, the databases to open, the JWKS URLs to
//! prefetch, the Rego files to watch, and the rule set's shape.

use std::path::{Path, PathBuf};

use super::RuleSet;
use crate::action::Action;
use crate::credential::{Credential, JwtKeys, Verifier};
use crate::lookup::DatabaseSpec;
use crate::matcher::Condition;
use crate::request::Request;

impl RuleSet {
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
    pub fn rego_files(&self) -> Vec<&Path> {
        self.rules
            .iter()
            .filter_map(|rule| rule.rego.as_ref())
            .flat_map(|policy| policy.files.iter().map(PathBuf::as_path))
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
