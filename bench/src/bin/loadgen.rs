//! `loadgen`: drives one server with gRPC Check (v3/v2) or HTTP/1.1 requests, closed or open loop,
//! checks every answer, and prints one JSON line (`bench::report::RunReport`).
//!
//! ```sh
//! loadgen grpc --address 127.0.0.1:9000 --header x-ext-authz=allow --concurrency 32 --connections 4
//! loadgen grpc --address 127.0.0.1:9000 --api v2 --expect-code 7 --rate 5000
//! loadgen http --address 127.0.0.1:8080 --path /openai --header x-ext-authz=allow --expect-status 200
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use bench::load::grpc::{Api, GrpcTarget};
use bench::load::http::HttpTarget;
use bench::load::{self, Loop, Plan};
use bench::report::RunReport;
use clap::{Args, Parser, Subcommand, ValueEnum};
use extauthz_proto::{v2, v3};

#[derive(Parser)]
#[command(about = "Load generator: gRPC Check or HTTP/1.1, closed or open loop, one JSON line out")]
struct Cli {
    #[command(subcommand)]
    protocol: Protocol,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct Common {
    /// Name written in the report.
    #[arg(long, global = true, default_value = "run")]
    scenario: String,
    /// Calls in flight (closed loop), or the most in flight (open loop).
    #[arg(long, global = true, default_value_t = 32)]
    concurrency: usize,
    /// Open loop at this many calls per second; closed loop when absent.
    #[arg(long, global = true)]
    rate: Option<f64>,
    /// Measured seconds.
    #[arg(long, global = true, default_value_t = 5.0)]
    seconds: f64,
    /// Unmeasured seconds first.
    #[arg(long, global = true, default_value_t = 0.5)]
    warmup: f64,
    /// Request header `name=value` (repeatable).
    #[arg(long = "header", global = true, value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Runtime threads of the load generator itself.
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
}

#[derive(Subcommand)]
enum Protocol {
    /// gRPC Check over h2c.
    Grpc {
        /// The server's gRPC address.
        #[arg(long)]
        address: SocketAddr,
        /// Check API version.
        #[arg(long, value_enum, default_value_t = ApiArg::V3)]
        api: ApiArg,
        /// HTTP/2 connections the calls are spread over.
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// The `status.code` every answer must carry.
        #[arg(long, default_value_t = 0)]
        expect_code: i32,
    },
    /// HTTP/1.1 GET, one keep-alive connection per call in flight.
    Http {
        /// The server's address.
        #[arg(long)]
        address: SocketAddr,
        /// The Host header.
        #[arg(long, default_value = "api.example.com")]
        host: String,
        /// Path and query.
        #[arg(long, default_value = "/")]
        path: String,
        /// The status every answer must have.
        #[arg(long, default_value_t = 200)]
        expect_status: u16,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ApiArg {
    V3,
    V2,
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{text}`: expected name=value"))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.common.threads.max(1))
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(cli))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<RunReport> {
    let common = &cli.common;
    let plan = Plan {
        warmup: Duration::from_secs_f64(common.warmup),
        duration: Duration::from_secs_f64(common.seconds),
        mode: match common.rate {
            Some(rate) if rate > 0.0 => Loop::Open { rate },
            _ => Loop::Closed,
        },
    };
    let concurrency = common.concurrency.max(1);
    let (outcome, connections) = match cli.protocol {
        Protocol::Grpc {
            address,
            api,
            connections,
            expect_code,
        } => {
            let api = match api {
                ApiArg::V3 => Api::V3,
                ApiArg::V2 => Api::V2,
            };
            let target = GrpcTarget {
                address,
                api,
                headers: common.headers.clone(),
                expected_code: expect_code,
            };
            let outcome = match api {
                Api::V3 => {
                    let callers = target
                        .callers::<v3::CheckResponse>(connections, concurrency)
                        .await?;
                    load::run(callers, plan).await
                }
                Api::V2 => {
                    let callers = target
                        .callers::<v2::CheckResponse>(connections, concurrency)
                        .await?;
                    load::run(callers, plan).await
                }
            };
            (outcome, connections.max(1))
        }
        Protocol::Http {
            address,
            host,
            path,
            expect_status,
        } => {
            let target = HttpTarget {
                address,
                host,
                path,
                headers: common.headers.clone(),
                expected_status: expect_status,
            };
            let callers = target
                .callers(concurrency)
                .await
                .with_context(|| format!("connecting to {address}"))?;
            (load::run(callers, plan).await, concurrency)
        }
    };
    Ok(RunReport::new(
        &common.scenario,
        &plan,
        concurrency,
        connections,
        &outcome,
    ))
}
