//! The client scenarios of Envoy's ext_authz integration tests that apply to a gateway, over the
//! gRPC transport, against the in-process mock Authorization server.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use extauthz_proto::v3::{OkHttpResponse, QueryParameter, address, socket_address};
use http::{Request, StatusCode};
use http_body_util::Full;
use support::*;

/// The seed setup with one gateway-level policy whose `[policies.ext_auth]` table has `settings`
/// added to `backend = "authz"`.
fn with_policy(backend: SocketAddr, authz: SocketAddr, settings: &str) -> String {
    seed_config(
        backend,
        authz,
        &format!(
            r#"
[[policies]]
name = "p"
target_refs = [{{ kind = "Gateway", name = "gw" }}]
[policies.ext_auth]
backend = "authz"
{settings}
"#
        ),
    )
}

async fn setup(authz: &MockAuthz, settings: &str) -> SocketAddr {
    let backend = start_backend().await;
    start_gateway(&with_policy(backend, authz.addr, settings)).await
}

fn allow_all() -> extauthz_proto::v3::CheckResponse {
    ok(OkHttpResponse::default())
}

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
async fn ok_response_appends_overwrites_and_removes_request_headers() {
    let authz = MockAuthz::always(ok(OkHttpResponse {
        headers: vec![
            header("x-append", "added", Some(true)),
            header("x-append-absent", "new", Some(true)),
            header("x-overwrite", "new", Some(false)),
            header("x-set-unset-append", "new", None),
        ]
        .into_iter()
        .chain([
            header_action("x-add-if-absent", "ignored", 1),
            header_action("x-fresh-if-absent", "fresh", 1),
            header_action("x-overwrite-if-exists", "replaced", 3),
            header_action("x-missing-if-exists", "never", 3),
        ])
        .collect(),
        headers_to_remove: vec![
            "x-remove".into(),
            "host".into(),
            ":path".into(),
            ":authority".into(),
        ],
        ..OkHttpResponse::default()
    }))
    .await;
    let gw = setup(&authz, "").await;
    let resp = send(get(
        gw,
        "/openai",
        &[
            ("x-append", "original"),
            ("x-overwrite", "old"),
            ("x-remove", "secret"),
            ("x-add-if-absent", "kept"),
            ("x-overwrite-if-exists", "old"),
        ],
    ))
    .await;
    assert_eq!(resp.status, StatusCode::OK);
    let saw = |h: &str| resp.backend_saw(h);
    assert_eq!(saw("x-append").as_deref(), Some("original,added"));
    assert_eq!(saw("x-append-absent").as_deref(), Some("new"));
    assert_eq!(saw("x-overwrite").as_deref(), Some("new"));
    assert_eq!(saw("x-set-unset-append").as_deref(), Some("new"));
    assert_eq!(saw("x-add-if-absent").as_deref(), Some("kept"));
    assert_eq!(saw("x-fresh-if-absent").as_deref(), Some("fresh"));
    assert_eq!(saw("x-overwrite-if-exists").as_deref(), Some("replaced"));
    assert_eq!(saw("x-missing-if-exists"), None);
    assert_eq!(saw("x-remove"), None);
    assert_eq!(saw("host"), Some(gw.to_string()), "host is not removable");
    assert_eq!(resp.json()["request"]["path"], "/openai");
}

#[tokio::test]
async fn pseudo_header_mutations_are_ignored_and_the_rest_applied() {
    let authz = MockAuthz::always(ok(OkHttpResponse {
        headers: vec![
            header(":path", "/admin", Some(false)),
            header(":authority", "evil.example", None),
            header("x-user", "alice", Some(false)),
        ],
        headers_to_remove: vec!["authorization".into(), ":method".into(), "host".into()],
        response_headers_to_add: vec![header(":status", "500", None), header("x-note", "ok", None)],
        ..OkHttpResponse::default()
    }))
    .await;
    let gw = setup(
        &authz,
        "failure_mode_allow = true\nfailure_mode_allow_header_add = true",
    )
    .await;
    let resp = send(get(gw, "/openai", &[("authorization", "Bearer secret")])).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.json()["request"]["path"], "/openai");
    assert_eq!(resp.json()["request"]["method"], "GET");
    assert_eq!(resp.backend_saw("x-user").as_deref(), Some("alice"));
    assert_eq!(resp.backend_saw("authorization"), None);
    assert_eq!(resp.backend_saw("host"), Some(gw.to_string()));
    assert_eq!(resp.backend_saw("x-envoy-auth-failure-mode-allowed"), None);
    assert_eq!(resp.headers["x-note"], "ok");
}

#[tokio::test]
async fn an_invalid_mutation_in_an_ok_response_is_status_on_error_even_with_failure_mode_allow() {
    let invalid = [
        OkHttpResponse {
            headers: vec![header("bad name", "v", None)],
            ..OkHttpResponse::default()
        },
        OkHttpResponse {
            headers: vec![header("x-user", "a\nb", None)],
            ..OkHttpResponse::default()
        },
        OkHttpResponse {
            headers: vec![extauthz_proto::v3::HeaderValueOption::default()],
            ..OkHttpResponse::default()
        },
        OkHttpResponse {
            headers_to_remove: vec!["bad name".into()],
            ..OkHttpResponse::default()
        },
        OkHttpResponse {
            response_headers_to_add: vec![header("x-note", "a\0b", None)],
            ..OkHttpResponse::default()
        },
    ];
    for (i, answer) in invalid.into_iter().enumerate() {
        let authz = MockAuthz::always(ok(OkHttpResponse {
            headers_to_remove: [answer.headers_to_remove, vec!["authorization".into()]].concat(),
            ..answer
        }))
        .await;
        let gw = setup(&authz, "failure_mode_allow = true\nstatus_on_error = 503").await;
        let resp = send(get(gw, "/openai", &[("authorization", "Bearer secret")])).await;
        assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE, "case {i}");
        assert!(resp.body.is_empty(), "case {i}");
    }
}

#[tokio::test]
async fn ok_response_rewrites_the_query() {
    let authz = MockAuthz::always(ok(OkHttpResponse {
        query_parameters_to_set: vec![
            QueryParameter {
                key: "set".into(),
                value: "new".into(),
            },
            QueryParameter {
                key: "added".into(),
                value: "v".into(),
            },
        ],
        query_parameters_to_remove: vec!["drop".into()],
        ..OkHttpResponse::default()
    }))
    .await;
    let gw = setup(&authz, "").await;
    let resp = send(get(gw, "/openai/x?keep=1&drop=2&set=old", &[])).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.json()["request"]["path"], "/openai/x");
    assert_eq!(resp.json()["request"]["query"], "keep=1&set=new&added=v");
    assert_eq!(authz.last_http().path, "/openai/x?keep=1&drop=2&set=old");
}

#[tokio::test]
async fn query_parameters_are_matched_percent_decoded() {
    let authz = MockAuthz::always(ok(OkHttpResponse {
        query_parameters_to_set: vec![QueryParameter {
            key: "token".into(),
            value: "new".into(),
        }],
        query_parameters_to_remove: vec!["api_key".into()],
        ..OkHttpResponse::default()
    }))
    .await;
    let gw = setup(&authz, "").await;
    let resp = send(get(
        gw,
        "/openai/x?%61pi_key=secret&keep=1&%74oken=old&api%5fkey=2",
        &[],
    ))
    .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.json()["request"]["query"], "keep=1&token=new");
}

#[tokio::test]
async fn an_unapplicable_query_rewrite_is_status_on_error_even_with_failure_mode_allow() {
    // The value has a space: the rewritten path would not parse, so the credential removal
    // cannot be made — the request must not go upstream unchanged.
    let authz = MockAuthz::always(ok(OkHttpResponse {
        query_parameters_to_set: vec![QueryParameter {
            key: "x".into(),
            value: "a b".into(),
        }],
        query_parameters_to_remove: vec!["api_key".into()],
        ..OkHttpResponse::default()
    }))
    .await;
    let gw = setup(
        &authz,
        "failure_mode_allow = true\nfailure_mode_allow_header_add = true\nstatus_on_error = 503",
    )
    .await;
    let resp = send(get(gw, "/openai/x?api_key=secret", &[])).await;
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.body.is_empty());
    assert!(!resp.headers.contains_key("content-type"));
}

#[tokio::test]
async fn response_headers_to_add_honour_append_action() {
    let authz = MockAuthz::always(ok(OkHttpResponse {
        response_headers_to_add: vec![
            header_action("x-appended", "one", 0),
            header_action("content-type", "text/ignored", 1),
            header_action("x-added-if-absent", "two", 1),
            header_action("x-overwrite-or-add", "three", 2),
            header_action("date", "overwritten", 3),
            header_action("x-overwrite-if-exists", "never", 3),
            header("x-legacy-append", "a", Some(true)),
            header("x-legacy-append", "b", Some(true)),
            header("x-legacy-set", "c", Some(false)),
        ],
        ..OkHttpResponse::default()
    }))
    .await;
    let gw = setup(&authz, "").await;
    let resp = send(get(gw, "/openai", &[])).await;
    assert_eq!(resp.status, StatusCode::OK);
    let h = &resp.headers;
    assert_eq!(h["x-appended"], "one");
    assert_eq!(
        h.get_all("content-type").iter().collect::<Vec<_>>(),
        ["application/json"]
    );
    assert_eq!(h["x-added-if-absent"], "two");
    assert_eq!(h["x-overwrite-or-add"], "three");
    assert_eq!(h["date"], "overwritten");
    assert!(!h.contains_key("x-overwrite-if-exists"));
    assert_eq!(
        h.get_all("x-legacy-append").iter().collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(h["x-legacy-set"], "c");
}

#[tokio::test]
async fn custom_denial_keeps_status_headers_body_and_repeated_set_cookie() {
    let authz = MockAuthz::always(deny(
        7,
        401,
        vec![
            header("set-cookie", "a=1", None),
            header("set-cookie", "b=2", None),
            header("content-type", "application/json", None),
            header("x-reason", "no-token", Some(true)),
        ],
        r#"{"error":"unauthenticated"}"#,
    ))
    .await;
    let gw = setup(&authz, "").await;
    let resp = send(get(gw, "/openai", &[])).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.text(), r#"{"error":"unauthenticated"}"#);
    assert_eq!(
        resp.headers
            .get_all("set-cookie")
            .iter()
            .collect::<Vec<_>>(),
        ["a=1", "b=2"]
    );
    assert_eq!(
        resp.headers
            .get_all("content-type")
            .iter()
            .collect::<Vec<_>>(),
        ["application/json"]
    );
    assert_eq!(resp.headers["x-reason"], "no-token");
}

#[tokio::test]
async fn non_ok_status_without_denied_response_is_403_with_empty_body() {
    let authz = MockAuthz::always(extauthz_proto::v3::CheckResponse {
        status: Some(extauthz_proto::RpcStatus {
            code: 16,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await;
    let gw = setup(&authz, "").await;
    let resp = send(get(gw, "/openai", &[])).await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert!(resp.body.is_empty());
}

#[tokio::test]
async fn denied_response_without_status_is_403() {
    let authz = MockAuthz::always(deny(7, 0, vec![], "nope")).await;
    let gw = setup(&authz, "").await;
    let resp = send(get(gw, "/openai", &[])).await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert_eq!(resp.text(), "nope");
}

#[tokio::test]
async fn a_malformed_denied_response_is_still_a_deny_under_failure_mode_allow() {
    // Each unusable part is dropped (headers) or treated as absent (status 42): the non-OK
    // status still denies, even though failure_mode_allow would let an error through.
    let authz = MockAuthz::always(deny(
        7,
        42,
        vec![
            header("bad name", "v", None),
            header("a:b", "v", None),
            header(":status", "200", None),
            header("x-newline", "a\nb", None),
            header("x-nul", "a\0b", None),
            extauthz_proto::v3::HeaderValueOption::default(),
            header("x-reason", "kept", None),
        ],
        "go away",
    ))
    .await;
    let gw = setup(&authz, "failure_mode_allow = true").await;
    let resp = send(get(gw, "/openai", &[])).await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert_eq!(resp.text(), "go away");
    assert_eq!(resp.headers["x-reason"], "kept");
    assert_eq!(resp.headers["content-type"], "text/plain");
    assert!(!resp.headers.contains_key("x-newline"));
    assert!(!resp.headers.contains_key("x-nul"));
    let mut names: Vec<&str> = resp.headers.keys().map(http::HeaderName::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        ["content-length", "content-type", "date", "x-reason"]
    );
}

#[tokio::test]
async fn a_denied_response_with_an_out_of_range_status_is_403() {
    for bad in [-1, 99, 1000, 70000] {
        let authz = MockAuthz::always(deny(16, bad, vec![], "")).await;
        let gw = setup(&authz, "failure_mode_allow = true").await;
        let resp = send(get(gw, "/openai", &[])).await;
        assert_eq!(resp.status, StatusCode::FORBIDDEN, "status {bad}");
        assert!(resp.body.is_empty());
    }
}

#[tokio::test]
async fn a_hanging_server_fails_closed_within_the_timeout() {
    let authz = MockAuthz::start(|_| Reply::Hang).await;
    let gw = setup(&authz, r#"timeout = "150ms""#).await;
    let began = Instant::now();
    let resp = send(get(gw, "/openai", &[])).await;
    let took = began.elapsed();
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert!(resp.body.is_empty());
    assert!(took >= Duration::from_millis(150), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test]
async fn the_default_timeout_is_200ms() {
    let authz = MockAuthz::start(|_| Reply::After(Duration::from_millis(600), allow_all())).await;
    let gw = setup(&authz, "").await;
    let began = Instant::now();
    let resp = send(get(gw, "/openai", &[])).await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert!(
        began.elapsed() < Duration::from_millis(550),
        "{:?}",
        began.elapsed()
    );
}

#[tokio::test]
async fn a_slow_server_within_the_timeout_is_waited_for() {
    let authz = MockAuthz::start(|_| Reply::After(Duration::from_millis(50), allow_all())).await;
    let gw = setup(&authz, r#"timeout = "1s""#).await;
    assert_eq!(send(get(gw, "/openai", &[])).await.status, StatusCode::OK);
}

#[tokio::test]
async fn timeout_with_status_on_error() {
    let authz = MockAuthz::start(|_| Reply::Hang).await;
    let gw = setup(&authz, "timeout = \"100ms\"\nstatus_on_error = 503").await;
    let resp = send(get(gw, "/openai", &[])).await;
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.body.is_empty());
}

#[tokio::test]
async fn timeout_fails_open_with_failure_mode_allow_and_marks_the_request() {
    let authz = MockAuthz::start(|_| Reply::Hang).await;
    let gw = setup(
        &authz,
        "timeout = \"100ms\"\nfailure_mode_allow = true\nfailure_mode_allow_header_add = true",
    )
    .await;
    let resp = send(get(gw, "/openai", &[])).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(
        resp.backend_saw("x-envoy-auth-failure-mode-allowed")
            .as_deref(),
        Some("true")
    );
}

#[tokio::test]
async fn failure_mode_allow_without_header_add_adds_nothing() {
    let authz = MockAuthz::start(|_| Reply::Hang).await;
    let gw = setup(&authz, "timeout = \"100ms\"\nfailure_mode_allow = true").await;
    let resp = send(get(gw, "/openai", &[])).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.backend_saw("x-envoy-auth-failure-mode-allowed"), None);
}

#[tokio::test]
async fn a_grpc_error_status_is_an_error_not_a_deny() {
    let authz = MockAuthz::start(|_| Reply::Fail(tonic::Status::internal("boom"))).await;
    let gw = setup(&authz, "status_on_error = 500").await;
    let resp = send(get(gw, "/openai", &[])).await;
    assert_eq!(resp.status, StatusCode::INTERNAL_SERVER_ERROR);

    let authz = MockAuthz::start(|_| Reply::Fail(tonic::Status::unavailable("down"))).await;
    let gw = setup(&authz, "failure_mode_allow = true").await;
    assert_eq!(send(get(gw, "/openai", &[])).await.status, StatusCode::OK);
}

#[tokio::test]
async fn an_authz_server_that_is_down_fails_closed_or_open() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let backend = start_backend().await;
    let gw = start_gateway(&with_policy(backend, closed, "")).await;
    let began = Instant::now();
    let resp = send(get(gw, "/openai", &[])).await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert!(began.elapsed() < Duration::from_secs(2));

    let gw = start_gateway(&with_policy(backend, closed, "failure_mode_allow = true")).await;
    assert_eq!(send(get(gw, "/openai", &[])).await.status, StatusCode::OK);
}

#[tokio::test]
async fn an_authz_server_that_answers_garbage_is_an_error() {
    // The demo backend speaks HTTP but not gRPC: its answer has no grpc-status.
    let not_grpc = start_backend().await;
    let backend = start_backend().await;
    let gw = start_gateway(&with_policy(backend, not_grpc, "status_on_error = 502")).await;
    let began = Instant::now();
    let resp = send(get(gw, "/openai", &[])).await;
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY);
    assert!(began.elapsed() < Duration::from_secs(1));
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
