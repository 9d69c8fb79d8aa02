//! The `authz-server` binary: serving the default, `validate` and `explain`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_authz-server");

fn repo_file(path: &str) -> String {
    format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))
}

fn write_temp(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("authz-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write temp config");
    path
}

#[test]
fn validate_accepts_the_shipped_configs() {
    // Every authz-server config under config/ (the gateway's own configs aside).
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(repo_file("config")).expect("config/") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !name.ends_with(".toml") || name.starts_with("gateway") {
            continue;
        }
        let output = Command::new(BIN)
            .arg("validate")
            .arg(&path)
            .output()
            .expect("runs");
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains(": ok ("));
        checked.push(name.to_owned());
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            "api-keys.toml",
            "istio-ext-authz.toml",
            "jwt.toml",
            "opa-envoy-example.toml"
        ]
    );
}

#[test]
fn validate_reports_rego_errors_and_explain_shows_the_policy_result() {
    let policy = write_temp(
        "broken.rego",
        "package envoy.authz\nimport rego.v1\n\nallow if {\n  input.x ==\n}\n",
    );
    let config = write_temp(
        "rego.toml",
        "[default]\ndeny = {}\n\n[[rules]]\nname = \"opa\"\nrego = { files = [\"broken.rego\"] }\n",
    );
    let output = Command::new(BIN)
        .arg("validate")
        .arg(&config)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{}:6:1: ", policy.display())),
        "{stderr}"
    );

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({ "roles": ["guest"], "iss": "https://issuer.example", "exp": now + 60 }),
        &jsonwebtoken::EncodingKey::from_secret(b"demo-secret-change-me-0123456789abcdef"),
    )
    .expect("signs");
    let explain = |method: &str| {
        Command::new(BIN)
            .args([
                "explain",
                "--config",
                &repo_file("config/opa-envoy-example.toml"),
            ])
            .args(["-X", method, "--path", "/people/7"])
            .args(["-H", &format!("authorization: Bearer {token}")])
            .output()
            .expect("runs")
    };
    let output = explain("GET");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("decision: allow (rule: opa-envoy)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "rule \"opa-envoy\": rego data.envoy.authz.allow = true: allow; package rules: {"
        ),
        "{stdout}"
    );
    let output = explain("DELETE");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("rego data.envoy.authz.allow = false: deny"),
        "{stdout}"
    );
}

#[test]
fn validate_lists_every_error_with_file_line_col_and_exits_2() {
    let path = write_temp(
        "bad.toml",
        r#"[default]
deny = {}

[[rules]]
name = "a"
when.path = { regex = "(" }
allow = {}

[[rules]]
name = "b"
when.source_ip = ["10.0.0.0/33"]
allow = {}
"#,
    );
    let output = Command::new(BIN)
        .arg("validate")
        .arg(&path)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let file = path.display().to_string();
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with(&file)).collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].starts_with(&format!("{file}:6:")), "{stderr}");
    assert!(lines[1].starts_with(&format!("{file}:11:")), "{stderr}");
}

#[test]
fn validate_warns_about_source_ip_over_http_mode_without_trusted_proxies_and_exits_0() {
    let policy = r#"
[default]
deny = {}

[[rules]]
name = "office"
when.any = [{ source_ip = "203.0.113.0/24" }]
allow = {}
"#;
    let validate = |name: &str, server: &str| {
        let path = write_temp(name, &format!("[server]\n{server}\n{policy}"));
        let output = Command::new(BIN)
            .arg("validate")
            .arg(&path)
            .output()
            .expect("runs");
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        (
            path.display().to_string(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (file, stdout) = validate("xff-warn.toml", "http = \"127.0.0.1:8000\"");
    assert_eq!(
        stdout.lines().nth(1),
        Some(
            format!(
                "{file}: warning: rule `office` matches source_ip, but over HTTP mode the source \
                 is the TCP peer (the proxy), not the client; set [server] trusted_proxies to \
                 take the client from x-forwarded-for"
            )
            .as_str()
        ),
        "{stdout}"
    );
    // Trusted proxies declared, or no HTTP mode: nothing to warn about.
    let (_, stdout) = validate(
        "xff-trusted.toml",
        "http = \"127.0.0.1:8000\"\ntrusted_proxies = [\"10.0.0.0/8\"]",
    );
    assert!(!stdout.contains("warning"), "{stdout}");
    let (_, stdout) = validate("xff-grpc.toml", "grpc = \"127.0.0.1:9000\"");
    assert!(!stdout.contains("warning"), "{stdout}");
}

#[test]
fn a_bad_config_is_refused_at_start_with_exit_2() {
    let path = write_temp("syntax.toml", "[default\n");
    let output = Command::new(BIN)
        .args(["--grpc-addr", "127.0.0.1:0", "--config"])
        .arg(&path)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(&format!("{}:1:", path.display())),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn explain_names_the_deciding_rule() {
    let allow = Command::new(BIN)
        .args(["explain", "-H", "x-ext-authz: allow", "--path", "/openai"])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&allow.stdout);
    assert_eq!(allow.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.starts_with("decision: allow (rule: grpc-allow-header)"),
        "{stdout}"
    );

    let deny = Command::new(BIN)
        .args([
            "explain",
            "--principal",
            "spiffe://cluster.local/ns/default/sa/b",
        ])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&deny.stdout);
    assert_eq!(deny.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.starts_with("decision: deny (rule: default)"),
        "{stdout}"
    );
    assert!(stdout.contains("status 403 (gRPC code 7)"), "{stdout}");

    let fallback = Command::new(BIN)
        .args([
            "explain",
            "--principal",
            "spiffe://cluster.local/ns/default/sa/a",
        ])
        .output()
        .expect("runs");
    assert!(
        String::from_utf8_lossy(&fallback.stdout)
            .starts_with("decision: allow (rule: grpc-allow-principal)")
    );
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serves_the_default_and_prints_the_listening_addresses() {
    let mut child = Command::new(BIN)
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let stdout = child.stdout.take().expect("stdout");
    let running = Running(child);
    let mut lines = BufReader::new(stdout).lines();
    let grpc = lines.next().expect("a line").expect("utf-8");
    let http = lines.next().expect("a line").expect("utf-8");
    assert!(grpc.starts_with("listening grpc 127.0.0.1:"), "{grpc}");
    assert!(http.starts_with("listening http 127.0.0.1:"), "{http}");
    let address = http.trim_start_matches("listening http ");
    let mut stream = std::net::TcpStream::connect(address).expect("connects");
    use std::io::{Read, Write};
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .expect("writes");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("reads");
    assert!(reply.starts_with("HTTP/1.1 403 Forbidden"), "{reply}");
    assert!(
        reply.ends_with(
            "denied by ext_authz for not found header `x-ext-authz: allow` in the request"
        )
    );
    drop(running);
}

#[test]
fn explain_runs_database_lookups_like_a_real_check() {
    let dir = std::env::temp_dir().join(format!("authz-cli-explain-db-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::copy(repo_file("config/api-keys.toml"), dir.join("api-keys.toml")).expect("copy");
    let database = format!("sqlite://{}", dir.join("keys.db").display());
    let init = Command::new(BIN)
        .args(["keys", "init", "--database", &database])
        .output()
        .expect("runs");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let added = Command::new(BIN)
        .args([
            "keys",
            "add",
            "--database",
            &database,
            "--subject",
            "alice",
            "--plan",
            "pro",
        ])
        .output()
        .expect("runs");
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let key = String::from_utf8_lossy(&added.stdout).trim().to_owned();
    let config = dir.join("api-keys.toml");

    let allowed = Command::new(BIN)
        .arg("explain")
        .arg("--config")
        .arg(&config)
        .args(["-H", &format!("x-ai-api-key: {key}")])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&allowed.stdout);
    assert_eq!(allowed.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.starts_with("decision: allow (rule: api-key)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("+ request header x-user-id: alice"),
        "{stdout}"
    );
    assert!(stdout.contains("+ request header x-plan: pro"), "{stdout}");

    let denied = Command::new(BIN)
        .arg("explain")
        .arg("--config")
        .arg(&config)
        .args(["-H", "x-ai-api-key: not-a-key"])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&denied.stdout);
    assert_eq!(denied.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("lookup found no row"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
