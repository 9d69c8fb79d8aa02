//! The gRPC port's connection limits, applied below tonic: tonic serves each connection itself,
//! so the limits hyper has no knob for live in the socket. A connection beyond
//! `max_connections` is closed at once; one that has not sent the 24-byte HTTP/2 preface within
//! `request_headers_timeout` is closed; after that, one with no bytes moving either way for
//! `idle_timeout` is closed.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use listener::ConnectionSlot;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::config::limits::Limits;

/// The client's connection preface (RFC 9113 §3.4) is this long.
const PREFACE_BYTES: usize = 24;

/// The accepted connections tonic serves: Nagle's algorithm off (a Check answer is one small
/// write, and holding it back for a delayed ACK costs tens of milliseconds per call), at most
/// `max_connections` at once, each under its timers.
pub(super) fn incoming(
    listener: TcpListener,
    limits: Limits,
) -> impl Stream<Item = io::Result<Guarded>> {
    let slots = Arc::new(AtomicUsize::new(0));
    tokio_stream::wrappers::TcpListenerStream::new(listener).filter_map(move |accepted| {
        let stream = match accepted {
            Ok(stream) => stream,
            Err(error) => return Some(Err(error)),
        };
        // Over the limit: dropping the stream closes it at once.
        let slot = ConnectionSlot::take(&slots, limits.max_connections)?;
        if let Err(error) = stream.set_nodelay(true) {
            return Some(Err(error));
        }
        Some(Ok(Guarded::new(stream, slot, &limits)))
    })
}

/// A gRPC connection's socket under the preface and idle timers.
pub(super) struct Guarded {
    stream: TcpStream,
    _slot: ConnectionSlot,
    read: usize,
    idle: Option<Duration>,
    deadline: Pin<Box<Sleep>>,
}

impl Guarded {
    fn new(stream: TcpStream, slot: ConnectionSlot, limits: &Limits) -> Guarded {
        Guarded {
            stream,
            _slot: slot,
            read: 0,
            idle: limits.idle_timeout,
            deadline: Box::pin(tokio::time::sleep(limits.request_headers_timeout)),
        }
    }

    /// Bytes moved: once the preface is in, the idle timer restarts.
    fn moved(&mut self) {
        if self.read < PREFACE_BYTES {
            return;
        }
        let next = match self.idle {
            Some(idle) => Instant::now() + idle,
            // Off: far enough to never matter.
            None => Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600),
        };
        self.deadline.as_mut().reset(next);
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) if self.read < PREFACE_BYTES => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no HTTP/2 preface within request_headers_timeout",
            )),
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle for idle_timeout",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl Connected for Guarded {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                let n = buf.filled().len() - before;
                if n > 0 {
                    this.read = this.read.saturating_add(n);
                    this.moved();
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                this.expired(cx)?;
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.stream).poll_write(cx, buf))?;
        this.moved();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
