//! An in-process gRPC `Authorization` server that records every check, and builders for the
//! answers it gives.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use extauthz_proto::RpcStatus;
use extauthz_proto::v3::{
    CheckRequest, CheckResponse, DeniedHttpResponse, HeaderValue as PbHeaderValue,
    HeaderValueOption, HttpStatus, OkHttpResponse,
    attribute_context::HttpRequest,
    authorization_server::{Authorization, AuthorizationServer},
    check_response::HttpResponse,
};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;

/// The Istio ext-authz deny body, 76 bytes.
pub(crate) const DENY_BODY: &str =
    "denied by ext_authz for not found header `x-ext-authz: allow` in the request";

/// What the mock answers to one check.
pub(crate) enum Reply {
    /// A successful RPC with this response.
    Respond(CheckResponse),
    /// A gRPC error status.
    Fail(tonic::Status),
    /// Never answer.
    Hang,
    /// Answer after a pause.
    After(Duration, CheckResponse),
}

type Handler = Arc<dyn Fn(&CheckRequest) -> Reply + Send + Sync>;

/// An in-process `envoy.service.auth.v3.Authorization` server that records every request.
#[derive(Clone)]
pub(crate) struct MockAuthz {
    /// Where it listens.
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<CheckRequest>>>,
    connections: Arc<AtomicUsize>,
}

struct Service {
    handler: Handler,
    requests: Arc<Mutex<Vec<CheckRequest>>>,
}

#[tonic::async_trait]
impl Authorization for Service {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let request = request.into_inner();
        self.requests
            .lock()
            .expect("the lock is not poisoned")
            .push(request.clone());
        match (self.handler)(&request) {
            Reply::Respond(r) => Ok(tonic::Response::new(r)),
            Reply::Fail(s) => Err(s),
            Reply::Hang => std::future::pending().await,
            Reply::After(d, r) => {
                tokio::time::sleep(d).await;
                Ok(tonic::Response::new(r))
            }
        }
    }
}

impl MockAuthz {
    /// Starts a mock answering with `handler`.
    pub(crate) async fn start(
        handler: impl Fn(&CheckRequest) -> Reply + Send + Sync + 'static,
    ) -> MockAuthz {
        MockAuthz::start_with(handler, None).await
    }

    /// Starts a mock answering with `handler` over TLS (mutual when `tls` names a client CA).
    pub(crate) async fn start_with(
        handler: impl Fn(&CheckRequest) -> Reply + Send + Sync + 'static,
        tls: Option<tonic::transport::ServerTlsConfig>,
    ) -> MockAuthz {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds a loopback port");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let service = Service {
            handler: Arc::new(handler),
            requests: requests.clone(),
        };
        let counter = connections.clone();
        let incoming = TcpListenerStream::new(listener).map(move |conn| {
            counter.fetch_add(1, Ordering::SeqCst);
            conn
        });
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).expect("a valid TLS config");
        }
        tokio::spawn(
            builder
                .add_service(AuthorizationServer::new(service))
                .serve_with_incoming(incoming),
        );
        MockAuthz {
            addr,
            requests,
            connections,
        }
    }

    /// Starts a mock that behaves like Istio's ext-authz test service (the seed's image).
    pub(crate) async fn istio() -> MockAuthz {
        MockAuthz::start(|req| {
            let allowed =
                http_of(req).headers.get("x-ext-authz").map(String::as_str) == Some("allow");
            Reply::Respond(istio_response(allowed))
        })
        .await
    }

    /// Starts a mock that answers every check with `response`.
    pub(crate) async fn always(response: CheckResponse) -> MockAuthz {
        MockAuthz::start(move |_| Reply::Respond(response.clone())).await
    }

    /// Every check received so far.
    pub(crate) fn requests(&self) -> Vec<CheckRequest> {
        self.requests
            .lock()
            .expect("the lock is not poisoned")
            .clone()
    }

    /// How many TCP connections the gateway opened to this server.
    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// How many checks were received.
    pub(crate) fn count(&self) -> usize {
        self.requests
            .lock()
            .expect("the lock is not poisoned")
            .len()
    }

    /// The HTTP attributes of the last check.
    pub(crate) fn last_http(&self) -> HttpRequest {
        http_of(
            self.requests
                .lock()
                .expect("the lock is not poisoned")
                .last()
                .expect("no check received"),
        )
        .clone()
    }
}

/// `attributes.request.http` of a check.
pub(crate) fn http_of(req: &CheckRequest) -> &HttpRequest {
    req.attributes
        .as_ref()
        .expect("the check has attributes")
        .request
        .as_ref()
        .expect("the check has attributes.request")
        .http
        .as_ref()
        .expect("the check has attributes.request.http")
}

/// Istio's ext-authz answer.
pub(crate) fn istio_response(allowed: bool) -> CheckResponse {
    let result = if allowed { "allowed" } else { "denied" };
    let headers = vec![
        header("x-ext-authz-check-result", result, Some(false)),
        header(
            "x-ext-authz-additional-header-override",
            "grpc-additional-header-override-value",
            Some(false),
        ),
    ];
    if allowed {
        ok(OkHttpResponse {
            headers,
            ..OkHttpResponse::default()
        })
    } else {
        deny(7, 403, headers, DENY_BODY)
    }
}

/// A header option.
pub(crate) fn header(key: &str, value: &str, append: Option<bool>) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(PbHeaderValue {
            key: key.into(),
            value: value.into(),
            raw_value: Vec::new(),
        }),
        append,
        ..HeaderValueOption::default()
    }
}

/// A header option with an append action.
pub(crate) fn header_action(key: &str, value: &str, action: i32) -> HeaderValueOption {
    HeaderValueOption {
        append_action: action,
        ..header(key, value, None)
    }
}

/// An OK response.
pub(crate) fn ok(ok: OkHttpResponse) -> CheckResponse {
    CheckResponse {
        status: Some(RpcStatus::default()),
        http_response: Some(HttpResponse::OkResponse(ok)),
        ..CheckResponse::default()
    }
}

/// A denied response with a `denied_response`.
pub(crate) fn deny(
    code: i32,
    http_status: i32,
    headers: Vec<HeaderValueOption>,
    body: &str,
) -> CheckResponse {
    CheckResponse {
        status: Some(RpcStatus {
            code,
            ..RpcStatus::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus { code: http_status }),
            headers,
            body: body.into(),
        })),
        ..CheckResponse::default()
    }
}
