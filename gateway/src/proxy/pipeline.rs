//! The pipeline: canonicalise → route → authorize → forward → log, one request end to end.
//! Every step is a function of its own (see the module map in [`super`]).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use tracing::Span;

use super::authorize::{CheckContext, authorize};
use super::connection::Connection;
use super::forward::forward;
use super::grpc_reply;
use super::log::{Arrival, log};
use super::record::Record;
use super::reply::local_reply;
use super::request_id::ensure_request_id;
use super::tunnel;
use crate::body::{self, BufferedBody, ProxyBody};
use crate::config::Config;
use crate::request::{self, CanonicalRequest, Rejected};
use crate::route::Route;

/// Serves one request; never fails (errors become responses).
pub async fn serve_request<B>(conn: Connection, req: Request<B>) -> Response<ProxyBody>
where
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<body::BoxError>,
{
    // One snapshot per request: a reload in the middle does not change what this request sees.
    let config = conn.shared.config.load_full();
    let time = SystemTime::now();
    let (mut parts, body) = req.into_parts();
    let grpc = grpc_reply::is_grpc_request(&parts.headers);
    let arrival = Arrival {
        method: parts.method.clone(),
        target: parts.uri.clone(),
        started: Instant::now(),
    };
    let canonical = canonicalise(&conn, &config, &mut parts);
    let request_id = ensure_request_id(&mut parts);
    let span = request_span(&parts, &arrival.method, canonical.as_ref());
    let mut record = Record::default();
    let response = match &canonical {
        // No canonical form: 400, and no check is ever sent for it.
        Err(rejected) => local_reply(StatusCode::BAD_REQUEST, rejected.reason()),
        Ok(canonical) => {
            let ctx = CheckContext {
                conn: &conn,
                canonical,
                request_id: &request_id,
                time,
            };
            let body = BufferedBody::new(body::boxed(body));
            // Boxed: the handle future (checks, upstream call) is several KiB, and kept inline it
            // made every future that holds `serve_request` that much larger, moved by memcpy at
            // each poll boundary that moves it (spawn, pinning in hyper's connection task).
            let handled = Box::pin(handle(&config, ctx, parts, body, &mut record));
            if span.is_none() {
                handled.await
            } else {
                crate::otel::traced(span.clone(), handled).await
            }
        }
    };
    // Step 5: a gRPC client gets the gateway's own replies in gRPC; the log records what the
    // client got.
    let response = if grpc {
        grpc_reply::to_grpc(response)
    } else {
        response
    };
    log(
        &conn,
        &span,
        &arrival,
        &canonical,
        &request_id,
        record,
        response.status(),
    );
    response
}

/// Step 1, canonicalise: before anything reads the request. From here on `parts` is the
/// canonical request, the one routing, every check and the upstream see.
fn canonicalise(
    conn: &Connection,
    config: &Config,
    parts: &mut Parts,
) -> Result<CanonicalRequest, Rejected> {
    let options = &config.listeners[conn.listener].canonical;
    request::canonicalise(parts, conn.peer, conn.scheme(), options)
}

/// The request's span (a no-op span when tracing is off).
fn request_span(
    parts: &Parts,
    method: &Method,
    canonical: Result<&CanonicalRequest, &Rejected>,
) -> Span {
    match canonical {
        Ok(c) => crate::otel::request(&parts.headers, method, &c.host, &c.path),
        Err(_) => crate::otel::request(&parts.headers, method, "-", "-"),
    }
}

/// Steps 2 to 4 for a request that has a canonical form: route, authorize, forward.
async fn handle(
    config: &Config,
    ctx: CheckContext<'_>,
    mut parts: Parts,
    mut body: BufferedBody,
    record: &mut Record,
) -> Response<ProxyBody> {
    // Framing attacks never get here: hyper answers 400 to differing Content-Lengths and to a
    // non-chunked Transfer-Encoding, and when both Content-Length and Transfer-Encoding are
    // sent it drops Content-Length (chunked framing wins) and closes the connection after the
    // response (RFC 9112 §6.3), so nothing can be smuggled behind the body.
    let Some(route) = route(config, ctx.canonical, &parts) else {
        return local_reply(StatusCode::NOT_FOUND, "");
    };
    record.route = Some(route.label.clone());
    let upgrade = tunnel::restore(ctx.canonical, &route, &mut parts);
    let listener = &config.listeners[ctx.conn.listener];
    let authorized = authorize(
        ctx,
        listener,
        &route,
        &mut parts,
        &mut body,
        &mut record.authz,
    );
    let response_headers = match authorized.await {
        Ok(headers) => headers,
        Err(refused) => return refused,
    };
    let upgrade = upgrade.filter(|u| u.still_asked(&parts));
    let metrics = &ctx.conn.shared.metrics;
    let upstream_latency = &mut record.upstream_latency;
    let response = forward(
        metrics,
        &route,
        parts,
        body,
        &response_headers,
        upstream_latency,
    )
    .await;
    tunnel::finish(upgrade, response, listener.limits.idle_timeout)
}

/// Step 2, route: the route that serves the canonical request (`None`: the client gets 404).
fn route(config: &Config, canonical: &CanonicalRequest, parts: &Parts) -> Option<Arc<Route>> {
    config
        .routes
        .find(
            &canonical.host,
            &parts.method,
            &canonical.path,
            &parts.headers,
        )
        .cloned()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use http::header;

    use super::*;
    use crate::state::Shared;

    const CONFIG: &str = r#"
[[listeners]]
name = "l"
address = "127.0.0.1:0"

[[backends]]
name = "b"
url = "http://127.0.0.1:9"

[[routes]]
name = "api"
hosts = ["api.example.com"]
path = { prefix = "/v1" }
backend = "b"
"#;

    fn connection() -> Connection {
        let config = Config::from_toml(CONFIG, "test.toml").expect("valid config");
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("address");
        Connection {
            shared: Arc::new(Shared::new(config)),
            listener: 0,
            peer: addr,
            local: addr,
            tls: None,
        }
    }

    fn head(target: &str, host: &str) -> Parts {
        let (parts, ()) = Request::builder()
            .uri(target)
            .header(header::HOST, host)
            .body(())
            .expect("request")
            .into_parts();
        parts
    }

    #[test]
    fn canonicalise_then_route_sees_the_canonical_spelling() {
        let conn = connection();
        let config = conn.shared.config.load();
        let mut parts = head("/x/../v1//chat", "API.example.com:80");
        let canonical = canonicalise(&conn, &config, &mut parts).expect("has a canonical form");
        assert_eq!(parts.uri, "/v1/chat");
        assert_eq!(parts.headers[header::HOST], "api.example.com");
        let served = route(&config, &canonical, &parts).expect("the api route");
        assert_eq!(&*served.label, "api");
    }

    #[test]
    fn a_request_no_route_takes_is_not_routed() {
        let conn = connection();
        let config = conn.shared.config.load();
        let mut parts = head("/v1/chat", "other.example.com");
        let canonical = canonicalise(&conn, &config, &mut parts).expect("has a canonical form");
        assert!(route(&config, &canonical, &parts).is_none());
    }

    #[tokio::test]
    async fn the_client_gets_400_with_the_reason_or_404_without_a_body() {
        use http_body_util::BodyExt;
        let rejected = serve_request(
            connection(),
            Request::builder()
                .uri("/v1/%zz")
                .header(header::HOST, "api.example.com")
                .body(body::empty())
                .expect("request"),
        )
        .await;
        assert_eq!(rejected.status(), StatusCode::BAD_REQUEST);
        assert_eq!(rejected.headers()[header::CONTENT_TYPE], "text/plain");
        let text = rejected
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(text, "invalid percent-encoding in path");
        let unrouted = serve_request(
            connection(),
            Request::builder()
                .uri("/v2")
                .header(header::HOST, "api.example.com")
                .body(body::empty())
                .expect("request"),
        )
        .await;
        assert_eq!(unrouted.status(), StatusCode::NOT_FOUND);
        assert!(unrouted.headers().get(header::CONTENT_TYPE).is_none());
    }
}
