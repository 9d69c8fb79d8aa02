//! The floor: what the least a server could do costs on this machine.
//!
//! [`serve_grpc`] is a bare tonic `Check` (v3 and v2) answering a constant OK — the lower bound for
//! any ext_authz server written with tonic. [`serve_http`] is a static HTTP backend answering
//! `200 ok` to everything, so proxy scenarios measure the proxy rather than the backend;
//! [`serve_https`] is the same answer over TLS (HTTP/1.1, or h2 when the client offers it by ALPN).

use std::convert::Infallible;
use std::sync::Arc;

use anyhow::Context;

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

/// The static answer: `200 ok`, `content-type: text/plain`.
async fn static_ok<B>(
    _request: http::Request<B>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let mut response = http::Response::new(Full::new(Bytes::from_static(b"ok\n")));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    Ok(response)
}

/// Serves `200 ok` over HTTP/1.1 (or h2 with prior knowledge) on `listener` until the process ends.
pub async fn serve_http(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service_fn(static_ok))
                .await;
        });
    }
}

/// A TLS server config from a PEM certificate chain and key, offering h2 and http/1.1 by ALPN
/// (in that order, as a server that prefers h2 would).
pub fn tls_config(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .context("reading the certificate chain")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).context("reading the private key")?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `200 ok` over TLS on `listener` until the process ends: h2 when ALPN chose it,
/// HTTP/1.1 otherwise.
pub async fn serve_https(listener: TcpListener, config: Arc<rustls::ServerConfig>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let io = TokioIo::new(tls);
            let _ = if h2 {
                builder
                    .http2_only()
                    .serve_connection(io, service_fn(static_ok))
                    .await
            } else {
                builder
                    .http1_only()
                    .serve_connection(io, service_fn(static_ok))
                    .await
            };
        });
    }
}
