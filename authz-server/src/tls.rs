//! TLS for the gRPC port: a server certificate, and optionally a CA that client certificates
//! must chain to (mutual TLS).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// The `[server.tls]` table. Relative paths are relative to the config file's directory.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The server's certificate chain, PEM.
    pub cert: PathBuf,
    /// The server's private key, PEM.
    pub key: PathBuf,
    /// CA bundle (PEM) that client certificates must chain to; when set, clients must present
    /// one (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// A TLS setting that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("TLS: cannot read {path}: {source}")]
pub struct TlsError {
    /// The file.
    pub path: String,
    /// The OS's reason.
    pub source: std::io::Error,
}

impl TlsSection {
    /// Resolves relative paths against `base` (the config file's directory).
    pub fn relative_to(mut self, base: &Path) -> Self {
        let resolve = |path: PathBuf| {
            if path.is_relative() {
                base.join(path)
            } else {
                path
            }
        };
        self.cert = resolve(self.cert);
        self.key = resolve(self.key);
        self.client_ca = self.client_ca.map(resolve);
        self
    }

    /// Reads the files into tonic's server TLS config.
    pub fn load(&self) -> Result<ServerTlsConfig, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError {
                path: path.display().to_string(),
                source,
            })
        };
        let identity = Identity::from_pem(read(&self.cert)?, read(&self.key)?);
        let mut config = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(Certificate::from_pem(read(ca)?));
        }
        Ok(config)
    }
}
