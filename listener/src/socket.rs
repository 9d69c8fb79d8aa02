//! The socket, watched for the first byte of each HTTP/1 request head (the request-headers
//! timeout runs from it) and for the h2 preface.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::state::State;

/// The socket, watched for the first byte of each HTTP/1 request head.
pub(crate) struct Watched<I> {
    io: I,
    state: Arc<State>,
    first_read: bool,
}

impl<I> Watched<I> {
    pub(crate) fn new(io: I, state: Arc<State>) -> Self {
        Watched {
            io,
            state,
            first_read: true,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            let state = &this.state;
            if std::mem::take(&mut this.first_read) && read.starts_with(b"PRI") {
                state.http2.store(true, Ordering::SeqCst);
            }
            if !state.http2.load(Ordering::SeqCst)
                && state.active.load(Ordering::SeqCst) == 0
                && state.head_started.load(Ordering::SeqCst) == 0
            {
                state
                    .head_started
                    .store(state.now_ms() + 1, Ordering::SeqCst);
                state.wake.notify_one();
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
