//! Backends for the upstream transport suites: one that echoes what it received (version,
//! `:authority`/`Host`, headers, body, trailers, whether a client certificate came) as JSON, over
//! TLS (ALPN `h2` and `http/1.1`, optionally requiring a client certificate) or plain h1/h2c,
//! counting the connections it accepted.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// A running echo backend.
pub(crate) struct EchoBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Connections accepted (TLS: handshakes completed).
    pub connections: Arc<AtomicUsize>,
    /// Requests answered.
    pub requests: Arc<AtomicUsize>,
}

impl EchoBackend {
    /// Connections accepted so far.
    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Requests answered so far.
    pub(crate) fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A plaintext echo backend speaking HTTP/1.1 and h2c (prior knowledge).
pub(crate) async fn plain_echo() -> EchoBackend {
    start(None).await
}

/// A TLS echo backend with `cert`/`key`; with `client_ca` a client certificate is required.
pub(crate) async fn tls_echo(cert: &Path, key: &Path, client_ca: Option<&Path>) -> EchoBackend {
    let tls = gateway::tls::listener_tls(
        cert.to_str().expect("a UTF-8 path"),
        key.to_str().expect("a UTF-8 path"),
        client_ca.map(|c| c.to_str().expect("a UTF-8 path")),
        true,
    )
    .expect("the test certificate loads");
    start(Some(tls.acceptor)).await
}

async fn start(tls: Option<tokio_rustls::TlsAcceptor>) -> EchoBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("an address");
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (c, r) = (connections.clone(), requests.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (tls, c, r) = (tls.clone(), c.clone(), r.clone());
            tokio::spawn(async move {
                match tls {
                    None => {
                        c.fetch_add(1, Ordering::SeqCst);
                        serve(TokioIo::new(tcp), false, r).await;
                    }
                    Some(acceptor) => {
                        let Ok(stream) = acceptor.accept(tcp).await else {
                            return;
                        };
                        c.fetch_add(1, Ordering::SeqCst);
                        let client_cert = stream.get_ref().1.peer_certificates().is_some();
                        serve(TokioIo::new(stream), client_cert, r).await;
                    }
                }
            });
        }
    });
    EchoBackend {
        addr,
        connections,
        requests,
    }
}

async fn serve<I>(io: I, client_cert: bool, requests: Arc<AtomicUsize>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        requests.fetch_add(1, Ordering::SeqCst);
        echo(req, client_cert)
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(io, service)
        .await;
}

/// The echo: JSON of what came, and the request's trailers returned as response trailers with
/// an `x-echo-` prefix (so a test sees trailers travel both ways).
async fn echo(req: Request<Incoming>, client_cert: bool) -> Result<Response<EchoBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let collected = body.collect().await.ok();
    let trailers = collected.as_ref().and_then(|c| c.trailers().cloned());
    let bytes = collected
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    // Repeated headers are joined with ", ".
    let mut headers = serde_json::Map::new();
    for name in parts.headers.keys() {
        let joined: Vec<String> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        headers.insert(
            name.as_str().to_owned(),
            serde_json::Value::String(joined.join(", ")),
        );
    }
    let json = serde_json::json!({
        "version": format!("{:?}", parts.version),
        "authority": parts.uri.authority().map(ToString::to_string),
        "path": parts.uri.path_and_query().map(ToString::to_string),
        "headers": headers,
        "body": String::from_utf8_lossy(&bytes),
        "client_cert": client_cert,
    });
    let mut out = HeaderMap::new();
    for (k, v) in trailers.iter().flatten() {
        let name = format!("x-echo-{k}");
        out.insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
            v.clone(),
        );
    }
    let body = EchoBody {
        data: Some(Bytes::from(json.to_string())),
        trailers: (!out.is_empty()).then_some(out),
    };
    Ok(Response::builder()
        .header("content-type", "application/json")
        .header("server", "echo")
        .body(body)
        .expect("a valid response"))
}

/// A body of one data frame and optional trailers.
pub(crate) struct EchoBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl hyper::body::Body for EchoBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        if let Some(data) = self.data.take() {
            return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(data))));
        }
        std::task::Poll::Ready(
            self.trailers
                .take()
                .map(|t| Ok(hyper::body::Frame::trailers(t))),
        )
    }
}

/// A request body of `data` followed by `trailers`.
pub(crate) fn body_with_trailers(
    data: &'static str,
    trailers: HeaderMap,
) -> http_body_util::combinators::BoxBody<Bytes, Infallible> {
    EchoBody {
        data: Some(Bytes::from_static(data.as_bytes())),
        trailers: Some(trailers),
    }
    .boxed()
}

/// An empty request body for a client of `Full` bodies.
pub(crate) fn no_body() -> Full<Bytes> {
    Full::new(Bytes::new())
}

/// A response body for test backends, boxed.
pub(crate) type TestBody =
    http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A body made of these frames, in order; an `Err` breaks the stream there.
pub(crate) fn test_body(
    frames: Vec<Result<hyper::body::Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>>,
) -> TestBody {
    http_body_util::StreamBody::new(tokio_stream::iter(frames)).boxed()
}

/// A body whose frames come `gap` apart (so each goes out on its own; an error right after data
/// would reset the stream before the data left).
pub(crate) fn paced_body(
    frames: Vec<Result<hyper::body::Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>>,
    gap: std::time::Duration,
) -> TestBody {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        for frame in frames {
            if tx.send(frame).await.is_err() {
                return;
            }
            tokio::time::sleep(gap).await;
        }
    });
    http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed()
}
