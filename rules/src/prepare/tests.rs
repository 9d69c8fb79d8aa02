use std::borrow::Cow;

use canonical::{EscapedSlashes, PathOptions};

use super::{RequestOptions, Unusable, prepare};
use crate::request::{Request, Transport};

fn request(path: &str, host: &str) -> Request {
    Request {
        path: path.to_owned(),
        host: host.to_owned(),
        ..Request::default()
    }
}

fn prepared(
    path: &str,
    host: &str,
    options: &RequestOptions,
) -> Result<(String, String), Unusable> {
    let request = request(path, host);
    prepare(&request, options).map(|r| (r.path.clone(), r.host.clone()))
}

#[test]
fn spellings_of_a_path_become_the_canonical_one() {
    let options = RequestOptions::default();
    for raw in [
        "/public/../admin/x",
        "/./admin/x",
        "//admin/x",
        "/admin//x",
        "/%61dmin/x",
        "/public/%2e%2e/admin/x",
    ] {
        let (path, _) = prepared(raw, "", &options).expect(raw);
        assert_eq!(path, "/admin/x", "{raw}");
    }
}

#[test]
fn the_query_is_kept_as_sent() {
    let options = RequestOptions::default();
    let (path, _) = prepared("//a/./b?x=%2F&y=..", "", &options).expect("canonical");
    assert_eq!(path, "/a/b?x=%2F&y=..");
}

#[test]
fn paths_without_a_canonical_form_are_unusable() {
    let options = RequestOptions::default();
    for (raw, reason) in [
        ("/admin%2Fx", "escaped slash or backslash in path"),
        ("/admin%5Cx", "escaped slash or backslash in path"),
        ("/a%zz", "invalid percent-encoding in path"),
        ("/a\u{1}b", "control character in path"),
        ("/admin/x#frag", "fragment in request target"),
        ("admin/x", "path is not origin-form (must start with `/`)"),
    ] {
        let error = prepared(raw, "", &options).expect_err(raw);
        assert_eq!(
            error.to_string(),
            format!("path cannot be made canonical: {reason}"),
            "{raw:?}"
        );
    }
}

#[test]
fn escaped_slashes_follow_the_policy() {
    let keep = RequestOptions {
        path: PathOptions {
            escaped_slashes: EscapedSlashes::Keep,
            merge_slashes: true,
            ..PathOptions::default()
        },
        ..RequestOptions::default()
    };
    assert_eq!(
        prepared("/admin%2fx", "", &keep).expect("kept").0,
        "/admin%2Fx"
    );
    let unescape = RequestOptions {
        path: PathOptions {
            escaped_slashes: EscapedSlashes::Unescape,
            merge_slashes: true,
            ..PathOptions::default()
        },
        ..RequestOptions::default()
    };
    assert_eq!(
        prepared("/admin%2Fx", "", &unescape).expect("unescaped").0,
        "/admin/x"
    );
}

#[test]
fn an_empty_path_and_star_stay_as_they_are() {
    let options = RequestOptions::default();
    assert_eq!(prepared("", "", &options).expect("empty").0, "");
    assert_eq!(prepared("*", "", &options).expect("star").0, "*");
}

#[test]
fn normalize_path_false_matches_the_path_as_received() {
    let options = RequestOptions {
        normalize_path: false,
        ..RequestOptions::default()
    };
    assert_eq!(
        prepared("//a/../b%zz", "", &options).expect("raw").0,
        "//a/../b%zz"
    );
}

#[test]
fn hosts_are_lower_case_without_default_port_or_trailing_dot() {
    let options = RequestOptions::default();
    for raw in [
        "ADMIN.example.com",
        "admin.example.com:80",
        "admin.example.com.",
        "admin.example.com:443",
    ] {
        assert_eq!(
            prepared("/", raw, &options).expect(raw).1,
            "admin.example.com",
            "{raw}"
        );
    }
    assert_eq!(
        prepared("/", "a.example:8080", &options).expect("port").1,
        "a.example:8080"
    );
    let error = prepared("/", "a b", &options).expect_err("space");
    assert_eq!(
        error.to_string(),
        "host cannot be made canonical: invalid character in host"
    );
}

#[test]
fn a_canonical_request_is_borrowed_not_copied() {
    let request = request("/a/b?c=d", "api.example.com");
    let prepared = prepare(&request, &RequestOptions::default()).expect("canonical");
    assert!(matches!(prepared, Cow::Borrowed(_)));
}

#[test]
fn http_mode_strips_the_path_prefix_and_refuses_requests_without_it() {
    let options = RequestOptions {
        http_path_prefix: "/authz".to_owned(),
        ..RequestOptions::default()
    };
    let mut http = request("/authz/public/../admin/x?q=1", "");
    http.transport = Transport::Http;
    assert_eq!(
        prepare(&http, &options).expect("prefixed").path,
        "/admin/x?q=1"
    );
    for without in ["/admin/x", "/authzadmin/x", "/authz"] {
        http.path = without.to_owned();
        assert_eq!(
            prepare(&http, &options).expect_err(without).to_string(),
            "path does not start with the configured path_prefix \"/authz\""
        );
    }
    // gRPC checks carry the original path: no prefix is stripped.
    let grpc = request("/authz/x", "");
    assert_eq!(prepare(&grpc, &options).expect("grpc").path, "/authz/x");
}

fn forwarded(peer: &str, xff: Option<&str>, transport: Transport) -> Option<std::net::IpAddr> {
    let options = RequestOptions {
        trusted_proxies: vec![
            "10.0.0.0/8".parse().expect("cidr"),
            "::1/128".parse().expect("cidr"),
        ],
        ..RequestOptions::default()
    };
    let mut request = request("/", "");
    request.transport = transport;
    request.source.ip = Some(peer.parse().expect("ip"));
    request.source.port = 4000;
    if let Some(xff) = xff {
        request.headers.insert("x-forwarded-for".into(), xff.into());
    }
    prepare(&request, &options).expect("canonical").source.ip
}

#[test]
fn the_client_comes_from_x_forwarded_for_only_through_a_trusted_proxy() {
    let ip = |s: &str| Some(s.parse().expect("ip"));
    // Peer trusted: the rightmost untrusted address.
    assert_eq!(
        forwarded("10.0.0.1", Some("1.2.3.4, 10.9.9.9"), Transport::Http),
        ip("1.2.3.4")
    );
    assert_eq!(
        forwarded("10.0.0.1", Some("6.6.6.6, 1.2.3.4"), Transport::Http),
        ip("1.2.3.4")
    );
    assert_eq!(
        forwarded("::ffff:10.0.0.1", Some("1.2.3.4"), Transport::Http),
        ip("1.2.3.4")
    );
    assert_eq!(
        forwarded("::1", Some("[2001:db8::1]"), Transport::Http),
        ip("2001:db8::1")
    );
    assert_eq!(
        forwarded("10.0.0.1", Some("1.2.3.4:5555"), Transport::Http),
        ip("1.2.3.4")
    );
    // All trusted: the leftmost; none sent: the peer itself.
    assert_eq!(
        forwarded("10.0.0.1", Some("10.1.1.1, 10.2.2.2"), Transport::Http),
        ip("10.1.1.1")
    );
    assert_eq!(forwarded("10.0.0.1", None, Transport::Http), ip("10.0.0.1"));
    // Garbage on the way: the client is unknown.
    assert_eq!(
        forwarded("10.0.0.1", Some("1.2.3.4, nonsense"), Transport::Http),
        None
    );
    // Peer not trusted: its own address, whatever it claims.
    assert_eq!(
        forwarded("192.0.2.7", Some("10.0.0.5"), Transport::Http),
        ip("192.0.2.7")
    );
    // gRPC: the proxy vouches for source.address; x-forwarded-for is ignored.
    assert_eq!(
        forwarded("10.0.0.1", Some("1.2.3.4"), Transport::Grpc),
        ip("10.0.0.1")
    );
}
