//! Hot reload: the config file is re-read when it or a Rego policy or data file its rules read
//! changes on disk, or on SIGHUP. A new config is
//! parsed, validated and compiled completely before it replaces the old one; one that fails is
//! logged with every error, and the last good rules keep serving.
//!
//! # Never losing an edit
//!
//! What the reloader compares with the disk is what the last load *read*: each file's digest
//! (see [`rules::FileRead`]), recorded whether the load succeeded or was refused. A stamp (size,
//! mtime, ctime, inode) only spares re-reading a file, and only a stamp taken *before* a read
//! whose bytes matched. So:
//!
//! - an edit that lands while a load runs differs from what that load read, and the next poll
//!   loads it (a stamp taken after the load would have recorded the edit as seen);
//! - a file read half-written by a `>` rewrite is refused, and the finished file differs from the
//!   half that was read, so it is loaded once complete;
//! - a rewrite inside one timestamp granule keeps the stamp; a stamp whose times are within
//!   [`RACY_WINDOW`] of when it was taken is not trusted, and the file is hashed on each poll
//!   until its times are old enough (git's "racy clean" rule).
//!
//! Loads run on the blocking pool: a large data file takes a while to parse, and the runtime's
//! workers keep serving meanwhile.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use rules::{Digest, FileRead};

use crate::config::{Config, LoadError, ServerSection};
use crate::metrics::Metrics;
use crate::rule_engine::RuleEngine;

/// How often the files' stamps are compared.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// A stamp whose modification or change time is this close to when it was taken does not
/// vouch for the content: a later write may land in the same timestamp granule (one jiffy on
/// Linux local file systems, up to 2 s on FAT and some network file systems).
pub const RACY_WINDOW: Duration = Duration::from_secs(2);

/// Watches `path` and reloads `engine` from it until the task is dropped.
pub struct Reloader {
    path: PathBuf,
    engine: RuleEngine,
    metrics: Arc<Metrics>,
    listening: ServerSection,
    /// The files the last load read (the config first), compared with the disk on each poll.
    watched: Mutex<Vec<Watched>>,
}

impl Reloader {
    /// A reloader for the config at `path`, currently serving with `listening` addresses. It
    /// starts from the files as they are on disk now; [`Reloader::loaded_from`] gives it what the
    /// serving config read instead.
    pub fn new(
        path: PathBuf,
        engine: RuleEngine,
        metrics: Arc<Metrics>,
        listening: ServerSection,
    ) -> Self {
        let on_disk = std::iter::once(path.clone())
            .chain(engine.rego_files())
            .map(|path| {
                let digest = read_digest(&path);
                FileRead { path, digest }
            })
            .collect();
        let watched = Mutex::new(Watched::all(on_disk, &[]));
        Self {
            path,
            engine,
            metrics,
            listening,
            watched,
        }
    }

    /// Starts from the files the serving config was loaded from ([`Config::files`]), so an edit
    /// made between that load and this reloader's start is not taken for the content in force.
    #[must_use]
    pub fn loaded_from(self, files: Vec<FileRead>) -> Self {
        if !files.is_empty() {
            *self.watched.lock().unwrap_or_else(PoisonError::into_inner) = Watched::all(files, &[]);
        }
        self
    }

    /// Polls the files every `interval` and listens for SIGHUP, reloading on either.
    pub async fn run(self, interval: Duration) {
        let this = Arc::new(self);
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
            let reason = tokio::select! {
                _ = ticks.tick() => "file changed",
                _ = hangup_received => "SIGHUP",
            };
            let this = this.clone();
            let _ = tokio::task::spawn_blocking(move || {
                if reason == "SIGHUP" || this.changed() {
                    this.reload(reason);
                }
            })
            .await;
        }
    }

    /// Whether a file the last load read differs from what it read (hashing only the files
    /// whose stamps do not vouch for them).
    fn changed(&self) -> bool {
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        // Every file is looked at (no short circuit), so each unchanged one gets a fresh stamp.
        let mut changed = false;
        for file in watched.iter_mut() {
            changed |= !file.unchanged();
        }
        changed
    }

    /// Loads, compiles and publishes the config; on failure keeps the rules in force. Either way,
    /// what the load read is what the next polls compare with.
    pub fn reload(&self, reason: &'static str) -> bool {
        let stamps = self.stamps_before_load();
        let (loaded, files) = Config::load_reading(&self.path);
        *self.watched.lock().unwrap_or_else(PoisonError::into_inner) = Watched::all(files, &stamps);
        self.publish(loaded, reason)
    }

    /// The stamps of the files the last load read, taken now, before the next load reads them.
    fn stamps_before_load(&self) -> Vec<(PathBuf, Stamp)> {
        let watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        watched
            .iter()
            .filter_map(|file| Some((file.path.clone(), Stamp::now(&file.path)?)))
            .collect()
    }

    fn publish(&self, loaded: Result<Config, LoadError>, reason: &'static str) -> bool {
        match loaded {
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

/// One file a load read, and what the reloader knows of it.
#[derive(Debug)]
struct Watched {
    path: PathBuf,
    /// The digest of what the load read (`None`: it could not read the file).
    loaded: Option<Digest>,
    /// A stamp taken before a read that matched `loaded`; `None` until there is one.
    stamp: Option<Stamp>,
}

impl Watched {
    /// What a load read, with the stamps taken before it for the files that had one.
    fn all(files: Vec<FileRead>, stamps: &[(PathBuf, Stamp)]) -> Vec<Watched> {
        files
            .into_iter()
            .map(|FileRead { path, digest }| {
                let stamp = stamps
                    .iter()
                    .find(|(stamped, _)| *stamped == path)
                    .map(|(_, stamp)| *stamp);
                Watched {
                    path,
                    loaded: digest,
                    stamp,
                }
            })
            .collect()
    }

    /// Whether the file still holds what the load read. A trusted, equal stamp answers at once;
    /// otherwise the file is read and hashed, and a match refreshes the stamp.
    fn unchanged(&mut self) -> bool {
        let now = Stamp::now(&self.path);
        match (&now, &self.stamp) {
            (Some(now), Some(stamp)) if now.fingerprint == stamp.fingerprint && stamp.trusted() => {
                return true;
            }
            (None, _) if self.loaded.is_none() => return true,
            _ => {}
        }
        if read_digest(&self.path) != self.loaded {
            return false;
        }
        self.stamp = now;
        true
    }
}

/// A file's [`Fingerprint`] and when it was taken.
#[derive(Clone, Copy, Debug)]
struct Stamp {
    fingerprint: Fingerprint,
    taken: SystemTime,
}

impl Stamp {
    /// The file's fingerprint now; `None` when it cannot be read.
    fn now(path: &Path) -> Option<Stamp> {
        let taken = SystemTime::now();
        Some(Stamp {
            fingerprint: fingerprint(path)?,
            taken,
        })
    }

    /// Whether a later write would change the fingerprint: the file's times are older than
    /// the stamp by more than [`RACY_WINDOW`].
    fn trusted(&self) -> bool {
        let newest = self.fingerprint.modified.max(self.fingerprint.changed);
        self.taken
            .duration_since(newest)
            .is_ok_and(|age| age > RACY_WINDOW)
    }
}

/// What identifies the file's content on disk, following symlinks: modification time and size
/// (an edit, a truncation), the status change time (a copy that keeps the mtime still sets it,
/// and no one can set it back), and on Unix the device and inode of the file the path resolves
/// to. A Kubernetes ConfigMap volume updates by swapping a `..data` symlink to a new directory;
/// the new file may keep the old one's size and even its mtime, but it is always a different
/// inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint {
    modified: SystemTime,
    changed: SystemTime,
    len: u64,
    file: (u64, u64),
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let metadata = std::fs::metadata(path).ok()?;
    let modified = metadata.modified().ok()?;
    #[cfg(unix)]
    let (file, changed) = {
        use std::os::unix::fs::MetadataExt;
        let seconds = u64::try_from(metadata.ctime()).unwrap_or(0);
        let nanos = u32::try_from(metadata.ctime_nsec()).unwrap_or(0);
        let changed = SystemTime::UNIX_EPOCH + Duration::new(seconds, nanos);
        ((metadata.dev(), metadata.ino()), changed)
    };
    #[cfg(not(unix))]
    let (file, changed) = ((0, 0), modified);
    Some(Fingerprint {
        modified,
        changed,
        len: metadata.len(),
        file,
    })
}

/// The digest of the file's bytes now; `None` when it cannot be read.
fn read_digest(path: &Path) -> Option<Digest> {
    std::fs::read(path).ok().map(|bytes| rules::digest(&bytes))
}

#[cfg(test)]
mod tests;
