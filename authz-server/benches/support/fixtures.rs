//! Check requests and rule sets the in-process benchmarks, the allocation test and the
//! out-of-process fixtures (`examples/perf_fixtures.rs`) share, so all of them measure the same
//! request against the same rules. Included by path (`#[path]`) from each.

use std::fmt::Write as _;

use extauthz_proto::v3;

/// A CheckRequest shaped like one Envoy sends for a small JSON POST, plus `extra` headers.
pub(crate) fn envoy_like(extra: &[(&str, &str)]) -> v3::CheckRequest {
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

/// `count` rules, a mix of header, path, regex and CIDR conditions none of which the request
/// meets, then the deciding header rule last.
pub(super) fn many_rules(count: usize) -> String {
    let mut text = String::from("[default]\ndeny = { status = 403 }\n");
    for i in 0..count.saturating_sub(1) {
        let when = match i % 4 {
            0 => format!("headers = [{{ name = \"x-tenant\", exact = \"tenant-{i}\" }}]"),
            1 => format!("path = {{ exact = \"/svc/{i}/items\" }}"),
            2 => format!("path = {{ regex = \"/r{i}/[a-z]+/[0-9]+\" }}"),
            _ => format!(
                "source_ip = [\"10.{}.{}.0/24\"]\nheaders = [{{ name = \"x-zone\", prefix = \"z{i}\" }}]",
                i / 256,
                i % 256
            ),
        };
        let _ = write!(
            text,
            "\n[[rules]]\nname = \"r{i}\"\n[rules.when]\n{when}\n[rules.allow]\n"
        );
    }
    text.push_str(
        "\n[[rules]]\nname = \"team\"\n[rules.when]\nheaders = [{ name = \"x-team\", exact = \"platform\" }]\n[rules.allow]\nrequest_headers = [{ name = \"x-authz-rule\", value = \"{{rule.name}}\" }]\n",
    );
    text
}
