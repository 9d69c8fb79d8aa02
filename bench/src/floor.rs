//! The floor: what the least a server could do costs on this machine.
//!
//! [`serve_grpc`] is a bare tonic `Check` (v3 and v2) answering a constant OK — the lower bound for
//! any ext_authz server written with tonic. [`serve_http`] is a static HTTP backend answering
//! `200 ok` to everything, so proxy scenarios measure the proxy rather than the backend.

use std::convert::Infallible;

use bytes::Bytes;
use extauthz_proto::envoy::service::auth::v2::authorization_server as v2_server;
use extauthz_proto::envoy::service::auth::v3::authorization_server as v3_server;
use extauthz_proto::{RpcStatus, v2, v3};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;

/// Answers every Check with status OK and an empty OK response.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConstantOk;

#[tonic::async_trait]
impl v3_server::Authorization for ConstantOk {
    async fn check(
        &self,
        _request: tonic::Request<v3::CheckRequest>,
    ) -> Result<tonic::Response<v3::CheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(v3::CheckResponse {
            status: Some(RpcStatus::default()),
            http_response: Some(v3::check_response::HttpResponse::OkResponse(
                v3::OkHttpResponse::default(),
            )),
            dynamic_metadata: None,
        }))
    }
}

#[tonic::async_trait]
impl v2_server::Authorization for ConstantOk {
    async fn check(
        &self,
        _request: tonic::Request<v2::CheckRequest>,
    ) -> Result<tonic::Response<v2::CheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(v2::CheckResponse {
            status: Some(RpcStatus::default()),
            http_response: Some(v2::check_response::HttpResponse::OkResponse(
                v2::OkHttpResponse::default(),
            )),
        }))
    }
}

/// Serves the constant Check (v3 and v2) on `listener` until the process ends.
pub async fn serve_grpc(listener: TcpListener) -> Result<(), tonic::transport::Error> {
    // Nagle off, as authz-server does, so the comparison is of the handlers.
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok::<_, std::io::Error>(stream)
    });
    tonic::transport::Server::builder()
        .add_service(v3_server::AuthorizationServer::new(ConstantOk))
        .add_service(v2_server::AuthorizationServer::new(ConstantOk))
        .serve_with_incoming(incoming)
        .await
}

/// Serves `200 ok` over HTTP/1.1 on `listener` until the process ends.
pub async fn serve_http(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|_request| async {
                let mut response = http::Response::new(Full::new(Bytes::from_static(b"ok\n")));
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain"),
                );
                Ok::<_, Infallible>(response)
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
