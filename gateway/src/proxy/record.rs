//! What the steps of one request write down for the last step, the log.

use std::sync::Arc;
use std::time::Duration;

/// What happened to one request, filled in as it walks the pipeline.
#[derive(Debug, Default)]
pub(super) struct Record {
    /// The route that served it (`None`: no route, or no canonical form).
    pub(super) route: Option<Arc<str>>,
    /// Its authorization.
    pub(super) authz: AuthzRecord,
    /// How long the backend took to answer, when it was asked.
    pub(super) upstream_latency: Option<Duration>,
}

/// The authorization part of an access-log line.
#[derive(Debug)]
pub(super) struct AuthzRecord {
    /// `none`, `allowed`, `denied`, `error`, `failure_mode_allowed` or `body_rejected`: the
    /// last policy's.
    pub(super) outcome: &'static str,
    /// The last policy run.
    pub(super) policy: Option<Arc<str>>,
    /// Time spent in checks, all policies together.
    pub(super) latency: Duration,
    /// The allows' dynamic metadata, as the servers sent it.
    pub(super) metadata: Vec<String>,
}

impl Default for AuthzRecord {
    fn default() -> AuthzRecord {
        AuthzRecord {
            outcome: "none",
            policy: None,
            latency: Duration::ZERO,
            metadata: Vec::new(),
        }
    }
}
