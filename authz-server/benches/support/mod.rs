//! The load generator both benchmarks share: Envoy-shaped CheckRequests, many v3 Check calls in
//! flight over a few HTTP/2 connections, and the median of alternating rounds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use extauthz_proto::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use extauthz_proto::v3;
use tonic::transport::Channel;

// The benchmarks use the request, not the rule-set generator.
#[allow(dead_code)]
#[path = "fixtures.rs"]
mod fixtures;
pub(crate) use fixtures::envoy_like;

/// Connections the load is spread over.
const CONNECTIONS: u64 = 4;

/// A numeric knob from the environment (`ROUNDS`, `SECONDS`, `IN_FLIGHT`).
pub(crate) fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Checks per second over `seconds` (after a short warm-up), with `in_flight` calls
/// outstanding. Every answer must carry gRPC status `expected_code`, so a misconfigured
/// benchmark cannot measure the wrong path.
pub(crate) async fn measure(
    address: SocketAddr,
    request: &v3::CheckRequest,
    expected_code: i32,
    in_flight: u64,
    seconds: u64,
) -> f64 {
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        let channel = Channel::from_shared(format!("http://{address}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        clients.push(AuthorizationClient::new(channel));
    }
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..in_flight {
        let mut client = clients[(i % CONNECTIONS) as usize].clone();
        let request = request.clone();
        let (done, stop) = (done.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let response = client.check(request.clone()).await.expect("Check");
                let code = response.get_ref().status.as_ref().map_or(-1, |s| s.code);
                assert_eq!(
                    code, expected_code,
                    "the benchmark request took another path"
                );
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start_count = done.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let count = done.load(Ordering::Relaxed) - start_count;
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    count as f64 / elapsed
}

/// The middle value.
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
