//! The request and response bodies under the stream idle timer: a read or a response that
//! waits longer than `stream_idle_timeout` fails. The response body also keeps its request
//! counted as in flight until it is sent.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::BoxError;
use crate::state::InFlight;

/// The last time a request's body moved.
pub(crate) struct Progress {
    at: std::sync::Mutex<Instant>,
}

impl Progress {
    pub(crate) fn new() -> Progress {
        Progress {
            at: std::sync::Mutex::new(Instant::now()),
        }
    }

    fn touch(&self) {
        if let Ok(mut at) = self.at.lock() {
            *at = Instant::now();
        }
    }

    /// Completes once nothing moved for `idle`.
    pub(crate) async fn stalled_for(&self, idle: Duration) {
        loop {
            let deadline = match self.at.lock() {
                Ok(at) => *at + idle,
                Err(_) => Instant::now(),
            };
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// The stream idle timer fired.
#[derive(Debug, thiserror::Error)]
#[error("no progress on the stream for {0:?} (stream_idle_timeout)")]
pub struct StreamIdle(Duration);

fn poll_idle(
    idle: &mut Option<(Duration, Pin<Box<Sleep>>)>,
    cx: &mut Context<'_>,
    moved: bool,
) -> Result<(), StreamIdle> {
    let Some((timeout, sleep)) = idle else {
        return Ok(());
    };
    if moved {
        sleep.as_mut().reset(Instant::now() + *timeout);
        return Ok(());
    }
    match sleep.as_mut().poll(cx) {
        Poll::Ready(()) => Err(StreamIdle(*timeout)),
        Poll::Pending => Ok(()),
    }
}

/// A request body under the stream idle timer: a read that waits longer than the timeout fails.
pub struct IdleBody<B> {
    inner: B,
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
    progress: Arc<Progress>,
}

impl<B> IdleBody<B> {
    pub(crate) fn new(inner: B, idle: Option<Duration>, progress: Arc<Progress>) -> IdleBody<B> {
        IdleBody {
            inner,
            idle: idle.map(|d| (d, Box::pin(tokio::time::sleep(d)))),
            progress,
        }
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.progress.touch();
                let _ = poll_idle(&mut this.idle, cx, true);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match poll_idle(&mut this.idle, cx, false) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Some(Err(e.into()))),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

enum Inner<B> {
    Body(B),
    Local(Option<Bytes>),
}

/// A response body that keeps its request counted as in flight until it is sent (or dropped),
/// and fails when its source stalls longer than the stream idle timeout.
pub struct LimitedBody<B> {
    inner: Inner<B>,
    in_flight: Option<InFlight>,
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
}

impl<B> LimitedBody<B> {
    pub(crate) fn inner(body: B) -> LimitedBody<B> {
        LimitedBody {
            inner: Inner::Body(body),
            in_flight: None,
            idle: None,
        }
    }

    /// A plain-text answer of our own, e.g. 431 or 408.
    pub(crate) fn local(status: StatusCode, text: &'static str) -> Response<LimitedBody<B>> {
        let mut response = Response::new(LimitedBody {
            inner: Inner::Local(Some(Bytes::from_static(text.as_bytes()))),
            in_flight: None,
            idle: None,
        });
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }

    /// Counts its request in flight until the body is sent (or dropped), and starts the
    /// stream idle timer on it.
    pub(crate) fn track(&mut self, in_flight: InFlight, idle: Option<Duration>) {
        self.in_flight = Some(in_flight);
        self.idle = idle.map(|d| (d, Box::pin(tokio::time::sleep(d))));
    }
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let body = match &mut this.inner {
            Inner::Local(bytes) => return Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Inner::Body(body) => body,
        };
        match Pin::new(body).poll_frame(cx) {
            Poll::Ready(frame) => {
                let _ = poll_idle(&mut this.idle, cx, true);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match poll_idle(&mut this.idle, cx, false) {
                Ok(()) => Poll::Pending,
                Err(e) => {
                    tracing::debug!(error = %e, "resetting a stalled response");
                    Poll::Ready(Some(Err(e.into())))
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Local(bytes) => bytes.is_none(),
            Inner::Body(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Local(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Inner::Body(body) => body.size_hint(),
        }
    }
}
