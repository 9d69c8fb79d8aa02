//! What the fuzz targets share: the fixed rule sets requests are decided with, and the checks
//! every decision must pass whatever the input was.

#![allow(dead_code)]

use std::sync::OnceLock;

use rules::{Decision, Evaluation, Request, RuleSet};

/// Istio's ext-authz behaviour, as shipped.
pub const ISTIO: &str = include_str!("../../../config/istio-ext-authz.toml");

/// A policy that reaches most of the rule engine (see the file).
pub const RICH: &str = include_str!("policy.toml");

/// The shipped Istio policy and the rich one, compiled once per process.
pub fn rule_sets() -> &'static [(&'static str, RuleSet); 2] {
    static SETS: OnceLock<[(&'static str, RuleSet); 2]> = OnceLock::new();
    SETS.get_or_init(|| {
        let load = |name: &'static str, text: &str| match authz_server::Config::parse(name, text) {
            Ok(config) => (name, config.rules),
            Err(error) => panic!("{name} does not load: {error}"),
        };
        [
            load("istio-ext-authz.toml", ISTIO),
            load("policy.toml", RICH),
        ]
    })
}

/// Decides `request` twice — untraced (indexed candidates) and traced (every rule tried in
/// order) — and insists on one answer: the index may only skip rules that cannot match.
/// Then checks that the decision is safe to put on the wire.
pub fn decide(rules: &RuleSet, request: &Request) -> Evaluation {
    let fast = rules.decide(request);
    let mut trace = Vec::new();
    let traced = rules.decide_traced(request, &mut trace);
    assert_eq!(fast, traced, "indexed and traced evaluation disagree");
    assert!(
        !trace.is_empty(),
        "a traced evaluation records at least its outcome"
    );
    assert_wire_safe(&fast.decision);
    fast
}

/// Every header a decision carries has a valid name and value (no CR, LF, NUL or other control
/// byte: template output from request data must never split or forge a header), and query
/// values carry no line breaks.
pub fn assert_wire_safe(decision: &Decision) {
    let check = |name: &str, value: &str| {
        assert!(
            http::HeaderName::from_bytes(name.as_bytes()).is_ok(),
            "invalid header name {name:?}"
        );
        assert!(
            http::HeaderValue::from_bytes(value.as_bytes()).is_ok(),
            "header {name} has a value that is not a valid header value: {value:?}"
        );
    };
    match decision {
        Decision::Allow(allow) => {
            for header in &allow.request_headers {
                check(&header.name, &header.value);
            }
            for header in &allow.response_headers {
                check(&header.name, &header.value);
            }
            for (name, value) in &allow.query_parameters_to_set {
                assert!(
                    !value.contains(['\r', '\n', '\0']),
                    "query parameter {name:?} has CR, LF or NUL: {value:?}"
                );
            }
        }
        Decision::Deny(deny) => {
            assert!(deny.grpc_code != 0, "a deny with gRPC code OK");
            for (name, value) in &deny.headers {
                check(name, value);
            }
        }
    }
}

/// Whether a parsed TOML document names a file the loader would read that is not a plain file
/// (`/dev/zero`, `/proc/...`, a FIFO): the fuzz targets skip those inputs, because loading a
/// config reads the files it names and the filesystem is not what is being fuzzed.
pub fn names_special_file(text: &str) -> bool {
    let Ok(table) = text.parse::<toml::Table>() else {
        return false;
    };
    fn special(value: &toml::Value) -> bool {
        match value {
            toml::Value::String(s) => s
                .split(['/', '\\'])
                .any(|part| matches!(part, "dev" | "proc" | "sys" | "run" | "..")),
            toml::Value::Array(items) => items.iter().any(special),
            toml::Value::Table(table) => table.values().any(special),
            _ => false,
        }
    }
    table.values().any(special)
}
