//! The rule index never changes a decision: over random rule sets (2,000 and 200 rules of
//! header, path, host, regex, CIDR (IPv4 and IPv6, several prefix lengths, overlapping lists,
//! IPv4-mapped clients), `any`/`not` and shadow rules) and random requests, the
//! untraced evaluation — which tries only the rules the index cannot rule out — decides exactly
//! as the traced one, which tries every rule in file order (a plain linear scan).

use std::fmt::Write as _;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rules::{Request, RuleSet, Transport};

/// One random rule's `when` (as TOML inline-table fields) from a small vocabulary, so that
/// requests drawn from the same vocabulary match some rules and miss most.
fn random_when(rng: &mut StdRng) -> String {
    let header = |rng: &mut StdRng| {
        format!(
            "{{ name = \"x-h{}\", exact = \"v{}\" }}",
            rng.gen_range(0..4),
            rng.gen_range(0..40)
        )
    };
    match rng.gen_range(0..13) {
        0 | 1 => format!("headers = [{}]", header(rng)),
        2 => format!("path = {{ exact = \"/p{}\" }}", rng.gen_range(0..150)),
        3 => format!("path = {{ regex = \"/r{}/[a-z]+\" }}", rng.gen_range(0..30)),
        4 => format!(
            "host = {{ exact = \"h{}.example.com\" }}",
            rng.gen_range(0..20)
        ),
        5 => format!("source_ip = [{}]", random_nets(rng)),
        // As the benchmark's mix: a network and a header prefix (the network is the key).
        12 => format!(
            "source_ip = [{}], headers = [{{ name = \"x-h{}\", prefix = \"v{}\" }}]",
            random_nets(rng),
            rng.gen_range(0..4),
            rng.gen_range(0..5)
        ),
        6 => format!(
            "path = {{ exact = \"/p{}\" }}, headers = [{}]",
            rng.gen_range(0..150),
            header(rng)
        ),
        7 => format!(
            "any = [{{ headers = [{}] }}, {{ path = {{ prefix = \"/p{}\" }} }}]",
            header(rng),
            rng.gen_range(0..150)
        ),
        8 => format!(
            "not = {{ headers = [{}] }}, path = {{ regex = \"/R{}/.*\", ignore_case = true }}",
            header(rng),
            rng.gen_range(0..30)
        ),
        9 => format!(
            "headers = [{{ name = \"x-h{}\", exact = \"V{}\", ignore_case = true }}]",
            rng.gen_range(0..4),
            rng.gen_range(0..40)
        ),
        10 => format!(
            "method = [\"POST\"], headers = [{}, {}]",
            header(rng),
            header(rng)
        ),
        _ => format!(
            "path = {{ exact = \"/P{}\", ignore_case = true }}",
            rng.gen_range(0..150)
        ),
    }
}

/// One to three networks (IPv4 and IPv6, prefix lengths from /0 to /128, overlapping).
fn random_nets(rng: &mut StdRng) -> String {
    let count = rng.gen_range(1..=3);
    let nets: Vec<String> = (0..count)
        .map(|_| match rng.gen_range(0..7) {
            0 => format!("\"10.{}.0.0/16\"", rng.gen_range(0..8)),
            1 => format!("\"10.{}.1.0/24\"", rng.gen_range(0..8)),
            2 => format!("\"10.{}.1.2/32\"", rng.gen_range(0..8)),
            3 => "\"10.0.0.0/8\"".to_owned(),
            4 => format!("\"fd00:{}::/32\"", rng.gen_range(0..4)),
            5 => format!("\"fd00:{}::7/128\"", rng.gen_range(0..4)),
            _ => if rng.gen_bool(0.5) {
                "\"0.0.0.0/0\""
            } else {
                "\"::/0\""
            }
            .to_owned(),
        })
        .collect();
    nets.join(", ")
}

fn random_rule_set(rng: &mut StdRng, count: usize) -> RuleSet {
    let mut text = String::from("[default]\ndeny = { status = 403 }\n");
    for i in 0..count {
        let when = random_when(rng);
        let shadow = if rng.gen_range(0..20) == 0 {
            "shadow = true\n"
        } else {
            ""
        };
        let action = if rng.gen_bool(0.5) {
            "allow = { request_headers = [{ name = \"x-by\", value = \"{{rule.name}}\" }] }"
        } else {
            "deny = { status = 401, body = \"{{rule.name}}\" }"
        };
        let _ = write!(
            text,
            "\n[[rules]]\nname = \"r{i}\"\n{shadow}when = {{ {when} }}\n{action}\n"
        );
    }
    rules::load::<toml::Table>("random.toml", &text)
        .unwrap_or_else(|errors| panic!("generated config rejected:\n{errors}"))
        .1
}

fn random_request(rng: &mut StdRng) -> Request {
    let path = match rng.gen_range(0..5) {
        0 => format!("/p{}", rng.gen_range(0..170)),
        1 => format!("/P{}?q=1", rng.gen_range(0..170)),
        2 => format!("/r{}/abc", rng.gen_range(0..35)),
        3 => format!("/R{}/x/Y", rng.gen_range(0..35)),
        _ => format!("//p{}/./", rng.gen_range(0..170)),
    };
    let host = match rng.gen_range(0..4) {
        0 => format!("H{}.Example.com", rng.gen_range(0..25)),
        1 => format!("h{}.example.com:8443", rng.gen_range(0..25)),
        _ => format!("h{}.example.com", rng.gen_range(0..25)),
    };
    let mut request = Request {
        transport: Transport::Grpc,
        method: if rng.gen_bool(0.5) { "POST" } else { "GET" }.to_owned(),
        path,
        host,
        ..Request::default()
    };
    for name in 0..4 {
        if rng.gen_bool(0.7) {
            let value = if rng.gen_bool(0.2) {
                format!("V{}", rng.gen_range(0..45))
            } else {
                format!("v{}", rng.gen_range(0..45))
            };
            request.headers.insert(format!("x-h{name}"), value);
        }
    }
    let source = match rng.gen_range(0..10) {
        0 => format!("::ffff:10.{}.1.2", rng.gen_range(0..10)),
        1 => format!("fd00:{}::7", rng.gen_range(0..5)),
        2 => format!("fd00:{}::8", rng.gen_range(0..5)),
        3 => String::new(),
        4 => format!("10.{}.9.9", rng.gen_range(0..10)),
        _ => format!("10.{}.1.2", rng.gen_range(0..10)),
    };
    request.source.ip = source.parse().ok();
    request
}

/// Compares both evaluations over `requests` random requests; returns how many were decided by
/// a rule (not the default) and the highest deciding rule position seen.
fn compare(seed: u64, rules: usize, requests: usize) -> (usize, usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let rule_set = random_rule_set(&mut rng, rules);
    let (mut by_rule, mut furthest) = (0, 0);
    for _ in 0..requests {
        let request = random_request(&mut rng);
        let mut trace = Vec::new();
        let linear = rule_set.decide_traced(&request, &mut trace);
        let indexed = rule_set.decide(&request);
        assert_eq!(
            indexed, linear,
            "seed {seed}: the index decided differently for {request:#?}"
        );
        if let Some(rule) = &linear.rule {
            by_rule += 1;
            let position: usize = rule[1..].parse().expect("r<N>");
            furthest = furthest.max(position);
        }
    }
    (by_rule, furthest)
}

#[test]
fn two_thousand_rules_decide_exactly_as_the_linear_scan() {
    for seed in 1..=3 {
        let (by_rule, furthest) = compare(seed, 2_000, 300);
        // The comparison means something only when rules, and late rules, do decide.
        assert!(
            by_rule > 100,
            "seed {seed}: only {by_rule} decided by a rule"
        );
        assert!(
            furthest > 300,
            "seed {seed}: no rule past {furthest} decided"
        );
    }
}

#[test]
fn two_hundred_rules_decide_exactly_as_the_linear_scan() {
    for seed in 10..=14 {
        let (by_rule, _) = compare(seed, 200, 500);
        assert!(
            by_rule > 50,
            "seed {seed}: only {by_rule} decided by a rule"
        );
    }
}
