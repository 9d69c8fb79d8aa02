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
    /// Only these scenarios ([`selected`]).
    pub only: Option<String>,
    /// Smoke mode: assert, don't report.
    pub smoke: bool,
}

/// Whether `--only` selects scenario `name`: `only` is a comma-separated list; an item selects
/// the names containing it, or, written `=name`, exactly that name.
pub(super) fn selected(only: &str, name: &str) -> bool {
    only.split(',')
        .map(str::trim)
        .any(|item| match item.strip_prefix('=') {
            Some(exact) => name == exact,
            None => !item.is_empty() && name.contains(item),
        })
}

#[cfg(test)]
mod tests {
    use super::selected;

    #[test]
    fn only_takes_substrings_and_exact_names() {
        assert!(selected("https", "gateway, https backend, http1"));
        assert!(selected("=gateway,grpc backend", "gateway"));
        assert!(selected("=gateway,grpc backend", "nginx, grpc backend"));
        assert!(!selected("=gateway,grpc backend", "gateway, c=1"));
        assert!(!selected("=gateway,", "gateway + grpc authz"));
    }
}
