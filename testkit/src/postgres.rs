//! PostgreSQL for the database suites: the server `scripts/test` started, and servers of a test's
//! own (`scripts/pg-throwaway`) that the test may stop and start.

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::{precondition, repo_root, run_dir, unique};

/// The variable `scripts/test` exports with the URL of its throwaway PostgreSQL.
pub const POSTGRES_URL_VAR: &str = "AUTHZ_TEST_POSTGRES_URL";

/// The PostgreSQL that `scripts/test` started, or a skip (a failure under strict) when
/// `AUTHZ_TEST_POSTGRES_URL` is unset.
pub fn postgres_url(test: &str) -> Option<String> {
    let url = std::env::var(POSTGRES_URL_VAR)
        .ok()
        .filter(|url| !url.is_empty());
    precondition(test, url, || {
        format!(
            "{POSTGRES_URL_VAR} is unset (scripts/test starts a throwaway PostgreSQL and sets it)"
        )
    })
}

/// A PostgreSQL server of a test's own (`scripts/pg-throwaway`), which the test may stop and
/// start; destroyed on drop.
pub struct Throwaway {
    dir: PathBuf,
    /// Its `authz_test` database.
    pub url: String,
}

fn pg_throwaway(command: &str, dir: &std::path::Path) -> Output {
    let output = Command::new(repo_root().join("scripts/pg-throwaway"))
        .arg(command)
        .arg(dir)
        .output()
        .expect("runs scripts/pg-throwaway");
    assert!(
        output.status.success(),
        "pg-throwaway {command}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

impl Throwaway {
    /// Starts one under [`run_dir`](crate::run_dir). The machine is known to run PostgreSQL when
    /// `scripts/test` started one (`AUTHZ_TEST_POSTGRES_URL` set); otherwise the test is skipped
    /// (fails under strict), as [`postgres_url`] does.
    pub fn start(test: &str) -> Option<Self> {
        postgres_url(test)?;
        let dir = run_dir().join(unique("pg"));
        let output = pg_throwaway("start", &dir);
        let url = String::from_utf8(output.stdout)
            .expect("pg-throwaway prints a UTF-8 URL")
            .trim()
            .to_owned();
        Some(Self { dir, url })
    }

    /// Stops the server (the database "goes down"); its data stays.
    pub fn halt(&self) {
        pg_throwaway("halt", &self.dir);
    }

    /// Starts it again on the same port.
    pub fn resume(&self) {
        pg_throwaway("resume", &self.dir);
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/pg-throwaway"))
            .arg("destroy")
            .arg(&self.dir)
            .status();
    }
}
