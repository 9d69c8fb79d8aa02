//! The server's config file: the `[server]` table plus the rule policy the `rules` crate reads.

use std::net::SocketAddr;
use std::path::Path;

use rules::{ConfigErrors, RuleSet};
use serde::Deserialize;

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
}

impl Config {
    /// The built-in Istio-compatible default.
    pub fn builtin() -> Result<Self, LoadError> {
        Self::parse(BUILTIN_NAME, BUILTIN_CONFIG)
    }

    /// Reads and compiles a config file.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            file: file.clone(),
            source,
        })?;
        let mut config = Self::parse(&file, &text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.server.tls = config.server.tls.map(|tls| tls.relative_to(base));
        Ok(config)
    }

    /// Compiles config text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, LoadError> {
        let (server, rules) = rules::load::<ServerSection>(file, text)?;
        Ok(Self { server, rules })
    }
}
