//! Opening one connection to one endpoint, for hyper-util's pooled client: resolve the host now
//! (each connect, so a DNS change is seen by the next connection; nothing is pinned), try its
//! addresses in turn within the connect timeout, then the TLS handshake for `https://`. The
//! connection tells the pool whether ALPN chose HTTP/2, which is how one TLS connection carries
//! every concurrent request of an h2 backend.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection as HyperConnection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::tls::TlsClient;
use crate::metrics::{self, BackendLabel, EndpointLabels};

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The host name did not resolve.
    #[error("cannot resolve `{host}`: {source}")]
    Resolve {
        /// The name looked up.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// The host name resolved to no address.
    #[error("`{0}` resolved to no address")]
    NoAddress(String),
    /// Every address refused or failed; the last one's error.
    #[error("connect to {addr}: {source}")]
    Tcp {
        /// The last address tried.
        addr: SocketAddr,
        /// Its error.
        source: io::Error,
    },
    /// Connecting (TCP and TLS) took longer than the backend's `connect_timeout`.
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    /// The TLS handshake failed: rustls's reason (a certificate that did not verify, ...).
    #[error("TLS handshake failed: {0}")]
    Tls(String),
}

/// Where and how to connect: one per endpoint, shared by its pool.
#[derive(Debug)]
struct Target {
    /// The host to resolve (brackets of an IPv6 literal removed).
    host: String,
    port: u16,
    connect_timeout: Duration,
    tls: Option<TlsClient>,
    labels: EndpointLabels,
}

/// The connector hyper-util's client calls for a new connection (the URI it passes is ignored:
/// an endpoint's client only ever reaches that endpoint).
#[derive(Debug, Clone)]
pub(super) struct Connector {
    target: Arc<Target>,
}

impl Connector {
    /// A connector to `host:port`, over TLS when `tls` is set; connects are counted under
    /// `labels`.
    pub(super) fn new(
        host: &str,
        port: u16,
        connect_timeout: Duration,
        tls: Option<TlsClient>,
        labels: EndpointLabels,
    ) -> Connector {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Connector {
            target: Arc::new(Target {
                host,
                port,
                connect_timeout,
                tls,
                labels,
            }),
        }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = Connection;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Connection, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let target = self.target.clone();
        Box::pin(async move { target.connect().await })
    }
}

impl Target {
    async fn connect(&self) -> Result<Connection, ConnectError> {
        let timeout = self.connect_timeout;
        let tcp = tokio::time::timeout(timeout, self.tcp())
            .await
            .map_err(|_| ConnectError::Timeout(timeout))??;
        let upstream = metrics::upstream();
        upstream.connections.get_or_create(&self.labels).inc();
        let Some(tls) = &self.tls else {
            return Ok(Connection::new(Stream::Plain(tcp), false));
        };
        let stream =
            tokio::time::timeout(timeout, tls.connector.connect(tls.server_name.clone(), tcp))
                .await
                .map_err(|_| ConnectError::Timeout(timeout))?
                .map_err(|e| ConnectError::Tls(tls_reason(&e)))?;
        upstream
            .tls_handshakes
            .get_or_create(&BackendLabel {
                backend: self.labels.backend.clone(),
            })
            .inc();
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok(Connection::new(Stream::Tls(Box::new(stream)), h2))
    }

    /// The first address of the host that accepts a TCP connection.
    async fn tcp(&self) -> Result<TcpStream, ConnectError> {
        let addrs = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|source| ConnectError::Resolve {
                host: self.host.clone(),
                source,
            })?;
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    // Small writes (h2 frames, request heads) go out at once.
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(source) => last = Some(ConnectError::Tcp { addr, source }),
            }
        }
        Err(last.unwrap_or_else(|| ConnectError::NoAddress(self.host.clone())))
    }
}

/// rustls's own words for a failed handshake ("invalid peer certificate: UnknownIssuer"), which
/// say what did not verify.
fn tls_reason(e: &io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls) => rustls.to_string(),
        None => e.to_string(),
    }
}

/// A TCP stream, plain or inside TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// One connection to an endpoint, as hyper reads and writes it.
pub(super) struct Connection {
    io: TokioIo<Stream>,
    /// ALPN chose `h2`.
    h2: bool,
}

impl Connection {
    fn new(stream: Stream, h2: bool) -> Connection {
        Connection {
            io: TokioIo::new(stream),
            h2,
        }
    }
}

impl HyperConnection for Connection {
    fn connected(&self) -> Connected {
        let connected = Connected::new();
        if self.h2 {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl hyper::rt::Read for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
