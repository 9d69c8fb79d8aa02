//! One client connection served under its listener's [`Limits`]: HTTP/1.1 and h2 on the same
//! socket, with every resource a client can hold bounded.
//!
//! - **hyper's own knobs**: header count and bytes on HTTP/1, streams per h2 connection, the h2
//!   header list size, keep-alive PINGs, and h2's reset-flood guards (GOAWAY
//!   `ENHANCE_YOUR_CALM`).
//! - **A supervisor per connection** ([`supervise`], behind [`serve_connection`]) owns the
//!   timers hyper does not have: the request-headers timeout (from the first byte of a request
//!   head, or from accept for the first request — which also covers a client that never sends a
//!   byte or stalls in the h2 preface), the idle timeout (no request in flight), and the
//!   graceful close after `max_requests_per_connection` or on drain.
//! - **Per request**: more header fields than allowed get 431 (hyper refuses them itself on
//!   HTTP/1; this catches h2); the stream idle timer answers 408 while no response has started
//!   and resets the stream (h2) or the connection (HTTP/1) once one has.
//!
//! A stream reset by the client drops the request's future, so a check in flight is cancelled
//! with it (hyper polls for `RST_STREAM` while the service runs). Floods of resets close the
//! connection twice over: h2 sends GOAWAY when more than
//! `http2_max_pending_accept_reset_streams` arrive before hyper accepts them, and streams reset
//! within a second of starting count toward Envoy's premature-reset rule (`request.rs`).
//!
//! The parts: this supervisor; [`crate::state`], what the supervisor, the socket and the
//! requests share; [`crate::socket`], the socket watched for request heads;
//! [`crate::request`], one request under its limits; [`crate::body`], the request and response
//! bodies under the stream idle timer.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::body::IdleBody;
use crate::request::serve_request;
use crate::socket::Watched;
use crate::state::State;
use crate::{BoxError, Limits};

/// Serves one connection until it ends, it breaks a limit, or `drain` turns true (then it closes
/// gracefully: GOAWAY on h2, `connection: close` on HTTP/1).
pub fn serve_connection<I, H, Fut, B>(
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
    supervise(io, limits.clone(), handler, drain)
}

/// The supervisor: serves the connection with hyper and runs the timers hyper does not have.
async fn supervise<I, H, Fut, B>(
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
    let io = Watched::new(io, state.clone());
    let builder = builder(limits);
    // With upgrades: a `101` answer hands the socket to whoever awaits the request's
    // `OnUpgrade` (the gateway's WebSocket tunnel); the connection future then ends, and with
    // it this supervisor's timers, which are for HTTP, not for the tunnel.
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
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
