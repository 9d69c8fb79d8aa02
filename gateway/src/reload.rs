//! Hot reload: on a change of the config file (polled) and on SIGHUP, the whole new config is
//! read, parsed, validated and compiled; only then is it swapped in, atomically. Requests in
//! flight finish on the snapshot they loaded. A config that fails is logged with every error as
//! `file:line:col`, the last good one keeps serving and `gateway_config_synchronized` drops to 0.
//!
//! Listener names and addresses, and the admin address, are bound sockets: a reload that changes
//! them is refused (restart to apply). Everything else — routes, backends, policies,
//! authorization servers, listener TLS certificates — is reloaded. Backends and authorization
//! servers whose settings did not change keep their connections.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{Config, ConfigErrors, Overrides};
use crate::state::Shared;

/// How long a reload waits for a new gRPC authorization server to connect before swapping.
const WARM_UP_BUDGET: Duration = Duration::from_secs(2);

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read.
    #[error("{0}")]
    Read(String),
    /// The file is invalid; every problem with its place.
    #[error("{0}")]
    Invalid(ConfigErrors),
    /// The file changes what only a restart can change.
    #[error("{file}: {message}")]
    NeedsRestart {
        /// The config file.
        file: String,
        /// What changed.
        message: String,
    },
}

/// Watches one config file and publishes each good version.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    overrides: Overrides,
    shared: Arc<Shared>,
    last_seen: Mutex<Option<Vec<u8>>>,
}

impl Reloader {
    /// A reloader for `path` (the file `shared`'s config came from, with the same overrides).
    pub fn new(path: PathBuf, overrides: Overrides, shared: Arc<Shared>) -> Reloader {
        let last_seen = std::fs::read(&path).ok();
        Reloader {
            path,
            overrides,
            shared,
            last_seen: Mutex::new(last_seen),
        }
    }

    /// Reads, compiles and swaps in the file now; counts and logs the outcome.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let result = self.try_reload().await;
        let metrics = &self.shared.metrics;
        match &result {
            Ok(()) => {
                metrics.reloaded(true);
                tracing::info!(file = %self.path.display(), "config reloaded");
            }
            Err(e) => {
                metrics.reloaded(false);
                for line in e.to_string().lines() {
                    tracing::error!(error = %line, "config reload refused; the last good config keeps serving");
                }
            }
        }
        result
    }

    async fn try_reload(&self) -> Result<(), ReloadError> {
        let file = self.path.display().to_string();
        let bytes =
            std::fs::read(&self.path).map_err(|e| ReloadError::Read(format!("{file}: {e}")))?;
        if let Ok(mut seen) = self.last_seen.lock() {
            *seen = Some(bytes.clone());
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| ReloadError::Read(format!("{file}: not UTF-8")))?;
        let current = self.shared.config.load_full();
        let next = Config::from_toml_reusing(&text, &file, &self.overrides, Some(&current))
            .map_err(ReloadError::Invalid)?;
        if let Some(message) = needs_restart(&current, &next) {
            return Err(ReloadError::NeedsRestart { file, message });
        }
        // New gRPC authorization servers connect before the swap, so the first checks after it
        // do not spend their timeout on a handshake.
        let fresh: Vec<_> = next
            .authz_backends
            .iter()
            .filter(|(name, b)| {
                current
                    .authz_backends
                    .get(*name)
                    .is_none_or(|old| !Arc::ptr_eq(old, b))
            })
            .map(|(_, b)| b.clone())
            .collect();
        let connect_all = async {
            for backend in &fresh {
                backend.connect().await;
            }
        };
        let _ = tokio::time::timeout(WARM_UP_BUDGET, connect_all).await;
        self.shared.config.store(Arc::new(next));
        Ok(())
    }

    /// Reloads whenever the file's content changes (checked every `poll`) and on SIGHUP.
    pub async fn watch(self: Arc<Self>, poll: Duration) {
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut ticks = tokio::time::interval(poll);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let hup = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hup = std::future::pending::<Option<()>>();
            tokio::select! {
                _ = ticks.tick() => {
                    if self.changed() {
                        let _ = self.reload().await;
                    }
                }
                _ = hup => {
                    tracing::info!("SIGHUP: reloading the config");
                    let _ = self.reload().await;
                }
            }
        }
    }

    /// Whether the file differs from the last version read (a missing file is no change: the
    /// last good config keeps serving until the file is back).
    fn changed(&self) -> bool {
        let Ok(now) = std::fs::read(&self.path) else {
            return false;
        };
        self.last_seen
            .lock()
            .map(|seen| seen.as_deref() != Some(now.as_slice()))
            .unwrap_or(true)
    }
}

/// What differs between the running config and the next one that only a restart can apply.
fn needs_restart(current: &Config, next: &Config) -> Option<String> {
    let listeners = |c: &Config| -> Vec<(String, std::net::SocketAddr)> {
        c.listeners
            .iter()
            .map(|l| (l.name.clone(), l.address))
            .collect()
    };
    if listeners(current) != listeners(next) {
        return Some(format!(
            "listeners changed ({:?} → {:?}); listener names and addresses need a restart",
            listeners(current),
            listeners(next)
        ));
    }
    if current.admin != next.admin {
        return Some("the admin address changed; it needs a restart".into());
    }
    None
}
