//! The engine's only windows on the outside world: database lookups and JWKS documents fetched by
//! URL. The engine calls these traits and does no I/O of its own per request; the server wires
//! the real implementations (connection pools, caches, an HTTP client) and tests drive in-memory
//! doubles. Files a policy names are read once, at load (see the crate docs).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A boxed, sendable future, so the hook traits stay object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One database row: column name to value rendered as text (SQL NULL is absent).
pub type Row = BTreeMap<String, String>;

/// What a rule does when its database cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnLookupError {
    /// Decide with the rule's configured error response (503 by default). Never an allow.
    FailClosed,
    /// Serve the last cached answer if it is at most this much past its TTL; otherwise fail
    /// closed.
    ServeStale {
        /// How long past its TTL a cached answer may still be served.
        max_stale: Duration,
    },
}

/// The per-lookup settings from the config, handed to the hook with every query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupPolicy {
    /// Longest a query may take before it counts as a database failure.
    pub timeout: Duration,
    /// How long a found row is served from cache.
    pub cache_ttl: Duration,
    /// How long "no row" is served from cache.
    pub negative_ttl: Duration,
    /// Behaviour when the database fails or times out.
    pub on_error: OnLookupError,
}

/// One parameterised query. Parameters are bound, never spliced into the SQL.
#[derive(Debug, Clone, Copy)]
pub struct LookupQuery<'a> {
    /// The database's name in the config's `[databases]` table.
    pub database: &'a str,
    /// The SQL, with `$1`, `$2`, ... placeholders.
    pub sql: &'a str,
    /// The bound parameters, in placeholder order.
    pub params: &'a [String],
    /// Timeout, caching and failure settings.
    pub policy: &'a LookupPolicy,
}

/// Why a lookup produced no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LookupError {
    /// The config names a database the server did not open.
    #[error("unknown database `{0}`")]
    UnknownDatabase(String),
    /// The query took longer than the policy allows.
    #[error("database query timed out after {0:?}")]
    Timeout(Duration),
    /// The database refused or failed the query.
    #[error("database error: {0}")]
    Failed(String),
}

/// Runs rule lookups. Implementations own pooling, the TTL cache, coalescing of identical
/// concurrent queries and the serve-stale policy; the engine only sees the answer.
pub trait Lookup: Send + Sync {
    /// The first row of the query, `None` when there is none.
    fn lookup<'a>(
        &'a self,
        query: LookupQuery<'a>,
    ) -> BoxFuture<'a, Result<Option<Arc<Row>>, LookupError>>;
}

/// Why a JWKS document could not be had.
#[derive(Debug, Clone, thiserror::Error)]
#[error("JWKS {url}: {reason}")]
pub struct JwksError {
    /// The document's URL.
    pub url: String,
    /// What went wrong.
    pub reason: String,
}

/// Supplies JWKS documents fetched by URL.
pub trait JwksSource: Send + Sync {
    /// The JWKS at `url`. `refresh` asks for a fresh fetch because a token named a `kid` the
    /// cached document lacks; implementations rate-limit refreshes and may answer from cache.
    fn jwks<'a>(
        &'a self,
        url: &'a str,
        refresh: bool,
    ) -> BoxFuture<'a, Result<Arc<jsonwebtoken::jwk::JwkSet>, JwksError>>;
}

/// The hooks a rule set may call. Absent hooks make rules that need them fail closed.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Database lookups.
    pub lookup: Option<Arc<dyn Lookup>>,
    /// JWKS documents by URL.
    pub jwks: Option<Arc<dyn JwksSource>>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("lookup", &self.lookup.is_some())
            .field("jwks", &self.jwks.is_some())
            .finish()
    }
}
