//! The state every request and the admin endpoint share: the config snapshot in force, the
//! metrics and the draining flag. The server creates it, the proxy, the admin endpoint and hot
//! reload read it; it names none of them.

use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::metrics::Metrics;

/// What every request and the admin endpoint share.
#[derive(Debug)]
pub struct Shared {
    /// The config in force; a reload swaps it whole, each request loads it once.
    pub config: ArcSwap<Config>,
    /// The metrics.
    pub metrics: Metrics,
    draining: AtomicBool,
}

impl Shared {
    /// Shared state around a first config.
    pub fn new(config: Config) -> Shared {
        Shared {
            config: ArcSwap::from_pointee(config),
            metrics: Metrics::new(),
            draining: AtomicBool::new(false),
        }
    }

    /// Whether shutdown has begun (`/readyz` answers 503).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Marks shutdown as begun; there is no way back.
    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }
}
