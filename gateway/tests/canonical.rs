//! The gateway alone makes the request canonical: a naive authorization server (plain string
//! comparisons, no normalisation of its own) still denies every spelling of a denied path or
//! host, because it is only ever asked about the canonical one — and the backend receives
//! exactly what was checked. Raw TCP writes, since HTTP clients tidy some spellings themselves.

mod support;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use support::raw::*;
use support::*;

const NAIVE_DENY: &str = "naive deny";

/// An authorization server that compares raw strings: denies a `:path` starting with `/admin/`
/// and the host `admin.example.com`, allows the rest.
async fn naive_authz() -> MockAuthz {
    MockAuthz::start(|req| {
        let http = http_of(req);
        let denied = http.path.starts_with("/admin/") || http.host == "admin.example.com";
        Reply::Respond(if denied {
            deny(7, 403, vec![], NAIVE_DENY)
        } else {
            ok(Default::default())
        })
    })
    .await
}

fn get(target: &str, host: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: {host}")
}

#[tokio::test]
async fn every_spelling_of_a_denied_request_is_checked_as_the_canonical_one() {
    let authz = naive_authz().await;
    let gw = checked_gateway(start_backend().await, authz.addr, "").await;
    let cases: &[(&str, &str)] = &[
        ("dot segments", &get("/public/../admin/x", "p.example.com")),
        ("dot segment at root", &get("/./admin/x", "p.example.com")),
        ("above the root", &get("/../../admin/x", "p.example.com")),
        ("doubled leading slash", &get("//admin/x", "p.example.com")),
        ("doubled inner slash", &get("/admin//x", "p.example.com")),
        ("encoded unreserved", &get("/%61dmin/x", "p.example.com")),
        (
            "encoded dots",
            &get("/public/%2e%2e/admin/x", "p.example.com"),
        ),
        (
            "encoded dot, upper case",
            &get("/%2E./admin/", "p.example.com"),
        ),
        ("host case", &get("/x", "ADMIN.example.com")),
        ("host default port", &get("/x", "admin.example.com:80")),
        ("host trailing dot", &get("/x", "admin.example.com.")),
        (
            "absolute-form authority over Host",
            &get("http://admin.example.com/x", "p.example.com"),
        ),
        (
            "absolute-form https authority on a plaintext listener",
            &get("https://admin.example.com:443/x", "p.example.com"),
        ),
        (
            "absolute-form path",
            &get("http://p.example.com/public/../admin/x", "p.example.com"),
        ),
        (
            "Connection naming host",
            "GET /x HTTP/1.1\r\nHost: admin.example.com\r\nConnection: close, host",
        ),
    ];
    for (class, head) in cases {
        let r = raw(gw, head).await;
        assert_eq!((r.status, r.body.as_str()), (403, NAIVE_DENY), "{class}");
    }
    assert_eq!(authz.count(), cases.len());
}

#[tokio::test]
async fn spellings_without_one_meaning_are_400_and_never_checked() {
    let authz = naive_authz().await;
    let gw = checked_gateway(start_backend().await, authz.addr, "").await;
    let cases: &[(&str, &str, &str)] = &[
        (
            "encoded slash",
            &get("/admin%2Fx", "p.example.com"),
            "escaped slash or backslash in path",
        ),
        (
            "encoded slash, lower case",
            &get("/public/..%2fadmin/x", "p.example.com"),
            "escaped slash or backslash in path",
        ),
        (
            "encoded backslash",
            &get("/admin%5Cx", "p.example.com"),
            "escaped slash or backslash in path",
        ),
        (
            "raw backslash",
            &get("/public\\..\\admin/x", "p.example.com"),
            "escaped slash or backslash in path",
        ),
        (
            "invalid escape",
            &get("/admin%zz", "p.example.com"),
            "invalid percent-encoding in path",
        ),
        (
            "encoded NUL",
            &get("/admin%00/x", "p.example.com"),
            "control character in request target",
        ),
        (
            "asterisk on GET",
            &get("*", "p.example.com"),
            "request target is not origin-form",
        ),
        (
            "two Host headers",
            "GET /x HTTP/1.1\r\nHost: p.example.com\r\nHost: admin.example.com",
            "more than one host header",
        ),
        ("no Host", "GET /x HTTP/1.1", "missing host"),
        (
            "authority-form",
            "CONNECT admin.example.com:443 HTTP/1.1\r\nHost: admin.example.com:443",
            "request target is not origin-form",
        ),
        ("empty Host", &get("/x", ""), "missing host"),
        (
            "invalid Host",
            &get("/x", "admin.example.com@p"),
            "invalid host",
        ),
        (
            "absolute-form with another scheme",
            &get("ftp://admin.example.com/x", "p.example.com"),
            "request target scheme is not http or https",
        ),
    ];
    for (class, head, reason) in cases {
        let r = raw(gw, head).await;
        assert_eq!((r.status, r.body.as_str()), (400, *reason), "{class}");
    }
    assert_eq!(authz.count(), 0, "no check is sent for a refused request");
}

#[tokio::test]
async fn the_backend_receives_exactly_what_was_checked() {
    let authz = naive_authz().await;
    let gw = checked_gateway(start_backend().await, authz.addr, "").await;
    let cases: &[(&str, &str, &str)] = &[
        (&get("/public/./x", "p.example.com"), "/public/x", ""),
        (&get("//public//x", "p.example.com"), "/public/x", ""),
        (&get("/%70ublic/x", "p.example.com"), "/public/x", ""),
        (&get("/public/a/%2e%2e/x", "p.example.com"), "/public/x", ""),
        (&get("/admin/../public/x", "p.example.com"), "/public/x", ""),
        (&get("/public/%7e%3b", "p.example.com"), "/public/~%3B", ""),
        (
            &get("/public/x?q=%2F..&a", "p.example.com"),
            "/public/x",
            "q=%2F..&a",
        ),
        (&get("/x", "P.Example.COM.:80"), "/x", ""),
        // The HTTP parser (the `http` crate) cuts a fragment off before the gateway sees the
        // target: what is left is checked and forwarded, the rest never reaches anyone.
        (&get("/public#/../admin/x", "p.example.com"), "/public", ""),
        (
            &get("http://P.example.com/public/../x", "admin.example.com"),
            "/x",
            "",
        ),
    ];
    for (head, path, query) in cases {
        let r = raw(gw, head).await;
        assert_eq!(r.status, 200, "{head}: {}", r.body);
        let echo = r.json();
        assert_eq!(echo["request"]["path"], *path, "{head}");
        assert_eq!(echo["request"]["query"], *query, "{head}");
        assert_eq!(
            echo["request"]["headers"]["host"], "p.example.com",
            "{head}"
        );
        let checked = authz.last_http();
        let target = if query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{query}")
        };
        assert_eq!(checked.path, target, "{head}");
        assert_eq!(checked.host, "p.example.com", "{head}");
        assert_eq!(checked.headers[":path"], target, "{head}");
        assert_eq!(checked.headers[":authority"], "p.example.com", "{head}");
        assert_eq!(checked.headers["host"], "p.example.com", "{head}");
    }
}

#[tokio::test]
async fn headers_named_by_connection_are_gone_for_the_check_and_the_backend_alike() {
    let authz = MockAuthz::istio().await;
    let gw = checked_gateway(start_backend().await, authz.addr, "").await;
    // The header the check allows on is removed before the check: denied.
    let r = raw(
        gw,
        "GET /x HTTP/1.1\r\nHost: p.example.com\r\nx-ext-authz: allow\r\nConnection: close, x-ext-authz",
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (403, DENY_BODY));
    assert!(!authz.last_http().headers.contains_key("x-ext-authz"));

    // An end-to-end header named by Connection reaches neither the check nor the backend;
    // x-forwarded-for is the gateway's own, written after the removal.
    let r = raw(
        gw,
        "GET /x HTTP/1.1\r\nHost: p.example.com\r\nx-ext-authz: allow\r\nx-tenant: a\r\nx-forwarded-for: 10.0.0.1\r\nConnection: close, x-tenant, x-forwarded-for, content-length",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let echo = r.json();
    let backend_headers = echo["request"]["headers"].as_object().unwrap();
    assert!(!backend_headers.contains_key("x-tenant"));
    assert!(!authz.last_http().headers.contains_key("x-tenant"));
    assert_eq!(backend_headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(authz.last_http().headers["x-forwarded-for"], "127.0.0.1");
}

#[tokio::test]
async fn the_listener_chooses_what_escaped_slashes_and_ports_become() {
    let authz = naive_authz().await;
    let backend = start_backend().await;
    let unescape = checked_gateway(
        backend,
        authz.addr,
        "path_with_escaped_slashes_action = \"unescape\"\nmerge_slashes = false\nstrip_any_host_port = true",
    )
    .await;
    for target in ["/admin%2Fx", "/public\\..\\admin/x", "/public/..%5Cadmin/x"] {
        let r = raw(unescape, &get(target, "p.example.com")).await;
        assert_eq!((r.status, r.body.as_str()), (403, NAIVE_DENY), "{target}");
    }
    let r = raw(unescape, &get("/x", "admin.example.com:8443")).await;
    assert_eq!((r.status, r.body.as_str()), (403, NAIVE_DENY));
    let r = raw(unescape, &get("/a//b%2Fc", "p.example.com:8443")).await;
    assert_eq!(r.json()["request"]["path"], "/a//b/c");
    assert_eq!(r.json()["request"]["headers"]["host"], "p.example.com");

    let keep = checked_gateway(
        backend,
        authz.addr,
        "path_with_escaped_slashes_action = \"keep\"",
    )
    .await;
    let r = raw(keep, &get("/public/a%2fb\\c", "p.example.com:8443")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["request"]["path"], "/public/a%2Fb%5Cc");
    assert_eq!(r.json()["request"]["headers"]["host"], "p.example.com:8443");
    assert_eq!(authz.last_http().path, "/public/a%2Fb%5Cc");
}

#[tokio::test]
async fn the_http_transport_asks_about_the_canonical_path_and_host() {
    let authz = MockHttpAuthz::start(|_| {
        Response::builder()
            .status(StatusCode::OK)
            .body(Full::new(Bytes::new()))
            .unwrap()
    })
    .await;
    let backend = start_backend().await;
    let config = format!(
        r#"
[[listeners]]
name = "gw"
address = "127.0.0.1:0"

[[backends]]
name = "b"
url = "http://{backend}"

[[routes]]
name = "all"
backend = "b"

[[authz_backends]]
name = "authz"
url = "http://{}"

[[policies]]
name = "p"
target_refs = [{{ kind = "Gateway", name = "gw" }}]
ext_auth = {{ backend = "authz", http = {{ path_prefix = "/check" }} }}
"#,
        authz.addr
    );
    let gw = start_gateway(&config).await;
    let r = raw(
        gw,
        &get("/public/%2e%2e//%61dmin/x?k=v", "Admin.Example.com.:80"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["request"]["path"], "/admin/x");
    let seen = &authz.requests()[0];
    assert_eq!(seen.uri, "/check/admin/x?k=v");
    assert_eq!(seen.headers["host"], "admin.example.com");
}

#[tokio::test]
async fn a_route_prefix_rewrite_works_on_the_canonical_path() {
    let authz = naive_authz().await;
    let backend = start_backend().await;
    let config = format!(
        r#"
[[listeners]]
name = "gw"
address = "127.0.0.1:0"

[[backends]]
name = "b"
url = "http://{backend}"

[[routes]]
name = "api"
path = {{ prefix = "/api" }}
rewrite_prefix = "/v1"
backend = "b"

[[authz_backends]]
name = "authz"
url = "http://{}"
{GATEWAY_POLICY}
"#,
        authz.addr
    );
    let gw = start_gateway(&config).await;
    let r = raw(gw, &get("/x/../%61pi//chat?q=1", "p.example.com")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["request"]["path"], "/v1/chat");
    assert_eq!(r.json()["request"]["query"], "q=1");
    assert_eq!(authz.last_http().path, "/api/chat?q=1");
}

#[test]
fn an_unknown_escaped_slashes_action_is_refused_with_its_place() {
    let err = gateway::Config::from_toml(
        "[[listeners]]\nname = \"gw\"\naddress = \"127.0.0.1:0\"\npath_with_escaped_slashes_action = \"decode\"\n",
        "gw.toml",
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "gw.toml:4:36: unknown variant `decode`, expected one of `keep`, `reject`, `unescape`"
    );
}
