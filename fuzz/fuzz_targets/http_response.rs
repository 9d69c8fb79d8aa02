//! An HTTP authorization server's answer → what the gateway does with it
//! (`gateway::ext_authz::http::verdict`, Envoy's `http_service` rules, then the allow applied to
//! a request or the denied response built). The input is an answer written as text: a status
//! line (`200`), `name: value` header lines, an empty line, the body. Checked for every input:
//!
//! - 200 is an allow, a 5xx an error (never an allow), anything else a deny with that status;
//! - an allow never removes `host` and copies only the headers the policy allows;
//! - a deny never passes framing headers (`content-length`, `transfer-encoding`,
//!   `connection`) to the client.

#![no_main]

use gateway::ext_authz::{HttpSettings, Verdict, http as authz_http};
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

/// Status, headers and body from the text form; `None` when the status line is not a status.
fn parse(data: &[u8]) -> Option<(StatusCode, HeaderMap, bytes::Bytes)> {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let status = std::str::from_utf8(lines.next()?)
        .ok()?
        .trim()
        .parse::<u16>()
        .ok()?;
    let status = StatusCode::from_u16(status).ok()?;
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    Some((status, headers, bytes::Bytes::copy_from_slice(body)))
}

fn settings(lists: bool) -> HttpSettings {
    let names = |list: &[&'static str]| list.iter().map(|n| HeaderName::from_static(n)).collect();
    HttpSettings {
        path_prefix: "/authz".into(),
        allowed_upstream_headers: names(&["x-user", "x-a"]),
        allowed_client_headers: if lists {
            names(&["x-reason", "set-cookie"])
        } else {
            Vec::new()
        },
        allowed_client_headers_on_success: names(&["x-served-by"]),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((status, headers, body)) = parse(data) else {
        return;
    };
    for lists in [false, true] {
        let settings = settings(lists);
        match authz_http::verdict(&settings, status, &headers, body.clone()) {
            Verdict::Allow(mut allowed) => {
                assert_eq!(status, StatusCode::OK, "an allow from {status}");
                for (name, _) in &allowed.headers_to_set {
                    assert!(
                        settings.allowed_upstream_headers.contains(name),
                        "{name} copied"
                    );
                }
                for name in &allowed.headers_to_remove {
                    assert!(name != header::HOST, "host removed");
                }
                let (mut parts, ()) = http::Request::get("/a?x=1")
                    .header("host", "example.com")
                    .header("x-a", "1")
                    .body(())
                    .expect("request")
                    .into_parts();
                let uri = parts.uri.clone();
                allowed
                    .plan_query_rewrite(&uri)
                    .expect("no query changes over HTTP");
                allowed.apply_to_request(&mut parts);
                assert_eq!(parts.uri, "/a?x=1");
            }
            Verdict::Error { .. } => {
                assert!(status.is_server_error(), "an error from {status}");
            }
            Verdict::Deny(denied) => {
                assert!(
                    status != StatusCode::OK && !status.is_server_error(),
                    "a deny from {status}"
                );
                assert_eq!(denied.status, Some(status));
                for (name, _) in &denied.headers {
                    assert!(
                        ![
                            header::CONTENT_LENGTH,
                            header::TRANSFER_ENCODING,
                            header::CONNECTION
                        ]
                        .contains(name),
                        "framing header {name} passed to the client"
                    );
                }
                let response = denied.into_response(StatusCode::FORBIDDEN);
                assert_eq!(response.status(), status);
            }
            Verdict::Invalid { reason } => panic!("HTTP answers are never invalid: {reason}"),
        }
    }
});
