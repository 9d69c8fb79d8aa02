//! TLS and mutual TLS on the gRPC port, with certificates generated at run time.

use std::net::SocketAddr;

use authz_server::{Config, RuleEngine, Server};
use e2e::v3_check;
use extauthz_proto::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::sync::oneshot;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, ServerTlsConfig};

struct Ca(CertifiedIssuer<'static, KeyPair>);

/// A certificate and its key, PEM.
struct Leaf {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        Ca(CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA"))
    }

    fn pem(&self) -> String {
        self.0.pem()
    }

    fn issue(&self, names: &[&str]) -> Leaf {
        let params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("params");
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.0).expect("signed");
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

struct Running {
    grpc: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn start(tls: ServerTlsConfig) -> Running {
    let rules = Config::builtin().expect("built-in").rules;
    let server = Server::bind(
        RuleEngine::new(rules),
        Some("127.0.0.1:0".parse().expect("address")),
        None,
    )
    .await
    .expect("binds")
    .with_tls(tls);
    let grpc = server.grpc_addr().expect("bound");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve_until(async {
        let _ = stopped.await;
    }));
    Running { grpc, _stop: stop }
}

/// Connects and runs one allowed Check; Ok(()) only if the whole exchange worked.
async fn check_over(address: SocketAddr, tls: ClientTlsConfig) -> Result<(), String> {
    let channel = Channel::from_shared(format!("https://localhost:{}", address.port()))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let response = AuthorizationClient::new(channel)
        .check(v3_check(&[("x-ext-authz", "allow")], ""))
        .await
        .map_err(|e| format!("check: {e:?}"))?;
    match response.get_ref().status.as_ref().map(|s| s.code) {
        Some(0) => Ok(()),
        other => Err(format!("unexpected status {other:?}")),
    }
}

fn trusting(ca: &Ca) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.pem()))
        .domain_name("localhost")
}

#[tokio::test]
async fn tls_handshake_succeeds_with_the_right_ca_and_fails_otherwise() {
    let ca = Ca::new("test ca");
    let server_leaf = ca.issue(&["localhost"]);
    let server = start(
        ServerTlsConfig::new().identity(Identity::from_pem(&server_leaf.cert, &server_leaf.key)),
    )
    .await;

    check_over(server.grpc, trusting(&ca))
        .await
        .expect("trusted CA works");

    let stranger = Ca::new("someone else");
    assert!(
        check_over(server.grpc, trusting(&stranger)).await.is_err(),
        "unknown CA is refused"
    );

    let plaintext = Channel::from_shared(format!("http://{}", server.grpc))
        .expect("uri")
        .connect()
        .await;
    let plaintext_check = match plaintext {
        Ok(channel) => AuthorizationClient::new(channel)
            .check(v3_check(&[("x-ext-authz", "allow")], ""))
            .await
            .is_ok(),
        Err(_) => false,
    };
    assert!(
        !plaintext_check,
        "plaintext gRPC is not served on a TLS port"
    );
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_client_ca() {
    let server_ca = Ca::new("server ca");
    let client_ca = Ca::new("client ca");
    let server_leaf = server_ca.issue(&["localhost"]);
    let server = start(
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&server_leaf.cert, &server_leaf.key))
            .client_ca_root(Certificate::from_pem(client_ca.pem())),
    )
    .await;

    let client = client_ca.issue(&["gateway.example"]);
    check_over(
        server.grpc,
        trusting(&server_ca).identity(Identity::from_pem(&client.cert, &client.key)),
    )
    .await
    .expect("a client certificate from the client CA works");

    assert!(
        check_over(server.grpc, trusting(&server_ca)).await.is_err(),
        "no client certificate is refused"
    );

    let rogue = Ca::new("rogue ca").issue(&["gateway.example"]);
    assert!(
        check_over(
            server.grpc,
            trusting(&server_ca).identity(Identity::from_pem(&rogue.cert, &rogue.key)),
        )
        .await
        .is_err(),
        "a client certificate from another CA is refused"
    );
}
