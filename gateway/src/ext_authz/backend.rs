//! An ext_authz server and its connections, shared by every policy that names it.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ::http::uri::Authority;
use tonic::transport::{Channel, Endpoint};

use super::h2c;
use crate::tls::ClientTls;
use crate::upstream::HttpClient;

/// How long connecting to an authorization server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// An ext_authz server. Both transports share it: one long-lived, multiplexed, reconnecting
/// HTTP/2 connection for gRPC (driven directly, see [`h2c`], or tonic's channel over TLS), one
/// keep-alive pool for HTTP, each created on first use.
#[derive(Debug)]
pub struct AuthzBackend {
    /// The name policies use.
    pub name: String,
    /// `host:port`.
    pub authority: Authority,
    /// TLS to the server (`https://`), or plaintext h2c.
    pub tls: Option<ClientTls>,
    endpoint: Endpoint,
    channel: tokio::sync::OnceCell<Channel>,
    /// The plaintext (h2c) connection; `None` over TLS, which uses `channel`.
    h2c: Option<h2c::H2Channel>,
    http: OnceLock<HttpClient>,
}

impl AuthzBackend {
    /// A backend at `authority`, over TLS when `tls` is set; nothing connects until the first
    /// check.
    pub fn new(
        name: String,
        authority: Authority,
        tls: Option<ClientTls>,
    ) -> Result<AuthzBackend, String> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{authority}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        if let Some(tls) = &tls {
            endpoint = endpoint
                .tls_config(tls.tonic())
                .map_err(|e| format!("tls: {e}"))?;
        }
        let h2c = tls
            .is_none()
            .then(|| h2c::H2Channel::new(authority.clone(), CONNECT_TIMEOUT));
        Ok(AuthzBackend {
            name,
            authority,
            tls,
            h2c,
            endpoint,
            channel: tokio::sync::OnceCell::new(),
            http: OnceLock::new(),
        })
    }

    /// The shared gRPC channel. The first caller connects (the gateway does so at startup, see
    /// [`AuthzBackend::warm_up`]) so the first check does not pay for the handshake inside its
    /// 200 ms budget; if that connect fails the channel connects lazily and keeps reconnecting.
    pub async fn channel(&self) -> Channel {
        self.channel
            .get_or_init(|| async {
                match self.endpoint.connect().await {
                    Ok(channel) => channel,
                    Err(e) => {
                        tracing::warn!(authz_backend = %self.name, error = %e, "ext_authz server not reachable yet; will retry on demand");
                        self.endpoint.connect_lazy()
                    }
                }
            })
            .await
            .clone()
    }

    /// The plaintext HTTP/2 connection, when the server is not behind TLS.
    pub fn h2c(&self) -> Option<&h2c::H2Channel> {
        self.h2c.as_ref()
    }

    /// Connects the gRPC transport now (a failure is logged; calls reconnect on demand).
    pub async fn connect(&self) {
        match &self.h2c {
            Some(h2c) => {
                if let Err(e) = h2c.connect().await {
                    tracing::warn!(authz_backend = %self.name, error = %e, "ext_authz server not reachable yet; will retry on demand");
                }
            }
            None => {
                self.channel().await;
            }
        }
    }

    /// Starts connecting the gRPC transport in the background.
    pub fn warm_up(self: &Arc<Self>) {
        let backend = self.clone();
        tokio::spawn(async move {
            backend.connect().await;
        });
    }

    /// The shared HTTP client.
    pub fn http_client(&self) -> &HttpClient {
        self.http
            .get_or_init(|| crate::upstream::http_client(Duration::from_secs(2)))
    }
}
