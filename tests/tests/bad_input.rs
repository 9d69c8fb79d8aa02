//! Malformed and oversized input gets a gRPC error status or a clear 4xx, and the server keeps
//! serving.

use bytes::Bytes;
use e2e::{start_default, v3_check, v3_client};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Posts raw gRPC frame bytes and returns the grpc-status the server answered.
async fn raw_grpc_status(address: std::net::SocketAddr, message: &[u8]) -> String {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let mut frame = vec![0u8];
    frame.extend_from_slice(
        &u32::try_from(message.len())
            .expect("a message under 4 GiB")
            .to_be_bytes(),
    );
    frame.extend_from_slice(message);
    let request = http::Request::post(format!(
        "http://{address}/envoy.service.auth.v3.Authorization/Check"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(Full::new(Bytes::from(frame)))
    .expect("request");
    let response = client.request(request).await.expect("HTTP/2 response");
    if let Some(status) = response.headers().get("grpc-status") {
        return status.to_str().expect("ascii").to_owned();
    }
    let collected = response.into_body().collect().await.expect("body");
    collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .map(|s| s.to_str().expect("ascii").to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn garbage_protobuf_is_invalid_argument_and_the_server_keeps_serving() {
    let server = start_default().await;
    // Field 1, wire type 2 (length-delimited), claiming 100 bytes that never come.
    let status = raw_grpc_status(server.grpc, &[0x0a, 0x64, 0x01, 0x02]).await;
    assert_eq!(status, "3", "INVALID_ARGUMENT");
    let mut client = v3_client(server.grpc).await;
    let response = client
        .check(v3_check(&[("x-ext-authz", "allow")], ""))
        .await
        .expect("still serving");
    assert_eq!(response.get_ref().status.as_ref().map(|s| s.code), Some(0));
}

#[tokio::test]
async fn oversized_check_request_is_resource_exhausted() {
    let server = start_default().await;
    let mut client = v3_client(server.grpc).await;
    let huge = "y".repeat(5 * 1024 * 1024);
    let error = client
        .check(v3_check(&[("x-huge", &huge)], ""))
        .await
        .expect_err("over the 4 MiB limit");
    assert_eq!(error.code(), tonic::Code::ResourceExhausted, "{error:?}");
    let response = client
        .check(v3_check(&[("x-ext-authz", "allow")], ""))
        .await
        .expect("still serving");
    assert_eq!(response.get_ref().status.as_ref().map(|s| s.code), Some(0));
}

async fn raw_http(address: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut reply),
    )
    .await;
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test]
async fn http_mode_handles_invalid_utf8_and_huge_headers() {
    let server = start_default().await;
    let invalid = raw_http(
        server.http,
        b"GET / HTTP/1.1\r\nhost: a\r\nx-ext-authz: allow\r\nx-bin: \xff\xfe\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(invalid.starts_with("HTTP/1.1 200 "), "{invalid}");

    let mut huge = b"GET / HTTP/1.1\r\nhost: a\r\nx-big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 1024 * 1024));
    huge.extend_from_slice(b"\r\nconnection: close\r\n\r\n");
    let reply = raw_http(server.http, &huge).await;
    assert!(
        reply.starts_with("HTTP/1.1 431 "),
        "{}",
        &reply[..reply.len().min(200)]
    );

    let after = e2e::http_request(server.http, "GET", "/", &[("x-ext-authz", "allow")], "").await;
    assert_eq!(after.status, 200, "still serving");
}
