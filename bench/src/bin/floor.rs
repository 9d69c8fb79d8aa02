//! `floor`: the floor server — a bare tonic Check (v3 + v2) answering a constant OK, and optionally a
//! static `200 ok` HTTP backend, in plaintext and over TLS. Prints `listening grpc ADDR` /
//! `listening http ADDR` / `listening https ADDR` on stdout.
//!
//! ```sh
//! floor --grpc 127.0.0.1:0 --http 127.0.0.1:0 --workers 1
//! floor --https 127.0.0.1:0 --cert server.pem --key server.key   # h2 or http/1.1 by ALPN
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

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
    /// Also serve `200 ok` over TLS here (needs `--cert` and `--key`).
    #[arg(long, requires_all = ["cert", "key"])]
    https: Option<SocketAddr>,
    /// PEM certificate chain of the HTTPS listener.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// PEM private key of the HTTPS listener.
    #[arg(long)]
    key: Option<PathBuf>,
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
    let tls = match (&cli.https, &cli.cert, &cli.key) {
        (Some(_), Some(cert), Some(key)) => Some(bench::floor::tls_config(
            &std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?,
            &std::fs::read(key).with_context(|| format!("reading {}", key.display()))?,
        )?),
        _ => None,
    };
    runtime.block_on(async {
        let grpc = bind(cli.grpc).await?;
        let http = match cli.http {
            Some(address) => Some(bind(address).await?),
            None => None,
        };
        let https = match cli.https {
            Some(address) => Some(bind(address).await?),
            None => None,
        };
        println!("listening grpc {}", grpc.local_addr()?);
        if let Some(http) = http {
            println!("listening http {}", http.local_addr()?);
            tokio::spawn(bench::floor::serve_http(http));
        }
        if let (Some(https), Some(tls)) = (https, tls) {
            println!("listening https {}", https.local_addr()?);
            tokio::spawn(bench::floor::serve_https(https, tls));
        }
        tokio::select! {
            served = bench::floor::serve_grpc(grpc) => served.context("serving gRPC"),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}

async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address}"))
}
