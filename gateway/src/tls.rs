//! TLS with rustls and its `ring` provider: the listener's server side (optionally mutual), what
//! Envoy puts in a check from the client's certificate (`source.principal`,
//! `source.certificate`), and the client settings for authorization servers behind `https://`.
//!
//! Everything here is loaded and checked when the config is compiled, so a bad certificate is a
//! config error with its place, never a failure on the request path.

use std::fmt;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;
use x509_parser::extensions::GeneralName;

/// The one crypto provider the gateway uses (no aws-lc).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM file's bytes.
fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read `{path}`: {e}"))
}

/// Every certificate in a PEM file; at least one.
pub fn read_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("`{path}`: invalid PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("`{path}`: no certificate in the file"));
    }
    Ok(certs)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(&read(path)?)
        .map_err(|e| format!("`{path}`: no usable private key: {e}"))
}

/// A listener's TLS termination, compiled.
pub struct ListenerTls {
    /// Accepts TLS connections with the configured certificate and client verification.
    pub acceptor: TlsAcceptor,
    /// Our own certificate's principal (`destination.principal` of a check).
    pub local_principal: String,
}

impl fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerTls")
            .field("local_principal", &self.local_principal)
            .finish_non_exhaustive()
    }
}

/// Builds a listener's TLS from PEM files. With `client_ca` clients are verified against it;
/// `require_client_cert` decides whether a client without a certificate is refused.
pub fn listener_tls(
    cert: &str,
    key: &str,
    client_ca: Option<&str>,
    require_client_cert: bool,
) -> Result<ListenerTls, String> {
    let chain = read_certs(cert)?;
    let key = read_key(key)?;
    let local_principal = principal(&chain[0]);
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(ca)? {
                roots
                    .add(c)
                    .map_err(|e| format!("`{ca}`: not a usable CA certificate: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let verifier = if require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("`{ca}`: client verifier: {e}"))?,
            )
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("certificate and key do not go together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ListenerTls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        local_principal,
    })
}

/// What a check learns from a TLS connection's client.
#[derive(Debug, Clone, Default)]
pub struct PeerIdentity {
    /// `source.principal`: the client certificate's first URI SAN, else its first DNS SAN, else
    /// empty (Envoy's order).
    pub principal: String,
    /// `source.certificate`: the client certificate as URL-encoded PEM (Envoy's encoding); empty
    /// without a client certificate.
    pub certificate: String,
    /// `destination.principal`: our own certificate's principal.
    pub local_principal: String,
}

impl PeerIdentity {
    /// The identity of a client that presented `peer_certs` (leaf first) to a listener whose
    /// own principal is `local_principal`.
    pub fn new(peer_certs: Option<&[CertificateDer<'_>]>, local_principal: &str) -> PeerIdentity {
        let leaf = peer_certs.and_then(|c| c.first());
        PeerIdentity {
            principal: leaf.map(principal).unwrap_or_default(),
            certificate: leaf.map(url_encoded_pem).unwrap_or_default(),
            local_principal: local_principal.to_owned(),
        }
    }
}

/// A certificate's principal as Envoy names it: the first URI SAN, else the first DNS SAN.
pub fn principal(cert: &CertificateDer<'_>) -> String {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return String::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return String::new();
    };
    let names = &san.value.general_names;
    let uri = names.iter().find_map(|n| match n {
        GeneralName::URI(u) => Some(*u),
        _ => None,
    });
    let dns = names.iter().find_map(|n| match n {
        GeneralName::DNSName(d) => Some(*d),
        _ => None,
    });
    uri.or(dns).unwrap_or_default().to_owned()
}

/// The certificate as PEM, percent-encoded the way Envoy encodes `source.certificate` (every
/// byte but the unreserved `A-Z a-z 0-9 - . _ ~`).
pub fn url_encoded_pem(cert: &CertificateDer<'_>) -> String {
    const ENCODE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(&pem(cert.as_ref()), ENCODE).to_string()
}

/// DER → `-----BEGIN CERTIFICATE-----` PEM with 64-character lines.
fn pem(der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// TLS from the gateway to an authorization server, as read from disk (compared across reloads
/// so an unchanged server keeps its connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM of the CAs that sign the server's certificate.
    pub ca: Vec<u8>,
    /// PEM of the client certificate and key, for mutual TLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The server name to send and verify; `None`: the URL's host.
    pub sni: Option<String>,
}

impl ClientTls {
    /// Reads and checks the PEM files.
    pub fn load(
        ca: &str,
        identity: Option<(&str, &str)>,
        sni: Option<String>,
    ) -> Result<ClientTls, String> {
        read_certs(ca)?;
        let identity = match identity {
            None => None,
            Some((cert, key)) => {
                read_certs(cert)?;
                read_key(key)?;
                Some((read(cert)?, read(key)?))
            }
        };
        Ok(ClientTls {
            ca: read(ca)?,
            identity,
            sni,
        })
    }

    /// tonic's client settings.
    pub fn tonic(&self) -> tonic::transport::ClientTlsConfig {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca));
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(sni) = &self.sni {
            config = config.domain_name(sni.clone());
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_base64_pads_like_the_standard() {
        let p = pem(b"Man");
        assert_eq!(
            p,
            "-----BEGIN CERTIFICATE-----\nTWFu\n-----END CERTIFICATE-----\n"
        );
        assert!(pem(b"Ma").contains("\nTWE=\n"));
        assert!(pem(b"M").contains("\nTQ==\n"));
        assert_eq!(pem(&[0u8; 48]).lines().nth(1).map(str::len), Some(64));
    }

    #[test]
    fn url_encoding_keeps_only_unreserved() {
        let enc = url_encoded_pem(&CertificateDer::from(b"Man".to_vec()));
        assert_eq!(
            enc,
            "-----BEGIN%20CERTIFICATE-----%0ATWFu%0A-----END%20CERTIFICATE-----%0A"
        );
    }
}
