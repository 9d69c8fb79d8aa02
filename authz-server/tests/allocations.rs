//! Heap allocations per check on the hot path, counted by a test-only allocator: v3 Checks run
//! through the in-process [`CheckService`] (the neutral request built from the decoded message,
//! the rules, the response, metrics and the decision log call; no network, no log subscriber).
//! The figures are printed (`cargo test -p authz-server --test allocations -- --nocapture`);
//! each bound is today's figure plus two, to catch a regression (a copy per header, a string per
//! rule tried) without pinning the exact number: 8 for one header rule, 14 for the Istio allow
//! with the attribute dump, 9 for 200 rules.

use std::alloc::System;
use std::sync::Arc;

use authz_server::{CheckService, Config, Metrics, RuleEngine};
use extauthz_proto::envoy::service::auth::v3::authorization_server::Authorization;
use extauthz_proto::v3;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[path = "../benches/support/fixtures.rs"]
mod fixtures;
use fixtures::{envoy_like, many_rules};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Checks per measurement.
const CHECKS: usize = 2_000;

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
            10.0,
        ),
        (
            "istio default, allow (attribute dump rendered)",
            Config::builtin().expect("built-in config"),
            envoy_like(&[("x-ext-authz", "allow")]),
            0,
            16.0,
        ),
        (
            "200 rules, the deciding one last",
            Config::parse("rules200.toml", &many_rules(200)).expect("config"),
            envoy_like(&[("x-team", "platform")]),
            0,
            11.0,
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
