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

mod support;

use std::net::SocketAddr;

use authz_server::lookup::{Database, OpenMode};
use authz_server::{Config, RuleEngine, Server};
use sha2::{Digest, Sha256};
use support::{env, envoy_like, measure, median};

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

async fn start(config: &str) -> SocketAddr {
    let config = Config::parse("bench.toml", config).expect("bench config");
    let engine = RuleEngine::connect(config.rules, None).await;
    let server = Server::bind(engine, Some("127.0.0.1:0".parse().expect("address")), None)
        .await
        .expect("bind");
    let address = server.grpc_addr().expect("grpc address");
    tokio::spawn(server.serve_until(std::future::pending()));
    address
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
    let request = envoy_like(&[("x-team", "platform"), ("x-ai-api-key", API_KEY)]);

    println!(
        "lookup_throughput: {rounds} rounds x {seconds}s, {in_flight} in flight over 4 HTTP/2 connections, {} cores",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
    );
    let (mut header_rates, mut lookup_rates) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        header_rates.push(measure(header, &request, 0, in_flight, seconds).await);
        lookup_rates.push(measure(lookup, &request, 0, in_flight, seconds).await);
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
