//! Check throughput of the real server against a bare tonic handler, side by side in one run.
//!
//! ```sh
//! cargo bench -p authz-server --bench check_throughput            # defaults: 5 rounds x 2 s, 32 in flight
//! ROUNDS=9 SECONDS=3 IN_FLIGHT=64 cargo bench -p authz-server --bench check_throughput
//! ```
//!
//! Both servers run in this process on loopback and are driven by the same load generator:
//! `IN_FLIGHT` concurrent v3 Check calls multiplexed over 4 HTTP/2 connections. Rounds alternate
//! (bare, real, bare, real, ...) so drift on a shared machine hits both alike; the report gives
//! each side's median and the ratio real/bare. Three real configurations are measured: the
//! Istio default allowing on its first gRPC rule (`x-ext-authz: allow`), the same default denying
//! after every rule (which also renders the attribute dump), and a one-rule header match.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use authz_server::{Config, RuleEngine, Server};
use extauthz_proto::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use extauthz_proto::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use extauthz_proto::{RpcStatus, v3};
use tonic::transport::Channel;

/// The baseline: a tonic handler that answers every Check with a constant OK.
struct Constant;

#[tonic::async_trait]
impl Authorization for Constant {
    async fn check(
        &self,
        _request: tonic::Request<v3::CheckRequest>,
    ) -> Result<tonic::Response<v3::CheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(v3::CheckResponse {
            status: Some(RpcStatus::default()),
            http_response: Some(v3::check_response::HttpResponse::OkResponse(
                v3::OkHttpResponse::default(),
            )),
            dynamic_metadata: None,
        }))
    }
}

const HEADER_RULE: &str = r#"
[default]
deny = { status = 403 }

[[rules]]
name = "team"
[rules.when]
headers = [{ name = "x-team", exact = "platform" }]
[rules.allow]
request_headers = [{ name = "x-authz-rule", value = "{{rule.name}}" }]
"#;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A CheckRequest shaped like one Envoy sends for a small JSON POST.
fn envoy_like(extra: &[(&str, &str)]) -> v3::CheckRequest {
    let mut headers: std::collections::HashMap<String, String> = [
        (":authority", "api.example.com"),
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        (":scheme", "http"),
        ("content-type", "application/json"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "*/*"),
        ("x-request-id", "7f1c2a9e-5d43-4a8b-9b1e-2f6c8d0a1b3c"),
        (
            "x-ai-api-key",
            "N2YwMDIxZTEtNGUzNS1jNzgzLTRkYjAtYjE2YzRkZGVmNjcy",
        ),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    headers.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    v3::CheckRequest {
        attributes: Some(v3::AttributeContext {
            request: Some(v3::attribute_context::Request {
                time: None,
                http: Some(v3::attribute_context::HttpRequest {
                    method: "POST".into(),
                    path: "/v1/chat/completions".into(),
                    host: "api.example.com".into(),
                    protocol: "HTTP/1.1".into(),
                    headers,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
}

async fn start_constant() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    // Nagle off, as the real server does, so the comparison is of the handlers.
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |accepted| {
            let stream = accepted?;
            stream.set_nodelay(true)?;
            Ok::<_, std::io::Error>(stream)
        },
    );
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(Constant))
            .serve_with_incoming(incoming),
    );
    address
}

async fn start_rules(config: Config) -> SocketAddr {
    let server = Server::bind(
        RuleEngine::new(config.rules),
        Some("127.0.0.1:0".parse().expect("address")),
        None,
    )
    .await
    .expect("bind");
    let address = server.grpc_addr().expect("grpc address");
    tokio::spawn(server.serve(std::future::pending()));
    address
}

/// Checks per second over `seconds`, with `in_flight` calls outstanding.
async fn measure(
    address: SocketAddr,
    request: &v3::CheckRequest,
    in_flight: u64,
    seconds: u64,
) -> f64 {
    let mut clients = Vec::new();
    for _ in 0..4 {
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
        let mut client = clients[(i % 4) as usize].clone();
        let request = request.clone();
        let (done, stop) = (done.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let response = client.check(request.clone()).await.expect("Check");
                std::hint::black_box(response);
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Warm up, then count.
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

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let rounds = env("ROUNDS", 5);
    let seconds = env("SECONDS", 2);
    let in_flight = env("IN_FLIGHT", 32);
    let bare = start_constant().await;
    let istio = start_rules(Config::builtin().expect("built-in config")).await;
    let header = start_rules(Config::parse("bench.toml", HEADER_RULE).expect("bench config")).await;

    let cases = [
        (
            "istio default, allow (x-ext-authz: allow)",
            istio,
            envoy_like(&[("x-ext-authz", "allow")]),
        ),
        (
            "istio default, deny (no header, dump rendered)",
            istio,
            envoy_like(&[]),
        ),
        (
            "one header rule, allow",
            header,
            envoy_like(&[("x-team", "platform")]),
        ),
    ];
    println!(
        "check_throughput: {rounds} rounds x {seconds}s, {in_flight} in flight over 4 HTTP/2 connections, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<50} {:>12} {:>12} {:>8}",
        "case", "bare req/s", "real req/s", "ratio"
    );
    for (name, address, request) in cases {
        let (mut bare_rates, mut real_rates) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            bare_rates.push(measure(bare, &request, in_flight, seconds).await);
            real_rates.push(measure(address, &request, in_flight, seconds).await);
        }
        let (bare_rate, real_rate) = (median(bare_rates), median(real_rates));
        println!(
            "{name:<50} {bare_rate:>12.0} {real_rate:>12.0} {:>8.2}",
            real_rate / bare_rate
        );
    }
}
