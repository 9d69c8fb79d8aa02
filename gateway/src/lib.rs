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
//! Layout: [`config`] (file → validated types), [`request`] (the one canonical request),
//! [`route`] (matching and precedence),
//! [`ext_authz`] (the Envoy-compatible client), [`proxy`] (one request end to end),
//! [`upstream`] (backends and their pools), [`server`] (listeners, drain; each connection served under its limits by
//! the `listener` crate), [`tls`] (listener TLS, client identity, TLS to authz
//! servers), [`reload`] (hot reload), [`admin`] and [`metrics`] (the admin port), [`redact`]
//! (credentials out of logs), [`demo_backend`] (the OpenAI-style demo service).

mod access_log;
pub mod admin;
pub mod body;
pub mod config;
pub mod demo_backend;
pub mod ext_authz;
pub mod headers;
pub mod metrics;
pub mod proxy;
pub mod redact;
pub mod reload;
pub mod request;
pub mod route;
pub mod server;
pub mod tls;
pub mod upstream;

pub use config::{Config, ConfigErrors, Overrides};
pub use server::{Drained, Gateway, Shared};

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (no colours when stderr is not a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Keeps the log-writing thread alive; dropping it writes out every line still queued (hold it
/// until the process is done serving).
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _writer: tracing_appender::non_blocking::WorkerGuard,
}

/// How many log lines may wait for the writer thread; past that, lines are dropped rather than
/// make a request wait (the writer drains thousands of lines per millisecond, so only a stalled
/// stderr fills it).
const QUEUED_LINES: usize = 64 * 1024;

/// Logs to stderr, filtered by `RUST_LOG` (default `info`); stdout stays for `listening` lines.
pub fn init_tracing() -> LogGuard {
    init_logging(LogFormat::Text)
}

/// Logs to stderr in `format`, filtered by `RUST_LOG` (default `info`).
///
/// Lines are handed to a background thread that writes them in batches: the request path never
/// makes a `write` to stderr of its own (one syscall per request before; the access log is on
/// every request) and never blocks on a slow reader of stderr.
pub fn init_logging(format: LogFormat) -> LogGuard {
    use std::io::IsTerminal;
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(QUEUED_LINES)
        .lossy(true)
        .thread_name("log-writer")
        // The worker writes every queued line, then flushes: one write per batch.
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    // The access log bypasses the formatter (see `access_log`) but shares the writer.
    access_log::install(writer.clone(), format);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    LogGuard { _writer: guard }
}
