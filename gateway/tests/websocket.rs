//! WebSocket upgrades through the gateway, by hand over TCP: a route with
//! `upgrades = ["websocket"]` tunnels bytes both ways after the check allowed the upgrade; a
//! denied upgrade gets the denial and no tunnel; a route without `upgrades` forwards the request
//! without its `Upgrade`; `Upgrade: h2c` never reaches a backend.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A backend that records every request head; it answers a WebSocket upgrade with `101` and
/// echoes every byte after it, and anything else with `200 plain`.
struct EchoBackend {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl EchoBackend {
    async fn start() -> EchoBackend {
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        let addr = accept_each(move |s| serve_echo(s, seen.clone())).await;
        EchoBackend { addr, heads }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("not poisoned").clone()
    }
}

async fn serve_echo(mut s: TcpStream, heads: Arc<Mutex<Vec<String>>>) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
    heads.lock().expect("not poisoned").push(head.clone());
    if !head.contains("\r\nupgrade: websocket\r\n") {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nplain")
            .await;
        return;
    }
    let switch = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    if s.write_all(switch).await.is_err() || s.write_all(&seen[end..]).await.is_err() {
        return;
    }
    let (mut r, mut w) = s.into_split();
    let _ = tokio::io::copy(&mut r, &mut w).await;
}

/// The gateway: route `/ws` tunnels WebSockets, `/plain` does not; the gateway-level policy
/// checks with `authz`; `limits` go on the listener.
async fn gateway(backend: &EchoBackend, authz: &MockAuthz, limits: &str) -> SocketAddr {
    start_gateway(&format!(
        r#"
[[listeners]]
name = "gw"
address = "127.0.0.1:0"
limits = {{ {limits} }}

[[backends]]
name = "echo"
url = "http://{backend}"

[[routes]]
name = "ws"
path = {{ prefix = "/ws" }}
backend = "echo"
upgrades = ["websocket"]

[[routes]]
name = "plain"
path = {{ prefix = "/plain" }}
backend = "echo"

[[authz_backends]]
name = "authz"
url = "http://{authz}"
{GATEWAY_POLICY}
"#,
        backend = backend.addr,
        authz = authz.addr,
    ))
    .await
}

/// Writes a hand-made upgrade request for `path` with `upgrade`/`connection` and returns the
/// socket and the response head (lower case).
async fn handshake(
    gw: SocketAddr,
    path: &str,
    upgrade: &str,
    connection: &str,
) -> (TcpStream, String) {
    let mut s = TcpStream::connect(gw).await.expect("connects");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: gw.test\r\nUpgrade: {upgrade}\r\nConnection: {connection}\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await.expect("writes");
    let head = limits::read_response_head(&mut s).await;
    (s, head)
}

/// Reads exactly `n` bytes within 2 s.
async fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut out))
        .await
        .expect("bytes within 2 s")
        .expect("the tunnel is open");
    out
}

#[tokio::test]
async fn an_allowed_upgrade_tunnels_bytes_both_ways_after_the_check() {
    let backend = EchoBackend::start().await;
    let authz = MockAuthz::always(allow_all()).await;
    let gw = gateway(&backend, &authz, "").await;
    let (mut s, head) = handshake(gw, "/ws/chat", "websocket", "Upgrade").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("\r\nupgrade: websocket"), "{head}");
    assert!(head.contains("\r\nconnection: upgrade"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    for message in [
        &b"first frame"[..],
        &[0x81, 0x02, 0x68, 0x69],
        &[0u8; 70_000],
    ] {
        s.write_all(message).await.expect("writes into the tunnel");
        assert_eq!(read_n(&mut s, message.len()).await, message);
    }
    // The check saw what the backend got: the upgrade headers, back on an allowed route.
    let checked = authz.last_http();
    assert_eq!(checked.method, "GET");
    assert_eq!(
        checked.headers.get("upgrade").map(String::as_str),
        Some("websocket")
    );
    assert_eq!(
        checked.headers.get("connection").map(String::as_str),
        Some("upgrade")
    );
    let heads = backend.heads();
    assert_eq!(heads.len(), 1);
    assert!(
        heads[0].contains("\r\nconnection: upgrade\r\n"),
        "{}",
        heads[0]
    );
    assert!(heads[0].contains("\r\nsec-websocket-key: "), "{}", heads[0]);
    // The client closing ends the tunnel: the backend's side closes too.
    s.shutdown().await.expect("half-closes");
    assert!(limits::closes_within(&mut s, Duration::from_secs(2)).await);
}

#[tokio::test]
async fn a_denied_upgrade_gets_the_denial_and_no_tunnel() {
    let backend = EchoBackend::start().await;
    let authz = MockAuthz::istio().await;
    let gw = gateway(&backend, &authz, "").await;
    let (mut s, head) = handshake(gw, "/ws/chat", "websocket", "Upgrade").await;
    assert!(head.starts_with("http/1.1 403"), "{head}");
    assert!(!head.contains("upgrade: websocket"), "{head}");
    assert!(backend.heads().is_empty(), "the backend was never reached");
    // The connection stays HTTP: bytes written now are not echoed by any backend.
    s.write_all(b"not a request\r\n\r\n").await.expect("writes");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("the gateway answers or closes")
        .unwrap_or(0);
    assert!(!buf[..n].starts_with(b"not a request"), "{:?}", &buf[..n]);
    assert_eq!(authz.count(), 1);
}

#[tokio::test]
async fn a_route_without_upgrades_forwards_a_plain_request() {
    let backend = EchoBackend::start().await;
    let authz = MockAuthz::always(allow_all()).await;
    let gw = gateway(&backend, &authz, "").await;
    let (_s, head) = handshake(gw, "/plain/chat", "websocket", "Upgrade").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let heads = backend.heads();
    assert_eq!(heads.len(), 1);
    assert!(!heads[0].contains("upgrade"), "{}", heads[0]);
    assert!(!authz.last_http().headers.contains_key("upgrade"));
}

#[tokio::test]
async fn an_h2c_upgrade_never_reaches_the_backend() {
    let backend = EchoBackend::start().await;
    let authz = MockAuthz::always(allow_all()).await;
    let gw = gateway(&backend, &authz, "").await;
    let (_s, head) = handshake(gw, "/ws/chat", "h2c", "Upgrade, HTTP2-Settings").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let heads = backend.heads();
    assert_eq!(heads.len(), 1);
    assert!(!heads[0].contains("h2c"), "{}", heads[0]);
    assert!(!heads[0].contains("upgrade"), "{}", heads[0]);
    assert!(!heads[0].contains("http2-settings"), "{}", heads[0]);
}

#[tokio::test]
async fn an_upgrade_without_connection_upgrade_is_a_plain_request() {
    let backend = EchoBackend::start().await;
    let authz = MockAuthz::always(allow_all()).await;
    let gw = gateway(&backend, &authz, "").await;
    let (_s, head) = handshake(gw, "/ws/chat", "websocket", "keep-alive").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!backend.heads()[0].contains("upgrade"));
}

#[tokio::test]
async fn a_quiet_tunnel_closes_at_the_listeners_idle_timeout() {
    let backend = EchoBackend::start().await;
    let authz = MockAuthz::always(allow_all()).await;
    let gw = gateway(&backend, &authz, r#"idle_timeout = "400ms""#).await;
    let (mut s, head) = handshake(gw, "/ws", "websocket", "upgrade").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    // Traffic keeps it open past the timeout...
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.write_all(b"tick").await.expect("writes");
        assert_eq!(read_n(&mut s, 4).await, b"tick");
    }
    // ...silence closes it.
    let began = std::time::Instant::now();
    assert!(limits::closes_within(&mut s, Duration::from_secs(3)).await);
    assert!(
        began.elapsed() >= Duration::from_millis(300),
        "{:?}",
        began.elapsed()
    );
}

#[tokio::test]
async fn an_unknown_upgrade_is_a_config_error_at_its_place() {
    let text = "[[listeners]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\n[[backends]]\nname = \"b\"\nurl = \"http://127.0.0.1:9\"\n[[routes]]\nname = \"r\"\nbackend = \"b\"\nupgrades = [\"websocket\", \"h2c\", \"spdy\"]\n";
    let error = gateway::Config::from_toml(text, "test.toml")
        .expect_err("h2c and spdy are refused")
        .to_string();
    assert!(error.contains("test.toml:10:26"), "{error}");
    assert!(
        error.contains("h2c upgrades are never tunnelled"),
        "{error}"
    );
    assert!(error.contains("test.toml:10:33"), "{error}");
    assert!(
        error.contains("unknown upgrade `spdy`: expected `websocket`"),
        "{error}"
    );
}
