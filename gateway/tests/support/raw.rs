//! A raw HTTP/1.1 client: writes the request head byte for byte (HTTP clients tidy some
//! spellings themselves) and reads the response to the end.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a raw client read: status and body.
pub(crate) struct Raw {
    /// The status code on the status line.
    pub status: u16,
    /// The body, de-chunked.
    pub body: String,
}

impl Raw {
    /// The body as JSON (the demo backend's echo).
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends `head` (request line and headers, without the final blank line) with
/// `Connection: close` added, and reads the response to the end.
pub(crate) async fn raw(gw: SocketAddr, head: &str) -> Raw {
    let mut s = tokio::net::TcpStream::connect(gw).await.expect("connects");
    let request = if head.to_ascii_lowercase().contains("\r\nconnection:") {
        format!("{head}\r\n\r\n")
    } else {
        format!("{head}\r\nConnection: close\r\n\r\n")
    };
    s.write_all(request.as_bytes())
        .await
        .expect("writes to the socket");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("the gateway answers and closes within 5 s")
        .expect("answers in time");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {text:?}"));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .expect("a status line")
        .split(' ')
        .nth(1)
        .expect("a status code on the status line")
        .parse()
        .expect("a numeric status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Raw { status, body }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}
