//! The gRPC side: `envoy.service.auth.v3.Authorization` and its v2 twin over one authorizer.

use std::sync::Arc;
use std::time::Instant;

use extauthz_proto::envoy::service::auth::{v2 as auth_v2, v3 as auth_v3};
use extauthz_proto::{v2, v3};
use rules::{Evaluation, Request};
use tonic::{Response, Status};

use crate::authorizer::{AuthorizeError, Authorizer, Checked, Renders};
use crate::metrics::Metrics;
use crate::{attributes, deadline, response};

/// Serves Check (v3 and v2) with one [`Authorizer`].
pub struct CheckService<A> {
    authorizer: Arc<A>,
    metrics: Arc<Metrics>,
}

impl<A> CheckService<A> {
    /// Shares `authorizer` between the v3 and v2 services (and the HTTP mode).
    pub fn new(authorizer: Arc<A>, metrics: Arc<Metrics>) -> Self {
        Self {
            authorizer,
            metrics,
        }
    }
}

impl<A> Clone for CheckService<A> {
    fn clone(&self) -> Self {
        Self::new(self.authorizer.clone(), self.metrics.clone())
    }
}

impl<A: Authorizer> CheckService<A> {
    /// Builds the neutral request with `build`, decides it on one snapshot, logs and counts.
    /// `proxy_request_id` is the check's `attributes.request.http.id`, logged when the request
    /// carries no `x-request-id` (agentgateway sends the one, not the other).
    async fn decide<B>(
        &self,
        api: &'static str,
        span: tracing::Span,
        proxy_request_id: &str,
        build: B,
    ) -> Result<Evaluation, Status>
    where
        B: FnOnce(Renders) -> Request + Send,
    {
        let started = Instant::now();
        let Checked {
            request,
            evaluation,
            path_for_log,
        } = if span.is_none() {
            self.authorizer.decide(build).await
        } else {
            crate::otel::decide(span, self.authorizer.decide(build)).await
        };
        let elapsed = started.elapsed();
        crate::log::decision(
            &self.metrics,
            api,
            &request,
            proxy_request_id,
            &path_for_log,
            &evaluation,
            elapsed,
        );
        evaluation.map_err(|error| rescue(&error))
    }

    /// A check that arrived with a deadline that has passed is not evaluated ([`deadline`]).
    fn expired(&self, api: &'static str, extensions: &http::Extensions) -> Result<(), Status> {
        if deadline::passed(extensions) {
            self.metrics.count_expired_check(api);
            return Err(Status::deadline_exceeded(
                "the caller's deadline passed before the check was evaluated",
            ));
        }
        Ok(())
    }
}

/// An authorizer failure is an error for the proxy (its failure mode applies), never a deny.
fn rescue(error: &AuthorizeError) -> Status {
    Status::unavailable(error.to_string())
}

#[tonic::async_trait]
impl<A: Authorizer> auth_v3::authorization_server::Authorization for CheckService<A> {
    async fn check(
        &self,
        request: tonic::Request<v3::CheckRequest>,
    ) -> Result<Response<v3::CheckResponse>, Status> {
        let (metadata, extensions, check) = request.into_parts();
        self.expired("grpc.v3", &extensions)?;
        let span = crate::otel::grpc_v3(metadata, &check);
        let id = attributes::fallback_request_id_v3(&check);
        let evaluation = self
            .decide("grpc.v3", span, &id, |renders| {
                attributes::from_v3(check, renders)
            })
            .await?;
        Ok(Response::new(response::to_v3(evaluation.decision)))
    }
}

#[tonic::async_trait]
impl<A: Authorizer> auth_v2::authorization_server::Authorization for CheckService<A> {
    async fn check(
        &self,
        request: tonic::Request<v2::CheckRequest>,
    ) -> Result<Response<v2::CheckResponse>, Status> {
        let (metadata, extensions, check) = request.into_parts();
        self.expired("grpc.v2", &extensions)?;
        let span = crate::otel::grpc_v2(metadata, &check);
        let id = attributes::fallback_request_id_v2(&check);
        let evaluation = self
            .decide("grpc.v2", span, &id, |renders| {
                attributes::from_v2(check, renders)
            })
            .await?;
        Ok(Response::new(response::to_v2(evaluation.decision)))
    }
}
