//! `config/api-keys.toml` and `config/jwt.toml` load and answer as their comments say.

mod support;

use std::process::Command;

use authz_server::{Config, RuleEngine};
use support::{check, client, start_engine};

const BIN: &str = env!("CARGO_BIN_EXE_authz-server");

fn repo_file(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

fn keys(dir: &std::path::Path, args: &[&str]) -> String {
    let output = Command::new(BIN)
        .current_dir(dir)
        .arg("keys")
        .args(args)
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("UTF-8")
        .trim()
        .to_owned()
}

#[tokio::test]
async fn api_keys_config_checks_the_seed_header_against_sqlite() {
    // As the walk-through in the file says: a copy of the config, keys.db beside it.
    let dir = support::temp_path("api-keys-config");
    std::fs::create_dir_all(&dir).expect("dir");
    let config_path = dir.join("api-keys.toml");
    std::fs::copy(repo_file("config/api-keys.toml"), &config_path).expect("copies");
    keys(&dir, &["init", "--database", "sqlite://keys.db"]);
    let key = keys(
        &dir,
        &[
            "add",
            "--database",
            "sqlite://keys.db",
            "--subject",
            "alice",
            "--plan",
            "pro",
        ],
    );

    let config = Config::load(&config_path).expect("config/api-keys.toml loads");
    assert_eq!(config.rules.databases().len(), 1);
    let server = start_engine(RuleEngine::connect(config.rules, Some(&dir)).await).await;
    let mut client = client(&server).await;

    let allowed = check(&mut client, "/openai", &[("x-ai-api-key", &key)]).await;
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(allowed.header("x-user-id"), Some("alice"));
    assert_eq!(allowed.header("x-plan"), Some("pro"));

    let unknown = check(&mut client, "/openai", &[("x-ai-api-key", "nope")]).await;
    assert_eq!(
        (unknown.status, unknown.body.as_str()),
        (403, "unknown or revoked API key")
    );
    let missing = check(&mut client, "/openai", &[]).await;
    assert_eq!(missing.status, 401);
    assert!(missing.header("www-authenticate").is_some());
}

#[tokio::test]
async fn jwt_config_allows_signed_tokens_with_claims_and_denies_others() {
    let config = Config::load(&repo_file("config/jwt.toml")).expect("config/jwt.toml loads");
    let server = start_engine(RuleEngine::connect(config.rules, None).await).await;
    let mut client = client(&server).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let sign = |secret: &str, iss: &str, exp: u64| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &serde_json::json!({ "sub": "alice", "plan": "pro", "iss": iss, "aud": "llm-gateway", "exp": exp }),
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("signs")
    };
    let secret = "demo-secret-change-me-0123456789abcdef";
    let good = format!(
        "Bearer {}",
        sign(secret, "https://issuer.example", now + 300)
    );
    let allowed = check(&mut client, "/", &[("authorization", &good)]).await;
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(allowed.header("x-user-id"), Some("alice"));
    assert_eq!(allowed.header("x-plan"), Some("pro"));

    for bad in [
        sign(
            "another-secret-another-secret-000",
            "https://issuer.example",
            now + 300,
        ),
        sign(secret, "https://elsewhere.example", now + 300),
        sign(secret, "https://issuer.example", now - 600),
    ] {
        let denied = check(
            &mut client,
            "/",
            &[("authorization", &format!("Bearer {bad}"))],
        )
        .await;
        assert_eq!(denied.status, 401, "{denied:?}");
        assert!(denied.header("www-authenticate").is_some());
    }
}
