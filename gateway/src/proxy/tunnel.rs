//! WebSocket upgrades (RFC 6455 over HTTP/1.1): the one place a request may leave HTTP.
//!
//! The order keeps the check in charge: the canonical request keeps the client's `Upgrade`
//! aside ([`crate::request::Upgrade`]) while its hop-by-hop headers go; once the route is known,
//! [`restore`] puts `Connection: upgrade` and `Upgrade: websocket` back when the route allows
//! the upgrade — before the check, so the check sees the headers the backend will get; every
//! policy then decides as for any request (a denial is a plain answer, never a tunnel). Only
//! when the backend answers `101` to the forwarded upgrade does [`finish`] start the tunnel:
//! both sides' connections are taken from hyper and bytes are copied both ways until both
//! directions end or nothing moves either way for the listener's `idle_timeout`.
//!
//! HTTP/2 extended CONNECT (RFC 8441) is not supported: an upgrade is an HTTP/1.1 GET.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::reply::local_reply;
use crate::body::{self, ProxyBody};
use crate::headers;
use crate::request::{CanonicalRequest, Upgrade};
use crate::route::Route;

use activity::{Activity, Clock};

/// An upgrade the route allows, waiting for the check and the backend's `101`.
pub(super) struct PendingUpgrade {
    upgrade: Upgrade,
    client: OnUpgrade,
}

/// After routing: when the client asked for an upgrade `route` allows, puts its `Connection`
/// and `Upgrade` headers back on the request and keeps the client's side of the upgrade.
/// Otherwise the request goes on without them, as a plain request.
pub(super) fn restore(
    canonical: &CanonicalRequest,
    route: &Route,
    parts: &mut Parts,
) -> Option<PendingUpgrade> {
    // Taken in every case: a request that is not tunnelled must not carry its client's
    // connection on to the upstream request.
    let client = parts.extensions.remove::<OnUpgrade>();
    let upgrade = canonical.upgrade.filter(|u| route.upgrades.contains(u))?;
    let client = client?;
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts
        .headers
        .insert(header::UPGRADE, HeaderValue::from_static(upgrade.token()));
    Some(PendingUpgrade { upgrade, client })
}

impl PendingUpgrade {
    /// Whether the request, as the checks left it, still asks for the upgrade (an allow may
    /// have removed its headers; then it is forwarded and answered as a plain request).
    pub(super) fn still_asked(&self, parts: &Parts) -> bool {
        headers::upgrade_tokens(&parts.headers)
            .any(|token| Upgrade::from_token(token) == Some(self.upgrade))
    }
}

/// After the backend answered: a `101` to a forwarded upgrade starts the tunnel and goes to the
/// client with its `Connection`/`Upgrade` headers; any other answer to it is relayed as it is.
/// A `101` to a request that asked for no upgrade is a bad response (502).
pub(super) fn finish(
    pending: Option<PendingUpgrade>,
    mut response: Response<ProxyBody>,
    idle_timeout: Option<Duration>,
) -> Response<ProxyBody> {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return response;
    }
    let upstream = response.extensions_mut().remove::<OnUpgrade>();
    let (Some(pending), Some(upstream)) = (pending, upstream) else {
        tracing::warn!("the backend switched protocols on a request that asked for no upgrade");
        return local_reply(StatusCode::BAD_GATEWAY, "upstream reset or bad response");
    };
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(
        header::UPGRADE,
        HeaderValue::from_static(pending.upgrade.token()),
    );
    *response.body_mut() = body::empty();
    tokio::spawn(run(pending.client, upstream, idle_timeout));
    response
}

/// The tunnel: once hyper hands over both connections (the client's after the `101` is
/// written), copies bytes both ways under the idle timer.
async fn run(client: OnUpgrade, upstream: OnUpgrade, idle_timeout: Option<Duration>) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(error) => {
            tracing::debug!(%error, "an upgrade failed before the tunnel opened");
            return;
        }
    };
    let clock = Arc::new(Clock::new());
    let mut client = Activity::new(TokioIo::new(client), clock.clone());
    let mut upstream = Activity::new(TokioIo::new(upstream), clock.clone());
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    let outcome = match idle_timeout {
        None => Some(copy.await),
        Some(idle) => tokio::select! {
            copied = copy => Some(copied),
            () = clock.idle_for(idle) => None,
        },
    };
    match outcome {
        Some(Ok((up, down))) => tracing::debug!(up, down, "tunnel closed"),
        Some(Err(error)) => tracing::debug!(%error, "tunnel broke"),
        None => tracing::debug!("tunnel closed at the idle timeout"),
    }
    // Dropping both connections here closes them.
}

/// When the tunnel last moved a byte, shared by both directions.
mod activity {
    use std::io;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::task::{Context, Poll};
    use std::time::Duration;

    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio::time::Instant;

    /// The last time a byte moved, as milliseconds since the tunnel opened.
    pub(super) struct Clock {
        opened: Instant,
        last_ms: AtomicU64,
    }

    impl Clock {
        pub(super) fn new() -> Clock {
            Clock {
                opened: Instant::now(),
                last_ms: AtomicU64::new(0),
            }
        }

        fn touch(&self) {
            let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last_ms.store(ms, Ordering::Relaxed);
        }

        /// Resolves once no byte has moved for `idle`.
        pub(super) async fn idle_for(&self, idle: Duration) {
            loop {
                let last =
                    self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
                let deadline = last + idle;
                if Instant::now() >= deadline {
                    return;
                }
                tokio::time::sleep_until(deadline).await;
            }
        }
    }

    /// One side of the tunnel, touching the clock whenever bytes go through it.
    pub(super) struct Activity<T> {
        io: T,
        clock: Arc<Clock>,
    }

    impl<T> Activity<T> {
        pub(super) fn new(io: T, clock: Arc<Clock>) -> Activity<T> {
            Activity { io, clock }
        }
    }

    impl<T: AsyncRead + Unpin> AsyncRead for Activity<T> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let before = buf.filled().len();
            let polled = Pin::new(&mut self.io).poll_read(cx, buf);
            if buf.filled().len() > before {
                self.clock.touch();
            }
            polled
        }
    }

    impl<T: AsyncWrite + Unpin> AsyncWrite for Activity<T> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            let polled = Pin::new(&mut self.io).poll_write(cx, data);
            if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
                self.clock.touch();
            }
            polled
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }
}
