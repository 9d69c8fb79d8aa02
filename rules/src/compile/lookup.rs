//! Compiling `[rules.lookup]`: the database named, the SQL's `$n` placeholders checked against
//! the parameters, each parameter's source, the time and cache bounds, and the denies for no row
//! and for a database failure. The query runs through the caller's lookup hook (see
//! `crate::hooks`), never here.

use std::time::Duration;

use toml::Spanned;

use super::Compiler;
use crate::action::DenyAction;
use crate::config::{RawDeny, RawLookup, RawOnError, RawParam};
use crate::error::Invalid;
use crate::hooks::{LookupPolicy, OnLookupError};
use crate::identity::ClaimPath;
use crate::lookup::{LookupSpec, MAX_PARAMS, MAX_SQL_BYTES, Param, ParamSource};
use crate::template::Namespaces;

const PARAM_SOURCES: &str = "`credential`, `header`, `claim`, `path_segment`";

/// A day in seconds: the longest cache, negative-cache and serve-stale time.
const DAY: i64 = 86_400;

impl Compiler<'_> {
    /// A compiled `[rules.lookup]`.
    pub(super) fn lookup(
        &mut self,
        raw: &Spanned<RawLookup>,
        has_credential: bool,
        has_jwt: bool,
    ) -> Option<LookupSpec> {
        let RawLookup {
            database,
            query,
            params,
            timeout_ms,
            cache_ttl_seconds,
            negative_ttl_seconds,
            on_error,
            on_missing,
            on_db_error,
        } = raw.get_ref();
        let ok = self.lookup_query(raw.span().start, database, query, params.len());
        let compiled: Vec<Option<Param>> = params
            .iter()
            .map(|p| self.param(p, has_credential, has_jwt))
            .collect();
        let policy = self.lookup_policy(
            timeout_ms.as_ref(),
            cache_ttl_seconds.as_ref(),
            negative_ttl_seconds.as_ref(),
            on_error.as_ref(),
        );
        let denies = self.lookup_denies(on_missing.as_ref(), on_db_error.as_ref(), has_jwt);
        let params: Vec<Param> = compiled.into_iter().collect::<Option<_>>()?;
        let (policy, (on_missing, on_db_error)) = (policy?, denies?);
        ok.then(|| LookupSpec {
            database: database.get_ref().clone(),
            sql: query.get_ref().clone(),
            params,
            policy,
            on_missing,
            on_db_error,
        })
    }

    /// Whether the database is declared, the SQL is neither empty nor too long, and its
    /// placeholders match the `count` parameters (`offset`: the lookup table, for too many).
    fn lookup_query(
        &mut self,
        offset: usize,
        database: &Spanned<String>,
        query: &Spanned<String>,
        count: usize,
    ) -> bool {
        let mut ok = true;
        if !self.database_names.contains(database.get_ref()) {
            ok = false;
            let known = if self.database_names.is_empty() {
                "no `[databases.<name>]` table is declared".to_owned()
            } else {
                format!("declared: {}", self.database_names.join(", "))
            };
            let name = database.get_ref().clone();
            self.fail(
                database.span().start,
                Invalid::UnknownDatabase { name, known },
            );
        }
        let sql = query.get_ref();
        if sql.trim().is_empty() {
            ok = false;
            self.fail(query.span().start, Invalid::EmptySql);
        } else if sql.len() > MAX_SQL_BYTES {
            ok = false;
            let (len, max) = (sql.len(), MAX_SQL_BYTES);
            self.fail(query.span().start, Invalid::SqlTooLong { len, max });
        }
        if count > MAX_PARAMS {
            let max = MAX_PARAMS;
            self.fail(offset, Invalid::TooManyParams { count, max });
            return false;
        }
        ok && self.placeholders(query, count)
    }

    /// The time and cache bounds and what to do when the database fails.
    fn lookup_policy(
        &mut self,
        timeout_ms: Option<&Spanned<i64>>,
        cache_ttl_seconds: Option<&Spanned<i64>>,
        negative_ttl_seconds: Option<&Spanned<i64>>,
        on_error: Option<&Spanned<RawOnError>>,
    ) -> Option<LookupPolicy> {
        let timeout = self.integer("timeout_ms", timeout_ms, 200, 1, 60_000, "1..=60000");
        let cache = self.integer(
            "cache_ttl_seconds",
            cache_ttl_seconds,
            30,
            0,
            DAY,
            "0..=86400",
        );
        let negative = self.integer(
            "negative_ttl_seconds",
            negative_ttl_seconds,
            5,
            0,
            DAY,
            "0..=86400",
        );
        let on_error = match on_error {
            None => Some(OnLookupError::FailClosed),
            Some(raw) => self.on_lookup_error(raw),
        };
        Some(LookupPolicy {
            timeout: Duration::from_millis(u64::try_from(timeout?).ok()?),
            cache_ttl: secs(cache?),
            negative_ttl: secs(negative?),
            on_error: on_error?,
        })
    }

    /// `on_error`: `"fail_closed"` or `{ serve_stale_seconds = n }`.
    fn on_lookup_error(&mut self, raw: &Spanned<RawOnError>) -> Option<OnLookupError> {
        match raw.get_ref() {
            RawOnError::Name(name) if name == "fail_closed" => Some(OnLookupError::FailClosed),
            RawOnError::Name(name) => {
                let name = name.clone();
                self.fail(raw.span().start, Invalid::OnError { name });
                None
            }
            RawOnError::ServeStale(seconds) => {
                let seconds = Spanned::new(raw.span(), *seconds);
                let range = "1..=86400";
                self.integer("serve_stale_seconds", Some(&seconds), 0, 1, DAY, range)
                    .map(|s| OnLookupError::ServeStale { max_stale: secs(s) })
            }
        }
    }

    /// The `on_missing` (403) and `on_db_error` (503) denies.
    fn lookup_denies(
        &mut self,
        on_missing: Option<&Spanned<RawDeny>>,
        on_db_error: Option<&Spanned<RawDeny>>,
        has_jwt: bool,
    ) -> Option<(DenyAction, DenyAction)> {
        // The row is what failed to arrive: `on_missing` / `on_db_error` see claims, not `db`.
        let saved = std::mem::replace(
            &mut self.namespaces,
            Namespaces {
                claims: has_jwt,
                db: false,
            },
        );
        let default = RawDeny::default();
        let on_missing = self.deny(on_missing.map_or(&default, Spanned::get_ref), 403, 7);
        let on_db_error = self.deny(on_db_error.map_or(&default, Spanned::get_ref), 503, 14);
        self.namespaces = saved;
        Some((on_missing?, on_db_error?))
    }

    /// Every `$n` in the SQL is a parameter and every parameter is used.
    fn placeholders(&mut self, query: &Spanned<String>, count: usize) -> bool {
        let used = placeholder_indexes(query.get_ref());
        let offset = query.span().start;
        if let Some(&index) = used.iter().find(|&&i| i == 0 || i > count) {
            self.fail(offset, Invalid::PlaceholderOutOfRange { index, count });
            return false;
        }
        if let Some(index) = (1..=count).find(|i| !used.contains(i)) {
            self.fail(offset, Invalid::PlaceholderUnused { index, count });
            return false;
        }
        true
    }

    /// One lookup parameter: exactly one source, and the source available in this rule.
    fn param(
        &mut self,
        raw: &Spanned<RawParam>,
        has_credential: bool,
        has_jwt: bool,
    ) -> Option<Param> {
        let RawParam {
            credential,
            header,
            claim,
            path_segment,
            sha256,
        } = raw.get_ref();
        let one = self.exactly_one(
            raw.span().start,
            "a lookup parameter",
            PARAM_SOURCES,
            &[
                ("credential", credential.is_some()),
                ("header", header.is_some()),
                ("claim", claim.is_some()),
                ("path_segment", path_segment.is_some()),
            ],
        );
        if !one {
            return None;
        }
        if let Some(form) = credential {
            return self.credential_param(raw.span().start, form, sha256.is_some(), has_credential);
        }
        let source = if let Some(name) = header {
            ParamSource::Header(self.header_name(name, true)?)
        } else if let Some(name) = claim {
            if !has_jwt {
                self.fail(name.span().start, Invalid::ParamNeedsJwt);
                return None;
            }
            ParamSource::Claim(ClaimPath::new(name.get_ref()))
        } else if let Some(segment) = path_segment {
            let n = self.integer("path_segment", Some(segment), 1, 1, 64, "1..=64")?;
            ParamSource::PathSegment(usize::try_from(n).ok()?)
        } else {
            return None;
        };
        Some(Param {
            source,
            sha256: sha256.unwrap_or(false),
        })
    }

    /// `{ credential = "raw" | "sha256" }`: the rule's credential, which must exist; its form
    /// says whether it is hashed, so a separate `sha256` flag is an error.
    fn credential_param(
        &mut self,
        offset: usize,
        form: &Spanned<String>,
        sha256_given: bool,
        has_credential: bool,
    ) -> Option<Param> {
        if sha256_given {
            self.fail(offset, Invalid::CredentialSha);
            return None;
        }
        if !has_credential {
            self.fail(form.span().start, Invalid::ParamNeedsCredential);
            return None;
        }
        let sha256 = match form.get_ref().as_str() {
            "raw" => false,
            "sha256" => true,
            _ => {
                self.fail(form.span().start, Invalid::CredentialForm);
                return None;
            }
        };
        Some(Param {
            source: ParamSource::Credential,
            sha256,
        })
    }
}

fn secs(seconds: i64) -> Duration {
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

/// The `n` of every `$n` placeholder in `sql`.
fn placeholder_indexes(sql: &str) -> Vec<usize> {
    let bytes = sql.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        i += 1;
        if b != b'$' {
            continue;
        }
        let start = i;
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if let Some(n) = sql.get(start..i).and_then(|d| d.parse().ok()) {
            found.push(n);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::placeholder_indexes;

    #[test]
    fn placeholders_are_found() {
        assert_eq!(
            placeholder_indexes("SELECT a FROM t WHERE k = $1 AND o = $12 AND p = '$'"),
            vec![1, 12]
        );
        assert_eq!(placeholder_indexes("SELECT 1"), Vec::<usize>::new());
    }
}
