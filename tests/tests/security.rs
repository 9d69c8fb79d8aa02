//! The security suite: the real gateway in front of the real authz-server (gRPC), with the
//! README's example policy (deny `path prefix /admin/` except to admins from inside, allow the
//! rest) plus a host-based deny, in front of a backend that normalises the way common servers
//! do. Every spelling of a denied request must be denied (or refused with 400) — never served —
//! and an allowed spelling must reach the backend in its canonical form.
//!
//! Requests are written on raw TCP: client libraries tidy some spellings themselves.

use std::net::SocketAddr;

use e2e::security::{NormalisingBackend, raw_request, start_gateway};
use e2e::start_with;

/// The README's example rules, with a host-based deny in front.
const POLICY: &str = r#"
[default]
deny = { status = 403, body = "no rule matched" }

[[rules]]
name = "admin-host"
[rules.when]
host = { exact = "admin.example.com" }
[rules.deny]
status = 403
body = "admin host denied"

[[rules]]
name = "internal-admins"
[rules.when]
path = { prefix = "/admin/" }
source_ip = ["10.0.0.0/8"]
headers = [{ name = "x-role", exact = "admin" }]
[rules.allow]
request_headers = [{ name = "x-authz-rule", value = "{{rule.name}}" }]
remove_request_headers = ["x-role"]

[[rules]]
name = "admin-elsewhere"
[rules.when]
path = { prefix = "/admin/" }
[rules.deny]
status = 401
grpc_code = "UNAUTHENTICATED"
headers = [{ name = "www-authenticate", value = "Bearer" }]
body = "admins only, from inside"

[[rules]]
name = "everyone-else"
[rules.allow]
"#;

/// What a spelling must come to.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// The path rule denies: 401 with its body.
    PathDenied,
    /// The host rule denies: 403 with its body.
    HostDenied,
    /// Refused by the gateway before any check: 400 with this reason.
    Refused(&'static str),
    /// Served: the backend receives exactly this target and host.
    Served {
        target: &'static str,
        host: &'static str,
    },
}

struct Setup {
    backend: NormalisingBackend,
    /// The listener with the defaults (no trusted hops).
    edge: SocketAddr,
    /// A listener that trusts one proxy in front of it.
    behind_proxy: SocketAddr,
    /// A listener with `strip_any_host_port = true`.
    any_port: SocketAddr,
    /// A listener with `path_parameters = "strip"`.
    strip_params: SocketAddr,
    _authz: e2e::RunningServer,
}

async fn setup() -> Setup {
    let authz = start_with(POLICY).await;
    let backend = NormalisingBackend::start().await;
    let listeners = start_gateway(&format!(
        r#"
[[listeners]]
name = "edge"
address = "127.0.0.1:0"

[[listeners]]
name = "behind-proxy"
address = "127.0.0.1:0"
xff_num_trusted_hops = 1

[[listeners]]
name = "any-port"
address = "127.0.0.1:0"
strip_any_host_port = true

[[listeners]]
name = "strip-params"
address = "127.0.0.1:0"
path_parameters = "strip"

[[backends]]
name = "app"
url = "http://{}"

[[routes]]
name = "all"
backend = "app"

[[authz_backends]]
name = "authz-server"
url = "http://{}"

[[policies]]
name = "readme-policy"
target_refs = [
  {{ kind = "Gateway", name = "edge" }},
  {{ kind = "Gateway", name = "behind-proxy" }},
  {{ kind = "Gateway", name = "any-port" }},
  {{ kind = "Gateway", name = "strip-params" }},
]
ext_auth = {{ backend = "authz-server", grpc = {{}} }}
"#,
        backend.addr, authz.grpc
    ))
    .await;
    let find = |name: &str| {
        listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .expect("listener bound")
    };
    Setup {
        edge: find("edge"),
        behind_proxy: find("behind-proxy"),
        any_port: find("any-port"),
        strip_params: find("strip-params"),
        backend,
        _authz: authz,
    }
}

fn get(target: &str, host: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: {host}")
}

/// Sends each case and checks it against what it must come to; a denied or refused case must
/// not reach the backend at all.
async fn check(setup: &Setup, listener: SocketAddr, cases: &[(&str, String, Want)]) {
    for (class, head, want) in cases {
        let before = setup.backend.seen().len();
        let reply = raw_request(listener, head).await;
        let seen = setup.backend.seen();
        match want {
            Want::PathDenied => {
                assert_eq!(
                    (reply.status, reply.body.as_str()),
                    (401, "admins only, from inside"),
                    "{class}: {head:?}"
                );
            }
            Want::HostDenied => {
                assert_eq!(
                    (reply.status, reply.body.as_str()),
                    (403, "admin host denied"),
                    "{class}: {head:?}"
                );
            }
            Want::Refused(reason) => {
                assert_eq!(
                    (reply.status, reply.body.as_str()),
                    (400, *reason),
                    "{class}: {head:?}"
                );
            }
            Want::Served { target, host } => {
                assert_eq!(reply.status, 200, "{class}: {head:?}: {}", reply.body);
                assert_eq!(seen.len(), before + 1, "{class}: one request upstream");
                let last = seen.last().expect("the backend saw it");
                assert_eq!(
                    (last.target.as_str(), last.host.as_str()),
                    (*target, *host),
                    "{class}: {head:?}"
                );
                continue;
            }
        }
        assert_eq!(seen.len(), before, "{class}: reached the backend: {head:?}");
    }
}

#[tokio::test]
async fn every_spelling_of_a_denied_path_is_denied_and_never_served() {
    let s = setup().await;
    let p = "p.example.com";
    let escaped = Want::Refused("escaped slash or backslash in path");
    let params = Want::Refused("path parameter (`;`) in path");
    let cases = [
        ("as written", get("/admin/x", p), Want::PathDenied),
        (
            "dot segments",
            get("/public/../admin/x", p),
            Want::PathDenied,
        ),
        ("dot segment", get("/./admin/x", p), Want::PathDenied),
        ("above the root", get("/../../admin/x", p), Want::PathDenied),
        (
            "doubled leading slash",
            get("//admin/x", p),
            Want::PathDenied,
        ),
        ("doubled inner slash", get("/admin//x", p), Want::PathDenied),
        ("encoded unreserved", get("/%61dmin/x", p), Want::PathDenied),
        (
            "encoded dots",
            get("/public/%2e%2e/admin/x", p),
            Want::PathDenied,
        ),
        (
            "encoded dot, mixed",
            get("/%2E./admin/", p),
            Want::PathDenied,
        ),
        ("encoded slash", get("/admin%2Fx", p), escaped),
        (
            "encoded slash, lower",
            get("/public/..%2fadmin/x", p),
            escaped,
        ),
        ("encoded backslash", get("/admin%5Cx", p), escaped),
        (
            "encoded backslash, lower",
            get("/public/..%5cadmin/x", p),
            escaped,
        ),
        ("raw backslash", get("/public\\..\\admin/x", p), escaped),
        (
            "invalid escape",
            get("/admin%zz", p),
            Want::Refused("invalid percent-encoding in path"),
        ),
        (
            "encoded NUL",
            get("/admin/%00", p),
            Want::Refused("control character in request target"),
        ),
        // Tomcat, Jetty and Spring drop `;params` from each segment: all three are /admin/x.
        ("path parameter", get("/admin;foo/x", p), params),
        ("empty path parameter", get("/admin;/x", p), params),
        ("dot-dot parameter", get("/x/..;/admin/x", p), params),
    ];
    check(&s, s.edge, &cases).await;
}

#[tokio::test]
async fn with_path_parameters_strip_each_segment_loses_its_parameters() {
    let s = setup().await;
    let p = "p.example.com";
    let cases = [
        ("path parameter", get("/admin;foo/x", p), Want::PathDenied),
        (
            "empty path parameter",
            get("/admin;/x", p),
            Want::PathDenied,
        ),
        (
            "dot-dot parameter",
            get("/x/..;/admin/x", p),
            Want::PathDenied,
        ),
        (
            "allowed, parameters dropped",
            get("/public;v=1/x;jsessionid=abc", p),
            Want::Served {
                target: "/public/x",
                host: p,
            },
        ),
    ];
    check(&s, s.strip_params, &cases).await;
}

#[tokio::test]
async fn every_spelling_of_a_denied_host_is_denied_and_never_served() {
    let s = setup().await;
    let cases = [
        (
            "as written",
            get("/x", "admin.example.com"),
            Want::HostDenied,
        ),
        (
            "upper case",
            get("/x", "ADMIN.example.com"),
            Want::HostDenied,
        ),
        (
            "default port",
            get("/x", "admin.example.com:80"),
            Want::HostDenied,
        ),
        (
            "trailing dot",
            get("/x", "admin.example.com."),
            Want::HostDenied,
        ),
        (
            "all of them",
            get("/x", "Admin.EXAMPLE.com.:80"),
            Want::HostDenied,
        ),
        (
            // The check sees `admin.example.com:8080`; the rule engine's host matcher compares
            // the name only, as a backend choosing its virtual host does.
            "another port",
            get("/x", "admin.example.com:8080"),
            Want::HostDenied,
        ),
        (
            "absolute-form authority over another Host",
            get("http://admin.example.com/x", "p.example.com"),
            Want::HostDenied,
        ),
        (
            "absolute-form with a denied path",
            get("http://p.example.com/public/../admin/x", "p.example.com"),
            Want::PathDenied,
        ),
        (
            "Connection naming host",
            "GET /x HTTP/1.1\r\nHost: admin.example.com\r\nConnection: close, host".to_owned(),
            Want::HostDenied,
        ),
        (
            "two Host headers",
            "GET /x HTTP/1.1\r\nHost: p.example.com\r\nHost: admin.example.com".to_owned(),
            Want::Refused("more than one host header"),
        ),
        (
            "no Host",
            "GET /x HTTP/1.1".to_owned(),
            Want::Refused("missing host"),
        ),
        (
            "userinfo in Host",
            get("/x", "p.example.com@admin.example.com"),
            Want::Refused("invalid host"),
        ),
    ];
    check(&s, s.edge, &cases).await;
}

#[tokio::test]
async fn allowed_spellings_reach_the_backend_in_canonical_form() {
    let s = setup().await;
    let p = "p.example.com";
    let served = |target, host| Want::Served { target, host };
    let cases = [
        ("as written", get("/public/x", p), served("/public/x", p)),
        ("dot segment", get("/public/./x", p), served("/public/x", p)),
        (
            "doubled slashes",
            get("//public//x", p),
            served("/public/x", p),
        ),
        (
            "encoded unreserved",
            get("/%70ublic/x", p),
            served("/public/x", p),
        ),
        (
            "encoded dots",
            get("/public/a/%2e%2e/x", p),
            served("/public/x", p),
        ),
        (
            "out of /admin/ again",
            get("/admin/../public/x", p),
            served("/public/x", p),
        ),
        (
            "escapes upper-cased, reserved kept",
            get("/public/%7e%3b", p),
            served("/public/~%3B", p),
        ),
        (
            "query as sent",
            get("/public/x?q=%2F..&a", p),
            served("/public/x?q=%2F..&a", p),
        ),
        (
            "host case, port, dot",
            get("/public/x", "P.Example.COM.:80"),
            served("/public/x", p),
        ),
        (
            "absolute-form authority replaces Host",
            get("http://p.example.com/public/x", "admin.example.com"),
            served("/public/x", p),
        ),
    ];
    check(&s, s.edge, &cases).await;
}

#[tokio::test]
async fn a_header_named_by_connection_reaches_neither_the_check_nor_the_backend() {
    let s = setup().await;
    // x-role is what the admin rule reads; named by Connection it is gone before the check,
    // and the backend does not get it either.
    let reply = raw_request(
        s.edge,
        "GET /public/x HTTP/1.1\r\nHost: p.example.com\r\nx-role: admin\r\nConnection: close, x-role",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let seen = s.backend.seen();
    let last = seen.last().expect("served");
    assert!(
        !last.header_names.contains(&"x-role".to_owned()),
        "{last:?}"
    );
    // Naming x-forwarded-for removes only the client's: the gateway writes its own after.
    assert_eq!(last.forwarded_for.as_deref(), Some("127.0.0.1"));
}

#[tokio::test]
async fn headers_and_methods_a_backend_reads_differently_never_reach_it() {
    let s = setup().await;
    let refused_underscore = Want::Refused("header name with an underscore");
    let refused_method = Want::Refused("method differs from a standard one only by case");
    // `x_role` is `HTTP_X_ROLE` to a CGI/WSGI backend, the same as `x-role`, which the
    // admin rule reads and removes; a method in another case is `DELETE` to Django and Flask.
    let cases = [
        (
            "x_role on an admin path",
            "GET /admin/x HTTP/1.1\r\nHost: p.example.com\r\nx_role: admin".to_owned(),
            refused_underscore,
        ),
        (
            "x_role on an allowed path",
            "GET /public/x HTTP/1.1\r\nHost: p.example.com\r\nX_Role: admin".to_owned(),
            refused_underscore,
        ),
        (
            "delete",
            "delete /public/x HTTP/1.1\r\nHost: p.example.com".to_owned(),
            refused_method,
        ),
        (
            "Get",
            "Get /admin/x HTTP/1.1\r\nHost: p.example.com".to_owned(),
            refused_method,
        ),
    ];
    check(&s, s.edge, &cases).await;

    // A client's description of the request it made (host, port, prefix, original URL) is
    // dropped at the edge: a ProxyFix-style backend cannot be told it was asked for another host.
    let reply = raw_request(
        s.edge,
        "GET /public/x HTTP/1.1\r\nHost: p.example.com\r\nx-forwarded-host: admin.example.com\r\n\
         x-forwarded-port: 8443\r\nx-forwarded-prefix: /admin\r\nx-original-url: /admin/x",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let last = s.backend.seen().pop().expect("served");
    for name in [
        "x-forwarded-host",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-original-url",
    ] {
        assert!(
            !last.header_names.contains(&name.to_owned()),
            "{name}: {last:?}"
        );
    }
}

#[tokio::test]
async fn a_spoofed_x_forwarded_for_does_not_satisfy_a_source_ip_rule() {
    let s = setup().await;
    let admin = |xff: &str| {
        format!(
            "GET /admin/x HTTP/1.1\r\nHost: p.example.com\r\nx-role: admin\r\nx-forwarded-for: {xff}"
        )
    };
    // At the edge (no trusted hops) the client's x-forwarded-for is replaced: the check's
    // source is the TCP peer, 127.0.0.1, outside 10.0.0.0/8.
    check(
        &s,
        s.edge,
        &[
            (
                "spoofed inside address",
                admin("10.0.0.1"),
                Want::PathDenied,
            ),
            (
                "spoofed chain",
                admin("10.0.0.1, 10.0.0.2"),
                Want::PathDenied,
            ),
        ],
    )
    .await;
    // Behind one trusted proxy, the address it appended counts — and only that one.
    check(
        &s,
        s.behind_proxy,
        &[
            (
                "a client spoofing in front of the trusted proxy",
                admin("10.0.0.1, 192.0.2.1"),
                Want::PathDenied,
            ),
            (
                "the trusted proxy vouches for an inside client",
                admin("10.0.0.1"),
                Want::Served {
                    target: "/admin/x",
                    host: "p.example.com",
                },
            ),
        ],
    )
    .await;
    let last = s.backend.seen().pop().expect("served");
    assert!(
        last.header_names.contains(&"x-authz-rule".to_owned()),
        "{last:?}"
    );
    assert!(
        !last.header_names.contains(&"x-role".to_owned()),
        "{last:?}"
    );
    assert_eq!(last.forwarded_for.as_deref(), Some("10.0.0.1, 127.0.0.1"));
}

#[tokio::test]
async fn with_strip_any_host_port_a_host_on_another_port_is_the_same_host() {
    let s = setup().await;
    // By default only the scheme's port is stripped: `admin.example.com:8080` is checked as
    // written (the rule engine still matches the name); a listener that strips any port sends
    // the check and the backend the bare name.
    check(
        &s,
        s.any_port,
        &[
            (
                "another port",
                get("/x", "admin.example.com:8080"),
                Want::HostDenied,
            ),
            (
                "another port, allowed host",
                get("/public/x", "P.example.com:8443"),
                Want::Served {
                    target: "/public/x",
                    host: "p.example.com",
                },
            ),
        ],
    )
    .await;
}
