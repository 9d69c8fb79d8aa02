//! `authz-server keys`: API keys in the lookup database — create the table, issue a key (shown
//! once, stored only as its SHA-256), list, revoke. The same SQL runs on SQLite and PostgreSQL.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use authz_server::lookup::{Database, OpenMode, redact};
use base64::Engine;
use clap::{Args, Subcommand};
use sha2::{Digest, Sha256};

/// Manages API keys in a database.
#[derive(Args)]
pub(crate) struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Args)]
struct Target {
    /// The database: `sqlite://keys.db` or `postgres://user@host:port/db`.
    #[arg(long)]
    database: String,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Creates the `api_keys` table (and, for SQLite, the file) if missing.
    Init(Target),
    /// Issues a new key for a subject and prints it once; only its SHA-256 is stored.
    Add {
        #[command(flatten)]
        target: Target,
        /// Who the key belongs to (becomes `{{db.subject}}`).
        #[arg(long)]
        subject: String,
        /// An optional plan (becomes `{{db.plan}}`).
        #[arg(long)]
        plan: Option<String>,
    },
    /// Lists keys: subject, plan, hash prefix, created, revoked. Never the keys themselves.
    List(Target),
    /// Revokes every active key of a subject, or the one key whose hash starts with a prefix.
    Revoke {
        #[command(flatten)]
        target: Target,
        /// Revoke all active keys of this subject.
        #[arg(
            long,
            required_unless_present = "hash_prefix",
            conflicts_with = "hash_prefix"
        )]
        subject: Option<String>,
        /// Revoke the key whose SHA-256 hex starts with this (at least 8 hex digits, as `list` shows).
        #[arg(long)]
        hash_prefix: Option<String>,
    },
}

/// The table `keys` manages and the lookup in `config/api-keys.toml` reads.
const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS api_keys (
    key_hash   TEXT PRIMARY KEY,
    subject    TEXT NOT NULL,
    plan       TEXT,
    created_at TEXT NOT NULL,
    revoked_at TEXT
)";
const CREATE_INDEX: &str = "CREATE INDEX IF NOT EXISTS api_keys_subject ON api_keys (subject)";

/// Runs one `keys` command; exit 0 on success, 1 on failure (or when nothing was revoked).
pub(crate) fn run(args: KeysArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("authz-server keys: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(args.command)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("authz-server keys: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: KeysCommand) -> anyhow::Result<ExitCode> {
    let (target, mode) = match &command {
        KeysCommand::Init(target) => (target, OpenMode::Create),
        KeysCommand::Add { target, .. }
        | KeysCommand::List(target)
        | KeysCommand::Revoke { target, .. } => (target, OpenMode::Existing),
    };
    let url = target.database.clone();
    if mode == OpenMode::Existing
        && let Some(path) = url.strip_prefix("sqlite://")
        && !path.starts_with(':')
        && !std::path::Path::new(path.split('?').next().unwrap_or(path)).exists()
    {
        anyhow::bail!(
            "{url}: no such database file (`authz-server keys init --database {url}` creates it)"
        );
    }
    let database =
        Database::open(&url, 1, mode).with_context(|| format!("opening {}", redact(&url)))?;
    database
        .ping()
        .await
        .with_context(|| format!("connecting to {}", redact(&url)))?;
    let result = match command {
        KeysCommand::Init(_) => init(&database).await,
        KeysCommand::Add { subject, plan, .. } => add(&database, &subject, plan).await,
        KeysCommand::List(_) => list(&database).await,
        KeysCommand::Revoke {
            subject,
            hash_prefix,
            ..
        } => revoke(&database, subject, hash_prefix).await,
    };
    database.close().await;
    result.with_context(|| format!("database {}", redact(&url)))
}

async fn init(database: &Database) -> anyhow::Result<ExitCode> {
    database.execute(CREATE_TABLE, &[]).await?;
    database.execute(CREATE_INDEX, &[]).await?;
    println!("api_keys table ready");
    Ok(ExitCode::SUCCESS)
}

async fn add(database: &Database, subject: &str, plan: Option<String>) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(!subject.is_empty(), "--subject must not be empty");
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret).context("no randomness from the OS")?;
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let hash = sha256_hex(&key);
    let params = [hash.clone(), subject.to_owned(), now_utc()];
    match plan {
        Some(plan) => {
            let sql = "INSERT INTO api_keys (key_hash, subject, created_at, plan) VALUES ($1, $2, $3, $4)";
            database
                .execute(sql, &[&params[..], &[plan]].concat())
                .await?
        }
        None => {
            let sql = "INSERT INTO api_keys (key_hash, subject, created_at) VALUES ($1, $2, $3)";
            database.execute(sql, &params).await?
        }
    };
    eprintln!(
        "issued a key for {subject} (sha256 {}…); it is printed once, store it now:",
        &hash[..12]
    );
    println!("{key}");
    Ok(ExitCode::SUCCESS)
}

async fn list(database: &Database) -> anyhow::Result<ExitCode> {
    let rows = database
        .rows(
            "SELECT subject, plan, key_hash, created_at, revoked_at FROM api_keys ORDER BY created_at, subject",
            &[],
        )
        .await?;
    println!(
        "{:<24} {:<12} {:<14} {:<21} revoked",
        "subject", "plan", "hash", "created"
    );
    for row in rows {
        let field = |name: &str| row.get(name).map_or("-", String::as_str);
        let hash = field("key_hash");
        println!(
            "{:<24} {:<12} {:<14} {:<21} {}",
            field("subject"),
            field("plan"),
            &hash[..hash.len().min(12)],
            field("created_at"),
            field("revoked_at"),
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn revoke(
    database: &Database,
    subject: Option<String>,
    hash_prefix: Option<String>,
) -> anyhow::Result<ExitCode> {
    let revoked = match (subject, hash_prefix) {
        (Some(subject), _) => {
            let sql =
                "UPDATE api_keys SET revoked_at = $1 WHERE subject = $2 AND revoked_at IS NULL";
            database.execute(sql, &[now_utc(), subject]).await?
        }
        (None, Some(prefix)) => {
            let prefix = prefix.to_ascii_lowercase();
            anyhow::ensure!(
                prefix.len() >= 8 && prefix.bytes().all(|b| b.is_ascii_hexdigit()),
                "--hash-prefix must be at least 8 hex digits, as `keys list` shows"
            );
            let matching = database
                .rows(
                    "SELECT key_hash FROM api_keys WHERE key_hash LIKE $1",
                    &[format!("{prefix}%")],
                )
                .await?;
            anyhow::ensure!(
                matching.len() <= 1,
                "{} keys start with {prefix}; give more digits",
                matching.len()
            );
            let sql =
                "UPDATE api_keys SET revoked_at = $1 WHERE key_hash LIKE $2 AND revoked_at IS NULL";
            database
                .execute(sql, &[now_utc(), format!("{prefix}%")])
                .await?
        }
        (None, None) => anyhow::bail!("give --subject or --hash-prefix"),
    };
    println!("revoked {revoked} key(s)");
    Ok(if revoked == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Lower-case hex SHA-256 of a key, as the lookup's `{ credential = "sha256" }` binds it.
fn sha256_hex(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The current time as RFC 3339 UTC (`2026-11-28T18:00:00Z`), which sorts as text on both
/// databases.
fn now_utc() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{}Z", telemetry::UtcDateTime::from_unix_seconds(seconds))
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_hashed_as_lower_case_hex() {
        assert_eq!(
            super::sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
