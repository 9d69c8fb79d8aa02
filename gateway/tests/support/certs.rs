//! Certificates made at test time with rcgen (nothing is committed), and a TLS client.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::{Reply200, read};

/// A certificate and key written to disk, plus what a test compares against.
pub(crate) struct Issued {
    /// PEM certificate file.
    pub cert: PathBuf,
    /// PEM private key file.
    pub key: PathBuf,
    /// The certificate.
    pub der: CertificateDer<'static>,
    /// The certificate as PEM.
    pub cert_pem: String,
    /// The key as PEM.
    pub key_pem: String,
}

/// A test certificate authority writing into a directory.
pub(crate) struct Pki {
    dir: PathBuf,
    name: String,
    ca: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate's PEM file.
    pub ca_file: PathBuf,
    /// The CA certificate as PEM.
    pub ca_pem: String,
}

impl Pki {
    /// A new CA named `name`, its certificate written to `dir/<name>-ca.pem`.
    pub(crate) fn new(dir: &Path, name: &str) -> Pki {
        let mut params =
            CertificateParams::new(Vec::<String>::new()).expect("certificate parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(
            params,
            KeyPair::generate().expect("generates a key pair"),
        )
        .expect("generates a key pair");
        let ca_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, ca.pem()).expect("writes the file");
        Pki {
            dir: dir.to_path_buf(),
            name: name.to_owned(),
            ca_pem: ca.pem(),
            ca,
            ca_file,
        }
    }

    fn issue(&self, file: &str, sans: Vec<SanType>, usage: ExtendedKeyUsagePurpose) -> Issued {
        let mut params =
            CertificateParams::new(Vec::<String>::new()).expect("certificate parameters");
        params.subject_alt_names = sans;
        params
            .distinguished_name
            .push(DnType::CommonName, file.to_owned());
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("generates a key pair");
        let cert = params
            .signed_by(&key, &self.ca)
            .expect("signs the certificate");
        let cert_path = self.dir.join(format!("{}-{file}.pem", self.name));
        let key_path = self.dir.join(format!("{}-{file}.key", self.name));
        std::fs::write(&cert_path, cert.pem()).expect("writes the file");
        std::fs::write(&key_path, key.serialize_pem()).expect("writes the file");
        Issued {
            cert: cert_path,
            key: key_path,
            der: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A server certificate for `localhost` and `127.0.0.1`.
    pub(crate) fn server(&self, file: &str) -> Issued {
        self.issue(
            file,
            vec![
                SanType::DnsName(
                    "localhost"
                        .try_into()
                        .expect("a valid subject alternative name"),
                ),
                SanType::IpAddress([127, 0, 0, 1].into()),
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate with these subject alternative names.
    pub(crate) fn client(&self, file: &str, sans: Vec<SanType>) -> Issued {
        self.issue(file, sans, ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// A URI SAN.
pub(crate) fn uri(u: &str) -> SanType {
    SanType::URI(u.try_into().expect("a valid subject alternative name"))
}

/// A DNS SAN.
pub(crate) fn dns(d: &str) -> SanType {
    SanType::DnsName(d.try_into().expect("a valid subject alternative name"))
}

/// A rustls client trusting `ca_pem`, presenting `identity` when given.
pub(crate) fn client_config(ca_pem: &str, identity: Option<&Issued>) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(c.expect("a PEM certificate"))
            .expect("adds the CA certificate");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => builder
            .with_client_auth_cert(
                vec![id.der.clone()],
                PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).expect("a PEM private key"),
            )
            .expect("a PEM private key"),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Sends `req` over a fresh TLS connection to `addr` (server name `localhost`); any handshake
/// or protocol failure is an `Err` with its reason.
pub(crate) async fn tls_send(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    req: Request<Full<Bytes>>,
) -> Result<Reply200, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(
            ServerName::try_from("localhost").expect("a valid server name"),
            tcp,
        )
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    Ok(read(resp).await)
}
