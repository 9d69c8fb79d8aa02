//! The `gateway` binary as an operator runs it: SIGTERM drains and exits 0, SIGHUP reloads,
//! `--admin` serves the admin endpoint, and no credential ever reaches a log line in either
//! `--log-format`.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::StatusCode;
use support::*;

/// A running `gateway run`, killed on drop if still alive.
struct GatewayProcess {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    stderr: PathBuf,
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl GatewayProcess {
    /// `gateway run --config FILE --listen 127.0.0.1:0 --admin 127.0.0.1:0 ARGS...`, with stderr
    /// captured in a file next to the config and `RUST_LOG` as given.
    fn start(config: &Path, args: &[&str], rust_log: &str) -> GatewayProcess {
        let stderr = config.with_extension("stderr.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("creates the file"))
            .spawn()
            .expect("starts the binary");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
        let mut next = |prefix: &str| -> SocketAddr {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("gateway exited; stderr:\n{}", read(&stderr)))
                .expect("reads a stdout line");
            line.strip_prefix(prefix)
                .unwrap_or_else(|| panic!("unexpected line {line:?}"))
                .parse()
                .expect("a socket address after the prefix")
        };
        let addr = next("listening http ");
        let admin = next("listening admin ");
        GatewayProcess {
            child,
            addr,
            admin,
            stderr,
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("runs the command");
        assert!(status.success());
    }

    /// Waits for the process to exit and returns its exit code.
    fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("polls the child process") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "gateway still running after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn logs(&self) -> String {
        read(&self.stderr)
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_requests_in_flight_refuses_new_connections_and_exits_0() {
    let backend = start_backend().await;
    let authz = MockAuthz::istio().await;
    let dir = testkit::scratch_dir("sigterm");
    let file = dir.join("gateway.toml");
    std::fs::write(&file, seed_config(backend, authz.addr, GATEWAY_POLICY)).unwrap();
    let mut gw = GatewayProcess::start(&file, &["--drain-timeout", "5s"], "info");

    let allow = [("x-ext-authz", "allow")];
    let slow: Vec<_> = (0..3)
        .map(|_| tokio::spawn(send(seed_post(gw.addr, "/openai?delay_ms=1500", &allow))))
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let began = Instant::now();
    gw.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert!(
        tokio::net::TcpStream::connect(gw.addr).await.is_err(),
        "a new connection was accepted while draining"
    );
    let ready = admin_get(gw.admin, "/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);

    for request in slow {
        let r = request.await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json()["request"]["path"], "/openai");
    }
    let code = tokio::task::block_in_place(|| gw.wait_exit(Duration::from_secs(10)));
    assert_eq!(code, Some(0), "stderr:\n{}", gw.logs());
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "waited for the deadline"
    );
    let logs = gw.logs();
    assert!(logs.contains("SIGTERM: draining"), "{logs}");
    assert!(logs.contains("drained=Clean"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_deadline_cuts_what_is_left_and_still_exits_0() {
    let backend = start_backend().await;
    let authz = MockAuthz::istio().await;
    let dir = testkit::scratch_dir("deadline");
    let file = dir.join("gateway.toml");
    std::fs::write(&file, seed_config(backend, authz.addr, GATEWAY_POLICY)).unwrap();
    let mut gw = GatewayProcess::start(&file, &["--drain-timeout", "300ms"], "info");
    let gw_addr = gw.addr;
    let stuck = tokio::spawn(async move {
        client()
            .request(seed_post(
                gw_addr,
                "/openai?delay_ms=5000",
                &[("x-ext-authz", "allow")],
            ))
            .await
            .map(|r| r.status())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.signal("INT");
    let code = tokio::task::block_in_place(|| gw.wait_exit(Duration::from_secs(3)));
    assert_eq!(code, Some(0));
    assert!(
        stuck.await.unwrap().is_err(),
        "the stuck request should be cut"
    );
    assert!(gw.logs().contains("drain deadline passed"), "{}", gw.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_the_admin_port_counts_it() {
    let backend = start_backend().await;
    let authz = MockAuthz::istio().await;
    let dir = testkit::scratch_dir("sighup");
    let file = dir.join("gateway.toml");
    let with_rewrite = |to: &str| {
        seed_config(backend, authz.addr, GATEWAY_POLICY).replace(
            "backend = \"openai\"\n",
            &format!("backend = \"openai\"\nrewrite_prefix = \"{to}\"\n"),
        )
    };
    std::fs::write(&file, with_rewrite("/one")).unwrap();
    // Polling is effectively off: only the signal reloads.
    let gw = GatewayProcess::start(&file, &["--reload-interval", "60m"], "info");
    let allow = [("x-ext-authz", "allow")];
    let path = |r: Reply200| r.json()["request"]["path"].as_str().unwrap().to_owned();
    assert_eq!(
        path(send(seed_post(gw.addr, "/openai", &allow)).await),
        "/one"
    );

    std::fs::write(&file, with_rewrite("/two")).unwrap();
    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while path(send(seed_post(gw.addr, "/openai", &allow)).await) != "/two" {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = admin_get(gw.admin, "/metrics").await.text();
    assert_eq!(
        sample(&m, "gateway_config_reloads_total{result=\"ok\"}"),
        Some(1.0)
    );

    // A broken file on SIGHUP: refused, errors logged with their place, the old config serves.
    std::fs::write(&file, with_rewrite("three")).unwrap();
    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = admin_get(gw.admin, "/metrics").await.text();
        if sample(&m, "gateway_config_synchronized") == Some(0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "broken config not refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        path(send(seed_post(gw.addr, "/openai", &allow)).await),
        "/two"
    );
    let logs = gw.logs();
    let place = format!(
        "{}:14:18: rewrite_prefix must start with `/`",
        file.display()
    );
    assert!(logs.contains(&place), "{place} not in\n{logs}");
}

/// Credentials the requests carry; none may appear in any log line.
const SECRETS: &[&str] = &[
    "Bearer-tok-7f3a9c",
    "session-cookie-51c2e8",
    "api-key-0b7d44",
    "N2YwMDIxZTEtNGUzNS1jNzgzLTRkYjAtYjE2YzRkZGVmNjcy",
    "query-token-9e1f02",
    "query-key-66aa10",
];

async fn credential_traffic(gw: SocketAddr) {
    let headers = [
        ("authorization", "Bearer Bearer-tok-7f3a9c"),
        ("cookie", "session=session-cookie-51c2e8; theme=dark"),
        ("x-api-key", "api-key-0b7d44"),
        (
            "x-ai-api-key",
            "N2YwMDIxZTEtNGUzNS1jNzgzLTRkYjAtYjE2YzRkZGVmNjcy",
        ),
        ("x-request-id", "req-logged-42"),
    ];
    let path = "/openai?token=query-token-9e1f02&api_key=query-key-66aa10";
    let mut allowed = headers.to_vec();
    allowed.push(("x-ext-authz", "allow"));
    assert_eq!(
        send(seed_post(gw, path, &allowed)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(seed_post(gw, path, &headers)).await.status,
        StatusCode::FORBIDDEN
    );
    // The route whose authz server is down: an error, logged with its reason.
    assert_eq!(
        send(seed_post(gw, &path.replace("/openai", "/down"), &allowed))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // No route.
    assert_eq!(
        send(get(gw, &path.replace("/openai", "/nowhere"), &headers))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

async fn assert_no_credential_logged(format: &str) {
    let backend = start_backend().await;
    let authz = MockAuthz::istio().await;
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds a loopback port")
        .local_addr()
        .expect("a bound listener has an address");
    let dir = testkit::scratch_dir("redaction");
    let file = dir.join("gateway.toml");
    let extra = format!(
        r#"{GATEWAY_POLICY}
[[routes]]
name = "down"
path = {{ prefix = "/down" }}
backend = "openai"

[[authz_backends]]
name = "dead"
url = "http://{dead}"

[[policies]]
name = "down-policy"
target_refs = [{{ kind = "HTTPRoute", name = "down" }}]
ext_auth = {{ backend = "dead" }}
"#
    );
    std::fs::write(&file, seed_config(backend, authz.addr, &extra)).expect("writes the file");
    // Debug level: what an operator turns on while chasing a problem.
    let mut gw = GatewayProcess::start(&file, &["--log-format", format], "debug");
    credential_traffic(gw.addr).await;
    gw.signal("TERM");
    assert_eq!(
        tokio::task::block_in_place(|| gw.wait_exit(Duration::from_secs(10))),
        Some(0)
    );
    let logs = gw.logs();

    let access: Vec<&str> = logs.lines().filter(|l| l.contains("access_log")).collect();
    assert_eq!(access.len(), 4, "{logs}");
    for line in &access {
        assert!(line.contains("req-logged-42"), "request id missing: {line}");
    }
    assert!(logs.contains("token=REDACTED&api_key=REDACTED"), "{logs}");
    for secret in SECRETS {
        for line in logs.lines() {
            assert!(!line.contains(secret), "credential {secret} logged: {line}");
        }
    }
    if format == "json" {
        for line in logs.lines() {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_in_any_text_log_line() {
    assert_no_credential_logged("text").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_in_any_json_log_line() {
    assert_no_credential_logged("json").await;
}

/// A line of text log that a value forged: it starts with what an attacker wrote.
fn forged(logs: &str) -> Vec<&str> {
    logs.lines().filter(|l| l.starts_with("FORGED")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_in_logged_values_cannot_forge_a_text_log_line() {
    let backend = start_backend().await;
    // The authorization server's error message and the route's name reach log lines.
    let authz = MockAuthz::start(|_| {
        Reply::Fail(tonic::Status::internal(
            "boom\r\nFORGED access_log status=200\x1b[2J",
        ))
    })
    .await;
    let dir = testkit::scratch_dir("escaping");
    let file = dir.join("gateway.toml");
    let config = seed_config(backend, authz.addr, GATEWAY_POLICY).replace(
        "name = \"openai\"\npath",
        "name = \"openai\\nFORGED route\"\npath",
    );
    assert!(config.contains("openai\\nFORGED"), "{config}");
    std::fs::write(&file, config).unwrap();
    let gw = GatewayProcess::start(&file, &[], "info");
    let r = send(get(gw.addr, "/openai?token=s3cr3t", &[])).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The access line is written after the response, and handed to the writer in batches
    // (every 100 ms): wait for it. (The WARN line quotes the forged `access_log` text too.)
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gw.logs().contains("INFO access_log: request") {
        assert!(
            Instant::now() < deadline,
            "no access log line: {}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logs = gw.logs();
    assert_eq!(forged(&logs), Vec::<&str>::new(), "{logs}");
    assert!(!logs.contains('\x1b'), "{logs}");
    assert!(
        logs.contains("boom\\r\\nFORGED access_log status=200\\x1b[2J"),
        "{logs}"
    );
    assert!(logs.contains("route=openai\\nFORGED route"), "{logs}");
    assert!(logs.contains("path=/openai?token=REDACTED"), "{logs}");
}
