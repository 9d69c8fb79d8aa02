//! The authorization server killed and restarted under load, with the real `gateway` and
//! `authz-server` binaries on loopback: the authz-server is killed (SIGKILL) and started again on
//! the same ports while the gateway carries steady load over gRPC and HTTP transports. Every
//! request sent during the outage gets its policy's failure-mode answer within the check timeout,
//! nothing is allowed by mistake, the gateway reconnects by itself, and its descriptors and
//! connections return to baseline.
//!
//! Each test prints a `FAULT ...` line with its figures (docs/reliability.md quotes them). Fault
//! tests measure latency, so each has a test binary of its own: Cargo runs binaries one at a time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use e2e::load::{Answer, Load, Sample, get, http_client, quantile};
use e2e::procs::{Process, sockets_to, start_gateway};
use e2e::{DENY_BODY, start_demo_backend};
use testkit::open_fds;
use testkit::{binaries, free_port, scratch_dir};

/// The check timeout of every policy here.
const CHECK_TIMEOUT: Duration = Duration::from_millis(500);
/// What a request may take beyond the check timeout (proxying to the backend, a busy machine).
const SLACK: Duration = Duration::from_millis(700);

fn start_authz(program: &std::path::Path, grpc: u16, http: u16, log: &std::path::Path) -> Process {
    Process::start(
        program,
        &[
            "--grpc-addr".into(),
            format!("127.0.0.1:{grpc}"),
            "--http-addr".into(),
            format!("127.0.0.1:{http}"),
        ],
        &["grpc", "http"],
        log,
    )
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Route {
    /// gRPC, fail closed with the default `status_on_error` (403).
    GrpcClosed,
    /// HTTP transport, fail closed with `status_on_error = 503`.
    HttpClosed,
    /// gRPC, `failure_mode_allow` with the header added.
    GrpcOpen,
}

impl Route {
    fn path(self) -> &'static str {
        match self {
            Route::GrpcClosed => "/grpc-closed",
            Route::HttpClosed => "/http-closed",
            Route::GrpcOpen => "/grpc-open",
        }
    }
}

/// Worker `w` sends this route, asking for an allow (`x-ext-authz: allow`) or not.
const KINDS: [(Route, bool); 6] = [
    (Route::GrpcClosed, true),
    (Route::GrpcClosed, false),
    (Route::HttpClosed, true),
    (Route::HttpClosed, false),
    (Route::GrpcOpen, true),
    (Route::GrpcOpen, false),
];

fn restart_config(backend: SocketAddr, grpc: u16, http: u16) -> String {
    let timeout = format!("{}ms", CHECK_TIMEOUT.as_millis());
    format!(
        r#"
[[listeners]]
name = "gw"
address = "127.0.0.1:0"

[[backends]]
name = "demo"
url = "http://{backend}"

[[routes]]
name = "grpc-closed"
path = {{ prefix = "/grpc-closed" }}
backend = "demo"

[[routes]]
name = "http-closed"
path = {{ prefix = "/http-closed" }}
backend = "demo"

[[routes]]
name = "grpc-open"
path = {{ prefix = "/grpc-open" }}
backend = "demo"

[[authz_backends]]
name = "grpc-authz"
url = "http://127.0.0.1:{grpc}"

[[authz_backends]]
name = "http-authz"
url = "http://127.0.0.1:{http}"

[[policies]]
name = "grpc-closed"
target_refs = [{{ kind = "HTTPRoute", name = "grpc-closed" }}]
ext_auth = {{ backend = "grpc-authz", grpc = {{}}, timeout = "{timeout}" }}

[[policies]]
name = "http-closed"
target_refs = [{{ kind = "HTTPRoute", name = "http-closed" }}]
ext_auth = {{ backend = "http-authz", http = {{ allowed_upstream_headers = ["x-ext-authz-check-result"] }}, timeout = "{timeout}", status_on_error = 503, allowed_headers = ["x-ext-authz"] }}

[[policies]]
name = "grpc-open"
target_refs = [{{ kind = "HTTPRoute", name = "grpc-open" }}]
ext_auth = {{ backend = "grpc-authz", grpc = {{}}, timeout = "{timeout}", failure_mode_allow = true, failure_mode_allow_header_add = true }}
"#
    )
}

/// The answer the authz-server decides when it is up (the Istio default rules).
fn is_normal((route, allow): (Route, bool), answer: &Answer) -> bool {
    if allow {
        answer.status() == Some(200)
            && answer.backend_saw("x-ext-authz-check-result").as_deref() == Some("allowed")
            && answer
                .backend_saw("x-envoy-auth-failure-mode-allowed")
                .is_none()
    } else {
        let _ = route;
        answer.status() == Some(403) && answer.text() == DENY_BODY
    }
}

/// The policy's failure-mode answer.
fn is_failure_mode((route, _): (Route, bool), answer: &Answer) -> bool {
    match route {
        Route::GrpcClosed => answer.status() == Some(403) && answer.text().is_empty(),
        Route::HttpClosed => answer.status() == Some(503) && answer.text().is_empty(),
        Route::GrpcOpen => {
            answer.status() == Some(200)
                && answer
                    .backend_saw("x-envoy-auth-failure-mode-allowed")
                    .as_deref()
                    == Some("true")
                && answer.backend_saw("x-ext-authz-check-result").is_none()
        }
    }
}

/// A request the server would deny that reached the backend anyway, other than by the policy's
/// own `failure_mode_allow`.
fn wrongly_allowed((route, allow): (Route, bool), answer: &Answer) -> bool {
    !allow
        && answer.status() == Some(200)
        && !(route == Route::GrpcOpen && is_failure_mode((route, allow), answer))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authz_server_killed_and_restarted_under_load() {
    let Some([gateway_bin, authz_bin]) = binaries(
        "authz_server_killed_and_restarted_under_load",
        ["gateway", "authz-server"],
    ) else {
        return;
    };
    let dir = scratch_dir("fault-authz-restart");
    let (grpc_port, http_port) = (free_port(), free_port());
    let backend = start_demo_backend().await;
    let mut authz = start_authz(&authz_bin, grpc_port, http_port, &dir.join("authz-1.log"));
    let gw = start_gateway(
        &gateway_bin,
        &dir,
        &restart_config(backend, grpc_port, http_port),
    );
    let gw_addr = gw.address("http");
    let gw_pid = gw.pid();

    // 6 workers, one per (route, allow?), each a request every 10 ms: ~600 requests/s.
    let clients: Vec<_> = KINDS.iter().map(|_| http_client()).collect();
    let load = Load::start(KINDS.len(), Duration::from_millis(10), move |worker| {
        let client = clients[worker].clone();
        async move {
            let (route, allow) = KINDS[worker];
            let headers: &[(&str, &str)] = if allow {
                &[("x-ext-authz", "allow")]
            } else {
                &[]
            };
            get(&client, gw_addr, route.path(), headers).await
        }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fds_before = open_fds(gw_pid);
    let grpc_before = sockets_to(gw_pid, grpc_port);
    let http_before = sockets_to(gw_pid, http_port);

    authz.kill();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restarting = Instant::now();
    let authz = start_authz(&authz_bin, grpc_port, http_port, &dir.join("authz-2.log"));
    let up = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let fds_after = open_fds(gw_pid);
    let grpc_after = sockets_to(gw_pid, grpc_port);
    let http_after = sockets_to(gw_pid, http_port);
    let samples = load.stop().await;
    drop(authz);

    let kind = |s: &Sample<Answer>| KINDS[s.worker];
    let mut lost = Vec::new();
    let mut wrong = Vec::new();
    let mut during = 0;
    let mut during_not_failure_mode = Vec::new();
    for s in &samples {
        let k = kind(s);
        if wrongly_allowed(k, &s.value) {
            wrong.push(s);
        }
        if !is_normal(k, &s.value) && !is_failure_mode(k, &s.value) {
            lost.push(s);
        }
        if s.start >= killed && s.end() <= restarting {
            during += 1;
            if !is_failure_mode(k, &s.value) {
                during_not_failure_mode.push(s);
            }
        }
    }
    let mut latencies: Vec<Duration> = samples.iter().map(|s| s.elapsed).collect();
    let p100 = quantile(&mut latencies, 1.0);
    let p99 = quantile(&mut latencies, 0.99);
    // Recovery per route: the end of the last answer after the restart that was not the normal one.
    let recovery = |route: Route| -> Duration {
        samples
            .iter()
            .filter(|s| {
                kind(s).0 == route && s.start >= restarting && !is_normal(kind(s), &s.value)
            })
            .map(|s| s.end().saturating_duration_since(up))
            .max()
            .unwrap_or_default()
    };
    let normal_after = |route: Route| {
        samples
            .iter()
            .filter(|s| kind(s).0 == route && s.start >= up + Duration::from_secs(3))
            .filter(|s| is_normal(kind(s), &s.value))
            .count()
    };
    let (grpc_recovery, http_recovery, open_recovery) = (
        recovery(Route::GrpcClosed),
        recovery(Route::HttpClosed),
        recovery(Route::GrpcOpen),
    );
    println!(
        "FAULT authz-server killed+restarted: sent={} during_outage={} lost={} wrongly_allowed={} \
         recovery_ms grpc={} http={} grpc_open={} p99_ms={} p100_ms={} gateway_fds {}->{} \
         grpc_conns {:?}->{:?} http_conns {:?}->{:?}",
        samples.len(),
        during,
        lost.len(),
        wrong.len(),
        grpc_recovery.as_millis(),
        http_recovery.as_millis(),
        open_recovery.as_millis(),
        p99.as_millis(),
        p100.as_millis(),
        fds_before,
        fds_after,
        grpc_before,
        grpc_after,
        http_before,
        http_after,
    );

    assert!(
        wrong.is_empty(),
        "wrongly allowed: {:?}",
        &wrong[..wrong.len().min(3)]
    );
    assert!(
        lost.is_empty(),
        "lost (neither the normal nor the failure-mode answer): {:?}",
        &lost[..lost.len().min(3)]
    );
    assert!(
        during >= 300,
        "only {during} requests fell inside the outage"
    );
    assert!(
        during_not_failure_mode.is_empty(),
        "during the outage: {:?}",
        &during_not_failure_mode[..during_not_failure_mode.len().min(3)]
    );
    assert!(p100 <= CHECK_TIMEOUT + SLACK, "a request took {p100:?}");
    // The gateway reconnects on first use, without backoff: within a second of the server being up.
    for (route, recovered) in [
        (Route::GrpcClosed, grpc_recovery),
        (Route::HttpClosed, http_recovery),
        (Route::GrpcOpen, open_recovery),
    ] {
        assert!(
            recovered <= Duration::from_secs(1),
            "{route:?} recovered after {recovered:?}"
        );
        assert!(
            normal_after(route) >= 50,
            "{route:?}: too few normal answers after recovery"
        );
    }
    // Descriptors and connections back to what they were: one h2 connection for gRPC, at most
    // one pooled HTTP/1.1 connection per concurrent check for HTTP, none left half-closed.
    assert!(
        fds_after <= fds_before + 2,
        "gateway fds {fds_before} -> {fds_after}"
    );
    assert_eq!(grpc_before, ["01"], "gRPC connections before the kill");
    assert_eq!(grpc_after, ["01"], "gRPC connections after the restart");
    assert!(
        http_after.iter().all(|s| s == "01"),
        "HTTP connections after: {http_after:?}"
    );
    assert!(
        http_after.len() <= 2,
        "HTTP connections after: {http_after:?}"
    );
    let _ = gw;
}
