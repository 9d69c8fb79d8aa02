//! The rule engine: a TOML policy compiled into matchers and actions, and
//! `RuleSet::evaluate(&Request, &Hooks) -> Evaluation` (or the hook-less `decide`). No I/O, no
//! gRPC, no HTTP: token keys fetched by URL and database rows come through the [`hooks`] traits.
//!
//! [`load`] is the one boundary from text to a compiled [`RuleSet`]; `docs/rules.md` is the
//! reference for the policy format.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod action;
mod compile;
mod config;
mod credential;
pub mod decision;
mod engine;
mod error;
pub mod hooks;
mod identity;
mod index;
mod lookup;
mod matcher;
mod prepare;
mod rego;
pub mod request;
mod template;
pub mod trace;

pub use canonical::{EscapedSlashes, PathOptions};
pub use compile::{MAX_NESTING, MAX_RULES, load};
pub use credential::{MAX_CREDENTIAL_BYTES, MAX_STATIC_KEYS};
pub use decision::{
    Allow, AppendAction, Decision, Deny, Evaluation, Metadata, PolicyFailure, RequestHeader,
    ResponseHeader, ShadowMatch,
};
pub use engine::RuleSet;
pub use error::{ConfigError, ConfigErrors};
pub use hooks::{
    Hooks, JwksError, JwksSource, Lookup, LookupError, LookupPolicy, LookupQuery, OnLookupError,
    Row,
};
pub use lookup::{DatabaseSpec, MAX_PARAM_BYTES, MAX_PARAMS, MAX_SQL_BYTES};
pub use matcher::REGEX_SIZE_LIMIT;
pub use prepare::RequestOptions;
pub use rego::{DEFAULT_QUERY as DEFAULT_REGO_QUERY, DEFAULT_TIMEOUT as DEFAULT_REGO_TIMEOUT};
pub use request::{OpaAttributes, Peer, Request, Transport};
pub use template::MAX_RENDERED_BYTES;
pub use trace::{Trace, TraceEntry};
