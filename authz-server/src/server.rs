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
use tonic_health::pb::health_server::HealthServer;
use tonic_reflection::server::{v1 as reflection_v1, v1alpha as reflection_v1alpha};

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
    /// The gRPC TLS config was not accepted by the transport.
    #[error("cannot serve gRPC over TLS: {0}")]
    Tls(#[source] tonic::transport::Error),
    /// The gRPC reflection service could not be built from the descriptor sets it lists.
    #[error("cannot build the gRPC reflection service {service}: {source}")]
    Reflection {
        /// The reflection service that failed, e.g. `grpc.reflection.v1`.
        service: &'static str,
        /// What the reflection builder said.
        source: tonic_reflection::server::Error,
    },
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

    /// Serves every bound listener until `shutdown` resolves. Then readiness and gRPC health
    /// turn to not serving, the listeners stop accepting, and requests in flight get until the
    /// drain timeout to finish.
    pub async fn serve_until(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let Self {
            authorizer,
            grpc: grpc_listener,
            http: http_listener,
            admin: admin_listener,
            metrics,
            drain_timeout,
            tls,
            limits,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let ready = Arc::new(AtomicBool::new(true));
        let admin = admin_listener.map(|listener| {
            let state = AdminState {
                metrics: metrics.clone(),
                ready: ready.clone(),
            };
            AdminTask::spawn(listener, state, limits.for_admin())
        });
        let http = async {
            if let Some(listener) = http_listener {
                let (authorizer, metrics) = (authorizer.clone(), metrics.clone());
                run_http_mode_listener(authorizer, metrics, listener, &limits, stop_rx.clone())
                    .await;
            }
        };
        let grpc = async {
            let Some(listener) = grpc_listener else {
                return Ok(());
            };
            let (authorizer, metrics) = (authorizer.clone(), metrics.clone());
            let stop = stop_rx.clone();
            run_grpc_listener(authorizer, metrics, tls, listener, limits.clone(), stop).await
        };
        let serving = async { tokio::join!(grpc, http).0 };
        let result = tokio::select! {
            result = serving => result,
            () = drain_after(shutdown, &ready, &stop_tx, drain_timeout) => {
                tracing::warn!("drain timeout passed; closing the remaining connections");
                Ok(())
            }
        };
        if let Some(admin) = admin {
            admin.stop().await;
        }
        result
    }
}

/// Waits for `shutdown`; then turns readiness off, tells the listeners to stop accepting, and
/// gives the requests in flight `drain_timeout`.
async fn drain_after(
    shutdown: impl Future<Output = ()>,
    ready: &AtomicBool,
    stop: &watch::Sender<bool>,
    drain_timeout: Duration,
) {
    shutdown.await;
    ready.store(false, Ordering::Relaxed);
    tracing::info!(
        drain_timeout_ms = u64::try_from(drain_timeout.as_millis()).unwrap_or(u64::MAX),
        "shutting down: not accepting, draining requests in flight"
    );
    let _ = stop.send(true);
    tokio::time::sleep(drain_timeout).await;
}

/// The admin port's task. It is stopped only after the drain, so `/readyz` answers 503 for as
/// long as the drain lasts.
struct AdminTask {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl AdminTask {
    fn spawn(listener: TcpListener, state: AdminState, limits: Limits) -> Self {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(admin::run_admin_listener(listener, state, stopped, limits));
        Self { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
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

type CheckV3<A> = auth_v3::authorization_server::AuthorizationServer<CheckService<A>>;
type CheckV2<A> = auth_v2::authorization_server::AuthorizationServer<CheckService<A>>;

/// Runs the gRPC port until `stop` turns true: Check (v3 and v2), health and reflection, under
/// `limits`, over TLS when `tls` is given.
async fn run_grpc_listener<A: Authorizer>(
    authorizer: Arc<A>,
    metrics: Arc<Metrics>,
    tls: Option<ServerTlsConfig>,
    listener: TcpListener,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let check = CheckService::new(authorizer, metrics);
    let v3 = CheckV3::new(check.clone()).max_decoding_message_size(MAX_CHECK_REQUEST_BYTES);
    let v2 = CheckV2::new(check).max_decoding_message_size(MAX_CHECK_REQUEST_BYTES);
    let health = health_service::<A>(stop.clone()).await;
    let (reflection_v1, reflection_v1alpha) = reflection_services(&DESCRIPTOR_SETS)?;
    let mut transport = grpc_transport(&limits);
    if let Some(tls) = tls {
        transport = transport.tls_config(tls).map_err(ServeError::Tls)?;
    }
    let max_headers = limits.max_request_headers;
    transport
        .layer(tower::util::MapResponseLayer::new(
            oversized_is_resource_exhausted,
        ))
        .layer(tonic::service::InterceptorLayer::new(
            move |mut request: tonic::Request<()>| {
                crate::deadline::stamp(&mut request);
                malformed_metadata(too_many_headers(request, max_headers)?)
            },
        ))
        .add_service(v3)
        .add_service(v2)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(grpc_limits::incoming(listener, limits), async move {
            let _ = stop.wait_for(|stop| *stop).await;
        })
        .await?;
    Ok(())
}

/// gRPC health: both Check versions SERVING now; they and the overall status turn NOT_SERVING
/// once `stop` turns true, so probes see it for as long as the drain lasts.
async fn health_service<A: Authorizer>(
    mut stop: watch::Receiver<bool>,
) -> HealthServer<impl tonic_health::pb::health_server::Health> {
    let (health, service) = tonic_health::server::health_reporter();
    health.set_serving::<CheckV3<A>>().await;
    health.set_serving::<CheckV2<A>>().await;
    tokio::spawn(async move {
        if stop.wait_for(|stop| *stop).await.is_ok() {
            health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
            health.set_not_serving::<CheckV3<A>>().await;
            health.set_not_serving::<CheckV2<A>>().await;
        }
    });
    service
}

/// What reflection lists: everything the gRPC port serves.
const DESCRIPTOR_SETS: [&[u8]; 4] = [
    extauthz_proto::FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
];

/// Both reflection versions (grpcurl 1.8 still asks v1alpha), each listing `descriptor_sets`.
fn reflection_services(
    descriptor_sets: &[&[u8]],
) -> Result<
    (
        reflection_v1::ServerReflectionServer<impl reflection_v1::ServerReflection>,
        reflection_v1alpha::ServerReflectionServer<impl reflection_v1alpha::ServerReflection>,
    ),
    ServeError,
> {
    let configure = || {
        descriptor_sets.iter().fold(
            tonic_reflection::server::Builder::configure().include_reflection_service(false),
            |builder, set| builder.register_encoded_file_descriptor_set(set),
        )
    };
    let v1 = configure()
        .build_v1()
        .map_err(|source| ServeError::Reflection {
            service: "grpc.reflection.v1",
            source,
        })?;
    let v1alpha = configure()
        .build_v1alpha()
        .map_err(|source| ServeError::Reflection {
            service: "grpc.reflection.v1alpha",
            source,
        })?;
    Ok((v1, v1alpha))
}

/// tonic's transport under the gRPC port's HTTP/2 limits.
fn grpc_transport(limits: &Limits) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_max_header_list_size(
            u32::try_from(limits.max_request_header_bytes).unwrap_or(u32::MAX),
        )
        .http2_keepalive_interval(limits.http2_keepalive_interval)
        .http2_keepalive_timeout(Some(limits.http2_keepalive_timeout))
        .http2_max_pending_accept_reset_streams(Some(limits.http2_max_pending_accept_reset_streams))
        .http2_max_local_error_reset_streams(Some(limits.http2_max_local_error_reset_streams))
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

/// A Check whose metadata has a value that starts or ends with whitespace (or holds NUL, CR or
/// LF) is malformed HTTP/2 (RFC 9113 §8.2.1). tonic serves this port outside the `listener`
/// crate, so the rule every other listener applies (`listener::malformed_field`) is applied
/// here: `INVALID_ARGUMENT`, before the Check runs.
fn malformed_metadata(request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    if let Some(name) = listener::malformed_field(request.metadata().as_ref()) {
        return Err(tonic::Status::invalid_argument(format!(
            "malformed request header: {name}"
        )));
    }
    Ok(request)
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

/// Runs the HTTP-mode port until `stop` turns true: accepts connections (at most
/// `max_connections`) and serves each under `limits`; then waits for them to end.
async fn run_http_mode_listener<A: Authorizer>(
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
        let serving = listener::serve_connection(stream, limits, handler, stop.clone());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reflection_failure_says_reflection_not_an_address() {
        // Field 1 as wire type 7, which does not exist: the set cannot be decoded.
        let Err(error) = reflection_services(&[b"\x0f"]) else {
            panic!("a descriptor set that cannot be decoded was accepted");
        };
        assert_eq!(
            error.to_string(),
            "cannot build the gRPC reflection service grpc.reflection.v1: \
             error decoding FileDescriptorSet from buffer"
        );
    }

    #[test]
    fn the_descriptor_sets_served_build_both_reflection_versions() {
        assert!(reflection_services(&DESCRIPTOR_SETS).is_ok());
    }

    #[tokio::test]
    async fn a_taken_port_is_reported_with_its_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let address = taken.local_addr().expect("the port's address");
        let Err(error) = listen(Some(address)).await else {
            panic!("bound {address} twice");
        };
        assert!(
            error
                .to_string()
                .starts_with(&format!("cannot listen on {address}: ")),
            "{error}"
        );
        let ServeError::Bind { source, .. } = error else {
            panic!("not a bind error: {error}");
        };
        assert_eq!(source.kind(), io::ErrorKind::AddrInUse);
    }
}
