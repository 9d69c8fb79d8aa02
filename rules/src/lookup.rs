//! Compiled database lookups: which database, the SQL, and where each bound parameter comes from.
//! Values are always bound through [`crate::Lookup`], never spliced into the SQL.

use crate::action::DenyAction;
use crate::credential::{Verified, hex, sha256};
use crate::hooks::LookupPolicy;
use crate::identity::{ClaimPath, claim_text};
use crate::request::Request;

/// At most this many parameters per query.
pub const MAX_PARAMS: usize = 16;

/// At most this many bytes of SQL per query.
pub const MAX_SQL_BYTES: usize = 16 * 1024;

/// A parameter value longer than this many bytes skips the query (decided as "no row").
pub const MAX_PARAM_BYTES: usize = 8 * 1024;

/// One `[databases.<name>]` table, for the server to open a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseSpec {
    /// The name rule lookups use.
    pub name: String,
    /// `sqlite://path` or `postgres://...`, exactly as written (the server resolves paths).
    pub url: String,
    /// Connections in the pool (default 8).
    pub pool_size: u32,
}

/// A compiled `[rules.lookup]`.
#[derive(Debug, Clone)]
pub(crate) struct LookupSpec {
    /// A name from `[databases]` (checked at load).
    pub database: String,
    /// The SQL with `$1`... placeholders.
    pub sql: String,
    /// The parameters in placeholder order.
    pub params: Vec<Param>,
    /// Timeout, caching, failure behaviour.
    pub policy: LookupPolicy,
    /// The deny when no row is found.
    pub on_missing: DenyAction,
    /// The deny when the database fails.
    pub on_db_error: DenyAction,
}

/// One parameter: its source and whether its SHA-256 (hex) is bound instead.
#[derive(Debug, Clone)]
pub(crate) struct Param {
    /// Where the value comes from.
    pub source: ParamSource,
    /// Bind the lower-case hex SHA-256 of the value.
    pub sha256: bool,
}

/// Where a parameter's value comes from.
#[derive(Debug, Clone)]
pub(crate) enum ParamSource {
    /// The rule's verified credential.
    Credential,
    /// A request header (lower-case name).
    Header(String),
    /// A claim of the verified JWT.
    Claim(ClaimPath),
    /// A 1-based segment of the path without its query.
    PathSegment(usize),
}

impl LookupSpec {
    /// The 1-based path segments bound as parameters.
    pub(crate) fn path_segments(&self) -> impl Iterator<Item = usize> + '_ {
        self.params.iter().filter_map(|param| match param.source {
            ParamSource::PathSegment(n) => Some(n),
            _ => None,
        })
    }

    /// The parameter values in order, or the 1-based index of the first one the request lacks
    /// (or that is longer than [`MAX_PARAM_BYTES`]).
    pub(crate) fn bind(
        &self,
        request: &Request,
        verified: Option<&Verified>,
    ) -> Result<Vec<String>, usize> {
        self.params
            .iter()
            .enumerate()
            .map(|(index, param)| {
                let value = param
                    .value(request, verified)
                    .filter(|v| v.len() <= MAX_PARAM_BYTES)
                    .ok_or(index + 1)?;
                Ok(if param.sha256 {
                    hex(&sha256(value.as_bytes()))
                } else {
                    value
                })
            })
            .collect()
    }
}

impl Param {
    fn value(&self, request: &Request, verified: Option<&Verified>) -> Option<String> {
        match &self.source {
            ParamSource::Credential => verified.map(|v| v.raw.clone()),
            ParamSource::Header(name) => request.header(name).map(str::to_owned),
            ParamSource::Claim(path) => verified
                .and_then(|v| v.claims.as_ref())
                .and_then(|claims| path.find(claims))
                .filter(|value| !value.is_null())
                .map(|value| claim_text(value).into_owned()),
            ParamSource::PathSegment(n) => {
                let path = request.path.split('?').next().unwrap_or_default();
                path.split('/')
                    .filter(|segment| !segment.is_empty())
                    .nth(n.saturating_sub(1))
                    .map(str::to_owned)
            }
        }
    }
}
