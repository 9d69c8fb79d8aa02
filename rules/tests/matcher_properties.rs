//! Property tests: the rule engine's matchers against a reference model written here.
//!
//! Random policies (string matchers of every kind on headers, path and host, `present`/`absent`,
//! methods, CIDRs, nested `any`/`all`/`not`, several rules in order) are written as TOML, loaded
//! through `rules::load`, and decide random requests. The model below says from first
//! principles — docs/rules.md, not the engine's code — which rule should decide; the engine
//! must agree, indexed and traced alike.
//!
//! The case count is modest so `cargo test` stays fast; `PROPTEST_CASES=20000` runs more.

use std::collections::BTreeMap;
use std::net::IpAddr;

use proptest::prelude::*;
use rules::{Peer, Request};

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

/// How a string matcher compares, as written in the policy.
#[derive(Debug, Clone)]
enum Op {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    /// `regex = escape(lit)`: the whole value is `lit`.
    RegexLiteral(String),
    /// `regex = escape(lit) + ".*"`: starts with `lit`, the rest has no newline (`.`).
    RegexPrefix(String),
    /// `regex = escape(a) + "|" + escape(b)`: the whole value is `a` or `b` (anchoring must
    /// cover the alternation, not only its ends).
    RegexEither(String, String),
}

#[derive(Debug, Clone)]
struct StringMatcher {
    op: Op,
    ignore_case: bool,
}

#[derive(Debug, Clone)]
enum Entry {
    Value(StringMatcher),
    /// `present = <bool>`
    Present(bool),
    /// `absent = <bool>`
    Absent(bool),
}

#[derive(Debug, Clone)]
enum Cond {
    /// Index into [`HEADER_NAMES`], and how the name is spelled in the config.
    Header(usize, bool, Entry),
    Path(StringMatcher),
    Host(StringMatcher),
    SourceIp(Vec<(IpAddr, u8)>),
    Method(Vec<&'static str>),
    Any(Vec<Cond>),
    All(Vec<Cond>),
    Not(Box<Cond>),
}

#[derive(Debug, Clone)]
struct Rule {
    when: Cond,
    allow: bool,
}

const HEADER_NAMES: [&str; 2] = ["x-a", "x-b"];
const METHODS: [&str; 4] = ["GET", "POST", "get", "PUT"];

/// Short strings over an alphabet chosen for collisions: letters in both cases, regex
/// metacharacters, a newline, and non-ASCII letters that fold to ASCII ones under Unicode
/// case folding (`K` KELVIN SIGN ~ `k`, `ſ` LONG S ~ `s`).
fn text() -> impl Strategy<Value = String> + Clone {
    proptest::collection::vec(
        prop::sample::select(vec![
            'a', 'b', 'A', 'B', 'k', 's', '/', '-', '.', '*', '\n', 'é', 'É', '\u{212A}', 'ſ',
        ]),
        0..4,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn string_matcher(
    pattern: impl Strategy<Value = String> + Clone,
) -> impl Strategy<Value = StringMatcher> {
    let op = prop_oneof![
        pattern.clone().prop_map(Op::Exact),
        pattern.clone().prop_map(Op::Prefix),
        pattern.clone().prop_map(Op::Suffix),
        pattern.clone().prop_map(Op::Contains),
        pattern.clone().prop_map(Op::RegexLiteral),
        pattern.clone().prop_map(Op::RegexPrefix),
        (pattern.clone(), pattern).prop_map(|(a, b)| Op::RegexEither(a, b)),
    ];
    (op, any::<bool>()).prop_map(|(op, ignore_case)| StringMatcher { op, ignore_case })
}

/// Path patterns: pieces of canonical paths.
fn path_text() -> impl Strategy<Value = String> + Clone {
    proptest::collection::vec(
        prop::sample::select(vec!["/", "a", "b", "A", "/a", "x.json", "-"]),
        0..3,
    )
    .prop_map(|pieces| pieces.concat())
}

/// Host patterns: pieces of host names, any case.
fn host_text() -> impl Strategy<Value = String> + Clone {
    proptest::collection::vec(
        prop::sample::select(vec!["a", "B", ".", "example", "Com", "-"]),
        0..3,
    )
    .prop_map(|pieces| pieces.concat())
}

fn network() -> impl Strategy<Value = (IpAddr, u8)> {
    prop_oneof![
        (any::<u32>(), 0u8..=32).prop_map(|(bits, prefix)| {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            (IpAddr::from((bits & mask).to_be_bytes()), prefix)
        }),
        (any::<u128>(), 0u8..=128).prop_map(|(bits, prefix)| {
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix)
            };
            (IpAddr::from((bits & mask).to_be_bytes()), prefix)
        }),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    prop_oneof![
        4 => string_matcher(text()).prop_map(Entry::Value),
        1 => any::<bool>().prop_map(Entry::Present),
        1 => any::<bool>().prop_map(Entry::Absent),
    ]
}

fn condition() -> impl Strategy<Value = Cond> {
    let leaf = prop_oneof![
        4 => (0..HEADER_NAMES.len(), any::<bool>(), entry()).prop_map(|(i, upper, e)| Cond::Header(i, upper, e)),
        2 => string_matcher(path_text()).prop_map(Cond::Path),
        2 => string_matcher(host_text()).prop_map(Cond::Host),
        1 => proptest::collection::vec(network(), 1..3).prop_map(Cond::SourceIp),
        1 => proptest::collection::vec(prop::sample::select(METHODS.to_vec()), 1..3).prop_map(Cond::Method),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 1..3).prop_map(Cond::Any),
            proptest::collection::vec(inner.clone(), 1..3).prop_map(Cond::All),
            inner.prop_map(|c| Cond::Not(Box::new(c))),
        ]
    })
}

fn policy() -> impl Strategy<Value = Vec<Rule>> {
    proptest::collection::vec(
        (condition(), any::<bool>()).prop_map(|(when, allow)| Rule { when, allow }),
        1..4,
    )
}

/// A request near the policies' patterns: headers from the same alphabet, a canonical path
/// (with a query the path matchers must not see), a host in any case with or without a port,
/// a source address that is often inside a generated network.
fn request() -> impl Strategy<Value = Request> {
    let header = proptest::option::of(text());
    let client = prop_oneof![
        Just(None),
        network().prop_flat_map(|(net, prefix)| {
            any::<u128>().prop_map(move |noise| Some(inside(net, prefix, noise)))
        }),
        any::<[u8; 4]>().prop_map(|b| Some(IpAddr::from(b))),
        any::<[u8; 4]>()
            .prop_map(|b| Some(IpAddr::V6(std::net::Ipv4Addr::from(b).to_ipv6_mapped()))),
    ];
    (
        header.clone(),
        header,
        proptest::collection::vec(
            prop::sample::select(vec!["a", "b", "A", "x.json", "-"]),
            0..3,
        ),
        proptest::option::of(prop::sample::select(vec!["q=1", "a=/a", ""])),
        (
            prop::sample::select(vec!["a", "B", "example", "a.example.Com", "b-a"]),
            prop::sample::select(vec!["", ":80", ":8080"]),
        ),
        client,
        prop::sample::select(METHODS.to_vec()),
    )
        .prop_map(|(a, b, segments, query, (host, port), ip, method)| {
            let mut headers = BTreeMap::new();
            if let Some(a) = a {
                headers.insert("x-a".to_owned(), a);
            }
            if let Some(b) = b {
                headers.insert("x-b".to_owned(), b);
            }
            let mut path = format!("/{}", segments.join("/"));
            if let Some(query) = query {
                path = format!("{path}?{query}");
            }
            Request {
                method: method.to_owned(),
                path,
                host: format!("{host}{port}"),
                scheme: "http".into(),
                headers,
                source: Peer {
                    ip,
                    ..Peer::default()
                },
                ..Request::default()
            }
        })
}

/// An address inside `net/prefix`: the network's bits, then noise.
fn inside(net: IpAddr, prefix: u8, noise: u128) -> IpAddr {
    match net {
        IpAddr::V4(v4) => {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            // The low 32 bits of the noise fill the host part.
            let low = u32::try_from(noise & u128::from(u32::MAX)).expect("masked to 32 bits");
            IpAddr::from(((u32::from(v4) & mask) | (low & !mask)).to_be_bytes())
        }
        IpAddr::V6(v6) => {
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix)
            };
            IpAddr::from(((u128::from(v6) & mask) | (noise & !mask)).to_be_bytes())
        }
    }
}

// ---- the policy as TOML -------------------------------------------------------------------

fn quoted(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn matcher_toml(m: &StringMatcher) -> String {
    let (key, pattern) = match &m.op {
        Op::Exact(p) => ("exact", p.clone()),
        Op::Prefix(p) => ("prefix", p.clone()),
        Op::Suffix(p) => ("suffix", p.clone()),
        Op::Contains(p) => ("contains", p.clone()),
        Op::RegexLiteral(p) => ("regex", regex::escape(p)),
        Op::RegexPrefix(p) => ("regex", format!("{}.*", regex::escape(p))),
        Op::RegexEither(a, b) => (
            "regex",
            format!("{}|{}", regex::escape(a), regex::escape(b)),
        ),
    };
    format!(
        "{key} = {}, ignore_case = {}",
        quoted(&pattern),
        m.ignore_case
    )
}

fn when_toml(c: &Cond) -> String {
    match c {
        Cond::Header(i, upper, e) => {
            let name = if *upper {
                HEADER_NAMES[*i].to_ascii_uppercase()
            } else {
                HEADER_NAMES[*i].to_owned()
            };
            let test = match e {
                Entry::Value(m) => matcher_toml(m),
                Entry::Present(b) => format!("present = {b}"),
                Entry::Absent(b) => format!("absent = {b}"),
            };
            format!("{{ headers = [{{ name = {}, {test} }}] }}", quoted(&name))
        }
        Cond::Path(m) => format!("{{ path = {{ {} }} }}", matcher_toml(m)),
        Cond::Host(m) => format!("{{ host = {{ {} }} }}", matcher_toml(m)),
        Cond::SourceIp(nets) => {
            let list: Vec<String> = nets
                .iter()
                .map(|(ip, p)| quoted(&format!("{ip}/{p}")))
                .collect();
            format!("{{ source_ip = [{}] }}", list.join(", "))
        }
        Cond::Method(methods) => {
            let list: Vec<String> = methods.iter().map(|m| quoted(m)).collect();
            format!("{{ method = [{}] }}", list.join(", "))
        }
        Cond::Any(inner) => format!(
            "{{ any = [{}] }}",
            inner.iter().map(when_toml).collect::<Vec<_>>().join(", ")
        ),
        Cond::All(inner) => format!(
            "{{ all = [{}] }}",
            inner.iter().map(when_toml).collect::<Vec<_>>().join(", ")
        ),
        Cond::Not(inner) => format!("{{ not = {} }}", when_toml(inner)),
    }
}

fn policy_toml(rules: &[Rule]) -> String {
    let mut text = "[default]\ndeny = { status = 403 }\n".to_owned();
    for (i, rule) in rules.iter().enumerate() {
        let outcome = if rule.allow {
            "allow = {}"
        } else {
            "deny = { status = 401 }"
        };
        text.push_str(&format!(
            "\n[[rules]]\nname = \"r{i}\"\nwhen = {}\n{outcome}\n",
            when_toml(&rule.when)
        ));
    }
    text
}

// ---- the reference model -------------------------------------------------------------------

/// ASCII-only case folding: what docs/rules.md promises for `ignore_case` on `exact`, `prefix`,
/// `suffix` and `contains`.
fn fold(s: &str, ignore_case: bool) -> String {
    if ignore_case {
        s.to_ascii_lowercase()
    } else {
        s.to_owned()
    }
}

/// Unicode simple case folding, for the characters [`text`] draws from: what the regex crate's
/// case-insensitive mode does, and so what a `regex` with `ignore_case` does (docs/rules.md
/// says so: `ſ` matches `s`, KELVIN SIGN matches `k`). The other matchers fold ASCII only.
fn unicode_fold(s: &str, ignore_case: bool) -> String {
    if !ignore_case {
        return s.to_owned();
    }
    s.chars()
        .map(|c| match c {
            'ſ' => 's',
            '\u{212A}' => 'k',
            'É' => 'é',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

fn string_holds(m: &StringMatcher, value: &str) -> bool {
    let v = fold(value, m.ignore_case);
    let f = |p: &str| fold(p, m.ignore_case);
    let rv = unicode_fold(value, m.ignore_case);
    let rf = |p: &str| unicode_fold(p, m.ignore_case);
    match &m.op {
        Op::Exact(p) => v == f(p),
        Op::Prefix(p) => v.starts_with(&f(p)),
        Op::Suffix(p) => v.ends_with(&f(p)),
        Op::Contains(p) => v.contains(&f(p)),
        Op::RegexLiteral(p) => rv == rf(p),
        Op::RegexPrefix(p) => rv
            .strip_prefix(&rf(p))
            .is_some_and(|rest| !rest.contains('\n')),
        Op::RegexEither(a, b) => rv == rf(a) || rv == rf(b),
    }
}

/// In the network as written, or — for an IPv4 client seen as `::ffff:a.b.c.d` — in it as IPv4.
fn in_network(ip: IpAddr, net: (IpAddr, u8)) -> bool {
    let mapped = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    };
    in_network_as_is(ip, net) || mapped.is_some_and(|v4| in_network_as_is(v4, net))
}

fn in_network_as_is(ip: IpAddr, (net, prefix): (IpAddr, u8)) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            u32::from(ip) & mask == u32::from(net)
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix)
            };
            u128::from(ip) & mask == u128::from(net)
        }
        _ => false,
    }
}

/// Whether `c` holds for `r`; `denies` says whether holding leads to a deny (a deny rule's
/// `when`, flipped under `not`), where a standard method in another case counts as its
/// upper-case name (docs/rules.md).
fn holds(c: &Cond, r: &Request, denies: bool) -> bool {
    match c {
        Cond::Header(i, _, e) => {
            let value = r.headers.get(HEADER_NAMES[*i]);
            // `present = false` means absent, `absent = false` present (docs/rules.md).
            match e {
                Entry::Value(m) => value.is_some_and(|v| string_holds(m, v)),
                Entry::Present(want) => value.is_some() == *want,
                Entry::Absent(want) => value.is_none() == *want,
            }
        }
        Cond::Path(m) => string_holds(m, r.path.split('?').next().unwrap_or_default()),
        Cond::Host(m) => {
            let name = r
                .host
                .split(':')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            string_holds(
                &StringMatcher {
                    op: m.op.clone(),
                    ignore_case: true,
                },
                &name,
            )
        }
        Cond::SourceIp(nets) => r
            .source
            .ip
            .is_some_and(|ip| nets.iter().any(|n| in_network(ip, *n))),
        Cond::Method(methods) => {
            const STANDARD: [&str; 9] = [
                "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
            ];
            let upper = r.method.to_ascii_uppercase();
            methods.contains(&r.method.as_str())
                || denies && STANDARD.contains(&upper.as_str()) && methods.contains(&upper.as_str())
        }
        Cond::Any(inner) => inner.iter().any(|c| holds(c, r, denies)),
        Cond::All(inner) => inner.iter().all(|c| holds(c, r, denies)),
        Cond::Not(inner) => !holds(inner, r, !denies),
    }
}

/// The rule that decides under the model: the first whose `when` holds.
fn model_decides(rules: &[Rule], r: &Request) -> (Option<String>, bool) {
    rules
        .iter()
        .enumerate()
        .find(|(_, rule)| holds(&rule.when, r, !rule.allow))
        .map_or((None, false), |(i, rule)| {
            (Some(format!("r{i}")), rule.allow)
        })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn matchers_agree_with_the_reference_model(
        rules in policy(),
        requests in proptest::collection::vec(request(), 1..6),
    ) {
        let text = policy_toml(&rules);
        let (_, compiled) = rules::load::<toml::Table>("policy.toml", &text)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        for request in &requests {
            let evaluation = compiled.decide(request);
            let mut trace = Vec::new();
            let traced = compiled.decide_traced(request, &mut trace);
            prop_assert_eq!(&evaluation, &traced, "indexed and traced differ\n{}", text);
            let (rule, allow) = model_decides(&rules, request);
            prop_assert_eq!(
                evaluation.rule.as_deref(),
                rule.as_deref(),
                "policy:\n{}\nrequest: {:?}\ntrace: {:?}",
                text,
                request,
                trace.iter().map(ToString::to_string).collect::<Vec<_>>()
            );
            prop_assert_eq!(evaluation.decision.is_allow(), allow);
        }
    }
}
