//! What the proxy knows about the connection a request arrived on.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::state::Shared;
use crate::tls::PeerIdentity;

/// What the proxy knows about the connection a request arrived on.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The config snapshot in force and the metrics.
    pub shared: Arc<Shared>,
    /// Which of the config's listeners accepted the connection (reloads keep the listener list).
    pub listener: usize,
    /// The client's address.
    pub peer: SocketAddr,
    /// Our address the client connected to.
    pub local: SocketAddr,
    /// The TLS client's identity, on TLS listeners.
    pub tls: Option<Arc<PeerIdentity>>,
}

impl Connection {
    /// The listener's scheme: `https` on a TLS listener, else `http`.
    pub(crate) fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}
