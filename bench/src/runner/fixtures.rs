//! The files the scenarios need, written into the run's temporary directory: rule configs (one
//! header rule, 200 rules, an API-key lookup, a JWT rule per algorithm), gateway configs and
//! nginx.conf.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::rngs::OsRng;

/// The one header rule: `x-ext-authz: allow` is allowed, anything else denied. It serves gRPC
/// and HTTP mode alike (no `transport` condition), so the gateway's two transports and nginx's
/// `auth_request` ask the same rule.
pub const HEADER_RULE: &str = r#"
[default]
deny = { status = 403, body = "denied" }

[[rules]]
name = "allow-header"
[rules.when]
headers = [{ name = "x-ext-authz", exact = "allow" }]
[rules.allow]
request_headers = [{ name = "x-authz-rule", value = "{{rule.name}}" }]
"#;

/// 199 rules that do not match the benchmark request — header, path prefix, path regex and
/// source CIDR conditions in turn — then the deciding rule, so every rule is tried.
pub fn many_rules(count: usize) -> String {
    let mut config = String::from("[default]\ndeny = { status = 403 }\n");
    for i in 0..count.saturating_sub(1) {
        let when = match i % 4 {
            0 => format!(r#"headers = [{{ name = "x-tenant", exact = "tenant-{i}" }}]"#),
            1 => format!(r#"path = {{ prefix = "/svc-{i}/" }}"#),
            2 => format!(r#"path = {{ regex = "/api/v{i}/[a-z]+/items/[0-9]+" }}"#),
            _ => format!(r#"source_ip = ["192.168.{}.0/24"]"#, i % 256),
        };
        let outcome = if i % 2 == 0 {
            "[rules.allow]\nrequest_headers = [{ name = \"x-authz-rule\", value = \"{{rule.name}}\" }]"
        } else {
            "[rules.deny]\nstatus = 403"
        };
        let _ = write!(
            config,
            "\n[[rules]]\nname = \"rule-{i}\"\n[rules.when]\n{when}\n{outcome}\n"
        );
    }
    config.push_str(
        r#"
[[rules]]
name = "deciding"
[rules.when]
path = { prefix = "/v1/" }
headers = [{ name = "x-ext-authz", exact = "allow" }]
[rules.allow]
request_headers = [{ name = "x-authz-rule", value = "{{rule.name}}" }]
"#,
    );
    config
}

/// `config/api-keys.toml`'s rule against `keys.db` in `dir`; creates the database with
/// `authz-server keys` and returns the config path and one issued key.
pub fn api_keys(dir: &Path, authz_server: &Path) -> anyhow::Result<(std::path::PathBuf, String)> {
    let database = "sqlite://keys.db";
    let run = |args: &[&str]| -> anyhow::Result<String> {
        let output = Command::new(authz_server)
            .arg("keys")
            .args(args)
            .current_dir(dir)
            .output()
            .context("running authz-server keys")?;
        if !output.status.success() {
            bail!(
                "authz-server keys {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    run(&["init", "--database", database])?;
    let key = run(&[
        "add",
        "--database",
        database,
        "--subject",
        "alice",
        "--plan",
        "pro",
    ])?;
    let config = r#"
[databases.keys]
url = "sqlite://keys.db"
pool_size = 8

[default]
deny = { status = 403, body = "no rule matched" }

[[rules]]
name = "api-key"
[rules.credential]
from = { header = "x-ai-api-key" }
[rules.lookup]
database = "keys"
query = "SELECT subject, plan FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL"
params = [{ credential = "sha256" }]
cache_ttl_seconds = 30
negative_ttl_seconds = 5
timeout_ms = 250
on_error = { serve_stale_seconds = 300 }
on_missing = { status = 403, body = "unknown or revoked API key" }
[rules.allow]
request_headers = [
  { name = "x-user-id", value = "{{db.subject}}" },
  { name = "x-plan", value = "{{db.plan}}" },
]
"#;
    let path = dir.join("api-keys.toml");
    std::fs::write(&path, config)?;
    Ok((path, key))
}

/// A JWT scheme: the config's verification key and a valid token.
pub struct Jwt {
    /// `HS256`, `RS256`, `ES256` or `EdDSA`.
    pub algorithm: &'static str,
    /// The rule config verifying it.
    pub config: String,
    /// A token valid for a day.
    pub token: String,
}

/// One key pair (or secret) and token per algorithm, generated now.
pub fn jwts() -> anyhow::Result<Vec<Jwt>> {
    use ed25519_dalek::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};
    use rsa::pkcs8::LineEnding;

    let secret = "bench-secret-0123456789abcdef-0123456789";
    let rsa_key = rsa::RsaPrivateKey::new(&mut OsRng, 2048)?;
    let rsa_private = rsa::pkcs8::EncodePrivateKey::to_pkcs8_pem(&rsa_key, LineEnding::LF)?;
    let rsa_public =
        rsa::pkcs8::EncodePublicKey::to_public_key_pem(&rsa_key.to_public_key(), LineEnding::LF)?;
    let ec_key = p256::SecretKey::random(&mut OsRng);
    let ec_private = p256::pkcs8::EncodePrivateKey::to_pkcs8_pem(&ec_key, LineEnding::LF)?;
    let ec_public =
        p256::pkcs8::EncodePublicKey::to_public_key_pem(&ec_key.public_key(), LineEnding::LF)?;
    let ed_key = ed25519_dalek::SigningKey::generate(&mut OsRng);
    let ed_private = ed_key.to_pkcs8_pem(LineEnding::LF)?;
    let ed_public = ed_key.verifying_key().to_public_key_pem(LineEnding::LF)?;

    let schemes = [
        (
            "HS256",
            Algorithm::HS256,
            EncodingKey::from_secret(secret.as_bytes()),
            format!("secret = \"{secret}\""),
        ),
        (
            "RS256",
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(rsa_private.as_bytes())?,
            format!("public_key_pem = \"\"\"\n{rsa_public}\"\"\""),
        ),
        (
            "ES256",
            Algorithm::ES256,
            EncodingKey::from_ec_pem(ec_private.as_bytes())?,
            format!("public_key_pem = \"\"\"\n{ec_public}\"\"\""),
        ),
        (
            "EdDSA",
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(ed_private.as_bytes())?,
            format!("public_key_pem = \"\"\"\n{ed_public}\"\"\""),
        ),
    ];
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = serde_json::json!({
        "sub": "alice", "plan": "pro", "iss": "https://issuer.example", "aud": "bench",
        "iat": now, "exp": now + 86_400,
    });
    schemes
        .into_iter()
        .map(|(name, algorithm, key, verify)| {
            let token = jsonwebtoken::encode(&Header::new(algorithm), &claims, &key)?;
            let config = format!(
                r#"
[default]
deny = {{ status = 403 }}

[[rules]]
name = "jwt"
[rules.credential]
from = {{ header = "authorization", scheme = "Bearer" }}
[rules.credential.jwt]
algorithms = ["{name}"]
{verify}
issuer = "https://issuer.example"
audience = ["bench"]
[rules.allow]
request_headers = [{{ name = "x-user-id", value = "{{{{claims.sub}}}}" }}]
"#
            );
            Ok(Jwt {
                algorithm: name,
                config,
                token,
            })
        })
        .collect()
}

/// How the gateway asks the authorization server.
#[derive(Debug, Clone, Copy)]
pub enum GatewayPolicy {
    /// No policy: a plain proxy.
    None,
    /// ext_authz over gRPC to this address.
    Grpc(SocketAddr),
    /// Envoy's HTTP ext_authz protocol to this address.
    Http(SocketAddr),
}

/// What a gateway scenario's backend is.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// Plain HTTP/1.1 to this address (the gateway's default).
    Http(SocketAddr),
    /// `https://localhost:<port>` trusting `ca`, with `protocol` (`http1`, `http2` or `auto`).
    Https {
        /// The backend's TLS listener (its port; the host is `localhost`).
        address: SocketAddr,
        /// The CA file.
        ca: PathBuf,
        /// The backend's `protocol` key.
        protocol: &'static str,
    },
    /// A gRPC server over h2c (`protocol = "http2"`).
    Grpc(SocketAddr),
}

impl Upstream {
    /// The `[[backends]]` entry named `backend`.
    pub fn backend_toml(&self) -> String {
        match self {
            Upstream::Http(address) => {
                format!("[[backends]]\nname = \"backend\"\nurl = \"http://{address}\"\n")
            }
            Upstream::Https {
                address,
                ca,
                protocol,
            } => format!(
                "[[backends]]\nname = \"backend\"\nurl = \"https://localhost:{}\"\nprotocol = \"{protocol}\"\ntls = {{ ca = \"{}\" }}\n",
                address.port(),
                ca.display()
            ),
            Upstream::Grpc(address) => format!(
                "[[backends]]\nname = \"backend\"\nurl = \"http://{address}\"\nprotocol = \"http2\"\n"
            ),
        }
    }
}

/// A gateway config: one listener on an OS-chosen port, every path to `upstream`, and `policy`;
/// the admin endpoint on an OS-chosen port (its `/metrics` count upstream connections).
pub fn gateway(upstream: &Upstream, policy: GatewayPolicy) -> String {
    let mut config = format!(
        r#"
[admin]
address = "127.0.0.1:0"

[[listeners]]
name = "bench"
address = "127.0.0.1:0"

{backend}
[[routes]]
name = "all"
path = {{ prefix = "/" }}
backend = "backend"
"#,
        backend = upstream.backend_toml()
    );
    let (url, transport) = match policy {
        GatewayPolicy::None => return config,
        GatewayPolicy::Grpc(address) => (address, "grpc = {}"),
        // HTTP mode forwards only the headers listed; the rule reads `x-ext-authz`.
        GatewayPolicy::Http(address) => (address, "http = {}\nallowed_headers = [\"x-ext-authz\"]"),
    };
    let _ = write!(
        config,
        r#"
[[authz_backends]]
name = "authz"
url = "http://{url}"

[[policies]]
name = "ext-authz"
target_refs = [{{ kind = "Gateway", name = "bench" }}]
[policies.ext_auth]
backend = "authz"
{transport}
"#
    );
    config
}

/// nginx with one worker: a plain proxy on `plain` and the same proxy behind `auth_request` to
/// our HTTP mode on `with_auth`, both with upstream keep-alive (as the gateway pools connections),
/// and `sites` (more server blocks, [`super::upstreams::nginx_sites`]).
pub fn nginx_conf(
    dir: &Path,
    plain: SocketAddr,
    with_auth: SocketAddr,
    backend: SocketAddr,
    authz_http: SocketAddr,
    sites: &str,
) -> String {
    let dir = dir.display();
    let user = if is_root() { "user root;\n" } else { "" };
    format!(
        r#"{user}worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/nginx-body;
    proxy_temp_path {dir}/nginx-proxy;
    fastcgi_temp_path {dir}/nginx-fastcgi;
    uwsgi_temp_path {dir}/nginx-uwsgi;
    scgi_temp_path {dir}/nginx-scgi;
    upstream backend {{ server {backend}; keepalive 64; }}
    upstream authz {{ server {authz_http}; keepalive 64; }}
    server {{
        listen {plain};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
    server {{
        listen {with_auth};
        location / {{
            auth_request /_ext_authz;
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location = /_ext_authz {{
            internal;
            proxy_pass http://authz$request_uri;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Host $host;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
{sites}}}
"#
    )
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|uids| uids.split_whitespace().next())
            == Some("0")
    })
}

/// A typical RBAC decision written twice, for a side-by-side run: roles from an HS256 bearer
/// JWT (`roles` claim), each role granting methods on paths; the token (role `user`) may POST
/// /v1/chat/completions (the benchmark's request) by the third grant of four.
pub struct Rbac {
    /// The decision as TOML rules: a `jwt` credential and a `require` on `roles` per grant.
    pub toml: String,
    /// The same decision as a Rego policy (written into the run's directory) in OPA-Envoy's
    /// form, served by a `rego` rule.
    pub rego: String,
    /// A token valid for a day.
    pub token: String,
}

/// The [`Rbac`] pair; writes `rbac.rego` into `dir`.
pub fn rbac(dir: &Path) -> anyhow::Result<Rbac> {
    let secret = "bench-rbac-secret-0123456789abcdef-01234";
    let credential = format!(
        "credential = {{ from = {{ header = \"authorization\", scheme = \"Bearer\" }}, jwt = {{ algorithms = [\"HS256\"], secret = \"{secret}\" }} }}"
    );
    let grants = [
        ("guest-models", "GET", "/v1/models", "guest"),
        ("user-models", "GET", "/v1/models", "user"),
        ("user-chat", "POST", "/v1/chat/", "user"),
        ("admin", "POST", "/v1/", "admin"),
    ];
    let mut toml = "[default]\ndeny = { status = 403 }\n".to_owned();
    for (name, method, prefix, role) in grants {
        toml.push_str(&format!(
            "\n[[rules]]\nname = \"{name}\"\nwhen = {{ method = \"{method}\", path = {{ prefix = \"{prefix}\" }} }}\n{credential}\nrequire = {{ claims = [{{ name = \"roles\", contains = \"{role}\" }}] }}\nallow = {{}}\n"
        ));
    }
    let policy = format!(
        r#"package envoy.authz

import rego.v1

default allow := false

grants := {{
	"guest": [{{"methods": ["GET"], "path": "/v1/models*"}}],
	"user": [{{"methods": ["GET"], "path": "/v1/models*"}}, {{"methods": ["POST"], "path": "/v1/chat/*"}}],
	"admin": [{{"methods": ["GET", "POST"], "path": "/v1/**"}}],
}}

claims := payload if {{
	[scheme, encoded] := split(input.attributes.request.http.headers.authorization, " ")
	lower(scheme) == "bearer"
	[valid, _, payload] := io.jwt.decode_verify(encoded, {{"secret": "{secret}", "alg": "HS256"}})
	valid
}}

allow if {{
	some role in claims.roles
	some grant in grants[role]
	input.attributes.request.http.method in grant.methods
	glob.match(grant.path, ["/"], input.attributes.request.http.path)
}}
"#
    );
    std::fs::write(dir.join("rbac.rego"), policy)?;
    let rego = "[default]\ndeny = { status = 403 }\n\n[[rules]]\nname = \"rbac\"\nrego = { files = [\"rbac.rego\"], query = \"data.envoy.authz.allow\" }\n".to_owned();
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = serde_json::json!({ "sub": "alice", "roles": ["user"], "exp": now + 86_400 });
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?;
    Ok(Rbac { toml, rego, token })
}
