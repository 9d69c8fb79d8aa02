//! Shared support for the end-to-end suites: servers on OS-chosen loopback ports and small
//! clients that show exactly what a proxy would see.

use std::net::SocketAddr;

use authz_server::{Config, RuleEngine, Server};
use bytes::Bytes;
use extauthz_proto::envoy::service::auth::{v2 as auth_v2, v3 as auth_v3};
use extauthz_proto::{v2, v3};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub mod load;
pub mod procs;
pub mod security;

/// An authz server running in this process until dropped.
pub struct RunningServer {
    /// The gRPC address.
    pub grpc: SocketAddr,
    /// The HTTP-mode address.
    pub http: SocketAddr,
    /// The admin address (`/metrics`, `/healthz`, `/readyz`).
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts the server with the built-in (Istio-compatible) default on loopback ports.
pub async fn start_default() -> RunningServer {
    start(Config::builtin().expect("the built-in config loads")).await
}

/// Starts the server with config text.
pub async fn start_with(config: &str) -> RunningServer {
    start(Config::parse("test.toml", config).expect("test config loads")).await
}

async fn start(config: Config) -> RunningServer {
    start_engine(RuleEngine::new(config.rules)).await
}

/// Starts the server around an engine the test keeps a handle on (e.g. to reload it).
pub async fn start_engine(engine: RuleEngine) -> RunningServer {
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("loopback address");
    let server = Server::bind(engine, Some(loopback), Some(loopback))
        .await
        .expect("binds loopback ports")
        .with_admin(loopback)
        .await
        .expect("binds the admin port");
    let grpc = server.grpc_addr().expect("grpc bound");
    let http = server.http_addr().expect("http bound");
    let admin = server.admin_addr().expect("admin bound");
    let (stop, stopped) = oneshot::channel();
    tokio::spawn(server.serve_until(async {
        let _ = stopped.await;
    }));
    RunningServer {
        grpc,
        http,
        admin,
        stop: Some(stop),
    }
}

async fn channel(address: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{address}"))
        .expect("valid uri")
        .connect()
        .await
        .expect("connects to the server")
}

/// A v3 Authorization client.
pub async fn v3_client(
    address: SocketAddr,
) -> auth_v3::authorization_client::AuthorizationClient<Channel> {
    auth_v3::authorization_client::AuthorizationClient::new(channel(address).await)
}

/// A v2 Authorization client.
pub async fn v2_client(
    address: SocketAddr,
) -> auth_v2::authorization_client::AuthorizationClient<Channel> {
    auth_v2::authorization_client::AuthorizationClient::new(channel(address).await)
}

/// A v3 CheckRequest with these headers and principal, as Envoy would fill it.
pub fn v3_check(headers: &[(&str, &str)], principal: &str) -> v3::CheckRequest {
    v3::CheckRequest {
        attributes: Some(v3::AttributeContext {
            source: Some(v3::attribute_context::Peer {
                principal: principal.to_owned(),
                ..Default::default()
            }),
            request: Some(v3::attribute_context::Request {
                time: None,
                http: Some(v3::attribute_context::HttpRequest {
                    method: "GET".into(),
                    path: "/openai".into(),
                    host: "localhost:8080".into(),
                    protocol: "HTTP/1.1".into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
}

/// The v2 twin of [`v3_check`].
pub fn v2_check(headers: &[(&str, &str)], principal: &str) -> v2::CheckRequest {
    v2::CheckRequest {
        attributes: Some(v2::AttributeContext {
            source: Some(v2::attribute_context::Peer {
                principal: principal.to_owned(),
                ..Default::default()
            }),
            request: Some(v2::attribute_context::Request {
                time: None,
                http: Some(v2::attribute_context::HttpRequest {
                    method: "GET".into(),
                    path: "/openai".into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
}

/// Header (key, value) pairs of a v3 header list, in order.
pub fn v3_headers(headers: &[v3::HeaderValueOption]) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect()
}

/// What an HTTP client saw.
#[derive(Debug)]
pub struct HttpReply {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: http::HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl HttpReply {
    /// A header's value as text; panics when absent, naming it.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
            .to_str()
            .expect("visible ASCII header")
    }
}

/// Sends one HTTP/1.1 request.
pub async fn http_request(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpReply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://{address}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("valid request");
    let response = client.request(request).await.expect("HTTP response");
    let (parts, body) = response.into_parts();
    HttpReply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await.expect("body").to_bytes(),
    }
}

/// Starts the demo backend in this process on a loopback port; streamed events are 100 ms apart.
pub async fn start_demo_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds a loopback port");
    let address = listener.local_addr().expect("bound");
    tokio::spawn(gateway::demo_backend::serve(
        listener,
        gateway::demo_backend::DemoOptions {
            sse_delay: std::time::Duration::from_millis(100),
        },
    ));
    address
}

/// The Istio test server's deny body, 76 bytes.
pub const DENY_BODY: &str =
    "denied by ext_authz for not found header `x-ext-authz: allow` in the request";
