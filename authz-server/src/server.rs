//! Binding and serving: gRPC (v3, v2, health, reflection) on one port, HTTP mode on another.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use extauthz_proto::envoy::service::auth::{v2 as auth_v2, v3 as auth_v3};
use http::HeaderValue;
use listener::ConnectionSlot;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::ServerTlsConfig;

use crate::admin::{self, AdminState};
use crate::authorizer::Authorizer;
use crate::config::limits::Limits;
use crate::grpc::CheckService;
use crate::http_mode;
use crate::metrics::Metrics;

pub(crate) mod grpc_limits;

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

/// How long requests in flight may take to finish after shutdown begins, by default.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// An authorizer with its listeners bound, ready to serve. Binding first lets a caller learn
/// the ports the OS chose (port 0) before serving.
pub struct Server<A> {
    authorizer: Arc<A>,
    grpc: Option<TcpListener>,
    http: Option<TcpListener>,
    admin: Option<TcpListener>,
    metrics: Arc<Metrics>,
    drain_timeout: Duration,
    tls: Option<ServerTlsConfig>,
    limits: Limits,
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
            admin: None,
            metrics: Arc::new(Metrics::new()),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            tls: None,
            limits: Limits::default(),
        })
    }

    /// Also binds the admin port (`/metrics`, `/healthz`, `/readyz`).
    pub async fn with_admin(mut self, address: SocketAddr) -> Result<Self, ServeError> {
        self.admin = listen(Some(address)).await?;
        Ok(self)
    }

    /// Records into these metrics instead of a fresh set, e.g. to share them with a reloader.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Serves gRPC over TLS (mutual TLS when the config names a client CA).
    pub fn with_tls(mut self, tls: ServerTlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Serves every listener under these limits (`[server.limits]`) instead of the defaults.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// How long requests in flight may take to finish once shutdown begins.
    pub fn with_drain_timeout(mut self, drain_timeout: Duration) -> Self {
        self.drain_timeout = drain_timeout;
        self
    }

    /// The server's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The bound HTTP-mode address.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` resolves. Then readiness and gRPC health turn to not serving,
    /// the listeners stop accepting, and requests in flight get until the drain timeout to
    /// finish.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServeError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let ready = Arc::new(AtomicBool::new(true));
        let (admin_stop_tx, admin_stop_rx) = watch::channel(false);
        let admin = self.admin.map(|listener| {
            let state = AdminState {
                metrics: self.metrics.clone(),
                ready: ready.clone(),
            };
            tokio::spawn(admin::serve(
                listener,
                state,
                admin_stop_rx,
                self.limits.for_admin(),
            ))
        });
        let http = async {
            if let Some(listener) = self.http {
                let (authorizer, metrics) = (self.authorizer.clone(), self.metrics.clone());
                let limits = self.limits.clone();
                serve_http(authorizer, metrics, listener, &limits, stop_rx.clone()).await;
            }
        };
        let grpc = async {
            match self.grpc {
                Some(listener) => {
                    let (authorizer, metrics) = (self.authorizer.clone(), self.metrics.clone());
                    let limits = self.limits.clone();
                    serve_grpc(
                        authorizer,
                        metrics,
                        self.tls,
                        listener,
                        limits,
                        stop_rx.clone(),
                    )
                    .await
                }
                None => Ok(()),
            }
        };
        let serving = async { tokio::join!(grpc, http).0 };
        let deadline = async {
            shutdown.await;
            ready.store(false, Ordering::Relaxed);
            tracing::info!(
                drain_timeout_ms = self.drain_timeout.as_millis() as u64,
                "shutting down: not accepting, draining requests in flight"
            );
            let _ = stop_tx.send(true);
            tokio::time::sleep(self.drain_timeout).await;
        };
        let result = tokio::select! {
            result = serving => result,
            () = deadline => {
                tracing::warn!("drain timeout passed; closing the remaining connections");
                Ok(())
            }
        };
        let _ = admin_stop_tx.send(true);
        if let Some(admin) = admin {
            let _ = admin.await;
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
    metrics: Arc<Metrics>,
    tls: Option<ServerTlsConfig>,
    listener: TcpListener,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let check = CheckService::new(authorizer, metrics);
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
    // Probes see NOT_SERVING for as long as the drain lasts.
    let mut health_stop = stop.clone();
    tokio::spawn(async move {
        if health_stop.wait_for(|stop| *stop).await.is_ok() {
            health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
            health
                .set_not_serving::<auth_v3::authorization_server::AuthorizationServer<CheckService<A>>>()
                .await;
            health
                .set_not_serving::<auth_v2::authorization_server::AuthorizationServer<CheckService<A>>>()
                .await;
        }
    });

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

    let mut builder = tonic::transport::Server::builder()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_max_header_list_size(
            u32::try_from(limits.max_request_header_bytes).unwrap_or(u32::MAX),
        )
        .http2_keepalive_interval(limits.http2_keepalive_interval)
        .http2_keepalive_timeout(Some(limits.http2_keepalive_timeout))
        .http2_max_pending_accept_reset_streams(Some(limits.http2_max_pending_accept_reset_streams))
        .http2_max_local_error_reset_streams(Some(limits.http2_max_local_error_reset_streams));
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let max_headers = limits.max_request_headers;
    builder
        .layer(tower::util::MapResponseLayer::new(
            oversized_is_resource_exhausted,
        ))
        .layer(tonic::service::InterceptorLayer::new(
            move |mut request: tonic::Request<()>| {
                crate::deadline::stamp(&mut request);
                too_many_headers(request, max_headers)
            },
        ))
        .add_service(v3)
        .add_service(v2)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(grpc_limits::incoming(listener, limits), async move {
            let _ = stop.wait_for(|stop| *stop).await;
        })
        .await?;
    Ok(())
}

/// More request metadata entries than `max_request_headers`: `RESOURCE_EXHAUSTED`, as gRPC
/// answers other size limits.
fn too_many_headers(
    request: tonic::Request<()>,
    max: usize,
) -> Result<tonic::Request<()>, tonic::Status> {
    if request.metadata().len() > max {
        return Err(tonic::Status::resource_exhausted(
            "too many request headers",
        ));
    }
    Ok(request)
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
    metrics: Arc<Metrics>,
    listener: TcpListener,
    limits: &Limits,
    mut stop: watch::Receiver<bool>,
) {
    // Every connection holds a receiver: `closed()` resolves once the last one has ended.
    let (open, _) = watch::channel(());
    let slots = Arc::new(std::sync::atomic::AtomicUsize::new(0));
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
        let Some(slot) = ConnectionSlot::take(&slots, limits.max_connections) else {
            tracing::debug!(%source, "http: connection refused: max_connections reached");
            continue;
        };
        let destination = stream.local_addr().unwrap_or(source);
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "http: cannot disable Nagle's algorithm");
        }
        let (authorizer, metrics) = (authorizer.clone(), metrics.clone());
        let handler = move |request| {
            let (authorizer, metrics) = (authorizer.clone(), metrics.clone());
            async move {
                let Ok(response) =
                    http_mode::handle(authorizer, metrics, request, source, destination).await;
                response
            }
        };
        let serving = listener::serve(stream, limits, handler, stop.clone());
        let held = open.subscribe();
        tokio::spawn(async move {
            serving.await;
            drop((slot, held));
        });
    }
    // Close the socket now so new connections are refused rather than queued while draining.
    drop(listener);
    open.closed().await;
}
