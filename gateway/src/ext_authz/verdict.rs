//! What a check comes back with: the server's [`Verdict`], transport-neutral, and the
//! [`Resolution`] the proxy acts on once failure mode is applied.

use super::mutation::{Allowed, Denied};

/// What the authorization server said, independent of transport.
#[derive(Debug)]
pub enum Verdict {
    /// Let the request through, with these changes.
    Allow(Allowed),
    /// Answer the client with this.
    Deny(Denied),
    /// The check failed: timeout, transport error, 5xx, a malformed answer, or the server's own
    /// `error_response` (carried to the client when failure mode does not allow).
    Error {
        /// Why, for the log.
        reason: String,
        /// The server's `error_response`, if it sent one.
        response: Option<Denied>,
    },
    /// The server allowed with changes that cannot be made. Unlike [`Verdict::Error`] this never
    /// lets the request through: forwarding it without the changes could skip one that mattered
    /// (a credential removed from the query), so the client gets `status_on_error`.
    Invalid {
        /// Why, for the log.
        reason: String,
    },
}

/// What the proxy does after one policy.
#[derive(Debug)]
pub enum Resolution {
    /// Continue with these changes applied.
    Allow(Allowed),
    /// The check failed but `failure_mode_allow` lets the request through.
    FailureModeAllow {
        /// Why the check failed.
        reason: String,
    },
    /// Answer the client with this and stop.
    Deny(Denied),
    /// The check failed and the client gets the error status.
    Error {
        /// Why the check failed.
        reason: String,
        /// What the client gets; a missing status means `status_on_error`.
        response: Denied,
    },
}

impl Resolution {
    /// `allowed`, `denied`, `failure_mode_allowed` or `error`, as logs and spans name it.
    pub fn outcome(&self) -> &'static str {
        match self {
            Resolution::Allow(_) => "allowed",
            Resolution::Deny(_) => "denied",
            Resolution::FailureModeAllow { .. } => "failure_mode_allowed",
            Resolution::Error { .. } => "error",
        }
    }

    /// Whether the check failed (whatever failure mode then decided).
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Resolution::FailureModeAllow { .. } | Resolution::Error { .. }
        )
    }
}
