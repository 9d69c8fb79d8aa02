//! The server's config file: the `[server]` table plus the rule policy the `rules` crate reads.

use std::net::SocketAddr;
use std::path::Path;

use rules::{ConfigErrors, FileRead, RuleSet};
use serde::Deserialize;

pub mod limits;
pub mod request;

/// The built-in default: the Istio `ext-authz` test service, written as rules.
pub const BUILTIN_CONFIG: &str = include_str!("../../config/istio-ext-authz.toml");

/// The name the built-in default reports in errors and logs.
pub const BUILTIN_NAME: &str = "<built-in istio-ext-authz.toml>";

/// The `[server]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Where gRPC Check (v3 and v2), health and reflection listen, e.g. `0.0.0.0:9000`.
    pub grpc: Option<SocketAddr>,
    /// Where Envoy's HTTP ext_authz mode listens, e.g. `0.0.0.0:8000`.
    pub http: Option<SocketAddr>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served, e.g. `0.0.0.0:9901`; off when unset.
    pub admin: Option<SocketAddr>,
    /// TLS (and optionally mutual TLS) on the gRPC port; plaintext when unset.
    pub tls: Option<crate::tls::TlsSection>,
    /// Match the canonical path (`true`, the default) or the path exactly as received (`false`,
    /// only when every proxy in front normalises). Envoy's `normalize_path`.
    pub normalize_path: Option<bool>,
    /// Merge repeated slashes before matching; default `true` (Envoy's `merge_slashes`).
    pub merge_slashes: Option<bool>,
    /// `%2F`, `%5C` and `\` in a path: `reject` (default: the default decision decides),
    /// `keep` (data) or `unescape` (a slash). Envoy's `path_with_escaped_slashes_action`.
    pub path_with_escaped_slashes_action: Option<rules::EscapedSlashes>,
    /// `;` in a path segment: `reject` (the default: no canonical form, so the `[default]`
    /// decides), `strip` (drop `;params` from each segment, as Tomcat, Jetty and Spring do) or
    /// `keep` (data, as Envoy treats it). Set it as the gateway's listener key is set.
    pub path_parameters: Option<rules::PathParameters>,
    /// HTTP mode: the `path_prefix` of Envoy's `http_service`, removed before matching; a
    /// request without it takes the default decision.
    pub path_prefix: Option<request::PathPrefix>,
    /// HTTP mode: proxies (CIDRs) whose `x-forwarded-for` names the client. Without it, the
    /// client address over HTTP mode is the TCP peer: the proxy.
    #[serde(default)]
    pub trusted_proxies: Vec<request::Cidr>,
    /// `[server.limits]`: connections, streams, header count and size, and timeouts on every
    /// listener (safe defaults named after Envoy's).
    #[serde(default)]
    pub limits: limits::LimitsSection,
}

impl ServerSection {
    /// How the rules read requests, from the keys above.
    pub fn request_options(&self) -> rules::RequestOptions {
        let defaults = rules::RequestOptions::default();
        rules::RequestOptions {
            normalize_path: self.normalize_path.unwrap_or(defaults.normalize_path),
            path: rules::PathOptions {
                merge_slashes: self.merge_slashes.unwrap_or(defaults.path.merge_slashes),
                escaped_slashes: self
                    .path_with_escaped_slashes_action
                    .unwrap_or(defaults.path.escaped_slashes),
                path_parameters: self
                    .path_parameters
                    .unwrap_or(defaults.path.path_parameters),
            },
            http_path_prefix: self
                .path_prefix
                .as_ref()
                .map(|prefix| prefix.0.clone())
                .unwrap_or_default(),
            trusted_proxies: self.trusted_proxies.iter().map(|cidr| cidr.0).collect(),
        }
    }
}

/// A config file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {file}: {source}")]
    Read {
        /// The path given.
        file: String,
        /// The OS's reason.
        source: std::io::Error,
    },
    /// The file was read but is not a valid config; every problem is listed.
    #[error("{0}")]
    Invalid(#[from] ConfigErrors),
}

/// A loaded config: where to listen and what to decide.
pub struct Config {
    /// The `[server]` table.
    pub server: ServerSection,
    /// The compiled rules.
    pub rules: RuleSet,
    /// The files this config was loaded from (the config file first, then the Rego files its
    /// rules read), each with a digest of the bytes read: where a reloader starts comparing.
    pub files: Vec<FileRead>,
}

impl Config {
    /// The built-in Istio-compatible default.
    pub fn builtin() -> Result<Self, LoadError> {
        Self::parse(BUILTIN_NAME, BUILTIN_CONFIG)
    }

    /// Reads and compiles a config file.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        Self::load_reading(path).0
    }

    /// [`Config::load`], also saying which files the attempt read (the config file first) with a
    /// digest of the bytes read, whether or not it compiled: a refused load is retried when one
    /// of them changes.
    pub fn load_reading(path: &Path) -> (Result<Self, LoadError>, Vec<FileRead>) {
        let file = path.display().to_string();
        let bytes = std::fs::read(path);
        let mut files = vec![FileRead {
            path: path.to_path_buf(),
            digest: bytes.as_deref().ok().map(rules::digest),
        }];
        let text = bytes.and_then(|bytes| {
            String::from_utf8(bytes).map_err(|error| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, error.utf8_error())
            })
        });
        let text = match text {
            Ok(text) => text,
            Err(source) => return (Err(LoadError::Read { file, source }), files),
        };
        let loading = rules::load_reading::<ServerSection>(&file, &text);
        files.extend(loading.files);
        let result = loading
            .result
            .map_err(LoadError::from)
            .map(|(server, rules)| {
                let mut config = Self::compiled(server, rules);
                let base = path.parent().unwrap_or(Path::new("."));
                config.server.tls = config.server.tls.map(|tls| tls.relative_to(base));
                config.files.clone_from(&files);
                config
            });
        (result, files)
    }

    /// Compiles config text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, LoadError> {
        let (server, rules) = rules::load::<ServerSection>(file, text)?;
        Ok(Self::compiled(server, rules))
    }

    fn compiled(server: ServerSection, rules: RuleSet) -> Self {
        let rules = rules.with_request_options(server.request_options());
        Self {
            server,
            rules,
            files: Vec::new(),
        }
    }

    /// What is legal but probably wrong, one sentence each, for the log and `validate`.
    /// `serves_http`: whether HTTP mode will listen (from the file or the command line).
    pub fn warnings(&self, serves_http: bool) -> Vec<String> {
        let mut warnings = Vec::new();
        if serves_http && self.server.trusted_proxies.is_empty() {
            for rule in self.rules.source_ip_rules() {
                warnings.push(format!(
                    "rule `{rule}` matches source_ip, but over HTTP mode the source is the TCP \
                     peer (the proxy), not the client; set [server] trusted_proxies to take the \
                     client from x-forwarded-for"
                ));
            }
        }
        warnings
    }
}
