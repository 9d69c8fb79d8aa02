//! `gateway`: a hyper reverse proxy that consumes any Envoy-compatible ext_authz server exactly
//! as Envoy's `ext_authz` filter does, with policies attached at gateway (listener) and route
//! level.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let text = std::fs::read_to_string("config/gateway.toml")?;
//! let config = gateway::Config::from_toml(&text, "config/gateway.toml")?;
//! let gw = gateway::Gateway::bind(config).await?;
//! for (name, addr) in gw.local_addrs() {
//!     println!("listening http {addr} ({name})");
//! }
//! gw.run().await?;
//! # Ok(()) }
//! ```
//!
//! Layout: [`config`] (file → validated types), [`request`] (the one canonical request and the
//! helpers that read it), [`route`] (routes, matching and precedence), [`ext_authz`] (the
//! Envoy-compatible client), [`proxy`] (one request end to end, a pipeline of named steps),
//! [`upstream`] (backends and their pools), [`server`] (listeners, drain; each connection served
//! under its limits by the `listener` crate), [`state`] (what every request shares), [`tls`]
//! (listener TLS, client identity, TLS to authz servers), [`reload`] (hot reload), [`admin`] and
//! [`metrics`] (the admin port), [`redact`] (credentials out of logs), `logging` (the log
//! writer, [`init_logging`]), [`demo_backend`] (the OpenAI-style demo service).

mod access_log;
pub mod admin;
pub mod body;
pub mod config;
pub mod demo_backend;
pub mod ext_authz;
pub mod headers;
mod log_format;
mod logging;
pub mod metrics;
mod otel;
pub mod proxy;
pub mod redact;
pub mod reload;
pub mod request;
pub mod route;
pub mod server;
pub mod state;
pub mod tls;
pub mod upstream;

pub use config::{Config, ConfigErrors, Overrides};
pub use log_format::LogFormat;
pub use logging::{LogGuard, init_logging, init_logging_and_tracing, init_tracing};
pub use server::{Drained, Gateway};
pub use state::Shared;
