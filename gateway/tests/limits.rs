//! Listener limits as a client meets them: slow headers, too many headers, idle connections and
//! streams, connection and request caps, stream and reset floods, and a check cancelled by a
//! reset. Every timer is configured short so the suite stays fast.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use extauthz_proto::v3::authorization_server::{Authorization, AuthorizationServer};
use extauthz_proto::v3::{CheckRequest, CheckResponse};
use http::{Request, StatusCode};
use http_body_util::Full;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The seed's listener and route with `limits` (TOML key/values) on the listener.
fn config_with_limits(backend: SocketAddr, limits: &str) -> String {
    format!(
        r#"
[[listeners]]
name = "gw"
address = "127.0.0.1:0"
limits = {{ {limits} }}

[[backends]]
name = "openai"
url = "http://{backend}"

[[routes]]
name = "openai"
path = {{ prefix = "/" }}
backend = "openai"
"#
    )
}

async fn gateway_with(limits: &str) -> SocketAddr {
    let backend = start_backend().await;
    start_gateway(&config_with_limits(backend, limits)).await
}

/// Reads until the peer closes; `true` when it closed (EOF or reset) within `within`.
async fn closes_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// A GET on a fresh connection answers 200 within 1 s.
async fn answers_promptly(gw: SocketAddr) {
    let reply = tokio::time::timeout(Duration::from_secs(1), send(get(gw, "/v1/models", &[])))
        .await
        .expect("answered within 1 s");
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn a_slow_header_client_is_closed_at_the_header_timeout_and_others_are_answered() {
    let gw = gateway_with(r#"request_headers_timeout = "1s""#).await;
    // One client trickles a header byte every 100 ms, another never sends a byte.
    let mut slow = TcpStream::connect(gw).await.unwrap();
    let mut silent = TcpStream::connect(gw).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for _ in 0..50 {
            if slow.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        slow
    });
    answers_promptly(gw).await;
    let mut slow = trickle.await.unwrap();
    assert!(
        closes_within(&mut slow, Duration::from_secs(1)).await,
        "slow header client still open"
    );
    assert!(
        closes_within(&mut silent, Duration::from_secs(2)).await,
        "silent client still open"
    );
    // Closed by the timer, not at once: both outlived half the timeout.
    assert!(started.elapsed() >= Duration::from_millis(500));
}

#[tokio::test]
async fn a_slow_h2_preface_is_closed_at_the_header_timeout() {
    let gw = gateway_with(r#"request_headers_timeout = "1s""#).await;
    let mut client = TcpStream::connect(gw).await.unwrap();
    client.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    assert!(closes_within(&mut client, Duration::from_secs(3)).await);
}

#[tokio::test]
async fn connections_over_max_connections_are_closed_at_once() {
    let gw = gateway_with("max_connections = 3").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(gw).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut excess = TcpStream::connect(gw).await.unwrap();
    let _ = excess.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(
        closes_within(&mut excess, Duration::from_secs(1)).await,
        "a fourth connection was served"
    );
    // A slot given back is taken by the next client.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _) = raw_exchange(gw, "GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(status, 200);
}

fn with_headers(gw: SocketAddr, count: usize) -> Request<Full<Bytes>> {
    let mut req = Request::get(format!("http://{gw}/v1/models"));
    for i in 0..count {
        req = req.header(format!("x-h{i}"), "v");
    }
    req.body(Full::new(Bytes::new())).unwrap()
}

#[tokio::test]
async fn too_many_headers_get_431_on_http1_and_h2() {
    let gw = gateway_with("max_request_headers = 10").await;
    // HTTP/1.1: the client adds `host`, so 9 of ours make 10 fields.
    assert_eq!(send(with_headers(gw, 9)).await.status, StatusCode::OK);
    assert_eq!(
        send(with_headers(gw, 10)).await.status,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    // h2: `:authority` is not a header field, so 10 pass and 11 do not.
    let h2 = h2_client();
    let ok = read(h2.request(with_headers(gw, 10)).await.unwrap()).await;
    assert_eq!(ok.status, StatusCode::OK);
    let refused = read(h2.request(with_headers(gw, 11)).await.unwrap()).await;
    assert_eq!(refused.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(refused.text(), "too many request headers\n");
}

#[tokio::test]
async fn the_nth_request_on_a_connection_gets_connection_close() {
    let gw = gateway_with("max_requests_per_connection = 2").await;
    let mut s = TcpStream::connect(gw).await.unwrap();
    let request = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
    s.write_all(request).await.unwrap();
    let first = read_response_head(&mut s).await;
    assert!(first.starts_with("http/1.1 200"), "{first}");
    assert!(!first.contains("connection: close"), "{first}");
    s.write_all(request).await.unwrap();
    let second = read_response_head(&mut s).await;
    assert!(second.starts_with("http/1.1 200"), "{second}");
    assert!(second.contains("connection: close"), "{second}");
    assert!(closes_within(&mut s, Duration::from_secs(2)).await);

    // h2: GOAWAY after the second response; the connection ends.
    let (mut sender, conn) = h2_handshake(gw).await;
    let conn = tokio::spawn(conn);
    for _ in 0..2 {
        let status = h2_get(&mut sender, "/v1/models").await.expect("answered");
        assert_eq!(status, StatusCode::OK);
    }
    tokio::time::timeout(Duration::from_secs(2), conn)
        .await
        .expect("connection ended after GOAWAY")
        .unwrap()
        .expect("a graceful GOAWAY, not an error");
}

/// Reads one response (head and a content-length body) from a keep-alive connection.
async fn read_response_head(s: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("response within 2 s")
            .unwrap();
        assert!(n > 0, "closed before a response");
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = text[..end].to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if seen.len() >= end + 4 + length {
                return head;
            }
        }
    }
}

async fn h2_handshake(
    gw: SocketAddr,
) -> (
    h2::client::SendRequest<Bytes>,
    h2::client::Connection<TcpStream, Bytes>,
) {
    let tcp = TcpStream::connect(gw).await.unwrap();
    h2::client::handshake(tcp).await.unwrap()
}

async fn h2_get(
    sender: &mut h2::client::SendRequest<Bytes>,
    path: &str,
) -> Result<StatusCode, h2::Error> {
    let mut ready = sender.clone().ready().await?;
    let req = Request::get(format!("http://x{path}")).body(()).unwrap();
    let (response, _) = ready.send_request(req, true)?;
    let response = response.await?;
    let status = response.status();
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    Ok(status)
}

#[tokio::test]
async fn an_idle_connection_is_closed_at_the_idle_timeout() {
    let gw = gateway_with(r#"idle_timeout = "1s""#).await;
    let mut s = TcpStream::connect(gw).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    read_response_head(&mut s).await;
    assert!(
        !closes_within(&mut s, Duration::from_millis(500)).await,
        "closed before the idle timeout"
    );
    assert!(closes_within(&mut s, Duration::from_secs(2)).await);

    // h2: GOAWAY once idle.
    let (mut sender, conn) = h2_handshake(gw).await;
    let conn = tokio::spawn(conn);
    assert_eq!(
        h2_get(&mut sender, "/v1/models").await.unwrap(),
        StatusCode::OK
    );
    tokio::time::timeout(Duration::from_secs(3), conn)
        .await
        .expect("idle h2 connection ended")
        .unwrap()
        .expect("a graceful GOAWAY");
}

#[tokio::test]
async fn a_stalled_request_body_gets_408_at_the_stream_idle_timeout() {
    let gw = gateway_with(r#"stream_idle_timeout = "1s""#).await;
    let mut s = TcpStream::connect(gw).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nonly ten b")
        .await
        .unwrap();
    let head = read_response_head(&mut s).await;
    assert!(head.starts_with("http/1.1 408"), "{head}");
}

/// A backend that sends response headers and 5 of 100 body bytes, then stalls.
async fn stalling_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello")
                    .await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_stalled_response_is_reset_at_the_stream_idle_timeout() {
    let backend = stalling_backend().await;
    let gw = start_gateway(&config_with_limits(
        backend,
        r#"stream_idle_timeout = "1s""#,
    ))
    .await;
    // HTTP/1.1: the connection is closed with the body cut short.
    let mut s = TcpStream::connect(gw).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(closes_within(&mut s, Duration::from_secs(3)).await);
    // h2: the stream is reset; the connection stays usable.
    let (sender, conn) = h2_handshake(gw).await;
    tokio::spawn(conn);
    let mut ready = sender.ready().await.unwrap();
    let (response, _) = ready
        .send_request(Request::get("http://x/").body(()).unwrap(), true)
        .unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut error = None;
    let outcome = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(chunk) = body.data().await {
            if let Err(e) = chunk {
                error = Some(e);
                break;
            }
        }
    })
    .await;
    assert!(outcome.is_ok(), "stalled stream not reset");
    let error = error.expect("the body ended in a reset, not cleanly");
    assert_eq!(error.reason(), Some(h2::Reason::INTERNAL_ERROR), "{error}");
}

#[tokio::test]
async fn streams_over_max_concurrent_streams_wait_for_a_slot() {
    // Checks take 500 ms and answer as Istio's server does.
    let authz = MockAuthz::start(|req| {
        let allowed = http_of(req).headers.get("x-ext-authz").map(String::as_str) == Some("allow");
        Reply::After(Duration::from_millis(500), istio_response(allowed))
    })
    .await;
    let policy = GATEWAY_POLICY.replace("grpc = {}", "grpc = {}, timeout = \"5s\"");
    let backend = start_backend().await;
    // `limits` goes inside the listener's table, right after its address.
    let toml = seed_config(backend, authz.addr, &policy).replacen(
        "address = \"127.0.0.1:0\"\n",
        "address = \"127.0.0.1:0\"\nlimits = { max_concurrent_streams = 2 }\n",
        1,
    );
    let gw = start_gateway(&toml).await;
    let (sender, mut conn) = h2_handshake(gw).await;
    // The server announces the limit in its SETTINGS, read while the first request runs.
    let mut first = sender.clone();
    tokio::select! {
        ended = &mut conn => panic!("connection ended: {ended:?}"),
        status = h2_get(&mut first, "/openai/x") => assert_eq!(status.unwrap(), StatusCode::FORBIDDEN),
    }
    assert_eq!(conn.max_concurrent_send_streams(), 2);
    tokio::spawn(conn);
    // Six requests at once: the client keeps four waiting; all are answered in turn.
    let mut requests = Vec::new();
    for _ in 0..6 {
        let mut sender = sender.clone();
        requests.push(tokio::spawn(async move {
            h2_get(&mut sender, "/openai/x").await
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Meanwhile another client is served as usual.
    let other = tokio::time::timeout(
        Duration::from_secs(2),
        read(
            h2_client()
                .request(
                    Request::get(format!("http://{gw}/openai/x"))
                        .header("x-ext-authz", "allow")
                        .body(Full::new(Bytes::new()))
                        .unwrap(),
                )
                .await
                .unwrap(),
        ),
    )
    .await
    .expect("another client answered within 2 s");
    assert_eq!(other.status, StatusCode::OK);
    for r in requests {
        assert_eq!(r.await.unwrap().expect("answered"), StatusCode::FORBIDDEN);
    }
    assert_eq!(authz.count(), 8);
}

#[tokio::test]
async fn a_reset_flood_gets_goaway_and_other_clients_are_unaffected() {
    let gw = gateway_with("").await;
    let (sender, conn) = h2_handshake(gw).await;
    let conn = tokio::spawn(conn);
    let flood = tokio::spawn(async move {
        let mut sender = sender;
        for i in 0..10_000 {
            sender = match sender.clone().ready().await {
                Ok(ready) => ready,
                Err(e) => return (i, Some(e)),
            };
            let req = Request::get("http://x/v1/models").body(()).unwrap();
            match sender.send_request(req, false) {
                Ok((_, mut stream)) => {
                    // Let the connection task write the HEADERS first: h2 drops a stream reset
                    // before it was ever sent.
                    tokio::task::yield_now().await;
                    stream.send_reset(h2::Reason::CANCEL);
                }
                Err(e) => return (i, Some(e)),
            }
        }
        (10_000, None)
    });
    answers_promptly(gw).await;
    // The server sends GOAWAY: the flood stops with a GOAWAY error long before its end...
    let (sent, error) = tokio::time::timeout(Duration::from_secs(5), flood)
        .await
        .expect("the flood was stopped")
        .unwrap();
    let error = error.expect("the flood was refused");
    assert!(error.is_go_away(), "{error}");
    assert!(sent < 1000, "{sent} streams before GOAWAY");
    // ...and the connection is closed.
    tokio::time::timeout(Duration::from_secs(2), conn)
        .await
        .expect("the flooding connection was closed")
        .unwrap()
        .ok();
    answers_promptly(gw).await;
}

/// An Authorization server that never answers and counts checks started and dropped.
#[derive(Clone, Default)]
struct CancelCounting {
    started: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

struct OnDrop(Arc<AtomicUsize>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tonic::async_trait]
impl Authorization for CancelCounting {
    async fn check(
        &self,
        _: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let _guard = OnDrop(self.dropped.clone());
        self.started.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }
}

async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_reset_stream_cancels_its_check() {
    let mock = CancelCounting::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authz = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(mock.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let backend = start_backend().await;
    let policy = GATEWAY_POLICY.replace("grpc = {}", "grpc = {}, timeout = \"30s\"");
    let gw = start_gateway(&seed_config(backend, authz, &policy)).await;
    let (sender, conn) = h2_handshake(gw).await;
    tokio::spawn(conn);
    let mut sender = sender.ready().await.unwrap();
    let req = Request::get("http://x/openai/x").body(()).unwrap();
    let (_response, mut stream) = sender.send_request(req, true).unwrap();
    wait_until("the check to start", || {
        mock.started.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(mock.dropped.load(Ordering::SeqCst), 0);
    stream.send_reset(h2::Reason::CANCEL);
    wait_until("the check to be cancelled", || {
        mock.dropped.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[test]
fn a_body_limit_over_the_authz_message_limit_is_refused() {
    let toml = r#"
[[listeners]]
name = "gw"
address = "127.0.0.1:0"

[[authz_backends]]
name = "authz"
url = "http://127.0.0.1:9000"

[[policies]]
name = "p"
target_refs = [{ kind = "Gateway", name = "gw" }]
ext_auth = { backend = "authz", grpc = {}, with_request_body = { max_request_bytes = 4194304 } }
"#;
    let error = gateway::Config::from_toml(toml, "gw.toml").unwrap_err();
    assert_eq!(
        error.to_string(),
        "gw.toml:13:86: with_request_body.max_request_bytes = 4194304 is too large: a gRPC check must fit in 4194304 bytes with up to 61440 bytes of request headers and 16384 of other attributes; at most 4116480 here"
    );
    let fits = toml.replace("4194304", "4116480");
    assert!(gateway::Config::from_toml(&fits, "gw.toml").is_ok());
}

#[tokio::test]
async fn the_admin_port_has_header_limits_and_timeouts() {
    let backend = start_backend().await;
    let toml = format!(
        "{}\n[admin]\naddress = \"127.0.0.1:0\"\nlimits = {{ request_headers_timeout = \"1s\", max_request_headers = 5 }}\n",
        config_with_limits(backend, "")
    );
    let gw = start_test_gateway(&toml).await;
    let admin = gw.admin.unwrap();
    assert_eq!(admin_get(admin, "/healthz").await.status, StatusCode::OK);
    let mut req = get(admin, "/healthz", &[]);
    for i in 0..5 {
        req.headers_mut().insert(
            http::HeaderName::try_from(format!("x-{i}")).unwrap(),
            "v".parse().unwrap(),
        );
    }
    assert_eq!(
        send(req).await.status,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    let mut slow = TcpStream::connect(admin).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    assert!(closes_within(&mut slow, Duration::from_secs(3)).await);
}

/// The resident memory of process `pid` in KiB, from `/proc/<pid>/status`.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("procfs");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

/// The gateway binary on a config file; killed on drop.
struct GatewayProcess(std::process::Child);

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn thousands_of_idle_connections_leave_the_gateway_answering_with_bounded_memory() {
    use std::io::BufRead;
    const IDLE: usize = 2000;
    let backend = start_backend().await;
    let dir = temp_dir("idle-connections");
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        config_with_limits(backend, r#"request_headers_timeout = "60s""#),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let process = GatewayProcess(child);
    let line = std::io::BufReader::new(stdout)
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let gw: SocketAddr = line
        .strip_prefix("listening http ")
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .parse()
        .unwrap();
    answers_promptly(gw).await;
    let before = rss_kib(process.0.id());
    // Half never send a byte, half stop in the middle of their headers.
    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        let mut s = TcpStream::connect(gw).await.unwrap();
        if i % 2 == 1 {
            s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: ")
                .await
                .unwrap();
        }
        idle.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..5 {
        answers_promptly(gw).await;
    }
    let during = rss_kib(process.0.id());
    eprintln!("gateway RSS: {before} KiB before, {during} KiB with {IDLE} idle connections");
    assert!(
        during < 200 * 1024,
        "RSS {during} KiB with {IDLE} idle connections"
    );
    // They are still open (the test did not pass because the gateway dropped them).
    let mut probe = idle.pop().unwrap();
    assert!(!closes_within(&mut probe, Duration::from_millis(100)).await);
}
