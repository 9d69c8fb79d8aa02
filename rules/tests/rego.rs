//! Rego rules: OPA-Envoy's documented examples (written by us from their text) decide as
//! OPA-Envoy documents; the input document has OPA-Envoy's shape; every way a policy can fail to
//! decide is a deny with a reason; load errors name `file:line:col`.

mod support;

use std::path::PathBuf;

use rules::{Decision, Request, RuleSet};
use serde_json::json;
use support::{DecideTraced, allowed, denied, request, request_headers};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// Loads `config` as if it were the file `dir/policy.toml`.
fn load_in(dir: &std::path::Path, config: &str) -> Result<RuleSet, rules::ConfigErrors> {
    let file = dir.join("policy.toml");
    rules::load::<toml::Table>(&file.display().to_string(), config).map(|(_, rules)| rules)
}

/// A fresh directory holding `files`.
fn dir_with(test: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rules-rego-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("writes");
    }
    dir
}

/// One rule delegating to `file` with `query`.
fn rego_config(file: &str, query: &str, extra: &str) -> String {
    format!(
        "[default]\ndeny = {{ status = 418 }}\n\n[[rules]]\nname = \"opa\"\n[rules.rego]\nfiles = [\"{file}\"]\nquery = \"{query}\"\n{extra}"
    )
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn hs256(secret: &str, claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("signs")
}

fn with_method(mut request: Request, method: &str) -> Request {
    request.method = method.into();
    request
}

#[test]
fn opa_envoy_quick_start_policy_decides_as_documented() {
    let rules = load_in(
        &fixtures(),
        &rego_config("rego/readme.rego", "data.envoy.authz.allow", ""),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let token = |role: &str, exp: u64| {
        // `sub` is "alice", base64url-encoded, as in the documentation's tokens.
        hs256(
            "secret",
            &json!({ "role": role, "sub": "YWxpY2U", "nbf": 1514851139u64, "exp": exp }),
        )
    };
    let bearer = |t: String| format!("Bearer {t}");
    let guest = bearer(token("guest", now() + 300));
    let admin = bearer(token("admin", now() + 300));

    let get = request("/people", &[("authorization", &guest)]);
    let evaluation = rules.traced(&get);
    allowed(&evaluation);
    assert_eq!(evaluation.rule.as_deref(), Some("opa"));
    assert!(
        evaluation
            .trace
            .iter()
            .any(|l| l.contains("rego data.envoy.authz.allow = true: allow")),
        "{:?}",
        evaluation.trace
    );

    // A guest may not create people; the policy answers `false`: 403, no body.
    let post = with_method(request("/people", &[("authorization", &guest)]), "POST");
    let deny = rules.decide(&post);
    assert_eq!(deny.failure, None);
    let deny = denied(&deny);
    assert_eq!(
        (deny.http_status, deny.grpc_code, deny.body.as_str()),
        (403, 7, "")
    );

    // An admin may, unless the new person is themself (parsed_body is read).
    let json_post = |firstname: &str| {
        let body = format!("{{\"firstname\": \"{firstname}\", \"lastname\": \"Z\"}}");
        let mut r = with_method(
            request(
                "/people",
                &[
                    ("authorization", &admin),
                    ("content-type", "application/json"),
                ],
            ),
            "POST",
        );
        r.body = body;
        r
    };
    allowed(&rules.decide(&json_post("Charlie")));
    denied(&rules.decide(&json_post("Alice")));

    // Expired, badly signed and missing tokens.
    let expired = bearer(token("admin", now() - 10));
    denied(&rules.decide(&request("/people", &[("authorization", &expired)])));
    let forged = bearer(hs256(
        "not-the-secret",
        &json!({ "role": "admin", "nbf": 0, "exp": now() + 300 }),
    ));
    denied(&rules.decide(&request("/people", &[("authorization", &forged)])));
    denied(&rules.decide(&request("/people", &[])));
}

#[test]
fn object_decisions_carry_headers_status_body_and_metadata() {
    let rules = load_in(
        &fixtures(),
        &rego_config("rego/result.rego", "data.envoy.authz.result", ""),
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let evaluation = rules.decide(&request("/x?debug=1", &[("x-user", "alice")]));
    assert_eq!(
        request_headers(&evaluation),
        vec![
            ("x-ext-auth-allow".to_owned(), "yes".to_owned()),
            (
                "x-validated-by".to_owned(),
                "security-checkpoint".to_owned()
            ),
        ]
    );
    let allow = allowed(&evaluation);
    assert!(allow.request_headers.iter().all(|h| !h.append));
    assert_eq!(
        allow.headers_to_remove,
        ["one-auth-header", "another-auth-header"]
    );
    let response: Vec<_> = allow
        .response_headers
        .iter()
        .map(|h| (h.name.as_str(), h.value.as_str(), h.action))
        .collect();
    assert_eq!(
        response,
        [
            ("x-response", "a", rules::AppendAction::AppendIfExistsOrAdd),
            ("x-response", "b", rules::AppendAction::AppendIfExistsOrAdd)
        ]
    );
    assert_eq!(
        allow.query_parameters_to_set,
        [("tenant".to_owned(), "acme".to_owned())]
    );
    assert_eq!(allow.query_parameters_to_remove, ["debug"]);
    assert_eq!(
        serde_json::to_value(&allow.dynamic_metadata).unwrap(),
        json!({ "checks": 2, "user": "alice" })
    );

    // Envoy always sends headers; with none at all, `http_request.headers` is undefined (as in
    // OPA-Envoy, protojson leaves an empty map out) and so is `dynamic_metadata`.
    let evaluation = rules.decide(&request("/x", &[("accept", "*/*")]));
    let deny = denied(&evaluation);
    assert_eq!(deny.http_status, 401);
    assert_eq!(deny.grpc_code, 7);
    assert_eq!(deny.body, "Authentication Failed");
    assert_eq!(
        deny.headers,
        [
            ("x-ext-auth-allow".to_owned(), "yes".to_owned()),
            (
                "x-validated-by".to_owned(),
                "security-checkpoint".to_owned()
            )
        ]
    );
    assert_eq!(
        serde_json::to_value(&deny.dynamic_metadata).unwrap(),
        json!({ "checks": 2, "user": "" })
    );

    let deny = rules.decide(&request("/x", &[("x-user", "bob")]));
    let deny = denied(&deny);
    assert_eq!(
        (deny.http_status, deny.body.as_str()),
        (403, "Unauthorized Request")
    );
}

/// The input a policy sees, returned through dynamic metadata.
fn input_of(request: &Request) -> serde_json::Value {
    let dir = dir_with(
        "input",
        &[(
            "echo.rego",
            "package echo\nimport rego.v1\nresult := {\"allowed\": true, \"dynamic_metadata\": {\"input\": input}}\n",
        )],
    );
    let rules = load_in(&dir, &rego_config("echo.rego", "data.echo.result", ""))
        .expect("the echo policy loads");
    let evaluation = rules.decide(request);
    allowed(&evaluation).dynamic_metadata["input"].clone()
}

#[test]
fn input_document_has_opa_envoys_fields() {
    let mut get = request(
        "/people/a%20b?q=1&q=2&x=a+b",
        &[
            ("authorization", "Bearer t"),
            ("content-type", "application/json"),
        ],
    );
    get.host = "example.com".into();
    get.protocol = "HTTP/1.1".into();
    get.scheme = "http".into();
    get.body = "{\"k\": [1, 2]}".into();
    get.source.ip = "172.17.0.10".parse().ok();
    get.source.port = 36472;
    get.destination.ip = "172.17.0.17".parse().ok();
    get.destination.port = 9080;
    get.context_extensions
        .insert("tenant".into(), "acme".into());
    let input = input_of(&get);
    assert_eq!(
        input,
        json!({
            "attributes": {
                "source": {"address": {"socketAddress": {"address": "172.17.0.10", "portValue": 36472}}},
                "destination": {"address": {"socketAddress": {"address": "172.17.0.17", "portValue": 9080}}},
                "request": {"http": {
                    "method": "GET",
                    "path": "/people/a%20b?q=1&q=2&x=a+b",
                    "host": "example.com",
                    "scheme": "http",
                    "protocol": "HTTP/1.1",
                    "body": "{\"k\": [1, 2]}",
                    "headers": {"authorization": "Bearer t", "content-type": "application/json"},
                }},
                "contextExtensions": {"tenant": "acme"},
            },
            "parsed_path": ["people", "a b"],
            "parsed_query": {"q": ["1", "2"], "x": ["a b"]},
            "parsed_body": {"k": [1, 2]},
            "truncated_body": false,
            "version": {"ext_authz": "v3", "encoding": "protojson"},
            "authz_server": {"transport": "grpc", "path": "/people/a%20b?q=1&q=2&x=a+b", "host": "example.com"},
        })
    );

    // A JSON body shorter than its content-length is truncated and not parsed.
    let mut partial = request(
        "/",
        &[
            ("content-type", "application/json"),
            ("content-length", "100"),
        ],
    );
    partial.body = "{\"k\":".into();
    let input = input_of(&partial);
    assert_eq!(input["parsed_body"], json!(null));
    assert_eq!(input["truncated_body"], json!(true));
    assert_eq!(input["parsed_path"], json!([""]));

    // Not declared JSON: not parsed.
    let mut text = request("/", &[("content-type", "text/plain")]);
    text.body = "{}".into();
    assert_eq!(input_of(&text)["parsed_body"], json!(null));
}

#[test]
fn unreadable_requests_are_denied_400_as_opa_envoy_does() {
    let dir = dir_with(
        "input-errors",
        &[("p.rego", "package p\nimport rego.v1\nallow := true\n")],
    );
    let rules = load_in(&dir, &rego_config("p.rego", "data.p.allow", "")).unwrap();
    let mut bad_json = request("/", &[("content-type", "application/json")]);
    bad_json.body = "{not json".into();
    let evaluation = rules.decide(&bad_json);
    let deny = denied(&evaluation);
    assert_eq!(deny.http_status, 400);
    assert!(
        deny.body.starts_with("request body is not valid JSON"),
        "{}",
        deny.body
    );
    assert_eq!(evaluation.failure.as_ref().map(|f| f.kind), Some("input"));
}

/// Every way a policy can fail to decide is a 403 deny with a reason and a kind.
#[test]
fn undefined_errors_wrong_shapes_and_limits_fail_closed() {
    let policy = r#"package p
import rego.v1

undefined_rule if input.never

error_rule := x if { x := 1 / (count(input.parsed_path) - 1) }

string_rule := "allow"

missing_allowed := {"headers": {"a": "b"}}

allowed_not_bool := {"allowed": "true"}

bad_header := {"allowed": true, "headers": {"a": 1}}

bad_status := {"allowed": false, "http_status": 999}

conflict := x if { some x in ["PUT", input.attributes.request.http.method] }

slow := count([x | n := count(input.parsed_path) * 2000; some a in numbers.range(1, n); some b in numbers.range(1, n); x := a * b])
"#;
    let dir = dir_with("failures", &[("p.rego", policy)]);
    let cases = [
        ("undefined_rule", "undefined", "undefined decision"),
        ("string_rule", "invalid", "illegal value"),
        ("missing_allowed", "invalid", "missing \"allowed\""),
        (
            "allowed_not_bool",
            "invalid",
            "allowed to be of type 'boolean'",
        ),
        (
            "bad_header",
            "invalid",
            "invalid value type number for header 'a'",
        ),
        ("bad_status", "invalid", "invalid HTTP status code 999"),
        ("error_rule", "error", "divide by zero"),
        ("conflict", "error", ""),
        ("slow", "limit", "time limit of 20ms"),
    ];
    for (rule, kind, reason) in cases {
        let config = rego_config("p.rego", &format!("data.p.{rule}"), "timeout_ms = 20\n");
        let rules = load_in(&dir, &config).unwrap_or_else(|e| panic!("{rule}: {e}"));
        let started = std::time::Instant::now();
        let evaluation = rules.traced(&request("/", &[]));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{rule} bounded"
        );
        let deny = denied(&evaluation);
        assert_eq!(
            (deny.http_status, deny.grpc_code, deny.body.as_str()),
            (403, 7, ""),
            "{rule}"
        );
        let failure = evaluation
            .failure
            .as_ref()
            .unwrap_or_else(|| panic!("{rule}: no failure"));
        assert_eq!(failure.kind, kind, "{rule}: {failure:?}");
        assert!(failure.reason.contains(reason), "{rule}: {failure:?}");
        assert!(
            evaluation
                .trace
                .iter()
                .any(|l| l.contains("deny (fail closed: ")),
            "{rule}: {:?}",
            evaluation.trace
        );
    }
    // The same error on an input-independent path is found at load, as a config error.
    let constant = dir_with(
        "constant-error",
        &[(
            "c.rego",
            "package c\nimport rego.v1\n\nallow := x if { x := 1 / 0 }\n",
        )],
    );
    let errors = load_in(&constant, &rego_config("c.rego", "data.c.allow", ""))
        .unwrap_err()
        .to_string();
    assert!(errors.contains("c.rego:4:"), "{errors}");
    assert!(errors.ends_with("divide by zero"), "{errors}");
}

#[test]
fn rego_errors_are_config_errors_at_file_line_col() {
    let dir = dir_with(
        "load-errors",
        &[
            (
                "syntax.rego",
                "package p\nimport rego.v1\n\nallow if {\n  input.x ==\n}\n",
            ),
            ("ok.rego", "package p\nimport rego.v1\nallow := true\n"),
            ("data.json", "[1, 2]"),
        ],
    );
    let errors = load_in(&dir, &rego_config("syntax.rego", "data.p.allow", ""))
        .unwrap_err()
        .to_string();
    let syntax = dir.join("syntax.rego").display().to_string();
    assert!(errors.starts_with(&format!("{syntax}:6:1: ")), "{errors}");

    let errors = load_in(&dir, &rego_config("missing.rego", "data.p.allow", ""))
        .unwrap_err()
        .to_string();
    assert!(errors.contains("policy.toml:7:10: cannot read"), "{errors}");

    let errors = load_in(&dir, &rego_config("ok.rego", "data.p.nothing", ""))
        .unwrap_err()
        .to_string();
    assert!(
        errors.contains(
            "policy.toml:8:9: query `data.p.nothing`: no rule in the policy files declares it"
        ),
        "{errors}"
    );

    let errors = load_in(&dir, &rego_config("ok.rego", "allow", ""))
        .unwrap_err()
        .to_string();
    assert!(errors.contains("`query` must name a rule"), "{errors}");

    let errors = load_in(
        &dir,
        &rego_config(
            "ok.rego",
            "data.p.allow",
            "data = [\"data.json\"]\ntimeout_ms = 0\n",
        ),
    )
    .unwrap_err()
    .to_string();
    assert!(errors.contains("must hold a JSON object"), "{errors}");
    assert!(
        errors.contains("`timeout_ms` must be 1..=10000"),
        "{errors}"
    );

    let both = format!(
        "{}[rules.allow]\n",
        rego_config("ok.rego", "data.p.allow", "")
    );
    let errors = load_in(&dir, &both).unwrap_err().to_string();
    assert!(errors.contains("cannot be given too"), "{errors}");

    let unknown = dir_with(
        "unknown-fn",
        &[(
            "u.rego",
            "package p\nimport rego.v1\nallow if http.send({})\n",
        )],
    );
    let errors = load_in(&unknown, &rego_config("u.rego", "data.p.allow", ""))
        .unwrap_err()
        .to_string();
    assert!(errors.contains("u.rego:3:"), "{errors}");
}

#[test]
fn jwt_builtins_decode_and_verify() {
    let token = hs256(
        "k",
        &json!({ "sub": "ann", "aud": "api", "iss": "me", "exp": now() + 60 }),
    );
    let policy = format!(
        r#"package p
import rego.v1
decoded := io.jwt.decode("{token}")
ok_hs := io.jwt.verify_hs256("{token}", "k")
bad_hs := io.jwt.verify_hs256("{token}", "x")
dv := io.jwt.decode_verify("{token}", {{"secret": "k", "aud": "api", "iss": "me"}})
dv_wrong_aud := io.jwt.decode_verify("{token}", {{"secret": "k", "aud": "other"}})
dv_no_aud := io.jwt.decode_verify("{token}", {{"secret": "k"}})
result := {{"allowed": true, "dynamic_metadata": {{
  "sub": decoded[1].sub, "alg": decoded[0].alg, "ok_hs": ok_hs, "bad_hs": bad_hs,
  "dv": dv[0], "dv_sub": dv[2].sub, "dv_wrong_aud": dv_wrong_aud, "dv_no_aud": dv_no_aud[0],
}}}}
"#
    );
    let dir = dir_with("jwt", &[("p.rego", &policy)]);
    let rules = load_in(&dir, &rego_config("p.rego", "data.p.result", "")).unwrap();
    let evaluation = rules.decide(&request("/", &[]));
    let Decision::Allow(allow) = &evaluation.decision else {
        panic!("{evaluation:?}")
    };
    assert_eq!(
        serde_json::to_value(&allow.dynamic_metadata).unwrap(),
        json!({
            "sub": "ann", "alg": "HS256", "ok_hs": true, "bad_hs": false,
            "dv": true, "dv_sub": "ann", "dv_wrong_aud": [false, {}, {}], "dv_no_aud": false,
        })
    );
}

#[test]
fn rules_before_a_rego_rule_still_decide_and_extras_carry_claims() {
    let dir = dir_with(
        "mixed",
        &[(
            "p.rego",
            "package p\nimport rego.v1\nallow if input.authz_server.claims.plan == \"pro\"\n",
        )],
    );
    let config = r#"
[default]
deny = { status = 418 }

[[rules]]
name = "health"
when = { path = { exact = "/healthz" } }
allow = {}

[[rules]]
name = "opa"
[rules.credential]
from = { header = "authorization", scheme = "Bearer" }
jwt = { algorithms = ["HS256"], secret = "0123456789abcdef0123456789abcdef" }
[rules.rego]
files = ["p.rego"]
query = "data.p.allow"
"#;
    let rules = load_in(&dir, config).unwrap_or_else(|e| panic!("{e}"));
    assert!(rules.needs_opa_attributes());
    assert_eq!(rules.rego_files(), [dir.join("p.rego").as_path()]);
    assert_eq!(
        rules.decide(&request("/healthz", &[])).rule.as_deref(),
        Some("health")
    );
    let token = |plan: &str| {
        format!(
            "Bearer {}",
            hs256(
                "0123456789abcdef0123456789abcdef",
                &json!({ "plan": plan, "exp": now() + 60 })
            )
        )
    };
    allowed(&rules.decide(&request("/x", &[("authorization", &token("pro"))])));
    let free = rules.decide(&request("/x", &[("authorization", &token("free"))]));
    assert_eq!(denied(&free).http_status, 403);
    // A missing token is the credential's 401, before the policy runs.
    assert_eq!(denied(&rules.decide(&request("/x", &[]))).http_status, 401);
}

#[test]
fn shipped_opa_envoy_example_loads_and_answers_as_its_comments_say() {
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/opa-envoy-example.toml");
    let text = std::fs::read_to_string(&config).expect("reads");
    let rules = rules::load::<toml::Table>(&config.display().to_string(), &text)
        .unwrap_or_else(|e| panic!("{e}"))
        .1;
    let token = |roles: &[&str]| {
        format!(
            "Bearer {}",
            hs256(
                "demo-secret-change-me-0123456789abcdef",
                &json!({ "roles": roles, "iss": "https://issuer.example", "exp": now() + 60 })
            )
        )
    };
    let guest = token(&["guest"]);
    let admin = token(&["admin"]);
    let check = |method: &str, path: &str, auth: &str| {
        rules
            .decide(&with_method(
                request(path, &[("authorization", auth)]),
                method,
            ))
            .decision
            .is_allow()
    };
    assert!(check("GET", "/people/7?x=1", &guest));
    assert!(!check("POST", "/people", &guest));
    assert!(check("POST", "/people", &admin));
    assert!(check("DELETE", "/people/7", &admin));
    assert!(!check("DELETE", "/people", &admin));
    assert!(!check("GET", "/other", &admin));
    assert!(!check("GET", "/people/7", "Bearer nonsense"));
}
