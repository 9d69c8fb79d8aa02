//! A backend that breaks its connections, under load, with the real `gateway` binary: it closes
//! or resets the connection before the response head, or in the middle of the body. The client
//! sees a clean error — `502` with the gateway's own body before the head; after the head, the
//! body cut short (HTTP/1.1: the connection closed before `content-length`/the last chunk; h2:
//! the stream reset, the connection kept) — and every request to a healthy route on the same
//! gateway, at the same time, succeeds. Descriptors return to baseline; no socket is left
//! half-closed.
//!
//! Envoy answers `503` (`upstream connect error or disconnect/reset before headers`) where this
//! gateway answers `502` (docs/gateway.md: a connection that broke is `502`, as nginx answers);
//! after the head both cut the body the same way.

use std::net::SocketAddr;
use std::time::Duration;

use e2e::load::{Answer, Load, Sample, get, h2_client, http_client, quantile};
use e2e::procs::{sockets_to, start_gateway};
use testkit::open_fds;
use testkit::{binaries, scratch_dir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The declared body length of the cut responses (only a part of it is sent).
const DECLARED: usize = 1000;

/// A backend misbehaving according to the request path; `/ok` answers properly.
async fn misbehaving_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let address = listener.local_addr().expect("bound");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                // Several requests per connection (the gateway pools); each head read whole.
                loop {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let path = text.split(' ').nth(1).unwrap_or("").to_owned();
                    let partial = "x".repeat(100);
                    match path.as_str() {
                        "/close-before-head" => return,
                        "/reset-before-head" => {
                            let _ = stream.set_zero_linger();
                            return;
                        }
                        "/close-mid-body" | "/reset-mid-body" => {
                            let response = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {DECLARED}\r\n\r\n{partial}"
                            );
                            let _ = stream.write_all(response.as_bytes()).await;
                            let _ = stream.flush().await;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            if path == "/reset-mid-body" {
                                let _ = stream.set_zero_linger();
                            }
                            return;
                        }
                        "/chunked-cut" => {
                            let response = format!(
                                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n64\r\n{partial}\r\n"
                            );
                            let _ = stream.write_all(response.as_bytes()).await;
                            let _ = stream.flush().await;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            return;
                        }
                        _ => {
                            let body = "fine";
                            let response = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            if stream.write_all(response.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    address
}

const PATHS: [&str; 6] = [
    "/ok",
    "/close-before-head",
    "/reset-before-head",
    "/close-mid-body",
    "/reset-mid-body",
    "/chunked-cut",
];

/// What the client must see for each path.
fn expected(path: &str, answer: &Answer) -> bool {
    match path {
        "/ok" => answer.status() == Some(200) && answer.text() == "fine",
        "/close-before-head" | "/reset-before-head" => {
            answer.status() == Some(502)
                && answer.text()
                    == "upstream connect error or disconnect/reset before headers. reset reason: remote reset"
        }
        _ => matches!(answer, Answer::Truncated { status: 200, .. }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_closing_and_resetting_mid_response_gives_clean_errors_and_the_gateway_keeps_serving()
 {
    let test = "backend_closing_and_resetting_mid_response_gives_clean_errors_and_the_gateway_keeps_serving";
    let Some([gateway_bin]) = binaries(test, ["gateway"]) else {
        return;
    };
    let dir = scratch_dir("fault-backend");
    let backend = misbehaving_backend().await;
    let config = format!(
        r#"
[[listeners]]
name = "gw"
address = "127.0.0.1:0"

[[backends]]
name = "flaky"
url = "http://{backend}"

[[routes]]
name = "all"
path = {{ prefix = "/" }}
backend = "flaky"
"#
    );
    let gw = start_gateway(&gateway_bin, &dir, &config);
    let gw_addr = gw.address("http");
    let gw_pid = gw.pid();

    // Per path: one HTTP/1.1 worker; plus one h2 worker per path sharing one h2 connection, so
    // a reset stream must not take the connection (and the other paths' streams) with it.
    let h1: Vec<_> = PATHS.iter().map(|_| http_client()).collect();
    let h2 = h2_client();
    let workers = PATHS.len() * 2;
    let load = Load::start(workers, Duration::from_millis(15), move |worker| {
        let client = if worker < PATHS.len() {
            h1[worker].clone()
        } else {
            h2.clone()
        };
        async move { get(&client, gw_addr, PATHS[worker % PATHS.len()], &[]).await }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fds_during = open_fds(gw_pid);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let samples = load.stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fds_after = open_fds(gw_pid);
    let backend_sockets = sockets_to(gw_pid, backend.port());
    // Still serving, on a fresh connection.
    let after = get(&http_client(), gw_addr, "/ok", &[]).await;

    let path = |s: &Sample<Answer>| PATHS[s.worker % PATHS.len()];
    let unexpected: Vec<_> = samples
        .iter()
        .filter(|s| !expected(path(s), &s.value))
        .collect();
    let mut latencies: Vec<Duration> = samples.iter().map(|s| s.elapsed).collect();
    let p100 = quantile(&mut latencies, 1.0);
    let count = |p: &str| samples.iter().filter(|s| path(s) == p).count();
    println!(
        "FAULT backend close/reset: sent={} faulty={} unexpected={} ok={} p100_ms={} gateway_fds during={fds_during} after_load={fds_after} backend_sockets_after={backend_sockets:?}",
        samples.len(),
        samples.len() - count("/ok"),
        unexpected.len(),
        count("/ok"),
        p100.as_millis(),
    );
    assert!(
        unexpected.is_empty(),
        "{} unexpected answers, e.g. {:?}",
        unexpected.len(),
        unexpected
            .iter()
            .take(3)
            .map(|s| (path(s), &s.value))
            .collect::<Vec<_>>()
    );
    for p in PATHS {
        assert!(count(p) >= 100, "only {} requests to {p}", count(p));
    }
    assert!(p100 < Duration::from_secs(2), "a request took {p100:?}");
    assert!(expected("/ok", &after), "after the load: {after:?}");
    // The load's client connections are gone; nothing more than at the start is held open
    // (the listener, the backend pool's idle connections at most).
    assert!(
        fds_after <= fds_during,
        "gateway fds {fds_during} during load -> {fds_after} after"
    );
    assert!(
        backend_sockets.iter().all(|s| s == "01"),
        "sockets to the backend left half-closed: {backend_sockets:?}"
    );
}
