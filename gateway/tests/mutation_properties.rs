//! Property tests: the header mutations of an ext_authz allow, as the gateway applies them,
//! against a reference model written here from docs/gateway.md ("The answer (as Envoy applies
//! it)").
//!
//! Random `OkHttpResponse`s (header options with and without the `append` flag, every
//! `append_action` and an unknown one, names in any case, pseudo headers and `host`,
//! `headers_to_remove`, `response_headers_to_add`) are read by `grpc::verdict` and applied to
//! random request and response heads; the model says what each head must hold afterwards.
//!
//! `PROPTEST_CASES` raises the case count.

use std::collections::BTreeMap;

use extauthz_proto::RpcStatus;
use extauthz_proto::v3::{
    CheckResponse, HeaderValue as ProtoHeader, HeaderValueOption, OkHttpResponse,
    check_response::HttpResponse,
};
use gateway::ext_authz::Verdict;
use gateway::ext_authz::grpc::verdict;
use gateway::ext_authz::mutation::apply_response_headers;
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

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

/// A head as the model sees it: lower-case name → values in order.
type Head = BTreeMap<String, Vec<String>>;

const NAMES: [&str; 7] = ["x-a", "X-A", "x-b", "x-c", "host", ":path", ":authority"];
const VALUES: [&str; 4] = ["1", "2", "v w", ""];

#[derive(Debug, Clone)]
struct HeaderOption {
    name: &'static str,
    value: &'static str,
    /// The value sent in `raw_value` instead of `value`.
    raw: bool,
    append: Option<bool>,
    /// 0..=3 are Envoy's actions; 7 is one this proxy has never heard of.
    action: i32,
}

fn option() -> impl Strategy<Value = HeaderOption> {
    (
        prop::sample::select(NAMES.to_vec()),
        prop::sample::select(VALUES.to_vec()),
        any::<bool>(),
        proptest::option::of(any::<bool>()),
        prop::sample::select(vec![0, 1, 2, 3, 7]),
    )
        .prop_map(|(name, value, raw, append, action)| HeaderOption {
            name,
            value,
            raw,
            append,
            action,
        })
}

fn head() -> impl Strategy<Value = Vec<(&'static str, &'static str)>> {
    proptest::collection::vec(
        (
            prop::sample::select(vec!["x-a", "x-b", "x-c", "x-d"]),
            prop::sample::select(vec!["0", "1", "z"]),
        ),
        0..5,
    )
}

fn proto_option(o: &HeaderOption) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(ProtoHeader {
            key: o.name.to_owned(),
            value: if o.raw {
                String::new()
            } else {
                o.value.to_owned()
            },
            raw_value: if o.raw {
                o.value.as_bytes().to_vec()
            } else {
                Vec::new()
            },
        }),
        append: o.append,
        append_action: o.action,
        keep_empty_value: false,
    }
}

fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    map
}

fn model_head(pairs: &[(&str, &str)]) -> Head {
    let mut head = Head::new();
    for (name, value) in pairs {
        head.entry(name.to_ascii_lowercase())
            .or_default()
            .push((*value).to_owned());
    }
    head
}

fn seen(map: &HeaderMap) -> Head {
    let mut head = Head::new();
    for (name, value) in map {
        head.entry(name.as_str().to_owned())
            .or_default()
            .push(value.to_str().expect("ascii").to_owned());
    }
    head
}

/// How an option changes a request head, per docs/gateway.md: `append: true` comma-appends
/// (adds when absent), `append: false` or unset overwrites — except that with `append` unset a
/// non-default `append_action` is honoured.
#[derive(Debug, Clone, Copy, PartialEq)]
enum RequestOp {
    Set,
    Append,
    AddIfAbsent,
    OverwriteIfExists,
}

fn request_op(o: &HeaderOption) -> RequestOp {
    match (o.append, o.action) {
        (Some(true), _) => RequestOp::Append,
        (None, 1) => RequestOp::AddIfAbsent,
        (None, 3) => RequestOp::OverwriteIfExists,
        (Some(false) | None, _) => RequestOp::Set,
    }
}

/// The request head after the allow. Envoy's filter applies the lists by kind — every
/// overwrite, then appends, then add-if-absent, then overwrite-if-exists, then removals — so
/// the model does too. Pseudo headers are ignored in every list and `host` is never removed.
fn model_request(mut head: Head, options: &[HeaderOption], remove: &[&str]) -> Head {
    let live: Vec<&HeaderOption> = options
        .iter()
        .filter(|o| !o.name.starts_with(':'))
        .collect();
    for op in [
        RequestOp::Set,
        RequestOp::Append,
        RequestOp::AddIfAbsent,
        RequestOp::OverwriteIfExists,
    ] {
        for o in live.iter().filter(|o| request_op(o) == op) {
            let name = o.name.to_ascii_lowercase();
            let value = o.value.to_owned();
            match op {
                RequestOp::Set => {
                    head.insert(name, vec![value]);
                }
                RequestOp::Append => {
                    let joined = match head.get(&name) {
                        Some(old) => format!("{},{value}", old.join(",")),
                        None => value,
                    };
                    head.insert(name, vec![joined]);
                }
                RequestOp::AddIfAbsent => {
                    head.entry(name).or_insert_with(|| vec![value]);
                }
                RequestOp::OverwriteIfExists => {
                    if let Some(old) = head.get_mut(&name) {
                        *old = vec![value];
                    }
                }
            }
        }
    }
    for name in remove {
        let name = name.to_ascii_lowercase();
        if !name.starts_with(':') && name != "host" {
            head.remove(&name);
        }
    }
    head
}

/// The response head after the allow: each option in order, by its action (`append` when
/// present wins: true adds another value, false overwrites).
fn model_response(mut head: Head, options: &[HeaderOption]) -> Head {
    for o in options.iter().filter(|o| !o.name.starts_with(':')) {
        let name = o.name.to_ascii_lowercase();
        let value = o.value.to_owned();
        let action = match o.append {
            Some(false) => 2,
            None if (0..=3).contains(&o.action) => o.action,
            Some(true) | None => 0,
        };
        let present = head.contains_key(&name);
        match action {
            0 => head.entry(name).or_default().push(value),
            1 if !present => {
                head.insert(name, vec![value]);
            }
            2 => {
                head.insert(name, vec![value]);
            }
            3 if present => {
                head.insert(name, vec![value]);
            }
            _ => {}
        }
    }
    head
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn allow_mutations_agree_with_the_reference_model(
        options in proptest::collection::vec(option(), 0..6),
        remove in proptest::collection::vec(prop::sample::select(NAMES.to_vec()), 0..3),
        response_options in proptest::collection::vec(option(), 0..4),
        request_head in head(),
        response_head in head(),
    ) {
        let answer = CheckResponse {
            status: Some(RpcStatus { code: 0, ..RpcStatus::default() }),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: options.iter().map(proto_option).collect(),
                headers_to_remove: remove.iter().map(|n| (*n).to_owned()).collect(),
                response_headers_to_add: response_options.iter().map(proto_option).collect(),
                ..OkHttpResponse::default()
            })),
            ..CheckResponse::default()
        };
        let Verdict::Allow(mut allowed) = verdict(answer) else {
            return Err(TestCaseError::fail("an OK answer with valid headers is an allow"));
        };

        let (mut parts, ()) = http::Request::get("/").body(()).expect("request").into_parts();
        parts.headers = header_map(&request_head);
        parts.headers.insert("host", HeaderValue::from_static("example.com"));
        allowed.plan_query_rewrite(&parts.uri.clone()).expect("no query changes");
        allowed.apply_to_request(&mut parts);
        let mut want = model_head(&request_head);
        want.insert("host".into(), vec!["example.com".into()]);
        // `host` may be set like any header; only removal and pseudo headers are refused.
        prop_assert_eq!(seen(&parts.headers), model_request(want, &options, &remove));

        let mut response = header_map(&response_head);
        apply_response_headers(&mut response, &allowed.take_response_headers());
        prop_assert_eq!(seen(&response), model_response(model_head(&response_head), &response_options));
    }

    #[test]
    fn an_unsendable_header_makes_the_allow_invalid_never_partial(
        options in proptest::collection::vec(option(), 0..4),
        bad_at in 0usize..4,
        bad in prop::sample::select(vec!["a\r\nb", "a\nb", "\0"]),
    ) {
        let mut headers: Vec<HeaderValueOption> = options.iter().map(proto_option).collect();
        let bad_option = HeaderValueOption {
            header: Some(ProtoHeader { key: "x-bad".into(), value: bad.into(), raw_value: Vec::new() }),
            ..HeaderValueOption::default()
        };
        headers.insert(bad_at.min(headers.len()), bad_option);
        let answer = CheckResponse {
            status: Some(RpcStatus { code: 0, ..RpcStatus::default() }),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers,
                ..OkHttpResponse::default()
            })),
            ..CheckResponse::default()
        };
        let invalid = matches!(verdict(answer), Verdict::Invalid { .. });
        prop_assert!(invalid, "an allow with a header that cannot be sent must be invalid");
    }
}
