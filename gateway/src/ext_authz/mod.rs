//! The ext_authz client: Envoy's `ext_authz` HTTP filter, as a policy the proxy runs per request.
//!
//! - `policy` ([`ExtAuthz`], one validated policy) and `backend` ([`AuthzBackend`], a server and
//!   its connections); `input` ([`CheckInput`], what a check is given) and `verdict`
//!   ([`Verdict`], [`Resolution`]: what it comes back with);
//! - [`check_request`] fills the `CheckRequest` exactly as Envoy does;
//! - [`grpc`] (over [`h2c`] or tonic's channel) and [`http`] are the two transports, each turning the server's answer into a
//!   transport-neutral [`Verdict`];
//! - [`mutation`] applies an allow to the request and response, or builds the denied response.
//!
//! [`ExtAuthz::check`] is the one place a verdict becomes "continue" or "respond", including the
//! failure mode: an error is never an allow unless `failure_mode_allow` says so, and an allow
//! whose changes cannot be made is never an allow at all.

mod backend;
pub mod check_request;
pub mod grpc;
pub mod h2c;
pub mod http;
mod input;
pub mod mutation;
mod policy;
mod verdict;

pub use backend::AuthzBackend;
pub use check_request::{HeaderFilter, PARTIAL_BODY_HEADER};
pub use http::HttpSettings;
pub use input::{CheckBody, CheckInput, WithRequestBody};
pub use mutation::{Allowed, AppendAction, Denied};
pub use policy::{DEFAULT_TIMEOUT, ExtAuthz, FAILURE_MODE_ALLOWED_HEADER, Transport};
pub use verdict::{Resolution, Verdict};
