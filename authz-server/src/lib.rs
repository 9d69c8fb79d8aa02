//! An Envoy-compatible external authorization server.
//!
//! Serves `envoy.service.auth.v3.Authorization/Check` (and v2) over gRPC, Envoy's HTTP ext_authz
//! mode, gRPC health and reflection. Decisions come from an [`Authorizer`]: the TOML rule engine
//! ([`RuleEngine`]) or your own.
//!
//! ```no_run
//! use authz_server::{AuthorizeError, Authorizer, Server};
//! use rules::{Allow, Decision, Deny, Evaluation, Request};
//!
//! struct TeamHeader;
//!
//! impl Authorizer for TeamHeader {
//!     async fn check(&self, request: &Request) -> Result<Evaluation, AuthorizeError> {
//!         let decision = match request.header("x-team") {
//!             Some("platform") => Decision::Allow(Allow::default()),
//!             _ => Decision::Deny(Deny {
//!                 http_status: 403,
//!                 grpc_code: 7,
//!                 headers: vec![],
//!                 body: "platform team only".into(),
//!                 dynamic_metadata: Default::default(),
//!             }),
//!         };
//!         Ok(decision.into())
//!     }
//! }
//!
//! # async fn run() -> Result<(), authz_server::ServeError> {
//! let server = Server::bind(TeamHeader, Some("127.0.0.1:9000".parse().unwrap()), None).await?;
//! server.serve_until(std::future::pending()).await
//! # }
//! ```

pub mod admin;
pub mod attributes;
pub mod authorizer;
pub mod config;
pub mod deadline;
mod grpc;
pub mod hooks;
mod http_mode;
pub mod jwks;
mod log;
pub mod lookup;
pub mod metrics;
mod otel;
pub mod reload;
mod response;
pub mod rule_engine;
pub mod server;
pub mod tls;

pub use authorizer::{AuthorizeError, Authorizer, Checked, Renders};
pub use config::{Config, LoadError, ServerSection};
pub use grpc::CheckService;
pub use jwks::HttpJwks;
pub use log::{LineFormat, write_decisions_to};
pub use lookup::DatabaseLookup;
pub use metrics::Metrics;
pub use rule_engine::RuleEngine;
pub use server::{ServeError, Server};
