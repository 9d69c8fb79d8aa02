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

mod support;

use std::net::SocketAddr;

use authz_server::{Config, RuleEngine, Server};
use extauthz_proto::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use extauthz_proto::{RpcStatus, v3};
use support::{env, envoy_like, measure, median};

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
    tokio::spawn(server.serve_until(std::future::pending()));
    address
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
            0,
        ),
        (
            "istio default, deny (no header, dump rendered)",
            istio,
            envoy_like(&[]),
            7,
        ),
        (
            "one header rule, allow",
            header,
            envoy_like(&[("x-team", "platform")]),
            0,
        ),
    ];
    println!(
        "check_throughput: {rounds} rounds x {seconds}s, {in_flight} in flight over 4 HTTP/2 connections, {} cores",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
    );
    println!(
        "{:<50} {:>12} {:>12} {:>8}",
        "case", "bare req/s", "real req/s", "ratio"
    );
    for (name, address, request, code) in cases {
        let (mut bare_rates, mut real_rates) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            bare_rates.push(measure(bare, &request, 0, in_flight, seconds).await);
            real_rates.push(measure(address, &request, code, in_flight, seconds).await);
        }
        let (bare_rate, real_rate) = (median(bare_rates), median(real_rates));
        println!(
            "{name:<50} {bare_rate:>12.0} {real_rate:>12.0} {:>8.2}",
            real_rate / bare_rate
        );
    }
}
