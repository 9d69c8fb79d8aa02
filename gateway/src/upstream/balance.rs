//! Load balancing over a backend's endpoints: least request with two random choices (Envoy's
//! default: two distinct endpoints at random, the one with fewer requests in flight wins) or
//! round robin.
//!
//! Only available endpoints are candidates (not ejected, passing their health checks). A retry
//! names the endpoints already tried in `exclude`; they are skipped while another candidate
//! exists, and tried again only when none does. When no endpoint is available the answer is
//! `None` at once, and the caller answers 503 `no healthy upstream`: a request never waits for an
//! endpoint to come back.
//!
//! Nothing here takes a lock or allocates: candidates are counted, then found again by rank, and
//! the random numbers come from a per-thread xorshift generator.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::time::Instant;

use super::endpoint_health::Balanced;
use super::health_check::HealthCheckConfig;
use super::outlier::{Outlier, OutlierConfig};

/// How a backend spreads requests over its endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LbPolicy {
    /// Two random choices, fewer requests in flight wins (Envoy's default).
    #[default]
    LeastRequest,
    /// Each endpoint in turn.
    RoundRobin,
}

/// A backend's balancer: the policy and the round-robin position.
#[derive(Debug, Default)]
pub struct Balancer {
    policy: LbPolicy,
    next: AtomicUsize,
}

/// How a backend spreads requests and judges its endpoints (compared across reloads).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LbSettings {
    /// The balancing policy.
    pub policy: LbPolicy,
    /// Passive health; `None`: endpoints are never ejected.
    pub outlier: Option<OutlierConfig>,
    /// Active health checks; `None`: none run.
    pub health_check: Option<HealthCheckConfig>,
}

/// A backend's balancing state: the balancer and outlier detection over its endpoints.
#[derive(Debug)]
pub struct Balancing {
    pub(super) balancer: Balancer,
    pub(super) outlier: Option<Outlier>,
    pub(super) health_check: Option<HealthCheckConfig>,
}

impl Balancing {
    /// The state for `endpoints` endpoints balanced by `settings`.
    pub fn new(settings: &LbSettings, endpoints: usize) -> Balancing {
        Balancing {
            balancer: Balancer::new(settings.policy),
            outlier: settings
                .outlier
                .clone()
                .map(|config| Outlier::new(config, endpoints)),
            health_check: settings.health_check.clone(),
        }
    }
}

impl Balancer {
    /// A balancer with `policy`.
    pub fn new(policy: LbPolicy) -> Balancer {
        Balancer {
            policy,
            next: AtomicUsize::new(0),
        }
    }

    /// The policy.
    pub fn policy(&self) -> LbPolicy {
        self.policy
    }

    /// Chooses an endpoint for one try (its index), or `None` when every endpoint is down.
    pub fn pick<E: Balanced>(
        &self,
        endpoints: &[E],
        exclude: &[usize],
        outlier: Option<&Outlier>,
        now: Instant,
    ) -> Option<usize> {
        let mut available = 0;
        let mut fresh = 0;
        for (index, e) in endpoints.iter().enumerate() {
            if !e.health().is_available(outlier, now) {
                continue;
            }
            available += 1;
            if !exclude.contains(&index) {
                fresh += 1;
            }
        }
        if available == 0 {
            return None;
        }
        // Only when every available endpoint was tried does a retry go back to one of them.
        let skip_tried = fresh > 0;
        let candidates = if skip_tried { fresh } else { available };
        let is_candidate = |index: usize, e: &E| {
            e.health().is_available(outlier, now) && !(skip_tried && exclude.contains(&index))
        };
        let nth = |rank: usize| {
            endpoints
                .iter()
                .enumerate()
                .filter(|(i, e)| is_candidate(*i, e))
                .nth(rank)
                .map(|(i, _)| i)
        };
        let index = match self.policy {
            LbPolicy::RoundRobin => nth(self.next.fetch_add(1, Ordering::Relaxed) % candidates),
            LbPolicy::LeastRequest if candidates == 1 => nth(0),
            LbPolicy::LeastRequest => {
                let first = random_below(candidates);
                let mut second = random_below(candidates - 1);
                if second >= first {
                    second += 1;
                }
                match (nth(first), nth(second)) {
                    (Some(a), Some(b)) => Some(fewer_in_flight(endpoints, a, b)),
                    (a, b) => a.or(b),
                }
            }
        };
        // A candidate that went down between the two passes: take any candidate left.
        index.or_else(|| nth(0))
    }
}

fn fewer_in_flight<E: Balanced>(endpoints: &[E], a: usize, b: usize) -> usize {
    let load = |i: usize| {
        endpoints
            .get(i)
            .map_or(usize::MAX, |e| e.health().in_flight())
    };
    if load(b) < load(a) { b } else { a }
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

/// A per-thread seed: std's randomly keyed hasher over the thread's id.
fn seed() -> u64 {
    let seed = RandomState::new().hash_one(std::thread::current().id());
    // xorshift must not start at zero.
    seed | 1
}

/// A number in `0..n` (n > 0) from the thread's xorshift64* generator; the modulo bias is
/// negligible for endpoint counts.
pub(crate) fn random_below(n: usize) -> usize {
    let x = RNG.with(|rng| {
        let mut x = rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        rng.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    });
    // The high bits are the better ones.
    ((x >> 32) as usize) % n.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::endpoint_health::{EndpointHealth, InFlight};
    use crate::upstream::health_check::HealthCheckConfig;
    use crate::upstream::outlier::{OutlierConfig, TryResult};
    use std::time::Duration;

    fn endpoints(n: usize) -> Vec<EndpointHealth> {
        (0..n).map(|_| EndpointHealth::default()).collect()
    }

    fn counts(b: &Balancer, eps: &[EndpointHealth], exclude: &[usize], n: usize) -> Vec<usize> {
        let mut seen = vec![0; eps.len()];
        for _ in 0..n {
            let pick = b.pick(eps, exclude, None, Instant::now()).expect("a pick");
            seen[pick] += 1;
        }
        seen
    }

    #[test]
    fn round_robin_takes_each_in_turn() {
        let eps = endpoints(3);
        let b = Balancer::new(LbPolicy::RoundRobin);
        let order: Vec<usize> = (0..6)
            .map(|_| b.pick(&eps, &[], None, Instant::now()).expect("pick"))
            .collect();
        assert_eq!(order, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn least_request_spreads_an_idle_backend_evenly() {
        let eps = endpoints(3);
        let seen = counts(&Balancer::new(LbPolicy::LeastRequest), &eps, &[], 3000);
        for s in seen {
            assert!((800..1200).contains(&s), "uneven spread: {s}");
        }
    }

    #[test]
    fn least_request_avoids_the_busy_endpoint() {
        let eps = endpoints(3);
        let _busy: Vec<InFlight> = (0..5).map(|_| eps[1].start()).collect();
        let seen = counts(&Balancer::new(LbPolicy::LeastRequest), &eps, &[], 3000);
        // Endpoint 1 only wins when drawn twice, which two distinct choices never do.
        assert_eq!(seen[1], 0);
        assert!(seen[0] > 1000 && seen[2] > 1000, "{seen:?}");
    }

    #[test]
    fn a_retry_goes_elsewhere_while_it_can() {
        let eps = endpoints(3);
        for policy in [LbPolicy::LeastRequest, LbPolicy::RoundRobin] {
            let b = Balancer::new(policy);
            let seen = counts(&b, &eps, &[0, 2], 50);
            assert_eq!(seen, [0, 50, 0]);
            // Everything tried: any endpoint again rather than no answer.
            let again = counts(&b, &eps, &[0, 1, 2], 300);
            assert!(again.iter().all(|&n| n > 0), "{again:?}");
        }
    }

    #[test]
    fn down_endpoints_are_skipped_and_none_left_is_none() {
        let eps = endpoints(3);
        let outlier = Outlier::new(
            OutlierConfig {
                consecutive_connect_failures: 1,
                max_ejection_percent: 100,
                ..OutlierConfig::default()
            },
            3,
        );
        let now = Instant::now();
        let ejected = eps[0].report(Some(&outlier), TryResult::ConnectFailure, now);
        assert!(ejected.is_some());
        let checks = HealthCheckConfig {
            path: "/".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy_threshold: 1,
            unhealthy_threshold: 1,
        };
        eps[1].record_check(false, &checks);
        for policy in [LbPolicy::LeastRequest, LbPolicy::RoundRobin] {
            let b = Balancer::new(policy);
            for _ in 0..20 {
                let pick = b.pick(&eps, &[], Some(&outlier), now);
                assert_eq!(pick, Some(2));
            }
            // The one left was tried: it is still the answer.
            assert_eq!(b.pick(&eps, &[2], Some(&outlier), now), Some(2));
        }
        eps[2].report(Some(&outlier), TryResult::ConnectFailure, now);
        let b = Balancer::new(LbPolicy::LeastRequest);
        assert_eq!(b.pick(&eps, &[], Some(&outlier), now), None);
        // After the ejection time endpoints 0 and 2 are back, and the pick says so.
        let later = now + Duration::from_secs(30);
        let pick = b.pick(&eps, &[], Some(&outlier), later).expect("pick");
        assert_ne!(pick, 1);
        assert!(eps[0].is_available(Some(&outlier), later));
        assert_eq!(b.pick(&endpoints(0), &[], None, now), None);
    }
}
