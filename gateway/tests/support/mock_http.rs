//! An in-process ext_authz server speaking Envoy's HTTP protocol.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;

/// A request received by [`MockHttpAuthz`].
#[derive(Debug, Clone)]
pub(crate) struct SeenRequest {
    /// The request head.
    pub method: http::Method,
    /// The path and query.
    pub uri: String,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

type HttpHandler = Arc<dyn Fn(&SeenRequest) -> Response<Full<Bytes>> + Send + Sync>;

/// An in-process ext_authz server speaking Envoy's HTTP protocol, recording every request.
#[derive(Clone)]
pub(crate) struct MockHttpAuthz {
    /// Where it listens.
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<SeenRequest>>>,
}

impl MockHttpAuthz {
    /// Starts a server answering with `handler`.
    pub(crate) async fn start(
        handler: impl Fn(&SeenRequest) -> Response<Full<Bytes>> + Send + Sync + 'static,
    ) -> MockHttpAuthz {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds a loopback port");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let requests: Arc<Mutex<Vec<SeenRequest>>> = Arc::default();
        let handler: HttpHandler = Arc::new(handler);
        let recorded = requests.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.expect("accepts a connection");
                let handler = handler.clone();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let handler = handler.clone();
                        let recorded = recorded.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let seen = SeenRequest {
                                method: parts.method,
                                uri: parts.uri.to_string(),
                                headers: parts.headers,
                                body: body
                                    .collect()
                                    .await
                                    .expect("reads the whole body")
                                    .to_bytes(),
                            };
                            recorded
                                .lock()
                                .expect("the lock is not poisoned")
                                .push(seen.clone());
                            Ok::<_, std::convert::Infallible>(handler(&seen))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        MockHttpAuthz { addr, requests }
    }

    /// Every request received so far.
    pub(crate) fn requests(&self) -> Vec<SeenRequest> {
        self.requests
            .lock()
            .expect("the lock is not poisoned")
            .clone()
    }
}
