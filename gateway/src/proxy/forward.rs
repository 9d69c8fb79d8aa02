//! Step 4, forward: the canonical request, aimed at the route's backend, and the backend's
//! response back to the client (hop-by-hop headers removed, the allows' response headers
//! applied); a backend that fails is a 502, 503 or 504 the gateway answers itself.

use std::time::{Duration, Instant};

use http::request::Parts;
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};

use super::authorize::ResponseHeaders;
use super::reply::{local_reply, mark_local};
use crate::body::{self, BufferedBody, ProxyBody};
use crate::ext_authz::mutation::apply_response_headers;
use crate::headers;
use crate::metrics::{Metrics, RouteLabel};
use crate::redact;
use crate::route::{PathMatch, Route};
use crate::upstream::UpstreamError;

/// Sends the request to `route`'s backend and relays the answer; records how long the backend
/// took in `upstream_latency` and the metrics.
pub(super) async fn forward(
    metrics: &Metrics,
    route: &Route,
    parts: Parts,
    mut body: BufferedBody,
    response_headers: &ResponseHeaders,
    upstream_latency: &mut Option<Duration>,
) -> Response<ProxyBody> {
    // A route that retries keeps a small body to send again; read before the clock starts.
    let replay = super::retry::replayable(route, &mut body).await;
    let upstream_req = match upstream_request(route, parts, body) {
        Ok(r) => r,
        Err(status) => return local_reply(status, "invalid path"),
    };
    let began = Instant::now();
    let result = send(metrics, route, upstream_req, replay).await;
    let took = began.elapsed();
    *upstream_latency = Some(took);
    metrics
        .upstream_latency
        .get_or_create(&RouteLabel {
            route: route.label.clone(),
        })
        .observe(took.as_secs_f64());
    match result {
        Err(e) => upstream_failed(route, &e),
        Ok(resp) => {
            let mut resp = relay(resp, response_headers);
            route.header_rules.apply_to_response(resp.headers_mut());
            resp
        }
    }
}

/// The call to the backend (with the route's retries), inside its span when tracing is on.
async fn send(
    metrics: &Metrics,
    route: &Route,
    mut req: Request<ProxyBody>,
    replay: Option<BufferedBody>,
) -> Result<Response<ProxyBody>, UpstreamError> {
    let span = crate::otel::upstream(&route.backend.name, req.headers_mut());
    let wait = crate::upstream::deadline::upstream_wait(route.timeout, req.headers());
    let tries = super::retry::send(metrics, route, req, replay, wait);
    let result = if span.is_none() {
        tries.await
    } else {
        crate::otel::traced(span.clone(), tries).await
    };
    crate::otel::upstream_status(&span, result.as_ref().ok().map(|r| r.status().as_u16()));
    result
}

/// The backend's response as the client gets it.
fn relay(resp: Response<ProxyBody>, response_headers: &ResponseHeaders) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers);
    apply_response_headers(&mut parts.headers, response_headers);
    Response::from_parts(parts, body)
}

/// What the client gets when the backend could not answer (Envoy's statuses and texts).
fn upstream_failed(route: &Route, e: &UpstreamError) -> Response<ProxyBody> {
    tracing::warn!(route = %redact::escape(&route.name), backend = %redact::escape(&route.backend.name), reason = e.reason(), error = %redact::escape(&e.to_string()), "upstream failed");
    // The text names the failure (a TLS reason is rustls's), so it is not a static string.
    let text = bytes::Bytes::from(e.body());
    let mut resp = Response::new(body::full(text.clone()));
    *resp.status_mut() = e.status();
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    mark_local(&mut resp, text);
    resp
}

/// The request as sent upstream: the canonical head (its `host` header already the canonical
/// authority), aimed at the backend. The path is the one checked, reused as parsed; only a
/// prefix rewrite builds a new one.
pub(super) fn upstream_request(
    route: &Route,
    mut parts: Parts,
    body: BufferedBody,
) -> Result<Request<ProxyBody>, StatusCode> {
    // After the check: what the route sets wins over anything the client sent.
    route.header_rules.apply_to_request(&mut parts);
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    if let (Some(rewrite), PathMatch::Prefix(prefix)) = (&route.rewrite_prefix, &route.matcher.path)
    {
        let original = uri
            .path_and_query
            .as_ref()
            .map_or("/", PathAndQuery::as_str);
        let path = rewrite_prefix(original, prefix, rewrite);
        uri.path_and_query = Some(path.parse().map_err(|_| StatusCode::BAD_REQUEST)?);
    }
    if uri.path_and_query.is_none() {
        uri.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    // The endpoint that sends the try sets its own scheme and authority; these name the
    // backend's first endpoint meanwhile.
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = route.backend.authority().cloned();
    parts.uri = Uri::from_parts(uri).map_err(|_| StatusCode::BAD_REQUEST)?;
    parts.version = Version::HTTP_11;
    Ok(Request::from_parts(parts, body.into_body()))
}

fn rewrite_prefix(path_and_query: &str, prefix: &str, rewrite: &str) -> String {
    let rest = path_and_query.get(prefix.len()..).unwrap_or_default();
    let mut out = rewrite.to_owned();
    if out.ends_with('/') && rest.starts_with('/') {
        out.pop();
    }
    out.push_str(rest);
    if out.is_empty() || out.starts_with('?') {
        out.insert(0, '/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn prefix_rewrite() {
        assert_eq!(rewrite_prefix("/openai/v1?x=1", "/openai", "/"), "/v1?x=1");
        assert_eq!(rewrite_prefix("/openai", "/openai", "/v1/chat"), "/v1/chat");
        assert_eq!(rewrite_prefix("/openai?q", "/openai", ""), "/?q");
        assert_eq!(rewrite_prefix("/a/b", "/a", "/x/"), "/x/b");
    }

    #[test]
    fn the_upstream_request_is_http_1_1_to_the_backend_with_the_prefix_rewritten() {
        let config = Config::from_toml(
            r#"
[[listeners]]
name = "l"
address = "127.0.0.1:0"

[[backends]]
name = "openai"
url = "http://127.0.0.1:9100"

[[routes]]
name = "openai"
path = { prefix = "/openai" }
rewrite_prefix = "/"
backend = "openai"
"#,
            "test.toml",
        )
        .expect("valid config");
        let route = config.routes.iter().next().expect("one route");
        let (parts, ()) = Request::builder()
            .uri("/openai/v1/chat?stream=true")
            .version(Version::HTTP_2)
            .body(())
            .expect("request")
            .into_parts();
        let req =
            upstream_request(route, parts, BufferedBody::new(body::empty())).expect("a valid path");
        assert_eq!(req.uri(), "http://127.0.0.1:9100/v1/chat?stream=true");
        assert_eq!(req.version(), Version::HTTP_11);
    }

    #[test]
    fn a_backend_failure_is_answered_as_envoy_does() {
        let config = Config::from_toml(
            "[[listeners]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\n[[backends]]\nname = \"b\"\nurl = \"http://127.0.0.1:9\"\n[[routes]]\nname = \"r\"\nbackend = \"b\"\n",
            "test.toml",
        )
        .expect("valid config");
        let route = config.routes.iter().next().expect("one route");
        let refused = upstream_failed(route, &UpstreamError::Connect("refused".into()));
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        let late = upstream_failed(route, &UpstreamError::Timeout);
        assert_eq!(late.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(late.headers()[http::header::CONTENT_TYPE], "text/plain");
    }
}
