//! The database hook: [`DatabaseLookup`] answers the rule engine's [`Lookup`] calls from a pool
//! per configured database, behind a TTL cache that coalesces identical concurrent queries.
//!
//! For one lookup, in order:
//! 1. a cached answer younger than its TTL (`cache_ttl` for a row, `negative_ttl` for "no row")
//!    is returned without touching the database;
//! 2. otherwise, if the same query (database, SQL, parameters) is already running, the caller
//!    waits for that query's answer instead of sending its own;
//! 3. otherwise one query runs, in its own task (so a caller that gives up does not cancel it
//!    for the others), bounded by the lookup's `timeout`; its answer is cached;
//! 4. when the database fails or times out, `on_error` decides: fail closed (an error the engine
//!    turns into its configured deny, never an allow), or serve the cached answer if it is at
//!    most `max_stale` past its TTL.

mod cache;
mod database;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use rules::hooks::BoxFuture;
use rules::{Lookup, LookupError, LookupPolicy, LookupQuery, OnLookupError, Row};
use tokio::sync::watch;

use crate::metrics::Metrics;

pub use cache::DEFAULT_CACHE_ENTRIES;
use cache::{AnswerCache, CacheKey, Cached};
pub use database::{Database, DatabaseError, OpenMode, redact};

/// How long the start-up check waits for each database before logging it as unreachable.
const STARTUP_PING_TIMEOUT: Duration = Duration::from_secs(5);

type Answer = Result<Option<Arc<Row>>, LookupError>;

/// The server's [`Lookup`]: pools, cache, coalescing and the failure policy. Cheap to clone.
#[derive(Clone)]
pub struct DatabaseLookup {
    shared: Arc<Shared>,
}

struct Shared {
    databases: HashMap<String, Slot>,
    cache: AnswerCache,
    in_flight: Mutex<HashMap<CacheKey, watch::Receiver<Option<Answer>>>>,
    queries: AtomicU64,
    metrics: OnceLock<Arc<Metrics>>,
}

/// A configured database: a pool, or why there is none (a URL the driver refused).
enum Slot {
    Open(Database),
    Broken(String),
}

impl DatabaseLookup {
    /// Opens a pool for each `(name, url, pool_size)` and checks each database can be reached.
    /// A database that cannot be is logged as an error and the server keeps serving: lookups
    /// against it fail (and follow their `on_error`) until it comes back.
    pub async fn open<'a>(databases: impl IntoIterator<Item = (&'a str, &'a str, u32)>) -> Self {
        Self::open_with_capacity(databases, DEFAULT_CACHE_ENTRIES).await
    }

    /// [`DatabaseLookup::open`] with a cache of at most `cache_entries` answers.
    pub async fn open_with_capacity<'a>(
        databases: impl IntoIterator<Item = (&'a str, &'a str, u32)>,
        cache_entries: usize,
    ) -> Self {
        let mut slots = HashMap::new();
        let mut checks = Vec::new();
        for (name, url, pool_size) in databases {
            let slot = match Database::open(url, pool_size, OpenMode::Existing) {
                Ok(database) => {
                    let (name, pinged) = (name.to_owned(), database.clone());
                    checks.push(tokio::spawn(async move {
                        let outcome =
                            tokio::time::timeout(STARTUP_PING_TIMEOUT, pinged.ping()).await;
                        match outcome {
                            Ok(Ok(())) => tracing::info!(database = %name, "database reachable"),
                            Ok(Err(error)) => tracing::error!(
                                database = %name,
                                "database unreachable at start (lookups fail until it is back): {error}"
                            ),
                            Err(_) => tracing::error!(
                                database = %name,
                                "database did not answer within {STARTUP_PING_TIMEOUT:?} at start"
                            ),
                        }
                    }));
                    Slot::Open(database)
                }
                Err(error) => {
                    tracing::error!(database = %name, "cannot open database: {error}");
                    Slot::Broken(error.to_string())
                }
            };
            slots.insert(name.to_owned(), slot);
        }
        for check in checks {
            let _ = check.await;
        }
        Self::from_slots(slots, cache_entries)
    }

    fn from_slots(databases: HashMap<String, Slot>, cache_entries: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                databases,
                cache: AnswerCache::new(cache_entries),
                in_flight: Mutex::new(HashMap::new()),
                queries: AtomicU64::new(0),
                metrics: OnceLock::new(),
            }),
        }
    }

    /// Counts cache hits, misses, stale answers and database errors into `metrics` from now on.
    pub fn report_to(&self, metrics: Arc<Metrics>) {
        let _ = self.shared.metrics.set(metrics);
    }

    fn count(&self, database: &str, result: &'static str) {
        crate::otel::lookup_cache(result);
        if let Some(metrics) = self.shared.metrics.get() {
            metrics.lookup_cache(database, result);
        }
    }

    /// How many queries this hook has sent to databases (cache hits and coalesced waits do not
    /// count).
    pub fn queries_sent(&self) -> u64 {
        self.shared.queries.load(Ordering::Relaxed)
    }

    /// How many answers the cache holds.
    pub fn cached_answers(&self) -> usize {
        self.shared.cache.len()
    }

    async fn answer(&self, query: LookupQuery<'_>) -> Answer {
        let policy = query.policy;
        let key = CacheKey::of(&query);
        if let Some(cached) = self.shared.cache.get(&key)
            && is_fresh(&cached, policy, Instant::now())
        {
            self.count(query.database, "hit");
            return Ok(cached.answer);
        }
        let mut answer = {
            let mut in_flight = self
                .shared
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(running) = in_flight.get(&key) {
                self.count(query.database, "coalesced");
                running.clone()
            } else {
                // A query that finished between the cache check and taking the lock has
                // already stored its answer.
                if let Some(cached) = self.shared.cache.get(&key)
                    && is_fresh(&cached, policy, Instant::now())
                {
                    self.count(query.database, "hit");
                    return Ok(cached.answer);
                }
                self.count(query.database, "miss");
                let (sender, receiver) = watch::channel(None);
                in_flight.insert(key.clone(), receiver.clone());
                tokio::spawn(self.clone().run(key.clone(), policy.clone(), sender));
                receiver
            }
        };
        // Each caller waits at most its own timeout and judges a failure by its own `on_error`:
        // a fail-closed rule must not be handed a stale row because another rule started the
        // query.
        let result =
            match tokio::time::timeout(policy.timeout, answer.wait_for(Option::is_some)).await {
                Ok(Ok(answer)) => answer.clone().unwrap_or_else(|| Err(task_ended())),
                Ok(Err(_)) => Err(task_ended()),
                Err(_) => Err(LookupError::Timeout(policy.timeout)),
            };
        result.or_else(|error| self.stale_or(error, &key, policy))
    }

    /// The caller's fallback when the database failed: the cached answer if its policy serves
    /// stale answers and this one is recent enough, else the error (which the engine turns into
    /// the rule's deny).
    fn stale_or(&self, error: LookupError, key: &CacheKey, policy: &LookupPolicy) -> Answer {
        let now = Instant::now();
        match (policy.on_error, self.shared.cache.get(key)) {
            (OnLookupError::ServeStale { max_stale }, Some(cached))
                if cached.age(now)
                    <= cached
                        .ttl(policy.cache_ttl, policy.negative_ttl)
                        .saturating_add(max_stale) =>
            {
                tracing::warn!(
                    database = %key.database,
                    "serving a stale answer {:?} old",
                    cached.age(now)
                );
                self.count(&key.database, "stale");
                Ok(cached.answer)
            }
            _ => Err(error),
        }
    }

    /// Runs one query for everyone waiting on `key` and caches a found answer; each waiter
    /// applies its own `on_error` to a failure.
    async fn run(self, key: CacheKey, policy: LookupPolicy, sender: watch::Sender<Option<Answer>>) {
        let _done = InFlightGuard {
            shared: &self.shared,
            key: &key,
        };
        let answer = self.query(&key, &policy).await;
        match &answer {
            Ok(found) => self.shared.cache.insert(
                key.clone(),
                Cached {
                    answer: found.clone(),
                    stored: Instant::now(),
                },
            ),
            Err(error) => {
                // The kind only: a database's message can quote the bound values (credentials).
                tracing::warn!(database = %key.database, "lookup failed: {}", error_kind(error));
                if let Some(metrics) = self.shared.metrics.get() {
                    metrics.database_error(&key.database);
                }
            }
        }
        // Drop the in-flight entry before publishing, so a caller that arrives after the
        // answer starts a new query (or hits the cache) instead of reading a finished channel.
        drop(_done);
        let _ = sender.send(Some(answer));
    }

    async fn query(&self, key: &CacheKey, policy: &LookupPolicy) -> Answer {
        let database = match self.shared.databases.get(&key.database) {
            Some(Slot::Open(database)) => database,
            Some(Slot::Broken(reason)) => return Err(LookupError::Failed(reason.clone())),
            None => return Err(LookupError::UnknownDatabase(key.database.clone())),
        };
        self.shared.queries.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(policy.timeout, database.first_row(&key.sql, &key.params)).await
        {
            Ok(Ok(row)) => Ok(row.map(Arc::new)),
            Ok(Err(error)) => Err(LookupError::Failed(error.to_string())),
            Err(_) => Err(LookupError::Timeout(policy.timeout)),
        }
    }
}

impl Lookup for DatabaseLookup {
    fn lookup<'a>(&'a self, query: LookupQuery<'a>) -> BoxFuture<'a, Answer> {
        if !telemetry::enabled() {
            return Box::pin(self.answer(query));
        }
        let span = crate::otel::lookup(query.database);
        Box::pin(tracing::Instrument::instrument(
            async move {
                let answer = self.answer(query).await;
                if let Err(error) = &answer {
                    crate::otel::failed(&tracing::Span::current(), error_kind(error));
                }
                answer
            },
            span,
        ))
    }
}

fn is_fresh(cached: &Cached, policy: &LookupPolicy, now: Instant) -> bool {
    cached.age(now) < cached.ttl(policy.cache_ttl, policy.negative_ttl)
}

fn error_kind(error: &LookupError) -> &'static str {
    match error {
        LookupError::UnknownDatabase(_) => "unknown database",
        LookupError::Timeout(_) => "timed out",
        LookupError::Failed(_) => "database error",
    }
}

fn task_ended() -> LookupError {
    LookupError::Failed("the lookup task ended without an answer".into())
}

/// Removes a query from the in-flight map however its task ends (even by panic), so later
/// callers never wait on a query nobody runs.
struct InFlightGuard<'a> {
    shared: &'a Shared,
    key: &'a CacheKey,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.shared
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(self.key);
    }
}
