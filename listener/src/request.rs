//! One request under its connection's limits: too many header fields get 431, a malformed
//! header value 400 (`fields`), a stream that
//! makes no progress gets 408 (while no response has started), the last request a connection may
//! serve gets `connection: close` on HTTP/1, and a request abandoned early counts toward the
//! premature-reset rule.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::{Body, Incoming};
use tokio::time::Instant;

use crate::body::{IdleBody, LimitedBody, Progress};
use crate::state::{InFlight, State};
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

/// Answers one request with `handler`, under `limits`.
pub(crate) async fn serve_request<H, Fut, B>(
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
        LimitedBody::local(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            TOO_MANY_HEADERS,
        )
    } else if let Some(name) = crate::fields::malformed_field(req.headers()) {
        // Refused before the handler: neither checked nor forwarded (see `fields`).
        tracing::debug!(header = %name, "refused a request with a malformed header value");
        LimitedBody::local(StatusCode::BAD_REQUEST, crate::fields::MALFORMED_HEADER)
    } else {
        let progress = Arc::new(Progress::new());
        let req = req.map(|body| IdleBody::new(body, idle, progress.clone()));
        match idle {
            None => handler(req).await.map(LimitedBody::inner),
            Some(idle) => {
                tokio::select! {
                    biased;
                    () = progress.stalled_for(idle) => {
                        LimitedBody::local(StatusCode::REQUEST_TIMEOUT, STREAM_TIMEOUT)
                    }
                    response = handler(req) => response.map(LimitedBody::inner),
                }
            }
        }
    };
    // A `101` keeps its `Connection: upgrade`: the connection leaves HTTP, there is no next
    // request to refuse.
    if last && version < Version::HTTP_2 && response.status() != StatusCode::SWITCHING_PROTOCOLS {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    abandoned.answered();
    response.body_mut().track(in_flight, idle);
    response
}
