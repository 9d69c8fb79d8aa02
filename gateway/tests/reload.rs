//! Hot reload: the config file changes under load; every change is in force soon after, no
//! request fails, a broken file keeps the last good config serving, requests in flight finish
//! on the snapshot they started with.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gateway::reload::{ReloadError, Reloader};
use http::StatusCode;
use support::*;
use testkit::configs::versioned_gateway;

/// Starts a gateway from the file and a reloader polling it every 20 ms.
async fn start_watched(file: &Path) -> TestGateway {
    let text = std::fs::read_to_string(file).expect("reads the file");
    let config = gateway::Config::from_toml(&text, &file.display().to_string())
        .expect("the test config is valid");
    let gw = gateway::Gateway::bind(config)
        .await
        .expect("the gateway binds its listeners");
    let started = TestGateway {
        addr: gw.local_addrs()[0].1,
        admin: None,
        shared: gw.shared(),
    };
    let reloader = Arc::new(Reloader::new(
        file.to_path_buf(),
        gateway::Overrides::default(),
        gw.shared(),
    ));
    tokio::spawn(reloader.watch(Duration::from_millis(20)));
    tokio::spawn(gw.run());
    started
}

/// What the backend saw for one allowed request: (path, served_by).
async fn probe(gw: SocketAddr) -> (String, String) {
    let r = send(seed_post(gw, "/openai", &[("x-ext-authz", "allow")])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let j = r.json();
    (
        j["request"]["path"]
            .as_str()
            .expect("a JSON string")
            .to_owned(),
        j["request"]["served_by"]
            .as_str()
            .expect("a JSON string")
            .to_owned(),
    )
}

async fn wait_for_version(gw: SocketAddr, version: usize, backend: SocketAddr) {
    let want = (format!("/v{version}"), backend.to_string());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if probe(gw).await == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "version {version} not in force after 10s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hundred_changes_under_load_fail_no_request() {
    let a = start_backend().await;
    let b = start_backend().await;
    let authz = MockAuthz::istio().await;
    let dir = testkit::scratch_dir("reload-load");
    let file = dir.join("gateway.toml");
    std::fs::write(&file, versioned_gateway(a, b, authz.addr, 0)).unwrap();
    let gw = start_watched(&file).await;
    wait_for_version(gw.addr, 0, a).await;

    // The load: 4 clients sending allowed requests back to back until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        let addr = gw.addr;
        load.push(tokio::spawn(async move {
            let client = client();
            while !stop.load(Ordering::SeqCst) {
                let resp = client
                    .request(seed_post(addr, "/openai", &[("x-ext-authz", "allow")]))
                    .await;
                let ok = match resp {
                    Ok(r) => {
                        r.status() == StatusCode::OK
                            && read(r).await.json()["request"]["path"]
                                .as_str()
                                .is_some_and(|p| p.starts_with("/v"))
                    }
                    Err(_) => false,
                };
                sent.fetch_add(1, Ordering::SeqCst);
                if !ok {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }

    for version in 1..=100 {
        if version == 50 {
            // A broken file: refused, the last good config (49) keeps serving, the gauge says so.
            let broken = versioned_gateway(a, b, authz.addr, 49).replace(
                "rewrite_prefix = \"/v49\"",
                "rewrite_prefix = \"v49\"\ntimeout = \"soon\"",
            );
            testkit::write_atomically(&file, &broken);
            let deadline = Instant::now() + Duration::from_secs(10);
            while sample(
                &gw.shared.metrics.encode(),
                "gateway_config_reloads_total{result=\"error\"}",
            ) != Some(1.0)
            {
                assert!(Instant::now() < deadline, "broken config not noticed");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let metrics = gw.shared.metrics.encode();
            assert_eq!(sample(&metrics, "gateway_config_synchronized"), Some(0.0));
            assert_eq!(probe(gw.addr).await, ("/v49".to_owned(), b.to_string()));
        }
        testkit::write_atomically(&file, &versioned_gateway(a, b, authz.addr, version));
        let backend = if version.is_multiple_of(2) { a } else { b };
        wait_for_version(gw.addr, version, backend).await;
    }

    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    let metrics = gw.shared.metrics.encode();
    assert_eq!(sample(&metrics, "gateway_config_synchronized"), Some(1.0));
    assert_eq!(
        sample(&metrics, "gateway_config_reloads_total{result=\"ok\"}"),
        Some(100.0)
    );
    assert_eq!(
        sample(&metrics, "gateway_config_reloads_total{result=\"error\"}"),
        Some(1.0)
    );
    let sent = sent.load(Ordering::SeqCst);
    assert!(sent >= 100, "the load sent only {sent} requests");
    assert_eq!(failed.load(Ordering::SeqCst), 0, "of {sent} requests");
    // The authorization server kept its one connection across 100 reloads.
    assert_eq!(authz.connections(), 1);
    eprintln!("reload under load: {sent} requests, 0 failed, 100 reloads + 1 refused");
}

#[tokio::test]
async fn a_refused_reload_reports_every_error_with_its_place() {
    let a = start_backend().await;
    let authz = MockAuthz::istio().await;
    let dir = testkit::scratch_dir("reload-errors");
    let file = dir.join("gateway.toml");
    std::fs::write(&file, versioned_gateway(a, a, authz.addr, 0)).unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    let config = gateway::Config::from_toml(&text, "x").unwrap();
    let gw = gateway::Gateway::bind(config).await.unwrap();
    let reloader = Reloader::new(file.clone(), gateway::Overrides::default(), gw.shared());

    std::fs::write(
        &file,
        versioned_gateway(a, a, authz.addr, 0).replace(
            "rewrite_prefix = \"/v0\"",
            "rewrite_prefix = \"v0\"\ntimeout = \"soon\"",
        ),
    )
    .unwrap();
    let err = reloader.reload().await.unwrap_err();
    let f = file.display();
    assert!(matches!(err, ReloadError::Invalid(_)));
    assert_eq!(
        err.to_string(),
        format!(
            "{f}:18:18: rewrite_prefix must start with `/`\n{f}:19:11: invalid duration `soon`: expected a positive whole number with unit ms, s or m, e.g. \"200ms\""
        )
    );

    // Listener addresses are bound sockets: changing them needs a restart.
    std::fs::write(
        &file,
        versioned_gateway(a, a, authz.addr, 0).replace("127.0.0.1:0", "127.0.0.1:1"),
    )
    .unwrap();
    let err = reloader.reload().await.unwrap_err();
    assert!(
        err.to_string()
            .contains("listener names and addresses need a restart"),
        "{err}"
    );
    assert_eq!(
        sample(&gw.shared().metrics.encode(), "gateway_config_synchronized"),
        Some(0.0)
    );

    std::fs::write(&file, versioned_gateway(a, a, authz.addr, 7)).unwrap();
    reloader.reload().await.unwrap();
    assert_eq!(
        sample(&gw.shared().metrics.encode(), "gateway_config_synchronized"),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_request_in_flight_finishes_on_the_config_it_started_with() {
    let a = start_backend().await;
    let authz = MockAuthz::istio().await;
    let dir = testkit::scratch_dir("reload-inflight");
    let file = dir.join("gateway.toml");
    std::fs::write(&file, versioned_gateway(a, a, authz.addr, 0)).unwrap();
    let gw = start_watched(&file).await;

    let slow = tokio::spawn(send(seed_post(
        gw.addr,
        "/openai?delay_ms=600",
        &[("x-ext-authz", "allow")],
    )));
    tokio::time::sleep(Duration::from_millis(150)).await;
    testkit::write_atomically(&file, &versioned_gateway(a, a, authz.addr, 2));
    wait_for_version(gw.addr, 2, a).await;
    let slow = slow.await.unwrap();
    assert_eq!(slow.status, StatusCode::OK);
    assert_eq!(slow.json()["request"]["path"], "/v0");
}
