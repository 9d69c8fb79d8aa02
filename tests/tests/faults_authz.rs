//! Faults of the authorization server under load, with the real `gateway` and `authz-server`
//! binaries on loopback:
//!
//! - the authz-server is killed (SIGKILL) and started again on the same ports while the gateway
//!   carries steady load over gRPC and HTTP transports: every request sent during the outage gets
//!   its policy's failure-mode answer within the check timeout, nothing is allowed by mistake,
//!   the gateway reconnects by itself, and its descriptors and connections return to baseline;
//! - an authz server (a fake in this test) answers slowly, then not at all: no request waits
//!   longer than the check timeout plus a small slack (p100), over gRPC and HTTP.
//!
//! Each test prints a `FAULT ...` line with its figures (docs/reliability.md quotes them).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use e2e::DENY_BODY;
use e2e::load::{Answer, Load, Sample, get, http_client, quantile};
use e2e::procs::{Process, binaries, free_port, open_fds, scratch_dir, sockets_to};
use extauthz_proto::v3::authorization_server::{Authorization, AuthorizationServer};
use extauthz_proto::v3::check_response::HttpResponse;
use extauthz_proto::v3::{CheckRequest, CheckResponse, OkHttpResponse};

/// One fault test at a time: they measure latency and would disturb each other.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The check timeout of every policy here.
const CHECK_TIMEOUT: Duration = Duration::from_millis(500);
/// What a request may take beyond the check timeout (proxying to the backend, a busy machine).
const SLACK: Duration = Duration::from_millis(700);

async fn start_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let address = listener.local_addr().expect("bound");
    tokio::spawn(gateway::demo_backend::serve(
        listener,
        gateway::demo_backend::DemoOptions {
            sse_delay: Duration::from_millis(100),
        },
    ));
    address
}

fn start_gateway(program: &std::path::Path, dir: &std::path::Path, config: &str) -> Process {
    let file = dir.join("gateway.toml");
    std::fs::write(&file, config).expect("writes the gateway config");
    Process::start(
        program,
        &["run".into(), "--config".into(), file.display().to_string()],
        &["http"],
        &dir.join("gateway.stderr.log"),
    )
}

fn start_authz(program: &std::path::Path, grpc: u16, http: u16, log: PathBuf) -> Process {
    Process::start(
        program,
        &[
            "--grpc-addr".into(),
            format!("127.0.0.1:{grpc}"),
            "--http-addr".into(),
            format!("127.0.0.1:{http}"),
        ],
        &["grpc", "http"],
        &log,
    )
}

// --- the authz-server killed and restarted -----------------------------------------------------

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
    let _serial = SERIAL.lock().await;
    let Some([gateway_bin, authz_bin]) = binaries(
        "authz_server_killed_and_restarted_under_load",
        ["gateway", "authz-server"],
    ) else {
        return;
    };
    let dir = scratch_dir("fault-authz-restart");
    let (grpc_port, http_port) = (free_port(), free_port());
    let backend = start_backend().await;
    let mut authz = start_authz(&authz_bin, grpc_port, http_port, dir.join("authz-1.log"));
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
    let authz = start_authz(&authz_bin, grpc_port, http_port, dir.join("authz-2.log"));
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

// --- slow, then silent --------------------------------------------------------------------------

/// How the fake authz servers behave: answer (allow) after this many ms; `u64::MAX`: never.
#[derive(Clone)]
struct Delay(Arc<AtomicU64>);

impl Delay {
    fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    async fn wait(&self) {
        match self.0.load(Ordering::SeqCst) {
            u64::MAX => std::future::pending().await,
            ms => tokio::time::sleep(Duration::from_millis(ms)).await,
        }
    }
}

struct SlowGrpc(Delay);

#[tonic::async_trait]
impl Authorization for SlowGrpc {
    async fn check(
        &self,
        _request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        self.0.wait().await;
        Ok(tonic::Response::new(CheckResponse {
            status: Some(extauthz_proto::RpcStatus::default()),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse::default())),
            ..CheckResponse::default()
        }))
    }
}

/// A gRPC authz server allowing everything after `delay`.
async fn slow_grpc(delay: Delay) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let address = listener.local_addr().expect("bound");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(SlowGrpc(delay)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    address
}

/// An HTTP-mode authz server answering 200 after `delay`.
async fn slow_http(delay: Delay) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let address = listener.local_addr().expect("bound");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let delay = delay.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    let delay = delay.clone();
                    async move {
                        delay.wait().await;
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::new()),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}

/// Accepts connections, reads whatever comes, never writes a byte; counts the connections.
async fn black_hole() -> (SocketAddr, Arc<AtomicU64>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let address = listener.local_addr().expect("bound");
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut sink = [0u8; 4096];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    (address, accepted)
}

const SLOW_ROUTES: [&str; 4] = ["/grpc", "/http", "/grpc-hole", "/http-hole"];

fn slow_config(
    backend: SocketAddr,
    grpc: SocketAddr,
    http: SocketAddr,
    grpc_hole: SocketAddr,
    http_hole: SocketAddr,
) -> String {
    let timeout = format!("{}ms", CHECK_TIMEOUT.as_millis());
    let mut config = format!(
        r#"
[[listeners]]
name = "gw"
address = "127.0.0.1:0"

[[backends]]
name = "demo"
url = "http://{backend}"
"#
    );
    for (route, authz, transport) in [
        ("grpc", grpc, "grpc = {}"),
        ("http", http, "http = {}, status_on_error = 503"),
        ("grpc-hole", grpc_hole, "grpc = {}"),
        ("http-hole", http_hole, "http = {}, status_on_error = 503"),
    ] {
        config.push_str(&format!(
            r#"
[[routes]]
name = "{route}"
path = {{ exact = "/{route}" }}
backend = "demo"

[[authz_backends]]
name = "{route}"
url = "http://{authz}"

[[policies]]
name = "{route}"
target_refs = [{{ kind = "HTTPRoute", name = "{route}" }}]
ext_auth = {{ backend = "{route}", {transport}, timeout = "{timeout}" }}
"#
        ));
    }
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authz_server_slow_then_silent_timeouts_hold_at_p100() {
    let _serial = SERIAL.lock().await;
    let Some([gateway_bin]) = binaries(
        "authz_server_slow_then_silent_timeouts_hold_at_p100",
        ["gateway"],
    ) else {
        return;
    };
    let dir = scratch_dir("fault-authz-slow");
    let delay = Delay(Arc::new(AtomicU64::new(50)));
    let backend = start_backend().await;
    let grpc = slow_grpc(delay.clone()).await;
    let http = slow_http(delay.clone()).await;
    let (grpc_hole, grpc_hole_accepted) = black_hole().await;
    let (http_hole, http_hole_accepted) = black_hole().await;
    let gw = start_gateway(
        &gateway_bin,
        &dir,
        &slow_config(backend, grpc, http, grpc_hole, http_hole),
    );
    let gw_addr = gw.address("http");
    let gw_pid = gw.pid();

    // Four workers per route, a request every 20 ms each (or one at a time while checks time out).
    let workers = SLOW_ROUTES.len() * 4;
    let clients: Vec<_> = (0..workers).map(|_| http_client()).collect();
    let load = Load::start(workers, Duration::from_millis(20), move |worker| {
        let client = clients[worker].clone();
        async move {
            get(
                &client,
                gw_addr,
                SLOW_ROUTES[worker % SLOW_ROUTES.len()],
                &[],
            )
            .await
        }
    });
    // Phases: answers in 50 ms (allowed), in 2 s (past the timeout), never, then in 50 ms again.
    let phase = Duration::from_secs(3);
    let t0 = Instant::now();
    tokio::time::sleep(phase).await;
    delay.set(2_000);
    let t_slow = Instant::now();
    tokio::time::sleep(phase).await;
    delay.set(u64::MAX);
    let t_silent = Instant::now();
    tokio::time::sleep(phase).await;
    delay.set(50);
    let t_back = Instant::now();
    tokio::time::sleep(phase).await;
    let holes_held = (
        sockets_to(gw_pid, grpc_hole.port()),
        sockets_to(gw_pid, http_hole.port()),
    );
    let fds = open_fds(gw_pid);
    let samples = load.stop().await;

    let route = |s: &Sample<Answer>| SLOW_ROUTES[s.worker % SLOW_ROUTES.len()];
    let on_error = |route: &str| if route.starts_with("/http") { 503 } else { 403 };
    let allowed = |a: &Answer| a.status() == Some(200) && a.backend_request("path").is_some();
    let failed = |r: &str, a: &Answer| a.status() == Some(on_error(r)) && a.text().is_empty();
    let mut report = String::new();
    let mut problems = Vec::new();
    for (name, from, to) in [
        ("answering", t0, t_slow),
        ("slow", t_slow, t_silent),
        ("silent", t_silent, t_back),
        ("back", t_back, t_back + phase),
    ] {
        for r in SLOW_ROUTES {
            // Requests wholly inside the phase, leaving half a second for the switch to land.
            let inside: Vec<&Sample<Answer>> = samples
                .iter()
                .filter(|s| {
                    route(s) == r && s.start >= from + Duration::from_millis(500) && s.end() <= to
                })
                .collect();
            let mut latencies: Vec<Duration> = inside.iter().map(|s| s.elapsed).collect();
            let p100 = quantile(&mut latencies, 1.0);
            let hole = r.ends_with("-hole");
            let want_allow = !hole && (name == "answering" || name == "back");
            let wrong: Vec<_> = inside
                .iter()
                .filter(|s| {
                    if want_allow {
                        !allowed(&s.value)
                    } else {
                        !failed(r, &s.value)
                    }
                })
                .collect();
            report.push_str(&format!(
                " {name}{r}: n={} p100_ms={}",
                inside.len(),
                p100.as_millis()
            ));
            if inside.len() < 12 {
                problems.push(format!("{name} {r}: only {} requests", inside.len()));
            }
            if let Some(s) = wrong.first() {
                problems.push(format!(
                    "{name} {r}: {} unexpected answers, e.g. {:?}",
                    wrong.len(),
                    s.value
                ));
            }
            if p100 > CHECK_TIMEOUT + SLACK {
                problems.push(format!("{name} {r}: a request took {p100:?}"));
            }
        }
    }
    // Every request, phase edges included: allowed or the failure-mode answer, never longer
    // than the timeout plus slack, and never allowed by a server that did not answer.
    let mut all: Vec<Duration> = samples.iter().map(|s| s.elapsed).collect();
    let p100 = quantile(&mut all, 1.0);
    let lost: Vec<_> = samples
        .iter()
        .filter(|s| !allowed(&s.value) && !failed(route(s), &s.value))
        .collect();
    let wrongly_allowed: Vec<_> = samples
        .iter()
        .filter(|s| route(s).ends_with("-hole") && allowed(&s.value))
        .collect();
    println!(
        "FAULT authz slow then silent: sent={} lost={} wrongly_allowed={} p100_ms={} gateway_fds={fds} \
         hole_sockets_held grpc={} http={} hole_connections_accepted grpc={} http={}{report}",
        samples.len(),
        lost.len(),
        wrongly_allowed.len(),
        p100.as_millis(),
        holes_held.0.len(),
        holes_held.1.len(),
        grpc_hole_accepted.load(Ordering::SeqCst),
        http_hole_accepted.load(Ordering::SeqCst),
    );
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(lost.is_empty(), "{:?}", &lost[..lost.len().min(3)]);
    assert!(wrongly_allowed.is_empty());
    assert!(p100 <= CHECK_TIMEOUT + SLACK, "a request took {p100:?}");
    // A server that never answers does not make the gateway pile up connections to it.
    // gRPC: the one connection whose handshake never completes; HTTP/1.1: at most one per check
    // in flight (4 workers), each closed when its check times out.
    assert!(
        holes_held.0.len() <= 1,
        "gRPC black hole: {:?}",
        holes_held.0
    );
    assert!(
        holes_held.1.len() <= 4,
        "HTTP black hole: {:?}",
        holes_held.1
    );
    let _ = gw;
}
