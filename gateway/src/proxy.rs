//! One request through the gateway: the canonical request (computed once, see
//! [`crate::request`]), route, policies (gateway level first, then route level), upstream,
//! response — and the access-log line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};

use crate::access_log;
use crate::body::{self, BufferedBody, ProxyBody};
use crate::config::Config;
use crate::ext_authz::{
    AppendAction, CheckBody, CheckInput, ExtAuthz, FAILURE_MODE_ALLOWED_HEADER, Resolution,
};
use crate::headers;
use crate::metrics::{RequestLabels, RouteLabel};
use crate::redact;
use crate::request::{self, CanonicalRequest};
use crate::route::{PathMatch, Route};
use crate::state::Shared;
use crate::tls::PeerIdentity;

/// What the proxy knows about the connection a request arrived on.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The config snapshot in force and the metrics.
    pub shared: Arc<Shared>,
    /// Which of the config's listeners accepted the connection (reloads keep the listener list).
    pub listener: usize,
    /// The client's address.
    pub peer: SocketAddr,
    /// Our address the client connected to.
    pub local: SocketAddr,
    /// The TLS client's identity, on TLS listeners.
    pub tls: Option<Arc<PeerIdentity>>,
}

/// The authorization part of an access-log line.
#[derive(Debug, Default)]
struct AuthzLog {
    outcome: &'static str,
    policy: Option<Arc<str>>,
    latency: Duration,
    metadata: Vec<String>,
}

/// The route label of a request no route served.
static NO_ROUTE: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from("-"));

/// Serves one request; never fails (errors become responses).
pub async fn serve<B>(conn: Connection, req: Request<B>) -> Response<ProxyBody>
where
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<body::BoxError>,
{
    // One snapshot per request: a reload in the middle does not change what this request sees.
    let config = conn.shared.config.load_full();
    let started = Instant::now();
    let time = SystemTime::now();
    let (mut parts, body) = req.into_parts();
    let method = parts.method.clone();
    // The target as the client spelled it: the log shows what was sent, not only what it became.
    // (A `Uri` clone shares its bytes.)
    let sent = parts.uri.clone();
    let scheme = if conn.tls.is_some() { "https" } else { "http" };
    // Before anything reads the request: from here on `parts` is the canonical request, the one
    // routing, every check and the upstream see.
    let canonical = request::canonicalise(
        &mut parts,
        conn.peer,
        scheme,
        &config.listeners[conn.listener].canonical,
    );
    let request_id = ensure_request_id(&mut parts);
    let span = match &canonical {
        Ok(c) => crate::otel::request(&parts.headers, &method, &c.host, &c.path),
        Err(_) => crate::otel::request(&parts.headers, &method, "-", "-"),
    };
    let mut authz = AuthzLog {
        outcome: "none",
        ..AuthzLog::default()
    };
    let mut upstream_latency = None;
    let mut route_name: Option<Arc<str>> = None;

    let response = match &canonical {
        // No canonical form: 400, and no check is ever sent for it.
        Err(rejected) => local_reply(StatusCode::BAD_REQUEST, rejected.reason()),
        Ok(canonical) => {
            // Boxed: the handle future (checks, upstream call) is several KiB, and kept inline it
            // made every future that holds `serve` that much larger, moved by memcpy at each poll
            // boundary that moves it (spawn, pinning in hyper's connection task).
            let handled = Box::pin(handle(
                &conn,
                &config,
                parts,
                canonical,
                BufferedBody::new(body::boxed(body)),
                HandleState {
                    time,
                    scheme,
                    request_id: &request_id,
                    authz: &mut authz,
                    upstream_latency: &mut upstream_latency,
                    route_name: &mut route_name,
                },
            ));
            if span.is_none() {
                handled.await
            } else {
                crate::otel::traced(span.clone(), handled).await
            }
        }
    };

    let route_label = route_name.unwrap_or_else(|| NO_ROUTE.clone());
    crate::otel::response(
        &span,
        &route_label,
        response.status().as_u16(),
        authz.outcome,
    );
    conn.shared
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route: route_label.clone(),
            status: response.status().as_u16(),
        })
        .inc();
    // Every value that came from the client, the config or an authorization server is escaped
    // (no forged log lines) and query values are redacted (credentials): see `access_log`.
    if access_log::enabled() {
        access_log::write(&access_log::Line {
            method: method.as_str(),
            path_and_query: sent.path_and_query().map_or("/", |pq| pq.as_str()),
            host: canonical.as_ref().map_or("-", |c| c.host.as_str()),
            canonical_path: canonical.as_ref().ok().map(|c| c.path.as_str()),
            rejected: canonical
                .as_ref()
                .err()
                .map(super::request::Rejected::reason),
            route: &route_label,
            status: response.status().as_u16(),
            authz: authz.outcome,
            authz_policy: authz.policy.as_deref().unwrap_or_default(),
            authz_ms: authz.latency.as_secs_f64() * 1000.0,
            upstream_ms: upstream_latency.map(|d: Duration| d.as_secs_f64() * 1000.0),
            dynamic_metadata: &authz.metadata,
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
            request_id: &request_id,
            peer: conn.peer,
            client: canonical.as_ref().map_or(conn.peer, |c| c.client),
        });
    }
    response
}

struct HandleState<'a> {
    time: SystemTime,
    scheme: &'static str,
    request_id: &'a str,
    authz: &'a mut AuthzLog,
    upstream_latency: &'a mut Option<Duration>,
    route_name: &'a mut Option<Arc<str>>,
}

async fn handle(
    conn: &Connection,
    config: &Config,
    mut parts: Parts,
    canonical: &CanonicalRequest,
    mut body: BufferedBody,
    state: HandleState<'_>,
) -> Response<ProxyBody> {
    // Framing attacks never get here: hyper answers 400 to differing Content-Lengths and to a
    // non-chunked Transfer-Encoding, and when both Content-Length and Transfer-Encoding are
    // sent it drops Content-Length (chunked framing wins) and closes the connection after the
    // response (RFC 9112 §6.3), so nothing can be smuggled behind the body.
    let metrics = &conn.shared.metrics;
    let listener = &config.listeners[conn.listener];
    let scheme = state.scheme;
    let Some(route) = config
        .routes
        .find(
            &canonical.host,
            &parts.method,
            &canonical.path,
            &parts.headers,
        )
        .cloned()
    else {
        return local_reply(StatusCode::NOT_FOUND, "");
    };
    *state.route_name = Some(route.label.clone());

    // Both levels must allow, gateway first; a route can switch the gateway level off.
    let gateway_level: &[Arc<ExtAuthz>] = if route.gateway_policies_disabled {
        for policy in &listener.policies {
            metrics
                .ext_authz_disabled
                .get_or_create(&policy.label)
                .inc();
        }
        &[]
    } else {
        &listener.policies
    };
    let mut response_headers: Vec<(HeaderName, HeaderValue, AppendAction)> = Vec::new();
    for policy in gateway_level.iter().chain(route.policies.iter()) {
        state.authz.policy = Some(policy.label.policy.clone());
        let check_body = match policy.with_request_body {
            None => None,
            Some(settings) => {
                match read_body_for_check(&mut body, &parts, settings, policy.timeout).await {
                    Ok(b) => Some(b),
                    Err(resp) => {
                        state.authz.outcome = "body_rejected";
                        return resp;
                    }
                }
            }
        };
        let began = Instant::now();
        let resolution = policy
            .check(CheckInput {
                parts: &parts,
                peer: canonical.client,
                local: conn.local,
                request_id: state.request_id,
                time: state.time,
                context_extensions: [&policy.context_extensions, &route.context_extensions],
                body: check_body,
                scheme,
                tls: conn.tls.as_deref(),
            })
            .await;
        let took = began.elapsed();
        state.authz.latency += took;
        let label = &policy.label;
        metrics
            .ext_authz_latency
            .get_or_create(label)
            .observe(took.as_secs_f64());
        let counter = match &resolution {
            Resolution::Allow(_) => &metrics.ext_authz_ok,
            Resolution::Deny(_) => &metrics.ext_authz_denied,
            Resolution::FailureModeAllow { .. } => {
                metrics
                    .ext_authz_failure_mode_allowed
                    .get_or_create(label)
                    .inc();
                &metrics.ext_authz_error
            }
            Resolution::Error { .. } => &metrics.ext_authz_error,
        };
        counter.get_or_create(label).inc();
        match resolution {
            Resolution::Allow(mut allowed) => {
                state.authz.outcome = "allowed";
                if let Some(m) = allowed.dynamic_metadata.take() {
                    state.authz.metadata.push(m);
                }
                allowed.apply_to_request(&mut parts);
                response_headers.extend(allowed.take_response_headers());
            }
            Resolution::FailureModeAllow { reason } => {
                state.authz.outcome = "failure_mode_allowed";
                tracing::warn!(policy = %redact::escape(&policy.policy), reason = %redact::escape(&reason), "ext_authz check failed; failure_mode_allow lets the request through");
                if policy.failure_mode_allow_header_add {
                    parts.headers.insert(
                        HeaderName::from_static(FAILURE_MODE_ALLOWED_HEADER),
                        HeaderValue::from_static("true"),
                    );
                }
            }
            Resolution::Deny(denied) => {
                state.authz.outcome = "denied";
                return denied.into_response(StatusCode::FORBIDDEN);
            }
            Resolution::Error { reason, response } => {
                state.authz.outcome = "error";
                tracing::warn!(policy = %redact::escape(&policy.policy), reason = %redact::escape(&reason), "ext_authz check failed");
                return response.into_response(policy.status_on_error);
            }
        }
    }

    let mut upstream_req = match upstream_request(&route, parts, body) {
        Ok(r) => r,
        Err(status) => return local_reply(status, "invalid path"),
    };
    let span = crate::otel::upstream(&route.backend.name, upstream_req.headers_mut());
    let began = Instant::now();
    let result = if span.is_none() {
        route.backend.send(upstream_req, route.timeout).await
    } else {
        crate::otel::traced(
            span.clone(),
            route.backend.send(upstream_req, route.timeout),
        )
        .await
    };
    crate::otel::upstream_status(&span, result.as_ref().ok().map(|r| r.status().as_u16()));
    let took = began.elapsed();
    *state.upstream_latency = Some(took);
    metrics
        .upstream_latency
        .get_or_create(&RouteLabel {
            route: route.label.clone(),
        })
        .observe(took.as_secs_f64());
    match result {
        Err(e) => {
            tracing::warn!(route = %redact::escape(&route.name), backend = %redact::escape(&route.backend.name), error = %redact::escape(&e.to_string()), "upstream failed");
            let text = match e.status() {
                StatusCode::GATEWAY_TIMEOUT => "upstream request timeout",
                StatusCode::SERVICE_UNAVAILABLE => "upstream connect error",
                _ => "upstream reset or bad response",
            };
            local_reply(e.status(), text)
        }
        Ok(resp) => {
            let (mut parts, incoming) = resp.into_parts();
            headers::remove_hop_by_hop(&mut parts.headers);
            crate::ext_authz::mutation::apply_response_headers(
                &mut parts.headers,
                &response_headers,
            );
            Response::from_parts(parts, body::boxed(incoming))
        }
    }
}

/// Buffers what a policy's `with_request_body` asks for; 413 when the body is over the limit
/// and partial messages are not allowed (decided before any check is sent).
///
/// A client that stalls cannot hold the request here for longer than the policy's `timeout`:
/// then the bytes so far go in the check, marked partial, when partial messages are allowed;
/// otherwise the client gets 408, as Envoy's connection manager answers a request whose body
/// does not arrive in time (its ext_authz filter has no timer of its own while buffering).
async fn read_body_for_check(
    body: &mut BufferedBody,
    parts: &Parts,
    settings: crate::ext_authz::WithRequestBody,
    timeout: Duration,
) -> Result<CheckBody, Response<ProxyBody>> {
    let max = settings.max_request_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || local_reply(StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large");
    if !settings.allow_partial_message && declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let want = if settings.allow_partial_message {
        max
    } else {
        max + 1
    };
    // `fill_to` keeps every frame it finished reading, so stopping it at the deadline loses
    // nothing: the rest still streams upstream after an allow.
    match tokio::time::timeout(timeout, body.fill_to(want)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "client body failed while buffering for ext_authz");
            return Err(local_reply(
                StatusCode::BAD_REQUEST,
                "request body read error",
            ));
        }
        Err(_) if settings.allow_partial_message => {
            tracing::debug!(
                buffered = body.len(),
                "client body slow while buffering for ext_authz; checking the partial body"
            );
        }
        Err(_) => {
            tracing::debug!(
                buffered = body.len(),
                "client body slow while buffering for ext_authz"
            );
            return Err(local_reply(StatusCode::REQUEST_TIMEOUT, "request timeout"));
        }
    }
    let partial = !body.is_complete() || body.len() > max;
    if partial && !settings.allow_partial_message {
        return Err(too_large());
    }
    Ok(CheckBody {
        bytes: body.prefix(max),
        partial,
        pack_as_bytes: settings.pack_as_bytes,
    })
}

/// The request as sent upstream: the canonical head (its `host` header already the canonical
/// authority), aimed at the backend. The path is the one checked, reused as parsed; only a
/// prefix rewrite builds a new one.
fn upstream_request(
    route: &Route,
    mut parts: Parts,
    body: BufferedBody,
) -> Result<Request<ProxyBody>, StatusCode> {
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    if let (Some(rewrite), PathMatch::Prefix(prefix)) = (&route.rewrite_prefix, &route.matcher.path)
    {
        let original = uri.path_and_query.as_ref().map_or("/", |pq| pq.as_str());
        let path = rewrite_prefix(original, prefix, rewrite);
        uri.path_and_query = Some(path.parse().map_err(|_| StatusCode::BAD_REQUEST)?);
    }
    if uri.path_and_query.is_none() {
        uri.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(route.backend.authority.clone());
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

/// A response the gateway makes itself, `text/plain` when it has a body.
pub fn local_reply(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = status;
    if !text.is_empty() {
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    resp
}

fn ensure_request_id(parts: &mut Parts) -> String {
    if let Some(id) = parts
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
    {
        return id.to_owned();
    }
    let id = new_request_id();
    if let Ok(v) = HeaderValue::from_str(&id) {
        parts
            .headers
            .insert(HeaderName::from_static("x-request-id"), v);
    }
    id
}

/// A random UUID-shaped id (v4 layout); randomness from std's per-process SipHash keys mixed
/// with a counter and the clock — unique, not secret.
fn new_request_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut words = [0u64; 2];
    for (i, w) in words.iter_mut().enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(n);
        h.write_u64(nanos);
        h.write_usize(i);
        *w = h.finish();
    }
    let b = (u128::from(words[0]) << 64 | u128::from(words[1])) & !(0xF000u128 << 64)
        | (0x4000u128 << 64);
    let b = b & !(0xC000u128 << 48) | (0x8000u128 << 48);
    // 8-4-4-4-12 lower-case hex digits, written directly (`format!` with a width and the
    // joins cost ~5k instructions per request).
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(36);
    for i in 0..32 {
        if matches!(i, 8 | 12 | 16 | 20) {
            out.push('-');
        }
        let nibble = (b >> (124 - 4 * i)) & 0xF;
        out.push(char::from(HEX[nibble as usize]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_rewrite() {
        assert_eq!(rewrite_prefix("/openai/v1?x=1", "/openai", "/"), "/v1?x=1");
        assert_eq!(rewrite_prefix("/openai", "/openai", "/v1/chat"), "/v1/chat");
        assert_eq!(rewrite_prefix("/openai?q", "/openai", ""), "/?q");
        assert_eq!(rewrite_prefix("/a/b", "/a", "/x/"), "/x/b");
    }

    #[test]
    fn request_ids_look_like_uuids_and_differ() {
        let a = new_request_id();
        let b = new_request_id();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
        for (i, c) in a.char_indices() {
            if matches!(i, 8 | 13 | 18 | 23) {
                assert_eq!(c, '-', "{a}");
            } else {
                assert!(c.is_ascii_hexdigit() && !c.is_ascii_uppercase(), "{a}");
            }
        }
        assert_ne!(a, b);
    }
}
