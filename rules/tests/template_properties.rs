//! Property tests: whatever a request carries, templates rendered into header values never put
//! CR, LF or any other byte a header value cannot hold on the wire, and query values never add
//! parameters. Every request variable a template can read is interpolated, into request
//! headers, response headers, query values and deny headers, with and without `cap`; request
//! text is drawn from every control character, DEL, C1 controls, line and paragraph
//! separators, non-ASCII letters and runs long enough to hit the 64 KiB render cap.
//!
//! The reference model is docs/rules.md: in header and query values every control character
//! from the request becomes a space, `cap N "R"` replaces a value over N bytes whole, a
//! rendered value is cut at 64 KiB; query values also have `&`, `#`, `+` and space
//! percent-encoded. Bodies keep the text as it is.
//!
//! `PROPTEST_CASES` raises the case count.

use std::collections::BTreeMap;

use proptest::prelude::*;
use rules::{Decision, Peer, Request, Transport};

/// `cases` by default, or `PROPTEST_CASES`.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const POLICY: &str = r#"
[default]
deny = { status = 403, body = "{{request.headers.x-a}}", headers = [{ name = "x-default", value = "{{request.path}}|{{request.headers.x-a}}" }] }

[[rules]]
name = "deny"
when = { headers = [{ name = "x-mode", exact = "deny" }] }
[rules.deny]
status = 401
body = "{{request.body}}"
headers = [
  { name = "x-echo", value = "{{request.headers.x-a}}" },
  { name = "x-all", value = "{{request.method}} {{request.host}} {{request.scheme}} {{request.protocol}} {{source.principal}} {{context.k}}" },
  { name = "x-received", value = '{{received | cap 60000 "<too-long>"}}' },
]

[[rules]]
name = "allow"
[rules.allow]
request_headers = [
  { name = "x-echo", value = "{{request.headers.x-a}}" },
  { name = "x-capped", value = '{{request.headers.x-a | cap 8 "<long>"}}' },
  { name = "x-mixed", value = "a{{request.headers.x-a}}b{{request.headers.x-b}}c", append = true },
  { name = "x-request", value = "{{request.method}} {{request.path}} {{request.host}} {{request.scheme}} {{request.protocol}}" },
  { name = "x-who", value = "{{source.principal}} {{source.address}} {{destination.address}} {{transport}} {{rule.name}}" },
  { name = "x-context", value = "{{context.k}}" },
  { name = "x-body", value = "{{request.body}}" },
  { name = "x-received", value = '{{received | cap 60000 "<too-long>"}}' },
]
response_headers = [{ name = "x-echo", value = "{{request.headers.x-b}}", action = "overwrite_if_exists_or_add" }]
query_set = [{ name = "a", value = "{{request.headers.x-a}}" }, { name = "b", value = "{{context.k}}" }]
dynamic_metadata = { a = "{{request.headers.x-a}}" }
"#;

/// Request text: every character that has caused header injection somewhere, plus letters.
fn hostile() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => prop::sample::select(vec![
            "a", "Z", "0", " ", "\t", "\r", "\n", "\r\n", "\0", "\u{7f}", "\u{85}", "\u{9b}",
            "\u{2028}", "\u{2029}", "é", "\u{feff}", "&", "#", "+", "%", "=", "?", ":", "\"",
            "{{", "}}", "{{request.path}}",
        ])
        .prop_map(str::to_owned),
        1 => any::<char>().prop_map(String::from),
    ];
    prop_oneof![
        20 => proptest::collection::vec(piece, 0..12).prop_map(|p| p.concat()),
        1 => (1usize..3, prop::sample::select(vec!["ab", "\r\n", "é", "\u{0}"]))
            .prop_map(|(k, unit)| unit.repeat(k * 40_000)),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    (
        (hostile(), hostile(), hostile(), any::<bool>()),
        (hostile(), hostile(), hostile(), hostile()),
        (hostile(), hostile(), any::<bool>()),
    )
        .prop_map(
            |(
                (a, b, path_tail, deny),
                (method, principal, context, body),
                (protocol, received, http),
            )| {
                let mut headers = BTreeMap::from([("x-a".to_owned(), a), ("x-b".to_owned(), b)]);
                if deny {
                    headers.insert("x-mode".to_owned(), "deny".to_owned());
                }
                Request {
                    transport: if http {
                        Transport::Http
                    } else {
                        Transport::Grpc
                    },
                    method,
                    // Often unreadable (the default decides then), sometimes a plain path.
                    path: format!("/p{path_tail}"),
                    host: "example.com".into(),
                    scheme: "https".into(),
                    protocol,
                    headers,
                    body,
                    source: Peer {
                        ip: Some("10.0.0.1".parse().expect("ip")),
                        port: 1,
                        principal,
                    },
                    context_extensions: BTreeMap::from([("k".to_owned(), context)]),
                    received,
                    ..Request::default()
                }
            },
        )
}

/// RFC 9110 §5.5 field-value bytes: HTAB, SP, VCHAR, obs-text. No CR, LF, NUL, DEL or other
/// control byte.
fn valid_field_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80)
}

/// What docs/rules.md says a header value rendered from `text` is.
fn as_header(text: &str) -> String {
    let spaced: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    cut(&spaced)
}

/// The 64 KiB render cap, on a character boundary.
fn cut(text: &str) -> String {
    let mut end = text.len().min(rules::MAX_RENDERED_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn rendered_headers_are_always_sendable(request in request()) {
        let (_, rules) = rules::load::<toml::Table>("policy.toml", POLICY).expect("policy loads");
        let evaluation = rules.decide(&request);
        let a = &request.headers["x-a"];
        match &evaluation.decision {
            Decision::Allow(allow) => {
                let all = allow
                    .request_headers
                    .iter()
                    .map(|h| (&h.name, &h.value))
                    .chain(allow.response_headers.iter().map(|h| (&h.name, &h.value)));
                for (name, value) in all {
                    prop_assert!(valid_field_value(value), "{}: {:?}", name, value);
                    prop_assert!(value.len() <= rules::MAX_RENDERED_BYTES, "{} is {} bytes", name, value.len());
                }
                let header = |name: &str| {
                    allow.request_headers.iter().find(|h| h.name == name).map(|h| h.value.clone())
                };
                prop_assert_eq!(header("x-echo"), Some(as_header(a)));
                let capped = if a.len() > 8 { "<long>".to_owned() } else { as_header(a) };
                prop_assert_eq!(header("x-capped"), Some(capped));
                for (name, value) in &allow.query_parameters_to_set {
                    prop_assert!(valid_field_value(value), "query {}: {:?}", name, value);
                    prop_assert!(
                        !value.contains(['&', '#', '+', ' ']),
                        "query value {}={:?} could add a parameter or end the query", name, value
                    );
                }
                // Metadata is free text, not a header: kept as it is (capped).
                prop_assert_eq!(&allow.dynamic_metadata["a"], &serde_json::Value::String(cut(a)));
            }
            Decision::Deny(deny) => {
                for (name, value) in &deny.headers {
                    prop_assert!(valid_field_value(value), "{}: {:?}", name, value);
                }
                if evaluation.rule.as_deref() == Some("deny") {
                    prop_assert_eq!(deny.headers[0].1.clone(), as_header(a));
                    prop_assert_eq!(&deny.body, &cut(&request.body));
                } else {
                    // The default (no rule matched, or the path could not be read): its body
                    // is the raw header, its header the sanitised one.
                    prop_assert_eq!(&deny.body, &cut(a));
                }
            }
        }
    }
}
