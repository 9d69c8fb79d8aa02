//! An `Authorizer` of one's own: a `Deny` it builds with code 0 (OK) or status 200 still reaches
//! the proxy as a denial, over gRPC v3 and HTTP mode.

mod support;

use authz_server::{AuthorizeError, Authorizer, Server};
use rules::{Decision, Deny, Evaluation, Request};

/// Denies everything, with the codes a careless implementation might pick.
struct CarelessDeny;

impl Authorizer for CarelessDeny {
    async fn check(&self, _request: &Request) -> Result<Evaluation, AuthorizeError> {
        Ok(Decision::Deny(Deny {
            http_status: 200,
            grpc_code: 0,
            headers: vec![("x-why".into(), "careless".into())],
            body: "denied".into(),
            dynamic_metadata: Default::default(),
        })
        .into())
    }
}

#[tokio::test]
async fn a_deny_with_code_0_or_status_200_is_still_a_denial() {
    let loopback: std::net::SocketAddr = "127.0.0.1:0".parse().expect("loopback");
    let server = Server::bind(CarelessDeny, Some(loopback), Some(loopback))
        .await
        .expect("binds");
    let (grpc, http) = (
        server.grpc_addr().expect("grpc"),
        server.http_addr().expect("http"),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve_until(async {
        let _ = stopped.await;
    }));
    let running = support::Running::at(grpc, http, stop);

    let mut client = support::client(&running).await;
    let answer = support::check(&mut client, "/", &[]).await;
    assert_eq!((answer.code, answer.status), (7, 403));
    assert_eq!(answer.body, "denied");
    assert_eq!(answer.header("x-why"), Some("careless"));

    let reply = support::http_get(
        running.http,
        "GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 403 "), "{reply}");
    assert!(reply.ends_with("denied"), "{reply}");
}
