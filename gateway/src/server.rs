//! Listeners: accept connections and serve HTTP/1.1 and h2c (prior knowledge) on the same port.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::ext_authz::{AuthzBackend, Transport};
use crate::proxy::{self, Connection};

/// A gateway whose listeners are bound and not yet serving.
pub struct Gateway {
    config: Arc<Config>,
    sockets: Vec<TcpListener>,
}

impl Gateway {
    /// Binds every listener (port 0 lets the OS choose; see [`Gateway::local_addrs`]).
    pub async fn bind(config: Config) -> io::Result<Gateway> {
        let mut sockets = Vec::new();
        for l in &config.listeners {
            let socket = TcpListener::bind(l.address).await.map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("listener {} on {}: {e}", l.name, l.address),
                )
            })?;
            sockets.push(socket);
        }
        // Connect every gRPC authz backend now rather than inside the first request's check.
        let mut seen: Vec<*const AuthzBackend> = Vec::new();
        let policies = config
            .listeners
            .iter()
            .flat_map(|l| &l.policies)
            .chain(config.routes.iter().flat_map(|r| &r.policies));
        for policy in policies {
            if matches!(policy.transport, Transport::Grpc)
                && !seen.contains(&Arc::as_ptr(&policy.backend))
            {
                seen.push(Arc::as_ptr(&policy.backend));
                policy.backend.warm_up();
            }
        }
        Ok(Gateway {
            config: Arc::new(config),
            sockets,
        })
    }

    /// `(listener name, bound address)` for each listener.
    pub fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.config
            .listeners
            .iter()
            .zip(&self.sockets)
            .filter_map(|(l, s)| Some((l.name.clone(), s.local_addr().ok()?)))
            .collect()
    }

    /// Serves until every accept loop ends (they end only on accept errors that are fatal).
    pub async fn run(self) -> io::Result<()> {
        let mut loops = JoinSet::new();
        for (index, socket) in self.sockets.into_iter().enumerate() {
            loops.spawn(accept_loop(self.config.clone(), index, socket));
        }
        while let Some(result) = loops.join_next().await {
            result.map_err(io::Error::other)??;
        }
        Ok(())
    }
}

async fn accept_loop(config: Arc<Config>, index: usize, socket: TcpListener) -> io::Result<()> {
    let local = socket.local_addr()?;
    let max_headers = config.listeners[index].max_request_headers_bytes;
    loop {
        let (stream, peer) = match socket.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Running out of file descriptors is transient; back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            config: config.clone(),
            listener: index,
            peer,
            local,
        };
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let conn = conn.clone();
                async move { Ok::<_, Infallible>(proxy::serve(conn, req).await) }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .max_buf_size(max_headers.max(8192));
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_header_list_size(u32::try_from(max_headers).unwrap_or(u32::MAX));
            if let Err(e) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}
