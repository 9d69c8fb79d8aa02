//! The reverse proxy itself: routing precedence, rewrites, forwarding headers, upstream errors,
//! pooling, streaming, HTTP/2, and bad input.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use support::*;

fn listener_and_backends(backends: &[(&str, SocketAddr)]) -> String {
    let mut out = String::from("[[listeners]]\nname = \"gw\"\naddress = \"127.0.0.1:0\"\n");
    for (name, addr) in backends {
        out.push_str(&format!(
            "\n[[backends]]\nname = \"{name}\"\nurl = \"http://{addr}\"\n"
        ));
    }
    out
}

#[tokio::test]
async fn routes_follow_the_documented_precedence() {
    let mut names = Vec::new();
    for name in ["a", "b", "c", "d", "e", "f", "g"] {
        names.push((name, start_backend().await));
    }
    let addr_of = |n: &str| names.iter().find(|(x, _)| *x == n).unwrap().1.to_string();
    let mut config = listener_and_backends(&names);
    config.push_str(
        r#"
[[routes]]
name = "regex"
path = { regex = "/api/v[0-9]+/.*" }
backend = "c"

[[routes]]
name = "prefix"
path = { prefix = "/api" }
backend = "a"

[[routes]]
name = "exact"
path = { exact = "/api/special" }
backend = "b"

[[routes]]
name = "longer-prefix"
path = { prefix = "/api/longer" }
backend = "g"

[[routes]]
name = "delete"
path = { prefix = "/api" }
methods = ["DELETE"]
backend = "d"

[[routes]]
name = "tenant"
path = { prefix = "/api" }
headers = [{ name = "X-Tenant", value = "blue" }]
backend = "e"

[[routes]]
name = "host"
hosts = ["special.example.com"]
backend = "f"

[[routes]]
name = "letters"
path = { regex = "/re/[a-z]+" }
backend = "c"
"#,
    );
    let gw = start_gateway(&config).await;
    let served_by = |resp: &Reply200| {
        resp.json()["request"]["served_by"]
            .as_str()
            .map(str::to_owned)
    };
    let route = |method: &'static str,
                 path: &'static str,
                 headers: Vec<(&'static str, &'static str)>| async move {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{gw}{path}"));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        send(req.body(Full::new(Bytes::new())).unwrap()).await
    };

    // (method, path, headers, the backend that must serve it or None for 404)
    type Case = (
        &'static str,
        &'static str,
        Vec<(&'static str, &'static str)>,
        Option<&'static str>,
    );
    let cases: Vec<Case> = vec![
        ("GET", "/api/x", vec![], Some("a")),
        ("GET", "/api", vec![], Some("a")),
        ("GET", "/api/special", vec![], Some("b")),
        ("GET", "/api/special/x", vec![], Some("a")),
        ("GET", "/api/longer/x", vec![], Some("g")),
        ("GET", "/api/v1/x", vec![], Some("a")),
        ("DELETE", "/api/x", vec![], Some("d")),
        ("GET", "/api/x", vec![("x-tenant", "blue")], Some("e")),
        ("DELETE", "/api/x", vec![("x-tenant", "blue")], Some("d")),
        ("GET", "/api/x", vec![("x-tenant", "red")], Some("a")),
        ("GET", "/re/abc", vec![], Some("c")),
        ("GET", "/re/ABC", vec![], None),
        (
            "GET",
            "/api/x",
            vec![("host", "special.example.com:8080")],
            Some("f"),
        ),
        ("GET", "/apix", vec![], None),
        ("GET", "/nothing", vec![], None),
    ];
    for (method, path, headers, want) in cases {
        let resp = route(method, path, headers.clone()).await;
        match want {
            Some(backend) => {
                assert_eq!(resp.status, StatusCode::OK, "{method} {path} {headers:?}");
                assert_eq!(
                    served_by(&resp),
                    Some(addr_of(backend)),
                    "{method} {path} {headers:?}"
                );
            }
            None => {
                assert_eq!(
                    resp.status,
                    StatusCode::NOT_FOUND,
                    "{method} {path} {headers:?}"
                );
                assert!(resp.body.is_empty());
            }
        }
    }
}

#[tokio::test]
async fn prefix_rewrite_replaces_the_matched_prefix() {
    let backend = start_backend().await;
    let mut config = listener_and_backends(&[("b", backend)]);
    config.push_str(
        r#"
[[routes]]
name = "openai"
path = { prefix = "/openai" }
rewrite_prefix = "/v1/chat/completions"
backend = "b"
"#,
    );
    let gw = start_gateway(&config).await;
    let resp = send(get(gw, "/openai?x=1", &[])).await;
    assert_eq!(resp.json()["request"]["path"], "/v1/chat/completions");
    assert_eq!(resp.json()["request"]["query"], "x=1");
    let resp = send(get(gw, "/openai/extra", &[])).await;
    assert_eq!(resp.json()["request"]["path"], "/v1/chat/completions/extra");
}

#[tokio::test]
async fn forwarding_headers_are_set_and_hop_by_hop_headers_dropped() {
    let backend = start_backend().await;
    let authz = MockAuthz::istio().await;
    let gw = start_gateway(&seed_config(backend, authz.addr, "")).await;
    let resp = send(get(
        gw,
        "/openai",
        &[
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic x"),
            ("x-forwarded-for", "10.1.2.3"),
            ("x-forwarded-proto", "https"),
            ("x-end-to-end", "kept"),
        ],
    ))
    .await;
    assert_eq!(resp.status, StatusCode::OK);
    for hop in ["x-hop", "keep-alive", "proxy-authorization", "connection"] {
        assert_eq!(resp.backend_saw(hop), None, "{hop} must not be forwarded");
    }
    assert_eq!(resp.backend_saw("x-end-to-end").as_deref(), Some("kept"));
    // No trusted hops (the default): the client's own forwarding headers are replaced.
    assert_eq!(
        resp.backend_saw("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        resp.backend_saw("x-forwarded-proto").as_deref(),
        Some("http")
    );
    assert_eq!(resp.backend_saw("host"), Some(gw.to_string()));
}

#[tokio::test]
async fn with_trusted_hops_the_forwarded_chain_is_kept_and_names_the_checked_client() {
    let backend = start_backend().await;
    let authz = MockAuthz::istio().await;
    let config = seed_config(backend, authz.addr, GATEWAY_POLICY).replacen(
        "[[listeners]]\n",
        "[[listeners]]\nxff_num_trusted_hops = 1\n",
        1,
    );
    assert!(config.contains("xff_num_trusted_hops = 1"), "{config}");
    let gw = start_gateway(&config).await;
    let resp = send(get(
        gw,
        "/openai",
        &[
            ("x-ext-authz", "allow"),
            ("x-forwarded-for", "203.0.113.9, 10.1.2.3"),
            ("x-forwarded-proto", "https"),
        ],
    ))
    .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(
        resp.backend_saw("x-forwarded-for").as_deref(),
        Some("203.0.113.9, 10.1.2.3, 127.0.0.1")
    );
    assert_eq!(
        resp.backend_saw("x-forwarded-proto").as_deref(),
        Some("https")
    );
    let source = authz.requests()[0]
        .attributes
        .as_ref()
        .unwrap()
        .source
        .clone()
        .unwrap();
    // The check names the address the trusted hop vouched for, as Envoy's downstream address.
    use extauthz_proto::v3::{Address, SocketAddress, address, socket_address::PortSpecifier};
    assert_eq!(
        source.address,
        Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "10.1.2.3".into(),
                port_specifier: Some(PortSpecifier::PortValue(0)),
                ..SocketAddress::default()
            })),
        })
    );
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_dropped() {
    let backend = raw_backend(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: x-hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-Kept: 1\r\n\r\nok",
    )
    .await;
    let mut config = listener_and_backends(&[("b", backend)]);
    config.push_str("[[routes]]\nname = \"r\"\nbackend = \"b\"\n");
    let gw = start_gateway(&config).await;
    let resp = send(get(gw, "/", &[])).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.text(), "ok");
    assert_eq!(resp.headers["x-kept"], "1");
    assert!(!resp.headers.contains_key("x-hop"));
    assert!(!resp.headers.contains_key("keep-alive"));
}

async fn single_route_gateway(backend: SocketAddr, route_extra: &str) -> SocketAddr {
    let mut config = listener_and_backends(&[("b", backend)]);
    config.push_str(&format!(
        "[[routes]]\nname = \"r\"\nbackend = \"b\"\n{route_extra}\n"
    ));
    start_gateway(&config).await
}

#[tokio::test]
async fn an_unreachable_backend_is_503() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gw = single_route_gateway(closed, "").await;
    let resp = send(get(gw, "/", &[])).await;
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        resp.text(),
        "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
    );
}

#[tokio::test]
async fn a_garbage_answer_is_502() {
    let backend = raw_backend(b"this is not http\r\n\r\n").await;
    let gw = single_route_gateway(backend, "").await;
    let resp = send(get(gw, "/", &[])).await;
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn a_slow_backend_is_504_after_the_route_timeout() {
    let backend = start_backend().await;
    let gw = single_route_gateway(backend, "timeout = \"200ms\"").await;
    let began = Instant::now();
    let resp = send(get(gw, "/?delay_ms=2000", &[])).await;
    assert_eq!(resp.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(resp.text(), "upstream request timeout");
    assert!(began.elapsed() < Duration::from_millis(1500));
}

#[tokio::test]
async fn upstream_connections_are_pooled() {
    let backend = start_backend().await;
    let (relay, connections) = counting_relay(backend).await;
    let gw = single_route_gateway(relay, "").await;
    for _ in 0..10 {
        assert_eq!(send(get(gw, "/", &[])).await.status, StatusCode::OK);
    }
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn server_sent_events_arrive_incrementally() {
    let backend = start_backend().await;
    let authz = MockAuthz::istio().await;
    let gw = start_gateway(&seed_config(backend, authz.addr, GATEWAY_POLICY)).await;
    let req = Request::post(format!("http://{gw}/openai"))
        .header("content-type", "application/json")
        .header("x-ext-authz", "allow")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"gpt-3.5-turbo","stream":true,"messages":[]}"#,
        )))
        .unwrap();
    let began = Instant::now();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut arrivals = Vec::new();
    let mut text = String::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            arrivals.push(began.elapsed());
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(
        text.contains("x-ext-authz-check-result"),
        "the backend saw the authz header"
    );
    // Events are sent 100 ms apart: the first must arrive long before the last.
    assert!(arrivals.len() >= 5, "{arrivals:?}");
    let first = arrivals[0];
    let last = *arrivals.last().unwrap();
    assert!(
        first < Duration::from_millis(400),
        "first event took {first:?}"
    );
    assert!(last - first >= Duration::from_millis(700), "{arrivals:?}");
}

#[tokio::test]
async fn h2c_clients_are_served() {
    let backend = start_backend().await;
    let authz = MockAuthz::istio().await;
    let gw = start_gateway(&seed_config(backend, authz.addr, GATEWAY_POLICY)).await;
    let h2 = h2_client();
    let resp = read(h2.request(seed_post(gw, "/openai", &[])).await.unwrap()).await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert_eq!(resp.text(), DENY_BODY);
    let resp = read(
        h2.request(seed_post(gw, "/openai", &[("x-ext-authz", "allow")]))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(
        resp.json()["request"]["version"],
        "HTTP/1.1",
        "upstream is HTTP/1.1"
    );
    assert_eq!(resp.backend_saw("host"), Some(gw.to_string()));
}

#[tokio::test]
async fn content_length_with_transfer_encoding_cannot_smuggle_a_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = start_backend().await;
    let gw = single_route_gateway(backend, "").await;
    let mut s = tokio::net::TcpStream::connect(gw).await.unwrap();
    // Content-Length says the body is 30 bytes (swallowing the second request); chunked framing
    // says it is empty and a second request follows. Chunked wins and the connection closes
    // after the first response, so the second request is never served.
    s.write_all(
        b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("the gateway closes the connection")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert!(text.contains(r#""path":"/first""#), "{text}");
    assert!(!text.contains("content-length\":\"30"), "{text}");
    assert!(!text.contains("/smuggled"), "{text}");
}

#[tokio::test]
async fn differing_content_lengths_are_400() {
    let backend = start_backend().await;
    let gw = single_route_gateway(backend, "").await;
    let (status, text) = raw_exchange(
        gw,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    )
    .await;
    assert_eq!(status, 400, "{text}");
}

#[tokio::test]
async fn a_malformed_request_line_is_400() {
    let backend = start_backend().await;
    let gw = single_route_gateway(backend, "").await;
    let (status, text) = raw_exchange(gw, "THIS IS NOT HTTP\r\n\r\n").await;
    assert_eq!(status, 400, "{text}");
}

#[tokio::test]
async fn oversized_headers_are_431() {
    let backend = start_backend().await;
    let gw = single_route_gateway(backend, "").await;
    let big = "a".repeat(70 * 1024);
    let (status, text) = raw_exchange(
        gw,
        &format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 431, "{}", &text[..text.len().min(200)]);

    // Under the limit is fine.
    let ok = "a".repeat(30 * 1024);
    let resp = send(get(gw, "/", &[("x-big", ok.as_str())])).await;
    assert_eq!(resp.status, StatusCode::OK);
}

#[tokio::test]
async fn the_header_limit_is_configurable() {
    let backend = start_backend().await;
    let config = format!(
        "[[listeners]]\nname = \"gw\"\naddress = \"127.0.0.1:0\"\nmax_request_headers_kb = 16\n\
         [[backends]]\nname = \"b\"\nurl = \"http://{backend}\"\n[[routes]]\nname = \"r\"\nbackend = \"b\"\n"
    );
    let gw = start_gateway(&config).await;
    let big = "a".repeat(20 * 1024);
    let (status, _) = raw_exchange(
        gw,
        &format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 431);
}
