//! A gRPC client (an HTTP/2 client sending `content-type: application/grpc`) gets every reply
//! the gateway makes itself as a trailers-only gRPC answer, as Envoy gives it: HTTP 200,
//! `content-type: application/grpc`, `grpc-status` mapped from the HTTP status, `grpc-message`
//! the reply's text, percent-encoded; a denial's headers are kept. A backend's response is
//! relayed untouched.

mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use extauthz_proto::v3::OkHttpResponse;
use http::{HeaderMap, Request, StatusCode};
use support::*;

/// What a gRPC client sees of one call.
struct GrpcAnswer {
    status: StatusCode,
    headers: HeaderMap,
    /// The response's HEADERS frame ended the stream (a trailers-only response).
    trailers_only: bool,
}

impl GrpcAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("ASCII"))
    }

    /// The shape every local reply to a gRPC client has; `grpc-status` is `code`.
    fn assert_local_grpc(&self, code: &str) {
        assert_eq!(self.status, StatusCode::OK);
        assert_eq!(self.header("content-type"), Some("application/grpc"));
        assert_eq!(self.header("grpc-status"), Some(code));
        assert!(
            self.trailers_only,
            "a local reply ends the stream with its headers"
        );
    }
}

/// One unary gRPC call over h2c (prior knowledge) to `path`, a 5-byte empty message as body.
async fn grpc_call(gw: SocketAddr, path: &str, headers: &[(&str, &str)]) -> GrpcAnswer {
    let (sender, conn) = limits::h2_handshake(gw).await;
    tokio::spawn(conn);
    let mut ready = sender.ready().await.expect("the gateway takes a stream");
    let mut req = Request::post(format!("http://gw.test{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let (response, mut body) = ready
        .send_request(req.body(()).expect("a valid request"), false)
        .expect("the stream opens");
    // The gateway may answer before it reads the message; a refused send is fine then.
    let _ = body.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true);
    let response = response.await.expect("the gateway answers");
    let (parts, recv) = response.into_parts();
    GrpcAnswer {
        status: parts.status,
        trailers_only: recv.is_end_stream(),
        headers: parts.headers,
    }
}

/// A gateway in front of the demo backend whose policy gets `answer` to every check.
async fn denying(answer: extauthz_proto::v3::CheckResponse) -> SocketAddr {
    let authz = MockAuthz::always(answer).await;
    setup(&authz, "").await
}

#[tokio::test]
async fn a_403_denial_is_permission_denied_with_the_body_and_the_servers_headers() {
    let gw = denying(istio_response(false)).await;
    let answer = grpc_call(gw, "/openai/pkg.Svc/Call", &[]).await;
    answer.assert_local_grpc("7");
    assert_eq!(answer.header("grpc-message"), Some(DENY_BODY));
    assert_eq!(answer.header("x-ext-authz-check-result"), Some("denied"));
    assert!(answer.header("content-length").is_none_or(|l| l == "0"));
}

#[tokio::test]
async fn a_401_denial_is_unauthenticated_and_the_message_is_percent_encoded() {
    let gw = denying(deny(
        16,
        401,
        vec![header("www-authenticate", "Bearer", Some(false))],
        "100% no token\nhere: é",
    ))
    .await;
    let answer = grpc_call(gw, "/openai/pkg.Svc/Call", &[]).await;
    answer.assert_local_grpc("16");
    assert_eq!(
        answer.header("grpc-message"),
        Some("100%25 no token%0Ahere: %C3%A9")
    );
    assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
}

#[tokio::test]
async fn a_429_denial_is_unavailable() {
    let gw = denying(deny(8, 429, Vec::new(), "slow down")).await;
    let answer = grpc_call(gw, "/openai/pkg.Svc/Call", &[]).await;
    answer.assert_local_grpc("14");
    assert_eq!(answer.header("grpc-message"), Some("slow down"));
}

#[tokio::test]
async fn no_route_is_unimplemented_without_a_message() {
    let gw = denying(allow_all()).await;
    let answer = grpc_call(gw, "/elsewhere/pkg.Svc/Call", &[]).await;
    answer.assert_local_grpc("12");
    assert!(answer.header("grpc-message").is_none());
}

#[tokio::test]
async fn a_check_timeout_is_the_status_on_error_mapped() {
    let authz = MockAuthz::start(|_| Reply::Hang).await;
    let gw = setup(&authz, r#"timeout = "100ms""#).await;
    grpc_call(gw, "/openai/pkg.Svc/Call", &[])
        .await
        .assert_local_grpc("7");
    let gw = setup(&authz, "timeout = \"100ms\"\nstatus_on_error = 503").await;
    grpc_call(gw, "/openai/pkg.Svc/Call", &[])
        .await
        .assert_local_grpc("14");
}

#[tokio::test]
async fn a_body_over_the_checks_limit_is_unknown() {
    let authz = MockAuthz::always(allow_all()).await;
    let gw = setup(&authz, "with_request_body = { max_request_bytes = 2 }").await;
    let answer = grpc_call(gw, "/openai/pkg.Svc/Call", &[("content-length", "5")]).await;
    answer.assert_local_grpc("2");
    assert_eq!(answer.header("grpc-message"), Some("Payload Too Large"));
}

#[tokio::test]
async fn an_upstream_that_is_down_is_unavailable() {
    let dead = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        l.local_addr().expect("an address")
    };
    let authz = MockAuthz::always(allow_all()).await;
    let gw = start_gateway(&with_policy(dead, authz.addr, "")).await;
    let answer = grpc_call(gw, "/openai/pkg.Svc/Call", &[]).await;
    answer.assert_local_grpc("14");
    let message = answer.header("grpc-message").expect("a message");
    assert!(message.starts_with("upstream connect error"), "{message}");
}

#[tokio::test]
async fn a_backends_answer_and_a_plain_clients_denial_are_not_rewritten() {
    let authz = MockAuthz::always(ok(OkHttpResponse::default())).await;
    let gw = setup(&authz, "").await;
    let relayed = grpc_call(gw, "/openai/pkg.Svc/Call", &[]).await;
    assert_eq!(relayed.status, StatusCode::OK);
    assert_eq!(relayed.header("content-type"), Some("application/json"));
    assert!(relayed.header("grpc-status").is_none());

    let gw = denying(istio_response(false)).await;
    let plain = send(get(gw, "/openai", &[])).await;
    assert_eq!(plain.status, StatusCode::FORBIDDEN);
    assert_eq!(plain.text(), DENY_BODY);
    assert!(plain.headers.get("grpc-status").is_none());
}

#[tokio::test]
async fn a_request_without_a_canonical_form_is_internal() {
    let gw = denying(allow_all()).await;
    let answer = grpc_call(gw, "/openai/%zz", &[]).await;
    answer.assert_local_grpc("13");
    assert_eq!(
        answer.header("grpc-message"),
        Some("invalid percent-encoding in path")
    );
}
