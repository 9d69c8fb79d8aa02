//! Listeners: accept connections (plaintext or TLS) up to each listener's `max_connections` and
//! hand each to the `listener` crate, which serves HTTP/1.1 and h2 on the same port under the
//! listener's limits, with [`crate::proxy`] answering every request; and the graceful drain on
//! shutdown. The state every request shares lives in [`crate::state`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use listener::ConnectionSlot;

use crate::config::Config;
use crate::ext_authz::Transport;
use crate::proxy::{self, Connection};
use crate::state::Shared;
use crate::tls::PeerIdentity;

/// How long a client may take to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A gateway whose listeners are bound and not yet serving.
pub struct Gateway {
    shared: Arc<Shared>,
    sockets: Vec<TcpListener>,
    admin: Option<TcpListener>,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every connection finished its requests in time.
    Clean,
    /// The deadline passed with this many connections still open; they were cut.
    DeadlinePassed(usize),
}

impl Gateway {
    /// Binds every listener and the admin endpoint (port 0 lets the OS choose; see
    /// [`Gateway::local_addrs`]) and starts connecting the gRPC authorization servers.
    pub async fn bind(config: Config) -> io::Result<Gateway> {
        let mut sockets = Vec::new();
        for l in &config.listeners {
            sockets.push(bind(l.address, &format!("listener {}", l.name)).await?);
        }
        let admin = match config.admin {
            Some(address) => Some(bind(address, "admin").await?),
            None => None,
        };
        warm_up(&config);
        Ok(Gateway {
            shared: Arc::new(Shared::new(config)),
            sockets,
            admin,
        })
    }

    /// `(listener name, bound address)` for each listener.
    pub fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.shared
            .config
            .load()
            .listeners
            .iter()
            .zip(&self.sockets)
            .filter_map(|(l, s)| Some((l.name.clone(), s.local_addr().ok()?)))
            .collect()
    }

    /// The admin endpoint's bound address, when configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|a| a.local_addr().ok())
    }

    /// The state requests share: swap `config` to reload (see [`crate::reload`]).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Serves until the process ends.
    pub async fn run(self) -> io::Result<()> {
        self.run_until(std::future::pending(), Duration::MAX)
            .await
            .map(|_| ())
    }

    /// Serves until `shutdown` completes, then drains: `/readyz` turns 503, the listeners close
    /// (new connections are refused), requests in flight finish — for at most `drain_timeout`,
    /// after which the remaining connections are cut.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()>,
        drain_timeout: Duration,
    ) -> io::Result<Drained> {
        let (stop_tx, stop_rx) = watch::channel(false);
        // Every connection holds a receiver: the count is the connections open, and `closed()`
        // resolves when the last one has ended.
        let (open_tx, _) = watch::channel(());
        let mut loops = JoinSet::new();
        for (index, socket) in self.sockets.into_iter().enumerate() {
            loops.spawn(accept_loop(
                self.shared.clone(),
                index,
                socket,
                stop_rx.clone(),
                open_tx.clone(),
            ));
        }
        let admin = self
            .admin
            .map(|socket| tokio::spawn(crate::admin::serve_admin(socket, self.shared.clone())));
        let pacer = tokio::spawn(timer_pacer());

        tokio::select! {
            () = shutdown => {}
            Some(result) = loops.join_next() => {
                result.map_err(io::Error::other)?;
            }
        }
        self.shared.start_draining();
        let _ = stop_tx.send(true);
        while loops.join_next().await.is_some() {}
        let open = open_tx.receiver_count();
        tracing::info!(
            connections = open,
            deadline_ms = u64::try_from(drain_timeout.as_millis()).unwrap_or(u64::MAX),
            "draining"
        );
        let drained = match tokio::time::timeout(drain_timeout, open_tx.closed()).await {
            Ok(()) => Drained::Clean,
            Err(_) => Drained::DeadlinePassed(open_tx.receiver_count()),
        };
        if let Some(admin) = admin {
            admin.abort();
        }
        pacer.abort();
        tracing::info!(?drained, "drained");
        Ok(drained)
    }
}

/// How often [`timer_pacer`] ticks: shorter than the ext_authz timeout (200 ms by default).
const PACER_PERIOD: Duration = Duration::from_millis(100);

/// Keeps a timer due within [`PACER_PERIOD`] at all times, so that arming a check's timeout
/// (every request with a policy) is never the runtime's earliest deadline. Tokio wakes its
/// driver (an `eventfd` write, then one more `epoll_wait`) whenever a timer is armed earlier
/// than the deadline the driver last promised to wake at — even when no thread is parked —
/// which cost two syscalls per checked request (strace, one request in flight). Ten ticks a
/// second cost nothing measurable; a timeout shorter than the period still works, with the
/// extra wake-up.
async fn timer_pacer() {
    let mut tick = tokio::time::interval(PACER_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

async fn bind(address: SocketAddr, what: &str) -> io::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("{what} on {address}: {e}")))
}

/// Connects every gRPC authorization server now rather than inside the first request's check.
pub(crate) fn warm_up(config: &Config) {
    let grpc_backends = config
        .listeners
        .iter()
        .flat_map(|l| &l.policies)
        .chain(config.routes.iter().flat_map(|r| &r.policies))
        .filter(|p| matches!(p.transport, Transport::Grpc))
        .map(|p| &p.backend);
    let mut seen = Vec::new();
    for backend in grpc_backends {
        if !seen.contains(&Arc::as_ptr(backend)) {
            seen.push(Arc::as_ptr(backend));
            backend.warm_up();
        }
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    index: usize,
    socket: TcpListener,
    mut stop: watch::Receiver<bool>,
    open: watch::Sender<()>,
) {
    let Ok(local) = socket.local_addr() else {
        return;
    };
    let count = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            accepted = socket.accept() => accepted,
            _ = stop.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Running out of file descriptors is transient; back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // The limit comes from the snapshot in force, so a reload can raise or lower it.
        let max = shared.config.load().listeners[index].limits.max_connections;
        let Some(slot) = ConnectionSlot::take(&count, max) else {
            // Closing at once (rather than leaving it in the backlog) tells the client now, as
            // Envoy's connection limit does; the kernel backlog would only delay the same answer.
            tracing::debug!(%peer, max, "connection refused: max_connections reached");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let (drain, open) = (stop.clone(), open.subscribe());
        tokio::spawn(async move {
            serve_connection(shared, index, stream, peer, local, drain).await;
            drop((slot, open));
        });
    }
}

async fn serve_connection(
    shared: Arc<Shared>,
    index: usize,
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    drain: watch::Receiver<bool>,
) {
    // The listener's TLS and limits come from the snapshot in force when the connection
    // arrives, so a reload rotates certificates and changes limits for new connections.
    let (tls, limits) = {
        let config = shared.config.load();
        let listener = &config.listeners[index];
        (listener.tls.clone(), listener.limits.clone())
    };
    let mut conn = Connection {
        shared,
        listener: index,
        peer,
        local,
        tls: None,
    };
    let Some(tls) = tls else {
        let handler = move |req| proxy::serve_request(conn.clone(), req);
        return listener::serve_connection(stream, &limits, handler, drain).await;
    };
    // The handshake is part of the time a client has to send its first request.
    let handshake = tokio::time::timeout(
        TLS_HANDSHAKE_TIMEOUT.min(limits.request_headers_timeout),
        tls.acceptor.accept(stream),
    );
    let stream = match handshake.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    conn.tls = Some(Arc::new(PeerIdentity::new(
        stream.get_ref().1.peer_certificates(),
        &tls.local_principal,
    )));
    let handler = move |req| proxy::serve_request(conn.clone(), req);
    listener::serve_connection(stream, &limits, handler, drain).await;
}
