//! A custom authorizer served over gRPC (v3 and v2) and Envoy's HTTP mode.
//!
//! Allows callers whose `x-api-key` is in a fixed set, tagging the upstream request with the
//! caller's team; denies everyone else with 401.
//!
//! ```sh
//! cargo run -p authz-server --example custom_authorizer
//! curl -i localhost:8000/ -H 'x-api-key: key-platform'
//! ```

use std::collections::HashMap;

use authz_server::{AuthorizeError, Authorizer, Server};
use rules::{Allow, Decision, Deny, Evaluation, Request, RequestHeader};

struct ApiKeys(HashMap<&'static str, &'static str>);

impl Authorizer for ApiKeys {
    async fn check(&self, request: &Request) -> Result<Evaluation, AuthorizeError> {
        let team = request.header("x-api-key").and_then(|key| self.0.get(key));
        let decision = match team {
            Some(team) => Decision::Allow(Allow {
                request_headers: vec![RequestHeader {
                    name: "x-team".into(),
                    value: (*team).into(),
                    append: false,
                }],
                headers_to_remove: vec!["x-api-key".into()],
                ..Allow::default()
            }),
            None => Decision::Deny(Deny {
                http_status: 401,
                grpc_code: 16, // UNAUTHENTICATED
                headers: vec![("www-authenticate".into(), "ApiKey".into())],
                body: "unknown API key".into(),
                dynamic_metadata: Default::default(),
            }),
        };
        Ok(decision.into())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keys = ApiKeys(HashMap::from([
        ("key-platform", "platform"),
        ("key-data", "data"),
    ]));
    let grpc = std::env::var("GRPC_ADDR").unwrap_or_else(|_| "127.0.0.1:9000".into());
    let http = std::env::var("HTTP_ADDR").unwrap_or_else(|_| "127.0.0.1:8000".into());
    let server = Server::bind(keys, Some(grpc.parse()?), Some(http.parse()?)).await?;
    for (kind, address) in [("grpc", server.grpc_addr()), ("http", server.http_addr())] {
        if let Some(address) = address {
            println!("listening {kind} {address}");
        }
    }
    server
        .serve_until(async { tokio::signal::ctrl_c().await.unwrap_or_default() })
        .await?;
    Ok(())
}
