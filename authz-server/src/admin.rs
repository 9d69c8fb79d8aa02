//! The admin port: `/metrics` (Prometheus text), `/healthz` (the process is up) and `/readyz`
//! (serving checks; 503 once draining).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Method, Response, StatusCode, header};
use http_body_util::Full;
use tokio::net::TcpListener;
use tokio::sync::watch;

use listener::ConnectionSlot;

use crate::config::limits::Limits;
use crate::metrics::Metrics;

/// What the admin endpoints report.
#[derive(Clone)]
pub struct AdminState {
    /// The server's metrics.
    pub metrics: Arc<Metrics>,
    /// False once shutdown has begun, so load balancers stop sending new work.
    pub ready: Arc<AtomicBool>,
}

/// Serves the admin endpoints on `listener` until `stop` turns true, under `limits` (see
/// [`Limits::for_admin`]): a few connections, the listeners' header limits and header timeout.
pub async fn run_admin_listener(
    listener: TcpListener,
    state: AdminState,
    mut stop: watch::Receiver<bool>,
    limits: Limits,
) {
    let slots = Arc::new(AtomicUsize::new(0));
    // Never signalled: admin connections stay up through the drain so `/readyz` can say 503.
    let (_never, drain) = watch::channel(false);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "admin: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let Some(slot) = ConnectionSlot::take(&slots, limits.max_connections) else {
            continue;
        };
        let state = state.clone();
        let handler = move |request: http::Request<_>| {
            let reply = respond(&state, request.method(), request.uri().path());
            async move { reply }
        };
        let serving = listener::serve_connection(stream, &limits, handler, drain.clone());
        tokio::spawn(async move {
            serving.await;
            drop(slot);
        });
    }
}

fn respond(state: &AdminState, method: &Method, path: &str) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match path {
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(state.metrics.render())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if state.ready.load(Ordering::Relaxed) => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
