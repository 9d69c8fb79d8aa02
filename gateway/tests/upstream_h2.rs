//! HTTP/2 backends without TLS (h2c, `protocol = "http2"`): trailers both ways and `te: trailers`
//! kept, `grpc-timeout` cutting the upstream wait short, and a backend that breaks mid-stream or
//! answers nonsense ending the client's stream with an error instead of a hang.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::echo_backend::{body_with_trailers, plain_echo};
use support::*;

fn config(backend: SocketAddr, protocol: &str, route_extra: &str) -> String {
    format!(
        r#"
[[listeners]]
name = "gw"
address = "127.0.0.1:0"

[[backends]]
name = "h2"
url = "http://{backend}"
protocol = "{protocol}"

[[routes]]
name = "r"
backend = "h2"
{route_extra}
"#
    )
}

#[tokio::test]
async fn trailers_travel_both_ways_over_h2c() {
    let backend = plain_echo().await;
    let gw = start_gateway(&config(backend.addr, "http2", "")).await;
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    trailers.insert("x-request-trailer", HeaderValue::from_static("sent"));
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new());
    let req = Request::post(format!("http://{gw}/svc.Echo/Call"))
        .header("content-type", "application/json")
        .header("te", "trailers")
        .body(body_with_trailers("hello", trailers))
        .expect("a valid request");
    let resp = client.request(req).await.expect("the gateway answers");
    assert_eq!(resp.status(), StatusCode::OK);
    let collected = resp.into_body().collect().await.expect("the whole body");
    let back = collected.trailers().cloned().expect("response trailers");
    assert_eq!(back["x-echo-grpc-status"], "0");
    assert_eq!(back["x-echo-x-request-trailer"], "sent");
    let echo: serde_json::Value =
        serde_json::from_slice(&collected.to_bytes()).expect("the echo's JSON");
    assert_eq!(echo["version"], "HTTP/2.0");
    assert_eq!(echo["body"], "hello");
    assert_eq!(echo["headers"]["te"], "trailers");
}

#[tokio::test]
async fn an_http1_backend_gets_no_te() {
    let backend = plain_echo().await;
    let gw = start_gateway(&config(backend.addr, "auto", "")).await;
    let resp = send(get(gw, "/", &[("te", "trailers")])).await;
    assert_eq!(resp.status, StatusCode::OK);
    let echo = resp.json();
    assert_eq!(echo["version"], "HTTP/1.1");
    assert!(echo["headers"].get("te").is_none(), "{echo}");
}

/// An h2c backend whose every response is made by `respond`.
async fn h2c_backend<F, Fut>(respond: F) -> SocketAddr
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<support::echo_backend::TestBody>> + Send,
{
    accept_each(move |tcp| {
        let respond = respond.clone();
        async move {
            let service = service_fn(move |_req: Request<Incoming>| {
                let respond = respond.clone();
                async move { Ok::<_, Infallible>(respond().await) }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        }
    })
    .await
}

#[tokio::test]
async fn grpc_timeout_shortens_the_upstream_wait() {
    let backend = h2c_backend(|| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Response::new(support::echo_backend::test_body(vec![]))
    })
    .await;
    let gw = start_gateway(&config(backend, "http2", "timeout = \"10s\"")).await;
    let began = Instant::now();
    let resp = send(get(gw, "/", &[("grpc-timeout", "300m")])).await;
    assert_eq!(resp.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(resp.text(), "upstream request timeout");
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
}

#[tokio::test]
async fn a_backend_failing_mid_stream_ends_the_clients_stream_with_an_error() {
    let backend = h2c_backend(|| async {
        let frames = vec![
            Ok(Frame::data(Bytes::from_static(b"first part"))),
            Err("backend broke".into()),
        ];
        Response::new(support::echo_backend::paced_body(
            frames,
            Duration::from_millis(200),
        ))
    })
    .await;
    let gw = start_gateway(&config(backend, "http2", "")).await;
    for client in [support::client(), support::h2_client()] {
        let resp = client
            .request(get(gw, "/", &[]))
            .await
            .expect("the head arrives");
        assert_eq!(resp.status(), StatusCode::OK);
        let body = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect())
            .await
            .expect("the body ends instead of hanging");
        assert!(body.is_err(), "the body must end with an error");
    }
}

#[tokio::test]
async fn an_h2c_backend_answering_garbage_is_502() {
    let backend = raw_backend(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
    let gw = start_gateway(&config(backend, "http2", "")).await;
    let resp = tokio::time::timeout(Duration::from_secs(5), send(get(gw, "/", &[])))
        .await
        .expect("answers instead of hanging");
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY, "{}", resp.text());
    // The h2 connection task sees the bad frames; the request only learns that the connection
    // went away, so the reason is a reset (a malformed HTTP/1.1 head is a `protocol error`).
    assert_eq!(
        resp.text(),
        "upstream connect error or disconnect/reset before headers. reset reason: remote reset"
    );
}
