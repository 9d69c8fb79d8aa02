//! The hook against real SQLite files: rendering, caching, coalescing, timeouts, stale answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rules::{Lookup, LookupError, LookupPolicy, LookupQuery, OnLookupError};
use sqlx::Connection;

use super::{DatabaseLookup, OpenMode};

fn temp_db() -> (std::path::PathBuf, String) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "authz-lookup-unit-{}-{}.db",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&path);
    let url = format!("sqlite://{}", path.display());
    (path, url)
}

/// A database with two keys and a counter the counting query bumps on every execution.
async fn seeded() -> (std::path::PathBuf, String) {
    let (path, url) = temp_db();
    let database = super::Database::open(&url, 1, OpenMode::Create).expect("opens");
    for sql in [
        "CREATE TABLE api_keys (key_hash TEXT PRIMARY KEY, user_id TEXT NOT NULL, plan TEXT, quota INTEGER, ratio REAL)",
        "INSERT INTO api_keys VALUES ('h1', 'alice', 'pro', 100, 0.5)",
        "INSERT INTO api_keys VALUES ('h2', 'bob', NULL, NULL, NULL)",
        "CREATE TABLE lookup_count (n INTEGER NOT NULL)",
        "INSERT INTO lookup_count VALUES (0)",
    ] {
        database.execute(sql, &[]).await.expect(sql);
    }
    database.close().await;
    (path, url)
}

const BY_HASH: &str = "SELECT user_id, plan, quota, ratio FROM api_keys WHERE key_hash = $1";
/// Bumps the counter and returns the key's row: the database itself counts executions.
const COUNTING: &str = "UPDATE lookup_count SET n = n + 1 RETURNING (SELECT user_id FROM api_keys WHERE key_hash = $1) AS user_id";

fn policy(ttl_ms: u64, on_error: OnLookupError) -> LookupPolicy {
    LookupPolicy {
        timeout: Duration::from_millis(300),
        cache_ttl: Duration::from_millis(ttl_ms),
        negative_ttl: Duration::from_millis(ttl_ms),
        on_error,
    }
}

async fn ask(
    hook: &DatabaseLookup,
    sql: &str,
    param: &str,
    policy: &LookupPolicy,
) -> Result<Option<Arc<rules::Row>>, LookupError> {
    let params = [param.to_owned()];
    hook.lookup(LookupQuery {
        database: "main",
        sql,
        params: &params,
        policy,
    })
    .await
}

async fn counted(url: &str) -> i64 {
    let database = super::Database::open(url, 1, OpenMode::Existing).expect("opens");
    let rows = database
        .rows("SELECT n FROM lookup_count", &[])
        .await
        .expect("counts");
    database.close().await;
    rows[0]["n"].parse().expect("a number")
}

#[tokio::test]
async fn the_first_row_comes_back_as_text_and_null_columns_are_absent() {
    let (_path, url) = seeded().await;
    let hook = DatabaseLookup::open([("main", url.as_str(), 2)]).await;
    let policy = policy(60_000, OnLookupError::FailClosed);
    let row = ask(&hook, BY_HASH, "h1", &policy)
        .await
        .expect("answers")
        .expect("a row");
    assert_eq!(row["user_id"], "alice");
    assert_eq!(row["plan"], "pro");
    assert_eq!(row["quota"], "100");
    assert_eq!(row["ratio"], "0.5");
    let row = ask(&hook, BY_HASH, "h2", &policy)
        .await
        .expect("answers")
        .expect("a row");
    assert_eq!(row.keys().collect::<Vec<_>>(), ["user_id"]);
    assert_eq!(
        ask(&hook, BY_HASH, "nope", &policy).await.expect("answers"),
        None
    );
}

#[tokio::test]
async fn sql_in_a_parameter_is_only_a_value() {
    let (_path, url) = seeded().await;
    let hook = DatabaseLookup::open([("main", url.as_str(), 1)]).await;
    let policy = policy(0, OnLookupError::FailClosed);
    for hostile in [
        "' OR 1=1 --",
        "h1' OR '1'='1",
        "h1; DROP TABLE api_keys; --",
    ] {
        assert_eq!(
            ask(&hook, BY_HASH, hostile, &policy)
                .await
                .expect("answers"),
            None
        );
    }
    assert!(
        ask(&hook, BY_HASH, "h1", &policy)
            .await
            .expect("answers")
            .is_some()
    );
}

#[tokio::test]
async fn hits_and_misses_are_cached_for_their_ttl() {
    let (_path, url) = seeded().await;
    let hook = DatabaseLookup::open([("main", url.as_str(), 1)]).await;
    let policy = policy(400, OnLookupError::FailClosed);
    for _ in 0..3 {
        ask(&hook, COUNTING, "h1", &policy).await.expect("answers");
    }
    assert_eq!(
        counted(&url).await,
        1,
        "one query for three identical lookups"
    );
    ask(&hook, COUNTING, "h2", &policy).await.expect("answers");
    assert_eq!(counted(&url).await, 2, "a different parameter is a miss");
    tokio::time::sleep(Duration::from_millis(450)).await;
    ask(&hook, COUNTING, "h1", &policy).await.expect("answers");
    assert_eq!(counted(&url).await, 3, "an expired answer is asked again");
    assert_eq!(hook.queries_sent(), 3);

    // "No row" is cached too, under its own TTL.
    let negative = LookupPolicy {
        negative_ttl: Duration::from_secs(60),
        ..policy.clone()
    };
    for _ in 0..3 {
        assert_eq!(
            ask(&hook, BY_HASH, "nope", &negative)
                .await
                .expect("answers"),
            None
        );
    }
    assert_eq!(hook.queries_sent(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_identical_lookups_send_one_query() {
    let (_path, url) = seeded().await;
    let hook = DatabaseLookup::open([("main", url.as_str(), 4)]).await;
    // Slow enough that all 50 callers arrive while the first query runs.
    let slow = format!(
        "WITH RECURSIVE spin(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM spin WHERE x < 200000) \
         SELECT ({COUNTING_SUBQUERY}) AS user_id, (SELECT count(*) FROM spin) AS spun"
    );
    let policy = policy(60_000, OnLookupError::FailClosed);
    let mut callers = Vec::new();
    for _ in 0..50 {
        let (hook, slow, policy) = (hook.clone(), slow.clone(), policy.clone());
        callers.push(tokio::spawn(async move {
            ask(&hook, &slow, "h1", &policy).await
        }));
    }
    for caller in callers {
        let row = caller
            .await
            .expect("joins")
            .expect("answers")
            .expect("a row");
        assert_eq!(row["user_id"], "alice");
    }
    assert_eq!(hook.queries_sent(), 1);
}
const COUNTING_SUBQUERY: &str = "SELECT user_id FROM api_keys WHERE key_hash = $1";

/// Holds SQLite's exclusive lock so every reader waits: a database that stopped answering.
async fn lock_out(url: &str) -> sqlx::SqliteConnection {
    let mut connection = sqlx::SqliteConnection::connect(url)
        .await
        .expect("connects");
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut connection)
        .await
        .expect("locks");
    connection
}

#[tokio::test]
async fn a_stuck_database_times_out_and_fails_closed() {
    let (_path, url) = seeded().await;
    let hook = DatabaseLookup::open([("main", url.as_str(), 1)]).await;
    let policy = policy(0, OnLookupError::FailClosed);
    let _lock = lock_out(&url).await;
    let started = std::time::Instant::now();
    let error = ask(&hook, BY_HASH, "h1", &policy).await.expect_err("fails");
    assert!(matches!(error, LookupError::Timeout(_)), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_failing_database_serves_the_last_answer_within_max_stale() {
    let (_path, url) = seeded().await;
    let hook = DatabaseLookup::open([("main", url.as_str(), 1)]).await;
    let policy = policy(
        50,
        OnLookupError::ServeStale {
            max_stale: Duration::from_millis(1500),
        },
    );
    ask(&hook, BY_HASH, "h1", &policy)
        .await
        .expect("answers")
        .expect("a row");
    let lock = lock_out(&url).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let row = ask(&hook, BY_HASH, "h1", &policy)
        .await
        .expect("stale answer");
    assert_eq!(row.expect("a row")["user_id"], "alice");
    // Nothing cached for this one: it fails closed whatever the policy.
    let error = ask(&hook, BY_HASH, "h2", &policy)
        .await
        .expect_err("nothing to serve");
    assert!(matches!(error, LookupError::Timeout(_)), "{error:?}");
    // Past max_stale the stale answer is no longer served.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let error = ask(&hook, BY_HASH, "h1", &policy)
        .await
        .expect_err("too stale");
    assert!(matches!(error, LookupError::Timeout(_)), "{error:?}");
    drop(lock);
}

#[tokio::test]
async fn unknown_missing_and_malformed_databases_fail_without_creating_anything() {
    let (path, url) = temp_db();
    let hook = DatabaseLookup::open([("main", url.as_str(), 1), ("bad", "mysql://x", 1)]).await;
    let policy = policy(0, OnLookupError::FailClosed);
    let error = ask(&hook, BY_HASH, "h1", &policy)
        .await
        .expect_err("no file");
    assert!(matches!(error, LookupError::Failed(_)), "{error:?}");
    assert!(!path.exists(), "serving must not create {}", path.display());

    let params = ["h1".to_owned()];
    for (database, wanted) in [
        ("bad", "unsupported database URL"),
        ("other", "unknown database"),
    ] {
        let error = hook
            .lookup(LookupQuery {
                database,
                sql: BY_HASH,
                params: &params,
                policy: &policy,
            })
            .await
            .expect_err("fails");
        assert!(error.to_string().contains(wanted), "{error}");
    }
}

#[tokio::test]
async fn the_cache_is_bounded_and_evicts_the_oldest_answer() {
    let (_path, url) = seeded().await;
    let hook = DatabaseLookup::open_with_capacity([("main", url.as_str(), 1)], 2).await;
    let policy = policy(60_000, OnLookupError::FailClosed);
    for key in ["h1", "h2", "x"] {
        ask(&hook, BY_HASH, key, &policy).await.expect("answers");
    }
    assert_eq!(hook.cached_answers(), 2);
    ask(&hook, BY_HASH, "h2", &policy).await.expect("answers");
    assert_eq!(hook.queries_sent(), 3, "h2 was still cached");
    ask(&hook, BY_HASH, "h1", &policy).await.expect("answers");
    assert_eq!(hook.queries_sent(), 4, "h1 was evicted");
}

#[tokio::test]
async fn cache_results_and_database_errors_are_counted_in_metrics() {
    let (path, url) = seeded().await;
    let hook = DatabaseLookup::open([("main", url.as_str(), 2)]).await;
    let metrics = Arc::new(crate::metrics::Metrics::new());
    hook.report_to(metrics.clone());
    let fresh = policy(60_000, OnLookupError::FailClosed);
    ask(&hook, BY_HASH, "h1", &fresh).await.expect("miss");
    ask(&hook, BY_HASH, "h1", &fresh).await.expect("hit");
    ask(&hook, BY_HASH, "h1", &fresh).await.expect("hit");
    ask(
        &hook,
        "SELECT no_such_column FROM api_keys WHERE key_hash = $1",
        "h1",
        &fresh,
    )
    .await
    .expect_err("a failing query");
    let text = metrics.render();
    for line in [
        r#"authz_lookup_cache_total{database="main",result="miss"} 2"#,
        r#"authz_lookup_cache_total{database="main",result="hit"} 2"#,
        r#"authz_database_errors_total{database="main"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
    }
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn coalesced_callers_each_apply_their_own_failure_policy() {
    let (_path, url) = seeded().await;
    let hook = DatabaseLookup::open([("main", url.as_str(), 1)]).await;
    let stale_ok = policy(
        50,
        OnLookupError::ServeStale {
            max_stale: Duration::from_secs(30),
        },
    );
    let fail_closed = policy(50, OnLookupError::FailClosed);
    ask(&hook, BY_HASH, "h1", &stale_ok)
        .await
        .expect("answers")
        .expect("a row");
    let lock = lock_out(&url).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The same query from two rules at once: one query runs, but a fail-closed rule must not
    // be handed the stale row the other rule accepts.
    let (lenient, strict) = tokio::join!(
        ask(&hook, BY_HASH, "h1", &stale_ok),
        ask(&hook, BY_HASH, "h1", &fail_closed),
    );
    assert_eq!(
        lenient.expect("stale answer").expect("a row")["user_id"],
        "alice"
    );
    assert!(matches!(strict, Err(LookupError::Timeout(_))), "{strict:?}");
    drop(lock);
}
