//! Every rules config shipped under `config/` loads (the Istio one is embedded as the default).

use rules::{Decision, Request};

const ISTIO: &str = include_str!("../../config/istio-ext-authz.toml");

#[test]
fn istio_config_loads_with_its_server_section() {
    let (server, rule_set) = rules::load::<toml::Table>("istio-ext-authz.toml", ISTIO)
        .unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(
        server.get("grpc").and_then(|v| v.as_str()),
        Some("0.0.0.0:9000")
    );
    assert_eq!(
        server.get("http").and_then(|v| v.as_str()),
        Some("0.0.0.0:8000")
    );
    assert_eq!(rule_set.len(), 5);
    assert!(!rule_set.is_empty());
    assert!(rule_set.needs_received());
    assert!(!rule_set.default_allows());
}

#[test]
fn istio_deny_body_is_the_documented_76_bytes() {
    let (_, rule_set) = rules::load::<toml::Table>("istio-ext-authz.toml", ISTIO).unwrap();
    let evaluation = rule_set.decide(&Request::default());
    let Decision::Deny(deny) = evaluation.decision else {
        panic!("an empty request must be denied");
    };
    assert_eq!(
        deny.body,
        "denied by ext_authz for not found header `x-ext-authz: allow` in the request"
    );
    assert_eq!(deny.body.len(), 76);
}

#[test]
fn a_policy_without_received_does_not_ask_for_it() {
    let (_, rule_set) = rules::load::<toml::Table>(
        "p.toml",
        "[default]\ndeny = { body = \"{{request.path}}\" }\n",
    )
    .unwrap();
    assert!(!rule_set.needs_received());
    assert!(rule_set.is_empty());
}
