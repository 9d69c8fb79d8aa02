//! The price of a database lookup served from cache: Check throughput of a rule that checks
//! `x-ai-api-key` against SQLite (TTL cache warm) against a one-header rule, side by side in one
//! run.
//!
//! ```sh
//! cargo bench -p authz-server --bench lookup_throughput           # defaults: 5 rounds x 2 s, 32 in flight
//! ROUNDS=9 SECONDS=3 IN_FLIGHT=64 cargo bench -p authz-server --bench lookup_throughput
//! ```
//!
//! Both servers run in this process on loopback, each with the hooks `authz-server` wires, and
//! are driven by the same load generator (`IN_FLIGHT` concurrent v3 Check calls over 4 HTTP/2
//! connections), rounds alternating (header, lookup, header, ...) so drift on a shared machine hits
//! both alike. The report gives each side's median and the ratio lookup/header; the goal is a
//! cached lookup within 10% of a header-only rule. It also prints how many queries reached the
//! database (one: the rest are cache hits).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use authz_server::lookup::{Database, OpenMode};
use authz_server::{Config, RuleEngine, Server};
use extauthz_proto::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use extauthz_proto::v3;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

const API_KEY: &str = "N2YwMDIxZTEtNGUzNS1jNzgzLTRkYjAtYjE2YzRkZGVmNjcy";

const HEADER_RULE: &str = r#"
[default]
deny = { status = 403 }

[[rules]]
name = "team"
[rules.when]
headers = [{ name = "x-team", exact = "platform" }]
[rules.allow]
request_headers = [{ name = "x-user-id", value = "{{rule.name}}" }, { name = "x-plan", value = "pro" }]
"#;

fn lookup_rule(url: &str) -> String {
    format!(
        r#"
[databases.keys]
url = "{url}"

[default]
deny = {{ status = 403 }}

[[rules]]
name = "api-key"
credential = {{ from = {{ header = "x-ai-api-key" }} }}
[rules.lookup]
database = "keys"
query = "SELECT subject, plan FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL"
params = [{{ credential = "sha256" }}]
cache_ttl_seconds = 3600
[rules.allow]
request_headers = [{{ name = "x-user-id", value = "{{{{db.subject}}}}" }}, {{ name = "x-plan", value = "{{{{db.plan}}}}" }}]
"#
    )
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A CheckRequest shaped like one Envoy sends for a small JSON POST, with the seed's API key.
fn envoy_like() -> v3::CheckRequest {
    let headers = [
        (":authority", "api.example.com"),
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        (":scheme", "http"),
        ("content-type", "application/json"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "*/*"),
        ("x-request-id", "7f1c2a9e-5d43-4a8b-9b1e-2f6c8d0a1b3c"),
        ("x-team", "platform"),
        ("x-ai-api-key", API_KEY),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
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

async fn start(config: &str) -> SocketAddr {
    let config = Config::parse("bench.toml", config).expect("bench config");
    let engine = RuleEngine::connect(config.rules, None).await;
    let server = Server::bind(engine, Some("127.0.0.1:0".parse().expect("address")), None)
        .await
        .expect("bind");
    let address = server.grpc_addr().expect("grpc address");
    tokio::spawn(server.serve(std::future::pending()));
    address
}

/// Checks per second over `seconds`, with `in_flight` calls outstanding; every answer must allow.
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
                let code = response.get_ref().status.as_ref().map_or(-1, |s| s.code);
                assert_eq!(code, 0, "the benchmark request must be allowed");
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

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let rounds = env("ROUNDS", 5);
    let seconds = env("SECONDS", 2);
    let in_flight = env("IN_FLIGHT", 32);

    let path = std::env::temp_dir().join(format!("authz-bench-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let url = format!("sqlite://{}", path.display());
    let database = Database::open(&url, 1, OpenMode::Create).expect("sqlite");
    let hash: String = Sha256::digest(API_KEY.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    for sql in [
        "CREATE TABLE api_keys (key_hash TEXT PRIMARY KEY, subject TEXT NOT NULL, plan TEXT, created_at TEXT NOT NULL, revoked_at TEXT)",
        "CREATE TABLE lookups (n INTEGER)",
    ] {
        database.execute(sql, &[]).await.expect(sql);
    }
    database
        .execute(
            "INSERT INTO api_keys (key_hash, subject, plan, created_at) VALUES ($1, 'alice', 'pro', '2026-01-01T00:00:00Z')",
            &[hash],
        )
        .await
        .expect("insert");
    database.close().await;

    let header = start(HEADER_RULE).await;
    let lookup = start(&lookup_rule(&url)).await;
    let request = envoy_like();

    println!(
        "lookup_throughput: {rounds} rounds x {seconds}s, {in_flight} in flight over 4 HTTP/2 connections, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let (mut header_rates, mut lookup_rates) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        header_rates.push(measure(header, &request, in_flight, seconds).await);
        lookup_rates.push(measure(lookup, &request, in_flight, seconds).await);
    }
    let (header_rate, lookup_rate) = (median(header_rates), median(lookup_rates));
    println!(
        "{:<44} {:>14} {:>14} {:>8}",
        "case", "header req/s", "lookup req/s", "ratio"
    );
    println!(
        "{:<44} {header_rate:>14.0} {lookup_rate:>14.0} {:>8.2}",
        "cached SQLite API-key lookup vs header rule",
        lookup_rate / header_rate
    );
    let _ = std::fs::remove_file(&path);
}
