//! The rule engine: a TOML policy compiled into matchers and actions, and
//! `RuleSet::evaluate(&Request, &Hooks) -> Evaluation` (or the hook-less `decide`). No gRPC and
//! no HTTP: the crate depends on no async runtime and opens no socket.
//!
//! [`load`] is the one boundary from text to a compiled [`RuleSet`]; `docs/rules.md` is the
//! reference for the policy format.
//!
//! # What I/O happens, and where
//!
//! - **At load, files.** [`load`] reads the files a policy names, relative to the policy file's
//!   directory, and nothing else: `api_keys.file` / `bearer.file` key lists
//!   (`compile/credential.rs`, `key_file`), `jwks_file` JWKS documents (`compile/jwt.rs`,
//!   `jwks_file_keys`), and a `rego` rule's policy and data files (`rego/load.rs`,
//!   `Loaded::policies` and `Loaded::data`). A file that cannot be read is a config error.
//! - **Per request, none of its own.** [`RuleSet::evaluate`] reads the request it is given and
//!   the system clock (token expiry, Rego's `io.jwt.decode_verify`). The two things a decision may need
//!   from outside come through the [`hooks`] traits the caller implements: [`Lookup`] runs a
//!   rule's SQL, [`JwksSource`] fetches a `jwks_url`. The server's implementations do the I/O
//!   (`authz-server/src/lookup/`: connection pools to PostgreSQL or SQLite behind a cache;
//!   `authz-server/src/jwks.rs`: an HTTP client); tests drive in-memory doubles. Without a hook
//!   ([`RuleSet::decide`]), a rule that needs one fails closed.

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
mod files;
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

pub use canonical::{EscapedSlashes, PathOptions, PathParameters};
pub use compile::{Loading, MAX_NESTING, MAX_RULES, load, load_reading};
pub use credential::{MAX_CREDENTIAL_BYTES, MAX_STATIC_KEYS};
pub use decision::{
    Allow, AppendAction, Decision, Deny, Evaluation, Metadata, PolicyFailure, RequestHeader,
    ResponseHeader, ShadowMatch,
};
pub use engine::RuleSet;
pub use error::{ConfigError, ConfigErrors};
pub use files::{Digest, FileRead, digest};
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
