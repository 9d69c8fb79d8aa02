//! `authz-server`: serve, validate or explain a rule config.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;

use authz_server::reload::{self, Reloader};
use authz_server::tls::TlsSection;
use authz_server::{Config, LoadError, Metrics, RuleEngine, Server, ServerSection, hooks};
use clap::{Args, Parser, Subcommand};

mod explain;
mod keys;

/// An Envoy-compatible ext_authz server. With no arguments it serves the built-in default, a
/// drop-in for Istio's `ext-authz` test service (gRPC on 9000, HTTP on 8000).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Args)]
struct ServeArgs {
    /// The rule config (TOML); the built-in Istio-compatible default when absent.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Overrides `[server] grpc`, e.g. `127.0.0.1:0` for an OS-chosen port.
    #[arg(long)]
    grpc_addr: Option<SocketAddr>,
    /// Overrides `[server] http`.
    #[arg(long)]
    http_addr: Option<SocketAddr>,
    /// Overrides `[server] admin`: `/metrics`, `/healthz`, `/readyz`.
    #[arg(long)]
    admin_addr: Option<SocketAddr>,
    /// Overrides `[server.tls] cert`: serve gRPC over TLS with this certificate chain (PEM).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Overrides `[server.tls] key`: the private key (PEM) for `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Overrides `[server.tls] client_ca`: require client certificates chaining to this CA (mTLS).
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Seconds requests in flight get to finish after SIGTERM/SIGINT.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    drain_timeout: u64,
    /// Export OpenTelemetry traces over OTLP/gRPC to this endpoint, e.g.
    /// `http://collector:4317`; default `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, then
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`. Unset: no tracing.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// Log lines as human-readable text or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Checks config files; exit 0 when all are valid, 2 listing every error as file:line:col.
    Validate {
        /// The files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Decides one request given on the command line and says which rule decided and why.
    Explain(explain::ExplainArgs),
    /// Manages API keys in a lookup database (SQLite or PostgreSQL): init, add, list, revoke.
    Keys(keys::KeysArgs),
}

/// Exit code for a config that does not load.
const EXIT_INVALID_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Validate { files }) => validate(&files),
        Some(Command::Keys(args)) => keys::run(args),
        Some(Command::Explain(args)) => match load(args.config.as_ref()) {
            Ok(config) => explain::run(&config.rules, &args),
            Err(code) => code,
        },
        None => match load(cli.serve.config.as_ref()) {
            Ok(config) => report(run_server(config, &cli.serve)),
            Err(code) => code,
        },
    }
}

fn load(path: Option<&PathBuf>) -> Result<Config, ExitCode> {
    let loaded = match path {
        Some(path) => Config::load(path),
        None => Config::builtin(),
    };
    loaded.map_err(|error| {
        eprintln!("{error}");
        match error {
            LoadError::Invalid(_) => ExitCode::from(EXIT_INVALID_CONFIG),
            LoadError::Read { .. } => ExitCode::FAILURE,
        }
    })
}

fn validate(files: &[PathBuf]) -> ExitCode {
    let mut code = ExitCode::SUCCESS;
    for file in files {
        match Config::load(file) {
            Ok(config) => {
                println!("{}: ok ({} rules)", file.display(), config.rules.len());
                // Warnings do not fail validation: the config is legal, maybe not what was meant.
                let serves_http = config.server.http.is_some();
                for warning in config.warnings(serves_http) {
                    println!("{}: warning: {warning}", file.display());
                }
            }
            Err(error) => {
                eprintln!("{error}");
                code = ExitCode::from(EXIT_INVALID_CONFIG);
            }
        }
    }
    code
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("authz-server: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The default command: logging set up, the listeners bound from the config and the flags, the
/// reloader started, then serving until SIGTERM/SIGINT and the drain that follows.
#[tokio::main]
async fn run_server(config: Config, args: &ServeArgs) -> anyhow::Result<()> {
    // Dropped when serving ends (after the drain): the log thread writes what it holds first.
    let endpoint = telemetry::endpoint(args.otlp_endpoint.as_deref());
    let _flush_on_exit = init_logging(args.log_format, endpoint.as_deref())?;
    let grpc = args.grpc_addr.or(config.server.grpc);
    let http = args.http_addr.or(config.server.http);
    anyhow::ensure!(
        grpc.is_some() || http.is_some(),
        "nothing to serve: set [server] grpc or http, or pass --grpc-addr/--http-addr"
    );
    for warning in config.warnings(http.is_some()) {
        tracing::warn!("config: {warning}");
    }
    let config_dir = args.config.as_deref().and_then(std::path::Path::parent);
    let metrics = Arc::new(Metrics::new());
    let hooks = hooks::connect_reporting(&config.rules, config_dir, metrics.clone()).await;
    let engine = RuleEngine::with_hooks(config.rules, hooks);
    let server = Server::bind(engine.clone(), grpc, http)
        .await
        .context("starting the listeners")?
        .with_metrics(metrics)
        .with_limits(config.server.limits.limits())
        .with_drain_timeout(Duration::from_secs(args.drain_timeout));
    let server = with_tls_and_admin(server, &config.server, args).await?;
    start_reloading(args, engine, server.metrics(), config.server, config.files);
    // Before the `listening` lines: whoever reads them may signal at once.
    let shutdown = shutdown_signal();
    print_listening(&server);
    server.serve_until(shutdown).await?;
    Ok(())
}

/// TLS and the admin port, each from its flags or else from `[server]`.
async fn with_tls_and_admin(
    mut server: Server<RuleEngine>,
    section: &ServerSection,
    args: &ServeArgs,
) -> anyhow::Result<Server<RuleEngine>> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsSection {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.tls_client_ca.clone(),
        }),
        _ => section.tls.clone(),
    };
    if let Some(tls) = tls {
        server = server.with_tls(tls.load()?);
    }
    if let Some(admin) = args.admin_addr.or(section.admin) {
        server = server
            .with_admin(admin)
            .await
            .context("starting the admin listener")?;
    }
    Ok(server)
}

/// A config file is re-read on SIGHUP and when it changes; the built-in config has nothing to
/// re-read, but SIGHUP must not kill the process either.
fn start_reloading(
    args: &ServeArgs,
    engine: RuleEngine,
    metrics: Arc<Metrics>,
    section: ServerSection,
    loaded_from: Vec<rules::FileRead>,
) {
    match &args.config {
        Some(path) => {
            let reloader =
                Reloader::new(path.clone(), engine, metrics, section).loaded_from(loaded_from);
            tokio::spawn(reloader.run(reload::DEFAULT_POLL_INTERVAL));
        }
        None => {
            tokio::spawn(ignore_hangup());
        }
    }
}

/// Tests and scripts read these lines to find OS-chosen ports.
fn print_listening(server: &Server<RuleEngine>) {
    if let Some(address) = server.grpc_addr() {
        println!("listening grpc {address}");
    }
    if let Some(address) = server.http_addr() {
        println!("listening http {address}");
    }
    if let Some(address) = server.admin_addr() {
        println!("listening admin {address}");
    }
}

/// Logs go to stderr (stdout carries the `listening` lines); `RUST_LOG` filters, default `info`.
/// A check formats its line (the decision line by our own writer, `log/line.rs`) and hands it
/// to a writer thread (`tracing_appender::non_blocking`)
/// instead of waiting on stderr; when that thread falls 128k lines behind, lines are dropped,
/// never the check delayed. The returned guard flushes on drop.
///
/// With `otlp_endpoint`, spans are exported too (see docs/tracing.md); `RUST_LOG` then filters
/// the log layer only, so it cannot silence the spans, and the log layer never sees them.
fn init_logging(format: LogFormat, otlp_endpoint: Option<&str>) -> anyhow::Result<FlushOnExit> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let ansi = std::io::stderr().is_terminal();
    // The per-check decision line skips tracing's formatter (most of its cost) and goes to the
    // same writer thread in the same layout; on a colour terminal it keeps tracing's colours.
    match format {
        LogFormat::Text if !ansi => {
            authz_server::write_decisions_to(writer.clone(), authz_server::LineFormat::Text);
        }
        LogFormat::Json => {
            authz_server::write_decisions_to(writer.clone(), authz_server::LineFormat::Json);
        }
        LogFormat::Text => {}
    }
    if let Some(endpoint) = otlp_endpoint {
        use tracing_subscriber::Layer as _;
        let logs = tracing_subscriber::fmt::layer().with_writer(writer);
        let logs = match format {
            LogFormat::Text => logs.with_ansi(ansi).boxed(),
            LogFormat::Json => logs.json().boxed(),
        };
        let tracing = telemetry::install(logs, filter, endpoint, "authz-server")?;
        return Ok(FlushOnExit {
            _tracing: Some(tracing),
            _logs: guard,
        });
    }
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => logs.with_ansi(ansi).init(),
        LogFormat::Json => logs.json().init(),
    }
    Ok(FlushOnExit {
        _tracing: None,
        _logs: guard,
    })
}

/// Held until serving ends (after the drain). Dropped in field order: the exporter sends the
/// spans still queued, then the log thread writes the lines it holds.
struct FlushOnExit {
    _tracing: Option<telemetry::Tracing>,
    _logs: tracing_appender::non_blocking::WorkerGuard,
}

/// The built-in config has no file to re-read; SIGHUP must not kill the process either.
async fn ignore_hangup() {
    #[cfg(unix)]
    if let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: serving the built-in config, nothing to reload");
        }
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called, not when the
/// future is first polled: until then the default action would kill the process instead of
/// draining it.
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
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
