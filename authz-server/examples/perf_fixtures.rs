//! Fixtures for the out-of-process Check comparison (`authz-server/benches/out_of_process.sh`):
//! the floor server, the request bodies h2load sends, and the 200-rule config.
//!
//! ```sh
//! perf_fixtures floor 127.0.0.1:19000            # a bare tonic Check answering a constant OK
//! perf_fixtures payload header /tmp/header.grpc   # one gRPC-framed v3 CheckRequest
//! perf_fixtures rules 200 /tmp/rules200.toml      # N rules, the deciding one last
//! ```
//!
//! The floor is what any Rust ext_authz server pays before deciding anything: tonic, HTTP/2,
//! protobuf decode of the same request, encode of a minimal answer. It honours
//! `TOKIO_WORKER_THREADS` like the real server.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use extauthz_proto::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use extauthz_proto::{RpcStatus, v3};
use prost::Message;

#[path = "../benches/support/fixtures.rs"]
mod fixtures;
use fixtures::{envoy_like, many_rules};

/// Answers every Check with a constant OK.
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

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["floor", address] => floor(address.parse().context("address")?),
        ["payload", case, file] => {
            let request = payload(case)?;
            let body = request.encode_to_vec();
            // gRPC message framing: not compressed, 4-byte big-endian length.
            let mut framed = vec![0u8];
            framed.extend_from_slice(&u32::try_from(body.len())?.to_be_bytes());
            framed.extend_from_slice(&body);
            std::fs::write(file, framed).context("writing the payload")?;
            Ok(())
        }
        ["rules", count, file] => {
            std::fs::write(file, many_rules(count.parse().context("count")?))
                .context("writing the config")?;
            Ok(())
        }
        _ => bail!("usage: perf_fixtures floor ADDR | payload CASE FILE | rules N FILE"),
    }
}

#[tokio::main]
async fn floor(address: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    println!("listening grpc {}", listener.local_addr()?);
    // Nagle off, as the real server does, so the comparison is of the handlers.
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |accepted| {
            let stream = accepted?;
            stream.set_nodelay(true)?;
            Ok::<_, std::io::Error>(stream)
        },
    );
    tonic::transport::Server::builder()
        .add_service(AuthorizationServer::new(Constant))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}

/// The request of each case: an Envoy-shaped check of a small JSON POST plus the case's header.
fn payload(case: &str) -> anyhow::Result<v3::CheckRequest> {
    let extra: &[(&str, &str)] = match case {
        "header" | "rules" => &[("x-team", "platform")],
        "istio-allow" => &[("x-ext-authz", "allow")],
        "istio-deny" => &[],
        other => bail!("unknown case {other}: header, rules, istio-allow, istio-deny"),
    };
    let peer = |address: &str, port: u32| v3::attribute_context::Peer {
        address: Some(v3::Address {
            address: Some(v3::address::Address::SocketAddress(v3::SocketAddress {
                address: address.to_owned(),
                port_specifier: Some(v3::socket_address::PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }),
        ..Default::default()
    };
    // As Envoy fills them in: the connection's two ends, the request id and scheme.
    let mut request = envoy_like(extra);
    if let Some(attributes) = request.attributes.as_mut() {
        attributes.source = Some(peer("192.168.7.9", 51234));
        attributes.destination = Some(peer("10.0.0.2", 8080));
        if let Some(http) = attributes.request.as_mut().and_then(|r| r.http.as_mut()) {
            http.id = "12345678901234567890".into();
            http.scheme = "http".into();
        }
    }
    Ok(request)
}
