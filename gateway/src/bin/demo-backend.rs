//! The `demo-backend` binary: an OpenAI-style chat-completions echo service for walk-throughs and
//! tests. Prints `listening http ADDR` on stdout.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use gateway::demo_backend::{DemoOptions, serve};

#[derive(Parser)]
#[command(
    version,
    about = "An OpenAI-compatible demo backend that echoes what it received"
)]
struct Cli {
    /// Address to bind (port 0 lets the OS choose).
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: SocketAddr,
    /// Pause between server-sent events of a streamed answer, in milliseconds.
    #[arg(long, default_value_t = 100)]
    sse_delay_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _log = gateway::init_tracing();
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    println!("listening http {}", listener.local_addr()?);
    let options = DemoOptions {
        sse_delay: Duration::from_millis(cli.sse_delay_ms),
    };
    tokio::select! {
        () = serve(listener, options) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
