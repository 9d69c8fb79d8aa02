//! Shadow rules: evaluated and reported as if enforced, never deciding.

use rules::{Request, ShadowMatch};

const POLICY: &str = r#"
[default]
deny = { status = 403, body = "default" }

[[rules]]
name = "trial-block-curl"
shadow = true
when.headers = [{ name = "user-agent", prefix = "curl/" }]
deny = { status = 429, body = "would block" }

[[rules]]
name = "trial-open-health"
shadow = true
when.path = { exact = "/healthz" }
allow = {}

[[rules]]
name = "team"
when.headers = [{ name = "x-team", exact = "platform" }]
allow = {}
"#;

fn request(headers: &[(&str, &str)], path: &str) -> Request {
    let mut request = Request {
        path: path.to_owned(),
        ..Request::default()
    };
    for (name, value) in headers {
        request
            .headers
            .insert((*name).to_owned(), (*value).to_owned());
    }
    request
}

#[test]
fn a_matching_shadow_rule_is_reported_but_the_next_rules_decide() {
    let (_, rules) = rules::load::<toml::Table>("shadow.toml", POLICY).expect("loads");
    let mut trace = Vec::new();
    let evaluation = rules.decide_traced(
        &request(&[("user-agent", "curl/8.5"), ("x-team", "platform")], "/"),
        &mut trace,
    );
    assert!(
        evaluation.decision.is_allow(),
        "the shadow deny is not enforced"
    );
    assert_eq!(evaluation.rule.as_deref(), Some("team"));
    assert_eq!(
        evaluation.shadow,
        vec![ShadowMatch {
            rule: "trial-block-curl".into(),
            outcome: "deny"
        }]
    );
    assert_eq!(
        rules::trace::lines(&trace)[..2],
        [
            r#"rule "trial-block-curl": matched"#,
            r#"rule "trial-block-curl" (shadow): would deny; not enforced"#
        ]
    );
}

#[test]
fn a_shadow_allow_does_not_open_the_default_deny() {
    let (_, rules) = rules::load::<toml::Table>("shadow.toml", POLICY).expect("loads");
    let evaluation = rules.decide(&request(&[], "/healthz"));
    assert!(
        !evaluation.decision.is_allow(),
        "the shadow allow is not enforced"
    );
    assert_eq!(evaluation.rule, None);
    assert_eq!(
        evaluation.shadow,
        vec![ShadowMatch {
            rule: "trial-open-health".into(),
            outcome: "allow"
        }]
    );
}

#[test]
fn shadow_rules_that_do_not_match_report_nothing() {
    let (_, rules) = rules::load::<toml::Table>("shadow.toml", POLICY).expect("loads");
    let evaluation = rules.decide(&request(&[("x-team", "platform")], "/"));
    assert!(evaluation.decision.is_allow());
    assert!(evaluation.shadow.is_empty());
}
