//! Prometheus metrics for the server, served on the admin port.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use rules::hooks::BoxFuture;
use rules::{JwksError, JwksSource};

/// Labels of one decision. The rule's name is the rule set's own `Arc`, so counting a check
/// copies no string.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    api: &'static str,
    rule: Arc<str>,
    outcome: &'static str,
}

/// The `rule` label of a check no rule decided.
static DEFAULT_RULE: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("default"));

/// The `rule` label of a check that failed (no decision at all).
static NO_RULE: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(""));

/// Labels naming the API only.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    api: &'static str,
}

/// Labels of a reload attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// Labels of a shadow rule's verdict.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShadowLabels {
    rule: Arc<str>,
    outcome: &'static str,
}

/// Labels of a Rego policy that did not decide.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegoFailureLabels {
    rule: Arc<str>,
    kind: &'static str,
}

/// Labels of a lookup cache answer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    database: String,
    result: &'static str,
}

/// Labels naming a database.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DatabaseLabels {
    database: String,
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    checks: Family<CheckLabels, Counter>,
    check_latency: Family<ApiLabels, Histogram>,
    checks_expired: Family<ApiLabels, Counter>,
    shadow: Family<ShadowLabels, Counter>,
    config_synchronized: Gauge,
    reloads: Family<ResultLabels, Counter>,
    lookup_cache: Family<CacheLabels, Counter>,
    database_errors: Family<DatabaseLabels, Counter>,
    jwks_errors: Counter,
    rego_failures: Family<RegoFailureLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric at zero and the config marked synchronized.
    pub fn new() -> Self {
        let mut metrics = Self {
            registry: Registry::default(),
            checks: Family::default(),
            check_latency: Family::new_with_constructor(latency_histogram as fn() -> _),
            checks_expired: Family::default(),
            shadow: Family::default(),
            config_synchronized: Gauge::default(),
            reloads: Family::default(),
            lookup_cache: Family::default(),
            database_errors: Family::default(),
            jwks_errors: Counter::default(),
            rego_failures: Family::default(),
        };
        metrics.config_synchronized.set(1);
        metrics.register_decisions();
        metrics.register_config_and_lookups();
        metrics
    }

    /// What the checks decided, how long they took and what did not decide.
    fn register_decisions(&mut self) {
        self.registry.register(
            "authz_checks",
            "Decisions made, by API, deciding rule (`default` when none matched) and outcome",
            self.checks.clone(),
        );
        self.registry.register(
            "authz_check_duration_seconds",
            "Time to decide one check, from request received to decision",
            self.check_latency.clone(),
        );
        self.registry.register(
            "authz_checks_expired",
            "Checks not evaluated because the caller's deadline (grpc-timeout) had passed on arrival",
            self.checks_expired.clone(),
        );
        self.registry.register(
            "authz_shadow_matches",
            "Shadow rules that matched, with the outcome they would have enforced",
            self.shadow.clone(),
        );
        self.registry.register(
            "authz_rego_failures",
            "Rego policies that did not decide (undefined, error, invalid, limit, input); each was a deny",
            self.rego_failures.clone(),
        );
    }

    /// Reloads, and what the checks' databases and JWKS sources answered.
    fn register_config_and_lookups(&mut self) {
        self.registry.register(
            "authz_config_synchronized",
            "1 when the rules in force are the config file's current content, 0 after a failed reload",
            self.config_synchronized.clone(),
        );
        self.registry.register(
            "authz_config_reloads",
            "Config reload attempts by result",
            self.reloads.clone(),
        );
        self.registry.register(
            "authz_lookup_cache",
            "Database lookups by cache result (hit, coalesced, miss, stale)",
            self.lookup_cache.clone(),
        );
        self.registry.register(
            "authz_database_errors",
            "Database queries that failed or timed out",
            self.database_errors.clone(),
        );
        self.registry.register(
            "authz_jwks_errors",
            "JWKS documents that could not be fetched or parsed",
            self.jwks_errors.clone(),
        );
    }

    /// Counts one decision by its deciding rule (`None`: the default decided).
    pub fn count_decision(
        &self,
        api: &'static str,
        rule: Option<&Arc<str>>,
        outcome: &'static str,
        latency: Duration,
    ) {
        let rule = rule.unwrap_or(&DEFAULT_RULE).clone();
        self.count_check(&CheckLabels { api, rule, outcome }, latency);
    }

    /// Counts a check that could not be decided (`outcome="error"`, empty `rule`).
    pub fn count_failed_check(&self, api: &'static str, latency: Duration) {
        let rule = NO_RULE.clone();
        let labels = CheckLabels {
            api,
            rule,
            outcome: "error",
        };
        self.count_check(&labels, latency);
    }

    fn count_check(&self, labels: &CheckLabels, latency: Duration) {
        self.checks.get_or_create(labels).inc();
        self.check_latency
            .get_or_create(&ApiLabels { api: labels.api })
            .observe(latency.as_secs_f64());
    }

    /// Counts a check answered `DEADLINE_EXCEEDED` without being evaluated.
    pub fn count_expired_check(&self, api: &'static str) {
        self.checks_expired.get_or_create(&ApiLabels { api }).inc();
    }

    /// Counts a shadow rule that matched.
    pub fn shadow_match(&self, rule: &Arc<str>, outcome: &'static str) {
        self.shadow
            .get_or_create(&ShadowLabels {
                rule: rule.clone(),
                outcome,
            })
            .inc();
    }

    /// Records a reload attempt and whether the config in force is now the file's.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
        self.config_synchronized.set(i64::from(ok));
    }

    /// Counts a lookup answered from cache (`hit`, `stale`), by a query another check already
    /// started (`coalesced`), or by a new query (`miss`).
    pub fn lookup_cache(&self, database: &str, result: &'static str) {
        self.lookup_cache
            .get_or_create(&CacheLabels {
                database: database.to_owned(),
                result,
            })
            .inc();
    }

    /// Counts a failed or timed-out query.
    pub fn database_error(&self, database: &str) {
        self.database_errors
            .get_or_create(&DatabaseLabels {
                database: database.to_owned(),
            })
            .inc();
    }

    /// Counts a Rego policy that did not decide, by rule and kind.
    pub fn rego_failure(&self, rule: &Arc<str>, kind: &'static str) {
        self.rego_failures
            .get_or_create(&RegoFailureLabels {
                rule: rule.clone(),
                kind,
            })
            .inc();
    }

    /// Counts a JWKS fetch or parse failure.
    pub fn jwks_error(&self) {
        self.jwks_errors.inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// 50 µs to ~1.6 s in doubling steps: a cached decision is microseconds, a database miss
/// milliseconds.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// A [`JwksSource`] that counts the failures of the one it wraps.
pub struct MeteredJwks<J> {
    inner: J,
    metrics: Arc<Metrics>,
}

impl<J> MeteredJwks<J> {
    /// Counts `inner`'s failures into `metrics`.
    pub fn new(inner: J, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

impl<J: JwksSource> JwksSource for MeteredJwks<J> {
    fn jwks<'a>(
        &'a self,
        url: &'a str,
        refresh: bool,
    ) -> BoxFuture<'a, Result<Arc<JwkSet>, JwksError>> {
        Box::pin(async move {
            let answer = self.inner.jwks(url, refresh).await;
            if answer.is_err() {
                self.metrics.jwks_error();
            }
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Unreachable;

    impl JwksSource for Unreachable {
        fn jwks<'a>(
            &'a self,
            url: &'a str,
            _refresh: bool,
        ) -> BoxFuture<'a, Result<Arc<JwkSet>, JwksError>> {
            Box::pin(async move {
                Err(JwksError {
                    url: url.to_owned(),
                    reason: "connection refused".into(),
                })
            })
        }
    }

    #[tokio::test]
    async fn jwks_failures_are_counted() {
        let metrics = Arc::new(Metrics::new());
        let jwks = MeteredJwks::new(Unreachable, metrics.clone());
        for _ in 0..2 {
            assert!(
                jwks.jwks("http://idp.invalid/jwks.json", false)
                    .await
                    .is_err()
            );
        }
        assert!(
            metrics
                .render()
                .lines()
                .any(|l| l == "authz_jwks_errors_total 2"),
            "{}",
            metrics.render()
        );
    }
}
