//! The database hook end to end: the real server on loopback, keys issued by the real
//! `authz-server keys`, lookups against SQLite and a real PostgreSQL (skipped with a notice when
//! `AUTHZ_TEST_POSTGRES_URL` is unset; `scripts/test` sets it). Queries are counted by the
//! database itself: the counting query bumps a row in `lookup_count` every time it runs.

mod support;

use std::time::{Duration, Instant};

use sqlx::Connection;
use support::{Answer, check, client, start};

const BIN: &str = env!("CARGO_BIN_EXE_authz-server");

/// Bumps the counter and returns the key's row; runs once per query the server sends.
const COUNTING: &str = "UPDATE lookup_count SET n = n + 1 RETURNING (SELECT subject FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL) AS subject";
const BY_HASH: &str =
    "SELECT subject, plan FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL";
const BY_SUBJECT: &str =
    "SELECT subject, plan FROM api_keys WHERE subject = $1 AND revoked_at IS NULL";

fn config(url: &str) -> String {
    format!(
        r#"
[databases.main]
url = "{url}"
pool_size = 4

[default]
deny = {{ status = 403, body = "no rule" }}

[[rules]]
name = "count"
when = {{ path = {{ prefix = "/count" }} }}
credential = {{ from = {{ header = "x-ai-api-key" }} }}
allow = {{ request_headers = [{{ name = "x-user-id", value = "{{{{db.subject}}}}" }}] }}
[rules.lookup]
database = "main"
query = "{COUNTING}"
params = [{{ credential = "sha256" }}]
cache_ttl_seconds = 1
negative_ttl_seconds = 1
timeout_ms = 5000

[[rules]]
name = "coalesce"
when = {{ path = {{ prefix = "/coalesce" }} }}
credential = {{ from = {{ header = "x-ai-api-key" }} }}
allow = {{ request_headers = [{{ name = "x-user-id", value = "{{{{db.subject}}}}" }}] }}
[rules.lookup]
database = "main"
query = "{COUNTING} "
params = [{{ credential = "sha256" }}]
cache_ttl_seconds = 0
negative_ttl_seconds = 0
timeout_ms = 5000

[[rules]]
name = "closed"
when = {{ path = {{ prefix = "/closed" }} }}
credential = {{ from = {{ header = "x-ai-api-key" }} }}
allow = {{ request_headers = [{{ name = "x-user-id", value = "{{{{db.subject}}}}" }}, {{ name = "x-plan", value = "{{{{db.plan}}}}" }}] }}
[rules.lookup]
database = "main"
query = "{BY_HASH}"
params = [{{ credential = "sha256" }}]
cache_ttl_seconds = 1
negative_ttl_seconds = 1
timeout_ms = 300
on_error = "fail_closed"
on_missing = {{ status = 403, body = "unknown key" }}

[[rules]]
name = "stale"
when = {{ path = {{ prefix = "/stale" }} }}
credential = {{ from = {{ header = "x-ai-api-key" }} }}
allow = {{ request_headers = [{{ name = "x-user-id", value = "{{{{db.subject}}}}" }}, {{ name = "x-plan", value = "{{{{db.plan}}}}" }}] }}
[rules.lookup]
database = "main"
query = "{BY_HASH} "
params = [{{ credential = "sha256" }}]
cache_ttl_seconds = 1
negative_ttl_seconds = 1
timeout_ms = 300
on_error = {{ serve_stale_seconds = 60 }}
on_missing = {{ status = 403, body = "unknown key" }}

[[rules]]
name = "by-subject"
when = {{ path = {{ prefix = "/by-subject" }} }}
allow = {{ request_headers = [{{ name = "x-user-id", value = "{{{{db.subject}}}}" }}] }}
[rules.lookup]
database = "main"
query = "{BY_SUBJECT}"
params = [{{ header = "x-subject" }}]
cache_ttl_seconds = 0
negative_ttl_seconds = 0
timeout_ms = 1000
"#
    )
}

/// A database prepared as an operator would: `keys init`, two keys issued, plus the counter.
struct Seeded {
    url: String,
    alice: String,
    bob: String,
}

fn keys(args: &[&str]) -> String {
    testkit::authz_keys(std::path::Path::new(BIN), args)
}

async fn seed(url: String) -> Seeded {
    keys(&["init", "--database", &url]);
    let alice = keys(&[
        "add",
        "--database",
        &url,
        "--subject",
        "alice",
        "--plan",
        "pro",
    ]);
    let bob = keys(&[
        "add",
        "--database",
        &url,
        "--subject",
        "bob",
        "--plan",
        "free",
    ]);
    support::run_sql(
        &url,
        &[
            "CREATE TABLE lookup_count (n INTEGER NOT NULL)",
            "INSERT INTO lookup_count VALUES (0)",
        ],
    )
    .await;
    Seeded { url, alice, bob }
}

async fn sqlite() -> Seeded {
    let path = support::temp_path("lookups.db");
    seed(format!("sqlite://{}", path.display())).await
}

async fn postgres(test: &str) -> Option<Seeded> {
    let base = testkit::postgres_url(test)?;
    Some(seed(support::fresh_postgres_database(&base).await).await)
}

async fn queries_counted(url: &str) -> u64 {
    let rows = support::query_rows(url, "SELECT n FROM lookup_count").await;
    rows[0]["n"].parse().expect("a count")
}

/// Holds a lock that makes every lookup wait: SQLite's exclusive lock, or PostgreSQL's
/// ACCESS EXCLUSIVE on both tables. Released on drop (the transaction ends with the connection).
enum Lock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

async fn lock(url: &str) -> Lock {
    if url.starts_with("sqlite:") {
        let mut connection = sqlx::SqliteConnection::connect(url)
            .await
            .expect("connects");
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut connection)
            .await
            .expect("locks");
        Lock::Sqlite(connection)
    } else {
        let mut connection = sqlx::PgConnection::connect(url).await.expect("connects");
        sqlx::query("BEGIN")
            .execute(&mut connection)
            .await
            .expect("begins");
        sqlx::query("LOCK TABLE api_keys, lookup_count IN ACCESS EXCLUSIVE MODE")
            .execute(&mut connection)
            .await
            .expect("locks");
        Lock::Postgres(connection)
    }
}

impl Lock {
    async fn release(self) {
        match self {
            Self::Sqlite(mut c) => {
                sqlx::query("ROLLBACK")
                    .execute(&mut c)
                    .await
                    .expect("unlocks");
            }
            Self::Postgres(mut c) => {
                sqlx::query("ROLLBACK")
                    .execute(&mut c)
                    .await
                    .expect("unlocks");
            }
        }
    }
}

fn assert_allowed(answer: &Answer, user: &str) {
    assert_eq!((answer.status, answer.code), (200, 0), "{answer:?}");
    assert_eq!(answer.header("x-user-id"), Some(user), "{answer:?}");
}

// --- allow and deny --------------------------------------------------------------------------

async fn keys_allow_with_row_headers_and_everything_else_is_denied(db: Seeded) {
    let server = start(&config(&db.url)).await;
    let mut client = client(&server).await;

    let alice = check(&mut client, "/closed", &[("x-ai-api-key", &db.alice)]).await;
    assert_allowed(&alice, "alice");
    assert_eq!(alice.header("x-plan"), Some("pro"));
    let bob = check(&mut client, "/closed", &[("x-ai-api-key", &db.bob)]).await;
    assert_allowed(&bob, "bob");
    assert_eq!(bob.header("x-plan"), Some("free"));

    let unknown = check(&mut client, "/closed", &[("x-ai-api-key", "not-a-key")]).await;
    assert_eq!(
        (unknown.status, unknown.code, unknown.body.as_str()),
        (403, 7, "unknown key")
    );
    let missing = check(&mut client, "/closed", &[]).await;
    assert_eq!((missing.status, missing.code), (401, 16), "{missing:?}");
    assert!(missing.header("www-authenticate").is_some(), "{missing:?}");

    // A revoked key stops working once its cached answer expires (cache_ttl_seconds = 1).
    keys(&["revoke", "--database", &db.url, "--subject", "bob"]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let revoked = check(&mut client, "/closed", &[("x-ai-api-key", &db.bob)]).await;
    assert_eq!(
        (revoked.status, revoked.body.as_str()),
        (403, "unknown key")
    );
    assert_allowed(
        &check(&mut client, "/closed", &[("x-ai-api-key", &db.alice)]).await,
        "alice",
    );
}

#[tokio::test]
async fn sqlite_keys_allow_with_row_headers_and_everything_else_is_denied() {
    keys_allow_with_row_headers_and_everything_else_is_denied(sqlite().await).await;
}

#[tokio::test]
async fn postgres_keys_allow_with_row_headers_and_everything_else_is_denied() {
    if let Some(db) =
        postgres("postgres_keys_allow_with_row_headers_and_everything_else_is_denied").await
    {
        keys_allow_with_row_headers_and_everything_else_is_denied(db).await;
    }
}

// --- cache -----------------------------------------------------------------------------------

async fn answers_are_cached_for_their_ttl(db: Seeded) {
    let server = start(&config(&db.url)).await;
    let mut client = client(&server).await;
    for _ in 0..5 {
        let answer = check(&mut client, "/count", &[("x-ai-api-key", &db.alice)]).await;
        assert_allowed(&answer, "alice");
    }
    assert_eq!(queries_counted(&db.url).await, 1, "four cache hits");
    assert_allowed(
        &check(&mut client, "/count", &[("x-ai-api-key", &db.bob)]).await,
        "bob",
    );
    assert_eq!(queries_counted(&db.url).await, 2, "another key is a miss");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_allowed(
        &check(&mut client, "/count", &[("x-ai-api-key", &db.alice)]).await,
        "alice",
    );
    assert_eq!(
        queries_counted(&db.url).await,
        3,
        "expired after cache_ttl_seconds"
    );
}

#[tokio::test]
async fn sqlite_answers_are_cached_for_their_ttl() {
    answers_are_cached_for_their_ttl(sqlite().await).await;
}

#[tokio::test]
async fn postgres_answers_are_cached_for_their_ttl() {
    if let Some(db) = postgres("postgres_answers_are_cached_for_their_ttl").await {
        answers_are_cached_for_their_ttl(db).await;
    }
}

// --- coalescing ------------------------------------------------------------------------------

async fn fifty_concurrent_identical_requests_send_one_query(db: Seeded) {
    let server = start(&config(&db.url)).await;
    let client = client(&server).await;
    // The database holds every query until released, so all 50 requests are in flight at once
    // (`/coalesce` caches nothing: only coalescing can save queries here).
    let held = lock(&db.url).await;
    let mut requests = Vec::new();
    for _ in 0..50 {
        let (mut client, key) = (client.clone(), db.alice.clone());
        requests.push(tokio::spawn(async move {
            check(&mut client, "/coalesce", &[("x-ai-api-key", &key)]).await
        }));
    }
    // Long enough for all 50 to reach the server even on a loaded machine.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    held.release().await;
    for request in requests {
        assert_allowed(&request.await.expect("joins"), "alice");
    }
    assert_eq!(queries_counted(&db.url).await, 1);
    // With nothing cached, the next request queries again.
    assert_allowed(
        &check(
            &mut client.clone(),
            "/coalesce",
            &[("x-ai-api-key", &db.alice)],
        )
        .await,
        "alice",
    );
    assert_eq!(queries_counted(&db.url).await, 2);
}

#[tokio::test]
async fn sqlite_fifty_concurrent_identical_requests_send_one_query() {
    fifty_concurrent_identical_requests_send_one_query(sqlite().await).await;
}

#[tokio::test]
async fn postgres_fifty_concurrent_identical_requests_send_one_query() {
    if let Some(db) = postgres("postgres_fifty_concurrent_identical_requests_send_one_query").await
    {
        fifty_concurrent_identical_requests_send_one_query(db).await;
    }
}

// --- SQL in request values -------------------------------------------------------------------

async fn sql_in_headers_is_inert(db: Seeded) {
    let server = start(&config(&db.url)).await;
    let mut client = client(&server).await;
    for hostile in [
        "' OR 1=1 --",
        "alice' --",
        "x'; DROP TABLE api_keys; --",
        "' OR ''='",
    ] {
        let by_subject = check(
            &mut client,
            "/by-subject",
            &[("x-ai-api-key", "anything"), ("x-subject", hostile)],
        )
        .await;
        assert_eq!(
            (by_subject.status, by_subject.code),
            (403, 7),
            "{hostile}: {by_subject:?}"
        );
        let as_key = check(&mut client, "/closed", &[("x-ai-api-key", hostile)]).await;
        assert_eq!(
            (as_key.status, as_key.body.as_str()),
            (403, "unknown key"),
            "{hostile}"
        );
    }
    let honest = check(
        &mut client,
        "/by-subject",
        &[("x-ai-api-key", "anything"), ("x-subject", "alice")],
    )
    .await;
    assert_allowed(&honest, "alice");
    assert_eq!(
        support::query_rows(&db.url, "SELECT subject FROM api_keys")
            .await
            .len(),
        2
    );
}

#[tokio::test]
async fn sqlite_sql_in_headers_is_inert() {
    sql_in_headers_is_inert(sqlite().await).await;
}

#[tokio::test]
async fn postgres_sql_in_headers_is_inert() {
    if let Some(db) = postgres("postgres_sql_in_headers_is_inert").await {
        sql_in_headers_is_inert(db).await;
    }
}

// --- the database goes away ------------------------------------------------------------------

/// With the database unavailable and cached answers expired: `/closed` fails closed with 503
/// within its timeout, `/stale` keeps allowing with the last answer, and a key never seen is
/// denied by both.
async fn assert_down_behaviour(client: &mut support::Client, db: &Seeded) {
    let started = Instant::now();
    let closed = check(client, "/closed", &[("x-ai-api-key", &db.alice)]).await;
    assert_eq!((closed.status, closed.code), (503, 14), "{closed:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let stale = check(client, "/stale", &[("x-ai-api-key", &db.alice)]).await;
    assert_allowed(&stale, "alice");
    assert_eq!(stale.header("x-plan"), Some("pro"));
    let never_seen = check(client, "/stale", &[("x-ai-api-key", &db.bob)]).await;
    assert_eq!(
        (never_seen.status, never_seen.code),
        (503, 14),
        "{never_seen:?}"
    );
}

async fn warm(client: &mut support::Client, db: &Seeded) {
    assert_allowed(
        &check(client, "/closed", &[("x-ai-api-key", &db.alice)]).await,
        "alice",
    );
    assert_allowed(
        &check(client, "/stale", &[("x-ai-api-key", &db.alice)]).await,
        "alice",
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

#[tokio::test]
async fn sqlite_locked_database_fails_closed_or_serves_stale_per_rule() {
    let db = sqlite().await;
    let server = start(&config(&db.url)).await;
    let mut client = client(&server).await;
    warm(&mut client, &db).await;
    let held = lock(&db.url).await;
    assert_down_behaviour(&mut client, &db).await;
    held.release().await;
    assert_allowed(
        &check(&mut client, "/closed", &[("x-ai-api-key", &db.alice)]).await,
        "alice",
    );
}

#[tokio::test]
async fn sqlite_database_missing_at_start_fails_closed_and_is_not_created() {
    let path = support::temp_path("never-created.db");
    let server = start(&config(&format!("sqlite://{}", path.display()))).await;
    let mut client = client(&server).await;
    let answer = check(&mut client, "/closed", &[("x-ai-api-key", "k")]).await;
    assert_eq!((answer.status, answer.code), (503, 14), "{answer:?}");
    assert!(!path.exists());
}

#[tokio::test]
async fn postgres_stopped_mid_run_fails_closed_or_serves_stale_per_rule_then_recovers() {
    // A server of this test's own, since it is stopped.
    let Some(throwaway) = testkit::Throwaway::start(
        "postgres_stopped_mid_run_fails_closed_or_serves_stale_per_rule_then_recovers",
    ) else {
        return;
    };
    let db = seed(throwaway.url.clone()).await;
    let server = start(&config(&db.url)).await;
    let mut client = client(&server).await;
    warm(&mut client, &db).await;
    throwaway.halt();
    assert_down_behaviour(&mut client, &db).await;
    throwaway.resume();
    let mut recovered = None;
    for _ in 0..50 {
        let answer = check(&mut client, "/closed", &[("x-ai-api-key", &db.alice)]).await;
        if answer.status == 200 {
            recovered = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_allowed(
        &recovered.expect("allows again once PostgreSQL is back"),
        "alice",
    );
}

// --- bad input -------------------------------------------------------------------------------

#[tokio::test]
async fn oversized_and_odd_keys_are_denied_without_allowing_by_mistake() {
    let db = sqlite().await;
    let server = start(&config(&db.url)).await;
    let mut client = client(&server).await;
    let huge = "k".repeat(256 * 1024);
    for key in [
        huge.as_str(),
        "\u{0}",
        "é✓\u{202e}",
        " ",
        &format!("{}x", db.alice),
    ] {
        let answer = check(&mut client, "/closed", &[("x-ai-api-key", key)]).await;
        assert_ne!(answer.status, 200, "{:?}", &key[..key.len().min(20)]);
        assert_ne!(answer.code, 0);
    }
    // Non-UTF-8 bytes in the key through HTTP mode.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.http)
        .await
        .expect("connects");
    let mut request = b"GET /closed HTTP/1.1\r\nhost: x\r\nx-ai-api-key: \xff\xfe\x80abc\r\nconnection: close\r\n\r\n".to_vec();
    request.extend_from_slice(b"");
    stream.write_all(&request).await.expect("writes");
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply))
        .await
        .expect("answers in time")
        .expect("reads");
    let reply = String::from_utf8_lossy(&reply);
    let status_line = reply.lines().next().unwrap_or_default();
    assert!(
        status_line.starts_with("HTTP/1.1 4") || status_line.starts_with("HTTP/1.1 5"),
        "{reply}"
    );
}
