//! The `gateway` binary: `gateway run --config FILE` serves, `gateway validate FILE` checks.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gateway::config::LoadError;
use gateway::{Config, Gateway, Overrides};

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
    },
    /// Check a configuration file; every error is printed as `file:line:col: message` (exit 2).
    Validate {
        /// The configuration file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { file } => match Config::load(&file, &Overrides::default()) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Run {
            config,
            listen,
            backend_url,
            authz_url,
        } => {
            gateway::init_tracing();
            let overrides = Overrides {
                listen: listen
                    .into_iter()
                    .map(|l| match l.split_once('=') {
                        Some((name, addr)) => (Some(name.to_owned()), addr.to_owned()),
                        None => (None, l),
                    })
                    .collect(),
                backend_urls: pairs(backend_url),
                authz_urls: pairs(authz_url),
            };
            match Config::load(&config, &overrides) {
                Err(LoadError::Invalid(e)) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
                Ok(config) => match run(config) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        ExitCode::FAILURE
                    }
                },
            }
        }
    }
}

fn pairs(values: Vec<String>) -> Vec<(String, String)> {
    values
        .into_iter()
        .filter_map(|v| v.split_once('=').map(|(a, b)| (a.to_owned(), b.to_owned())))
        .collect()
}

#[tokio::main]
async fn run(config: Config) -> anyhow::Result<()> {
    let gateway = Gateway::bind(config).await.context("binding listeners")?;
    for (name, addr) in gateway.local_addrs() {
        tracing::info!(listener = %name, %addr, "listening");
        println!("listening http {addr}");
    }
    tokio::select! {
        result = gateway.run() => result.context("serving"),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
