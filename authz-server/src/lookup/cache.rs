//! The answer cache: the last answer of each distinct query, bounded in size, oldest evicted
//! first. Freshness is judged by the caller's policy, so two rules sharing a query may keep
//! different TTLs.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rules::{LookupQuery, Row};

/// How many distinct answers are kept by default.
pub const DEFAULT_CACHE_ENTRIES: usize = 100_000;

/// What identifies an answer: the database, the SQL text and the bound parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    pub database: String,
    pub sql: String,
    pub params: Vec<String>,
}

impl CacheKey {
    pub(super) fn of(query: &LookupQuery<'_>) -> Self {
        Self {
            database: query.database.to_owned(),
            sql: query.sql.to_owned(),
            params: query.params.to_vec(),
        }
    }
}

/// One remembered answer: the row (or its absence) and when the database gave it.
#[derive(Debug, Clone)]
pub(crate) struct Cached {
    pub answer: Option<Arc<Row>>,
    pub stored: Instant,
}

impl Cached {
    /// How long ago the database gave this answer.
    pub(super) fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.stored)
    }

    /// The TTL that applies: hits and misses are cached for different times.
    pub(super) fn ttl(&self, cache_ttl: Duration, negative_ttl: Duration) -> Duration {
        if self.answer.is_some() {
            cache_ttl
        } else {
            negative_ttl
        }
    }
}

/// A size-bounded map from query to answer. Eviction is by insertion order (a refreshed entry
/// counts as new), which keeps both operations O(log n) under one short lock.
pub(crate) struct AnswerCache {
    capacity: usize,
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    by_key: HashMap<CacheKey, (u64, Cached)>,
    by_age: BTreeMap<u64, CacheKey>,
    next: u64,
}

impl AnswerCache {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(Entries::default()),
        }
    }

    pub(super) fn get(&self, key: &CacheKey) -> Option<Cached> {
        let entries = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        entries.by_key.get(key).map(|(_, cached)| cached.clone())
    }

    pub(super) fn insert(&self, key: CacheKey, cached: Cached) {
        let mut entries = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let Entries {
            by_key,
            by_age,
            next,
        } = &mut *entries;
        let seq = *next;
        *next += 1;
        if let Some((old_seq, _)) = by_key.insert(key.clone(), (seq, cached)) {
            by_age.remove(&old_seq);
        }
        by_age.insert(seq, key);
        while by_key.len() > self.capacity {
            let Some((_, oldest)) = by_age.pop_first() else {
                break;
            };
            by_key.remove(&oldest);
        }
    }

    pub(super) fn len(&self) -> usize {
        let entries = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        entries.by_key.len()
    }
}
