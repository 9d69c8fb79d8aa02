//! HTTPS backends: certificates verified against the configured CA (a wrong one is refused and
//! the backend never reached), mutual TLS, ALPN choosing h2 or HTTP/1.1 by `protocol`, and one
//! handshake for many requests. Certificates are generated at test time.

mod support;

use std::net::SocketAddr;
use std::path::Path;

use http::StatusCode;
use support::certs::{Issued, Pki};
use support::echo_backend::{EchoBackend, tls_echo};
use support::*;

/// A gateway with an admin port and one route to an https backend `name`; `backend_extra` adds
/// keys to the backend (inline TOML lines).
async fn gateway_to(name: &str, backend: SocketAddr, backend_extra: &str) -> TestGateway {
    gateway_with_route(name, backend, backend_extra, "").await
}

/// [`gateway_to`] with route keys too.
async fn gateway_with_route(
    name: &str,
    backend: SocketAddr,
    backend_extra: &str,
    route_extra: &str,
) -> TestGateway {
    let toml = format!(
        r#"
[admin]
address = "127.0.0.1:0"

[[listeners]]
name = "gw"
address = "127.0.0.1:0"

[[backends]]
name = "{name}"
url = "https://localhost:{port}"
{backend_extra}

[[routes]]
name = "r"
backend = "{name}"
{route_extra}
"#,
        port = backend.port()
    );
    start_test_gateway(&toml).await
}

fn ca_line(ca: &Path) -> String {
    format!("tls = {{ ca = {:?} }}", ca.display().to_string())
}

fn mtls_line(ca: &Path, client: &Issued) -> String {
    format!(
        "tls = {{ ca = {:?}, cert = {:?}, key = {:?} }}",
        ca.display().to_string(),
        client.cert.display().to_string(),
        client.key.display().to_string()
    )
}

async fn metric(gw: &TestGateway, series: &str) -> Option<f64> {
    let admin = gw.admin.expect("an admin port");
    sample(&admin_get(admin, "/metrics").await.text(), series)
}

#[tokio::test]
async fn an_https_backend_is_verified_and_answers_over_h2_by_alpn() {
    let dir = testkit::scratch_dir("upstream-tls-ok");
    let pki = Pki::new(&dir, "up");
    let server = pki.server("backend");
    let backend = tls_echo(&server.cert, &server.key, None).await;
    let gw = gateway_to("tls-ok", backend.addr, &ca_line(&pki.ca_file)).await;
    let resp = send(get(gw.addr, "/v1/models?x=1", &[])).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let echo = resp.json();
    assert_eq!(echo["version"], "HTTP/2.0");
    assert_eq!(echo["path"], "/v1/models?x=1");
    assert_eq!(echo["client_cert"], false);
}

#[tokio::test]
async fn protocol_http1_offers_only_http_1_1() {
    let dir = testkit::scratch_dir("upstream-tls-h1");
    let pki = Pki::new(&dir, "up");
    let server = pki.server("backend");
    let backend = tls_echo(&server.cert, &server.key, None).await;
    let extra = format!("protocol = \"http1\"\n{}", ca_line(&pki.ca_file));
    let gw = gateway_to("tls-h1", backend.addr, &extra).await;
    let resp = send(get(gw.addr, "/", &[])).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.json()["version"], "HTTP/1.1");
}

#[tokio::test]
async fn a_backend_whose_certificate_the_ca_did_not_sign_is_refused_and_never_reached() {
    let dir = testkit::scratch_dir("upstream-tls-wrong-ca");
    let pki = Pki::new(&dir, "up");
    let other = Pki::new(&dir, "other");
    let server = other.server("backend");
    let backend = tls_echo(&server.cert, &server.key, None).await;
    let gw = gateway_to("tls-wrong", backend.addr, &ca_line(&pki.ca_file)).await;
    let resp = send(get(gw.addr, "/", &[])).await;
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        resp.text(),
        "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: TLS_error: invalid peer certificate: UnknownIssuer"
    );
    assert_eq!(resp.headers["content-type"], "text/plain");
    assert_eq!(backend.requests(), 0);
    let failures = metric(
        &gw,
        &format!(
            "gateway_upstream_requests_total{{backend=\"tls-wrong\",endpoint=\"localhost:{}\",outcome=\"tls_failure\"}}",
            backend.addr.port()
        ),
    )
    .await;
    assert_eq!(failures, Some(1.0));
}

#[tokio::test]
async fn without_a_ca_the_platform_roots_do_not_trust_a_test_ca() {
    let dir = testkit::scratch_dir("upstream-tls-platform");
    let pki = Pki::new(&dir, "up");
    let server = pki.server("backend");
    let backend = tls_echo(&server.cert, &server.key, None).await;
    let gw = gateway_to("tls-platform", backend.addr, "").await;
    let resp = send(get(gw.addr, "/", &[])).await;
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        resp.text().contains("TLS_error: invalid peer certificate"),
        "{}",
        resp.text()
    );
    assert_eq!(backend.requests(), 0);
}

#[tokio::test]
async fn mutual_tls_presents_the_gateways_certificate() {
    let dir = testkit::scratch_dir("upstream-mtls");
    let pki = Pki::new(&dir, "up");
    let server = pki.server("backend");
    let client = pki.client("gateway", vec![support::certs::dns("gateway.test")]);
    let backend = tls_echo(&server.cert, &server.key, Some(&pki.ca_file)).await;
    let gw = gateway_to("mtls", backend.addr, &mtls_line(&pki.ca_file, &client)).await;
    let resp = send(get(gw.addr, "/", &[])).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.json()["client_cert"], true);

    // The same backend without a client certificate: refused by the backend, never answered.
    let gw = gateway_to("mtls-none", backend.addr, &ca_line(&pki.ca_file)).await;
    let before = backend.requests();
    let resp = send(get(gw.addr, "/", &[])).await;
    assert!(
        resp.status == StatusCode::SERVICE_UNAVAILABLE || resp.status == StatusCode::BAD_GATEWAY,
        "{} {}",
        resp.status,
        resp.text()
    );
    assert_eq!(backend.requests(), before);
}

/// Sends `n` requests one after another through the gateway, each answered 200.
async fn sequential(gw: &TestGateway, n: usize) {
    for i in 0..n {
        let resp = send(get(gw.addr, &format!("/{i}"), &[])).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    }
}

#[tokio::test]
async fn many_requests_share_one_handshake() {
    let dir = testkit::scratch_dir("upstream-tls-reuse");
    let pki = Pki::new(&dir, "up");
    let server = pki.server("backend");
    for (name, protocol) in [("reuse-h2", "auto"), ("reuse-h1", "http1")] {
        let backend: EchoBackend = tls_echo(&server.cert, &server.key, None).await;
        let extra = format!("protocol = \"{protocol}\"\n{}", ca_line(&pki.ca_file));
        let gw = gateway_to(name, backend.addr, &extra).await;
        sequential(&gw, 20).await;
        assert_eq!(
            backend.connections(),
            1,
            "{name}: one connection for 20 requests"
        );
        // Concurrent requests on h2 share the connection too.
        let concurrent: Vec<_> = (0..10)
            .map(|i| tokio::spawn(send(get(gw.addr, &format!("/c{i}"), &[]))))
            .collect();
        for c in concurrent {
            assert_eq!(c.await.expect("the task ends").status, StatusCode::OK);
        }
        if protocol == "auto" {
            assert_eq!(backend.connections(), 1, "{name}");
        }
        assert_eq!(backend.requests(), 30, "{name}");
        let handshakes = metric(
            &gw,
            &format!("gateway_upstream_tls_handshakes_total{{backend=\"{name}\"}}"),
        )
        .await;
        assert_eq!(handshakes, Some(backend.connections() as f64), "{name}");
        assert!(
            backend.connections() <= 10,
            "{name}: {}",
            backend.connections()
        );
    }
}

/// The route's header rules as the OpenAI example uses them: the key from the environment.
const OPENAI_LIKE_ROUTE: &str = r#"
host_rewrite = "auto"
request_headers = { set = { authorization = "Bearer ${CARGO_PKG_NAME}" }, add = { x-team = "blue" }, remove = ["x-internal"] }
response_headers = { add = { x-served-by = "gw" }, remove = ["server"] }
"#;

#[tokio::test]
async fn host_rewrite_and_header_rules_are_what_the_backend_sees() {
    let dir = testkit::scratch_dir("upstream-headers");
    let pki = Pki::new(&dir, "up");
    let server = pki.server("backend");
    let backend = tls_echo(&server.cert, &server.key, None).await;
    let port = backend.addr.port();
    for protocol in ["auto", "http1"] {
        let extra = format!("protocol = \"{protocol}\"\n{}", ca_line(&pki.ca_file));
        let gw = gateway_with_route("headers", backend.addr, &extra, OPENAI_LIKE_ROUTE).await;
        let resp = send(get(
            gw.addr,
            "/v1/models",
            &[
                ("authorization", "Bearer from-the-client"),
                ("x-internal", "1"),
                ("x-team", "red"),
            ],
        ))
        .await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        let echo = resp.json();
        let saw = &echo["headers"];
        assert_eq!(
            saw["authorization"],
            format!("Bearer {}", env!("CARGO_PKG_NAME")),
            "{protocol}"
        );
        assert_eq!(saw["x-team"], "red, blue", "{protocol}");
        assert!(saw.get("x-internal").is_none(), "{protocol}: {echo}");
        let host = format!("localhost:{port}");
        if protocol == "auto" {
            assert_eq!(echo["authority"], host.as_str());
        } else {
            assert_eq!(saw["host"], host.as_str());
        }
        assert_eq!(resp.headers["x-served-by"], "gw");
        assert!(resp.headers.get("server").is_none());
    }
}

#[tokio::test]
async fn a_literal_host_rewrite_is_sent_as_is() {
    let backend = support::echo_backend::plain_echo().await;
    let toml = format!(
        "[[listeners]]\nname = \"gw\"\naddress = \"127.0.0.1:0\"\n[[backends]]\nname = \"b\"\nurl = \"http://{}\"\n[[routes]]\nname = \"r\"\nbackend = \"b\"\nhost_rewrite = \"api.example:8443\"\n",
        backend.addr
    );
    let gw = start_gateway(&toml).await;
    let resp = send(get(gw, "/", &[])).await;
    assert_eq!(resp.json()["headers"]["host"], "api.example:8443");
}
