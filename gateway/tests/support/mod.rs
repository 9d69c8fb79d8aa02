//! Test support shared by every gateway suite: a mock ext_authz server (gRPC in `mock_grpc`, HTTP
//! in `mock_http`), raw TCP backends and relays (`relays`), the demo backend, a gateway started
//! from TOML, and HTTP/1.1 and HTTP/2 clients. All on loopback ports chosen by the OS.

// Each suite compiles this module and uses a different part of it.
#![allow(dead_code, unused_imports)]

pub(crate) mod certs;
pub(crate) mod echo_backend;
pub(crate) mod limits;
mod mock_grpc;
mod mock_http;
pub(crate) mod raw;
mod relays;

pub(crate) use mock_grpc::*;
pub(crate) use mock_http::*;
pub(crate) use relays::*;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use extauthz_proto::v3::OkHttpResponse;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;

/// The seed's request body.
pub(crate) const SEED_BODY: &str = r#"{ "model": "gpt-3.5-turbo", "messages": [ { "role": "system", "content": "You are a poetic assistant, skilled in explaining complex programming concepts with creative flair." }, { "role": "user", "content": "Write 5 sentences." } ] }"#;

/// Starts the demo backend; streamed events are 100 ms apart.
pub(crate) async fn start_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds a loopback port");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    tokio::spawn(gateway::demo_backend::serve(
        listener,
        gateway::demo_backend::DemoOptions {
            sse_delay: Duration::from_millis(100),
        },
    ));
    addr
}

/// Starts a gateway from TOML text; returns its first listener's address.
pub(crate) async fn start_gateway(toml: &str) -> SocketAddr {
    let config = gateway::Config::from_toml(toml, "test.toml")
        .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n---\n{toml}"));
    let gw = gateway::Gateway::bind(config)
        .await
        .expect("the gateway binds its listeners");
    let addr = gw.local_addrs()[0].1;
    tokio::spawn(gw.run());
    addr
}

/// A gateway with one listener `gw` (`listener_keys` added to it) and one route taking every
/// request to `backend`, each request checked by `authz` at gateway level.
pub(crate) async fn checked_gateway(
    backend: SocketAddr,
    authz: SocketAddr,
    listener_keys: &str,
) -> SocketAddr {
    start_gateway(&format!(
        r#"
[[listeners]]
name = "gw"
address = "127.0.0.1:0"
{listener_keys}

[[backends]]
name = "b"
url = "http://{backend}"

[[routes]]
name = "all"
backend = "b"

[[authz_backends]]
name = "authz"
url = "http://{authz}"
{GATEWAY_POLICY}
"#
    ))
    .await
}

/// The seed's setup: one listener `gw`, route `openai` (`/openai` prefix) to the demo backend,
/// authz backend `authz` at `authz`; `extra` is appended (policies, more routes).
pub(crate) fn seed_config(backend: SocketAddr, authz: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[[listeners]]
name = "gw"
address = "127.0.0.1:0"

[[backends]]
name = "openai"
url = "http://{backend}"

[[routes]]
name = "openai"
path = {{ prefix = "/openai" }}
backend = "openai"

[[authz_backends]]
name = "authz"
url = "http://{authz}"
{extra}
"#
    )
}

/// The seed setup with one gateway-level policy whose `[policies.ext_auth]` table has `settings`
/// added to `backend = "authz"`.
pub(crate) fn with_policy(backend: SocketAddr, authz: SocketAddr, settings: &str) -> String {
    seed_config(
        backend,
        authz,
        &format!(
            r#"
[[policies]]
name = "p"
target_refs = [{{ kind = "Gateway", name = "gw" }}]
[policies.ext_auth]
backend = "authz"
{settings}
"#
        ),
    )
}

/// The demo backend and a gateway in front of it whose gateway-level policy checks with `authz`.
pub(crate) async fn setup(authz: &MockAuthz, settings: &str) -> SocketAddr {
    let backend = start_backend().await;
    start_gateway(&with_policy(backend, authz.addr, settings)).await
}

/// An OK answer that changes nothing.
pub(crate) fn allow_all() -> extauthz_proto::v3::CheckResponse {
    ok(OkHttpResponse::default())
}

/// The gateway-level policy of the seed, to `authz`.
pub(crate) const GATEWAY_POLICY: &str = r#"
[[policies]]
name = "gateway-ext-auth-policy"
target_refs = [{ kind = "Gateway", name = "gw" }]
ext_auth = { backend = "authz", grpc = {} }
"#;

/// A response read to the end.
pub(crate) struct Reply200 {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Reply200 {
    /// The body as text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// A header the demo backend received (joined with ", " when repeated).
    pub(crate) fn backend_saw(&self, name: &str) -> Option<String> {
        self.json()["request"]["headers"][name]
            .as_str()
            .map(str::to_owned)
    }
}

/// A new HTTP/1.1 client.
pub(crate) fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// A new h2c (prior knowledge) client.
pub(crate) fn h2_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}

/// Sends `req` over HTTP/1.1 and reads the whole response.
pub(crate) async fn send(req: Request<Full<Bytes>>) -> Reply200 {
    read(client().request(req).await.expect("the gateway answers")).await
}

/// Reads a response to the end.
pub(crate) async fn read(resp: Response<Incoming>) -> Reply200 {
    let (parts, body) = resp.into_parts();
    Reply200 {
        status: parts.status,
        headers: parts.headers,
        body: body
            .collect()
            .await
            .expect("reads the whole body")
            .to_bytes(),
    }
}

/// The seed's POST to `path` with extra headers.
pub(crate) fn seed_post(
    gw: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Request<Full<Bytes>> {
    let mut req =
        Request::post(format!("http://{gw}{path}")).header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Full::new(Bytes::from_static(SEED_BODY.as_bytes())))
        .expect("a valid request")
}

/// A GET to `path` with extra headers.
pub(crate) fn get(gw: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut req = Request::get(format!("http://{gw}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Full::new(Bytes::new())).expect("a valid request")
}

/// Writes `request` on a fresh TCP connection and returns the status code and the raw response.
pub(crate) async fn raw_exchange(gw: SocketAddr, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(gw).await.expect("connects");
    s.write_all(request.as_bytes())
        .await
        .expect("writes to the socket");
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("answers in time")
        .expect("answers in time");
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// A gateway started in-process, with its shared state and admin address.
pub(crate) struct TestGateway {
    /// The first listener.
    pub addr: SocketAddr,
    /// The admin endpoint, when configured.
    pub admin: Option<SocketAddr>,
    /// Config snapshot and metrics.
    pub shared: Arc<gateway::Shared>,
}

/// Starts a gateway from `toml` (named `file` in errors) and keeps its shared state.
pub(crate) async fn start_test_gateway(toml: &str) -> TestGateway {
    let config = gateway::Config::from_toml(toml, "test.toml")
        .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n---\n{toml}"));
    let gw = gateway::Gateway::bind(config)
        .await
        .expect("the gateway binds its listeners");
    let started = TestGateway {
        addr: gw.local_addrs()[0].1,
        admin: gw.admin_addr(),
        shared: gw.shared(),
    };
    tokio::spawn(gw.run());
    started
}

/// The value of one sample in a Prometheus text exposition, by its exact series
/// (`name{label="v",...}`), or `None` when absent.
pub(crate) fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split(' ').next()?.parse().ok()
    })
}

/// GETs `path` on an admin endpoint.
pub(crate) async fn admin_get(admin: SocketAddr, path: &str) -> Reply200 {
    send(get(admin, path, &[])).await
}
