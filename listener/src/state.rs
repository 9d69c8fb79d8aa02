//! What the supervisor, the socket and the requests of one connection share: the counters and
//! clocks the connection's timers are computed from, and the guard that counts a request in
//! flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::Limits;

/// What the supervisor, the socket and the requests of one connection share.
pub(crate) struct State {
    pub(crate) started: Instant,
    /// Requests whose response has not been sent in full.
    pub(crate) active: AtomicUsize,
    /// Requests received.
    pub(crate) served: AtomicU64,
    /// When (ms since `started`) the connection last had nothing in flight.
    pub(crate) idle_since: AtomicU64,
    /// When (ms since `started`, plus one; 0 = not reading) bytes of the next HTTP/1 request
    /// head arrived with nothing in flight.
    pub(crate) head_started: AtomicU64,
    /// The client speaks h2 (bytes arrive between requests: PINGs, window updates).
    pub(crate) http2: AtomicBool,
    /// `max_requests_per_connection` reached, or a reset flood: close gracefully (GOAWAY).
    pub(crate) goaway: AtomicBool,
    /// Requests the client abandoned (h2 `RST_STREAM`) less than
    /// [`crate::PREMATURE_RESET_LIFETIME`]
    /// after they started.
    pub(crate) premature_resets: AtomicU64,
    /// Tells the supervisor its deadlines changed.
    pub(crate) wake: Notify,
}

impl State {
    pub(crate) fn new() -> State {
        State {
            started: Instant::now(),
            active: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            http2: AtomicBool::new(false),
            goaway: AtomicBool::new(false),
            premature_resets: AtomicU64::new(0),
            wake: Notify::new(),
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn at(&self, ms: u64) -> Instant {
        self.started + Duration::from_millis(ms)
    }
}

/// A request in flight; dropping it (when the response body is done or dropped) may start the
/// idle timer.
pub(crate) struct InFlight(Arc<State>);

impl InFlight {
    /// Counts a new request; true when it is the last one the connection may serve.
    pub(crate) fn enter(state: &Arc<State>, limits: &Limits) -> (InFlight, bool) {
        state.active.fetch_add(1, Ordering::SeqCst);
        state.head_started.store(0, Ordering::SeqCst);
        let served = state.served.fetch_add(1, Ordering::SeqCst) + 1;
        let last = limits
            .max_requests_per_connection
            .is_some_and(|max| served >= max);
        if last {
            state.goaway.store(true, Ordering::SeqCst);
        }
        state.wake.notify_one();
        (InFlight(state.clone()), last)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.idle_since.store(self.0.now_ms(), Ordering::SeqCst);
        self.0.active.fetch_sub(1, Ordering::SeqCst);
        self.0.wake.notify_one();
    }
}
