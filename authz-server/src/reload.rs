//! Hot reload: the config file is re-read when it or a Rego policy or data file its rules read
//! changes on disk, or on SIGHUP. A new config is
//! parsed, validated and compiled completely before it replaces the old one; one that fails is
//! logged with every error, and the last good rules keep serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::{Config, ServerSection};
use crate::metrics::Metrics;
use crate::rule_engine::RuleEngine;

/// How often the file's fingerprint (mtime, size, inode) is compared.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Watches `path` and reloads `engine` from it until the task is dropped.
pub struct Reloader {
    path: PathBuf,
    engine: RuleEngine,
    metrics: Arc<Metrics>,
    listening: ServerSection,
    /// The config's fingerprint, then those of the Rego files the rules in force read.
    seen: Vec<Option<Fingerprint>>,
}

impl Reloader {
    /// A reloader for the config at `path`, currently serving with `listening` addresses.
    pub fn new(
        path: PathBuf,
        engine: RuleEngine,
        metrics: Arc<Metrics>,
        listening: ServerSection,
    ) -> Self {
        let seen = fingerprints(&path, &engine);
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
                    let now = fingerprints(&self.path, &self.engine);
                    if now != self.seen {
                        self.reload("file changed");
                        // The rules now in force may read other Rego files.
                        self.seen = fingerprints(&self.path, &self.engine);
                    }
                }
                _ = hangup_received => {
                    self.reload("SIGHUP");
                    self.seen = fingerprints(&self.path, &self.engine);
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

/// What identifies the file's content on disk, following symlinks: modification time and size
/// (an edit, a truncation), and on Unix the device and inode of the file the path resolves to. A
/// Kubernetes ConfigMap volume updates by swapping a `..data` symlink to a new directory; the
/// new file may keep the old one's size and even its mtime (a copy that preserves times), but it
/// is always a different inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint {
    modified: SystemTime,
    len: u64,
    file: (u64, u64),
}

/// The config's fingerprint, then each Rego policy and data file's the engine's rules read.
fn fingerprints(config: &Path, engine: &RuleEngine) -> Vec<Option<Fingerprint>> {
    std::iter::once(fingerprint(config))
        .chain(engine.rego_files().iter().map(|file| fingerprint(file)))
        .collect()
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let metadata = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let file = {
        use std::os::unix::fs::MetadataExt;
        (metadata.dev(), metadata.ino())
    };
    #[cfg(not(unix))]
    let file = (0, 0);
    Some(Fingerprint {
        modified: metadata.modified().ok()?,
        len: metadata.len(),
        file,
    })
}
