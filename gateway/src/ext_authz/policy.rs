//! One ext_auth policy, validated, and [`ExtAuthz::check`]: the one place a verdict becomes
//! "continue" or "respond", failure mode included.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ::http::StatusCode;

use super::backend::AuthzBackend;
use super::check_request::{self, HeaderFilter};
use super::http::HttpSettings;
use super::input::{CheckInput, WithRequestBody};
use super::mutation::Denied;
use super::verdict::{Resolution, Verdict};
use super::{grpc, http};

/// The header Envoy adds to a request let through by `failure_mode_allow`.
pub const FAILURE_MODE_ALLOWED_HEADER: &str = "x-envoy-auth-failure-mode-allowed";

/// Envoy's default check timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);

/// One ext_auth policy, validated.
#[derive(Debug)]
pub struct ExtAuthz {
    /// The policy's name, for logs.
    pub policy: String,
    /// The metrics label, built once.
    pub label: crate::metrics::PolicyLabel,
    /// The server to ask.
    pub backend: Arc<AuthzBackend>,
    /// How to ask it.
    pub transport: Transport,
    /// How long to wait for the decision.
    pub timeout: Duration,
    /// Let the request through when the check fails.
    pub failure_mode_allow: bool,
    /// With `failure_mode_allow`, mark such requests with [`FAILURE_MODE_ALLOWED_HEADER`].
    pub failure_mode_allow_header_add: bool,
    /// The status sent when the check fails and failure mode does not allow.
    pub status_on_error: StatusCode,
    /// Which request headers go into the check.
    pub headers: HeaderFilter,
    /// Whether and how much of the body goes into the check.
    pub with_request_body: Option<WithRequestBody>,
    /// `attributes.context_extensions` (a route's values are merged over these per request).
    pub context_extensions: BTreeMap<String, String>,
    /// Send the client certificate as `source.certificate`.
    pub include_peer_certificate: bool,
}

/// The transport a policy uses.
#[derive(Debug)]
pub enum Transport {
    /// `envoy.service.auth.v3.Authorization/Check`.
    Grpc,
    /// Envoy's HTTP ext_authz protocol.
    Http(HttpSettings),
}

impl Transport {
    /// `grpc` or `http`, as spans and logs name it.
    pub fn name(&self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Http(_) => "http",
        }
    }
}

impl ExtAuthz {
    /// Asks the server and resolves its answer, failure mode included. Never waits longer than
    /// the policy's timeout.
    pub async fn check(&self, input: CheckInput<'_>) -> Resolution {
        if !telemetry::enabled() {
            return self.ask(input).await;
        }
        let span = crate::otel::ext_authz(
            &self.policy,
            self.backend.authority.as_str(),
            self.transport.name(),
        );
        let resolution = crate::otel::traced(span.clone(), self.ask(input)).await;
        crate::otel::resolved(&span, resolution.outcome(), resolution.is_failure());
        resolution
    }

    async fn ask(&self, input: CheckInput<'_>) -> Resolution {
        let verdict = match &self.transport {
            Transport::Grpc => {
                let request =
                    check_request::build(&input, &self.headers, self.include_peer_certificate);
                grpc::check(&self.backend, request, self.timeout).await
            }
            // Boxed: the HTTP transport's future (hyper-util's client call) is several times the
            // gRPC one's; inline, it made every check's future that large, and a future is
            // moved by memcpy whole, whichever transport it runs.
            Transport::Http(settings) => {
                Box::pin(http::check(
                    &self.backend,
                    settings,
                    &self.headers,
                    &input,
                    self.timeout,
                ))
                .await
            }
        };
        let verdict = match verdict {
            Verdict::Allow(mut allowed) => match allowed.plan_query_rewrite(&input.parts.uri) {
                Ok(()) => Verdict::Allow(allowed),
                Err(e) => Verdict::Invalid {
                    reason: e.to_string(),
                },
            },
            other => other,
        };
        self.resolve(verdict)
    }

    /// The failure-mode rules, in one place.
    fn resolve(&self, verdict: Verdict) -> Resolution {
        match verdict {
            Verdict::Allow(allowed) => Resolution::Allow(allowed),
            Verdict::Deny(denied) => Resolution::Deny(denied),
            Verdict::Error { reason, .. } if self.failure_mode_allow => {
                Resolution::FailureModeAllow { reason }
            }
            Verdict::Error { reason, response } => Resolution::Error {
                reason,
                response: response.unwrap_or_default(),
            },
            // Not subject to `failure_mode_allow`: see [`Verdict::Invalid`].
            Verdict::Invalid { reason } => Resolution::Error {
                reason,
                response: Denied::default(),
            },
        }
    }
}
