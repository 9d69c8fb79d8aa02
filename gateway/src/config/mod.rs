//! Configuration: the TOML file ([`raw`]), the one conversion that validates it ([`compile`]) and the
//! validated types the proxy runs on ([`Config`]).
//!
//! After [`Config::from_toml`] nothing on the request path re-checks or re-parses configuration.

mod compile;
pub mod limits;
pub mod raw;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::ext_authz::{AuthzBackend, ExtAuthz};
use crate::route::RouteTable;
use crate::tls::ListenerTls;
use crate::upstream::Backend;

/// A validated gateway configuration.
#[derive(Debug)]
pub struct Config {
    /// The listeners, in file order.
    pub listeners: Vec<Listener>,
    /// Every route, in match precedence.
    pub routes: RouteTable,
    /// The admin endpoint's address, if any.
    pub admin: Option<SocketAddr>,
    /// The admin endpoint's limits.
    pub admin_limits: limits::Limits,
    /// The upstream services by name (kept across reloads when unchanged, pools included).
    pub backends: HashMap<String, Arc<Backend>>,
    /// The authorization servers by name (kept across reloads when unchanged, channels
    /// included).
    pub authz_backends: HashMap<String, Arc<AuthzBackend>>,
}

/// A validated listener and its gateway-level policies.
#[derive(Debug)]
pub struct Listener {
    /// The listener's name (what `kind = "Gateway"` policies target).
    pub name: String,
    /// The address to bind.
    pub address: SocketAddr,
    /// Connection, stream, header and timeout limits.
    pub limits: limits::Limits,
    /// Gateway-level ext_auth checks, run in file order before any route-level check.
    pub policies: Vec<Arc<ExtAuthz>>,
    /// TLS termination, when configured.
    pub tls: Option<Arc<ListenerTls>>,
    /// How requests on this listener are made canonical before routing and the check.
    pub canonical: crate::request::CanonicalOptions,
}

impl Config {
    /// Parses and validates `text`; `file` only names the source in error messages.
    pub fn from_toml(text: &str, file: &str) -> Result<Config, ConfigErrors> {
        Self::from_toml_with(text, file, &Overrides::default())
    }

    /// Like [`Config::from_toml`], with command-line overrides applied before validation.
    pub fn from_toml_with(
        text: &str,
        file: &str,
        overrides: &Overrides,
    ) -> Result<Config, ConfigErrors> {
        Self::from_toml_reusing(text, file, overrides, None)
    }

    /// Like [`Config::from_toml_with`]; backends and authorization servers whose settings did not
    /// change are taken over from `previous` with their connections (used by hot reload).
    pub fn from_toml_reusing(
        text: &str,
        file: &str,
        overrides: &Overrides,
        previous: Option<&Config>,
    ) -> Result<Config, ConfigErrors> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            ConfigErrors::new(file, text, vec![(offset, e.message().to_owned())])
        })?;
        compile::compile(raw, overrides, previous)
            .map_err(|errs| ConfigErrors::new(file, text, errs))
    }

    /// Reads and validates the file at `path`.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self::from_toml_with(
            &text,
            &path.display().to_string(),
            overrides,
        )?)
    }
}

/// Values given on the command line that replace what the file says, so tests and operators can
/// point a shipped config at other ports without editing it.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `(listener name or None for the first listener, address)`.
    pub listen: Vec<(Option<String>, String)>,
    /// `(backend name, url)`.
    pub backend_urls: Vec<(String, String)>,
    /// `(authz backend name, url)`.
    pub authz_urls: Vec<(String, String)>,
    /// The admin endpoint's address (adds one when the file has none).
    pub admin: Option<String>,
}

/// Reading the file failed, or its content is invalid.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The path as given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The content is invalid.
    #[error("{0}")]
    Invalid(#[from] ConfigErrors),
}

/// Every problem found in a config file, each with the place it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The problems, in file order.
    pub errors: Vec<ConfigError>,
}

/// One problem at one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file as named by the caller.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl ConfigErrors {
    fn new(file: &str, text: &str, mut errors: Vec<(usize, String)>) -> ConfigErrors {
        errors.sort_by_key(|(offset, _)| *offset);
        let errors = errors
            .into_iter()
            .map(|(offset, message)| {
                let (line, column) = line_col(text, offset);
                ConfigError {
                    file: file.to_owned(),
                    line,
                    column,
                    message,
                }
            })
            .collect();
        ConfigErrors { errors }
    }
}

impl std::error::Error for ConfigErrors {}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() + 1)
}

/// Parses `"200ms"`, `"2s"`, `"1m"`, `"1h"`; a bare number is not accepted, so the unit is never
/// guessed.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = digits.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "h" => Some(Duration::from_secs(n.checked_mul(3600)?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("200ms"), Some(Duration::from_millis(200)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("200"), None);
        assert_eq!(parse_duration("ms"), None);
        assert_eq!(parse_duration("1.5s"), None);
    }

    #[test]
    fn line_and_column_are_one_based() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
