//! What a run measures and where it writes, as the `bench` command line sets it.

use std::path::PathBuf;

/// What to run and where to write it.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rounds; every scenario is measured once per round.
    pub rounds: usize,
    /// Measured seconds per measurement.
    pub seconds: f64,
    /// Unmeasured seconds before each measurement.
    pub warmup: f64,
    /// Calls in flight in the closed-loop scenarios.
    pub concurrency: usize,
    /// HTTP/2 connections the gRPC calls are spread over.
    pub connections: usize,
    /// Calls per second of the open-loop scenarios.
    pub rate: f64,
    /// Where `authz-server`, `gateway`, `floor` and `loadgen` are.
    pub bin_dir: PathBuf,
    /// nginx, when installed.
    pub nginx: Option<PathBuf>,
    /// Only scenarios whose name contains this.
    pub only: Option<String>,
    /// Smoke mode: assert, don't report.
    pub smoke: bool,
}
