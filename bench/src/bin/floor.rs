//! `floor`: the floor server — a bare tonic Check (v3 + v2) answering a constant OK, and optionally a
//! static `200 ok` HTTP backend. Prints `listening grpc ADDR` / `listening http ADDR` on stdout.
//!
//! ```sh
//! floor --grpc 127.0.0.1:0 --http 127.0.0.1:0 --workers 1
//! ```

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    about = "A bare tonic Check handler returning a constant OK (v3 and v2), and a static HTTP backend"
)]
struct Cli {
    /// gRPC address (port 0: the OS chooses).
    #[arg(long, default_value = "127.0.0.1:0")]
    grpc: SocketAddr,
    /// Also serve `200 ok` over HTTP here.
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Runtime worker threads; `TOKIO_WORKER_THREADS` or 1 when absent.
    #[arg(long)]
    workers: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let workers = cli
        .workers
        .or_else(|| std::env::var("TOKIO_WORKER_THREADS").ok()?.parse().ok())
        .unwrap_or(1)
        .max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let grpc = TcpListener::bind(cli.grpc)
            .await
            .with_context(|| format!("binding {}", cli.grpc))?;
        let http = match cli.http {
            Some(address) => Some(
                TcpListener::bind(address)
                    .await
                    .with_context(|| format!("binding {address}"))?,
            ),
            None => None,
        };
        println!("listening grpc {}", grpc.local_addr()?);
        if let Some(http) = &http {
            println!("listening http {}", http.local_addr()?);
        }
        if let Some(http) = http {
            tokio::spawn(bench::floor::serve_http(http));
        }
        tokio::select! {
            served = bench::floor::serve_grpc(grpc) => served.context("serving gRPC"),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}
