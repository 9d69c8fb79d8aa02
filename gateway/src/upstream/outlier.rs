//! Passive health, as Envoy's outlier detection: an endpoint that answers too many 5xx in a row,
//! or that cannot be connected to too many times in a row, is ejected (takes no traffic) for
//! `base_ejection_time` × the number of times it has been ejected, capped at `max_ejection_time`.
//! At most `max_ejection_percent` of a backend's endpoints are ejected at once, but always at
//! least one may be: a backend with one broken endpoint out of three must be able to shed it.
//!
//! Counting, as Envoy does without `split_external_local_origin_errors`: a 5xx response, a
//! connect failure, a reset and a timeout all count toward `consecutive_5xx`; connect failures
//! also count toward `consecutive_connect_failures`. Any response below 500 resets both counts;
//! a 5xx response resets the connect count (a connection was made).
//!
//! The request path only reads and bumps atomics; the per-endpoint mutex is taken only when an
//! endpoint is ejected or returns. Time is `tokio::time::Instant` and is always passed in, so the
//! logic is tested without sleeping.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Envoy's `consecutive_5xx` default.
pub const DEFAULT_CONSECUTIVE_5XX: u32 = 5;
/// Envoy's `consecutive_gateway_failure` default, used for connect failures.
pub const DEFAULT_CONSECUTIVE_CONNECT_FAILURES: u32 = 5;
/// Envoy's `base_ejection_time` default.
pub const DEFAULT_BASE_EJECTION_TIME: Duration = Duration::from_secs(30);
/// Envoy's `max_ejection_time` default.
pub const DEFAULT_MAX_EJECTION_TIME: Duration = Duration::from_secs(300);
/// Envoy's `max_ejection_percent` default.
pub const DEFAULT_MAX_EJECTION_PERCENT: u32 = 10;
/// How often a returned endpoint's ejection count decays by one (Envoy's default `interval`,
/// at which its timer lowers the multiplier of an endpoint that stayed in).
const DECAY_INTERVAL: Duration = Duration::from_secs(10);

/// A backend's outlier-detection settings (validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierConfig {
    /// 5xx answers (and failed tries) in a row that eject an endpoint; 0 turns this rule off.
    pub consecutive_5xx: u32,
    /// Connect failures in a row that eject an endpoint; 0 turns this rule off.
    pub consecutive_connect_failures: u32,
    /// The first ejection's length; the n-th lasts n times this.
    pub base_ejection_time: Duration,
    /// No ejection lasts longer than this (or `base_ejection_time`, if that is longer).
    pub max_ejection_time: Duration,
    /// The share of endpoints that may be ejected at once, in percent (at least one may be).
    pub max_ejection_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_5xx: DEFAULT_CONSECUTIVE_5XX,
            consecutive_connect_failures: DEFAULT_CONSECUTIVE_CONNECT_FAILURES,
            base_ejection_time: DEFAULT_BASE_EJECTION_TIME,
            max_ejection_time: DEFAULT_MAX_EJECTION_TIME,
            max_ejection_percent: DEFAULT_MAX_EJECTION_PERCENT,
        }
    }
}

/// What one try on an endpoint came to, as outlier detection counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryResult {
    /// The endpoint answered with this status.
    Status(u16),
    /// No connection could be made.
    ConnectFailure,
    /// The connection or stream broke before the response headers.
    Reset,
    /// No response headers in time.
    Timeout,
}

/// An ejection that a report just caused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    /// How long the endpoint stays out.
    pub duration: Duration,
    /// How many times it has been ejected, this one included (after decay).
    pub times: u32,
}

/// The backend-wide part: the settings and how many endpoints are out right now.
#[derive(Debug)]
pub struct Outlier {
    config: OutlierConfig,
    endpoints: usize,
    ejected: AtomicUsize,
    epoch: Instant,
}

/// One endpoint's counters and ejection.
#[derive(Debug, Default)]
pub struct EjectionState {
    consecutive_5xx: AtomicU32,
    consecutive_connect: AtomicU32,
    /// Milliseconds after the backend's epoch at which the endpoint returns (plus one, so that 0
    /// can mean "not ejected").
    until: AtomicU64,
    history: Mutex<History>,
}

#[derive(Debug, Default)]
struct History {
    times: u32,
    returned_at: Option<Instant>,
}

impl Outlier {
    /// Detection over `endpoints` endpoints with `config`.
    pub fn new(config: OutlierConfig, endpoints: usize) -> Outlier {
        Outlier {
            config,
            endpoints,
            ejected: AtomicUsize::new(0),
            epoch: Instant::now(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &OutlierConfig {
        &self.config
    }

    /// How many endpoints are ejected now (those due to return count until they are seen).
    pub fn ejected_count(&self) -> usize {
        self.ejected.load(Ordering::Relaxed)
    }

    /// How many endpoints may be out at once: the percentage of the endpoints, at least one.
    fn max_ejected(&self) -> usize {
        let share = self.endpoints * self.config.max_ejection_percent as usize / 100;
        share.max(1)
    }

    fn millis(&self, at: Instant) -> u64 {
        // Saturating: an instant before the epoch (tests) is the epoch.
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Takes one more endpoint out, unless the cap is reached.
    fn reserve(&self) -> bool {
        let max = self.max_ejected();
        self.ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    fn ejection_time(&self, times: u32) -> Duration {
        let cap = self
            .config
            .max_ejection_time
            .max(self.config.base_ejection_time);
        self.config
            .base_ejection_time
            .saturating_mul(times)
            .min(cap)
    }
}

impl EjectionState {
    /// Whether the endpoint is out at `now`. An endpoint whose time is up is brought back here;
    /// the second value is true when this call did that (for the gauge and the log).
    pub fn check(&self, outlier: &Outlier, now: Instant) -> (bool, bool) {
        let until = self.until.load(Ordering::Acquire);
        if until == 0 {
            return (false, false);
        }
        if outlier.millis(now) + 1 < until {
            return (true, false);
        }
        (false, self.release(outlier, now))
    }

    /// Brings the endpoint back if it is out; true when this call did.
    fn release(&self, outlier: &Outlier, now: Instant) -> bool {
        let Ok(mut history) = self.history.lock() else {
            return false;
        };
        if self.until.swap(0, Ordering::AcqRel) == 0 {
            return false;
        }
        history.returned_at = Some(now);
        self.consecutive_5xx.store(0, Ordering::Relaxed);
        self.consecutive_connect.store(0, Ordering::Relaxed);
        outlier.ejected.fetch_sub(1, Ordering::AcqRel);
        true
    }

    /// Counts one try's result; returns the ejection it caused, if any.
    pub fn report(&self, outlier: &Outlier, result: TryResult, now: Instant) -> Option<Ejection> {
        let config = &outlier.config;
        let (fives, connects) = match result {
            TryResult::Status(s) if s < 500 => {
                self.consecutive_5xx.store(0, Ordering::Relaxed);
                self.consecutive_connect.store(0, Ordering::Relaxed);
                return None;
            }
            TryResult::Status(_) => {
                self.consecutive_connect.store(0, Ordering::Relaxed);
                (self.consecutive_5xx.fetch_add(1, Ordering::AcqRel) + 1, 0)
            }
            TryResult::ConnectFailure => (
                self.consecutive_5xx.fetch_add(1, Ordering::AcqRel) + 1,
                self.consecutive_connect.fetch_add(1, Ordering::AcqRel) + 1,
            ),
            TryResult::Reset | TryResult::Timeout => {
                (self.consecutive_5xx.fetch_add(1, Ordering::AcqRel) + 1, 0)
            }
        };
        let tripped = |limit: u32, count: u32| limit > 0 && count >= limit;
        if tripped(config.consecutive_5xx, fives)
            || tripped(config.consecutive_connect_failures, connects)
        {
            self.eject(outlier, now)
        } else {
            None
        }
    }

    fn eject(&self, outlier: &Outlier, now: Instant) -> Option<Ejection> {
        let mut history = self.history.lock().ok()?;
        if self.until.load(Ordering::Acquire) != 0 {
            // Already out (a try that started before the ejection reported late).
            return None;
        }
        if !outlier.reserve() {
            return None;
        }
        // The multiplier decays by one per interval the endpoint stayed in since it returned.
        if let Some(back) = history.returned_at {
            let stayed = now.saturating_duration_since(back).as_secs() / DECAY_INTERVAL.as_secs();
            history.times = history
                .times
                .saturating_sub(u32::try_from(stayed).unwrap_or(u32::MAX));
        }
        history.times = history.times.saturating_add(1);
        let duration = outlier.ejection_time(history.times);
        self.until
            .store(outlier.millis(now + duration) + 1, Ordering::Release);
        self.consecutive_5xx.store(0, Ordering::Relaxed);
        self.consecutive_connect.store(0, Ordering::Relaxed);
        Some(Ejection {
            duration,
            times: history.times,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OutlierConfig {
        OutlierConfig {
            consecutive_5xx: 3,
            consecutive_connect_failures: 2,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
        }
    }

    #[test]
    fn consecutive_5xx_eject_and_a_success_resets_the_count() {
        let outlier = Outlier::new(config(), 3);
        let e = EjectionState::default();
        let now = Instant::now();
        assert_eq!(e.report(&outlier, TryResult::Status(503), now), None);
        assert_eq!(e.report(&outlier, TryResult::Status(500), now), None);
        assert_eq!(e.report(&outlier, TryResult::Status(200), now), None);
        assert_eq!(e.report(&outlier, TryResult::Status(502), now), None);
        assert_eq!(e.report(&outlier, TryResult::Status(404), now), None);
        assert_eq!(e.report(&outlier, TryResult::Status(503), now), None);
        assert_eq!(e.report(&outlier, TryResult::Reset, now), None);
        let ejected = e.report(&outlier, TryResult::Status(503), now);
        assert_eq!(
            ejected,
            Some(Ejection {
                duration: Duration::from_secs(30),
                times: 1
            })
        );
        assert_eq!(e.check(&outlier, now), (true, false));
        assert_eq!(outlier.ejected_count(), 1);
    }

    #[test]
    fn connect_failures_eject_sooner_and_a_5xx_answer_resets_them() {
        let outlier = Outlier::new(config(), 3);
        let e = EjectionState::default();
        let now = Instant::now();
        assert_eq!(e.report(&outlier, TryResult::ConnectFailure, now), None);
        assert_eq!(e.report(&outlier, TryResult::Status(500), now), None);
        // 5xx count is now 2, connect count 0: one connect failure makes 3 fives.
        assert!(e.report(&outlier, TryResult::ConnectFailure, now).is_some());
        let other = EjectionState::default();
        let outlier = Outlier::new(config(), 3);
        assert_eq!(other.report(&outlier, TryResult::ConnectFailure, now), None);
        assert!(
            other
                .report(&outlier, TryResult::ConnectFailure, now)
                .is_some()
        );
    }

    #[test]
    fn an_ejected_endpoint_returns_after_its_time_and_the_next_ejection_is_longer() {
        let outlier = Outlier::new(config(), 3);
        let e = EjectionState::default();
        let t0 = Instant::now();
        for _ in 0..2 {
            e.report(&outlier, TryResult::ConnectFailure, t0);
        }
        assert_eq!(
            e.check(&outlier, t0 + Duration::from_secs(29)),
            (true, false)
        );
        let back = t0 + Duration::from_secs(30);
        assert_eq!(e.check(&outlier, back), (false, true));
        assert_eq!(e.check(&outlier, back), (false, false));
        assert_eq!(outlier.ejected_count(), 0);
        e.report(&outlier, TryResult::ConnectFailure, back);
        let second = e.report(&outlier, TryResult::ConnectFailure, back);
        assert_eq!(second.map(|s| s.duration), Some(Duration::from_secs(60)));
        assert_eq!(
            e.check(&outlier, back + Duration::from_secs(59)),
            (true, false)
        );
        assert_eq!(
            e.check(&outlier, back + Duration::from_secs(60)),
            (false, true)
        );
    }

    #[test]
    fn ejection_time_is_capped_and_decays_while_the_endpoint_stays_in() {
        let outlier = Outlier::new(
            OutlierConfig {
                max_ejection_time: Duration::from_secs(70),
                ..config()
            },
            3,
        );
        assert_eq!(outlier.ejection_time(2), Duration::from_secs(60));
        assert_eq!(outlier.ejection_time(5), Duration::from_secs(70));
        let e = EjectionState::default();
        let mut now = Instant::now();
        for times in 1..=2 {
            e.report(&outlier, TryResult::ConnectFailure, now);
            let ejected = e.report(&outlier, TryResult::ConnectFailure, now);
            assert_eq!(ejected.map(|x| x.times), Some(times));
            now += Duration::from_secs(300);
            assert!(!e.check(&outlier, now).0);
        }
        // In for 20 s since returning: two decay intervals, so this is the first ejection again.
        now += Duration::from_secs(20);
        e.report(&outlier, TryResult::ConnectFailure, now);
        let again = e.report(&outlier, TryResult::ConnectFailure, now);
        assert_eq!(again.map(|x| x.times), Some(1));
    }

    #[test]
    fn at_most_the_percentage_is_ejected_but_always_one_may_be() {
        let now = Instant::now();
        let outlier = Outlier::new(config(), 3);
        let endpoints: Vec<EjectionState> = (0..3).map(|_| EjectionState::default()).collect();
        let mut ejected = 0;
        for e in &endpoints {
            e.report(&outlier, TryResult::ConnectFailure, now);
            if e.report(&outlier, TryResult::ConnectFailure, now).is_some() {
                ejected += 1;
            }
        }
        assert_eq!(ejected, 1, "10 % of 3 endpoints is 0, raised to one");
        let half = Outlier::new(
            OutlierConfig {
                max_ejection_percent: 50,
                ..config()
            },
            4,
        );
        let endpoints: Vec<EjectionState> = (0..4).map(|_| EjectionState::default()).collect();
        let ejected = endpoints
            .iter()
            .filter(|e| {
                e.report(&half, TryResult::ConnectFailure, now);
                e.report(&half, TryResult::ConnectFailure, now).is_some()
            })
            .count();
        assert_eq!(ejected, 2);
        // One returns: the slot frees for another.
        assert!(endpoints[0].check(&half, now + Duration::from_secs(30)).1);
        assert!(
            endpoints[2]
                .report(&half, TryResult::ConnectFailure, now)
                .is_some()
        );
    }

    #[test]
    fn a_zero_threshold_never_ejects() {
        let outlier = Outlier::new(
            OutlierConfig {
                consecutive_5xx: 0,
                consecutive_connect_failures: 0,
                ..config()
            },
            1,
        );
        let e = EjectionState::default();
        let now = Instant::now();
        for _ in 0..100 {
            assert_eq!(e.report(&outlier, TryResult::ConnectFailure, now), None);
        }
    }
}
