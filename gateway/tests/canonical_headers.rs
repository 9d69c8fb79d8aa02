//! Headers a backend may trust, and methods it may upper-case: what the gateway lets a client
//! send, and that the check always sees what the backend gets (issue 19 item 4). Raw TCP
//! writes, since HTTP clients refuse or tidy some of these spellings themselves.

mod support;

use std::net::SocketAddr;

use support::raw::*;
use support::*;

/// A gateway with one listener (`listener_keys` added to it) in front of the demo backend, every
/// request checked by `authz`.
async fn gateway(authz: SocketAddr, listener_keys: &str) -> SocketAddr {
    checked_gateway(start_backend().await, authz, listener_keys).await
}

/// Headers in which a client describes the request it made through proxies (host, port, scheme,
/// path prefix, original URL): frameworks behind a proxy (Werkzeug's ProxyFix, Spring's
/// ForwardedHeaderFilter, Rails, Tomcat's RemoteIpValve, Symfony) build URLs and decisions on them.
const FORWARDING: &str = "x-forwarded-host: admin.example.com\r\nx-forwarded-port: 443\r\n\
x-forwarded-prefix: /admin\r\nx-forwarded-ssl: on\r\nx-forwarded-scheme: https\r\n\
x-original-url: /admin/x\r\nx-rewrite-url: /admin/x\r\nforwarded: host=admin.example.com\r\n\
x-real-ip: 10.0.0.1";

const FORWARDING_NAMES: [&str; 9] = [
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "x-original-url",
    "x-rewrite-url",
    "forwarded",
    "x-real-ip",
];

#[tokio::test]
async fn a_clients_forwarding_headers_reach_neither_the_check_nor_the_backend() {
    let authz = MockAuthz::always(allow_all()).await;
    let gw = gateway(authz.addr, "").await;
    let r = raw(
        gw,
        &format!("GET /x HTTP/1.1\r\nHost: p.example.com\r\n{FORWARDING}"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let echo = r.json();
    let checked = authz.last_http();
    for name in FORWARDING_NAMES {
        assert!(echo["request"]["headers"].get(name).is_none(), "{name}");
        assert!(!checked.headers.contains_key(name), "{name}");
    }

    // Behind a trusted proxy they are that proxy's and are kept, for both alike.
    let trusted = gateway(authz.addr, "xff_num_trusted_hops = 1").await;
    let r = raw(
        trusted,
        &format!("GET /x HTTP/1.1\r\nHost: p.example.com\r\n{FORWARDING}"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let echo = r.json();
    let checked = authz.last_http();
    assert_eq!(
        echo["request"]["headers"]["x-forwarded-host"],
        "admin.example.com"
    );
    assert_eq!(checked.headers["x-forwarded-host"], "admin.example.com");
    assert_eq!(echo["request"]["headers"]["x-forwarded-prefix"], "/admin");
}

const UNDERSCORED: &str = "GET /x HTTP/1.1\r\nHost: p.example.com\r\nx_role: admin\r\nx-tenant: a";

#[tokio::test]
async fn a_header_name_with_an_underscore_is_refused_by_default() {
    let authz = MockAuthz::always(allow_all()).await;
    let gw = gateway(authz.addr, "").await;
    let r = raw(gw, UNDERSCORED).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (400, "header name with an underscore")
    );
    let r = raw(
        gw,
        "GET /x HTTP/1.1\r\nHost: p.example.com\r\nX_Forwarded_For: 10.0.0.1",
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(authz.count(), 0, "no check is sent for a refused request");

    let explicit = gateway(
        authz.addr,
        "headers_with_underscores_action = \"reject_request\"",
    )
    .await;
    assert_eq!(raw(explicit, UNDERSCORED).await.status, 400);
}

#[tokio::test]
async fn drop_header_removes_it_for_the_check_and_the_backend_alike() {
    let authz = MockAuthz::always(allow_all()).await;
    let gw = gateway(
        authz.addr,
        "headers_with_underscores_action = \"drop_header\"",
    )
    .await;
    let r = raw(gw, UNDERSCORED).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let echo = r.json();
    assert!(echo["request"]["headers"].get("x_role").is_none());
    assert_eq!(echo["request"]["headers"]["x-tenant"], "a");
    let checked = authz.last_http();
    assert!(!checked.headers.contains_key("x_role"));
    assert_eq!(checked.headers["x-tenant"], "a");

    let allow = gateway(authz.addr, "headers_with_underscores_action = \"allow\"").await;
    let r = raw(allow, UNDERSCORED).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["request"]["headers"]["x_role"], "admin");
    assert_eq!(authz.last_http().headers["x_role"], "admin");
}

#[tokio::test]
async fn a_standard_method_in_another_case_is_refused_by_default() {
    let authz = MockAuthz::always(allow_all()).await;
    let gw = gateway(authz.addr, "").await;
    for method in ["delete", "Get", "pOST", "patch", "Options"] {
        let r = raw(
            gw,
            &format!("{method} /x HTTP/1.1\r\nHost: p.example.com\r\nContent-Length: 0"),
        )
        .await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (400, "method differs from a standard one only by case"),
            "{method}"
        );
    }
    assert_eq!(authz.count(), 0, "no check is sent for a refused request");
    // An extension method is the backend's business, in any case; standard ones pass.
    for method in ["DELETE", "PURGE", "purge"] {
        let r = raw(
            gw,
            &format!("{method} /x HTTP/1.1\r\nHost: p.example.com\r\nContent-Length: 0"),
        )
        .await;
        assert_eq!(r.status, 200, "{method}: {}", r.body);
        assert_eq!(r.json()["request"]["method"], method);
        assert_eq!(authz.last_http().method, method);
    }

    let keep = gateway(authz.addr, "method_case = \"keep\"").await;
    let r = raw(keep, "delete /x HTTP/1.1\r\nHost: p.example.com").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["request"]["method"], "delete");
    assert_eq!(authz.last_http().method, "delete");
}

#[test]
fn an_unknown_underscores_action_is_refused_with_its_place() {
    let err = gateway::Config::from_toml(
        "[[listeners]]\nname = \"gw\"\naddress = \"127.0.0.1:0\"\nheaders_with_underscores_action = \"drop\"\n",
        "gw.toml",
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "gw.toml:4:35: unknown variant `drop`, expected one of `allow`, `drop_header`, `reject_request`"
    );
}
