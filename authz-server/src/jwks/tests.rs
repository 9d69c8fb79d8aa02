//! The JWKS source against a tiny HTTP server in the test: caching, refresh rate limit, failures.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rules::JwksSource;

use super::{HttpJwks, JwksSettings};

/// What the test server answers, and how often it was asked.
#[derive(Clone)]
struct Served {
    reply: Arc<Mutex<(u16, String, Duration)>>,
    hits: Arc<AtomicUsize>,
}

impl Served {
    fn set(&self, status: u16, body: &str) {
        *self.reply.lock().expect("lock") = (status, body.to_owned(), Duration::ZERO);
    }
    fn delay(&self, delay: Duration) {
        self.reply.lock().expect("lock").2 = delay;
    }
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn serve() -> (String, Served) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address: SocketAddr = listener.local_addr().expect("address");
    let served = Served {
        reply: Arc::new(Mutex::new((200, jwks(&["k1"]), Duration::ZERO))),
        hits: Arc::default(),
    };
    let state = served.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_request| {
                    let state = state.clone();
                    async move {
                        state.hits.fetch_add(1, Ordering::SeqCst);
                        let (status, body, delay) = state.reply.lock().expect("lock").clone();
                        tokio::time::sleep(delay).await;
                        let mut response = http::Response::new(Full::new(Bytes::from(body)));
                        *response.status_mut() =
                            http::StatusCode::from_u16(status).expect("status");
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{address}/.well-known/jwks.json"), served)
}

/// A JWKS with one symmetric key per `kid`.
fn jwks(kids: &[&str]) -> String {
    let keys: Vec<String> = kids
        .iter()
        .map(|kid| format!(r#"{{"kty":"oct","kid":"{kid}","alg":"HS256","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ"}}"#))
        .collect();
    format!(r#"{{"keys":[{}]}}"#, keys.join(","))
}

fn kids(set: &jsonwebtoken::jwk::JwkSet) -> Vec<String> {
    set.keys
        .iter()
        .filter_map(|k| k.common.key_id.clone())
        .collect()
}

fn fast() -> JwksSettings {
    JwksSettings {
        fetch_timeout: Duration::from_millis(300),
        min_refresh_interval: Duration::from_millis(400),
        max_age: Duration::from_secs(60),
        ..JwksSettings::default()
    }
}

#[tokio::test]
async fn a_set_is_fetched_once_and_served_from_cache() {
    let (url, served) = serve().await;
    let source = HttpJwks::new(fast());
    for _ in 0..5 {
        let set = source.jwks(&url, false).await.expect("fetches");
        assert_eq!(kids(&set), ["k1"]);
    }
    assert_eq!(served.hits(), 1);
}

#[tokio::test]
async fn refresh_refetches_at_most_once_per_interval() {
    let (url, served) = serve().await;
    let source = HttpJwks::new(fast());
    source.jwks(&url, false).await.expect("fetches");
    // The key rotates: a token names k2, which the cached set lacks.
    served.set(200, &jwks(&["k2"]));
    for _ in 0..10 {
        let set = source.jwks(&url, true).await.expect("cached set");
        assert_eq!(kids(&set), ["k1"], "rate-limited: still the old set");
    }
    assert_eq!(served.hits(), 1);
    tokio::time::sleep(Duration::from_millis(450)).await;
    let set = source.jwks(&url, true).await.expect("refetches");
    assert_eq!(kids(&set), ["k2"]);
    assert_eq!(served.hits(), 2);
    // Plain lookups use the new set without fetching.
    assert_eq!(
        kids(&source.jwks(&url, false).await.expect("cached")),
        ["k2"]
    );
    assert_eq!(served.hits(), 2);
}

#[tokio::test]
async fn concurrent_askers_share_one_fetch() {
    let (url, served) = serve().await;
    served.delay(Duration::from_millis(100));
    let source = HttpJwks::new(fast());
    let mut askers = Vec::new();
    for _ in 0..20 {
        let (source, url) = (source.clone(), url.clone());
        askers.push(tokio::spawn(async move {
            source.jwks(&url, false).await.map(|s| s.keys.len())
        }));
    }
    for asker in askers {
        assert_eq!(asker.await.expect("joins").expect("fetches"), 1);
    }
    assert_eq!(served.hits(), 1);
}

#[tokio::test]
async fn bad_answers_are_errors_naming_the_url() {
    let (url, served) = serve().await;
    for (status, body, wanted) in [
        (404, "nope", "HTTP status 404"),
        (200, "<html>", "not a JWKS document"),
        (200, r#"{"keys": 7}"#, "not a JWKS document"),
    ] {
        served.set(status, body);
        let source = HttpJwks::new(fast());
        let error = source.jwks(&url, false).await.expect_err("fails");
        assert!(error.to_string().contains(&url), "{error}");
        assert!(error.reason.contains(wanted), "{status} {body}: {error}");
    }
    served.set(200, &"x".repeat(super::MAX_JWKS_BYTES + 10));
    let error = HttpJwks::new(fast())
        .jwks(&url, false)
        .await
        .expect_err("too big");
    assert!(error.reason.contains("limit"), "{error}");
}

#[tokio::test]
async fn a_slow_or_absent_server_fails_within_the_timeout_and_is_not_hammered() {
    let (url, served) = serve().await;
    served.delay(Duration::from_secs(5));
    let source = HttpJwks::new(fast());
    let started = std::time::Instant::now();
    let error = source.jwks(&url, false).await.expect_err("times out");
    assert!(error.reason.contains("no answer within"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(1));
    // Within the interval the failure is answered from memory.
    let started = std::time::Instant::now();
    source.jwks(&url, true).await.expect_err("still failing");
    assert!(started.elapsed() < Duration::from_millis(100));
    assert_eq!(served.hits(), 1);

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address")
    };
    let error = source
        .jwks(&format!("http://{closed}/jwks"), false)
        .await
        .expect_err("refused");
    assert!(error.reason.contains("request failed"), "{error}");
    let error = source
        .jwks("ftp://example.invalid/jwks", false)
        .await
        .expect_err("ftp");
    assert!(
        error.reason.contains("only http:// and https://"),
        "{error}"
    );
}

#[tokio::test]
async fn https_to_a_plain_http_server_fails_naming_the_url() {
    let (url, served) = serve().await;
    let url = url.replacen("http://", "https://", 1);
    let error = HttpJwks::new(fast())
        .jwks(&url, false)
        .await
        .expect_err("no TLS there");
    assert_eq!(error.url, url);
    assert!(error.reason.contains("request failed"), "{error}");
    assert_eq!(served.hits(), 0);
}

#[tokio::test]
async fn an_old_set_is_kept_when_a_refetch_fails() {
    let (url, served) = serve().await;
    let source = HttpJwks::new(JwksSettings {
        max_age: Duration::from_millis(100),
        ..fast()
    });
    source.jwks(&url, false).await.expect("fetches");
    served.set(500, "down");
    tokio::time::sleep(Duration::from_millis(450)).await;
    let set = source.jwks(&url, false).await.expect("the old set");
    assert_eq!(kids(&set), ["k1"]);
    assert_eq!(served.hits(), 2);
}

#[tokio::test]
async fn an_unknown_kid_never_waits_for_a_running_fetch() {
    let (url, served) = serve().await;
    let source = HttpJwks::new(JwksSettings {
        fetch_timeout: Duration::from_secs(10),
        min_refresh_interval: Duration::ZERO,
        max_wait: Duration::from_millis(200),
        ..fast()
    });
    source.jwks(&url, false).await.expect("fetches");
    served.set(200, &jwks(&["k1", "k2"]));
    served.delay(Duration::from_secs(3));
    // The check that starts the refetch waits its budget, then answers with the set in hand.
    let started = std::time::Instant::now();
    let set = source.jwks(&url, true).await.expect("the set in hand");
    assert_eq!(kids(&set), ["k1"]);
    // Checks arriving while it runs do not wait and start no other fetch.
    for _ in 0..5 {
        assert_eq!(
            kids(&source.jwks(&url, true).await.expect("in hand")),
            ["k1"]
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(served.hits(), 2);
    // The fetch lands in the background.
    loop {
        if kids(&source.jwks(&url, false).await.expect("cached")) == ["k1", "k2"] {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never refreshed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(served.hits(), 2);
}

#[tokio::test]
async fn with_no_set_at_all_a_check_waits_only_its_budget() {
    let (url, served) = serve().await;
    served.delay(Duration::from_secs(3));
    let source = HttpJwks::new(JwksSettings {
        fetch_timeout: Duration::from_secs(10),
        max_wait: Duration::from_millis(200),
        ..fast()
    });
    let started = std::time::Instant::now();
    let error = source.jwks(&url, false).await.expect_err("not yet");
    assert!(
        error.reason.contains("goes on in the background"),
        "{error}"
    );
    let error = source.jwks(&url, true).await.expect_err("not yet");
    assert!(error.reason.contains("being fetched"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(served.hits(), 1);
}

/// The rate limit counts from when a fetch starts, not when it ends: a slow fetch does not
/// push the next one further away.
#[tokio::test]
async fn the_refetch_rate_limit_counts_from_the_start_of_a_fetch() {
    let (url, served) = serve().await;
    served.delay(Duration::from_millis(1500));
    let source = HttpJwks::new(JwksSettings {
        fetch_timeout: Duration::from_secs(10),
        min_refresh_interval: Duration::from_secs(2),
        max_wait: Duration::from_secs(10),
        ..fast()
    });
    let started = std::time::Instant::now();
    source.jwks(&url, false).await.expect("fetches");
    served.set(200, &jwks(&["k2"]));
    // 2.3 s after the first fetch started (0.8 s after it ended): a refresh is due.
    tokio::time::sleep(Duration::from_millis(2300).saturating_sub(started.elapsed())).await;
    let set = source.jwks(&url, true).await.expect("refetches");
    assert_eq!(kids(&set), ["k2"]);
    assert_eq!(served.hits(), 2);
}
