//! One client connection served under its listener's [`Limits`]: HTTP/1.1 and h2 on the same
//! socket, with every resource a client can hold bounded.
//!
//! - **hyper's own knobs**: header count and bytes on HTTP/1, streams per h2 connection, the h2
//!   header list size, keep-alive PINGs, and h2's reset-flood guards (GOAWAY
//!   `ENHANCE_YOUR_CALM`).
//! - **A supervisor per connection** ([`serve`]'s loop) owns the timers hyper does not have: the
//!   request-headers timeout (from the first byte of a request head, or from accept for the
//!   first request — which also covers a client that never sends a byte or stalls in the h2
//!   preface), the idle timeout (no request in flight), and the graceful close after
//!   `max_requests_per_connection` or on drain.
//! - **Per request**: more header fields than allowed get 431 (hyper refuses them itself on
//!   HTTP/1; this catches h2); the stream idle timer answers 408 while no response has started
//!   and resets the stream (h2) or the connection (HTTP/1) once one has.
//!
//! A stream reset by the client drops the request's future, so a check in flight is cancelled
//! with it (hyper polls for `RST_STREAM` while the service runs). Floods of resets close the
//! connection twice over: h2 sends GOAWAY when more than
//! `http2_max_pending_accept_reset_streams` arrive before hyper accepts them, and streams reset
//! within a second of starting count toward Envoy's premature-reset rule ([`Abandoned`]).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, Sleep};

use crate::{BoxError, Limits};

/// The answer to a request with more header fields than the listener allows.
pub const TOO_MANY_HEADERS: &str = "too many request headers\n";
/// The answer to a request that made no progress for the stream idle timeout (Envoy's text).
pub const STREAM_TIMEOUT: &str = "stream timeout\n";

/// A stream reset by its client sooner than this after it began counts as premature (Envoy's
/// `overload.premature_reset_min_stream_lifetime_seconds`).
pub const PREMATURE_RESET_LIFETIME: Duration = Duration::from_secs(1);
/// Envoy's `overload.premature_reset_total_stream_count`: a connection is closed once half this
/// many of its streams were reset prematurely, or, past this many streams, once more than half
/// of them were.
pub const PREMATURE_RESET_STREAM_COUNT: u64 = 500;

/// Serves one connection until it ends, it breaks a limit, or `drain` turns true (then it closes
/// gracefully: GOAWAY on h2, `connection: close` on HTTP/1).
pub fn serve<I, H, Fut, B>(
    io: I,
    limits: &Limits,
    handler: H,
    drain: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send + 'static
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<IdleBody<Incoming>>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    serve_inner(io, limits.clone(), handler, drain)
}

async fn serve_inner<I, H, Fut, B>(
    io: I,
    limits: Limits,
    handler: H,
    mut drain: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<IdleBody<Incoming>>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    let limits = &limits;
    let state = Arc::new(State::new());
    let service = {
        let (state, limits) = (state.clone(), limits.clone());
        service_fn(move |req| {
            let (state, limits, handler) = (state.clone(), limits.clone(), handler.clone());
            async move { Ok::<_, Infallible>(serve_request(state, &limits, req, handler).await) }
        })
    };
    let io = Watched {
        io,
        state: state.clone(),
        first_read: true,
    };
    let builder = builder(limits);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut graceful_sent = false;
    loop {
        let next = next_deadline(&state, limits, graceful_sent);
        let woken = state.wake.notified();
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            _ = drain.wait_for(|d| *d), if !graceful_sent => {
                conn.as_mut().graceful_shutdown();
                graceful_sent = true;
            }
            () = woken => {}
            () = sleep_until(next.map(|(at, _)| at)) => match next.map(|(_, action)| action) {
                Some(Action::Close) => {
                    tracing::debug!("closing a connection at its request-headers timeout");
                    return;
                }
                Some(Action::Graceful) | None => {
                    conn.as_mut().graceful_shutdown();
                    graceful_sent = true;
                }
            },
        }
    }
}

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let max_header_bytes = limits.max_request_header_bytes;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper's header timer also runs while a kept-alive connection waits, which would make
        // it an idle timeout too; the supervisor times request heads from their first byte.
        .header_read_timeout(None)
        .max_headers(limits.max_request_headers)
        .max_buf_size(max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(limits.http2_keepalive_interval)
        .keep_alive_timeout(limits.http2_keepalive_timeout)
        .max_pending_accept_reset_streams(limits.http2_max_pending_accept_reset_streams)
        .max_local_error_reset_streams(limits.http2_max_local_error_reset_streams);
    builder
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What the supervisor does when a deadline passes.
#[derive(Debug, Clone, Copy)]
enum Action {
    /// Nothing is in flight and a request head is overdue: drop the socket.
    Close,
    /// Finish what is in flight, then close (GOAWAY on h2).
    Graceful,
}

/// The next timer the connection is under, from its state now.
fn next_deadline(state: &State, limits: &Limits, graceful_sent: bool) -> Option<(Instant, Action)> {
    if graceful_sent {
        return None;
    }
    if state.goaway.load(Ordering::SeqCst) {
        return Some((Instant::now(), Action::Graceful));
    }
    if state.active.load(Ordering::SeqCst) > 0 {
        return None;
    }
    let headers = limits.request_headers_timeout;
    if state.served.load(Ordering::SeqCst) == 0 {
        return Some((state.started + headers, Action::Close));
    }
    let head = state.head_started.load(Ordering::SeqCst);
    if head != 0 && !state.http2.load(Ordering::SeqCst) {
        return Some((state.at(head - 1) + headers, Action::Close));
    }
    let idle = limits.idle_timeout?;
    Some((
        state.at(state.idle_since.load(Ordering::SeqCst)) + idle,
        Action::Graceful,
    ))
}

/// What the supervisor, the socket and the requests of one connection share.
struct State {
    started: Instant,
    /// Requests whose response has not been sent in full.
    active: AtomicUsize,
    /// Requests received.
    served: AtomicU64,
    /// When (ms since `started`) the connection last had nothing in flight.
    idle_since: AtomicU64,
    /// When (ms since `started`, plus one; 0 = not reading) bytes of the next HTTP/1 request
    /// head arrived with nothing in flight.
    head_started: AtomicU64,
    /// The client speaks h2 (bytes arrive between requests: PINGs, window updates).
    http2: AtomicBool,
    /// `max_requests_per_connection` reached, or a reset flood: close gracefully (GOAWAY).
    goaway: AtomicBool,
    /// Requests the client abandoned (h2 `RST_STREAM`) less than [`PREMATURE_RESET_LIFETIME`]
    /// after they started.
    premature_resets: AtomicU64,
    /// Tells the supervisor its deadlines changed.
    wake: Notify,
}

impl State {
    fn new() -> State {
        State {
            started: Instant::now(),
            active: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            http2: AtomicBool::new(false),
            goaway: AtomicBool::new(false),
            premature_resets: AtomicU64::new(0),
            wake: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: u64) -> Instant {
        self.started + Duration::from_millis(ms)
    }
}

/// A request in flight; dropping it (when the response body is done or dropped) may start the
/// idle timer.
struct InFlight(Arc<State>);

impl InFlight {
    /// Counts a new request; true when it is the last one the connection may serve.
    fn enter(state: &Arc<State>, limits: &Limits) -> (InFlight, bool) {
        state.active.fetch_add(1, Ordering::SeqCst);
        state.head_started.store(0, Ordering::SeqCst);
        let served = state.served.fetch_add(1, Ordering::SeqCst) + 1;
        let last = limits
            .max_requests_per_connection
            .is_some_and(|max| served >= max);
        if last {
            state.goaway.store(true, Ordering::SeqCst);
        }
        state.wake.notify_one();
        (InFlight(state.clone()), last)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.idle_since.store(self.0.now_ms(), Ordering::SeqCst);
        self.0.active.fetch_sub(1, Ordering::SeqCst);
        self.0.wake.notify_one();
    }
}

/// Notices a request whose future is dropped before it answers: hyper drops it when the client
/// resets the stream, which also cancels the check in flight. Many such early resets are the
/// HTTP/2 rapid-reset attack (CVE-2023-44487): the connection then gets GOAWAY, by Envoy's rule.
struct Abandoned {
    state: Arc<State>,
    started: Instant,
    answered: bool,
}

impl Abandoned {
    fn watch(state: &Arc<State>) -> Abandoned {
        Abandoned {
            state: state.clone(),
            started: Instant::now(),
            answered: false,
        }
    }

    fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        if self.answered || self.started.elapsed() >= PREMATURE_RESET_LIFETIME {
            return;
        }
        let resets = self.state.premature_resets.fetch_add(1, Ordering::SeqCst) + 1;
        let streams = self.state.served.load(Ordering::SeqCst);
        let flood = if streams < PREMATURE_RESET_STREAM_COUNT {
            resets * 2 >= PREMATURE_RESET_STREAM_COUNT
        } else {
            resets * 2 > streams
        };
        if flood && !self.state.goaway.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                resets,
                streams,
                "closing a connection that resets streams prematurely"
            );
            self.state.wake.notify_one();
        }
    }
}

async fn serve_request<H, Fut, B>(
    state: Arc<State>,
    limits: &Limits,
    req: Request<Incoming>,
    handler: H,
) -> Response<LimitedBody<B>>
where
    H: Fn(Request<IdleBody<Incoming>>) -> Fut,
    Fut: Future<Output = Response<B>>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let (in_flight, last) = InFlight::enter(&state, limits);
    let abandoned = Abandoned::watch(&state);
    let version = req.version();
    if version == Version::HTTP_2 {
        state.http2.store(true, Ordering::SeqCst);
    }
    let idle = limits.stream_idle_timeout;
    let mut response = if req.headers().len() > limits.max_request_headers {
        local(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            TOO_MANY_HEADERS,
        )
    } else {
        let progress = Arc::new(Progress::new());
        let req = req.map(|body| IdleBody::new(body, idle, progress.clone()));
        match idle {
            None => handler(req).await.map(LimitedBody::inner),
            Some(idle) => {
                tokio::select! {
                    biased;
                    () = progress.stalled_for(idle) => {
                        local(StatusCode::REQUEST_TIMEOUT, STREAM_TIMEOUT)
                    }
                    response = handler(req) => response.map(LimitedBody::inner),
                }
            }
        }
    };
    if last && version < Version::HTTP_2 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    abandoned.answered();
    let body = response.body_mut();
    body.in_flight = Some(in_flight);
    body.idle = idle.map(|d| (d, Box::pin(tokio::time::sleep(d))));
    response
}

fn local<B>(status: StatusCode, text: &'static str) -> Response<LimitedBody<B>> {
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

/// The last time a request's body moved.
struct Progress {
    at: std::sync::Mutex<Instant>,
}

impl Progress {
    fn new() -> Progress {
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
    async fn stalled_for(&self, idle: Duration) {
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
    fn new(inner: B, idle: Option<Duration>, progress: Arc<Progress>) -> IdleBody<B> {
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
    fn inner(body: B) -> LimitedBody<B> {
        LimitedBody {
            inner: Inner::Body(body),
            in_flight: None,
            idle: None,
        }
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

/// The socket, watched for the first byte of each HTTP/1 request head.
struct Watched<I> {
    io: I,
    state: Arc<State>,
    first_read: bool,
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
