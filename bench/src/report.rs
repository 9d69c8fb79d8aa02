//! The one JSON line `loadgen` prints per run, which the runner reads back.

use serde::{Deserialize, Serialize};

use crate::load::{Loop, Outcome, Plan};

/// What one load-generator run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// The scenario's name, as given on the command line.
    pub scenario: String,
    /// `closed` or `open`.
    pub mode: String,
    /// Calls in flight (closed loop) or at most in flight (open loop).
    pub concurrency: usize,
    /// Connections the calls were spread over.
    pub connections: usize,
    /// The offered rate of an open loop, calls per second; 0 for a closed loop.
    pub offered_rps: f64,
    /// Length of the measured window, seconds.
    pub seconds: f64,
    /// Good answers in the window.
    pub requests: u64,
    /// Wrong answers, transport errors and timeouts in the window.
    pub errors: u64,
    /// Good answers per second.
    pub rps: f64,
    /// Latency percentiles of the good answers, microseconds.
    pub p50_us: f64,
    /// 90th percentile, µs.
    pub p90_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// 99.9th percentile, µs.
    pub p999_us: f64,
    /// Slowest good answer, µs.
    pub max_us: f64,
    /// The first error, if any.
    pub first_error: Option<String>,
}

impl RunReport {
    /// Summarises `outcome` of `plan` for `scenario`.
    pub fn new(
        scenario: &str,
        plan: &Plan,
        concurrency: usize,
        connections: usize,
        outcome: &Outcome,
    ) -> RunReport {
        let seconds = plan.duration.as_secs_f64();
        let at = |q: f64| outcome.latency_ns.value_at_quantile(q) as f64 / 1000.0;
        let (mode, offered_rps) = match plan.mode {
            Loop::Closed => ("closed", 0.0),
            Loop::Open { rate } => ("open", rate),
        };
        RunReport {
            scenario: scenario.to_owned(),
            mode: mode.to_owned(),
            concurrency,
            connections,
            offered_rps,
            seconds,
            requests: outcome.ok,
            errors: outcome.errors,
            rps: outcome.ok as f64 / seconds,
            p50_us: at(0.5),
            p90_us: at(0.9),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: outcome.latency_ns.max() as f64 / 1000.0,
            first_error: outcome.first_error.clone(),
        }
    }
}
