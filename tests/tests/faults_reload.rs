//! A reload storm under load, with the real binaries: the authz-server's rules file and the
//! gateway's config file are each rewritten 20 times a second (SIGHUP after each authz write;
//! the gateway polls its file every 10 ms and gets a SIGHUP too), every fifth write broken.
//!
//! Every config version answers in a way that names it, in more than one place, so an answer
//! decided by a half-applied config shows:
//! - authz-server version N: an allow adds `x-authz-version: N` and `x-authz-version-again: N`
//!   to the request; the default deny answers status 403 (N even) or 401 (N odd), body
//!   `v{N} default`, header `x-config-version: N`;
//! - gateway version M: route `openai` rewrites `/openai` to `/v{M}` and goes to backend `a`
//!   (M even) or `b` (M odd).
//!
//! Every answer must be one whole version of each, never a broken one, and each worker (one
//! request at a time) must never see a version older than one it already saw. Zero failed
//! requests. After the storm the next good file is in force within a moment.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use e2e::load::{Answer, Load, get, http_client};
use e2e::procs::Process;
use testkit::configs::versioned_gateway;
use testkit::{binaries, scratch_dir, write_atomically};

fn authz_config(version: usize) -> String {
    let status = if version.is_multiple_of(2) { 403 } else { 401 };
    format!(
        r#"
[default]
deny = {{ status = {status}, body = "v{version} default", headers = [{{ name = "x-config-version", value = "{version}" }}] }}

[[rules]]
name = "allow-v{version}"
when = {{ headers = [{{ name = "x-ext-authz", exact = "allow" }}] }}
allow = {{ request_headers = [{{ name = "x-authz-version", value = "{version}" }}, {{ name = "x-authz-version-again", value = "{version}" }}] }}
"#
    )
}

/// Broken in turn by syntax and by meaning (an unknown key; a regex that does not compile).
fn broken_authz_config(version: usize) -> String {
    match version % 3 {
        0 => authz_config(version).replace("[[rules]]", "[[rules]"),
        1 => authz_config(version).replace("name = \"allow", "nmae = \"allow"),
        _ => authz_config(version).replace("exact = \"allow\"", "regex = \"(allow\""),
    }
}

fn broken_gateway_config(
    a: SocketAddr,
    b: SocketAddr,
    authz: SocketAddr,
    version: usize,
) -> String {
    let good = versioned_gateway(a, b, authz, version);
    match version % 3 {
        0 => good.replace("timeout = \"2s\"", "timeout = \"soon\""),
        1 => good.replace("[[routes]]", "[[routes]"),
        _ => good
            .replace("backend = \"a\"", "backend = \"nowhere\"")
            .replace("backend = \"b\"", "backend = \"nowhere\""),
    }
}

/// The versions one answer shows: (authz version, gateway version when allowed), or why it
/// is not one whole version of each.
fn versions(
    allow: bool,
    a: SocketAddr,
    b: SocketAddr,
    answer: &Answer,
) -> Result<(usize, Option<usize>), String> {
    let parse = |s: Option<String>, what: &str| -> Result<usize, String> {
        s.and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no {what} in {answer:?}"))
    };
    if allow {
        if answer.status() != Some(200) {
            return Err(format!("allow request got {answer:?}"));
        }
        let n = parse(answer.backend_saw("x-authz-version"), "x-authz-version")?;
        let again = parse(
            answer.backend_saw("x-authz-version-again"),
            "x-authz-version-again",
        )?;
        let path = answer.backend_request("path").unwrap_or_default();
        let m = parse(path.strip_prefix("/v").map(str::to_owned), "/v{M} path")?;
        let served_by = answer.backend_request("served_by").unwrap_or_default();
        let want = if m.is_multiple_of(2) { a } else { b };
        if n != again || served_by != want.to_string() {
            return Err(format!(
                "half-applied: authz {n}/{again}, gateway path /v{m} served by {served_by} (want {want})"
            ));
        }
        Ok((n, Some(m)))
    } else {
        let text = answer.text();
        let n = parse(
            text.strip_prefix('v')
                .and_then(|t| t.strip_suffix(" default"))
                .map(str::to_owned),
            "v{N} default body",
        )?;
        let header = parse(
            answer.header("x-config-version").map(str::to_owned),
            "x-config-version",
        )?;
        let status = if n.is_multiple_of(2) { 403 } else { 401 };
        if header != n || answer.status() != Some(status) {
            return Err(format!("half-applied deny: {answer:?}"));
        }
        Ok((n, None))
    }
}

fn metric(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

async fn metrics(admin: SocketAddr) -> String {
    get(&http_client(), admin, "/metrics", &[]).await.text()
}

fn start(program: &Path, args: &[String], kinds: &[&str], log: &Path) -> Process {
    Process::start(program, args, kinds, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_storm_under_load_fails_nothing_and_never_half_applies() {
    let Some([gateway_bin, authz_bin]) = binaries(
        "reload_storm_under_load_fails_nothing_and_never_half_applies",
        ["gateway", "authz-server"],
    ) else {
        return;
    };
    let dir = scratch_dir("fault-reload-storm");
    let (a, b) = (
        e2e::start_demo_backend().await,
        e2e::start_demo_backend().await,
    );
    let authz_file = dir.join("authz.toml");
    std::fs::write(&authz_file, authz_config(0)).expect("writes");
    let authz = start(
        &authz_bin,
        &[
            "--grpc-addr".into(),
            "127.0.0.1:0".into(),
            "--admin-addr".into(),
            "127.0.0.1:0".into(),
            "--config".into(),
            authz_file.display().to_string(),
        ],
        &["grpc", "admin"],
        &dir.join("authz.stderr.log"),
    );
    let authz_addr = authz.address("grpc");
    let gw_file = dir.join("gateway.toml");
    std::fs::write(&gw_file, versioned_gateway(a, b, authz_addr, 0)).expect("writes");
    let gw = start(
        &gateway_bin,
        &[
            "run".into(),
            "--config".into(),
            gw_file.display().to_string(),
            "--admin".into(),
            "127.0.0.1:0".into(),
            "--reload-interval".into(),
            "10ms".into(),
        ],
        &["http", "admin"],
        &dir.join("gateway.stderr.log"),
    );
    let gw_addr = gw.address("http");

    // 6 workers: even ones ask for an allow, odd ones are denied; a request every 5 ms each.
    let clients: Vec<_> = (0..6).map(|_| http_client()).collect();
    let load = Load::start(6, Duration::from_millis(5), move |worker| {
        let client = clients[worker].clone();
        async move {
            let headers: &[(&str, &str)] = if worker % 2 == 0 {
                &[("x-ext-authz", "allow")]
            } else {
                &[]
            };
            get(&client, gw_addr, "/openai", headers).await
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The storm: 20 writes a second to each file for 8 s; every fifth write broken.
    let mut broken = BTreeSet::new();
    let mut last_good = 0;
    let started = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_millis(50));
    for version in 1..=160 {
        ticks.tick().await;
        if version % 5 == 0 {
            broken.insert(version);
            write_atomically(&authz_file, &broken_authz_config(version));
            write_atomically(&gw_file, &broken_gateway_config(a, b, authz_addr, version));
        } else {
            last_good = version;
            write_atomically(&authz_file, &authz_config(version));
            write_atomically(&gw_file, &versioned_gateway(a, b, authz_addr, version));
        }
        authz.signal("HUP");
        gw.signal("HUP");
    }
    let storm = started.elapsed();
    // The last good versions land (the last write, 160, is broken: 159 stays in force).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let samples = load.stop().await;
    let probe = get(
        &http_client(),
        gw_addr,
        "/openai",
        &[("x-ext-authz", "allow")],
    )
    .await;
    let authz_metrics = metrics(authz.address("admin")).await;
    let gw_metrics = metrics(gw.address("admin")).await;

    let mut failed = Vec::new();
    let mut went_back = Vec::new();
    let mut seen_authz = BTreeSet::new();
    let mut seen_gateway = BTreeSet::new();
    let mut latest = [(0usize, 0usize); 6];
    for s in &samples {
        match versions(s.worker % 2 == 0, a, b, &s.value) {
            Err(why) => failed.push(why),
            Ok((n, m)) => {
                if broken.contains(&n) || m.is_some_and(|m| broken.contains(&m)) {
                    failed.push(format!("decided by a broken version: {n} {m:?}"));
                }
                let (last_n, last_m) = latest[s.worker];
                if n < last_n || m.is_some_and(|m| m < last_m) {
                    went_back.push(format!(
                        "worker {}: ({last_n},{last_m}) then ({n},{m:?})",
                        s.worker
                    ));
                }
                latest[s.worker] = (n, m.unwrap_or(last_m));
                seen_authz.insert(n);
                if let Some(m) = m {
                    seen_gateway.insert(m);
                }
            }
        }
    }
    let authz_ok = metric(&authz_metrics, "authz_config_reloads_total{result=\"ok\"}");
    let authz_err = metric(
        &authz_metrics,
        "authz_config_reloads_total{result=\"error\"}",
    );
    let gw_ok = metric(&gw_metrics, "gateway_config_reloads_total{result=\"ok\"}");
    let gw_err = metric(
        &gw_metrics,
        "gateway_config_reloads_total{result=\"error\"}",
    );
    println!(
        "FAULT reload storm: writes=160 per file in {:?} ({} broken) requests={} failed={} went_back={} \
         versions_seen authz={} gateway={} reloads authz ok={authz_ok} error={authz_err} gateway ok={gw_ok} error={gw_err}",
        storm,
        broken.len(),
        samples.len(),
        failed.len(),
        went_back.len(),
        seen_authz.len(),
        seen_gateway.len(),
    );
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(
        went_back.is_empty(),
        "{:?}",
        &went_back[..went_back.len().min(3)]
    );
    assert!(samples.len() >= 1000, "only {} requests", samples.len());
    // The storm was seen: many versions decided requests, and both servers refused broken files.
    assert!(
        seen_authz.len() >= 40,
        "authz versions seen: {}",
        seen_authz.len()
    );
    assert!(
        seen_gateway.len() >= 40,
        "gateway versions seen: {}",
        seen_gateway.len()
    );
    assert!(
        authz_err >= 1.0 && authz_ok >= 40.0,
        "authz reloads ok={authz_ok} error={authz_err}"
    );
    assert!(
        gw_err >= 1.0 && gw_ok >= 40.0,
        "gateway reloads ok={gw_ok} error={gw_err}"
    );
    // After the storm (its last write broken) a good version that no worker saw superseded is in
    // force: the newest good file a reload managed to read — not necessarily 159, when 160 had
    // already replaced it by the time the server handled 159's SIGHUP.
    let in_force = versions(true, a, b, &probe);
    let (newest_authz, newest_gateway) = (
        seen_authz.last().copied().unwrap_or_default(),
        seen_gateway.last().copied().unwrap_or_default(),
    );
    match in_force {
        Ok((n, Some(m))) => assert!(
            n <= last_good
                && m <= last_good
                && n >= newest_authz
                && m >= newest_gateway
                && !broken.contains(&n)
                && !broken.contains(&m),
            "in force after the storm: authz {n}, gateway {m}; newest seen {newest_authz}, {newest_gateway}"
        ),
        other => panic!("after the storm: {other:?}"),
    }
    // And the next good file is taken at once.
    let next = 161;
    write_atomically(&authz_file, &authz_config(next));
    write_atomically(&gw_file, &versioned_gateway(a, b, authz_addr, next));
    authz.signal("HUP");
    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let probe = get(
            &http_client(),
            gw_addr,
            "/openai",
            &[("x-ext-authz", "allow")],
        )
        .await;
        if versions(true, a, b, &probe) == Ok((next, Some(next))) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "version {next} not in force after 5 s: {probe:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
