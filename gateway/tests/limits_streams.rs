//! Listener limits on streams, as an HTTP/2 client meets them: a stalled request or response
//! body, the concurrent-stream cap, reset floods, and a check cancelled by a reset.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use extauthz_proto::v3::authorization_server::{Authorization, AuthorizationServer};
use extauthz_proto::v3::{CheckRequest, CheckResponse};
use http::{Request, StatusCode};
use http_body_util::Full;
use support::limits::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn a_stalled_request_body_gets_408_at_the_stream_idle_timeout() {
    let gw = gateway_with(r#"stream_idle_timeout = "1s""#).await;
    let mut s = TcpStream::connect(gw).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nonly ten b")
        .await
        .unwrap();
    let head = read_response_head(&mut s).await;
    assert!(head.starts_with("http/1.1 408"), "{head}");
}

/// A backend that sends response headers and 5 of 100 body bytes, then stalls.
async fn stalling_backend() -> SocketAddr {
    accept_each(|mut s| async move {
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello")
            .await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await
}

#[tokio::test]
async fn a_stalled_response_is_reset_at_the_stream_idle_timeout() {
    let backend = stalling_backend().await;
    let gw = start_gateway(&config_with_limits(
        backend,
        r#"stream_idle_timeout = "1s""#,
    ))
    .await;
    // HTTP/1.1: the connection is closed with the body cut short.
    let mut s = TcpStream::connect(gw).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(closes_within(&mut s, Duration::from_secs(3)).await);
    // h2: the stream is reset; the connection stays usable.
    let (sender, conn) = h2_handshake(gw).await;
    tokio::spawn(conn);
    let mut ready = sender.ready().await.unwrap();
    let (response, _) = ready
        .send_request(Request::get("http://x/").body(()).unwrap(), true)
        .unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut error = None;
    let outcome = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(chunk) = body.data().await {
            if let Err(e) = chunk {
                error = Some(e);
                break;
            }
        }
    })
    .await;
    assert!(outcome.is_ok(), "stalled stream not reset");
    let error = error.expect("the body ended in a reset, not cleanly");
    assert_eq!(error.reason(), Some(h2::Reason::INTERNAL_ERROR), "{error}");
}

#[tokio::test]
async fn streams_over_max_concurrent_streams_wait_for_a_slot() {
    // Checks take 500 ms and answer as Istio's server does.
    let authz = MockAuthz::start(|req| {
        let allowed = http_of(req).headers.get("x-ext-authz").map(String::as_str) == Some("allow");
        Reply::After(Duration::from_millis(500), istio_response(allowed))
    })
    .await;
    let policy = GATEWAY_POLICY.replace("grpc = {}", "grpc = {}, timeout = \"5s\"");
    let backend = start_backend().await;
    // `limits` goes inside the listener's table, right after its address.
    let toml = seed_config(backend, authz.addr, &policy).replacen(
        "address = \"127.0.0.1:0\"\n",
        "address = \"127.0.0.1:0\"\nlimits = { max_concurrent_streams = 2 }\n",
        1,
    );
    let gw = start_gateway(&toml).await;
    let (sender, mut conn) = h2_handshake(gw).await;
    // The server announces the limit in its SETTINGS, read while the first request runs.
    let mut first = sender.clone();
    tokio::select! {
        ended = &mut conn => panic!("connection ended: {ended:?}"),
        status = h2_get(&mut first, "/openai/x") => assert_eq!(status.unwrap(), StatusCode::FORBIDDEN),
    }
    assert_eq!(conn.max_concurrent_send_streams(), 2);
    tokio::spawn(conn);
    // Six requests at once: the client keeps four waiting; all are answered in turn.
    let mut requests = Vec::new();
    for _ in 0..6 {
        let mut sender = sender.clone();
        requests.push(tokio::spawn(async move {
            h2_get(&mut sender, "/openai/x").await
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Meanwhile another client is served as usual.
    let other = tokio::time::timeout(
        Duration::from_secs(2),
        read(
            h2_client()
                .request(
                    Request::get(format!("http://{gw}/openai/x"))
                        .header("x-ext-authz", "allow")
                        .body(Full::new(Bytes::new()))
                        .unwrap(),
                )
                .await
                .unwrap(),
        ),
    )
    .await
    .expect("another client answered within 2 s");
    assert_eq!(other.status, StatusCode::OK);
    for r in requests {
        assert_eq!(r.await.unwrap().expect("answered"), StatusCode::FORBIDDEN);
    }
    assert_eq!(authz.count(), 8);
}

#[tokio::test]
async fn a_reset_flood_gets_goaway_and_other_clients_are_unaffected() {
    let gw = gateway_with("").await;
    let (sender, conn) = h2_handshake(gw).await;
    let conn = tokio::spawn(conn);
    let flood = tokio::spawn(async move {
        let mut sender = sender;
        for i in 0..10_000 {
            sender = match sender.clone().ready().await {
                Ok(ready) => ready,
                Err(e) => return (i, Some(e)),
            };
            let req = Request::get("http://x/v1/models").body(()).unwrap();
            match sender.send_request(req, false) {
                Ok((_, mut stream)) => {
                    // Let the connection task write the HEADERS first: h2 drops a stream reset
                    // before it was ever sent.
                    tokio::task::yield_now().await;
                    stream.send_reset(h2::Reason::CANCEL);
                }
                Err(e) => return (i, Some(e)),
            }
        }
        (10_000, None)
    });
    answers_promptly(gw).await;
    // The server sends GOAWAY: the flood stops with a GOAWAY error long before its end...
    let (sent, error) = tokio::time::timeout(Duration::from_secs(5), flood)
        .await
        .expect("the flood was stopped")
        .unwrap();
    let error = error.expect("the flood was refused");
    assert!(error.is_go_away(), "{error}");
    assert!(sent < 1000, "{sent} streams before GOAWAY");
    // ...and the connection is closed.
    tokio::time::timeout(Duration::from_secs(2), conn)
        .await
        .expect("the flooding connection was closed")
        .unwrap()
        .ok();
    answers_promptly(gw).await;
}

/// An Authorization server that never answers and counts checks started and dropped.
#[derive(Clone, Default)]
struct CancelCounting {
    started: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

struct OnDrop(Arc<AtomicUsize>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tonic::async_trait]
impl Authorization for CancelCounting {
    async fn check(
        &self,
        _: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let _guard = OnDrop(self.dropped.clone());
        self.started.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }
}

async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_reset_stream_cancels_its_check() {
    let mock = CancelCounting::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authz = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(mock.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let backend = start_backend().await;
    let policy = GATEWAY_POLICY.replace("grpc = {}", "grpc = {}, timeout = \"30s\"");
    let gw = start_gateway(&seed_config(backend, authz, &policy)).await;
    let (sender, conn) = h2_handshake(gw).await;
    tokio::spawn(conn);
    let mut sender = sender.ready().await.unwrap();
    let req = Request::get("http://x/openai/x").body(()).unwrap();
    let (_response, mut stream) = sender.send_request(req, true).unwrap();
    wait_until("the check to start", || {
        mock.started.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(mock.dropped.load(Ordering::SeqCst), 0);
    stream.send_reset(h2::Reason::CANCEL);
    wait_until("the check to be cancelled", || {
        mock.dropped.load(Ordering::SeqCst) == 1
    })
    .await;
}
