//! Active health checks (optional, per backend): every `interval`, a GET of `path` on each
//! endpoint through that endpoint's own client; a 2xx answer within `timeout` is a pass.
//! Envoy's thresholds: `unhealthy_threshold` failures in a row take a healthy endpoint out,
//! `healthy_threshold` passes in a row bring it back. Endpoints start healthy, so traffic flows
//! before the first round ends; the first round starts at once.
//!
//! The checker holds only a weak reference to its backend: when a reload drops the backend, the
//! task ends at its next tick instead of checking a backend nobody uses.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

/// A backend's health-check settings (validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    /// The path (and query) to GET, starting with `/`.
    pub path: String,
    /// Time between rounds.
    pub interval: Duration,
    /// How long one check may take.
    pub timeout: Duration,
    /// Passes in a row that bring an unhealthy endpoint back.
    pub healthy_threshold: u32,
    /// Failures in a row that take a healthy endpoint out.
    pub unhealthy_threshold: u32,
}

/// One endpoint's active-health verdict and its current streak.
#[derive(Debug)]
pub struct ActiveHealth {
    healthy: AtomicBool,
    streak: Mutex<Streak>,
}

#[derive(Debug, Default)]
struct Streak {
    passes: u32,
    failures: u32,
}

impl Default for ActiveHealth {
    fn default() -> Self {
        ActiveHealth {
            healthy: AtomicBool::new(true),
            streak: Mutex::new(Streak::default()),
        }
    }
}

impl ActiveHealth {
    /// Whether the endpoint passes its checks (always, when none are configured).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Counts one check; returns the new verdict when it changed.
    pub fn record(&self, passed: bool, config: &HealthCheckConfig) -> Option<bool> {
        let mut streak = self.streak.lock().ok()?;
        let healthy = self.is_healthy();
        if passed {
            streak.failures = 0;
            streak.passes = streak.passes.saturating_add(1);
            if !healthy && streak.passes >= config.healthy_threshold {
                self.healthy.store(true, Ordering::Release);
                return Some(true);
            }
        } else {
            streak.passes = 0;
            streak.failures = streak.failures.saturating_add(1);
            if healthy && streak.failures >= config.unhealthy_threshold {
                self.healthy.store(false, Ordering::Release);
                return Some(false);
            }
        }
        None
    }
}

/// An endpoint that can be checked.
pub trait Probe: Send + Sync + 'static {
    /// GETs `path` through the endpoint's own client; true on a 2xx within `timeout`.
    fn probe(&self, path: &str, timeout: Duration) -> impl Future<Output = bool> + Send;
    /// Counts one check's result; returns the new verdict when it changed.
    fn record(&self, passed: bool, config: &HealthCheckConfig) -> Option<bool>;
}

/// A backend whose endpoints are checked.
pub trait Checked: Send + Sync + 'static {
    /// The endpoint type.
    type Endpoint: Probe;
    /// The endpoints, in a fixed order.
    fn endpoints(&self) -> &[Arc<Self::Endpoint>];
    /// Called when an endpoint's verdict changed (for metrics and the log).
    fn health_changed(&self, index: usize, healthy: bool);
}

/// Checks `backend`'s endpoints every `config.interval` until the backend is dropped.
pub async fn run<C: Checked>(backend: Weak<C>, config: HealthCheckConfig) {
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // Only the endpoints are held during a round, never the backend itself.
        let Some(endpoints) = backend.upgrade().map(|b| b.endpoints().to_vec()) else {
            return;
        };
        let passed = check_all(&endpoints, &config).await;
        let Some(backend) = backend.upgrade() else {
            return;
        };
        for (index, passed) in passed.into_iter().enumerate() {
            let Some(endpoint) = endpoints.get(index) else {
                continue;
            };
            if let Some(healthy) = endpoint.record(passed, &config) {
                backend.health_changed(index, healthy);
            }
        }
    }
}

/// One round: every endpoint at once, each bounded by the timeout.
async fn check_all<E: Probe>(endpoints: &[Arc<E>], config: &HealthCheckConfig) -> Vec<bool> {
    let mut probes = JoinSet::new();
    for (index, endpoint) in endpoints.iter().enumerate() {
        let endpoint = endpoint.clone();
        let path = config.path.clone();
        let timeout = config.timeout;
        probes.spawn(async move {
            let passed = tokio::time::timeout(timeout, endpoint.probe(&path, timeout))
                .await
                .unwrap_or(false);
            (index, passed)
        });
    }
    let mut passed = vec![false; endpoints.len()];
    while let Some(done) = probes.join_next().await {
        if let Ok((index, ok)) = done
            && let Some(slot) = passed.get_mut(index)
        {
            *slot = ok;
        }
    }
    passed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn config() -> HealthCheckConfig {
        HealthCheckConfig {
            path: "/healthz".into(),
            interval: Duration::from_millis(20),
            timeout: Duration::from_millis(50),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }

    #[test]
    fn thresholds_take_an_endpoint_out_and_bring_it_back() {
        let h = ActiveHealth::default();
        let c = config();
        assert!(h.is_healthy());
        assert_eq!(h.record(false, &c), None);
        assert_eq!(h.record(false, &c), None);
        assert_eq!(h.record(true, &c), None, "a pass breaks the failure streak");
        assert_eq!(h.record(false, &c), None);
        assert_eq!(h.record(false, &c), None);
        assert_eq!(h.record(false, &c), Some(false));
        assert!(!h.is_healthy());
        assert_eq!(h.record(false, &c), None);
        assert_eq!(h.record(true, &c), None);
        assert_eq!(h.record(true, &c), Some(true));
        assert!(h.is_healthy());
    }

    struct Fake {
        up: AtomicBool,
        slow: bool,
        probes: AtomicUsize,
        health: ActiveHealth,
    }

    impl Probe for Fake {
        async fn probe(&self, _path: &str, _timeout: Duration) -> bool {
            self.probes.fetch_add(1, Ordering::SeqCst);
            if self.slow {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            self.up.load(Ordering::SeqCst)
        }
        fn record(&self, passed: bool, config: &HealthCheckConfig) -> Option<bool> {
            self.health.record(passed, config)
        }
    }

    struct FakeBackend {
        endpoints: Vec<Arc<Fake>>,
        changes: Mutex<Vec<(usize, bool)>>,
    }

    impl Checked for FakeBackend {
        type Endpoint = Fake;
        fn endpoints(&self) -> &[Arc<Fake>] {
            &self.endpoints
        }
        fn health_changed(&self, index: usize, healthy: bool) {
            if let Ok(mut c) = self.changes.lock() {
                c.push((index, healthy));
            }
        }
    }

    fn fake(up: bool, slow: bool) -> Arc<Fake> {
        Arc::new(Fake {
            up: AtomicBool::new(up),
            slow,
            probes: AtomicUsize::new(0),
            health: ActiveHealth::default(),
        })
    }

    async fn wait_for(what: impl Fn() -> bool) {
        for _ in 0..200 {
            if what() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not reached in 2 s");
    }

    #[tokio::test]
    async fn the_checker_marks_down_and_up_and_ends_with_its_backend() {
        let backend = Arc::new(FakeBackend {
            endpoints: vec![fake(true, false), fake(false, false), fake(true, true)],
            changes: Mutex::new(Vec::new()),
        });
        let task = tokio::spawn(run(Arc::downgrade(&backend), config()));
        let eps = backend.endpoints.clone();
        wait_for(|| !eps[1].health.is_healthy() && !eps[2].health.is_healthy()).await;
        assert!(eps[0].health.is_healthy());
        eps[1].up.store(true, Ordering::SeqCst);
        wait_for(|| eps[1].health.is_healthy()).await;
        let changes = backend.changes.lock().expect("lock").clone();
        assert!(changes.contains(&(1, false)) && changes.contains(&(1, true)));
        assert!(changes.contains(&(2, false)), "a timeout is a failure");
        assert!(!changes.iter().any(|(i, _)| *i == 0));
        drop(backend);
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("the checker ends once its backend is gone")
            .expect("no panic");
    }
}
