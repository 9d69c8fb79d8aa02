//! The client scenarios of Envoy's ext_authz integration tests that apply to a gateway, over the
//! gRPC transport, against the in-process mock Authorization server: what the check carries
//! (attributes, body, headers, context extensions) and the connection it travels on. The
//! answers are in `ext_authz_grpc_answers.rs`, failures in `ext_authz_grpc_failures.rs`.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use extauthz_proto::v3::{address, socket_address};
use http::{Request, StatusCode};
use http_body_util::Full;
use support::*;

#[tokio::test]
async fn check_request_is_filled_as_envoy_does() {
    let authz = MockAuthz::always(allow_all()).await;
    let gw = setup(&authz, "").await;
    let req = Request::post(format!("http://{gw}/openai/v1/chat?stream=false&x=1"))
        .header("Content-Type", "application/json")
        .header("X-Dup", "a")
        .header("x-dup", "b")
        .header("x-request-id", "req-123")
        .body(Full::new(Bytes::from_static(b"{\"a\":1}")))
        .unwrap();
    let resp = send(req).await;
    assert_eq!(resp.status, StatusCode::OK);

    let check = authz.requests().pop().unwrap();
    let attrs = check.attributes.as_ref().unwrap();
    let http = http_of(&check);
    assert_eq!(http.method, "POST");
    assert_eq!(http.path, "/openai/v1/chat?stream=false&x=1");
    assert_eq!(http.host, gw.to_string());
    assert_eq!(http.scheme, "http");
    assert_eq!(http.protocol, "HTTP/1.1");
    assert_eq!(http.size, 7);
    assert_eq!(http.id, "req-123");
    assert!(http.body.is_empty(), "no body unless with_request_body");
    let h = &http.headers;
    assert_eq!(h[":authority"], gw.to_string());
    assert_eq!(h[":method"], "POST");
    assert_eq!(h[":path"], "/openai/v1/chat?stream=false&x=1");
    assert_eq!(h[":scheme"], "http");
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["x-dup"], "a,b");
    assert_eq!(h["x-request-id"], "req-123");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert!(h.keys().all(|k| *k == k.to_lowercase()));
    assert!(!h.contains_key("x-envoy-auth-partial-body"));

    let time = attrs.request.as_ref().unwrap().time.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - time.seconds).abs() < 60);

    let socket = |peer: &Option<extauthz_proto::v3::attribute_context::Peer>| match peer
        .as_ref()
        .unwrap()
        .address
        .as_ref()
        .unwrap()
        .address
        .as_ref()
        .unwrap()
    {
        address::Address::SocketAddress(s) => {
            let Some(socket_address::PortSpecifier::PortValue(port)) = s.port_specifier else {
                panic!("no port")
            };
            (s.address.clone(), port)
        }
        other => panic!("unexpected address {other:?}"),
    };
    let (src_ip, src_port) = socket(&attrs.source);
    assert_eq!(src_ip, "127.0.0.1");
    assert_ne!(src_port, 0);
    assert_eq!(
        socket(&attrs.destination),
        ("127.0.0.1".to_owned(), u32::from(gw.port()))
    );
}

#[tokio::test]
async fn a_request_id_is_generated_when_absent() {
    let authz = MockAuthz::always(allow_all()).await;
    let gw = setup(&authz, "").await;
    let resp = send(get(gw, "/openai", &[])).await;
    let id = authz.last_http().id;
    assert_eq!(id.len(), 36);
    assert_eq!(authz.last_http().headers["x-request-id"], id);
    assert_eq!(resp.backend_saw("x-request-id"), Some(id));
}

#[tokio::test]
async fn http2_requests_report_http2() {
    let authz = MockAuthz::always(allow_all()).await;
    let gw = setup(&authz, "").await;
    let resp = read(
        h2_client()
            .request(seed_post(gw, "/openai", &[]))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK);
    let http = authz.last_http();
    assert_eq!(http.protocol, "HTTP/2");
    assert_eq!(http.headers[":authority"], gw.to_string());
    assert_eq!(http.headers[":path"], "/openai");
}

#[tokio::test]
async fn the_body_is_sent_whole_when_it_fits() {
    let authz = MockAuthz::always(allow_all()).await;
    let gw = setup(&authz, "with_request_body = { max_request_bytes = 4096 }").await;
    let resp = send(seed_post(gw, "/openai", &[])).await;
    assert_eq!(resp.status, StatusCode::OK);
    let http = authz.last_http();
    assert_eq!(http.body, SEED_BODY);
    assert!(http.raw_body.is_empty());
    assert_eq!(http.headers["x-envoy-auth-partial-body"], "false");
    assert_eq!(http.size, SEED_BODY.len() as i64);
    assert_eq!(resp.json()["request"]["body"], SEED_BODY);
}

#[tokio::test]
async fn a_long_body_is_truncated_and_marked_partial_when_allowed() {
    let authz = MockAuthz::always(allow_all()).await;
    let gw = setup(
        &authz,
        "with_request_body = { max_request_bytes = 10, allow_partial_message = true }",
    )
    .await;
    let resp = send(seed_post(gw, "/openai", &[])).await;
    assert_eq!(resp.status, StatusCode::OK);
    let http = authz.last_http();
    assert_eq!(http.body, &SEED_BODY[..10]);
    assert_eq!(http.headers["x-envoy-auth-partial-body"], "true");
    assert_eq!(
        resp.json()["request"]["body"],
        SEED_BODY,
        "upstream gets it all"
    );
}

#[tokio::test]
async fn a_long_body_without_partial_gets_413_and_no_check() {
    let authz = MockAuthz::always(allow_all()).await;
    let gw = setup(&authz, "with_request_body = { max_request_bytes = 10 }").await;
    let resp = send(seed_post(gw, "/openai", &[])).await;
    assert_eq!(resp.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(authz.count(), 0);
}

#[tokio::test]
async fn a_long_chunked_body_without_partial_gets_413() {
    let authz = MockAuthz::always(allow_all()).await;
    let gw = setup(&authz, "with_request_body = { max_request_bytes = 10 }").await;
    let (status, _) = raw_exchange(
        gw,
        "POST /openai HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n01234567\r\n8\r\n89abcdef\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(authz.count(), 0);
}

/// A POST announcing a 100-byte body of which only `hello` arrives; the connection stays open.
const STALLED_POST: &str = "POST /openai HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhello";

#[tokio::test]
async fn a_stalled_body_gets_408_within_the_policy_timeout_and_no_check() {
    let authz = MockAuthz::always(allow_all()).await;
    let gw = setup(
        &authz,
        "timeout = \"200ms\"\nfailure_mode_allow = true\nwith_request_body = { max_request_bytes = 1024 }",
    )
    .await;
    let began = Instant::now();
    let (status, text) = raw_exchange(gw, STALLED_POST).await;
    let took = began.elapsed();
    assert_eq!(status, 408, "{text}");
    assert!(text.ends_with("\r\n\r\nrequest timeout"), "{text}");
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(authz.count(), 0);
}

#[tokio::test]
async fn a_stalled_body_is_checked_partial_when_allowed() {
    let authz = MockAuthz::always(deny(7, 403, vec![], "seen")).await;
    let gw = setup(
        &authz,
        "timeout = \"200ms\"\nwith_request_body = { max_request_bytes = 1024, allow_partial_message = true }",
    )
    .await;
    let began = Instant::now();
    let (status, text) = raw_exchange(gw, STALLED_POST).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.ends_with("\r\n\r\nseen"), "{text}");
    assert!(began.elapsed() < Duration::from_secs(2));
    let http = authz.last_http();
    assert_eq!(http.body, "hello");
    assert_eq!(http.headers["x-envoy-auth-partial-body"], "true");
}

#[tokio::test]
async fn pack_as_bytes_sends_raw_body() {
    let authz = MockAuthz::always(allow_all()).await;
    let gw = setup(
        &authz,
        "with_request_body = { max_request_bytes = 4096, pack_as_bytes = true }",
    )
    .await;
    let body: &'static [u8] = b"\xff\x00binary";
    let req = Request::post(format!("http://{gw}/openai"))
        .body(Full::new(Bytes::from_static(body)))
        .unwrap();
    assert_eq!(send(req).await.status, StatusCode::OK);
    let http = authz.last_http();
    assert_eq!(http.raw_body, body);
    assert!(http.body.is_empty());
}

#[tokio::test]
async fn allowed_and_disallowed_headers_filter_the_check() {
    let authz = MockAuthz::always(allow_all()).await;
    let gw = setup(
        &authz,
        "allowed_headers = [\"x-keep\", \"x-drop\"]\ndisallowed_headers = [\"x-drop\"]",
    )
    .await;
    send(get(
        gw,
        "/openai",
        &[("x-keep", "1"), ("x-drop", "2"), ("x-other", "3")],
    ))
    .await;
    let h = authz.last_http().headers;
    let mut keys: Vec<&str> = h.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [":authority", ":method", ":path", ":scheme", "x-keep"]
    );
}

#[tokio::test]
async fn context_extensions_merge_gateway_then_route() {
    let authz = MockAuthz::always(allow_all()).await;
    let backend = start_backend().await;
    let extra = r#"
[[policies]]
name = "gw"
target_refs = [{ kind = "Gateway", name = "gw" }]
ext_auth = { backend = "authz", context_extensions = { a = "gateway", b = "gateway" } }

[[policies]]
name = "route-settings"
target_refs = [{ kind = "HTTPRoute", name = "openai" }]
ext_auth = { context_extensions = { b = "route", c = "route" } }
"#;
    let gw = start_gateway(&seed_config(backend, authz.addr, extra)).await;
    send(get(gw, "/openai", &[])).await;
    let check = authz.requests().pop().unwrap();
    let mut ctx: Vec<(String, String)> = check
        .attributes
        .unwrap()
        .context_extensions
        .into_iter()
        .collect();
    ctx.sort();
    let want = [("a", "gateway"), ("b", "route"), ("c", "route")];
    assert_eq!(ctx, want.map(|(k, v)| (k.to_owned(), v.to_owned())));
    assert_eq!(
        authz.count(),
        1,
        "a settings-only route policy adds no second check"
    );
}

#[tokio::test]
async fn one_multiplexed_connection_per_authz_backend() {
    let authz = MockAuthz::always(allow_all()).await;
    let gw = setup(&authz, "").await;
    for _ in 0..5 {
        assert_eq!(send(get(gw, "/openai", &[])).await.status, StatusCode::OK);
    }
    let concurrent: Vec<_> = (0..20)
        .map(|_| tokio::spawn(send(get(gw, "/openai", &[]))))
        .collect();
    for c in concurrent {
        assert_eq!(c.await.unwrap().status, StatusCode::OK);
    }
    assert_eq!(authz.count(), 25);
    assert_eq!(authz.connections(), 1);
}

#[tokio::test]
async fn checks_reconnect_after_the_authz_connection_is_cut() {
    let authz = MockAuthz::always(allow_all()).await;
    let relay = SeverableRelay::start(authz.addr).await;
    let backend = start_backend().await;
    let gw = start_gateway(&with_policy(backend, relay.addr, "grpc = {}")).await;
    let path = "/openai/v1/chat/completions";
    assert_eq!(send(get(gw, path, &[])).await.status, StatusCode::OK);
    assert_eq!(relay.count.load(std::sync::atomic::Ordering::SeqCst), 1);

    relay.sever();
    // The gateway learns of the close asynchronously; a check sent on the dead connection before
    // that fails closed (403). Every check after it goes over a new connection.
    let mut status = StatusCode::FORBIDDEN;
    for _ in 0..50 {
        status = send(get(gw, path, &[])).await.status;
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, StatusCode::OK);
    assert_eq!(relay.count.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(send(get(gw, path, &[])).await.status, StatusCode::OK);
}
