//! TLS and mutual TLS, both ways: the gateway's listener terminating TLS (the client certificate
//! becomes `source.principal` / `source.certificate`), and the gateway's connection to its
//! authorization server. Certificates are generated at test time.

mod support;

use std::net::SocketAddr;
use std::path::Path;

use http::StatusCode;
use support::certs::{Issued, Pki, client_config, dns, tls_send, uri};
use support::*;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

const SA_A: &str = "spiffe://cluster.local/ns/default/sa/a";
const SA_B: &str = "spiffe://cluster.local/ns/default/sa/b";

/// The seed's gateway with a TLS listener: `tls` is the inline table's body.
fn tls_gateway(backend: SocketAddr, authz: SocketAddr, tls: &str, policy_extra: &str) -> String {
    format!(
        r#"
[[listeners]]
name = "gw"
address = "127.0.0.1:0"
tls = {{ {tls} }}

[[backends]]
name = "openai"
url = "http://{backend}"

[[routes]]
name = "openai"
path = {{ prefix = "/openai" }}
backend = "openai"

[[authz_backends]]
name = "authz"
url = "http://{authz}"

[[policies]]
name = "gateway-ext-auth-policy"
target_refs = [{{ kind = "Gateway", name = "gw" }}]
ext_auth = {{ backend = "authz", grpc = {{}} {policy_extra} }}
"#
    )
}

fn server_tls(server: &Issued) -> String {
    format!(
        "cert = {:?}, key = {:?}",
        server.cert.display().to_string(),
        server.key.display().to_string()
    )
}

fn mtls(server: &Issued, ca: &Path, required: bool) -> String {
    format!(
        "{}, client_ca = {:?}, require_client_cert = {required}",
        server_tls(server),
        ca.display().to_string()
    )
}

#[tokio::test]
async fn tls_listener_serves_clients_that_trust_its_ca_and_only_them() {
    let dir = testkit::scratch_dir("tls-listener");
    let pki = Pki::new(&dir, "main");
    let other = Pki::new(&dir, "other");
    let server = pki.server("gateway");
    let backend = start_backend().await;
    let authz = MockAuthz::istio().await;
    let gw = start_test_gateway(&tls_gateway(backend, authz.addr, &server_tls(&server), "")).await;

    let allow = [("x-ext-authz", "allow")];
    let ok = tls_send(
        gw.addr,
        client_config(&pki.ca_pem, None),
        seed_post(gw.addr, "/openai", &allow),
    )
    .await
    .unwrap();
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(
        ok.backend_saw("x-forwarded-proto").as_deref(),
        Some("https")
    );
    let check = authz.last_http();
    assert_eq!(check.scheme, "https");
    assert_eq!(check.headers[":scheme"], "https");
    // No client certificate: no principal, but our own certificate names the destination.
    let attrs = authz.requests().last().unwrap().attributes.clone().unwrap();
    assert_eq!(attrs.source.unwrap().principal, "");
    assert_eq!(attrs.destination.unwrap().principal, "localhost");

    // A client that trusts another CA refuses the gateway's certificate.
    let err = tls_send(
        gw.addr,
        client_config(&other.ca_pem, None),
        seed_post(gw.addr, "/openai", &allow),
    )
    .await
    .err()
    .expect("handshake must fail");
    assert!(err.contains("handshake"), "{err}");
    // Plaintext on the TLS port gets no HTTP answer.
    let plain = client().request(get(gw.addr, "/openai", &allow)).await;
    assert!(plain.is_err(), "plaintext request answered");
}

#[tokio::test]
async fn mtls_required_refuses_missing_and_foreign_certificates_and_passes_the_principal() {
    let dir = testkit::scratch_dir("mtls-required");
    let pki = Pki::new(&dir, "main");
    let other = Pki::new(&dir, "other");
    let server = pki.server("gateway");
    let sa_a = pki.client("sa-a", vec![uri(SA_A), dns("a.default.svc")]);
    let foreign = other.client("foreign", vec![uri(SA_A)]);
    let backend = start_backend().await;
    let authz = MockAuthz::istio().await;
    let gw = start_test_gateway(&tls_gateway(
        backend,
        authz.addr,
        &mtls(&server, &pki.ca_file, true),
        ", include_peer_certificate = true",
    ))
    .await;
    let allow = [("x-ext-authz", "allow")];

    for (who, config) in [
        ("no certificate", client_config(&pki.ca_pem, None)),
        (
            "a certificate from another CA",
            client_config(&pki.ca_pem, Some(&foreign)),
        ),
    ] {
        let result = tls_send(gw.addr, config, seed_post(gw.addr, "/openai", &allow)).await;
        assert!(
            result.is_err(),
            "{who}: answered {:?}",
            result.map(|r| r.status)
        );
    }
    assert_eq!(
        authz.count(),
        0,
        "a refused client reached the authorization server"
    );

    let ok = tls_send(
        gw.addr,
        client_config(&pki.ca_pem, Some(&sa_a)),
        seed_post(gw.addr, "/openai", &allow),
    )
    .await
    .unwrap();
    assert_eq!(ok.status, StatusCode::OK);
    let source = authz.requests()[0]
        .attributes
        .clone()
        .unwrap()
        .source
        .unwrap();
    // URI SAN first (the DNS SAN is ignored when a URI SAN exists).
    assert_eq!(source.principal, SA_A);
    // source.certificate: the client certificate, URL-encoded PEM.
    assert!(
        source
            .certificate
            .starts_with("-----BEGIN%20CERTIFICATE-----%0A"),
        "{}",
        source.certificate
    );
    let pem = percent_encoding::percent_decode_str(&source.certificate)
        .decode_utf8()
        .unwrap()
        .into_owned();
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    assert_eq!(der, sa_a.der);
}

#[tokio::test]
async fn the_principal_falls_back_to_the_dns_san_and_the_certificate_is_sent_only_when_asked() {
    let dir = testkit::scratch_dir("mtls-dns");
    let pki = Pki::new(&dir, "main");
    let server = pki.server("gateway");
    let dns_only = pki.client("dns-only", vec![dns("client.example.com")]);
    let backend = start_backend().await;
    let authz = MockAuthz::istio().await;
    let gw = start_test_gateway(&tls_gateway(
        backend,
        authz.addr,
        &mtls(&server, &pki.ca_file, true),
        "",
    ))
    .await;
    let r = tls_send(
        gw.addr,
        client_config(&pki.ca_pem, Some(&dns_only)),
        seed_post(gw.addr, "/openai", &[("x-ext-authz", "allow")]),
    )
    .await
    .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let source = authz.requests()[0]
        .attributes
        .clone()
        .unwrap()
        .source
        .unwrap();
    assert_eq!(source.principal, "client.example.com");
    assert_eq!(source.certificate, "", "include_peer_certificate is off");
}

#[tokio::test]
async fn optional_mtls_lets_clients_without_a_certificate_in_without_a_principal() {
    let dir = testkit::scratch_dir("mtls-optional");
    let pki = Pki::new(&dir, "main");
    let other = Pki::new(&dir, "other");
    let server = pki.server("gateway");
    let sa_b = pki.client("sa-b", vec![uri(SA_B)]);
    let foreign = other.client("foreign", vec![uri(SA_A)]);
    let backend = start_backend().await;
    let authz = MockAuthz::istio().await;
    let gw = start_test_gateway(&tls_gateway(
        backend,
        authz.addr,
        &mtls(&server, &pki.ca_file, false),
        "",
    ))
    .await;
    let allow = [("x-ext-authz", "allow")];

    let anonymous = tls_send(
        gw.addr,
        client_config(&pki.ca_pem, None),
        seed_post(gw.addr, "/openai", &allow),
    )
    .await
    .unwrap();
    assert_eq!(anonymous.status, StatusCode::OK);
    let with_cert = tls_send(
        gw.addr,
        client_config(&pki.ca_pem, Some(&sa_b)),
        seed_post(gw.addr, "/openai", &allow),
    )
    .await
    .unwrap();
    assert_eq!(with_cert.status, StatusCode::OK);
    let principals: Vec<String> = authz
        .requests()
        .into_iter()
        .map(|r| r.attributes.unwrap().source.unwrap().principal)
        .collect();
    assert_eq!(principals, ["", SA_B]);
    // A certificate that is presented must still verify.
    let result = tls_send(
        gw.addr,
        client_config(&pki.ca_pem, Some(&foreign)),
        seed_post(gw.addr, "/openai", &allow),
    )
    .await;
    assert!(result.is_err(), "foreign certificate accepted");
}

/// A gateway whose authz backend is `https://localhost:PORT` with `tls` as given.
fn gateway_to_tls_authz(backend: SocketAddr, authz_port: u16, tls: &str) -> String {
    seed_config(
        backend,
        "127.0.0.1:1".parse().expect("a socket address"),
        GATEWAY_POLICY,
    )
    .replace(
        "url = \"http://127.0.0.1:1\"",
        &format!("url = \"https://localhost:{authz_port}\"\ntls = {{ {tls} }}"),
    )
}

#[tokio::test]
async fn the_gateway_reaches_its_authz_server_over_tls_and_mtls() {
    let dir = testkit::scratch_dir("authz-tls");
    let pki = Pki::new(&dir, "main");
    let other = Pki::new(&dir, "other");
    let authz_cert = pki.server("authz");
    let gateway_client = pki.client(
        "gateway",
        vec![uri("spiffe://cluster.local/ns/gw/sa/gateway")],
    );
    let backend = start_backend().await;
    let identity = || Identity::from_pem(&authz_cert.cert_pem, &authz_cert.key_pem);
    let allow = [("x-ext-authz", "allow")];
    let istio = |req: &extauthz_proto::v3::CheckRequest| {
        Reply::Respond(istio_response(
            http_of(req).headers.get("x-ext-authz").map(String::as_str) == Some("allow"),
        ))
    };

    // TLS: the gateway verifies the server against the CA.
    let tls_authz =
        MockAuthz::start_with(istio, Some(ServerTlsConfig::new().identity(identity()))).await;
    let ca = format!("ca = {:?}", pki.ca_file.display().to_string());
    let gw = start_gateway(&gateway_to_tls_authz(backend, tls_authz.addr.port(), &ca)).await;
    assert_eq!(
        send(seed_post(gw, "/openai", &allow)).await.status,
        StatusCode::OK
    );
    assert_eq!(send(seed_post(gw, "/openai", &[])).await.text(), DENY_BODY);

    // The wrong CA: the handshake fails, the check is an error, status_on_error (403, empty).
    let wrong_ca = format!(
        "ca = {:?}, sni = \"localhost\"",
        other.ca_file.display().to_string()
    );
    let gw = start_gateway(&gateway_to_tls_authz(
        backend,
        tls_authz.addr.port(),
        &wrong_ca,
    ))
    .await;
    let r = send(seed_post(gw, "/openai", &allow)).await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::FORBIDDEN, ""));

    // mTLS: the server requires a client certificate from the CA.
    let mtls_authz = MockAuthz::start_with(
        istio,
        Some(
            ServerTlsConfig::new()
                .identity(identity())
                .client_ca_root(Certificate::from_pem(&pki.ca_pem)),
        ),
    )
    .await;
    let without_cert =
        start_gateway(&gateway_to_tls_authz(backend, mtls_authz.addr.port(), &ca)).await;
    let r = send(seed_post(without_cert, "/openai", &allow)).await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::FORBIDDEN, ""));
    assert_eq!(mtls_authz.count(), 0);

    let with_cert = format!(
        "{ca}, cert = {:?}, key = {:?}",
        gateway_client.cert.display().to_string(),
        gateway_client.key.display().to_string()
    );
    let gw = start_gateway(&gateway_to_tls_authz(
        backend,
        mtls_authz.addr.port(),
        &with_cert,
    ))
    .await;
    let r = send(seed_post(gw, "/openai", &allow)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.backend_saw("x-ext-authz-check-result").as_deref(),
        Some("allowed")
    );
    assert_eq!(mtls_authz.count(), 1);
}

#[test]
fn tls_settings_are_checked_when_the_config_is_loaded() {
    let dir = testkit::scratch_dir("tls-config");
    let missing = dir.join("missing.pem").display().to_string();
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let not_pem = not_pem.display().to_string();
    let base = "[[listeners]]\nname = \"gw\"\naddress = \"127.0.0.1:0\"\n";
    let cases: Vec<(String, String)> = vec![
        (
            format!("{base}tls = {{ cert = {missing:?}, key = {missing:?} }}\n"),
            format!("t.toml:4:16: tls: cannot read `{missing}`: No such file or directory (os error 2)"),
        ),
        (
            format!("{base}tls = {{ cert = {not_pem:?}, key = {not_pem:?} }}\n"),
            format!("t.toml:4:16: tls: `{not_pem}`: no certificate in the file"),
        ),
        (
            "[[listeners]]\nname = \"gw\"\naddress = \"127.0.0.1:0\"\n[[authz_backends]]\nname = \"a\"\nurl = \"https://localhost:1\"\n".into(),
            "t.toml:6:7: an https:// authz backend needs `tls = { ca = ... }`".into(),
        ),
        (
            format!("[[listeners]]\nname = \"gw\"\naddress = \"127.0.0.1:0\"\n[[authz_backends]]\nname = \"a\"\nurl = \"http://localhost:1\"\ntls = {{ ca = {missing:?} }}\n"),
            "t.toml:7:14: `tls` needs an https:// url".into(),
        ),
    ];
    for (text, want) in cases {
        let err = gateway::Config::from_toml(&text, "t.toml").unwrap_err();
        assert_eq!(err.to_string(), want, "{text}");
    }
}

#[tokio::test]
async fn istio_sa_a_fallback_through_a_real_mtls_gateway() {
    let Some(bin) = testkit::binary(
        "istio_sa_a_fallback_through_a_real_mtls_gateway",
        "authz-server",
    ) else {
        return;
    };
    use std::io::BufRead;
    let mut server = std::process::Command::new(bin)
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut grpc = None;
    let mut lines = std::io::BufReader::new(server.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(addr) = line.strip_prefix("listening grpc ") {
            grpc = Some(addr.trim().parse::<SocketAddr>().unwrap());
            break;
        }
    }
    // Keep reading so the server's later stdout lines never meet a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(server);
    let grpc = grpc.expect("authz-server printed no `listening grpc` line");

    let dir = testkit::scratch_dir("istio-sa");
    let pki = Pki::new(&dir, "mesh");
    let server_cert = pki.server("gateway");
    let sa_a = pki.client("sa-a", vec![uri(SA_A)]);
    let sa_b = pki.client("sa-b", vec![uri(SA_B)]);
    let backend = start_backend().await;
    let gw = start_test_gateway(&tls_gateway(
        backend,
        grpc,
        &mtls(&server_cert, &pki.ca_file, true),
        "",
    ))
    .await;

    // No x-ext-authz header: the principal decides.
    let a = tls_send(
        gw.addr,
        client_config(&pki.ca_pem, Some(&sa_a)),
        seed_post(gw.addr, "/openai", &[]),
    )
    .await
    .unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(
        a.backend_saw("x-ext-authz-check-result").as_deref(),
        Some("allowed")
    );
    let b = tls_send(
        gw.addr,
        client_config(&pki.ca_pem, Some(&sa_b)),
        seed_post(gw.addr, "/openai", &[]),
    )
    .await
    .unwrap();
    assert_eq!(b.status, StatusCode::FORBIDDEN);
    assert_eq!(b.text(), DENY_BODY);
    assert_eq!(b.headers["x-ext-authz-check-result"], "denied");
    // The header still wins for sa/b.
    let b_allowed = tls_send(
        gw.addr,
        client_config(&pki.ca_pem, Some(&sa_b)),
        seed_post(gw.addr, "/openai", &[("x-ext-authz", "allow")]),
    )
    .await
    .unwrap();
    assert_eq!(b_allowed.status, StatusCode::OK);
}

#[tokio::test]
async fn a_reload_rotates_the_listener_certificate_for_new_connections() {
    let dir = testkit::scratch_dir("tls-rotate");
    let old_pki = Pki::new(&dir, "old");
    let new_pki = Pki::new(&dir, "new");
    let old_cert = old_pki.server("gateway");
    let new_cert = new_pki.server("gateway");
    let backend = start_backend().await;
    let authz = MockAuthz::istio().await;
    let file = dir.join("gateway.toml");
    std::fs::write(
        &file,
        tls_gateway(backend, authz.addr, &server_tls(&old_cert), ""),
    )
    .unwrap();
    let config = gateway::Config::load(&file, &gateway::Overrides::default()).unwrap();
    let gw = gateway::Gateway::bind(config).await.unwrap();
    let addr = gw.local_addrs()[0].1;
    let reloader =
        gateway::reload::Reloader::new(file.clone(), gateway::Overrides::default(), gw.shared());
    tokio::spawn(gw.run());
    let allow = [("x-ext-authz", "allow")];
    let trusting = |pki: &Pki| client_config(&pki.ca_pem, None);

    let before = tls_send(addr, trusting(&old_pki), seed_post(addr, "/openai", &allow)).await;
    assert_eq!(before.unwrap().status, StatusCode::OK);

    std::fs::write(
        &file,
        tls_gateway(backend, authz.addr, &server_tls(&new_cert), ""),
    )
    .unwrap();
    reloader.reload().await.unwrap();
    let after = tls_send(addr, trusting(&new_pki), seed_post(addr, "/openai", &allow)).await;
    assert_eq!(after.unwrap().status, StatusCode::OK);
    let stale = tls_send(addr, trusting(&old_pki), seed_post(addr, "/openai", &allow)).await;
    assert!(stale.is_err(), "the old certificate is still served");
}

#[tokio::test]
async fn h2_over_tls_is_negotiated_by_alpn() {
    let dir = testkit::scratch_dir("tls-h2");
    let pki = Pki::new(&dir, "main");
    let server = pki.server("gateway");
    let backend = start_backend().await;
    let authz = MockAuthz::istio().await;
    let gw = start_test_gateway(&tls_gateway(backend, authz.addr, &server_tls(&server), "")).await;
    let mut config = (*client_config(&pki.ca_pem, None)).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post("https://localhost/openai")
        .header("x-ext-authz", "allow")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            SEED_BODY.as_bytes(),
        )))
        .unwrap();
    let resp = read(sender.send_request(req).await.unwrap()).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(authz.last_http().protocol, "HTTP/2");
    assert_eq!(authz.last_http().scheme, "https");
}
