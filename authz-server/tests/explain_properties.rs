//! Property test: config → compiled rules → `authz-server explain` agrees with the server.
//!
//! A random policy (header, path, method, principal and CIDR conditions, `any`/`not`, allows
//! and denies with their own statuses, codes and templated headers, an allowing or denying
//! default) is written to a file. The same file is loaded the way `authz-server` loads it and
//! served over gRPC on loopback; random requests are then both sent as a real `Check` and
//! described to the `authz-server explain` command. What explain prints — the decision, the
//! deciding rule, the request headers or the deny's status, gRPC code, headers and body — must
//! be what the server answered, and explain's trace must end where the decision was made.
//!
//! Every action carries `x-rule: {{rule.name}}`, so the server's answer names its rule too.
//! The case count is modest (explain is a process per request); `PROPTEST_CASES` raises it.

use std::net::IpAddr;
use std::process::Command;
use std::sync::OnceLock;

use extauthz_proto::v3::authorization_client::AuthorizationClient;
use extauthz_proto::v3::{self, check_response::HttpResponse};
use proptest::prelude::*;

mod support;

const BIN: &str = env!("CARGO_BIN_EXE_authz-server");

/// `cases` by default, or `PROPTEST_CASES`.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---- random policies and requests -------------------------------------------------------

/// A TOML basic string (the generated texts hold no control characters).
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn value_text() -> impl Strategy<Value = &'static str> + Clone {
    prop::sample::select(vec!["allow", "Allow", "a", "ab", "a b", "x.y", "é"])
}

/// One `when` table, as TOML.
fn condition() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        (
            prop::sample::select(vec!["x-a", "X-B"]),
            prop::sample::select(vec!["exact", "prefix", "suffix", "contains", "regex"]),
            value_text(),
            any::<bool>(),
        )
            .prop_map(|(name, op, value, ignore_case)| format!(
                "{{ headers = [{{ name = {}, {op} = {}, ignore_case = {ignore_case} }}] }}",
                quoted(name),
                quoted(value)
            )),
        (prop::sample::select(vec!["x-a", "x-b"]), any::<bool>()).prop_map(|(name, present)| {
            format!(
                "{{ headers = [{{ name = {}, present = {present} }}] }}",
                quoted(name)
            )
        }),
        (
            prop::sample::select(vec!["exact", "prefix"]),
            prop::sample::select(vec!["/", "/a", "/a/b", "/admin"]),
        )
            .prop_map(|(op, path)| format!("{{ path = {{ {op} = {} }} }}", quoted(path))),
        prop::sample::subsequence(vec!["GET", "POST", "PUT"], 1..3)
            .prop_map(|methods| format!("{{ method = {methods:?} }}")),
        prop::sample::select(vec!["/sa/a", "/sa/b", "default"])
            .prop_map(|s| format!("{{ principal = {{ suffix = {} }} }}", quoted(s))),
        prop::sample::select(vec!["10.0.0.0/8", "10.1.0.0/16", "::1/128", "0.0.0.0/0"])
            .prop_map(|net| format!("{{ source_ip = {} }}", quoted(net))),
    ];
    leaf.prop_recursive(2, 6, 2, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 1..3)
                .prop_map(|list| format!("{{ any = [{}] }}", list.join(", "))),
            inner.prop_map(|c| format!("{{ not = {c} }}")),
        ]
    })
}

/// An `allow = ...` or `deny = ...` line; every one says which rule decided.
fn action() -> impl Strategy<Value = String> {
    let rule = r#"{ name = "x-rule", value = "{{rule.name}}" }"#;
    prop_oneof![
        Just(format!(
            r#"allow = {{ request_headers = [{rule}, {{ name = "x-echo", value = "{{{{request.headers.x-a}}}}" }}] }}"#
        )),
        (
            prop::sample::select(vec![401u16, 403, 429]),
            prop::sample::select(vec![7, 16]),
            prop::sample::select(vec!["", "no", "denied {{request.path}}"]),
        )
            .prop_map(move |(status, code, body)| format!(
                "deny = {{ status = {status}, grpc_code = {code}, body = {}, headers = [{rule}] }}",
                quoted(body)
            )),
    ]
}

fn policy() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec((condition(), action()), 1..5),
        action(),
    )
        .prop_map(|(rules, default)| {
            let mut text = format!("[default]\n{default}\n");
            for (i, (when, action)) in rules.iter().enumerate() {
                text.push_str(&format!(
                    "\n[[rules]]\nname = \"r{i}\"\nwhen = {when}\n{action}\n"
                ));
            }
            text
        })
}

#[derive(Debug, Clone)]
struct Described {
    method: &'static str,
    path: &'static str,
    host: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    principal: &'static str,
    source_ip: Option<IpAddr>,
}

fn request() -> impl Strategy<Value = Described> {
    (
        prop::sample::select(vec!["GET", "POST", "PUT"]),
        prop::sample::select(vec![
            "/",
            "/a",
            "/a/b?x=1",
            "/admin/x",
            "//a/./b",
            "/x/../admin",
            "/%61dmin",
        ]),
        prop::sample::select(vec!["", "example.com", "Example.COM:443"]),
        proptest::option::of(value_text()),
        proptest::option::of(value_text()),
        prop::sample::select(vec![
            "",
            "spiffe://cluster.local/ns/default/sa/a",
            "spiffe://c/ns/x/sa/b",
        ]),
        proptest::option::of(prop::sample::select(vec![
            "10.1.2.3",
            "10.2.0.1",
            "192.0.2.1",
            "::1",
        ])),
    )
        .prop_map(|(method, path, host, a, b, principal, ip)| {
            let mut headers = Vec::new();
            if let Some(a) = a {
                headers.push(("x-a", a));
            }
            if let Some(b) = b {
                headers.push(("x-b", b));
            }
            Described {
                method,
                path,
                host,
                headers,
                principal,
                source_ip: ip.map(|ip| ip.parse().expect("ip")),
            }
        })
}

// ---- the two sides -----------------------------------------------------------------------

/// What a decision looks like from outside, whichever side reports it.
#[derive(Debug, PartialEq)]
enum Outcome {
    Allow {
        request_headers: Vec<(String, String)>,
    },
    Deny {
        status: u16,
        grpc_code: i32,
        headers: Vec<(String, String)>,
        body: String,
    },
}

/// The Check the proxy would send for the described request.
fn check_request(r: &Described) -> v3::CheckRequest {
    v3::CheckRequest {
        attributes: Some(v3::AttributeContext {
            source: Some(v3::attribute_context::Peer {
                address: r.source_ip.map(|ip| v3::Address {
                    address: Some(v3::address::Address::SocketAddress(v3::SocketAddress {
                        address: ip.to_string(),
                        ..Default::default()
                    })),
                }),
                principal: r.principal.to_owned(),
                ..Default::default()
            }),
            request: Some(v3::attribute_context::Request {
                time: None,
                http: Some(v3::attribute_context::HttpRequest {
                    method: r.method.to_owned(),
                    path: r.path.to_owned(),
                    host: r.host.to_owned(),
                    headers: support::header_map(&r.headers),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
}

fn pairs(options: &[v3::HeaderValueOption]) -> Vec<(String, String)> {
    options
        .iter()
        .filter_map(|o| o.header.as_ref())
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect()
}

/// The server's answer, and the rule its `x-rule` header names.
fn from_server(response: v3::CheckResponse) -> (Outcome, String) {
    let code = response.status.map_or(0, |s| s.code);
    let (outcome, headers) = match (code, response.http_response) {
        (0, Some(HttpResponse::OkResponse(ok))) => {
            let headers = pairs(&ok.headers);
            (
                Outcome::Allow {
                    request_headers: headers.clone(),
                },
                headers,
            )
        }
        (code, Some(HttpResponse::DeniedResponse(denied))) => {
            let headers = pairs(&denied.headers);
            let outcome = Outcome::Deny {
                status: denied
                    .status
                    .map_or(0, |s| u16::try_from(s.code).expect("an HTTP status code")),
                grpc_code: code,
                headers: headers.clone(),
                body: denied.body,
            };
            (outcome, headers)
        }
        other => panic!("unexpected answer {other:?}"),
    };
    let rule = headers
        .iter()
        .find(|(k, _)| k == "x-rule")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    (outcome, rule)
}

/// What `authz-server explain` printed: the outcome, the rule it names, and its trace.
fn from_explain(stdout: &str) -> (Outcome, String, Vec<String>) {
    let mut lines = stdout.lines();
    let first = lines.next().expect("a decision line");
    let (decision, rule) = first
        .strip_prefix("decision: ")
        .and_then(|rest| rest.split_once(" (rule: "))
        .expect("decision: <outcome> (rule: <name>)");
    let rule = rule.trim_end_matches(')').to_owned();
    let mut trace = Vec::new();
    let mut headers = Vec::new();
    let (mut status, mut grpc_code, mut body) = (0, 0, String::new());
    for line in lines {
        let line = line.strip_prefix("  ").unwrap_or(line);
        if let Some(h) = line
            .strip_prefix("+ request header ")
            .or_else(|| line.strip_prefix("+ response header "))
        {
            let (k, v) = h.split_once(": ").unwrap_or((h.trim_end_matches(':'), ""));
            headers.push((k.to_owned(), v.to_owned()));
        } else if let Some(rest) = line.strip_prefix("status ") {
            let (s, c) = rest.split_once(" (gRPC code ").expect("status line");
            status = s.parse().expect("status");
            grpc_code = c.trim_end_matches(')').parse().expect("code");
        } else if let Some(b) = line.strip_prefix("body: ") {
            body = b.to_owned();
        } else {
            trace.push(line.to_owned());
        }
    }
    let outcome = match decision {
        "allow" => Outcome::Allow {
            request_headers: headers,
        },
        "deny" => Outcome::Deny {
            status,
            grpc_code,
            headers,
            body,
        },
        other => panic!("unknown decision {other:?}"),
    };
    (outcome, rule, trace)
}

fn explain(config: &std::path::Path, r: &Described) -> String {
    let mut command = Command::new(BIN);
    command
        .arg("explain")
        .arg("--config")
        .arg(config)
        .args(["-X", r.method, "--path", r.path, "--host", r.host])
        .args(["--principal", r.principal]);
    for (name, value) in &r.headers {
        command.args(["-H", &format!("{name}: {value}")]);
    }
    if let Some(ip) = r.source_ip {
        command.args(["--source-ip", &ip.to_string()]);
    }
    let output = command.output().expect("explain runs");
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "explain failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// One server for the whole run; each case publishes its policy with `RuleEngine::replace`,
/// as a reload does.
struct Served {
    runtime: tokio::runtime::Runtime,
    engine: authz_server::RuleEngine,
    address: std::net::SocketAddr,
    _running: support::Running,
}

fn served() -> &'static Served {
    static SERVED: OnceLock<Served> = OnceLock::new();
    SERVED.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let builtin = authz_server::Config::builtin().expect("built-in config");
        let engine = authz_server::RuleEngine::new(builtin.rules);
        let running = runtime.block_on(support::start_engine(engine.clone()));
        Served {
            runtime,
            engine,
            address: running.grpc,
            _running: running,
        }
    })
}

proptest! {
    #![proptest_config(config(24))]

    #[test]
    fn explain_agrees_with_the_served_decision(
        policy in policy(),
        requests in proptest::collection::vec(request(), 1..5),
    ) {
        let path = support::temp_path("explain-policy.toml");
        std::fs::write(&path, &policy).expect("writes the policy");
        let loaded = authz_server::Config::load(&path)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{policy}")))?;
        let served = served();
        served.engine.replace(loaded.rules);
        for request in &requests {
            let answer = served.runtime.block_on(async {
                let mut client = AuthorizationClient::connect(format!("http://{}", served.address))
                    .await
                    .expect("connects");
                client.check(check_request(request)).await.expect("Check succeeds").into_inner()
            });
            let (server, server_rule) = from_server(answer);
            let (explained, explained_rule, trace) = from_explain(&explain(&path, request));
            prop_assert_eq!(&explained, &server, "policy:\n{}\nrequest: {:?}\ntrace: {:?}", policy, request, trace);
            prop_assert_eq!(&explained_rule, &server_rule);
            let last = trace.last().cloned().unwrap_or_default();
            if explained_rule == "default" {
                prop_assert!(last.starts_with("default: "), "trace {:?}", trace);
            } else {
                let matched = format!("rule {explained_rule:?}: matched");
                prop_assert!(trace.contains(&matched), "trace {:?} lacks {}", trace, matched);
            }
        }
        let _ = std::fs::remove_file(&path);
    }
}
