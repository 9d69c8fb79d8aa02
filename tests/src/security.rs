//! Support for the security suite: a backend that normalises requests the way common servers
//! do, a raw HTTP/1.1 client for spellings a client library would tidy, and the real gateway
//! started in this process from TOML.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the backend received, before its own normalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The request target as received (`path?query`).
    pub target: String,
    /// The `Host` header as received.
    pub host: String,
    /// The names of every header received, lower case, sorted.
    pub header_names: Vec<String>,
    /// The `x-forwarded-for` header as received, if any.
    pub forwarded_for: Option<String>,
}

/// A backend that normalises like common servers do, and records what it received.
#[derive(Clone)]
pub struct NormalisingBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl NormalisingBackend {
    /// Starts it on a loopback port. It answers 200 to everything, with the resource it would
    /// serve in the body (`served <host> <path>`), after decoding every escape (`%2F` and
    /// `%5C` included), treating `\` as `/`, merging slashes, resolving dot segments and
    /// lower-casing the host without port or trailing dot.
    pub async fn start() -> NormalisingBackend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds a loopback port");
        let addr = listener.local_addr().expect("bound");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let recorded = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: http::Request<Incoming>| {
                            let recorded = recorded.clone();
                            async move { Ok::<_, Infallible>(answer(&req, &recorded)) }
                        });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        NormalisingBackend { addr, seen }
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("not poisoned").clone()
    }
}

fn answer(
    req: &http::Request<Incoming>,
    recorded: &Mutex<Vec<Seen>>,
) -> http::Response<Full<Bytes>> {
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |pq| pq.as_str().to_owned());
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut header_names: Vec<String> = req
        .headers()
        .keys()
        .map(std::string::ToString::to_string)
        .collect();
    header_names.sort();
    header_names.dedup();
    let forwarded_for = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let body = format!(
        "served {} {}",
        normalise_host(&host),
        normalise_path(req.uri().path())
    );
    recorded.lock().expect("not poisoned").push(Seen {
        target,
        host,
        header_names,
        forwarded_for,
    });
    http::Response::new(Full::new(Bytes::from(body)))
}

/// What a permissive server makes of a path: every escape decoded, `\` as `/`, slashes merged,
/// dot segments resolved.
pub fn normalise_path(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                decoded.push(b);
                i += 3;
            }
            (b, _) => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    let text = String::from_utf8_lossy(&decoded).replace('\\', "/");
    let mut kept: Vec<&str> = Vec::new();
    for segment in text.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            s => kept.push(s),
        }
    }
    let mut out = format!("/{}", kept.join("/"));
    if (text.ends_with('/') || text.ends_with("/.") || text.ends_with("/..")) && out != "/" {
        out.push('/');
    }
    out
}

/// What a permissive server makes of a host: lower case, no port, no trailing dot.
pub fn normalise_host(raw: &str) -> String {
    let name = match raw.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => raw,
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// A response read by [`raw_request`].
#[derive(Debug)]
pub struct RawReply {
    /// The status code.
    pub status: u16,
    /// The body (de-chunked).
    pub body: String,
}

/// Writes `head` (request line and header lines, no final blank line) on a new connection,
/// adding `Connection: close` unless `head` has a `Connection` line, and reads the response to
/// the end (at most 5 s).
pub async fn raw_request(address: SocketAddr, head: &str) -> RawReply {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connects");
    let request = if head.to_ascii_lowercase().contains("\r\nconnection:") {
        format!("{head}\r\n\r\n")
    } else {
        format!("{head}\r\nConnection: close\r\n\r\n")
    };
    stream
        .write_all(request.as_bytes())
        .await
        .expect("writes the request");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf))
        .await
        .expect("answered and closed within 5 s")
        .expect("reads the response");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let chunked = head
        .to_ascii_lowercase()
        .contains("\r\ntransfer-encoding: chunked");
    RawReply {
        status,
        body: if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

/// Starts the real gateway in this process from config text; returns each listener's
/// `(name, address)`.
pub async fn start_gateway(toml: &str) -> Vec<(String, SocketAddr)> {
    let config = gateway::Config::from_toml(toml, "gateway.toml")
        .unwrap_or_else(|e| panic!("gateway config invalid:\n{e}\n---\n{toml}"));
    let gw = gateway::Gateway::bind(config)
        .await
        .expect("binds loopback ports");
    let addrs = gw.local_addrs();
    tokio::spawn(gw.run());
    addrs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backend_normalises_like_a_permissive_server() {
        assert_eq!(normalise_path("/public/../admin/x"), "/admin/x");
        assert_eq!(normalise_path("//admin//x"), "/admin/x");
        assert_eq!(normalise_path("/%61dmin%2Fx"), "/admin/x");
        assert_eq!(normalise_path("/public\\..%5Cadmin/x"), "/admin/x");
        assert_eq!(normalise_path("/%2E./admin/"), "/admin/");
        assert_eq!(normalise_path("/../.."), "/");
        assert_eq!(
            normalise_host("ADMIN.example.com.:8080"),
            "admin.example.com"
        );
    }
}
