//! The spelling classes against `authz-server` alone, with un-normalised input exactly as a
//! proxy that does not normalise (Envoy's default) would send it, over gRPC v3 and HTTP mode:
//! every spelling of a denied path or host is denied, canonical spellings of allowed ones are
//! allowed, and a path with no canonical form takes the default decision.

mod support;

use support::{Answer, check_at, client, http_raw, start};

/// The README's example policy, with an explicit allow for the rest.
const POLICY: &str = r#"
[default]
deny = { status = 403, body = "no rule" }

[[rules]]
name = "admin-path"
when = { path = { prefix = "/admin/" } }
deny = { status = 403, body = "admin" }

[[rules]]
name = "admin-host"
when = { host = { exact = "admin.example.com" } }
deny = { status = 403, body = "admin host" }

[[rules]]
name = "rest"
allow = {}
"#;

/// What decided: the admin path rule, the admin host rule, the default (no canonical form),
/// or the allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    AdminPath,
    AdminHost,
    Default,
    Allowed,
}

/// Path spellings on an allowed host, and what must decide each.
const PATHS: &[(&str, Wanted)] = &[
    ("/admin/x", Wanted::AdminPath),
    ("/public/../admin/x", Wanted::AdminPath),
    ("/./admin/x", Wanted::AdminPath),
    ("//admin/x", Wanted::AdminPath),
    ("/admin//x", Wanted::AdminPath),
    ("/%61dmin/x", Wanted::AdminPath),
    ("/public/%2e%2e/admin/x", Wanted::AdminPath),
    ("/public/%2E%2E/admin/x?next=/public/", Wanted::AdminPath),
    ("/admin%2Fx", Wanted::Default),
    ("/admin%2fx", Wanted::Default),
    ("/admin%5Cx", Wanted::Default),
    ("/public/%zz", Wanted::Default),
    ("/public/%", Wanted::Default),
    ("/public/\u{1}x", Wanted::Default),
    ("/admin/x#frag", Wanted::Default),
    ("/public/x", Wanted::Allowed),
    ("/public//a/./b/../c?q=/admin/", Wanted::Allowed),
    ("/%70ublic/x", Wanted::Allowed),
];

/// Host spellings, on an allowed path.
const HOSTS: &[(&str, Wanted)] = &[
    ("admin.example.com", Wanted::AdminHost),
    ("ADMIN.example.com", Wanted::AdminHost),
    ("Admin.Example.COM", Wanted::AdminHost),
    ("admin.example.com:80", Wanted::AdminHost),
    ("admin.example.com:443", Wanted::AdminHost),
    ("admin.example.com.", Wanted::AdminHost),
    ("ADMIN.EXAMPLE.COM.:80", Wanted::AdminHost),
    ("admin.example.com@evil", Wanted::Default),
    ("api.example.com", Wanted::Allowed),
    ("admin.example.com:8443", Wanted::AdminHost),
];

fn decided(answer: &Answer) -> Option<Wanted> {
    match (answer.status, answer.code, answer.body.as_str()) {
        (403, 7, "admin") => Some(Wanted::AdminPath),
        (403, 7, "admin host") => Some(Wanted::AdminHost),
        (403, 7, "no rule") => Some(Wanted::Default),
        (200, 0, "") => Some(Wanted::Allowed),
        _ => None,
    }
}

#[tokio::test]
async fn every_spelling_over_grpc_is_decided_on_the_canonical_request() {
    let server = start(POLICY).await;
    let mut client = client(&server).await;
    let mut wrong = Vec::new();
    for (path, wanted) in PATHS {
        let answer = check_at(&mut client, "api.example.com", path, &[]).await;
        if decided(&answer) != Some(*wanted) {
            wrong.push(format!("path {path:?}: want {wanted:?}, got {answer:?}"));
        }
    }
    for (host, wanted) in HOSTS {
        let answer = check_at(&mut client, host, "/public/x", &[]).await;
        if decided(&answer) != Some(*wanted) {
            wrong.push(format!("host {host:?}: want {wanted:?}, got {answer:?}"));
        }
    }
    // A check without a path (a gRPC check about no HTTP request) stays empty, not an error.
    let answer = check_at(&mut client, "api.example.com", "", &[]).await;
    assert_eq!(decided(&answer), Some(Wanted::Allowed), "{answer:?}");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// One HTTP-mode exchange with `target` and `host` written raw; status and body.
async fn http_mode(server: &support::Running, target: &str, host: &str) -> (u16, String) {
    let request = format!("GET {target} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    let reply = http_raw(server.http, request.as_bytes()).await;
    let status = reply
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP reply: {reply:?}"));
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, body.to_owned())
}

/// Over HTTP mode some spellings never reach the rules: the HTTP parser refuses a request line
/// with a control character (400). Any other answer must be the decision wanted.
#[tokio::test]
async fn every_spelling_over_http_mode_is_decided_on_the_canonical_request() {
    let server = start(POLICY).await;
    let mut wrong = Vec::new();
    let expect = |wanted: Wanted| match wanted {
        Wanted::AdminPath => (403, "admin"),
        Wanted::AdminHost => (403, "admin host"),
        Wanted::Default => (403, "no rule"),
        Wanted::Allowed => (200, ""),
    };
    for (path, wanted) in PATHS {
        // The HTTP parser drops a fragment before the rules see the path, which leaves the
        // plain denied path.
        let wanted = match *path {
            "/admin/x#frag" => &Wanted::AdminPath,
            _ => wanted,
        };
        let (status, body) = http_mode(&server, path, "api.example.com").await;
        let refused_by_parser = status == 400 && *wanted == Wanted::Default;
        if (status, body.as_str()) != expect(*wanted) && !refused_by_parser {
            wrong.push(format!(
                "path {path:?}: want {wanted:?}, got {status} {body:?}"
            ));
        }
    }
    for (host, wanted) in HOSTS {
        let (status, body) = http_mode(&server, "/public/x", host).await;
        let refused_by_parser = status == 400 && *wanted == Wanted::Default;
        if (status, body.as_str()) != expect(*wanted) && !refused_by_parser {
            wrong.push(format!(
                "host {host:?}: want {wanted:?}, got {status} {body:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Envoy's `http_service.path_prefix` in front of the original path: declared in `[server]`, it
/// is removed before matching, and a request without it takes the default decision.
#[tokio::test]
async fn http_mode_strips_the_declared_path_prefix() {
    let server = start(&format!("[server]\npath_prefix = \"/authz\"\n{POLICY}")).await;
    for (target, wanted) in [
        ("/authz/public/x", (200, "")),
        ("/authz/public/../admin/x", (403, "admin")),
        ("/authz//admin/x", (403, "admin")),
        ("/admin/x", (403, "no rule")),
        ("/public/x", (403, "no rule")),
        ("/authzpublic/x", (403, "no rule")),
    ] {
        let (status, body) = http_mode(&server, target, "api.example.com").await;
        assert_eq!((status, body.as_str()), wanted, "{target}");
    }
    // gRPC checks carry the original path: nothing is stripped there.
    let mut client = client(&server).await;
    let answer = check_at(&mut client, "api.example.com", "/authz/public/x", &[]).await;
    assert_eq!(decided(&answer), Some(Wanted::Allowed), "{answer:?}");
}

/// `source_ip` over HTTP mode: the TCP peer (the proxy), unless it is a trusted proxy, in which
/// case the client comes from `x-forwarded-for`.
#[tokio::test]
async fn http_mode_takes_the_client_from_x_forwarded_for_only_via_trusted_proxies() {
    let policy = r#"
[default]
deny = { status = 403, body = "no rule" }

[[rules]]
name = "office"
when = { source_ip = "203.0.113.0/24" }
allow = {}
"#;
    let request =
        |xff: &str| format!("GET /x HTTP/1.1\r\nhost: a\r\n{xff}connection: close\r\n\r\n");
    let trusted = start(&format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n{policy}"
    ))
    .await;
    let untrusted = start(&format!(
        "[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\n{policy}"
    ))
    .await;
    let plain = start(policy).await;
    for (server, xff, wanted) in [
        (&trusted, "x-forwarded-for: 203.0.113.9\r\n", "200"),
        (
            &trusted,
            "x-forwarded-for: 203.0.113.9, 127.0.0.1\r\n",
            "200",
        ),
        (
            &trusted,
            "x-forwarded-for: 203.0.113.9, 198.51.100.1\r\n",
            "403",
        ),
        (&trusted, "", "403"),
        (&untrusted, "x-forwarded-for: 203.0.113.9\r\n", "403"),
        (&plain, "x-forwarded-for: 203.0.113.9\r\n", "403"),
    ] {
        let reply = http_raw(server.http, request(xff).as_bytes()).await;
        assert_eq!(reply.get(9..12), Some(wanted), "{xff:?}: {reply}");
    }
}
