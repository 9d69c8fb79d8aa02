//! Several endpoints per backend, end to end: three loopback replicas behind one backend, load
//! spread by both policies, a replica killed (listener and connections gone) or answering 503,
//! outlier ejection and return seen in `/metrics`, active health checks, retries (to another
//! endpoint, never for a body over `max_body_bytes`, capped by the retry budget) and the
//! immediate 503 `no healthy upstream` when every endpoint is down.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::*;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

const OK: u8 = 0;
const FAIL_503: u8 = 1;
const SLOW_503: u8 = 2;

/// One backend replica: counts what it serves, can answer 503, fail its health check, or die.
struct Replica {
    addr: SocketAddr,
    hits: AtomicUsize,
    mode: AtomicU8,
    healthy: AtomicBool,
    tasks: std::sync::Mutex<JoinSet<()>>,
}

impl Replica {
    async fn start() -> Arc<Replica> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let replica = Arc::new(Replica {
            addr: listener.local_addr().expect("an address"),
            hits: AtomicUsize::new(0),
            mode: AtomicU8::new(OK),
            healthy: AtomicBool::new(true),
            tasks: std::sync::Mutex::new(JoinSet::new()),
        });
        let serving = replica.clone();
        let accept = async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let r = serving.clone();
                let conn = async move {
                    let svc = service_fn(move |req| {
                        let r = r.clone();
                        async move { Ok::<_, Infallible>(r.answer(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                };
                if let Ok(mut tasks) = serving.tasks.lock() {
                    tasks.spawn(conn);
                }
            }
        };
        replica.tasks.lock().expect("lock").spawn(accept);
        replica
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.uri().path() == "/healthz" {
            let status = if self.healthy.load(Ordering::SeqCst) {
                200
            } else {
                503
            };
            return reply(status, "");
        }
        self.hits.fetch_add(1, Ordering::SeqCst);
        let body = req.into_body().collect().await.map(|b| b.to_bytes().len());
        match self.mode.load(Ordering::SeqCst) {
            FAIL_503 => reply(503, "replica says 503"),
            SLOW_503 => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                reply(503, "replica says 503")
            }
            _ => reply(200, &format!("{} {}", self.addr, body.unwrap_or(0))),
        }
    }

    /// Closes the listener and every open connection: connects are refused from now on.
    fn kill(&self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.abort_all();
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn reply(status: u16, body: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_owned())));
    *resp.status_mut() = StatusCode::from_u16(status).expect("a status");
    resp
}

async fn replicas(n: usize) -> Vec<Arc<Replica>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Replica::start().await);
    }
    out
}

/// A gateway with an admin port, backend `pool` over `replicas` with `backend` settings, and
/// route `r` with `route` settings.
async fn gateway(replicas: &[Arc<Replica>], backend: &str, route: &str) -> TestGateway {
    let endpoints: Vec<String> = replicas
        .iter()
        .map(|r| format!("\"http://{}\"", r.addr))
        .collect();
    start_test_gateway(&format!(
        r#"
[admin]
address = "127.0.0.1:0"

[[listeners]]
name = "gw"
address = "127.0.0.1:0"

[[backends]]
name = "pool"
endpoints = [{}]
{backend}

[[routes]]
name = "r"
backend = "pool"
{route}
"#,
        endpoints.join(", ")
    ))
    .await
}

async fn metrics(gw: &TestGateway) -> String {
    admin_get(gw.admin.expect("an admin port"), "/metrics")
        .await
        .text()
}

fn series(name: &str, replica: &Replica) -> String {
    format!("{name}{{backend=\"pool\",endpoint=\"{}\"}}", replica.addr)
}

/// Sends `n` GETs, `concurrency` at a time; returns the statuses in completion order.
async fn load(gw: SocketAddr, n: usize, concurrency: usize) -> Vec<StatusCode> {
    let client = client();
    let mut statuses = Vec::new();
    let mut running = JoinSet::new();
    for i in 0..n {
        if running.len() == concurrency
            && let Some(done) = running.join_next().await
        {
            statuses.push(done.expect("a request task"));
        }
        let client = client.clone();
        running.spawn(async move {
            let resp = client
                .request(get(gw, &format!("/x/{i}"), &[]))
                .await
                .expect("the gateway answers");
            let status = resp.status();
            let _ = resp.into_body().collect().await;
            status
        });
    }
    while let Some(done) = running.join_next().await {
        statuses.push(done.expect("a request task"));
    }
    statuses
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within 10 s: {what}");
}

#[tokio::test]
async fn both_policies_spread_the_load() {
    let reps = replicas(3).await;
    let gw = gateway(&reps, "lb_policy = \"round_robin\"", "").await;
    let statuses = load(gw.addr, 300, 1).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::OK));
    let hits: Vec<usize> = reps.iter().map(|r| r.hits()).collect();
    assert_eq!(hits, [100, 100, 100], "round robin takes each in turn");

    let reps = replicas(3).await;
    let gw = gateway(&reps, "", "").await;
    let statuses = load(gw.addr, 600, 6).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::OK));
    for r in &reps {
        assert!(
            (120..=280).contains(&r.hits()),
            "least request spreads: {}",
            r.hits()
        );
    }
}

#[tokio::test]
async fn with_retries_a_killed_endpoint_loses_no_request_and_is_ejected() {
    let reps = replicas(3).await;
    let gw = gateway(
        &reps,
        "outlier_detection = { consecutive_connect_failures = 2, consecutive_5xx = 2 }",
        "retries = { attempts = 3, on = [\"connect-failure\", \"reset\"] }",
    )
    .await;
    assert!(
        load(gw.addr, 30, 3)
            .await
            .iter()
            .all(|s| *s == StatusCode::OK)
    );
    reps[1].kill();
    let statuses = load(gw.addr, 300, 4).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let m = metrics(&gw).await;
    assert_eq!(
        sample(&m, &series("gateway_upstream_endpoint_ejected", &reps[1])),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, &series("gateway_upstream_ejections_total", &reps[1])),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, &series("gateway_upstream_endpoint_ejected", &reps[0])),
        Some(0.0)
    );
    let retried = sample(
        &m,
        "gateway_upstream_retries_total{route=\"r\",reason=\"connect_failure\"}",
    )
    .unwrap_or(0.0)
        + sample(
            &m,
            "gateway_upstream_retries_total{route=\"r\",reason=\"reset\"}",
        )
        .unwrap_or(0.0);
    assert!(retried >= 1.0, "the failures were retried:\n{m}");
}

#[tokio::test]
async fn without_retries_the_failures_stop_once_the_endpoint_is_ejected() {
    let reps = replicas(3).await;
    let gw = gateway(
        &reps,
        "lb_policy = \"round_robin\"\noutlier_detection = { consecutive_connect_failures = 2, consecutive_5xx = 2 }",
        "",
    )
    .await;
    assert!(
        load(gw.addr, 30, 1)
            .await
            .iter()
            .all(|s| *s == StatusCode::OK)
    );
    reps[2].kill();
    let statuses = load(gw.addr, 150, 1).await;
    let failed = statuses.iter().filter(|s| **s != StatusCode::OK).count();
    assert_eq!(failed, 2, "two failures in a row eject it: {statuses:?}");
    assert!(statuses[10..].iter().all(|s| *s == StatusCode::OK));
    let m = metrics(&gw).await;
    assert_eq!(
        sample(&m, &series("gateway_upstream_endpoint_ejected", &reps[2])),
        Some(1.0)
    );
}

#[tokio::test]
async fn an_endpoint_answering_503_is_ejected_and_returns_after_its_time() {
    let reps = replicas(3).await;
    let gw = gateway(
        &reps,
        "lb_policy = \"round_robin\"\noutlier_detection = { consecutive_5xx = 3, base_ejection_time = \"1s\" }",
        "",
    )
    .await;
    reps[0].mode.store(FAIL_503, Ordering::SeqCst);
    let statuses = load(gw.addr, 60, 1).await;
    let failed = statuses
        .iter()
        .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    assert_eq!(failed, 3, "{statuses:?}");
    assert_eq!(reps[0].hits(), 3);
    let m = metrics(&gw).await;
    assert_eq!(
        sample(&m, &series("gateway_upstream_endpoint_ejected", &reps[0])),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, &series("gateway_upstream_ejections_total", &reps[0])),
        Some(1.0)
    );
    reps[0].mode.store(OK, Ordering::SeqCst);
    eventually("the endpoint returns (gauge 0)", async || {
        let m = metrics(&gw).await;
        sample(&m, &series("gateway_upstream_endpoint_ejected", &reps[0])) == Some(0.0)
    })
    .await;
    load(gw.addr, 30, 1).await;
    assert!(reps[0].hits() > 3, "traffic comes back");
}

#[tokio::test]
async fn all_endpoints_down_is_503_no_healthy_upstream_at_once() {
    let reps = replicas(2).await;
    let gw = gateway(
        &reps,
        "outlier_detection = { consecutive_connect_failures = 1, max_ejection_percent = 100 }",
        "",
    )
    .await;
    for r in &reps {
        r.kill();
    }
    eventually("both endpoints ejected", async || {
        load(gw.addr, 4, 1).await;
        let m = metrics(&gw).await;
        reps.iter()
            .all(|r| sample(&m, &series("gateway_upstream_endpoint_ejected", r)) == Some(1.0))
    })
    .await;
    let began = Instant::now();
    let reply = send(get(gw.addr, "/x", &[])).await;
    let took = began.elapsed();
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.text(), "no healthy upstream");
    assert!(took < Duration::from_secs(1), "answered in {took:?}");
}

#[tokio::test]
async fn an_active_health_check_takes_an_endpoint_out_and_brings_it_back() {
    let reps = replicas(3).await;
    let gw = gateway(
        &reps,
        "health_check = { path = \"/healthz\", interval = \"100ms\", timeout = \"100ms\", unhealthy_threshold = 2, healthy_threshold = 1 }",
        "",
    )
    .await;
    reps[1].healthy.store(false, Ordering::SeqCst);
    eventually("marked unhealthy", async || {
        let m = metrics(&gw).await;
        sample(&m, &series("gateway_upstream_endpoint_healthy", &reps[1])) == Some(0.0)
    })
    .await;
    let before = reps[1].hits();
    assert!(
        load(gw.addr, 60, 2)
            .await
            .iter()
            .all(|s| *s == StatusCode::OK)
    );
    assert_eq!(
        reps[1].hits(),
        before,
        "no traffic to an unhealthy endpoint"
    );
    reps[1].healthy.store(true, Ordering::SeqCst);
    eventually("marked healthy again", async || {
        let m = metrics(&gw).await;
        sample(&m, &series("gateway_upstream_endpoint_healthy", &reps[1])) == Some(1.0)
    })
    .await;
    load(gw.addr, 60, 2).await;
    assert!(reps[1].hits() > before, "traffic comes back");
}

#[tokio::test]
async fn a_body_over_max_body_bytes_is_sent_once() {
    let reps = replicas(2).await;
    reps[0].mode.store(FAIL_503, Ordering::SeqCst);
    let gw = gateway(
        &reps,
        "lb_policy = \"round_robin\"",
        "retries = { attempts = 2, on = [\"503\"], max_body_bytes = 1024 }",
    )
    .await;
    let post = |len: usize| {
        Request::post(format!("http://{}/upload", gw.addr))
            .body(Full::new(Bytes::from(vec![b'x'; len])))
            .expect("a request")
    };
    // Round robin: the first try of each request alternates between the replicas.
    let big: Vec<StatusCode> = [send(post(4096)).await, send(post(4096)).await]
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(big, [StatusCode::SERVICE_UNAVAILABLE, StatusCode::OK]);
    assert_eq!(
        (reps[0].hits(), reps[1].hits()),
        (1, 1),
        "no retry for a large body"
    );
    for _ in 0..2 {
        let small = send(post(1000)).await;
        assert_eq!(small.status, StatusCode::OK);
        assert_eq!(
            small.text(),
            format!("{} 1000", reps[1].addr),
            "the body replayed whole"
        );
    }
    // Each small request went first to the failing replica (round robin lands there again
    // after a retry moved it on) and was retried on the other.
    assert_eq!((reps[0].hits(), reps[1].hits()), (3, 3));
}

#[tokio::test]
async fn the_retry_budget_caps_retries() {
    let reps = replicas(1).await;
    reps[0].mode.store(SLOW_503, Ordering::SeqCst);
    let gw = gateway(
        &reps,
        "",
        "retries = { attempts = 5, on = [\"503\"], budget_percent = 0, min_retry_concurrency = 1 }",
    )
    .await;
    let statuses = load(gw.addr, 20, 20).await;
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE)
    );
    let tries = reps[0].hits();
    // Unbounded, 20 requests would make 100 tries; one retry at a time allows 20 + 4 or so.
    assert!((21..=28).contains(&tries), "tries: {tries}");
    let m = metrics(&gw).await;
    let overflow = sample(&m, "gateway_upstream_retry_overflow_total{route=\"r\"}").unwrap_or(0.0);
    assert!(overflow >= 15.0, "overflow: {overflow}\n{m}");
}

/// The listener and route every rejected case shares (4 lines), then the case.
fn errors_of(case: &str) -> Vec<String> {
    let text = format!(
        "[[listeners]]\nname = \"gw\"\naddress = \"127.0.0.1:0\"\n[[routes]]\nname = \"r\"\nbackend = \"b\"\n{case}"
    );
    match gateway::Config::from_toml(&text, "t.toml") {
        Ok(_) => vec![],
        // A refused backend leaves route `r` pointing at nothing: that follow-on error is the
        // route's, not the case's.
        Err(e) => e
            .errors
            .iter()
            .map(ToString::to_string)
            .filter(|e| e != "t.toml:6:11: unknown backend `b`")
            .collect(),
    }
}

#[test]
fn rejected_endpoint_and_retry_settings_name_their_place() {
    let cases: &[(&str, &[&str])] = &[
        (
            "[[backends]]\nname = \"b\"\nurl = \"http://a:1\"\nendpoints = [\"http://b:1\"]\n",
            &["t.toml:10:13: a backend takes `url` or `endpoints`, not both"],
        ),
        (
            "[[backends]]\nname = \"b\"\n",
            &["t.toml:8:8: a backend needs `url` or `endpoints`"],
        ),
        (
            "[[backends]]\nname = \"b\"\nendpoints = []\n",
            &["t.toml:9:13: `endpoints` needs at least one URL"],
        ),
        (
            "[[backends]]\nname = \"b\"\nendpoints = [\"http://a:1\", \"https://b:1\"]\n",
            &[
                "t.toml:9:13: every endpoint of a backend has the same scheme (all http:// or all https://)",
            ],
        ),
        (
            "[[backends]]\nname = \"b\"\nendpoints = [\"http://a:1\", \"http://A:1\"]\n",
            &["t.toml:9:28: duplicate endpoint `http://A:1`"],
        ),
        (
            "[[backends]]\nname = \"b\"\nendpoints = [\"http://a:1/v1\"]\n",
            &[
                "t.toml:9:14: invalid url `http://a:1/v1`: a backend url has no path (found `/v1`); expected http://host[:port] or https://host[:port], and set the path with the route's `rewrite_prefix`",
            ],
        ),
        (
            "[[backends]]\nname = \"b\"\nendpoints = [\"http://a:1\"]\nlb_policy = \"random\"\n",
            &[
                "t.toml:10:13: unknown lb_policy `random`: expected \"least_request\" or \"round_robin\"",
            ],
        ),
        (
            "[[backends]]\nname = \"b\"\nurl = \"http://a:1\"\noutlier_detection = { consecutive_5xx = 3, interval = \"1s\" }\n",
            &[
                "t.toml:10:44: unknown field `interval`, expected one of `consecutive_5xx`, `consecutive_connect_failures`, `base_ejection_time`, `max_ejection_time`, `max_ejection_percent`",
            ],
        ),
        (
            "[[backends]]\nname = \"b\"\nurl = \"http://a:1\"\noutlier_detection = { max_ejection_percent = 101, base_ejection_time = \"0s\" }\n",
            &[
                "t.toml:10:46: max_ejection_percent is a percentage: 0 to 100",
                "t.toml:10:72: invalid duration `0s`: expected a positive whole number with unit ms, s or m, e.g. \"200ms\"",
            ],
        ),
        (
            "[[backends]]\nname = \"b\"\nurl = \"http://a:1\"\nhealth_check = { path = \"healthz\", unhealthy_threshold = 0 }\n",
            &[
                "t.toml:10:25: invalid health_check path `healthz`: expected a path starting with `/`",
                "t.toml:10:58: a health_check threshold is at least 1",
            ],
        ),
        (
            "[[backends]]\nname = \"b\"\nurl = \"http://a:1\"\nhealth_check = { interval = \"1s\" }\n",
            &["t.toml:10:16: missing field `path`"],
        ),
    ];
    for (case, want) in cases {
        assert_eq!(errors_of(case), *want, "for:\n{case}");
    }
}

#[test]
fn rejected_retries_name_their_place() {
    let route = |retries: &str, extra: &str| {
        format!(
            "[[listeners]]\nname = \"gw\"\naddress = \"127.0.0.1:0\"\n[[backends]]\nname = \"b\"\nurl = \"http://a:1\"\n[[routes]]\nname = \"r\"\nbackend = \"b\"\n{extra}retries = {retries}\n"
        )
    };
    let cases: &[(String, &[&str])] = &[
        (
            route("{ attempts = 0 }", ""),
            &["t.toml:10:24: retries attempts is the number of tries, first included: 1 to 10"],
        ),
        (
            route("{ attempts = 2, on = [\"5xx\", \"bogus\"] }", ""),
            &[
                "t.toml:10:40: unknown retry condition `bogus`: expected \"connect-failure\", \"refused-stream\", \"reset\", \"5xx\", \"gateway-error\" or a status code 400-599",
            ],
        ),
        (
            route("{ attempts = 2, on = [] }", ""),
            &["t.toml:10:32: retries `on` needs at least one condition"],
        ),
        (
            route(
                "{ attempts = 2, budget_percent = 120, per_try_timeout = \"2\" }",
                "",
            ),
            &[
                "t.toml:10:44: budget_percent is a percentage: 0 to 100",
                "t.toml:10:67: invalid duration `2`: expected a positive whole number with unit ms, s or m, e.g. \"200ms\"",
            ],
        ),
        (
            route("{ attempts = 2 }", "upgrades = [\"websocket\"]\n"),
            &[
                "t.toml:11:11: a route with `upgrades` takes no `retries`: an upgraded stream cannot be sent again",
            ],
        ),
        (
            route("{ attempts = 2, tries = 3 }", ""),
            &[
                "t.toml:10:27: unknown field `tries`, expected one of `attempts`, `on`, `per_try_timeout`, `budget_percent`, `min_retry_concurrency`, `max_body_bytes`",
            ],
        ),
    ];
    for (text, want) in cases {
        let got: Vec<String> = match gateway::Config::from_toml(text, "t.toml") {
            Ok(_) => vec![],
            Err(e) => e.errors.iter().map(ToString::to_string).collect(),
        };
        assert_eq!(got, *want, "for:\n{text}");
    }
}
