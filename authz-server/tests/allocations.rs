//! Heap allocations per check on the hot path, counted by a test-only allocator: v3 Checks run
//! through the in-process [`CheckService`] (the neutral request built from the decoded message,
//! the rules, the response, metrics and the decision log call; no network, no log subscriber).
//! The figures are printed (`cargo test -p authz-server --test allocations -- --nocapture`);
//! the bounds are generous, to catch a regression (a copy per header, a string per rule tried),
//! not to pin today's number.

use std::alloc::System;
use std::sync::Arc;

use authz_server::{CheckService, Config, Metrics, RuleEngine};
use extauthz_proto::envoy::service::auth::v3::authorization_server::Authorization;
use extauthz_proto::v3;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Checks per measurement.
const CHECKS: usize = 2_000;

/// An Envoy-shaped check of a small JSON POST, plus `extra` headers.
fn envoy_like(extra: &[(&str, &str)]) -> v3::CheckRequest {
    let headers = [
        (":authority", "api.example.com"),
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        (":scheme", "http"),
        ("content-type", "application/json"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "*/*"),
        ("x-request-id", "7f1c2a9e-5d43-4a8b-9b1e-2f6c8d0a1b3c"),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    v3::CheckRequest {
        attributes: Some(v3::AttributeContext {
            request: Some(v3::attribute_context::Request {
                time: None,
                http: Some(v3::attribute_context::HttpRequest {
                    method: "POST".into(),
                    path: "/v1/chat/completions".into(),
                    host: "api.example.com".into(),
                    protocol: "HTTP/1.1".into(),
                    headers,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
}

/// `count` rules of header, path, regex and CIDR conditions the request misses, then the
/// deciding header rule.
fn many_rules(count: usize) -> String {
    let mut text = String::from("[default]\ndeny = { status = 403 }\n");
    for i in 0..count - 1 {
        let when = match i % 4 {
            0 => format!("headers = [{{ name = \"x-tenant\", exact = \"tenant-{i}\" }}]"),
            1 => format!("path = {{ exact = \"/svc/{i}/items\" }}"),
            2 => format!("path = {{ regex = \"/r{i}/[a-z]+/[0-9]+\" }}"),
            _ => format!("source_ip = [\"10.{}.{}.0/24\"]", i / 256, i % 256),
        };
        text.push_str(&format!(
            "\n[[rules]]\nname = \"r{i}\"\n[rules.when]\n{when}\n[rules.allow]\n"
        ));
    }
    text.push_str(
        "\n[[rules]]\nname = \"team\"\n[rules.when]\nheaders = [{ name = \"x-team\", exact = \"platform\" }]\n[rules.allow]\nrequest_headers = [{ name = \"x-authz-rule\", value = \"{{rule.name}}\" }]\n",
    );
    text
}

/// Allocations per check (and bytes per check) answering `request` with `config`.
fn per_check(config: Config, request: &v3::CheckRequest, expected_code: i32) -> (f64, f64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let service = CheckService::new(
        Arc::new(RuleEngine::new(config.rules)),
        Arc::new(Metrics::new()),
    );
    // Built before counting: the decoded message is tonic's allocation, not ours.
    let requests: Vec<_> = (0..CHECKS + 10)
        .map(|_| tonic::Request::new(request.clone()))
        .collect();
    let mut requests = requests.into_iter();
    runtime.block_on(async {
        // Warm up: lazily built statics, metric families' first label sets, regex caches.
        for request in requests.by_ref().take(10) {
            let _ = service.check(request).await;
        }
        let region = Region::new(GLOBAL);
        for request in requests {
            let response = service.check(request).await.expect("a check answer");
            let code = response.get_ref().status.as_ref().map_or(-1, |s| s.code);
            assert_eq!(code, expected_code, "the request took another path");
            drop(response);
        }
        let stats = region.change();
        (
            stats.allocations as f64 / CHECKS as f64,
            stats.bytes_allocated as f64 / CHECKS as f64,
        )
    })
}

const HEADER_RULE: &str = r#"
[default]
deny = { status = 403 }

[[rules]]
name = "team"
[rules.when]
headers = [{ name = "x-team", exact = "platform" }]
[rules.allow]
request_headers = [{ name = "x-authz-rule", value = "{{rule.name}}" }]
"#;

#[test]
fn allocations_per_check_stay_bounded() {
    let cases = [
        (
            "one header rule, allow",
            Config::parse("header.toml", HEADER_RULE).expect("config"),
            envoy_like(&[("x-team", "platform")]),
            0,
            30.0,
        ),
        (
            "istio default, allow (attribute dump rendered)",
            Config::builtin().expect("built-in config"),
            envoy_like(&[("x-ext-authz", "allow")]),
            0,
            40.0,
        ),
        (
            "200 rules, the deciding one last",
            Config::parse("rules200.toml", &many_rules(200)).expect("config"),
            envoy_like(&[("x-team", "platform")]),
            0,
            30.0,
        ),
    ];
    for (name, config, request, code, bound) in cases {
        let (allocations, bytes) = per_check(config, &request, code);
        println!("{name}: {allocations:.1} allocations/check, {bytes:.0} bytes/check");
        assert!(
            allocations <= bound,
            "{name}: {allocations:.1} allocations per check, over the bound of {bound}"
        );
    }
}
