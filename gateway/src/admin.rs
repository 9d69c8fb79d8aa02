//! The admin endpoint: `/metrics` (Prometheus text), `/healthz` (the process is up) and
//! `/readyz` (serving; 503 while draining).

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::watch;

use listener::ConnectionSlot;

use crate::body::{self, ProxyBody};
use crate::state::Shared;

/// The content type of the exposition `prometheus-client` writes (OpenMetrics text).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves the admin endpoint on `listener` until the task is dropped. It keeps serving while
/// the listeners drain (so `/readyz` can say 503). It runs under the config's `[admin.limits]`
/// (by default [`listener::Limits::for_admin`]: 64 connections, 100 header fields and 60 KiB of
/// headers, 10 s to send them); the limits in force at start stay for the process's
/// life.
pub async fn serve_admin(listener: TcpListener, shared: Arc<Shared>) {
    let limits = shared.config.load().admin_limits.clone();
    // Never signalled: admin connections end with the task, not with the drain.
    let (_never, drain) = watch::channel(false);
    let count = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Some(slot) = ConnectionSlot::take(&count, limits.max_connections) else {
            continue;
        };
        let (shared, limits, drain) = (shared.clone(), limits.clone(), drain.clone());
        tokio::spawn(async move {
            let handler = move |req: Request<_>| {
                let reply = answer(&shared, &req);
                async move { reply }
            };
            listener::serve_connection(stream, &limits, handler, drain).await;
            drop(slot);
        });
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
