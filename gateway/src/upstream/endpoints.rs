//! A backend's endpoint set at work: [`Backend::send_try`] picks an endpoint for one try, counts
//! it in flight until its response body ends, sends, and reports the outcome to outlier
//! detection; [`Backend::start`] runs the background tasks (active health checks, ejection
//! returns) that end when the backend is dropped. The pieces: `balance` (which endpoint),
//! `endpoint_health` (what is known of one), `outlier` (passive health), `health_check`
//! (active health).

use std::sync::{Arc, Weak};
use std::time::Duration;

use http::{Request, Response};
use tokio::time::Instant;

use super::endpoint_health::{Balanced, CountedBody, EndpointHealth};
use super::health_check::{self, Checked, HealthCheckConfig, Probe};
use super::outlier::TryResult;
use super::{Backend, Endpoint, Protocol, UpstreamError};
use crate::body::{self, ProxyBody};
use crate::redact;

/// How often ejections whose time is up are ended when no request comes to end them.
const RETURN_SWEEP: Duration = Duration::from_secs(1);
/// The largest health-check answer read (it is read so the connection can be reused).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

impl Backend {
    /// One try: picks an endpoint (another than those in `tried` while one is up, then records
    /// it there), sends `req` with `timeout` for the response headers, and reports the outcome.
    /// Every endpoint down is [`UpstreamError::NoHealthyUpstream`] at once.
    pub async fn send_try(
        &self,
        req: Request<ProxyBody>,
        timeout: Duration,
        tried: &mut Vec<usize>,
    ) -> Result<Response<ProxyBody>, UpstreamError> {
        let outlier = self.balancing.outlier.as_ref();
        let picked = self
            .balancing
            .balancer
            .pick(&self.endpoints, tried, outlier, Instant::now());
        let Some(endpoint) = picked.and_then(|i| self.endpoints.get(i)) else {
            return Err(UpstreamError::NoHealthyUpstream);
        };
        tried.extend(picked);
        let in_flight = endpoint.health.start();
        let result = endpoint.send(req, timeout).await;
        let outcome = match &result {
            Ok(resp) => TryResult::Status(resp.status().as_u16()),
            Err(UpstreamError::Connect(_) | UpstreamError::Tls(_)) => TryResult::ConnectFailure,
            Err(UpstreamError::Timeout) => TryResult::Timeout,
            Err(_) => TryResult::Reset,
        };
        if let Some(ejection) = endpoint.health.report(outlier, outcome, Instant::now()) {
            tracing::warn!(backend = %redact::escape(&self.name), endpoint = %redact::escape(&endpoint.label), seconds = ejection.duration.as_secs_f64(), times = ejection.times, "endpoint ejected");
        }
        result.map(|resp| resp.map(|b| body::boxed(CountedBody::new(b, in_flight))))
    }

    /// Starts the backend's background tasks, when it has any and a runtime runs (a config
    /// only validated has none): active health checks, and a sweep that ends ejections whose
    /// time is up while no request comes. Both hold the backend weakly and end with it.
    pub fn start(self: &Arc<Self>) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        if let Some(config) = self.balancing.health_check.clone() {
            tokio::spawn(health_check::run(Arc::downgrade(self), config));
        }
        if self.balancing.outlier.is_some() {
            tokio::spawn(sweep_returns(Arc::downgrade(self)));
        }
    }
}

async fn sweep_returns(backend: Weak<Backend>) {
    loop {
        tokio::time::sleep(RETURN_SWEEP).await;
        let Some(backend) = backend.upgrade() else {
            return;
        };
        let now = Instant::now();
        for e in &backend.endpoints {
            e.health
                .is_available(backend.balancing.outlier.as_ref(), now);
        }
    }
}

impl Balanced for Endpoint {
    fn health(&self) -> &EndpointHealth {
        &self.health
    }
}

impl Checked for Backend {
    type Endpoint = Endpoint;

    fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    fn health_changed(&self, index: usize, healthy: bool) {
        let endpoint = self.endpoints.get(index).map_or("?", |e| &*e.label);
        if healthy {
            tracing::info!(backend = %redact::escape(&self.name), endpoint = %redact::escape(endpoint), "endpoint passes its health checks again");
        } else {
            tracing::warn!(backend = %redact::escape(&self.name), endpoint = %redact::escape(endpoint), "endpoint fails its health checks");
        }
    }
}

impl Probe for Endpoint {
    async fn probe(&self, path: &str, timeout: Duration) -> bool {
        use http_body_util::{BodyExt, Limited};
        let version = match self.protocol {
            Protocol::Http2 => http::Version::HTTP_2,
            Protocol::Http1 | Protocol::Auto => http::Version::HTTP_11,
        };
        let req = http::Request::get(format!("{}://{}{path}", self.scheme, self.authority))
            .version(version)
            .header(http::header::HOST, self.authority.as_str())
            .header(http::header::USER_AGENT, "gateway-health-check")
            .body(crate::body::empty());
        let Ok(req) = req else { return false };
        let check = async {
            let resp = self.client.request(req).await.ok()?;
            let passed = resp.status().is_success();
            Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .ok()?;
            Some(passed)
        };
        matches!(tokio::time::timeout(timeout, check).await, Ok(Some(true)))
    }

    fn record(&self, passed: bool, config: &HealthCheckConfig) -> Option<bool> {
        self.health.record_check(passed, config)
    }
}
