//! Test support shared by every gateway suite: a mock ext_authz server (gRPC and HTTP), the demo
//! backend, a gateway started from TOML, and HTTP/1.1 and HTTP/2 clients. All on loopback ports
//! chosen by the OS.

#![allow(dead_code)]

pub(crate) mod certs;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use extauthz_proto::RpcStatus;
use extauthz_proto::v3::{
    CheckRequest, CheckResponse, DeniedHttpResponse, HeaderValue as PbHeaderValue,
    HeaderValueOption, HttpStatus, OkHttpResponse,
    attribute_context::HttpRequest,
    authorization_server::{Authorization, AuthorizationServer},
    check_response::HttpResponse,
};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;

/// The Istio ext-authz deny body, 76 bytes.
pub(crate) const DENY_BODY: &str =
    "denied by ext_authz for not found header `x-ext-authz: allow` in the request";

/// The seed's request body.
pub(crate) const SEED_BODY: &str = r#"{ "model": "gpt-3.5-turbo", "messages": [ { "role": "system", "content": "You are a poetic assistant, skilled in explaining complex programming concepts with creative flair." }, { "role": "user", "content": "Write 5 sentences." } ] }"#;

/// What the mock answers to one check.
pub(crate) enum Reply {
    /// A successful RPC with this response.
    Respond(CheckResponse),
    /// A gRPC error status.
    Fail(tonic::Status),
    /// Never answer.
    Hang,
    /// Answer after a pause.
    After(Duration, CheckResponse),
}

type Handler = Arc<dyn Fn(&CheckRequest) -> Reply + Send + Sync>;

/// An in-process `envoy.service.auth.v3.Authorization` server that records every request.
#[derive(Clone)]
pub(crate) struct MockAuthz {
    /// Where it listens.
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<CheckRequest>>>,
    connections: Arc<AtomicUsize>,
}

struct Service {
    handler: Handler,
    requests: Arc<Mutex<Vec<CheckRequest>>>,
}

#[tonic::async_trait]
impl Authorization for Service {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let request = request.into_inner();
        self.requests.lock().unwrap().push(request.clone());
        match (self.handler)(&request) {
            Reply::Respond(r) => Ok(tonic::Response::new(r)),
            Reply::Fail(s) => Err(s),
            Reply::Hang => std::future::pending().await,
            Reply::After(d, r) => {
                tokio::time::sleep(d).await;
                Ok(tonic::Response::new(r))
            }
        }
    }
}

impl MockAuthz {
    /// Starts a mock answering with `handler`.
    pub(crate) async fn start(
        handler: impl Fn(&CheckRequest) -> Reply + Send + Sync + 'static,
    ) -> MockAuthz {
        MockAuthz::start_with(handler, None).await
    }

    /// Starts a mock answering with `handler` over TLS (mutual when `tls` names a client CA).
    pub(crate) async fn start_with(
        handler: impl Fn(&CheckRequest) -> Reply + Send + Sync + 'static,
        tls: Option<tonic::transport::ServerTlsConfig>,
    ) -> MockAuthz {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let service = Service {
            handler: Arc::new(handler),
            requests: requests.clone(),
        };
        let counter = connections.clone();
        let incoming = TcpListenerStream::new(listener).map(move |conn| {
            counter.fetch_add(1, Ordering::SeqCst);
            conn
        });
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).unwrap();
        }
        tokio::spawn(
            builder
                .add_service(AuthorizationServer::new(service))
                .serve_with_incoming(incoming),
        );
        MockAuthz {
            addr,
            requests,
            connections,
        }
    }

    /// Starts a mock that behaves like Istio's ext-authz test service (the seed's image).
    pub(crate) async fn istio() -> MockAuthz {
        MockAuthz::start(|req| {
            let allowed =
                http_of(req).headers.get("x-ext-authz").map(String::as_str) == Some("allow");
            Reply::Respond(istio_response(allowed))
        })
        .await
    }

    /// Starts a mock that answers every check with `response`.
    pub(crate) async fn always(response: CheckResponse) -> MockAuthz {
        MockAuthz::start(move |_| Reply::Respond(response.clone())).await
    }

    /// Every check received so far.
    pub(crate) fn requests(&self) -> Vec<CheckRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// How many TCP connections the gateway opened to this server.
    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// How many checks were received.
    pub(crate) fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// The HTTP attributes of the last check.
    pub(crate) fn last_http(&self) -> HttpRequest {
        http_of(
            self.requests
                .lock()
                .unwrap()
                .last()
                .expect("no check received"),
        )
        .clone()
    }
}

/// `attributes.request.http` of a check.
pub(crate) fn http_of(req: &CheckRequest) -> &HttpRequest {
    req.attributes
        .as_ref()
        .unwrap()
        .request
        .as_ref()
        .unwrap()
        .http
        .as_ref()
        .unwrap()
}

/// Istio's ext-authz answer.
pub(crate) fn istio_response(allowed: bool) -> CheckResponse {
    let result = if allowed { "allowed" } else { "denied" };
    let headers = vec![
        header("x-ext-authz-check-result", result, Some(false)),
        header(
            "x-ext-authz-additional-header-override",
            "grpc-additional-header-override-value",
            Some(false),
        ),
    ];
    if allowed {
        ok(OkHttpResponse {
            headers,
            ..OkHttpResponse::default()
        })
    } else {
        deny(7, 403, headers, DENY_BODY)
    }
}

/// A header option.
pub(crate) fn header(key: &str, value: &str, append: Option<bool>) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(PbHeaderValue {
            key: key.into(),
            value: value.into(),
            raw_value: Vec::new(),
        }),
        append,
        ..HeaderValueOption::default()
    }
}

/// A header option with an append action.
pub(crate) fn header_action(key: &str, value: &str, action: i32) -> HeaderValueOption {
    HeaderValueOption {
        append_action: action,
        ..header(key, value, None)
    }
}

/// An OK response.
pub(crate) fn ok(ok: OkHttpResponse) -> CheckResponse {
    CheckResponse {
        status: Some(RpcStatus::default()),
        http_response: Some(HttpResponse::OkResponse(ok)),
        ..CheckResponse::default()
    }
}

/// A denied response with a `denied_response`.
pub(crate) fn deny(
    code: i32,
    http_status: i32,
    headers: Vec<HeaderValueOption>,
    body: &str,
) -> CheckResponse {
    CheckResponse {
        status: Some(RpcStatus {
            code,
            ..RpcStatus::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus { code: http_status }),
            headers,
            body: body.into(),
        })),
        ..CheckResponse::default()
    }
}

/// Starts the demo backend; streamed events are 100 ms apart.
pub(crate) async fn start_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
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
    let gw = gateway::Gateway::bind(config).await.unwrap();
    let addr = gw.local_addrs()[0].1;
    tokio::spawn(gw.run());
    addr
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
    read(client().request(req).await.unwrap()).await
}

/// Reads a response to the end.
pub(crate) async fn read(resp: Response<Incoming>) -> Reply200 {
    let (parts, body) = resp.into_parts();
    Reply200 {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
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
        .unwrap()
}

/// A GET to `path` with extra headers.
pub(crate) fn get(gw: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut req = Request::get(format!("http://{gw}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Full::new(Bytes::new())).unwrap()
}

/// Writes `request` on a fresh TCP connection and returns the status code and the raw response.
pub(crate) async fn raw_exchange(gw: SocketAddr, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(gw).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// A request received by [`MockHttpAuthz`].
#[derive(Debug, Clone)]
pub(crate) struct SeenRequest {
    /// The request head.
    pub method: http::Method,
    /// The path and query.
    pub uri: String,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

type HttpHandler = Arc<dyn Fn(&SeenRequest) -> Response<Full<Bytes>> + Send + Sync>;

/// An in-process ext_authz server speaking Envoy's HTTP protocol, recording every request.
#[derive(Clone)]
pub(crate) struct MockHttpAuthz {
    /// Where it listens.
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<SeenRequest>>>,
}

impl MockHttpAuthz {
    /// Starts a server answering with `handler`.
    pub(crate) async fn start(
        handler: impl Fn(&SeenRequest) -> Response<Full<Bytes>> + Send + Sync + 'static,
    ) -> MockHttpAuthz {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<SeenRequest>>> = Arc::default();
        let handler: HttpHandler = Arc::new(handler);
        let recorded = requests.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let handler = handler.clone();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let handler = handler.clone();
                        let recorded = recorded.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let seen = SeenRequest {
                                method: parts.method,
                                uri: parts.uri.to_string(),
                                headers: parts.headers,
                                body: body.collect().await.unwrap().to_bytes(),
                            };
                            recorded.lock().unwrap().push(seen.clone());
                            Ok::<_, std::convert::Infallible>(handler(&seen))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        MockHttpAuthz { addr, requests }
    }

    /// Every request received so far.
    pub(crate) fn requests(&self) -> Vec<SeenRequest> {
        self.requests.lock().unwrap().clone()
    }
}

/// A backend that reads one request head, writes `response` verbatim and closes.
pub(crate) async fn raw_backend(response: &'static [u8]) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(response).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// A TCP relay in front of `target` that counts the connections made through it.
pub(crate) async fn counting_relay(target: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        loop {
            let (mut inbound, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut outbound = tokio::net::TcpStream::connect(target).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    (addr, count)
}

/// A TCP relay in front of `target` whose connections can all be cut at once (`sever`), and
/// which counts the connections made through it.
pub(crate) struct SeverableRelay {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Connections made through it so far.
    pub count: Arc<AtomicUsize>,
    open: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl SeverableRelay {
    /// Starts relaying to `target`.
    pub(crate) async fn start(target: SocketAddr) -> SeverableRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (counter, tasks) = (count.clone(), open.clone());
        tokio::spawn(async move {
            loop {
                let (mut inbound, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                let task = tokio::spawn(async move {
                    let mut outbound = tokio::net::TcpStream::connect(target).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                tasks.lock().unwrap().push(task.abort_handle());
            }
        });
        SeverableRelay { addr, count, open }
    }

    /// Closes every connection made so far (both sides see the socket close).
    pub(crate) fn sever(&self) {
        for task in self.open.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// A fresh, empty directory under the system temp dir, unique to this test process and `name`.
pub(crate) fn temp_dir(name: &str) -> std::path::PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "gateway-test-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Replaces `path`'s content atomically (write a sibling, rename), as a careful deploy tool does.
pub(crate) fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
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
    let gw = gateway::Gateway::bind(config).await.unwrap();
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
