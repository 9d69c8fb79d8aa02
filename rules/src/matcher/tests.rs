use std::collections::BTreeMap;

use super::*;

fn exact(s: &str) -> StringMatch {
    StringMatch::new(StringOp::Exact(s.into()), false)
}

fn regex(pattern: &str, ignore_case: bool) -> StringMatch {
    StringMatch::new(
        StringOp::Regex(compile_regex(pattern, ignore_case).unwrap()),
        ignore_case,
    )
}

#[test]
fn exact_is_case_sensitive_unless_asked() {
    assert!(exact("allow").matches("allow"));
    assert!(!exact("allow").matches("Allow"));
    assert!(!exact("allow").matches("allow "));
    let folded = StringMatch::new(StringOp::Exact("AlLoW".into()), true);
    assert!(folded.matches("ALLOW"));
    assert!(!folded.matches("ALLOWED"));
}

#[test]
fn prefix_suffix_contains() {
    let prefix = StringMatch::new(StringOp::Prefix("/api/".into()), false);
    assert!(prefix.matches("/api/x"));
    assert!(prefix.matches("/api/"));
    assert!(!prefix.matches("/api"));
    assert!(!prefix.matches("/API/x"));
    let suffix = StringMatch::new(StringOp::Suffix(".Example.com".into()), true);
    assert!(suffix.matches("a.EXAMPLE.com"));
    assert!(!suffix.matches("example.com"));
    assert!(!suffix.matches(""));
    let contains = StringMatch::new(StringOp::Contains("Gold".into()), false);
    assert!(contains.matches("xGoldy"));
    assert!(!contains.matches("xgoldy"));
    let contains = StringMatch::new(StringOp::Contains("Gold".into()), true);
    assert!(contains.matches("XGOLDY"));
    // Multi-byte text around an ASCII-folded pattern must not panic or mis-slice.
    assert!(!StringMatch::new(StringOp::Suffix("é".into()), true).matches("e"));
    assert!(StringMatch::new(StringOp::Prefix("é".into()), false).matches("éa"));
}

#[test]
fn regex_is_a_full_match() {
    assert!(regex("[a-z]+", false).matches("abc"));
    assert!(!regex("[a-z]+", false).matches("abc1"));
    assert!(!regex("b", false).matches("abc"));
    assert!(regex("a|ab", false).matches("ab"));
    assert!(regex("ABC", true).matches("abc"));
}

#[test]
fn regex_cannot_escape_its_anchors() {
    assert_eq!(compile_regex("a)|(b", false).unwrap_err(), "unopened group");
}

#[test]
fn regex_errors_are_one_line() {
    assert_eq!(compile_regex("a(", false).unwrap_err(), "unclosed group");
    assert_eq!(
        compile_regex("*", false).unwrap_err(),
        "repetition operator missing expression"
    );
    let too_big = compile_regex("\\w{1000}\\w{1000}", false).unwrap_err();
    assert_eq!(
        too_big,
        format!("compiled size exceeds the limit of {REGEX_SIZE_LIMIT} bytes")
    );
}

fn request() -> Request {
    Request {
        method: "GET".into(),
        path: "/api/items?x=1".into(),
        host: "api.example.com".into(),
        protocol: "HTTP/2".into(),
        headers: BTreeMap::from([
            ("x-ext-authz".into(), "allow".into()),
            (":path".into(), "/api/items?x=1".into()),
        ]),
        context_extensions: BTreeMap::from([("Tenant".into(), "acme".into())]),
        ..Request::default()
    }
}

#[test]
fn transport_method_protocol() {
    let r = request();
    assert_eq!(
        Condition::Transport(Transport::Grpc).holds_or_why(&r, None),
        Ok(())
    );
    assert_eq!(
        Condition::Transport(Transport::Http).holds_or_why(&r, None),
        Err("transport is grpc, want http".into())
    );
    assert_eq!(
        Condition::Method(vec!["POST".into(), "GET".into()], MethodCase::Exact)
            .holds_or_why(&r, None),
        Ok(())
    );
    assert_eq!(
        Condition::Method(vec!["get".into()], MethodCase::Exact).holds_or_why(&r, None),
        Err("method \"GET\" not in [\"get\"]".into())
    );
    assert_eq!(
        Condition::Protocol(vec!["HTTP/2".into()]).holds_or_why(&r, None),
        Ok(())
    );
    assert_eq!(
        Condition::Protocol(vec!["HTTP/1.1".into()]).holds_or_why(&r, None),
        Err("protocol not in [\"HTTP/1.1\"]".into())
    );
}

#[test]
fn path_ignores_the_query_host_and_principal() {
    let r = request();
    assert_eq!(
        Condition::Path(exact("/api/items")).holds_or_why(&r, None),
        Ok(())
    );
    assert_eq!(
        Condition::Path(exact("/api/items?x=1")).holds_or_why(&r, None),
        Err("path does not match exact \"/api/items?x=1\"".into())
    );
    assert_eq!(
        Condition::Host(exact("api.example.com")).holds_or_why(&r, None),
        Ok(())
    );
    assert_eq!(
        Condition::Principal(StringMatch::new(StringOp::Suffix("/sa/a".into()), false))
            .holds_or_why(&r, None),
        Err("principal does not match suffix \"/sa/a\"".into())
    );
}

#[test]
fn ip_lists() {
    let nets: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
    let mut r = request();
    assert_eq!(
        Condition::SourceIp(nets.clone()).holds_or_why(&r, None),
        Err("no source ip".into())
    );
    r.source.ip = "10.2.3.4".parse().ok();
    assert_eq!(
        Condition::SourceIp(nets.clone()).holds_or_why(&r, None),
        Ok(())
    );
    r.source.ip = "::ffff:10.2.3.4".parse().ok();
    assert_eq!(
        Condition::SourceIp(nets.clone()).holds_or_why(&r, None),
        Ok(())
    );
    r.source.ip = "11.0.0.1".parse().ok();
    assert_eq!(
        Condition::SourceIp(nets.clone()).holds_or_why(&r, None),
        Err("source ip not in [10.0.0.0/8, ::1/128]".into())
    );
    r.destination.ip = "::1".parse().ok();
    assert_eq!(
        Condition::DestinationIp(nets).holds_or_why(&r, None),
        Ok(())
    );
}

#[test]
fn header_and_context_entries() {
    let r = request();
    let header = |name: &str, op| Condition::Header(name.into(), op, Copies::Whole);
    assert_eq!(
        header("x-ext-authz", EntryOp::Value(exact("allow"))).holds_or_why(&r, None),
        Ok(())
    );
    assert_eq!(
        header("x-ext-authz", EntryOp::Value(exact("deny"))).holds_or_why(&r, None),
        Err("header x-ext-authz does not match exact \"deny\"".into())
    );
    assert_eq!(
        header("x-missing", EntryOp::Value(regex(".*", false))).holds_or_why(&r, None),
        Err("header x-missing absent".into())
    );
    assert_eq!(
        header(":path", EntryOp::Present).holds_or_why(&r, None),
        Ok(())
    );
    assert_eq!(
        header("x-missing", EntryOp::Absent).holds_or_why(&r, None),
        Ok(())
    );
    assert_eq!(
        header("x-ext-authz", EntryOp::Absent).holds_or_why(&r, None),
        Err("header x-ext-authz present".into())
    );
    assert_eq!(
        header("x-missing", EntryOp::Present).holds_or_why(&r, None),
        Err("header x-missing absent".into())
    );
    let context = |name: &str, op| Condition::Context(name.into(), op);
    assert_eq!(
        context("Tenant", EntryOp::Value(exact("acme"))).holds_or_why(&r, None),
        Ok(())
    );
    assert_eq!(
        context("tenant", EntryOp::Present).holds_or_why(&r, None),
        Err("context extension tenant absent".into())
    );
}

#[test]
fn standard_methods_fold_only_where_holding_denies() {
    let methods = || vec!["DELETE".to_owned(), "PURGE".to_owned()];
    for (case, sent, want) in [
        (MethodCase::Standard, "delete", true),
        (MethodCase::Standard, "DeLeTe", true),
        (MethodCase::Standard, "DELETE", true),
        (MethodCase::Standard, "purge", false),
        (MethodCase::Standard, "get", false),
        (MethodCase::Exact, "delete", false),
        (MethodCase::Exact, "DELETE", true),
    ] {
        assert_eq!(case.matches(&methods(), sent), want, "{case:?} {sent}");
    }
}

#[test]
fn combinators() {
    let r = request();
    let yes = || Condition::Method(vec!["GET".into()], MethodCase::Exact);
    let no = || Condition::Transport(Transport::Http);
    assert_eq!(Condition::All(vec![]).holds_or_why(&r, None), Ok(()));
    assert_eq!(
        Condition::All(vec![yes(), yes()]).holds_or_why(&r, None),
        Ok(())
    );
    assert_eq!(
        Condition::All(vec![yes(), no()]).holds_or_why(&r, None),
        Err("transport is grpc, want http".into())
    );
    assert_eq!(
        Condition::Any(vec![no(), yes()]).holds_or_why(&r, None),
        Ok(())
    );
    assert_eq!(
        Condition::Any(vec![no(), no()]).holds_or_why(&r, None),
        Err("none of 2 `any` conditions held".into())
    );
    assert_eq!(
        Condition::Not(Box::new(no())).holds_or_why(&r, None),
        Ok(())
    );
    assert_eq!(
        Condition::Not(Box::new(yes())).holds_or_why(&r, None),
        Err("`not` condition held".into())
    );
    let nested = Condition::Not(Box::new(Condition::Not(Box::new(yes()))));
    assert_eq!(nested.holds_or_why(&r, None), Ok(()));
}

#[test]
fn claim_contains_is_one_of_the_values_never_a_substring() {
    let contains =
        |want: &str, value: serde_json::Value| ClaimOp::Contains(want.into()).holds(Some(&value));
    // OAuth `scope`: space-separated values.
    assert!(contains("chat:write", serde_json::json!("read chat:write")));
    assert!(contains("read", serde_json::json!("read chat:write")));
    assert!(!contains("chat", serde_json::json!("read chat:write")));
    assert!(!contains("read chat", serde_json::json!("read chat:write")));
    assert!(!contains("", serde_json::json!("read")));
    // Arrays: one element equals.
    assert!(contains("admin", serde_json::json!(["user", "admin"])));
    assert!(!contains("adm", serde_json::json!(["user", "admin"])));
    // Other types: equal as text.
    assert!(contains("5", serde_json::json!(5)));
    assert!(!contains("5", serde_json::json!(55)));
    assert!(!contains("x", serde_json::Value::Null));
}

#[test]
fn claim_substring_is_substring_matching_by_name() {
    let substring =
        |want: &str, value: serde_json::Value| ClaimOp::Substring(want.into()).holds(Some(&value));
    assert!(substring("chat", serde_json::json!("read chat:write")));
    assert!(substring("adm", serde_json::json!(["user", "admin"])));
    assert!(!substring("root", serde_json::json!(["user", "admin"])));
}
