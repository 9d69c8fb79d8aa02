//! Database lookups through an in-memory `Lookup` double, and credential sources with static
//! keys: what reaches the hook (database, SQL, bound parameters, policy) and what each answer
//! decides.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rules::hooks::BoxFuture;
use rules::{
    DatabaseSpec, Hooks, Lookup, LookupError, LookupPolicy, LookupQuery, OnLookupError, Row,
};
use sha2::{Digest, Sha256};
use support::{
    DecideTraced, assert_unauthenticated, denied, evaluate, policy, request, request_headers,
};

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What the double saw.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    database: String,
    sql: String,
    params: Vec<String>,
    policy: LookupPolicy,
}

/// An in-memory lookup: records every query and answers with a fixed result.
struct Double {
    answer: Result<Option<Row>, LookupError>,
    seen: Mutex<Vec<Seen>>,
}

impl Double {
    fn new(answer: Result<Option<Row>, LookupError>) -> Arc<Self> {
        Arc::new(Self {
            answer,
            seen: Mutex::new(Vec::new()),
        })
    }

    fn row(columns: &[(&str, &str)]) -> Arc<Self> {
        let row = columns
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Self::new(Ok(Some(row)))
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("not poisoned").clone()
    }

    fn hooks(self: &Arc<Self>) -> Hooks {
        Hooks {
            lookup: Some(self.clone()),
            ..Hooks::default()
        }
    }
}

impl Lookup for Double {
    fn lookup<'a>(
        &'a self,
        query: LookupQuery<'a>,
    ) -> BoxFuture<'a, Result<Option<Arc<Row>>, LookupError>> {
        self.seen.lock().expect("not poisoned").push(Seen {
            database: query.database.to_owned(),
            sql: query.sql.to_owned(),
            params: query.params.to_vec(),
            policy: query.policy.clone(),
        });
        let answer = self.answer.clone().map(|row| row.map(Arc::new));
        Box::pin(async move { answer })
    }
}

const SQL: &str = "SELECT user_id, plan FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL";

const API_KEYS: &str = r#"
[databases.main]
url = "sqlite://keys.db"

[databases.analytics]
url = "postgres://authz@127.0.0.1:5432/analytics"
pool_size = 3

[default]
deny = { status = 403, body = "no rule" }

[[rules]]
name = "api-key"
when = { path = { prefix = "/openai" } }
[rules.credential]
from = { header = "x-ai-api-key" }
[rules.lookup]
database = "main"
query = "SELECT user_id, plan FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL"
params = [{ credential = "sha256" }]
on_error = { serve_stale_seconds = 300 }
on_missing = { status = 403, body = "unknown key" }
[rules.require]
db = [{ column = "plan", regex = "pro|team" }]
[rules.allow]
request_headers = [{ name = "x-user-id", value = "{{db.user_id}}" }, { name = "x-plan", value = "{{db.plan}}" }]
"#;

fn api_keys_policy() -> rules::RuleSet {
    policy(API_KEYS)
}

fn key_request(key: &str) -> rules::Request {
    request("/openai/v1/chat", &[("x-ai-api-key", key)])
}

#[test]
fn databases_are_listed_for_the_server() {
    let rules = api_keys_policy();
    assert_eq!(
        rules.databases(),
        [
            DatabaseSpec {
                name: "analytics".into(),
                url: "postgres://authz@127.0.0.1:5432/analytics".into(),
                pool_size: 3,
            },
            DatabaseSpec {
                name: "main".into(),
                url: "sqlite://keys.db".into(),
                pool_size: 8,
            },
        ]
    );
}

#[test]
fn a_found_row_allows_with_its_columns_and_the_hook_sees_the_hash() {
    let rules = api_keys_policy();
    let double = Double::row(&[("user_id", "u-42"), ("plan", "pro")]);
    let evaluation = evaluate(&rules, &key_request("sk-live-1"), &double.hooks());
    assert_eq!(
        request_headers(&evaluation),
        vec![
            ("x-user-id".to_owned(), "u-42".to_owned()),
            ("x-plan".to_owned(), "pro".to_owned()),
        ]
    );
    assert_eq!(
        double.seen(),
        vec![Seen {
            database: "main".into(),
            sql: SQL.into(),
            params: vec![sha256_hex("sk-live-1")],
            policy: LookupPolicy {
                timeout: Duration::from_millis(200),
                cache_ttl: Duration::from_secs(30),
                negative_ttl: Duration::from_secs(5),
                on_error: OnLookupError::ServeStale {
                    max_stale: Duration::from_secs(300),
                },
            },
        }]
    );
    for line in &evaluation.trace {
        assert!(!line.contains("sk-live-1"), "{line}");
    }
}

#[test]
fn no_row_decides_on_missing() {
    let rules = api_keys_policy();
    let double = Double::new(Ok(None));
    let evaluation = evaluate(&rules, &key_request("sk-unknown"), &double.hooks());
    let deny = denied(&evaluation);
    assert_eq!((deny.http_status, deny.grpc_code), (403, 7));
    assert_eq!(deny.body, "unknown key");
    assert_eq!(evaluation.rule.as_deref(), Some("api-key"));
    assert_eq!(
        evaluation.trace,
        vec!["rule \"api-key\": lookup found no row".to_owned()]
    );
}

#[test]
fn a_database_failure_decides_on_db_error_503() {
    let rules = api_keys_policy();
    for (error, reason) in [
        (
            LookupError::Failed("password authentication failed".into()),
            "database error",
        ),
        (
            LookupError::Timeout(Duration::from_millis(200)),
            "timed out after 200ms",
        ),
        (
            LookupError::UnknownDatabase("main".into()),
            "database `main` is not open",
        ),
    ] {
        let double = Double::new(Err(error));
        let evaluation = evaluate(&rules, &key_request("sk-live-1"), &double.hooks());
        let deny = denied(&evaluation);
        assert_eq!((deny.http_status, deny.grpc_code), (503, 14));
        assert_eq!(deny.body, "");
        assert_eq!(
            evaluation.trace,
            vec![format!("rule \"api-key\": lookup failed: {reason}")]
        );
    }
    // No hook at all (decide): the same fail-closed answer.
    let evaluation = rules.traced(&key_request("sk-live-1"));
    assert_eq!(denied(&evaluation).http_status, 503);
    assert_eq!(
        evaluation.trace,
        vec!["rule \"api-key\": lookup failed: no database hook".to_owned()]
    );
}

#[test]
fn a_missing_key_is_401_before_any_query_and_require_falls_through() {
    let rules = api_keys_policy();
    let double = Double::row(&[("user_id", "u-1"), ("plan", "free")]);
    let evaluation = evaluate(&rules, &request("/openai/x", &[]), &double.hooks());
    assert_unauthenticated(
        &evaluation,
        "ApiKey",
        "credential (header x-ai-api-key) missing",
    );
    assert!(double.seen().is_empty());
    // A free plan fails `require`: the rule does not match and the default decides.
    let evaluation = evaluate(&rules, &key_request("sk-free"), &double.hooks());
    assert_eq!(evaluation.rule, None);
    assert_eq!(denied(&evaluation).body, "no rule");
    assert_eq!(
        evaluation.trace,
        vec![
            "rule \"api-key\": no match: require: db column plan does not match regex \"^(?:pro|team)$\"".to_owned(),
            "default: deny".to_owned(),
        ]
    );
    // Outside the rule's path, no credential is asked for.
    let evaluation = evaluate(&rules, &request("/other", &[]), &double.hooks());
    assert_eq!(denied(&evaluation).body, "no rule");
}

const PARAMS: &str = r#"
[databases.main]
url = "postgres://authz@127.0.0.1/authz"

[default]
deny = {}

[[rules]]
name = "org"
credential = { from = { header = "authorization", scheme = "Bearer" }, bearer = { sha256 = ["HASH"] } }
allow = { request_headers = [{ name = "x-org", value = "{{db.org}}" }, { name = "x-none", value = "{{db.missing}}" }] }
[rules.lookup]
database = "main"
query = "SELECT org FROM members WHERE token = $1 AND token_hash = $2 AND org = $3 AND org_hash = $4 AND seg = $5"
params = [
  { credential = "raw" },
  { credential = "sha256" },
  { header = "x-org" },
  { header = "x-org", sha256 = true },
  { path_segment = 2 },
]
timeout_ms = 50
cache_ttl_seconds = 0
negative_ttl_seconds = 1
"#;

#[test]
fn parameters_are_bound_in_order_and_sql_in_a_header_stays_a_value() {
    let rules = policy(&PARAMS.replace("HASH", &sha256_hex("tok-1")));
    let double = Double::row(&[("org", "acme")]);
    let injected = "' OR 1=1 --";
    let request = request(
        "/orgs/acme/items?x=1",
        &[("authorization", "Bearer tok-1"), ("x-org", injected)],
    );
    let evaluation = evaluate(&rules, &request, &double.hooks());
    assert_eq!(
        request_headers(&evaluation),
        vec![
            ("x-org".to_owned(), "acme".to_owned()),
            ("x-none".to_owned(), String::new()),
        ]
    );
    let seen = double.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].sql,
        "SELECT org FROM members WHERE token = $1 AND token_hash = $2 AND org = $3 AND org_hash = $4 AND seg = $5"
    );
    assert_eq!(
        seen[0].params,
        vec![
            "tok-1".to_owned(),
            sha256_hex("tok-1"),
            injected.to_owned(),
            sha256_hex(injected),
            "acme".to_owned(),
        ]
    );
    assert_eq!(seen[0].policy.timeout, Duration::from_millis(50));
    assert_eq!(seen[0].policy.cache_ttl, Duration::ZERO);
    assert_eq!(seen[0].policy.negative_ttl, Duration::from_secs(1));
    assert_eq!(seen[0].policy.on_error, OnLookupError::FailClosed);
}

#[test]
fn a_parameter_the_request_lacks_skips_the_query_as_no_row() {
    let rules = policy(&PARAMS.replace("HASH", &sha256_hex("tok-1")));
    let double = Double::row(&[("org", "acme")]);
    let evaluation = evaluate(
        &rules,
        &request("/orgs/acme", &[("authorization", "Bearer tok-1")]),
        &double.hooks(),
    );
    let deny = denied(&evaluation);
    assert_eq!((deny.http_status, deny.grpc_code), (403, 7));
    assert_eq!(
        evaluation.trace,
        vec!["rule \"org\": lookup skipped: parameter 3 absent from the request".to_owned()]
    );
    assert!(double.seen().is_empty());
    // A wrong static bearer token never reaches the database.
    let evaluation = evaluate(
        &rules,
        &request(
            "/orgs/acme",
            &[("authorization", "Bearer tok-2"), ("x-org", "a")],
        ),
        &double.hooks(),
    );
    assert_unauthenticated(&evaluation, "Bearer", "invalid: unknown key");
    assert!(double.seen().is_empty());
}

// --- credential sources with static keys -------------------------------------------------------

fn static_key_policy(from: &str) -> rules::RuleSet {
    policy(&format!(
        r#"
[default]
deny = {{}}
[[rules]]
name = "key"
credential = {{ from = {from}, api_keys = {{ sha256 = ["{}", "{}"] }} }}
allow = {{}}
"#,
        sha256_hex("first-key"),
        sha256_hex("second key/+")
    ))
}

#[test]
fn credentials_are_read_from_headers_schemes_queries_and_cookies() {
    let header = static_key_policy(r#"{ header = "X-Api-Key" }"#);
    assert!(
        header
            .traced(&request("/", &[("x-api-key", "first-key")]))
            .decision
            .is_allow()
    );
    assert!(
        header
            .traced(&request("/", &[("x-api-key", "second key/+")]))
            .decision
            .is_allow()
    );
    assert_unauthenticated(
        &header.traced(&request("/", &[("x-api-key", "third-key")])),
        "ApiKey",
        "credential (header x-api-key) invalid: unknown key",
    );

    let scheme = static_key_policy(r#"{ header = "authorization", scheme = "ApiKey" }"#);
    assert!(
        scheme
            .traced(&request("/", &[("authorization", "apikey first-key")]))
            .decision
            .is_allow()
    );
    assert_unauthenticated(
        &scheme.traced(&request("/", &[("authorization", "first-key")])),
        "ApiKey",
        "invalid: not a ApiKey credential",
    );

    let query = static_key_policy(r#"{ query = "api_key" }"#);
    assert!(
        query
            .traced(&request("/v1?a=1&api_key=first-key", &[]))
            .decision
            .is_allow()
    );
    assert!(
        query
            .traced(&request("/v1?api_key=second%20key%2F+", &[]))
            .decision
            .is_allow()
    );
    assert_unauthenticated(
        &query.traced(&request("/v1?api_key=%FF%FE", &[])),
        "ApiKey",
        "invalid: not valid UTF-8",
    );
    assert_unauthenticated(
        &query.traced(&request("/v1?api_key=%G1", &[])),
        "ApiKey",
        "invalid: malformed percent-encoding",
    );
    assert_unauthenticated(
        &query.traced(&request("/v1?other=first-key", &[])),
        "ApiKey",
        "credential (query parameter api_key) missing",
    );

    let cookie = static_key_policy(r#"{ cookie = "session" }"#);
    let with_cookie = |value: &str| request("/", &[("cookie", value)]);
    assert!(
        cookie
            .traced(&with_cookie("a=b; session=first-key; c=d"))
            .decision
            .is_allow()
    );
    assert_unauthenticated(
        &cookie.traced(&with_cookie("xsession=first-key")),
        "ApiKey",
        "credential (cookie session) missing",
    );
}

#[test]
fn oversized_credentials_are_invalid_without_hashing() {
    let header = static_key_policy(r#"{ header = "x-api-key" }"#);
    let huge = "k".repeat(rules::MAX_CREDENTIAL_BYTES + 1);
    assert_unauthenticated(
        &header.traced(&request("/", &[("x-api-key", &huge)])),
        "ApiKey",
        "invalid: longer than 8192 bytes",
    );
}

#[test]
fn on_failure_replaces_the_default_response() {
    let rules = policy(&format!(
        r#"
[default]
deny = {{}}
[[rules]]
name = "key"
allow = {{}}
[rules.credential]
from = {{ header = "x-api-key" }}
api_keys = {{ sha256 = ["{}"] }}
on_failure = {{ status = 403, grpc_code = "PERMISSION_DENIED", www_authenticate = 'ApiKey realm="ai"', body = "bad key for {{{{request.path}}}}" }}
"#,
        sha256_hex("k")
    ));
    let evaluation = rules.traced(&request("/chat", &[("x-api-key", "nope")]));
    let deny = denied(&evaluation);
    assert_eq!((deny.http_status, deny.grpc_code), (403, 7));
    assert_eq!(
        deny.headers,
        vec![(
            "www-authenticate".to_owned(),
            "ApiKey realm=\"ai\"".to_owned()
        )]
    );
    assert_eq!(deny.body, "bad key for /chat");
}

/// The examples in docs/rules.md's Credentials, Lookups and `require` sections load.
#[test]
fn documented_examples_load() {
    let doc = include_str!("../../docs/rules.md");
    for section in ["## Credentials", "## Lookups", "## `require`"] {
        let start = doc.find(section).unwrap();
        let block = &doc[start..];
        let block = &block[block.find("```toml\n").unwrap() + 8..];
        let block = &block[..block.find("```").unwrap()];
        let text = if section == "## `require`" {
            format!(
                "[databases.main]\nurl = \"sqlite://k.db\"\n[default]\ndeny = {{}}\n[[rules]]\nname = \"r\"\nallow = {{}}\n\
                 credential = {{ from = {{ header = \"a\" }}, jwt = {{ algorithms = [\"HS256\"], secret = \"s\" }} }}\n\
                 lookup = {{ database = \"main\", query = \"SELECT 1\" }}\n{block}"
            )
        } else {
            format!("[databases.main]\nurl = \"sqlite://k.db\"\n[default]\ndeny = {{}}\n{block}")
        };
        if let Err(errors) = rules::load::<toml::Table>("doc.toml", &text) {
            panic!("{section} example: {errors}\n{text}");
        }
    }
}
