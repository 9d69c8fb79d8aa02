//! The ext_authz client: Envoy's `ext_authz` HTTP filter, as a policy the proxy runs per request.
//!
//! - [`check_request`] fills the `CheckRequest` exactly as Envoy does;
//! - [`grpc`] and [`http`] are the two transports, each turning the server's answer into a
//!   transport-neutral [`Verdict`];
//! - [`mutation`] applies an allow to the request and response, or builds the denied response.
//!
//! [`ExtAuthz::check`] is the one place a verdict becomes "continue" or "respond", including the
//! failure mode: an error is never an allow unless `failure_mode_allow` says so, and an allow
//! whose changes cannot be made is never an allow at all.

pub mod check_request;
pub mod grpc;
pub mod h2c;
pub mod http;
pub mod mutation;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use ::http::request::Parts;
use ::http::uri::Authority;
use ::http::{HeaderName, StatusCode};
use bytes::Bytes;
use tonic::transport::{Channel, Endpoint};

use crate::tls::{ClientTls, PeerIdentity};
use crate::upstream::HttpClient;
pub use mutation::{Allowed, AppendAction, Denied};

/// How long connecting to an authorization server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Envoy's default check timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);

/// The header Envoy adds to a request let through by `failure_mode_allow`.
pub const FAILURE_MODE_ALLOWED_HEADER: &str = "x-envoy-auth-failure-mode-allowed";

/// The header Envoy adds to a check that carries a body: whether the body was cut short.
pub const PARTIAL_BODY_HEADER: &str = "x-envoy-auth-partial-body";

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

/// Settings of the HTTP transport (Envoy's `http_service`).
#[derive(Debug, Default)]
pub struct HttpSettings {
    /// Prepended to the original path.
    pub path_prefix: String,
    /// Authorization-response headers copied to the upstream request on allow.
    pub allowed_upstream_headers: Vec<HeaderName>,
    /// Authorization-response headers passed to the client on deny (empty: all).
    pub allowed_client_headers: Vec<HeaderName>,
    /// Authorization-response headers added to the client's response on allow.
    pub allowed_client_headers_on_success: Vec<HeaderName>,
}

/// Envoy's `with_request_body`.
#[derive(Debug, Clone, Copy)]
pub struct WithRequestBody {
    /// How many bytes to send at most.
    pub max_request_bytes: usize,
    /// Over the limit: send a prefix (true) or answer 413 (false).
    pub allow_partial_message: bool,
    /// Send `raw_body` instead of `body`.
    pub pack_as_bytes: bool,
}

/// Which request headers a check carries. Pseudo headers are always sent.
#[derive(Debug, Default)]
pub struct HeaderFilter {
    /// Only these (when set).
    pub allowed: Option<Vec<HeaderName>>,
    /// Never these.
    pub disallowed: Vec<HeaderName>,
}

impl HeaderFilter {
    /// Whether header `name` goes into the check.
    pub fn allows(&self, name: &HeaderName) -> bool {
        self.allowed.as_ref().is_none_or(|a| a.contains(name)) && !self.disallowed.contains(name)
    }
}

/// An ext_authz server. Both transports share it: one long-lived, multiplexed, reconnecting
/// HTTP/2 connection for gRPC (driven directly, see [`h2c`], or tonic's channel over TLS), one
/// keep-alive pool for HTTP, each created on first use.
#[derive(Debug)]
pub struct AuthzBackend {
    /// The name policies use.
    pub name: String,
    /// `host:port`.
    pub authority: Authority,
    /// TLS to the server (`https://`), or plaintext h2c.
    pub tls: Option<ClientTls>,
    endpoint: Endpoint,
    channel: tokio::sync::OnceCell<Channel>,
    /// The plaintext (h2c) connection; `None` over TLS, which uses `channel`.
    h2c: Option<h2c::H2Channel>,
    http: OnceLock<HttpClient>,
}

impl AuthzBackend {
    /// A backend at `authority`, over TLS when `tls` is set; nothing connects until the first
    /// check.
    pub fn new(
        name: String,
        authority: Authority,
        tls: Option<ClientTls>,
    ) -> Result<AuthzBackend, String> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{authority}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        if let Some(tls) = &tls {
            endpoint = endpoint
                .tls_config(tls.tonic())
                .map_err(|e| format!("tls: {e}"))?;
        }
        let h2c = tls
            .is_none()
            .then(|| h2c::H2Channel::new(authority.clone(), CONNECT_TIMEOUT));
        Ok(AuthzBackend {
            name,
            authority,
            tls,
            h2c,
            endpoint,
            channel: tokio::sync::OnceCell::new(),
            http: OnceLock::new(),
        })
    }

    /// The shared gRPC channel. The first caller connects (the gateway does so at startup, see
    /// [`AuthzBackend::warm_up`]) so the first check does not pay for the handshake inside its
    /// 200 ms budget; if that connect fails the channel connects lazily and keeps reconnecting.
    pub async fn channel(&self) -> Channel {
        self.channel
            .get_or_init(|| async {
                match self.endpoint.connect().await {
                    Ok(channel) => channel,
                    Err(e) => {
                        tracing::warn!(authz_backend = %self.name, error = %e, "ext_authz server not reachable yet; will retry on demand");
                        self.endpoint.connect_lazy()
                    }
                }
            })
            .await
            .clone()
    }

    /// The plaintext HTTP/2 connection, when the server is not behind TLS.
    pub fn h2c(&self) -> Option<&h2c::H2Channel> {
        self.h2c.as_ref()
    }

    /// Connects the gRPC transport now (a failure is logged; calls reconnect on demand).
    pub async fn connect(&self) {
        match &self.h2c {
            Some(h2c) => {
                if let Err(e) = h2c.connect().await {
                    tracing::warn!(authz_backend = %self.name, error = %e, "ext_authz server not reachable yet; will retry on demand");
                }
            }
            None => {
                self.channel().await;
            }
        }
    }

    /// Starts connecting the gRPC transport in the background.
    pub fn warm_up(self: &Arc<Self>) {
        let backend = self.clone();
        tokio::spawn(async move {
            backend.connect().await;
        });
    }

    /// The shared HTTP client.
    pub fn http_client(&self) -> &HttpClient {
        self.http
            .get_or_init(|| crate::upstream::http_client(Duration::from_secs(2)))
    }
}

/// What the check of one request sees besides the request itself.
#[derive(Debug)]
pub struct CheckInput<'a> {
    /// The request head, as it stands after earlier policies mutated it.
    pub parts: &'a Parts,
    /// The client's address.
    pub peer: SocketAddr,
    /// The listener's local address the client connected to.
    pub local: SocketAddr,
    /// `x-request-id`.
    pub request_id: &'a str,
    /// When the request arrived.
    pub time: SystemTime,
    /// The policy's context extensions, then the route's (which win on a shared key).
    pub context_extensions: [&'a BTreeMap<String, String>; 2],
    /// The body prefix, when the policy asked for it.
    pub body: Option<CheckBody>,
    /// `http` or `https` (a TLS listener).
    pub scheme: &'static str,
    /// The TLS client's identity, on TLS listeners.
    pub tls: Option<&'a PeerIdentity>,
}

/// The body bytes a check carries.
#[derive(Debug, Clone)]
pub struct CheckBody {
    /// At most `max_request_bytes`.
    pub bytes: Bytes,
    /// Whether the body was longer than what is sent.
    pub partial: bool,
    /// Send as `raw_body` bytes instead of the `body` string.
    pub pack_as_bytes: bool,
}

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

impl ExtAuthz {
    /// Asks the server and resolves its answer, failure mode included. Never waits longer than
    /// the policy's timeout.
    pub async fn check(&self, input: CheckInput<'_>) -> Resolution {
        if !telemetry::enabled() {
            return self.ask(input).await;
        }
        let span = crate::otel::ext_authz(self);
        let resolution = crate::otel::traced(span.clone(), self.ask(input)).await;
        crate::otel::resolved(&span, &resolution);
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
