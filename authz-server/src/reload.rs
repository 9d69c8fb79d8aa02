//! Hot reload: the config file is re-read when it changes on disk or on SIGHUP. A new config is
//! parsed, validated and compiled completely before it replaces the old one; one that fails is
//! logged with every error, and the last good rules keep serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::authorizer::RuleEngine;
use crate::config::{Config, ServerSection};
use crate::metrics::Metrics;

/// How often the file's modification time and size are compared.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Watches `path` and reloads `engine` from it until the task is dropped.
pub struct Reloader {
    path: PathBuf,
    engine: RuleEngine,
    metrics: Arc<Metrics>,
    listening: ServerSection,
    seen: Option<(SystemTime, u64)>,
}

impl Reloader {
    /// A reloader for the config at `path`, currently serving with `listening` addresses.
    pub fn new(
        path: PathBuf,
        engine: RuleEngine,
        metrics: Arc<Metrics>,
        listening: ServerSection,
    ) -> Self {
        let seen = fingerprint(&path);
        Self {
            path,
            engine,
            metrics,
            listening,
            seen,
        }
    }

    /// Polls the file every `interval` and listens for SIGHUP, reloading on either.
    pub async fn run(mut self, interval: Duration) {
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            #[cfg(unix)]
            let hangup_received = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hangup_received = std::future::pending::<Option<()>>();
            tokio::select! {
                _ = ticks.tick() => {
                    let now = fingerprint(&self.path);
                    if now != self.seen {
                        self.seen = now;
                        self.reload("file changed");
                    }
                }
                _ = hangup_received => {
                    self.seen = fingerprint(&self.path);
                    self.reload("SIGHUP");
                }
            }
        }
    }

    /// Loads, compiles and publishes the config; on failure keeps the rules in force.
    pub fn reload(&self, reason: &'static str) -> bool {
        match Config::load(&self.path) {
            Ok(config) => {
                if config.server.grpc != self.listening.grpc
                    || config.server.http != self.listening.http
                {
                    tracing::warn!(
                        "reload: [server] listen addresses changed; they take effect on restart"
                    );
                }
                for warning in config.warnings(self.listening.http.is_some()) {
                    tracing::warn!("reload: {warning}");
                }
                let count = config.rules.len();
                self.engine.replace(config.rules);
                self.metrics.reload(true);
                tracing::info!(reason, rules = count, file = %self.path.display(), "reload: new rules in force");
                true
            }
            Err(error) => {
                self.metrics.reload(false);
                for line in error.to_string().lines() {
                    tracing::error!(
                        reason,
                        "reload refused, last good config keeps serving: {line}"
                    );
                }
                false
            }
        }
    }
}

/// Modification time and size: enough to notice an edit, a rename-over or a truncation.
fn fingerprint(path: &Path) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}
