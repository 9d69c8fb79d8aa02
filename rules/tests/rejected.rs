//! Configs that must be rejected, each with the exact error text a user would see
//! (`file:line:column: message`, one line per error, every error reported): matchers, actions,
//! templates and the document's structure. Credential, JWT and lookup cases are in
//! `rejected_auth.rs`.

mod support;

use rules::{ConfigError, ConfigErrors, MAX_NESTING, MAX_RULES};
use serde::Deserialize;

/// (what is wrong, the config, every error line expected, in order).
const CASES: &[(&str, &str, &[&str])] = &[
    (
        "bad regex",
        r##"[default]
deny = {}
[[rules]]
name = "r"
when = { path = { regex = "a(" } }
allow = {}
"##,
        &[r##"policy.toml:5:27: invalid regex `a(`: unclosed group"##],
    ),
    (
        "bad CIDR",
        r##"[default]
deny = {}
[[rules]]
name = "r"
when = { source_ip = ["10.0.0.0/8", "10.0.0.300"] }
allow = {}
"##,
        &[
            r##"policy.toml:5:37: invalid CIDR `10.0.0.300`: expected an IP address or address/prefix such as `10.0.0.0/8`"##,
        ],
    ),
    (
        "bad CIDR as a lone string",
        r##"[default]
deny = {}
[[rules]]
name = "r"
when = { destination_ip = "::1/129" }
allow = {}
"##,
        &[
            r##"policy.toml:5:27: invalid CIDR `::1/129`: expected an IP address or address/prefix such as `10.0.0.0/8`"##,
        ],
    ),
    (
        "two ops in one string matcher",
        r##"[default]
deny = {}
[[rules]]
name = "r"
when = { host = { exact = "a", suffix = "b" } }
allow = {}
"##,
        &[
            r##"policy.toml:5:17: string matcher needs exactly one of `exact`, `prefix`, `suffix`, `contains`, `regex`; found 2 (`exact`, `suffix`)"##,
        ],
    ),
    (
        "no op in a string matcher",
        r##"[default]
deny = {}
[[rules]]
name = "r"
when = { principal = { ignore_case = true } }
allow = {}
"##,
        &[
            r##"policy.toml:5:22: string matcher needs exactly one of `exact`, `prefix`, `suffix`, `contains`, `regex`; found none"##,
        ],
    ),
    (
        "two ops in one header matcher",
        r##"[default]
deny = {}
[[rules]]
name = "r"
when = { headers = [{ name = "x", exact = "a", present = true }] }
allow = {}
"##,
        &[
            r##"policy.toml:5:21: header or context_extensions matcher needs exactly one of `exact`, `prefix`, `suffix`, `contains`, `regex`, `present`, `absent`; found 2 (`exact`, `present`)"##,
        ],
    ),
    (
        "no op in a header matcher",
        r##"[default]
deny = {}
[[rules]]
name = "r"
when = { context_extensions = [{ name = "x" }] }
allow = {}
"##,
        &[
            r##"policy.toml:5:32: header or context_extensions matcher needs exactly one of `exact`, `prefix`, `suffix`, `contains`, `regex`, `present`, `absent`; found none"##,
        ],
    ),
    (
        "unknown field in a rule",
        r##"[default]
deny = {}
[[rules]]
name = "r"
allw = {}
"##,
        &[
            r##"policy.toml:5:1: unknown field `allw`, expected one of `name`, `shadow`, `when`, `credential`, `lookup`, `require`, `allow`, `deny`, `rego`"##,
        ],
    ),
    (
        "rego with allow, a bad query and a bad budget",
        r##"[default]
deny = {}
[[rules]]
name = "r"
allow = {}
rego = { files = ["p.rego"], query = "allow", timeout_ms = 0 }
"##,
        &[
            r##"policy.toml:5:9: rule `r`: a `rego` policy decides, so `allow` / `deny` cannot be given too"##,
            r##"policy.toml:6:19: cannot read `p.rego`: No such file or directory (os error 2)"##,
            r##"policy.toml:6:38: `query` must name a rule as `data.<package>.<rule>` (e.g. `data.envoy.authz.allow`), not "allow""##,
            r##"policy.toml:6:60: `timeout_ms` must be 1..=10000"##,
        ],
    ),
    (
        "unknown field in a when",
        r##"[default]
deny = {}
[[rules]]
name = "r"
when = { header = [] }
allow = {}
"##,
        &[
            r##"policy.toml:5:10: unknown field `header`, expected one of `transport`, `method`, `path`, `host`, `principal`, `protocol`, `source_ip`, `destination_ip`, `headers`, `context_extensions`, `all`, `any`, `not`, `claims`, `db`"##,
        ],
    ),
    (
        "unknown top-level key",
        r##"[default]
deny = {}
[defaults]
"##,
        &[
            r##"policy.toml:3:2: unknown field `defaults`, expected one of `server`, `databases`, `default`, `rules`"##,
        ],
    ),
    (
        "duplicate rule name",
        r##"[default]
deny = {}
[[rules]]
name = "a"
allow = {}
[[rules]]
name = "a"
deny = {}
"##,
        &[r##"policy.toml:7:8: duplicate rule name `a` (first defined at line 4)"##],
    ),
    (
        "missing default",
        r##"[[rules]]
name = "a"
allow = {}
"##,
        &[
            r##"policy.toml:1:1: missing `[default]` table: say what happens when no rule matches (`allow = {}` or `deny = { ... }`)"##,
        ],
    ),
    (
        "empty default",
        r##"[default]
[[rules]]
name = "a"
allow = {}
"##,
        &[r##"policy.toml:1:1: `[default]` needs an `allow` or a `deny` table"##],
    ),
    (
        "rule with both allow and deny",
        r##"[default]
deny = {}
[[rules]]
name = "a"
allow = {}
deny = {}
"##,
        &[r##"policy.toml:6:8: rule `a` has both `allow` and `deny`; give exactly one"##],
    ),
    (
        "rule with neither allow nor deny",
        r##"[default]
deny = {}
[[rules]]
name = "a"
"##,
        &[r##"policy.toml:4:8: rule `a` needs an `allow` or a `deny` table"##],
    ),
    (
        "rule without a name",
        r##"[default]
deny = {}
[[rules]]
allow = {}
"##,
        &[r##"policy.toml:3:1: missing field `name`"##],
    ),
    (
        "rule named default",
        r##"[default]
deny = {}
[[rules]]
name = "default"
allow = {}
"##,
        &[r##"policy.toml:4:8: rule name `default` is reserved for the `[default]` decision"##],
    ),
    (
        "empty rule name",
        r##"[default]
deny = {}
[[rules]]
name = ""
allow = {}
"##,
        &[r##"policy.toml:4:8: rule name must not be empty"##],
    ),
    (
        "grpc_code 0",
        r##"[default]
deny = { grpc_code = 0 }
"##,
        &[
            r##"policy.toml:2:22: grpc_code 0 (OK) is not a denial; use 1..=16, e.g. 7 or "PERMISSION_DENIED""##,
        ],
    ),
    (
        "grpc_code OK by name",
        r##"[default]
deny = { grpc_code = "OK" }
"##,
        &[
            r##"policy.toml:2:22: grpc_code 0 (OK) is not a denial; use 1..=16, e.g. 7 or "PERMISSION_DENIED""##,
        ],
    ),
    (
        "grpc_code out of range",
        r##"[default]
deny = { grpc_code = 17 }
"##,
        &[r##"policy.toml:2:22: grpc_code 17 is out of range 1..=16"##],
    ),
    (
        "grpc_code unknown name",
        r##"[default]
deny = { grpc_code = "DENIED" }
"##,
        &[
            r##"policy.toml:2:22: unknown grpc_code name `DENIED`; expected e.g. "PERMISSION_DENIED" or "UNAUTHENTICATED""##,
        ],
    ),
    (
        "grpc_code wrong type",
        r##"[default]
deny = { grpc_code = true }
"##,
        &[
            r##"policy.toml:2:22: invalid type: boolean `true`, expected a gRPC code: an integer 1..=16 or a name like "PERMISSION_DENIED""##,
        ],
    ),
    (
        "status out of range",
        r##"[default]
deny = { status = 600 }
"##,
        &[r##"policy.toml:2:19: status 600 is out of range 200..=599"##],
    ),
    (
        "informational deny status (not a final response; a proxy would see an error)",
        r##"[default]
deny = { status = 101 }
"##,
        &[r##"policy.toml:2:19: status 101 is out of range 200..=599"##],
    ),
    (
        "unknown template variable",
        r##"[default]
deny = { body = "hi {{ request.nope }}" }
"##,
        &[
            r##"policy.toml:2:21: unknown template variable `request.nope`; known: request.method, request.path, request.host, request.scheme, request.protocol, request.body, request.headers.<name>, source.address, source.principal, destination.address, context.<name>, rule.name, transport, received, claims.<name>, db.<column>"##,
        ],
    ),
    (
        "unclosed template tag",
        r##"[default]
deny = { body = 'hi {{ received' }
"##,
        &[r##"policy.toml:2:21: unclosed `{{` in template (no matching `}}`)"##],
    ),
    (
        "bad cap filter",
        r##"[default]
deny = { body = '{{ received | cap "x" }}' }
"##,
        &[
            r##"policy.toml:2:18: filter `cap` takes a byte count and a quoted replacement, e.g. `cap 60000 "<too-long>"`"##,
        ],
    ),
    (
        "unknown filter",
        r##"[default]
allow = { dynamic_metadata = { a = { b = '{{ received | upper }}' } } }
"##,
        &[r##"policy.toml:2:30: unknown template filter `upper`; known: cap"##],
    ),
    (
        "bad header name",
        r##"[default]
deny = { headers = [{ name = "x y", value = "1" }] }
"##,
        &[
            r##"policy.toml:2:30: invalid header name `x y`: use letters, digits and !#$%&'*+-.^_`|~ only (pseudo-headers like `:path` only in matchers)"##,
        ],
    ),
    (
        "pseudo header in an action",
        r##"[default]
allow = { request_headers = [{ name = ":path", value = "/" }] }
"##,
        &[
            r##"policy.toml:2:39: invalid header name `:path`: use letters, digits and !#$%&'*+-.^_`|~ only (pseudo-headers like `:path` only in matchers)"##,
        ],
    ),
    (
        "bad header name in remove list",
        r##"[default]
allow = { remove_request_headers = ["ok", "noé"] }
"##,
        &[
            r##"policy.toml:2:43: invalid header name `noé`: use letters, digits and !#$%&'*+-.^_`|~ only (pseudo-headers like `:path` only in matchers)"##,
        ],
    ),
    (
        "newline in a header value",
        r##"[default]
allow = { response_headers = [{ name = "x", value = "a\nb" }] }
"##,
        &[r##"policy.toml:2:53: header value must not contain CR or LF"##],
    ),
    (
        "bad append action",
        r##"[default]
allow = { response_headers = [{ name = "x", value = "1", action = "append" }] }
"##,
        &[
            r##"policy.toml:2:67: unknown variant `append`, expected one of `append_if_exists_or_add`, `add_if_absent`, `overwrite_if_exists_or_add`, `overwrite_if_exists`"##,
        ],
    ),
    (
        "empty method list",
        r##"[default]
deny = {}
[[rules]]
name = "r"
when = { method = [] }
allow = {}
"##,
        &[r##"policy.toml:5:19: `method` is an empty list, so the rule could never match"##],
    ),
    (
        "unknown transport",
        r##"[default]
deny = {}
[[rules]]
name = "r"
when = { transport = "tcp" }
allow = {}
"##,
        &[r##"policy.toml:5:22: unknown variant `tcp`, expected `grpc` or `http`"##],
    ),
    (
        "three errors at once, all reported",
        r##"[default]
deny = {}
[[rules]]
name = "r"
when = { path = { regex = "(" }, source_ip = "10.0.0.0/99" }
allow = { request_headers = [{ name = "x", value = "{{ nope }}" }] }
"##,
        &[
            r##"policy.toml:5:27: invalid regex `(`: unclosed group"##,
            r##"policy.toml:5:46: invalid CIDR `10.0.0.0/99`: expected an IP address or address/prefix such as `10.0.0.0/8`"##,
            r##"policy.toml:6:53: unknown template variable `nope`; known: request.method, request.path, request.host, request.scheme, request.protocol, request.body, request.headers.<name>, source.address, source.principal, destination.address, context.<name>, rule.name, transport, received, claims.<name>, db.<column>"##,
        ],
    ),
];

fn load(text: &str) -> Result<rules::RuleSet, ConfigErrors> {
    rules::load::<toml::Table>("policy.toml", text).map(|(_, rule_set)| rule_set)
}

#[test]
fn every_bad_config_is_rejected_with_the_exact_text() {
    support::assert_rejected(CASES);
}

#[test]
fn errors_carry_structured_positions() {
    let errors = load("[default]\ndeny = { status = 42 }\n").unwrap_err();
    assert_eq!(
        errors.0,
        vec![ConfigError {
            file: "policy.toml".into(),
            line: 2,
            column: 19,
            message: "status 42 is out of range 200..=599".into(),
        }]
    );
}

#[test]
fn columns_count_characters_not_bytes() {
    let text = "[default]\ndeny = { body = \"é {{ x }}\" }\n";
    let errors = load(text).unwrap_err();
    assert_eq!((errors.0[0].line, errors.0[0].column), (2, 20));
}

/// `not = { not = { ... } }` nested `depth` times around a header check.
fn nested(depth: usize) -> String {
    let mut when = r#"{ method = "GET" }"#.to_owned();
    for _ in 0..depth {
        when = format!("{{ not = {when} }}");
    }
    format!("[default]\ndeny = {{}}\n[[rules]]\nname = \"deep\"\nwhen = {when}\nallow = {{}}\n")
}

#[test]
fn nesting_is_bounded() {
    assert!(load(&nested(MAX_NESTING)).is_ok());
    let errors = load(&nested(MAX_NESTING + 1)).unwrap_err().to_string();
    // "when = " then 8 characters ("{ not = ") per level: the 33rd nested table.
    let column = 8 + 8 * (MAX_NESTING + 1);
    assert_eq!(
        errors,
        format!(
            "policy.toml:5:{column}: conditions nested deeper than 32 levels of `all`/`any`/`not`"
        )
    );
}

fn many_rules(count: usize) -> String {
    let mut text = String::from("[default]\ndeny = {}\n");
    for i in 0..count {
        text.push_str(&format!("[[rules]]\nname = \"r{i}\"\nallow = {{}}\n"));
    }
    text
}

#[test]
fn rule_count_is_bounded() {
    assert_eq!(load(&many_rules(MAX_RULES)).unwrap().len(), MAX_RULES);
    let errors = load(&many_rules(MAX_RULES + 1)).unwrap_err().to_string();
    // The 10,001st `[[rules]]` header: 2 lines of default, then 3 lines per rule.
    let line = 2 + 3 * MAX_RULES + 1;
    assert_eq!(
        errors,
        format!("policy.toml:{line}:1: too many rules: 10001 (at most 10000)")
    );
}

/// The embedding server's section: its own serde attributes decide what it accepts.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Server {
    grpc: Option<String>,
}

#[test]
fn server_section_is_checked_by_its_own_type() {
    let (server, _) = rules::load::<Server>(
        "s.toml",
        "[server]\ngrpc = \"0.0.0.0:9000\"\n[default]\nallow = {}\n",
    )
    .unwrap();
    assert_eq!(
        server,
        Server {
            grpc: Some("0.0.0.0:9000".into())
        }
    );
    let (server, _) = rules::load::<Server>("s.toml", "[default]\nallow = {}\n").unwrap();
    assert_eq!(server, Server::default());
    let errors = rules::load::<Server>("s.toml", "[server]\ngrcp = \"x\"\n[default]\nallow = {}\n")
        .unwrap_err();
    assert_eq!(
        errors.to_string(),
        "s.toml:2:1: unknown field `grcp`, expected `grpc`"
    );
    let errors = rules::load::<Server>("s.toml", "[server]\ngrpc = 9000\n[default]\nallow = {}\n")
        .unwrap_err();
    assert_eq!(
        errors.to_string(),
        "s.toml:2:8: invalid type: integer `9000`, expected a string"
    );
}
