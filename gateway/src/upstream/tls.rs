//! TLS from the gateway to a backend: which roots verify the backend (the `ca` file, else the
//! platform's store, else the bundled Mozilla roots when the platform has none), an optional
//! client identity (mutual TLS), the server name and ALPN. Built when the config is compiled, so a
//! bad file is a config error with its place; nothing here can switch verification off.

use std::sync::{Arc, OnceLock};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};

use super::protocol::Protocol;
use crate::tls::{provider, read_certs, read_key};

/// A backend's TLS settings as read from disk (compared across reloads so an unchanged backend
/// keeps its connections).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendTls {
    /// PEM file of the CAs that sign the backend's certificate; `None`: the platform's roots.
    pub ca: Option<String>,
    /// PEM files of the gateway's client certificate and key, for mutual TLS.
    pub identity: Option<(String, String)>,
    /// The server name to send and verify; `None`: the URL's host.
    pub sni: Option<String>,
    /// The bytes of the files above when the config was read: a renewed certificate at the same
    /// path makes the settings differ, so a reload builds a new client.
    pub contents: Vec<Vec<u8>>,
}

/// Everything a connect needs for the TLS step, built once per backend.
#[derive(Clone)]
pub struct TlsClient {
    /// rustls's client, with the roots, identity and ALPN.
    pub connector: tokio_rustls::TlsConnector,
    /// The name sent (SNI) and verified against the certificate.
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// Loads the files of `settings` and builds the client for a backend whose URL host is
    /// `host`. ALPN follows `protocol`: `h2` and `http/1.1` for auto, one of them otherwise.
    pub fn new(settings: &BackendTls, host: &str, protocol: Protocol) -> Result<TlsClient, String> {
        let roots = match &settings.ca {
            Some(ca) => Arc::new(file_roots(ca)?),
            None => platform_roots(),
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let mut config = match &settings.identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
                .map_err(|e| format!("`{cert}` and `{key}` do not go together: {e}"))?,
        };
        config.alpn_protocols = match protocol {
            Protocol::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Protocol::Http2 => vec![b"h2".to_vec()],
            Protocol::Http1 => vec![b"http/1.1".to_vec()],
        };
        let name = settings.sni.as_deref().unwrap_or(host);
        // A bracketed IPv6 host as written in a URL.
        let name = name.trim_start_matches('[').trim_end_matches(']');
        let server_name = ServerName::try_from(name.to_owned())
            .map_err(|_| format!("`{name}` is not a valid TLS server name"))?;
        Ok(TlsClient {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}

/// The CAs of a PEM file.
fn file_roots(ca: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for c in read_certs(ca)? {
        roots
            .add(c)
            .map_err(|e| format!("`{ca}`: not a usable CA certificate: {e}"))?;
    }
    Ok(roots)
}

/// The platform's trusted roots, read once per process; the bundled Mozilla roots
/// (`webpki-roots`) when the platform store is empty or unreadable (a scratch container).
fn platform_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::info!(
                    "no usable certificates in the platform's trust store; using the bundled Mozilla roots"
                );
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
            Arc::new(roots)
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_roots_are_never_empty() {
        assert!(!platform_roots().is_empty());
    }

    #[test]
    fn alpn_follows_the_protocol_and_sni_defaults_to_the_host() {
        let settings = BackendTls::default();
        let client = TlsClient::new(&settings, "api.example", Protocol::Http2).expect("builds");
        assert_eq!(
            client.server_name,
            ServerName::try_from("api.example").expect("a name")
        );
        let sni = BackendTls {
            sni: Some("other.example".into()),
            ..BackendTls::default()
        };
        let client = TlsClient::new(&sni, "10.0.0.1", Protocol::Auto).expect("builds");
        assert_eq!(
            client.server_name,
            ServerName::try_from("other.example").expect("a name")
        );
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let settings = BackendTls {
            ca: Some("no-such-ca.pem".into()),
            ..BackendTls::default()
        };
        let e = TlsClient::new(&settings, "h", Protocol::Auto).expect_err("refused");
        assert!(e.contains("cannot read `no-such-ca.pem`"), "{e}");
    }
}
