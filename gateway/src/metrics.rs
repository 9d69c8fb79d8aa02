//! The gateway's Prometheus metrics (served on the admin port's `/metrics`).
//!
//! The ext_authz counters are Envoy's (`ext_authz.ok`, `denied`, `error`,
//! `failure_mode_allowed`, `disabled`), per policy. As in Envoy, a failed check that
//! `failure_mode_allow` lets through counts as both `error` and `failure_mode_allowed`.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `{policy="..."}`. Built once per policy when the config is compiled: counting a check
/// clones an `Arc`, never a `String`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabel {
    /// The policy's name.
    pub policy: Arc<str>,
}

/// `{route="...",status="..."}`; `route="-"` when no route matched.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route's name.
    pub route: Arc<str>,
    /// The status the client got.
    pub status: u16,
}

/// `{route="..."}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// The route's name.
    pub route: Arc<str>,
}

/// `{result="ok|error"}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok` or `error`.
    pub result: String,
}

/// `{backend="...",endpoint="..."}`: one endpoint (`host:port`) of a backend.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// The backend's name.
    pub backend: Arc<str>,
    /// The endpoint's `host:port`.
    pub endpoint: Arc<str>,
}

/// `{backend="..."}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabel {
    /// The backend's name.
    pub backend: Arc<str>,
}

/// `{backend,endpoint,outcome}`: outcome is the response's status class (`2xx` .. `5xx`) or the
/// failure kind (`connect_failure`, `tls_failure`, `reset`, `protocol_error`, `timeout`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamOutcomeLabels {
    /// The backend's name.
    pub backend: Arc<str>,
    /// The endpoint's `host:port`.
    pub endpoint: Arc<str>,
    /// Status class or failure kind.
    pub outcome: &'static str,
}

/// The upstream transport's counters. They are counted where connections are made, far from any
/// request's [`Metrics`], so they live once per process and every [`Metrics`] registry exports
/// them (labels name the backend, so two configs in one process keep apart by name).
#[derive(Debug, Default)]
pub struct UpstreamMetrics {
    /// `gateway_upstream_requests_total{backend,endpoint,outcome}`: tries sent to an endpoint.
    pub requests: Family<UpstreamOutcomeLabels, Counter>,
    /// `gateway_upstream_connections_total{backend,endpoint}`: new connections (TCP connects).
    pub connections: Family<EndpointLabels, Counter>,
    /// `gateway_upstream_tls_handshakes_total{backend}`: completed TLS handshakes to backends.
    pub tls_handshakes: Family<BackendLabel, Counter>,
    /// `gateway_upstream_ejections_total{backend,endpoint}`: outlier-detection ejections.
    pub ejections: Family<EndpointLabels, Counter>,
    /// `gateway_upstream_endpoint_ejected{backend,endpoint}`: 1 while ejected.
    pub ejected: Family<EndpointLabels, Gauge>,
    /// `gateway_upstream_endpoint_healthy{backend,endpoint}`: 1 while passing active health
    /// checks (or unchecked).
    pub healthy: Family<EndpointLabels, Gauge>,
}

/// `{route="...",reason="..."}`: why a try was retried (a failure kind or a status code).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    /// The route's name.
    pub route: Arc<str>,
    /// `connect_failure`, `refused_stream`, `reset`, `timeout`, ... or the status, e.g. `503`.
    pub reason: String,
}

/// The process's upstream counters.
pub fn upstream() -> &'static UpstreamMetrics {
    static UPSTREAM: std::sync::OnceLock<UpstreamMetrics> = std::sync::OnceLock::new();
    UPSTREAM.get_or_init(UpstreamMetrics::default)
}

type LatencyFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric the gateway exports, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `gateway_ext_authz_ok_total{policy}`: checks that allowed.
    pub ext_authz_ok: Family<PolicyLabel, Counter>,
    /// `gateway_ext_authz_denied_total{policy}`: checks that denied.
    pub ext_authz_denied: Family<PolicyLabel, Counter>,
    /// `gateway_ext_authz_error_total{policy}`: checks that failed (timeout, transport, 5xx, ...).
    pub ext_authz_error: Family<PolicyLabel, Counter>,
    /// `gateway_ext_authz_failure_mode_allowed_total{policy}`: failed checks let through.
    pub ext_authz_failure_mode_allowed: Family<PolicyLabel, Counter>,
    /// `gateway_ext_authz_disabled_total{policy}`: requests on routes that switched the policy off.
    pub ext_authz_disabled: Family<PolicyLabel, Counter>,
    /// `gateway_requests_total{route,status}`.
    pub requests: Family<RequestLabels, Counter>,
    /// `gateway_upstream_latency_seconds{route}`: until the upstream's response headers.
    pub upstream_latency: LatencyFamily<RouteLabel>,
    /// `gateway_ext_authz_latency_seconds{policy}`: one check, transport included.
    pub ext_authz_latency: LatencyFamily<PolicyLabel>,
    /// `gateway_config_synchronized`: 1 when the running config is the file's, 0 after a refused
    /// reload.
    pub config_synchronized: Gauge,
    /// `gateway_config_reloads_total{result}`.
    pub config_reloads: Family<ResultLabel, Counter>,
    /// `gateway_upstream_retries_total{route,reason}`: retries sent.
    pub upstream_retries: Family<RetryLabels, Counter>,
    /// `gateway_upstream_retry_overflow_total{route}`: retries the retry budget refused.
    pub upstream_retry_overflow: Family<RouteLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every metric; the config is taken as synchronized.
    pub fn new() -> Metrics {
        let config_synchronized = Gauge::default();
        config_synchronized.set(1);
        let mut metrics = Metrics {
            registry: Registry::default(),
            ext_authz_ok: Family::default(),
            ext_authz_denied: Family::default(),
            ext_authz_error: Family::default(),
            ext_authz_failure_mode_allowed: Family::default(),
            ext_authz_disabled: Family::default(),
            requests: Family::default(),
            upstream_latency: Family::new_with_constructor(latency_histogram),
            ext_authz_latency: Family::new_with_constructor(latency_histogram),
            config_synchronized,
            config_reloads: Family::default(),
            upstream_retries: Family::default(),
            upstream_retry_overflow: Family::default(),
        };
        metrics.register();
        metrics.register_transport();
        metrics.register_balancing();
        metrics
    }

    /// Registers every metric with its name and help text (a registered metric shares its
    /// values with the field the gateway updates).
    fn register(&mut self) {
        let r = &mut self.registry;
        let ext_authz = [
            (
                &self.ext_authz_ok,
                "gateway_ext_authz_ok",
                "ext_authz checks that allowed the request",
            ),
            (
                &self.ext_authz_denied,
                "gateway_ext_authz_denied",
                "ext_authz checks that denied the request",
            ),
            (
                &self.ext_authz_error,
                "gateway_ext_authz_error",
                "ext_authz checks that failed (timeout, transport error, 5xx, bad answer)",
            ),
            (
                &self.ext_authz_failure_mode_allowed,
                "gateway_ext_authz_failure_mode_allowed",
                "failed ext_authz checks let through by failure_mode_allow",
            ),
            (
                &self.ext_authz_disabled,
                "gateway_ext_authz_disabled",
                "requests on routes that switched this gateway-level policy off",
            ),
        ];
        for (family, name, help) in ext_authz {
            r.register(name, help, family.clone());
        }
        r.register(
            "gateway_requests",
            "requests by route and response status",
            self.requests.clone(),
        );
        r.register(
            "gateway_upstream_latency_seconds",
            "time from sending the request upstream to its response headers",
            self.upstream_latency.clone(),
        );
        r.register(
            "gateway_ext_authz_latency_seconds",
            "time one ext_authz check took",
            self.ext_authz_latency.clone(),
        );
        r.register(
            "gateway_config_synchronized",
            "1 when the running config is the file's; 0 after a refused reload",
            self.config_synchronized.clone(),
        );
        r.register(
            "gateway_config_reloads",
            "config reload attempts by result",
            self.config_reloads.clone(),
        );
    }

    /// Registers the endpoint-health and retry metrics.
    fn register_balancing(&mut self) {
        let r = &mut self.registry;
        let upstream = upstream();
        r.register(
            "gateway_upstream_ejections",
            "endpoints ejected by outlier detection",
            upstream.ejections.clone(),
        );
        r.register(
            "gateway_upstream_endpoint_ejected",
            "1 while an endpoint is ejected by outlier detection",
            upstream.ejected.clone(),
        );
        r.register(
            "gateway_upstream_endpoint_healthy",
            "1 while an endpoint passes its active health checks (or has none)",
            upstream.healthy.clone(),
        );
        r.register(
            "gateway_upstream_retries",
            "retries sent, by route and the failure retried",
            self.upstream_retries.clone(),
        );
        r.register(
            "gateway_upstream_retry_overflow",
            "retries the retry budget refused",
            self.upstream_retry_overflow.clone(),
        );
    }

    /// Registers the upstream transport's counters (process-wide, see [`upstream`]).
    fn register_transport(&mut self) {
        let r = &mut self.registry;
        let upstream = upstream();
        r.register(
            "gateway_upstream_requests",
            "tries sent to a backend endpoint, by status class or failure kind",
            upstream.requests.clone(),
        );
        r.register(
            "gateway_upstream_connections",
            "new connections opened to a backend endpoint",
            upstream.connections.clone(),
        );
        r.register(
            "gateway_upstream_tls_handshakes",
            "TLS handshakes completed with a backend",
            upstream.tls_handshakes.clone(),
        );
    }

    /// The Prometheus (OpenMetrics) text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The policy label.
    pub fn policy(policy: &str) -> PolicyLabel {
        PolicyLabel {
            policy: Arc::from(policy),
        }
    }

    /// Counts a reload attempt and sets the synchronized gauge.
    pub fn reloaded(&self, ok: bool) {
        self.config_synchronized.set(i64::from(ok));
        self.config_reloads
            .get_or_create(&ResultLabel {
                result: if ok { "ok" } else { "error" }.to_owned(),
            })
            .inc();
    }
}
