//! Binding and serving: gRPC (v3, v2, health, reflection) on one port, HTTP mode on another.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use extauthz_proto::envoy::service::auth::{v2 as auth_v2, v3 as auth_v3};
use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

use crate::authorizer::Authorizer;
use crate::grpc::CheckService;
use crate::http_mode;

/// The largest CheckRequest accepted; gRPC's customary 4 MiB.
pub const MAX_CHECK_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Why serving stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// A listener could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// The OS's reason.
        source: io::Error,
    },
}

/// An authorizer with its listeners bound, ready to serve. Binding first lets a caller learn
/// the ports the OS chose (port 0) before serving.
pub struct Server<A> {
    authorizer: Arc<A>,
    grpc: Option<TcpListener>,
    http: Option<TcpListener>,
}

impl<A: Authorizer> Server<A> {
    /// Binds the gRPC and HTTP-mode listeners; either may be left out.
    pub async fn bind(
        authorizer: A,
        grpc: Option<SocketAddr>,
        http: Option<SocketAddr>,
    ) -> Result<Self, ServeError> {
        Ok(Self {
            authorizer: Arc::new(authorizer),
            grpc: listen(grpc).await?,
            http: listen(http).await?,
        })
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The bound HTTP-mode address.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets requests in flight finish.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServeError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let http = self.http.map(|listener| {
            tokio::spawn(serve_http(
                self.authorizer.clone(),
                listener,
                stop_rx.clone(),
            ))
        });
        let grpc = async {
            match self.grpc {
                Some(listener) => serve_grpc(self.authorizer.clone(), listener, stop_rx).await,
                None => {
                    let mut stop = stop_rx;
                    let _ = stop.wait_for(|stop| *stop).await;
                    Ok(())
                }
            }
        };
        let signal = async {
            shutdown.await;
            let _ = stop_tx.send(true);
        };
        let (result, ()) = tokio::join!(grpc, signal);
        if let Some(http) = http {
            let _ = http.await;
        }
        result
    }
}

async fn listen(address: Option<SocketAddr>) -> Result<Option<TcpListener>, ServeError> {
    match address {
        None => Ok(None),
        Some(address) => TcpListener::bind(address)
            .await
            .map(Some)
            .map_err(|source| ServeError::Bind { address, source }),
    }
}

async fn serve_grpc<A: Authorizer>(
    authorizer: Arc<A>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let check = CheckService::new(authorizer);
    let v3 = auth_v3::authorization_server::AuthorizationServer::new(check.clone())
        .max_decoding_message_size(MAX_CHECK_REQUEST_BYTES);
    let v2 = auth_v2::authorization_server::AuthorizationServer::new(check)
        .max_decoding_message_size(MAX_CHECK_REQUEST_BYTES);

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<auth_v3::authorization_server::AuthorizationServer<CheckService<A>>>()
        .await;
    health
        .set_serving::<auth_v2::authorization_server::AuthorizationServer<CheckService<A>>>()
        .await;

    // Both reflection versions (grpcurl 1.8 still asks v1alpha), each listing everything served.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(extauthz_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
    };
    let reflection_v1 = reflection().build_v1().map_err(reflection_error)?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(reflection_error)?;

    tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(
            oversized_is_resource_exhausted,
        ))
        .add_service(v3)
        .add_service(v2)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(without_nagle(listener), async move {
            let _ = stop.wait_for(|stop| *stop).await;
        })
        .await?;
    Ok(())
}

/// Accepted connections with Nagle's algorithm off: a Check answer is one small write, and
/// holding it back for a delayed ACK costs tens of milliseconds per call.
fn without_nagle(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

fn reflection_error(error: tonic_reflection::server::Error) -> ServeError {
    ServeError::Bind {
        address: SocketAddr::from(([0, 0, 0, 0], 0)),
        source: io::Error::other(error),
    }
}

/// tonic answers a message over the size limit with `OUT_OF_RANGE`; gRPC's convention (and what
/// clients expect) is `RESOURCE_EXHAUSTED`.
fn oversized_is_resource_exhausted<B>(mut response: http::Response<B>) -> http::Response<B> {
    const TONIC_TOO_LARGE: &[u8] = b"decoded%20message%20length%20too%20large";
    let headers = response.headers_mut();
    let oversized = headers.get("grpc-status").is_some_and(|s| s == "11")
        && headers.get("grpc-message").is_some_and(|m| {
            m.as_bytes()
                .windows(TONIC_TOO_LARGE.len())
                .any(|w| w == TONIC_TOO_LARGE)
        });
    if oversized {
        headers.insert("grpc-status", HeaderValue::from_static("8"));
    }
    response
}

async fn serve_http<A: Authorizer>(
    authorizer: Arc<A>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    let connections = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, source) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, usually: back off instead of spinning.
                    tracing::warn!(%error, "http: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let destination = stream.local_addr().unwrap_or(source);
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "http: cannot disable Nagle's algorithm");
        }
        let authorizer = authorizer.clone();
        let service = service_fn(move |request| {
            http_mode::handle(authorizer.clone(), request, source, destination)
        });
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = connections.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "http: connection ended with an error");
            }
        });
    }
    connections.shutdown().await;
}
