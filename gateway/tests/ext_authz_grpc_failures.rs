//! Envoy's ext_authz client scenarios over gRPC, the failures: timeouts, gRPC errors, a server
//! that is down or answers garbage, under `failure_mode_allow` and `status_on_error`.

mod support;

use std::time::{Duration, Instant};

use http::StatusCode;
use support::*;

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
