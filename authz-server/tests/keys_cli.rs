//! `authz-server keys` through the real binary, on SQLite and on PostgreSQL.

mod support;

use std::process::{Command, Output};

use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_authz-server");

fn keys(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("keys")
        .args(args)
        .output()
        .expect("runs authz-server keys")
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("UTF-8 output")
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// init, add (key printed once, only its hash stored), list, revoke by subject and by hash prefix.
async fn round_trip(url: &str) {
    let db = ["--database", url];
    assert!(ok(&keys(&[&["init"], &db[..]].concat())).contains("api_keys table ready"));
    ok(&keys(&[&["init"], &db[..]].concat())); // idempotent

    let alice = ok(&keys(
        &[&["add", "--subject", "alice", "--plan", "pro"], &db[..]].concat(),
    ));
    let alice = alice.trim();
    assert_eq!(alice.len(), 43, "32 random bytes, base64url: {alice:?}");
    assert!(
        alice
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    let bob = ok(&keys(&[&["add", "--subject", "bob"], &db[..]].concat()));
    let bob = bob.trim();
    assert_ne!(alice, bob);

    // Only hashes are stored.
    let rows = support::query_rows(url, "SELECT * FROM api_keys ORDER BY subject").await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["key_hash"], sha256_hex(alice));
    assert_eq!(rows[0]["plan"], "pro");
    assert_eq!(rows[1]["key_hash"], sha256_hex(bob));
    assert!(!rows[1].contains_key("plan"));
    for row in &rows {
        assert!(row.values().all(|v| v != alice && v != bob), "{row:?}");
        assert!(!row.contains_key("revoked_at"));
    }

    let listed = ok(&keys(&[&["list"], &db[..]].concat()));
    assert!(!listed.contains(alice) && !listed.contains(bob), "{listed}");
    let line = |subject: &str| {
        listed
            .lines()
            .find(|l| l.starts_with(subject))
            .unwrap_or_else(|| panic!("{subject} in {listed}"))
            .to_owned()
    };
    assert!(line("alice").contains(&sha256_hex(alice)[..12]), "{listed}");
    assert!(line("alice").contains(" pro "), "{listed}");
    assert!(
        line("bob").trim_end().ends_with(" -"),
        "bob not revoked: {listed}"
    );

    assert_eq!(
        ok(&keys(
            &[&["revoke", "--subject", "alice"], &db[..]].concat()
        ))
        .trim(),
        "revoked 1 key(s)"
    );
    let again = keys(&[&["revoke", "--subject", "alice"], &db[..]].concat());
    assert_eq!(again.status.code(), Some(1), "nothing left to revoke");
    let prefix = &sha256_hex(bob)[..10];
    assert_eq!(
        ok(&keys(
            &[&["revoke", "--hash-prefix", prefix], &db[..]].concat()
        ))
        .trim(),
        "revoked 1 key(s)"
    );
    let rows = support::query_rows(url, "SELECT subject, revoked_at FROM api_keys").await;
    assert!(
        rows.iter().all(|r| r.contains_key("revoked_at")),
        "{rows:?}"
    );

    let short = keys(&[&["revoke", "--hash-prefix", "abc"], &db[..]].concat());
    assert_eq!(short.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 8 hex digits"));
}

#[tokio::test]
async fn keys_round_trip_on_sqlite() {
    let path = support::temp_path("keys.db");
    let url = format!("sqlite://{}", path.display());
    // Nothing is created except by init.
    let missing = keys(&["list", "--database", &url]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("keys init"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    assert!(!path.exists());
    round_trip(&url).await;
}

#[tokio::test]
async fn keys_round_trip_on_postgres() {
    let Some(base) = testkit::postgres_url("keys_round_trip_on_postgres") else {
        return;
    };
    let url = support::fresh_postgres_database(&base).await;
    round_trip(&url).await;
}

#[test]
fn keys_reports_an_unreachable_database_and_a_bad_url() {
    let refused = keys(&["list", "--database", "postgres://postgres@127.0.0.1:1/none"]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("Connection refused"), "{stderr}");
    let bad = keys(&["init", "--database", "mysql://x/y"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unsupported database URL"));
}
