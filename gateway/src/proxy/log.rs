//! Step 5, log: the request's span, its metrics and its access-log line, written once the
//! response is known.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use http::{Method, StatusCode, Uri};
use tracing::Span;

use super::connection::Connection;
use super::record::Record;
use crate::access_log;
use crate::metrics::RequestLabels;
use crate::request::{self, CanonicalRequest, Rejected};

/// The route label of a request no route served.
static NO_ROUTE: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("-"));

/// The request as it arrived, before it was made canonical: the log shows what was sent, not
/// only what it became.
#[derive(Debug)]
pub(super) struct Arrival {
    /// The method.
    pub(super) method: Method,
    /// The target as the client spelled it (a `Uri` clone shares its bytes).
    pub(super) target: Uri,
    /// When the request arrived.
    pub(super) started: Instant,
}

/// Records the outcome on the request's span, counts the request and writes its access-log
/// line.
pub(super) fn log(
    conn: &Connection,
    span: &Span,
    arrival: &Arrival,
    canonical: &Result<CanonicalRequest, Rejected>,
    request_id: &str,
    record: Record,
    status: StatusCode,
) {
    let route_label = record.route.unwrap_or_else(|| NO_ROUTE.clone());
    crate::otel::response(span, &route_label, status.as_u16(), record.authz.outcome);
    conn.shared
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route: route_label.clone(),
            status: status.as_u16(),
        })
        .inc();
    if !access_log::enabled() {
        return;
    }
    let authz = &record.authz;
    // Every value that came from the client, the config or an authorization server is escaped
    // (no forged log lines) and query values are redacted (credentials): see `access_log`.
    access_log::write(&access_log::Line {
        method: arrival.method.as_str(),
        path_and_query: request::target(&arrival.target),
        host: canonical.as_ref().map_or("-", |c| c.host.as_str()),
        canonical_path: canonical.as_ref().ok().map(|c| c.path.as_str()),
        rejected: canonical.as_ref().err().map(Rejected::reason),
        route: &route_label,
        status: status.as_u16(),
        authz: authz.outcome,
        authz_policy: authz.policy.as_deref().unwrap_or_default(),
        authz_ms: authz.latency.as_secs_f64() * 1000.0,
        upstream_ms: record
            .upstream_latency
            .map(|d: Duration| d.as_secs_f64() * 1000.0),
        dynamic_metadata: &authz.metadata,
        duration_ms: arrival.started.elapsed().as_secs_f64() * 1000.0,
        request_id,
        peer: conn.peer,
        client: canonical.as_ref().map_or(conn.peer, |c| c.client),
    });
}
