//! The `gateway` binary: `gateway run --config FILE` serves, `gateway validate FILE` checks.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gateway::config::{LoadError, parse_duration};
use gateway::reload::Reloader;
use gateway::{Config, Gateway, LogFormat, Overrides};

#[derive(Parser)]
#[command(
    version,
    about = "A reverse proxy that asks an Envoy-compatible ext_authz server before forwarding"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with the given configuration; prints `listening http ADDR` per listener on stdout.
    Run {
        /// The configuration file.
        #[arg(short, long, default_value = "config/gateway.toml")]
        config: PathBuf,
        /// Bind address override: `ADDR` (first listener) or `NAME=ADDR`; repeatable.
        #[arg(long, value_name = "[NAME=]ADDR")]
        listen: Vec<String>,
        /// Backend URL override: `NAME=http://host:port`; repeatable.
        #[arg(long, value_name = "NAME=URL")]
        backend_url: Vec<String>,
        /// Authz backend URL override: `NAME=http://host:port`; repeatable.
        #[arg(long, value_name = "NAME=URL")]
        authz_url: Vec<String>,
        /// Admin endpoint address (`/metrics`, `/healthz`, `/readyz`); overrides `[admin]`.
        /// Prints `listening admin ADDR`.
        #[arg(long, value_name = "ADDR")]
        admin: Option<String>,
        /// Log line format on stderr.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// Export OpenTelemetry traces over OTLP/gRPC to this endpoint, e.g.
        /// `http://collector:4317`; default `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, then
        /// `OTEL_EXPORTER_OTLP_ENDPOINT`. Unset: no tracing.
        #[arg(long, value_name = "URL")]
        otlp_endpoint: Option<String>,
        /// On SIGTERM/SIGINT, how long requests in flight may take to finish, e.g. `10s`.
        #[arg(long, value_parser = duration, default_value = "10s")]
        drain_timeout: Duration,
        /// How often the config file is checked for changes, e.g. `1s` (SIGHUP reloads at once).
        #[arg(long, value_parser = duration, default_value = "1s")]
        reload_interval: Duration,
    },
    /// Check a configuration file; every error is printed as `file:line:col: message` (exit 2).
    Validate {
        /// The configuration file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Validate { file } => validate(&file),
        Command::Run {
            config,
            listen,
            backend_url,
            authz_url,
            admin,
            log_format,
            otlp_endpoint,
            drain_timeout,
            reload_interval,
        } => {
            let otlp_endpoint = telemetry::endpoint(otlp_endpoint.as_deref());
            let _log = match gateway::init_logging_and_tracing(log_format, otlp_endpoint.as_deref())
            {
                Ok(guard) => guard,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let overrides = Overrides {
                listen: listen.into_iter().map(listen_override).collect(),
                backend_urls: pairs(backend_url),
                authz_urls: pairs(authz_url),
                admin,
            };
            let reloading = Reloading {
                path: config,
                overrides,
                interval: reload_interval,
            };
            load_and_serve(reloading, drain_timeout)
        }
    }
}

/// `gateway validate FILE`: exit 0 and `FILE: ok`, or every error and exit 2.
fn validate(file: &Path) -> ExitCode {
    match Config::load(file, &Overrides::default()) {
        Ok(_) => {
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

/// Loads the config (an invalid one exits 2 with every error) and serves it until shutdown.
fn load_and_serve(reloading: Reloading, drain_timeout: Duration) -> ExitCode {
    match Config::load(&reloading.path, &reloading.overrides) {
        Err(LoadError::Invalid(e)) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
        Ok(loaded) => match run(loaded, reloading, drain_timeout) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `--listen ADDR` (the first listener) or `--listen NAME=ADDR`.
fn listen_override(value: String) -> (Option<String>, String) {
    match value.split_once('=') {
        Some((name, addr)) => (Some(name.to_owned()), addr.to_owned()),
        None => (None, value),
    }
}

fn pairs(values: Vec<String>) -> Vec<(String, String)> {
    values
        .into_iter()
        .filter_map(|v| v.split_once('=').map(|(a, b)| (a.to_owned(), b.to_owned())))
        .collect()
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).ok_or_else(|| format!("`{s}`: expected e.g. 500ms, 10s, 1m"))
}

struct Reloading {
    path: PathBuf,
    overrides: Overrides,
    interval: Duration,
}

#[tokio::main]
async fn run(config: Config, reloading: Reloading, drain_timeout: Duration) -> anyhow::Result<()> {
    let gateway = Gateway::bind(config).await.context("binding listeners")?;
    // Before the `listening` lines: whoever reads them may signal at once.
    let shutdown = shutdown_signal();
    for (name, addr) in gateway.local_addrs() {
        tracing::info!(listener = %name, %addr, "listening");
        println!("listening http {addr}");
    }
    if let Some(addr) = gateway.admin_addr() {
        tracing::info!(%addr, "admin listening");
        println!("listening admin {addr}");
    }
    let reloader = Arc::new(Reloader::new(
        reloading.path,
        reloading.overrides,
        gateway.shared(),
    ));
    tokio::spawn(reloader.watch(reloading.interval));
    let drained = gateway
        .run_until(shutdown, drain_timeout)
        .await
        .context("serving")?;
    if let gateway::Drained::DeadlinePassed(open) = drained {
        tracing::warn!(
            connections = open,
            "drain deadline passed; cut the connections still open"
        );
    }
    Ok(())
}

/// SIGTERM (what Kubernetes and `docker stop` send) or SIGINT (Ctrl-C). The handlers are
/// installed when this is called, not when the future is first polled: until then the default
/// action would kill the process instead of draining it.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let handlers = signal(SignalKind::terminate()).and_then(|term| {
            let interrupt = signal(SignalKind::interrupt())?;
            Ok((term, interrupt))
        });
        async move {
            let Ok((mut term, mut interrupt)) = handlers else {
                tracing::warn!("cannot install signal handlers; SIGTERM/SIGINT will not drain");
                return std::future::pending().await;
            };
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: draining"),
                _ = interrupt.recv() => tracing::info!("SIGINT: draining"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
