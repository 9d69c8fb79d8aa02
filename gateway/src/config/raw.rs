//! The configuration file as written: serde structs that mirror the TOML one to one.
//!
//! Nothing here is trusted yet. [`super::compile`] turns a [`RawConfig`] into the validated
//! [`super::Config`] and reports every problem with the place it was written.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// The listeners the gateway accepts connections on. A policy with `kind = "Gateway"` attaches
    /// to the listener with that name.
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    /// The routes, matched in the documented precedence (see `docs/gateway.md`), not file order.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// The upstream services routes forward to.
    #[serde(default)]
    pub backends: Vec<RawBackend>,
    /// The ext_authz servers policies call.
    #[serde(default)]
    pub authz_backends: Vec<RawAuthzBackend>,
    /// Policies attached to listeners (gateway level) or routes (route level).
    #[serde(default)]
    pub policies: Vec<RawPolicy>,
    /// The admin endpoint: `/metrics`, `/healthz`, `/readyz`.
    pub admin: Option<RawAdmin>,
}

/// The admin endpoint, on its own port.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// `ip:port` to bind, e.g. `127.0.0.1:9901`; port 0 lets the OS choose.
    pub address: Spanned<String>,
    /// The admin port's limits; absent keys take the admin defaults (64 connections, 10 s to
    /// send headers, 5 min idle).
    pub limits: Option<RawLimits>,
}

/// TLS termination on a listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    /// PEM file with the server certificate chain (leaf first).
    pub cert: Spanned<String>,
    /// PEM file with the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Spanned<String>,
    /// PEM file with the CAs that sign client certificates; setting it turns on mutual TLS.
    pub client_ca: Option<Spanned<String>>,
    /// With `client_ca`: refuse clients without a certificate (true, the default) or let them
    /// in without a principal (false).
    pub require_client_cert: Option<Spanned<bool>>,
}

/// TLS from the gateway to an authorization server (`https://` URLs).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientTls {
    /// PEM file with the CAs that sign the server's certificate (required).
    pub ca: Spanned<String>,
    /// PEM file with the gateway's client certificate, for mutual TLS (needs `key`).
    pub cert: Option<Spanned<String>>,
    /// PEM file with the private key of `cert`.
    pub key: Option<Spanned<String>>,
    /// The server name to send and verify; default: the URL's host.
    pub sni: Option<Spanned<String>>,
}

/// One listening socket, HTTP/1.1 and h2c (prior knowledge) on the same port.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    /// The name policies target with `kind = "Gateway"`.
    pub name: Spanned<String>,
    /// `ip:port` to bind, e.g. `0.0.0.0:8080`; port 0 lets the OS choose.
    pub address: Spanned<String>,
    /// Largest total size of the request headers in KiB (Envoy's default: 60). Larger requests get
    /// `431 Request Header Fields Too Large`.
    pub max_request_headers_kb: Option<Spanned<u32>>,
    /// Terminate TLS on this listener (`{ cert, key, client_ca }`); absent means plaintext.
    pub tls: Option<RawListenerTls>,
    /// Connection, stream, header-count and timeout limits (`[listeners.limits]`); absent keys
    /// take safe defaults named after Envoy's (see `docs/gateway.md`).
    pub limits: Option<RawLimits>,
    /// Collapse runs of `/` in the path into one before routing, the check and forwarding
    /// (default true, as Istio sets Envoy's `merge_slashes`).
    pub merge_slashes: Option<bool>,
    /// What `%2F`, `%5C` and a raw `\` in a path do (Envoy's
    /// `path_with_escaped_slashes_action`): `"reject"` answers 400 (the default), `"keep"`
    /// forwards them escaped, `"unescape"` turns them into `/` before the path is resolved.
    pub path_with_escaped_slashes_action: Option<canonical::EscapedSlashes>,
    /// `;` in a path segment: `"reject"` answers 400 (the default), `"strip"` drops `;params`
    /// from each segment (as Tomcat, Jetty and Spring do) and forwards the stripped path,
    /// `"keep"` treats `;` as data (Envoy's behaviour). See docs/security.md.
    pub path_parameters: Option<canonical::PathParameters>,
    /// Remove any port from the authority, not only the scheme's default (Envoy's
    /// `strip_any_host_port`; default false).
    pub strip_any_host_port: Option<bool>,
    /// How many proxies in front of this listener append to `x-forwarded-for` and are trusted
    /// (Envoy's `xff_num_trusted_hops`; default 0: the client's `x-forwarded-*`, `forwarded`,
    /// `x-real-ip`, `x-original-url` and `x-rewrite-url` are dropped, `x-forwarded-for` and
    /// `x-forwarded-proto` written by the gateway).
    pub xff_num_trusted_hops: Option<u32>,
    /// A request header whose name holds `_` (Envoy's `headers_with_underscores_action`):
    /// `"reject_request"` answers 400 (the default), `"drop_header"` removes it before routing
    /// and the check, `"allow"` forwards it. See docs/security.md.
    pub headers_with_underscores_action: Option<crate::headers::UnderscoresAction>,
    /// A method that differs from a standard one only by case (`delete`): `"reject"` answers 400
    /// (the default), `"keep"` routes, checks and forwards it as sent.
    pub method_case: Option<crate::request::MethodCase>,
}

/// One route: what to match and where to send it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// The name policies target with `kind = "HTTPRoute"` and the access log prints.
    pub name: Spanned<String>,
    /// Host names this route serves (`example.com` or `*.example.com`); empty means any host.
    #[serde(default)]
    pub hosts: Vec<Spanned<String>>,
    /// How the path must match; absent means any path.
    pub path: Option<Spanned<RawPathMatch>>,
    /// HTTP methods this route serves; empty means any method.
    #[serde(default)]
    pub methods: Vec<Spanned<String>>,
    /// Request headers that must all match.
    #[serde(default)]
    pub headers: Vec<RawHeaderMatch>,
    /// The name of the backend in `[[backends]]`.
    pub backend: Spanned<String>,
    /// Replace the matched path prefix with this before forwarding (needs `path.prefix`).
    pub rewrite_prefix: Option<Spanned<String>>,
    /// How long to wait for the upstream's response headers, e.g. `"15s"` (the default) or
    /// `"500ms"`. On expiry the client gets 504.
    pub timeout: Option<Spanned<String>>,
    /// The upstream `Host`/`:authority`: `"auto"` (the chosen endpoint's host, as hosted APIs
    /// require) or a literal host; absent: the client's host, as checked.
    pub host_rewrite: Option<Spanned<String>>,
    /// `{ set, add, remove }` applied to the request sent upstream, after the check; values may
    /// read `${VAR}` from the environment at load.
    pub request_headers: Option<Spanned<RawHeaderMutation>>,
    /// `{ set, add, remove }` applied to the backend's response.
    pub response_headers: Option<Spanned<RawHeaderMutation>>,
    /// Retry failed tries: `{ attempts, on, per_try_timeout, budget_percent,
    /// min_retry_concurrency, max_body_bytes }`.
    pub retries: Option<Spanned<RawRetries>>,
    /// Upgrades tunnelled after the check: `["websocket"]`; empty (the default) removes every
    /// `Upgrade` header. `h2c` is never tunnelled.
    #[serde(default)]
    pub upgrades: Vec<Spanned<String>>,
}

/// Exactly one of `exact`, `prefix`, `regex`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPathMatch {
    /// The path (without query) must equal this.
    pub exact: Option<String>,
    /// The path must start with this, on a segment boundary: `/openai` matches `/openai` and
    /// `/openai/x`, not `/openaix`.
    pub prefix: Option<String>,
    /// The whole path (without query) must match this regular expression.
    pub regex: Option<String>,
}

/// A request header condition. With neither `value` nor `regex` the header only has to be present.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderMatch {
    /// The header name (case-insensitive).
    pub name: Spanned<String>,
    /// One of the header's values must equal this.
    pub value: Option<String>,
    /// One of the header's values must match this regular expression (whole value).
    pub regex: Option<Spanned<String>>,
}

/// An upstream service.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    /// The name routes refer to.
    pub name: Spanned<String>,
    /// `http://host[:port]` (port 80 by default) or `https://host[:port]` (443), without a
    /// path; the host may be a name, resolved at each connect. Or `endpoints`, not both.
    pub url: Option<Spanned<String>>,
    /// How long to wait for a connection (TCP and TLS), e.g. `"2s"` (the default). On failure
    /// the client gets 503.
    pub connect_timeout: Option<Spanned<String>>,
    /// `"http1"`, `"http2"` (h2c prior knowledge on `http://`, ALPN `h2` only on `https://`) or
    /// `"auto"` (the default: ALPN `h2` and `http/1.1` on `https://`, HTTP/1.1 on `http://`).
    pub protocol: Option<Spanned<String>>,
    /// TLS settings for `https://` URLs: `{ ca, cert, key, sni }`, all optional.
    pub tls: Option<Spanned<RawBackendTls>>,
    /// Several endpoints instead of `url`: each `http://host[:port]` or `https://host[:port]`
    /// without a path, all with the same scheme.
    pub endpoints: Option<Spanned<Vec<Spanned<String>>>>,
    /// `"least_request"` (the default: two random choices, fewer requests in flight wins) or
    /// `"round_robin"`.
    pub lb_policy: Option<Spanned<String>>,
    /// Passive health (Envoy's outlier detection); absent: endpoints are never ejected.
    pub outlier_detection: Option<Spanned<RawOutlierDetection>>,
    /// Active health checks; absent: none run.
    pub health_check: Option<Spanned<RawHealthCheck>>,
}

/// Envoy's outlier detection, with Envoy's names and defaults; `{}` turns it on as is.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlierDetection {
    /// 5xx answers (connect failures, resets and timeouts included) in a row that eject an
    /// endpoint (default 5; 0 turns the rule off).
    pub consecutive_5xx: Option<Spanned<u32>>,
    /// Connect failures in a row that eject an endpoint (default 5; 0 turns the rule off).
    pub consecutive_connect_failures: Option<Spanned<u32>>,
    /// The first ejection's length, e.g. `"30s"` (the default); the n-th lasts n times this.
    pub base_ejection_time: Option<Spanned<String>>,
    /// No ejection lasts longer than this, e.g. `"300s"` (the default).
    pub max_ejection_time: Option<Spanned<String>>,
    /// The share of endpoints ejected at once, in percent (default 10); one may always be.
    pub max_ejection_percent: Option<Spanned<u32>>,
}

/// Active HTTP health checks: a GET of `path` on every endpoint; a 2xx answer passes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    /// The path (and query) to GET, e.g. `"/healthz"`.
    pub path: Spanned<String>,
    /// Time between rounds, e.g. `"5s"` (the default).
    pub interval: Option<Spanned<String>>,
    /// How long one check may take, e.g. `"1s"` (the default).
    pub timeout: Option<Spanned<String>>,
    /// Passes in a row that bring an unhealthy endpoint back (default 1).
    pub healthy_threshold: Option<Spanned<u32>>,
    /// Failures in a row that take a healthy endpoint out (default 3).
    pub unhealthy_threshold: Option<Spanned<u32>>,
}

/// A route's retry policy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetries {
    /// Tries in all, the first included (1 to 10).
    pub attempts: Spanned<u32>,
    /// What is retried: `"connect-failure"`, `"refused-stream"`, `"reset"`, `"5xx"`,
    /// `"gateway-error"` or a status code such as `"503"` (default: connect-failure and
    /// refused-stream, where the backend never saw the request).
    pub on: Option<Spanned<Vec<Spanned<String>>>>,
    /// The wait for one try's response headers, e.g. `"2s"`; the route's `timeout` bounds all
    /// tries together.
    pub per_try_timeout: Option<Spanned<String>>,
    /// Retries in flight may be this percentage of the route's active requests (default 20).
    pub budget_percent: Option<Spanned<u32>>,
    /// ... and at least this many (default 3).
    pub min_retry_concurrency: Option<Spanned<u32>>,
    /// A request body larger than this (or of unknown length) is sent once, never retried
    /// (default 65536).
    pub max_body_bytes: Option<Spanned<u64>>,
}

/// Header changes a route makes: removed first, then set (replacing), then added (appended).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderMutation {
    /// Header name → value, replacing every value the header had; `${VAR}` reads the
    /// environment at load.
    #[serde(default)]
    pub set: std::collections::BTreeMap<Spanned<String>, Spanned<String>>,
    /// Header name → value, appended to the values the header has.
    #[serde(default)]
    pub add: std::collections::BTreeMap<Spanned<String>, Spanned<String>>,
    /// Header names removed.
    #[serde(default)]
    pub remove: Vec<Spanned<String>>,
}

/// TLS from the gateway to a backend (`https://` URLs).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackendTls {
    /// PEM file with the CAs that sign the backend's certificate; default: the platform's
    /// trusted roots.
    pub ca: Option<Spanned<String>>,
    /// PEM file with the gateway's client certificate, for mutual TLS (needs `key`).
    pub cert: Option<Spanned<String>>,
    /// PEM file with the private key of `cert`.
    pub key: Option<Spanned<String>>,
    /// The server name to send and verify; default: the URL's host.
    pub sni: Option<Spanned<String>>,
}

/// An ext_authz server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuthzBackend {
    /// The name policies refer to.
    pub name: Spanned<String>,
    /// `http://host:port` of the server (plaintext; gRPC uses h2c on it) or `https://host:port`
    /// (gRPC over TLS; needs `tls`).
    pub url: Spanned<String>,
    /// TLS settings for an `https://` URL: `{ ca, cert, key, sni }`.
    pub tls: Option<RawClientTls>,
}

/// A policy and what it attaches to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// A name for logs and errors.
    pub name: Spanned<String>,
    /// What the policy attaches to: `{ kind = "Gateway", name = "<listener>" }` or
    /// `{ kind = "HTTPRoute", name = "<route>" }`.
    pub target_refs: Spanned<Vec<RawTargetRef>>,
    /// The external authorization settings.
    pub ext_auth: RawExtAuth,
}

/// A policy target.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTargetRef {
    /// `Gateway` (a listener) or `HTTPRoute` (a route).
    pub kind: RawTargetKind,
    /// The listener or route name.
    pub name: Spanned<String>,
}

/// The kinds a policy can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum RawTargetKind {
    /// A listener: every request it accepts.
    Gateway,
    /// A route: every request it matches.
    #[serde(alias = "Route")]
    HTTPRoute,
}

/// Envoy's ext_authz filter settings, with Envoy's defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExtAuth {
    /// The name of the server in `[[authz_backends]]`. Required unless `disabled` is set or the
    /// policy targets routes and only carries `context_extensions`.
    pub backend: Option<Spanned<String>>,
    /// Use the gRPC `envoy.service.auth.v3.Authorization/Check` transport (the default).
    pub grpc: Option<RawGrpcTransport>,
    /// Use Envoy's HTTP transport instead of gRPC.
    pub http: Option<RawHttpTransport>,
    /// On a route: switch off the ext_auth policies inherited from the gateway level.
    #[serde(default)]
    pub disabled: bool,
    /// How long to wait for the decision, e.g. `"200ms"` (Envoy's default).
    pub timeout: Option<Spanned<String>>,
    /// On a transport error, timeout or 5xx from the server: let the request through.
    #[serde(default)]
    pub failure_mode_allow: bool,
    /// With `failure_mode_allow`: mark such requests with `x-envoy-auth-failure-mode-allowed: true`.
    #[serde(default)]
    pub failure_mode_allow_header_add: bool,
    /// The status sent when the check fails and `failure_mode_allow` is off (default 403).
    pub status_on_error: Option<Spanned<u16>>,
    /// Only these request headers (lower-case names) are sent in the check; absent means all.
    /// Pseudo headers (`:authority`, `:method`, `:path`, `:scheme`) are always sent.
    pub allowed_headers: Option<Vec<String>>,
    /// These request headers are never sent in the check (applied after `allowed_headers`).
    #[serde(default)]
    pub disallowed_headers: Vec<String>,
    /// Buffer the request body and send it with the check.
    pub with_request_body: Option<RawWithRequestBody>,
    /// Key/values sent as `attributes.context_extensions`; a route's values override the gateway's.
    #[serde(default)]
    pub context_extensions: BTreeMap<String, String>,
    /// Send the client's certificate (URL-encoded PEM) as `source.certificate`, as Envoy's
    /// `include_peer_certificate` does. Only TLS listeners with client certificates have one.
    #[serde(default)]
    pub include_peer_certificate: bool,
}

/// The gRPC transport has no settings of its own; `grpc = {}` selects it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrpcTransport {}

/// Envoy's `http_service` settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpTransport {
    /// Prepended to the original path in the authorization request.
    #[serde(default)]
    pub path_prefix: String,
    /// Authorization-response headers copied onto the upstream request on allow (overwriting).
    #[serde(default)]
    pub allowed_upstream_headers: Vec<String>,
    /// Authorization-response headers passed to the client on deny; empty means all of them.
    #[serde(default)]
    pub allowed_client_headers: Vec<String>,
    /// Authorization-response headers added to the client's response on allow.
    #[serde(default)]
    pub allowed_client_headers_on_success: Vec<String>,
}

/// Envoy's `with_request_body`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWithRequestBody {
    /// How many body bytes to buffer and send; the check must still fit the authorization
    /// server's 4 MiB message limit with the request headers, or the config is refused.
    pub max_request_bytes: Spanned<u32>,
    /// Over the limit: send the first `max_request_bytes` (true) or answer 413 (false).
    #[serde(default)]
    pub allow_partial_message: bool,
    /// Send the body as `raw_body` bytes instead of the `body` string.
    #[serde(default)]
    pub pack_as_bytes: bool,
}

/// `[listeners.limits]`: every key is optional; absent keys take the default shown.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Connections served at once (default 10000); excess connections are accepted and closed
    /// at once.
    pub max_connections: Option<Spanned<u32>>,
    /// HTTP/2 streams open at once on one connection (Envoy's `max_concurrent_streams`,
    /// default 100), announced in SETTINGS.
    pub max_concurrent_streams: Option<Spanned<u32>>,
    /// Request header fields per request (Envoy's `max_headers_count`, default 100); more get 431.
    pub max_request_headers: Option<Spanned<u32>>,
    /// How long a client may take to send a request's headers, e.g. `"10s"` (the default; Envoy's
    /// `request_headers_timeout`). On expiry the connection is closed.
    pub request_headers_timeout: Option<Spanned<String>>,
    /// How long a request may make no progress (no body bytes either way, no response yet),
    /// e.g. `"5m"` (Envoy's `stream_idle_timeout`, the default); `"0s"` turns it off.
    pub stream_idle_timeout: Option<Spanned<String>>,
    /// How long a connection may have no request in flight before it is closed, e.g. `"1h"`
    /// (Envoy's `idle_timeout`, the default); `"0s"` turns it off.
    pub idle_timeout: Option<Spanned<String>>,
    /// Requests served on one connection before it is closed gracefully (Envoy's
    /// `max_requests_per_connection`); 0, the default, means no limit.
    pub max_requests_per_connection: Option<Spanned<u32>>,
    /// Send an HTTP/2 PING this often on an otherwise quiet connection (Envoy's
    /// `connection_keepalive.interval`); off by default.
    pub http2_keepalive_interval: Option<Spanned<String>>,
    /// Close the connection when a PING is not answered within this, e.g. `"20s"` (the default).
    pub http2_keepalive_timeout: Option<Spanned<String>>,
    /// Streams a client may open and reset before the server accepts them; past it the
    /// connection gets GOAWAY (rapid-reset protection; default 20).
    pub http2_max_pending_accept_reset_streams: Option<Spanned<u32>>,
    /// Streams the server may reset for a client's protocol errors before it sends GOAWAY
    /// (default 1024).
    pub http2_max_local_error_reset_streams: Option<Spanned<u32>>,
}
