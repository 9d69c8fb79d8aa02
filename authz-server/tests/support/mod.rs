//! Shared support for the database and token suites: where PostgreSQL is, fresh databases per
//! test, throwaway servers a test may stop, and temporary files.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use authz_server::lookup::{Database, OpenMode};

/// The PostgreSQL that `scripts/test` started, or `None` after printing why `test` is skipped.
pub fn postgres_url(test: &str) -> Option<String> {
    match std::env::var("AUTHZ_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            println!(
                "SKIPPED {test}: AUTHZ_TEST_POSTGRES_URL is unset (scripts/test starts a throwaway PostgreSQL and sets it)"
            );
            None
        }
    }
}

fn unique(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A new, empty database on the server at `base` (a URL naming any database); its URL.
pub async fn fresh_postgres_database(base: &str) -> String {
    let name = unique("authz_t");
    let admin = Database::open(base, 1, OpenMode::Existing).expect("PostgreSQL URL");
    admin
        .execute(&format!("CREATE DATABASE {name}"), &[])
        .await
        .expect("creates a test database");
    admin.close().await;
    let (server, _) = base.rsplit_once('/').expect("URL with a database");
    format!("{server}/{name}")
}

/// A path for a new temporary file (not created).
pub fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join("authz-server-tests");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(unique(name));
    let _ = std::fs::remove_file(&path);
    path
}

/// Runs statements against a database, panicking with the statement on failure.
pub async fn run_sql(url: &str, statements: &[&str]) {
    let database = Database::open(url, 1, OpenMode::Create).expect("database URL");
    for sql in statements {
        database
            .execute(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    database.close().await;
}

/// The rows of a query, as text.
pub async fn query_rows(url: &str, sql: &str) -> Vec<rules::Row> {
    let database = Database::open(url, 1, OpenMode::Existing).expect("database URL");
    let rows = database
        .rows(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    database.close().await;
    rows
}

/// A PostgreSQL server of a test's own (scripts/pg-throwaway), which the test may stop and
/// start; destroyed on drop.
pub struct Throwaway {
    dir: PathBuf,
    /// Its `authz_test` database.
    pub url: String,
}

fn pg_throwaway() -> String {
    format!("{}/../scripts/pg-throwaway", env!("CARGO_MANIFEST_DIR"))
}

impl Throwaway {
    /// Starts one under `AUTHZ_TEST_RUN_DIR` (or the system temp dir).
    pub fn start() -> Self {
        let base = std::env::var_os("AUTHZ_TEST_RUN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(unique("pg"));
        let output = Command::new(pg_throwaway())
            .arg("start")
            .arg(&dir)
            .output()
            .expect("runs pg-throwaway");
        assert!(
            output.status.success(),
            "pg-throwaway start: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let url = String::from_utf8(output.stdout)
            .expect("UTF-8 URL")
            .trim()
            .to_owned();
        Self { dir, url }
    }

    fn run(&self, command: &str) {
        let status = Command::new(pg_throwaway())
            .arg(command)
            .arg(&self.dir)
            .status()
            .expect("runs pg-throwaway");
        assert!(status.success(), "pg-throwaway {command} failed");
    }

    /// Stops the server (the database "goes down"); its data stays.
    pub fn halt(&self) {
        self.run("halt");
    }

    /// Starts it again on the same port.
    pub fn resume(&self) {
        self.run("resume");
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        let _ = Command::new(pg_throwaway())
            .arg("destroy")
            .arg(&self.dir)
            .status();
    }
}
