//! Field checks every compile step shares: an integer in range with a default, exactly one of
//! several alternatives, and paths relative to the policy file.

use std::path::PathBuf;

use toml::Spanned;

use super::Compiler;
use crate::error::Invalid;

impl Compiler<'_> {
    /// An optional integer in `min..=max`, `default` when absent.
    pub(super) fn integer(
        &mut self,
        field: &'static str,
        raw: Option<&Spanned<i64>>,
        default: i64,
        min: i64,
        max: i64,
        range: &'static str,
    ) -> Option<i64> {
        let Some(raw) = raw else {
            return Some(default);
        };
        let value = *raw.get_ref();
        if (min..=max).contains(&value) {
            Some(value)
        } else {
            self.fail(
                raw.span().start,
                Invalid::OutOfRange {
                    field,
                    value,
                    range,
                },
            );
            None
        }
    }

    /// Exactly one of several optional fields, reported at `offset` otherwise.
    pub(super) fn exactly_one(
        &mut self,
        offset: usize,
        what: &'static str,
        expected: &'static str,
        given: &[(&str, bool)],
    ) -> bool {
        let found: Vec<String> = given
            .iter()
            .filter(|(_, present)| *present)
            .map(|(name, _)| format!("`{name}`"))
            .collect();
        if found.len() == 1 {
            return true;
        }
        let found = match found.len() {
            0 => "none".to_owned(),
            n => format!("{n} ({})", found.join(", ")),
        };
        self.fail(
            offset,
            Invalid::OneOf {
                what,
                expected,
                found,
            },
        );
        false
    }

    /// A path from the config, relative to the policy file's directory.
    pub(super) fn config_path(&self, relative: &str) -> PathBuf {
        self.base_dir.join(relative)
    }
}
