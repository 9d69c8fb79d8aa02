//! The admin endpoint: `/healthz`, `/readyz`, and `/metrics` after a known request mix, with the
//! exact counts.

mod support;

use std::net::SocketAddr;

use http::StatusCode;
use support::*;

/// An address nothing listens on.
async fn dead_address() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds a loopback port");
    l.local_addr().expect("a bound listener has an address")
}

#[tokio::test]
async fn metrics_count_exactly_the_requests_sent() {
    let backend = start_backend().await;
    let authz = MockAuthz::istio().await;
    let dead = dead_address().await;
    let toml = seed_config(
        backend,
        authz.addr,
        &format!(
            r#"
[admin]
address = "127.0.0.1:0"

[[routes]]
name = "health"
path = {{ exact = "/health" }}
backend = "openai"

[[routes]]
name = "flaky"
path = {{ prefix = "/flaky" }}
backend = "openai"

[[routes]]
name = "broken"
path = {{ prefix = "/broken" }}
backend = "openai"

[[authz_backends]]
name = "dead"
url = "http://{dead}"
{GATEWAY_POLICY}
[[policies]]
name = "health-no-auth"
target_refs = [{{ kind = "HTTPRoute", name = "health" }}]
ext_auth = {{ disabled = true }}

[[policies]]
name = "flaky-policy"
target_refs = [{{ kind = "HTTPRoute", name = "flaky" }}]
ext_auth = {{ backend = "dead", failure_mode_allow = true }}

[[policies]]
name = "broken-policy"
target_refs = [{{ kind = "HTTPRoute", name = "broken" }}]
ext_auth = {{ backend = "dead" }}
"#
        ),
    );
    let gw = start_test_gateway(&toml).await;
    let admin = gw.admin.unwrap();
    let allow = [("x-ext-authz", "allow")];

    for _ in 0..3 {
        assert_eq!(
            send(seed_post(gw.addr, "/openai", &allow)).await.status,
            StatusCode::OK
        );
    }
    for _ in 0..2 {
        assert_eq!(
            send(seed_post(gw.addr, "/openai", &[])).await.status,
            StatusCode::FORBIDDEN
        );
    }
    assert_eq!(
        send(get(gw.addr, "/health", &[])).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(get(gw.addr, "/nowhere", &[])).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(get(gw.addr, "/flaky", &allow)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(get(gw.addr, "/broken", &allow)).await.status,
        StatusCode::FORBIDDEN
    );

    let scraped = admin_get(admin, "/metrics").await;
    assert_eq!(scraped.status, StatusCode::OK);
    assert_eq!(
        scraped.headers["content-type"],
        gateway::admin::METRICS_CONTENT_TYPE
    );
    let m = scraped.text();
    let gp = "policy=\"gateway-ext-auth-policy\"";
    let want: &[(String, f64)] = &[
        // Gateway policy: 3 openai allowed + flaky + broken (both carry the allow header).
        (format!("gateway_ext_authz_ok_total{{{gp}}}"), 5.0),
        (format!("gateway_ext_authz_denied_total{{{gp}}}"), 2.0),
        (format!("gateway_ext_authz_disabled_total{{{gp}}}"), 1.0),
        (
            format!("gateway_ext_authz_latency_seconds_count{{{gp}}}"),
            7.0,
        ),
        (
            "gateway_ext_authz_error_total{policy=\"flaky-policy\"}".into(),
            1.0,
        ),
        (
            "gateway_ext_authz_failure_mode_allowed_total{policy=\"flaky-policy\"}".into(),
            1.0,
        ),
        (
            "gateway_ext_authz_error_total{policy=\"broken-policy\"}".into(),
            1.0,
        ),
        (
            "gateway_requests_total{route=\"openai\",status=\"200\"}".into(),
            3.0,
        ),
        (
            "gateway_requests_total{route=\"openai\",status=\"403\"}".into(),
            2.0,
        ),
        (
            "gateway_requests_total{route=\"health\",status=\"200\"}".into(),
            1.0,
        ),
        (
            "gateway_requests_total{route=\"-\",status=\"404\"}".into(),
            1.0,
        ),
        (
            "gateway_requests_total{route=\"flaky\",status=\"200\"}".into(),
            1.0,
        ),
        (
            "gateway_requests_total{route=\"broken\",status=\"403\"}".into(),
            1.0,
        ),
        (
            "gateway_upstream_latency_seconds_count{route=\"openai\"}".into(),
            3.0,
        ),
        (
            "gateway_upstream_latency_seconds_count{route=\"health\"}".into(),
            1.0,
        ),
        (
            "gateway_upstream_latency_seconds_count{route=\"flaky\"}".into(),
            1.0,
        ),
        ("gateway_config_synchronized".into(), 1.0),
    ];
    for (series, value) in want {
        assert_eq!(sample(&m, series), Some(*value), "{series} in\n{m}");
    }
    // Series that must not exist: nothing was denied or failed elsewhere.
    for absent in [
        "gateway_ext_authz_failure_mode_allowed_total{policy=\"broken-policy\"}",
        "gateway_ext_authz_denied_total{policy=\"flaky-policy\"}",
        "gateway_upstream_latency_seconds_count{route=\"broken\"}",
    ] {
        assert_eq!(sample(&m, absent), None, "{absent} in\n{m}");
    }
    // Total requests: every one counted once.
    let total: f64 = m
        .lines()
        .filter(|l| l.starts_with("gateway_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(total, 9.0);
    assert!(m.trim_end().ends_with("# EOF"));
}

#[tokio::test]
async fn health_and_readiness() {
    let backend = start_backend().await;
    let authz = MockAuthz::istio().await;
    let toml = seed_config(backend, authz.addr, "[admin]\naddress = \"127.0.0.1:0\"\n");
    let gw = start_test_gateway(&toml).await;
    let admin = gw.admin.unwrap();
    let h = admin_get(admin, "/healthz").await;
    assert_eq!((h.status, h.text().as_str()), (StatusCode::OK, "ok\n"));
    let r = admin_get(admin, "/readyz").await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "ready\n"));
    assert_eq!(
        admin_get(admin, "/other").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn readyz_turns_503_while_draining() {
    let backend = start_backend().await;
    let authz = MockAuthz::istio().await;
    let toml = seed_config(backend, authz.addr, "[admin]\naddress = \"127.0.0.1:0\"\n");
    let config = gateway::Config::from_toml(&toml, "t.toml").unwrap();
    let gw = gateway::Gateway::bind(config).await.unwrap();
    let addr = gw.local_addrs()[0].1;
    let admin = gw.admin_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(gw.run_until(
        async {
            let _ = stop_rx.await;
        },
        std::time::Duration::from_secs(5),
    ));
    // A slow request keeps the drain going while /readyz is asked.
    let slow = tokio::spawn(send(get(
        addr,
        "/openai?delay_ms=800",
        &[("x-ext-authz", "allow")],
    )));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop_tx.send(()).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let r = admin_get(admin, "/readyz").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    );
    assert_eq!(admin_get(admin, "/healthz").await.status, StatusCode::OK);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener still accepting"
    );
    assert_eq!(slow.await.unwrap().status, StatusCode::OK);
    assert_eq!(running.await.unwrap().unwrap(), gateway::Drained::Clean);
}
