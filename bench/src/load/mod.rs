//! The load loops, shared by the gRPC and HTTP callers.
//!
//! A *caller* owns one slot of concurrency and performs one checked exchange per `call`: an answer
//! that is not the expected one (a deny where an allow was wanted, a 5xx, a transport error) is an
//! error, so a misconfigured scenario cannot quietly measure the wrong path.
//!
//! - Closed loop: every caller starts its next call as soon as the last one ends, so `concurrency`
//!   calls are always in flight; latency is end − start.
//! - Open loop: calls are due on a fixed schedule (`rate` per second); the callers take the next due
//!   time from a shared counter and latency counts from that *intended* start, not from when a
//!   caller got free. A server that falls behind therefore shows its queueing in the percentiles
//!   instead of slowing the load down (coordinated omission, as wrk2 corrects it).

pub mod grpc;
pub mod http;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

/// An answer slower than this is an error (and frees the slot), so a stuck server ends the run.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// One checked request/answer exchange on a connection the caller holds.
pub trait Caller: Send + 'static {
    /// Sends one request and checks the answer; `Err` says what was wrong with it.
    fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send;
}

/// How the load is offered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Loop {
    /// Each caller keeps one call in flight.
    Closed,
    /// Calls start on a fixed schedule, `rate` per second, with at most one in flight per caller.
    Open {
        /// Calls per second.
        rate: f64,
    },
}

/// What to run: how long, and how.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Calls made before this are not recorded (connections warm, caches filled).
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// Closed or open loop.
    pub mode: Loop,
}

/// What a run measured, over the measured window only.
pub struct Outcome {
    /// Calls that got the expected answer.
    pub ok: u64,
    /// Calls that did not (wrong answer, transport error, timeout).
    pub errors: u64,
    /// The first error seen, to say what went wrong.
    pub first_error: Option<String>,
    /// Latency of the good calls, in nanoseconds.
    pub latency_ns: Histogram<u64>,
}

/// A histogram from 1 ns to a minute, three significant digits.
fn histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used)] // constant, valid bounds
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

/// Runs `plan` with one task per caller and merges what they measured.
pub async fn run<C: Caller>(callers: Vec<C>, plan: Plan) -> Outcome {
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let until = measure_from + plan.duration;
    let next_due = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(callers.len());
    for mut caller in callers {
        let next_due = next_due.clone();
        tasks.push(tokio::spawn(async move {
            let mut outcome = Outcome {
                ok: 0,
                errors: 0,
                first_error: None,
                latency_ns: histogram(),
            };
            loop {
                let intended = match plan.mode {
                    Loop::Closed => Instant::now(),
                    Loop::Open { rate } => {
                        let index = next_due.fetch_add(1, Ordering::Relaxed);
                        let due = start + Duration::from_secs_f64(index as f64 / rate);
                        if due > Instant::now() {
                            tokio::time::sleep_until(due).await;
                        }
                        due
                    }
                };
                if intended >= until {
                    break;
                }
                let result = match tokio::time::timeout(CALL_TIMEOUT, caller.call()).await {
                    Ok(result) => result,
                    Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
                };
                if intended < measure_from {
                    continue;
                }
                match result {
                    Ok(()) => {
                        outcome.ok += 1;
                        let nanos =
                            u64::try_from(intended.elapsed().as_nanos()).unwrap_or(u64::MAX);
                        outcome.latency_ns.saturating_record(nanos.max(1));
                    }
                    Err(error) => {
                        outcome.errors += 1;
                        outcome.first_error.get_or_insert(error);
                    }
                }
            }
            outcome
        }));
    }
    let mut total = Outcome {
        ok: 0,
        errors: 0,
        first_error: None,
        latency_ns: histogram(),
    };
    for task in tasks {
        match task.await {
            Ok(outcome) => {
                total.ok += outcome.ok;
                total.errors += outcome.errors;
                if total.first_error.is_none() {
                    total.first_error = outcome.first_error;
                }
                // Same bounds on both sides, so adding cannot fail.
                let _ = total.latency_ns.add(&outcome.latency_ns);
            }
            Err(error) => {
                total.errors += 1;
                total
                    .first_error
                    .get_or_insert(format!("load task failed: {error}"));
            }
        }
    }
    total
}
