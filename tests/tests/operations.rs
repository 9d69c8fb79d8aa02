//! Operating the server: metrics after a known request mix, hot reload under load.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use authz_server::{Config, Metrics, RuleEngine, reload::Reloader};
use e2e::{http_request, start_default, start_engine, v2_check, v2_client, v3_check, v3_client};

fn metric_line<'a>(metrics: &'a str, prefix: &str) -> Option<&'a str> {
    metrics.lines().find(|line| line.starts_with(prefix))
}

#[tokio::test]
async fn metrics_count_a_known_request_mix_exactly() {
    let server = start_default().await;
    let mut v3 = v3_client(server.grpc).await;
    for _ in 0..3 {
        v3.check(v3_check(&[("x-ext-authz", "allow")], ""))
            .await
            .expect("Check");
    }
    for _ in 0..2 {
        v3.check(v3_check(&[], "")).await.expect("Check");
    }
    v3.check(v3_check(&[], "spiffe://cluster.local/ns/default/sa/a"))
        .await
        .expect("Check");
    let mut v2 = v2_client(server.grpc).await;
    v2.check(v2_check(&[("x-ext-authz", "allow")], ""))
        .await
        .expect("Check");
    for _ in 0..4 {
        http_request(server.http, "GET", "/", &[], "").await;
    }

    let scrape = http_request(server.admin, "GET", "/metrics", &[], "").await;
    assert_eq!(scrape.status, 200);
    let text = String::from_utf8(scrape.body.to_vec()).expect("utf-8");
    for (series, count) in [
        (
            r#"authz_checks_total{api="grpc.v3",rule="grpc-allow-header",outcome="allow"}"#,
            3,
        ),
        (
            r#"authz_checks_total{api="grpc.v3",rule="default",outcome="deny"}"#,
            2,
        ),
        (
            r#"authz_checks_total{api="grpc.v3",rule="grpc-allow-principal",outcome="allow"}"#,
            1,
        ),
        (
            r#"authz_checks_total{api="grpc.v2",rule="grpc-allow-header",outcome="allow"}"#,
            1,
        ),
        (
            r#"authz_checks_total{api="http",rule="http-deny",outcome="deny"}"#,
            4,
        ),
        (r#"authz_check_duration_seconds_count{api="grpc.v3"}"#, 6),
        ("authz_config_synchronized", 1),
    ] {
        let line = metric_line(&text, &format!("{series} "))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"));
        assert_eq!(line, format!("{series} {count}"), "\n{text}");
    }

    assert_eq!(
        http_request(server.admin, "GET", "/healthz", &[], "")
            .await
            .status,
        200
    );
    assert_eq!(
        http_request(server.admin, "GET", "/readyz", &[], "")
            .await
            .status,
        200
    );
}

fn versioned_config(version: usize) -> String {
    format!(
        r#"
[default]
deny = {{ status = 403, body = "no" }}

[[rules]]
name = "load"
when.headers = [{{ name = "x-load", exact = "yes" }}]
allow = {{}}

[[rules]]
name = "version"
when.headers = [{{ name = "x-version", exact = "v{version}" }}]
allow = {{}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_never_fails_a_request_and_keeps_the_last_good_config() {
    let dir = std::env::temp_dir().join(format!("authz-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("rules.toml");
    std::fs::write(&path, versioned_config(0)).expect("write");
    let config = Config::load(&path).expect("loads");
    let engine = RuleEngine::new(config.rules);
    let metrics = Arc::new(Metrics::new());
    let reloader = Reloader::new(path.clone(), engine.clone(), metrics.clone(), config.server);
    let server = start_engine(engine).await;

    let failures = Arc::new(AtomicU64::new(0));
    let served = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let mut client = v3_client(server.grpc).await;
        let (failures, served, stop) = (failures.clone(), served.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client.check(v3_check(&[("x-load", "yes")], "")).await {
                    Ok(response)
                        if response.get_ref().status.as_ref().map(|s| s.code) == Some(0) =>
                    {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }

    let mut client = v3_client(server.grpc).await;
    for version in 1..=100 {
        std::fs::write(&path, versioned_config(version)).expect("write");
        assert!(reloader.reload("test"), "version {version} reloads");
        let now = client
            .check(v3_check(&[("x-version", &format!("v{version}"))], ""))
            .await
            .expect("Check");
        assert_eq!(
            now.get_ref().status.as_ref().map(|s| s.code),
            Some(0),
            "v{version} in force"
        );
        let old = client
            .check(v3_check(&[("x-version", &format!("v{}", version - 1))], ""))
            .await
            .expect("Check");
        assert_eq!(
            old.get_ref().status.as_ref().map(|s| s.code),
            Some(7),
            "v{} retired",
            version - 1
        );
    }

    std::fs::write(&path, "[default\nthis is not toml").expect("write");
    assert!(!reloader.reload("test"), "a broken config is refused");
    let still = client
        .check(v3_check(&[("x-version", "v100")], ""))
        .await
        .expect("Check");
    assert_eq!(
        still.get_ref().status.as_ref().map(|s| s.code),
        Some(0),
        "last good config serves"
    );
    let text = metrics.render();
    assert!(text.contains("authz_config_synchronized 0\n"), "{text}");
    assert!(
        text.contains("authz_config_reloads_total{result=\"ok\"} 100\n"),
        "{text}"
    );
    assert!(
        text.contains("authz_config_reloads_total{result=\"error\"} 1\n"),
        "{text}"
    );

    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("load task");
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    assert!(served.load(Ordering::Relaxed) > 100, "the load really ran");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_shadow_rule_is_counted_but_not_enforced() {
    let server = e2e::start_with(
        r#"
[default]
deny = { status = 403 }

[[rules]]
name = "trial-deny-curl"
shadow = true
when.headers = [{ name = "user-agent", prefix = "curl/" }]
deny = { status = 429, body = "slow down" }

[[rules]]
name = "team"
when.headers = [{ name = "x-team", exact = "platform" }]
allow = {}
"#,
    )
    .await;
    for _ in 0..3 {
        let reply = http_request(
            server.http,
            "GET",
            "/",
            &[("user-agent", "curl/8.5.0"), ("x-team", "platform")],
            "",
        )
        .await;
        assert_eq!(reply.status, 200, "the shadow deny is not enforced");
    }
    let reply = http_request(server.http, "GET", "/", &[("x-team", "platform")], "").await;
    assert_eq!(reply.status, 200);

    let text = String::from_utf8(
        http_request(server.admin, "GET", "/metrics", &[], "")
            .await
            .body
            .to_vec(),
    )
    .expect("utf-8");
    let series = r#"authz_shadow_matches_total{rule="trial-deny-curl",outcome="deny"}"#;
    assert_eq!(
        metric_line(&text, &format!("{series} ")),
        Some(format!("{series} 3").as_str()),
        "\n{text}"
    );
    let enforced = r#"authz_checks_total{api="http",rule="team",outcome="allow"}"#;
    assert_eq!(
        metric_line(&text, &format!("{enforced} ")),
        Some(format!("{enforced} 4").as_str())
    );
}
