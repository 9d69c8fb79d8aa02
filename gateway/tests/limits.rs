//! Listener limits on connections, as a client meets them: slow headers, too many headers, idle
//! connections, connection and request caps, the admin port's limits, thousands of idle
//! connections. Streams are in `limits_streams.rs`. Every timer is configured short so the suite
//! stays fast.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::limits::*;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

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
    req.body(Full::new(Bytes::new())).expect("a valid request")
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
    let dir = testkit::scratch_dir("idle-connections");
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
    let before = testkit::rss_kib(process.0.id()).expect("VmRSS of the running server");
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
    let during = testkit::rss_kib(process.0.id()).expect("VmRSS of the running server");
    eprintln!("gateway RSS: {before} KiB before, {during} KiB with {IDLE} idle connections");
    assert!(
        during < 200 * 1024,
        "RSS {during} KiB with {IDLE} idle connections"
    );
    // They are still open (the test did not pass because the gateway dropped them).
    let mut probe = idle.pop().unwrap();
    assert!(!closes_within(&mut probe, Duration::from_millis(100)).await);
}
