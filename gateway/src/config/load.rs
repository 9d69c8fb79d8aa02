//! Reading a config: the file's text → [`raw`] (serde) → [`compile`] → [`Config`], with every
//! error placed at `file:line:col`.

use std::path::Path;

use super::compile;
use super::errors::{ConfigErrors, LoadError};
use super::overrides::Overrides;
use super::raw;
use super::validated::Config;

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
