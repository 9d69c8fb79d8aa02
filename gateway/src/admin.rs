//! The admin endpoint: `/metrics` (Prometheus text), `/healthz` (the process is up) and
//! `/readyz` (serving; 503 while draining).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::{self, ProxyBody};
use crate::connection;
use crate::server::Shared;

/// The content type of the exposition `prometheus-client` writes (OpenMetrics text).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves the admin endpoint on `listener` until the task is dropped. It keeps serving while
/// the listeners drain (so `/readyz` can say 503). It runs under the config's `[admin.limits]`
/// (by default [`crate::config::limits::Limits::admin`]: 64 connections, 100 header fields, 10 s
/// to send headers) and 60 KiB of headers; the limits in force at start stay for the process's
/// life.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let limits = shared.config.load().admin_limits.clone();
    // Never signalled: admin connections end with the task, not with the drain.
    let (_never, drain) = watch::channel(false);
    let count = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Some(slot) = Slot::take(&count, limits.max_connections) else {
            continue;
        };
        let (shared, limits, drain) = (shared.clone(), limits.clone(), drain.clone());
        tokio::spawn(async move {
            let handler = move |req: Request<_>| {
                let reply = answer(&shared, &req);
                async move { reply }
            };
            connection::serve(stream, &limits, ADMIN_MAX_HEADER_BYTES, handler, drain).await;
            drop(slot);
        });
    }
}

/// The admin port's header size limit (Envoy's default for listeners).
const ADMIN_MAX_HEADER_BYTES: usize = 60 * 1024;

/// One of the admin port's connection slots.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(count.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn answer<B>(shared: &Shared, req: &Request<B>) -> Response<ProxyBody> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        "/metrics" => {
            let mut resp = Response::new(body::full(shared.metrics.encode()));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(METRICS_CONTENT_TYPE),
            );
            resp
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if shared.is_draining() => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        "/readyz" => text(StatusCode::OK, "ready\n"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: /metrics, /healthz, /readyz\n",
        ),
    }
}

fn text(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
