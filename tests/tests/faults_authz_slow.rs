//! A slow, then silent authorization server under load, with the real `gateway` binary on
//! loopback: an authz server (a fake in this test) answers slowly, then not at all, and no
//! request waits longer than the check timeout plus a small slack (p100), over gRPC and HTTP.
//!
//! Each test prints a `FAULT ...` line with its figures (docs/reliability.md quotes them). Fault
//! tests measure latency, so each has a test binary of its own: Cargo runs binaries one at a time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use e2e::load::{Answer, Load, Sample, get, http_client, quantile};
use e2e::procs::{sockets_to, start_gateway};
use e2e::start_demo_backend;
use extauthz_proto::v3::authorization_server::{Authorization, AuthorizationServer};
use extauthz_proto::v3::check_response::HttpResponse;
use extauthz_proto::v3::{CheckRequest, CheckResponse, OkHttpResponse};
use testkit::open_fds;
use testkit::{binaries, scratch_dir};

/// The check timeout of every policy here.
const CHECK_TIMEOUT: Duration = Duration::from_millis(500);
/// What a request may take beyond the check timeout (proxying to the backend, a busy machine).
const SLACK: Duration = Duration::from_millis(700);

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
    let Some([gateway_bin]) = binaries(
        "authz_server_slow_then_silent_timeouts_hold_at_p100",
        ["gateway"],
    ) else {
        return;
    };
    let dir = scratch_dir("fault-authz-slow");
    let delay = Delay(Arc::new(AtomicU64::new(50)));
    let backend = start_demo_backend().await;
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
