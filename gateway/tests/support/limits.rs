//! Listener-limit helpers for the limits suites: a gateway with `limits` on its listener, raw
//! TCP and HTTP/2 clients that watch for the gateway closing or answering.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::{get, send, start_backend, start_gateway};

/// The seed's listener and route with `limits` (TOML key/values) on the listener.
pub(crate) fn config_with_limits(backend: SocketAddr, limits: &str) -> String {
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

/// The demo backend behind a gateway whose listener has `limits`.
pub(crate) async fn gateway_with(limits: &str) -> SocketAddr {
    let backend = start_backend().await;
    start_gateway(&config_with_limits(backend, limits)).await
}

/// Reads until the peer closes; `true` when it closed (EOF or reset) within `within`.
pub(crate) async fn closes_within(stream: &mut TcpStream, within: Duration) -> bool {
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
pub(crate) async fn answers_promptly(gw: SocketAddr) {
    let reply = tokio::time::timeout(Duration::from_secs(1), send(get(gw, "/v1/models", &[])))
        .await
        .expect("answered within 1 s");
    assert_eq!(reply.status, StatusCode::OK);
}

/// Reads one response (head and a content-length body) from a keep-alive connection.
pub(crate) async fn read_response_head(s: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("response within 2 s")
            .expect("answers in time");
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

/// An HTTP/2 (prior knowledge) connection to `gw`: the sender and the connection to drive.
pub(crate) async fn h2_handshake(
    gw: SocketAddr,
) -> (
    h2::client::SendRequest<Bytes>,
    h2::client::Connection<TcpStream, Bytes>,
) {
    let tcp = TcpStream::connect(gw).await.expect("connects");
    h2::client::handshake(tcp)
        .await
        .expect("completes the HTTP/2 handshake")
}

/// A GET on one stream of `sender`, its body read to the end; the status.
pub(crate) async fn h2_get(
    sender: &mut h2::client::SendRequest<Bytes>,
    path: &str,
) -> Result<StatusCode, h2::Error> {
    let mut ready = sender.clone().ready().await?;
    let req = Request::get(format!("http://x{path}"))
        .body(())
        .expect("a valid request");
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
