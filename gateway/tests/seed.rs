//! The seed walk-through (shared/seed) end to end, in process: the gateway, the demo backend and
//! a mock ext_authz server that behaves like Istio's ext-authz test service.

mod support;

use http::StatusCode;
use support::*;

#[tokio::test]
async fn without_policy_the_request_reaches_the_backend() {
    let backend = start_backend().await;
    let authz = MockAuthz::istio().await;
    let gw = start_gateway(&seed_config(backend, authz.addr, "")).await;

    let resp = send(seed_post(gw, "/openai", &[])).await;

    assert_eq!(resp.status, StatusCode::OK);
    let json = resp.json();
    assert_eq!(json["object"], "chat.completion");
    assert_eq!(json["model"], "gpt-3.5-turbo");
    assert_eq!(json["request"]["path"], "/openai");
    assert_eq!(json["request"]["body"], SEED_BODY);
    assert_eq!(authz.count(), 0, "no policy, no check");
}

#[tokio::test]
async fn gateway_policy_denies_without_the_allow_header() {
    let backend = start_backend().await;
    let authz = MockAuthz::istio().await;
    let gw = start_gateway(&seed_config(backend, authz.addr, GATEWAY_POLICY)).await;

    let resp = send(seed_post(gw, "/openai", &[])).await;

    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert_eq!(resp.text(), DENY_BODY);
    assert_eq!(resp.body.len(), 76);
    assert_eq!(resp.headers["x-ext-authz-check-result"], "denied");
    assert_eq!(resp.headers["content-type"], "text/plain");
    assert_eq!(resp.headers["content-length"], "76");
    assert_eq!(authz.count(), 1);
}

#[tokio::test]
async fn gateway_policy_allows_with_the_allow_header() {
    let backend = start_backend().await;
    let authz = MockAuthz::istio().await;
    let gw = start_gateway(&seed_config(backend, authz.addr, GATEWAY_POLICY)).await;

    let resp = send(seed_post(
        gw,
        "/openai",
        &[
            ("x-ext-authz", "allow"),
            (
                "x-ai-api-key",
                "N2YwMDIxZTEtNGUzNS1jNzgzLTRkYjAtYjE2YzRkZGVmNjcy",
            ),
        ],
    ))
    .await;

    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(
        resp.backend_saw("x-ext-authz-check-result").as_deref(),
        Some("allowed")
    );
    assert_eq!(
        resp.backend_saw("x-ext-authz-additional-header-override")
            .as_deref(),
        Some("grpc-additional-header-override-value")
    );
    assert_eq!(
        resp.backend_saw("x-ai-api-key").as_deref(),
        Some("N2YwMDIxZTEtNGUzNS1jNzgzLTRkYjAtYjE2YzRkZGVmNjcy")
    );
    assert_eq!(resp.json()["request"]["body"], SEED_BODY);
}

#[tokio::test]
async fn route_level_policy_only_guards_its_route() {
    let backend = start_backend().await;
    let authz = MockAuthz::istio().await;
    let extra = r#"
[[routes]]
name = "public"
path = { prefix = "/public" }
backend = "openai"

[[policies]]
name = "route-ext-auth-policy"
target_refs = [{ kind = "HTTPRoute", name = "openai" }]
ext_auth = { backend = "authz", grpc = {} }
"#;
    let gw = start_gateway(&seed_config(backend, authz.addr, extra)).await;

    let denied = send(seed_post(gw, "/openai", &[])).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.text(), DENY_BODY);

    let public = send(seed_post(gw, "/public", &[])).await;
    assert_eq!(public.status, StatusCode::OK);
    assert_eq!(authz.count(), 1, "the public route is not checked");

    let allowed = send(seed_post(gw, "/openai", &[("x-ext-authz", "allow")])).await;
    assert_eq!(allowed.status, StatusCode::OK);
    assert_eq!(
        allowed.backend_saw("x-ext-authz-check-result").as_deref(),
        Some("allowed")
    );
}

#[tokio::test]
async fn both_levels_must_allow_gateway_first() {
    let backend = start_backend().await;
    let gateway_authz = MockAuthz::istio().await;
    // The route-level server allows only requests that carry `x-route-ok: yes`.
    let route_authz = MockAuthz::start(|req| {
        let h = &http_of(req).headers;
        if h.get("x-route-ok").map(String::as_str) == Some("yes") {
            Reply::Respond(ok(extauthz_proto::v3::OkHttpResponse {
                headers: vec![header("x-route-check", "passed", None)],
                ..Default::default()
            }))
        } else {
            Reply::Respond(deny(7, 401, vec![], "route says no"))
        }
    })
    .await;
    let extra = format!(
        r#"
[[authz_backends]]
name = "route-authz"
url = "http://{}"
{GATEWAY_POLICY}
[[policies]]
name = "route-policy"
target_refs = [{{ kind = "HTTPRoute", name = "openai" }}]
ext_auth = {{ backend = "route-authz", grpc = {{}} }}
"#,
        route_authz.addr
    );
    let gw = start_gateway(&seed_config(backend, gateway_authz.addr, &extra)).await;

    // Gateway denies: the route-level server is never asked.
    let resp = send(seed_post(gw, "/openai", &[("x-route-ok", "yes")])).await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert_eq!(resp.text(), DENY_BODY);
    assert_eq!((gateway_authz.count(), route_authz.count()), (1, 0));

    // Gateway allows, route denies.
    let resp = send(seed_post(gw, "/openai", &[("x-ext-authz", "allow")])).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.text(), "route says no");
    assert_eq!((gateway_authz.count(), route_authz.count()), (2, 1));
    // The route-level check sees the gateway-level server's header mutations.
    assert_eq!(
        route_authz
            .last_http()
            .headers
            .get("x-ext-authz-check-result")
            .map(String::as_str),
        Some("allowed")
    );

    // Both allow: both sets of headers reach the backend.
    let resp = send(seed_post(
        gw,
        "/openai",
        &[("x-ext-authz", "allow"), ("x-route-ok", "yes")],
    ))
    .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(
        resp.backend_saw("x-ext-authz-check-result").as_deref(),
        Some("allowed")
    );
    assert_eq!(resp.backend_saw("x-route-check").as_deref(), Some("passed"));
}

#[tokio::test]
async fn a_route_can_opt_out_of_the_gateway_policy() {
    let backend = start_backend().await;
    let authz = MockAuthz::istio().await;
    let extra = format!(
        r#"
[[routes]]
name = "health"
path = {{ exact = "/healthz" }}
backend = "openai"
{GATEWAY_POLICY}
[[policies]]
name = "health-no-auth"
target_refs = [{{ kind = "HTTPRoute", name = "health" }}]
ext_auth = {{ disabled = true }}
"#
    );
    let gw = start_gateway(&seed_config(backend, authz.addr, &extra)).await;

    let health = send(get(gw, "/healthz", &[])).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(authz.count(), 0);

    let guarded = send(seed_post(gw, "/openai", &[])).await;
    assert_eq!(guarded.status, StatusCode::FORBIDDEN);
    assert_eq!(authz.count(), 1);
}

#[tokio::test]
async fn the_shipped_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/gateway.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let config = gateway::Config::from_toml(&text, "config/gateway.toml").unwrap();
    assert_eq!(config.listeners.len(), 1);
    assert_eq!(config.listeners[0].address.to_string(), "0.0.0.0:8080");
    assert_eq!(config.listeners[0].policies.len(), 1);
    let route = config.routes.iter().next().unwrap();
    assert_eq!(route.name, "openai");
    assert_eq!(
        route.backend.endpoints[0].authority.as_str(),
        "127.0.0.1:9100"
    );
    assert_eq!(
        config.listeners[0].policies[0].backend.authority.as_str(),
        "127.0.0.1:9000"
    );
}
