//! Configuration: the TOML file as written ([`raw`]), the one conversion that validates it
//! ([`Config::from_toml`], in `load`, runs `compile`) and the validated types the proxy runs on
//! ([`Config`], [`Listener`]; routes are [`crate::route::Route`]).
//!
//! Module map: `load` (text → raw → compile, errors placed), `compile` (the whole file: admin,
//! listeners, authorization servers), `backends`, `routes` and `policies` (one section each),
//! `fields` (the field checks every section shares: durations, URLs, regexes, header names),
//! `overrides` (command-line values applied before validation), [`limits`] (a listener's
//! resource limits), `errors` (every problem at `file:line:col`), `validated` (the output).
//!
//! After [`Config::from_toml`] nothing on the request path re-checks or re-parses configuration.

mod backends;
mod balancing;
mod compile;
mod env;
mod errors;
mod fields;
mod header_rules;
pub mod limits;
mod load;
mod overrides;
mod policies;
pub mod raw;
mod retries;
mod routes;
mod validated;

pub use errors::{ConfigError, ConfigErrors, LoadError};
pub use fields::parse_duration;
pub use overrides::Overrides;
pub use validated::{Config, Listener};
