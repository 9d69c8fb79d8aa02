//! What the balancer knows of one endpoint: requests in flight (counted by an RAII guard that
//! may live as long as the response body), outlier ejection and active health, each change
//! reflected in the endpoint's gauges. Whoever owns an endpoint embeds one [`EndpointHealth`]
//! and exposes it through [`Balanced`].

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use hyper::body::{Body, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::time::Instant;

use super::health_check::{ActiveHealth, HealthCheckConfig};
use super::outlier::{Ejection, EjectionState, Outlier, TryResult};
use crate::metrics::{self, EndpointLabels};

/// One endpoint's load and health.
#[derive(Debug, Default)]
pub struct EndpointHealth {
    in_flight: Arc<AtomicUsize>,
    ejection: EjectionState,
    active: ActiveHealth,
    metrics: HealthMetrics,
}

/// The metrics an endpoint's state changes update (handles into the process's upstream
/// families; the default is a set nobody exports).
#[derive(Debug, Clone, Default)]
pub struct HealthMetrics {
    /// `gateway_upstream_endpoint_ejected`: 1 while ejected.
    pub ejected: Gauge,
    /// `gateway_upstream_endpoint_healthy`: 1 while passing active health checks.
    pub healthy: Gauge,
    /// `gateway_upstream_ejections_total`.
    pub ejections: Counter,
}

/// Anything the balancer can pick: it has an [`EndpointHealth`].
pub trait Balanced {
    /// The endpoint's load and health.
    fn health(&self) -> &EndpointHealth;
}

impl<T: Balanced> Balanced for Arc<T> {
    fn health(&self) -> &EndpointHealth {
        (**self).health()
    }
}

impl Balanced for EndpointHealth {
    fn health(&self) -> &EndpointHealth {
        self
    }
}

impl EndpointHealth {
    /// Requests in flight on this endpoint now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts one request in flight until the guard is dropped.
    pub fn start(&self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.in_flight.clone())
    }

    /// A healthy, idle endpoint counted in the process's upstream metrics under `labels`.
    pub fn for_endpoint(labels: &EndpointLabels) -> EndpointHealth {
        let families = metrics::upstream();
        EndpointHealth::new(HealthMetrics {
            ejected: families.ejected.get_or_create(labels).clone(),
            healthy: families.healthy.get_or_create(labels).clone(),
            ejections: families.ejections.get_or_create(labels).clone(),
        })
    }

    /// A healthy, idle endpoint whose changes update `metrics`.
    pub fn new(metrics: HealthMetrics) -> EndpointHealth {
        metrics.healthy.set(1);
        metrics.ejected.set(0);
        EndpointHealth {
            metrics,
            ..EndpointHealth::default()
        }
    }

    /// Whether the endpoint may take a request at `now`: healthy by its checks (or unchecked)
    /// and not ejected. An ejection whose time is up ends here.
    pub fn is_available(&self, outlier: Option<&Outlier>, now: Instant) -> bool {
        if !self.active.is_healthy() {
            return false;
        }
        let Some(outlier) = outlier else { return true };
        let (ejected, returned) = self.ejection.check(outlier, now);
        if returned {
            self.metrics.ejected.set(0);
        }
        !ejected
    }

    /// Counts one try's result for outlier detection (when the backend has it); returns the
    /// ejection it caused.
    pub fn report(
        &self,
        outlier: Option<&Outlier>,
        result: TryResult,
        now: Instant,
    ) -> Option<Ejection> {
        let ejection = self.ejection.report(outlier?, result, now)?;
        self.metrics.ejected.set(1);
        self.metrics.ejections.inc();
        Some(ejection)
    }

    /// Counts one active health check; returns the new verdict when it changed.
    pub fn record_check(&self, passed: bool, config: &HealthCheckConfig) -> Option<bool> {
        let changed = self.active.record(passed, config)?;
        self.metrics.healthy.set(i64::from(changed));
        Some(changed)
    }
}

/// One request in flight on an endpoint; dropping it ends the count.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted in flight until the body ends or is dropped,
/// so a long stream (SSE, gRPC) weighs on least-request balancing as long as it lasts.
#[derive(Debug)]
pub struct CountedBody<B> {
    inner: B,
    guard: Option<InFlight>,
}

impl<B> CountedBody<B> {
    /// Wraps `inner`, holding `guard` until it ends.
    pub fn new(inner: B, guard: InFlight) -> CountedBody<B> {
        CountedBody {
            inner,
            guard: Some(guard),
        }
    }
}

impl<B: Body + Unpin> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn a_request_is_in_flight_until_its_body_ends() {
        let health = EndpointHealth::default();
        let guard = health.start();
        let other = health.start();
        assert_eq!(health.in_flight(), 2);
        drop(other);
        let body = CountedBody::new(Full::new(Bytes::from_static(b"hi")), guard);
        assert_eq!(health.in_flight(), 1);
        let bytes = body.collect().await.expect("a full body").to_bytes();
        assert_eq!(bytes, "hi");
        assert_eq!(health.in_flight(), 0);
    }

    #[test]
    fn a_dropped_body_ends_the_count() {
        let health = EndpointHealth::default();
        let body = CountedBody::new(Full::new(Bytes::from_static(b"hi")), health.start());
        assert_eq!(health.in_flight(), 1);
        drop(body);
        assert_eq!(health.in_flight(), 0);
    }
}
