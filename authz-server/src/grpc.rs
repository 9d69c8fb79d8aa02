//! The gRPC side: `envoy.service.auth.v3.Authorization` and its v2 twin over one authorizer.

use std::sync::Arc;
use std::time::Instant;

use extauthz_proto::envoy::service::auth::{v2 as auth_v2, v3 as auth_v3};
use extauthz_proto::{v2, v3};
use rules::{Evaluation, Request};
use tonic::{Response, Status};

use crate::authorizer::{AuthorizeError, Authorizer};
use crate::metrics::Metrics;
use crate::{attributes, response};

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
    async fn decide(&self, api: &'static str, request: Request) -> Result<Evaluation, Status> {
        let started = Instant::now();
        let evaluation = self.authorizer.check(&request).await;
        let path = self.authorizer.path_for_log(&request);
        let elapsed = started.elapsed();
        crate::log::decision(&self.metrics, api, &request, &path, &evaluation, elapsed);
        evaluation.map_err(rescue)
    }
}

/// An authorizer failure is an error for the proxy (its failure mode applies), never a deny.
fn rescue(error: AuthorizeError) -> Status {
    Status::unavailable(error.to_string())
}

#[tonic::async_trait]
impl<A: Authorizer> auth_v3::authorization_server::Authorization for CheckService<A> {
    async fn check(
        &self,
        request: tonic::Request<v3::CheckRequest>,
    ) -> Result<Response<v3::CheckResponse>, Status> {
        let view = attributes::from_v3(request.get_ref(), self.authorizer.needs_received());
        let evaluation = self.decide("grpc.v3", view).await?;
        Ok(Response::new(response::to_v3(&evaluation.decision)))
    }
}

#[tonic::async_trait]
impl<A: Authorizer> auth_v2::authorization_server::Authorization for CheckService<A> {
    async fn check(
        &self,
        request: tonic::Request<v2::CheckRequest>,
    ) -> Result<Response<v2::CheckResponse>, Status> {
        let view = attributes::from_v2(request.get_ref(), self.authorizer.needs_received());
        let evaluation = self.decide("grpc.v2", view).await?;
        Ok(Response::new(response::to_v2(&evaluation.decision)))
    }
}
