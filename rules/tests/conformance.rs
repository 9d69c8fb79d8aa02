//! Rule conformance as data: every `tests/cases/*.toml` is a policy, a request and the exact
//! decision wanted. Adding a case needs no Rust; a failure names the case file.
//!
//! Case format (all `[request]` keys optional; every `[expect]` key not given must be empty or
//! default, so a case pins the whole decision):
//!
//! ```toml
//! description = "why this case exists"
//! config = '''...policy...'''                      # or:
//! config_file = "../../../config/istio-ext-authz.toml" # relative to the case file
//! [options]                     # how requests are read (authz-server's `[server]` keys)
//! normalize_path = true; merge_slashes = true; path_with_escaped_slashes_action = "reject"
//! path_prefix = "/authz"; trusted_proxies = ["10.0.0.0/8"]
//! [request]
//! transport = "grpc"            # or "http"
//! method = "GET"; path = "/"; host = "h"; scheme = "http"; protocol = "HTTP/1.1"; body = ""
//! headers = { "x-a" = "1" }     # names are lower-cased, as Envoy sends them
//! principal = "spiffe://..."; source_ip = "10.0.0.1"; destination_ip = "10.0.0.2"
//! context_extensions = { k = "v" }
//! received = "..."              # any text value may be { repeat = "x", count = 60001 }
//! [expect]
//! outcome = "allow"             # or "deny"
//! rule = "name"                 # or "default"
//! request_headers = { name = "value" }; append = ["name"]; headers_to_remove = ["x"]
//! response_headers = [{ name = "x", value = "v", action = "add_if_absent" }]
//! query_set = [["k", "v"]]; query_remove = ["k"]; dynamic_metadata = { k = "v" }
//! status = 403; grpc_code = 7; body = "..."
//! headers = { name = "value" }  # deny headers; or [["set-cookie", "a"], ["set-cookie", "b"]]
//! trace = ["rule \"a\": matched"]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rules::{AppendAction, Decision, Evaluation, Request, Transport};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    #[allow(dead_code)]
    description: Option<String>,
    config: Option<String>,
    config_file: Option<String>,
    #[serde(default)]
    options: CaseOptions,
    #[serde(default)]
    request: CaseRequest,
    expect: Expect,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CaseOptions {
    normalize_path: Option<bool>,
    merge_slashes: Option<bool>,
    path_with_escaped_slashes_action: Option<rules::EscapedSlashes>,
    path_parameters: Option<rules::PathParameters>,
    path_prefix: Option<String>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
}

impl CaseOptions {
    fn options(&self) -> Result<rules::RequestOptions, String> {
        let defaults = rules::RequestOptions::default();
        Ok(rules::RequestOptions {
            normalize_path: self.normalize_path.unwrap_or(defaults.normalize_path),
            path: rules::PathOptions {
                merge_slashes: self.merge_slashes.unwrap_or(defaults.path.merge_slashes),
                escaped_slashes: self
                    .path_with_escaped_slashes_action
                    .unwrap_or(defaults.path.escaped_slashes),
                path_parameters: self
                    .path_parameters
                    .unwrap_or(defaults.path.path_parameters),
            },
            http_path_prefix: self.path_prefix.clone().unwrap_or_default(),
            trusted_proxies: self
                .trusted_proxies
                .iter()
                .map(|cidr| cidr.parse().map_err(|e| format!("bad cidr {cidr:?}: {e}")))
                .collect::<Result<_, _>>()?,
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CaseRequest {
    transport: Option<String>,
    method: Option<String>,
    path: Option<String>,
    host: Option<String>,
    scheme: Option<String>,
    protocol: Option<String>,
    body: Option<Text>,
    #[serde(default)]
    headers: BTreeMap<String, Text>,
    principal: Option<String>,
    source_ip: Option<String>,
    destination_ip: Option<String>,
    #[serde(default)]
    context_extensions: BTreeMap<String, String>,
    received: Option<Text>,
}

/// A string written out, or generated (for values too long to write).
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum Text {
    Plain(String),
    Repeat {
        #[serde(default)]
        prefix: String,
        repeat: String,
        count: usize,
    },
}

impl Text {
    fn text(&self) -> String {
        match self {
            Text::Plain(s) => s.clone(),
            Text::Repeat {
                prefix,
                repeat,
                count,
            } => format!("{prefix}{}", repeat.repeat(*count)),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    outcome: String,
    rule: String,
    #[serde(default)]
    request_headers: BTreeMap<String, Text>,
    #[serde(default)]
    append: Vec<String>,
    #[serde(default)]
    headers_to_remove: Vec<String>,
    #[serde(default)]
    response_headers: Vec<ExpectResponseHeader>,
    #[serde(default)]
    query_set: Vec<(String, String)>,
    #[serde(default)]
    query_remove: Vec<String>,
    #[serde(default)]
    dynamic_metadata: toml::Table,
    status: Option<u16>,
    grpc_code: Option<i32>,
    body: Option<Text>,
    headers: Option<toml::Value>,
    trace: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectResponseHeader {
    name: String,
    value: String,
    #[serde(default)]
    action: Option<String>,
}

fn request(case: &CaseRequest) -> Result<Request, String> {
    let ip = |s: &Option<String>| {
        s.as_deref()
            .map(|s| s.parse().map_err(|e| format!("bad ip {s:?}: {e}")))
            .transpose()
    };
    let mut request = Request {
        transport: match case.transport.as_deref() {
            None | Some("grpc") => Transport::Grpc,
            Some("http") => Transport::Http,
            Some(other) => return Err(format!("unknown transport {other:?}")),
        },
        method: case.method.clone().unwrap_or_default(),
        path: case.path.clone().unwrap_or_default(),
        host: case.host.clone().unwrap_or_default(),
        scheme: case.scheme.clone().unwrap_or_default(),
        protocol: case.protocol.clone().unwrap_or_default(),
        body: case.body.as_ref().map(Text::text).unwrap_or_default(),
        headers: case
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.text()))
            .collect(),
        context_extensions: case.context_extensions.clone(),
        received: case.received.as_ref().map(Text::text).unwrap_or_default(),
        ..Request::default()
    };
    request.source.ip = ip(&case.source_ip)?;
    request.source.principal = case.principal.clone().unwrap_or_default();
    request.destination.ip = ip(&case.destination_ip)?;
    Ok(request)
}

/// `Err` describes the first difference.
fn same<T: PartialEq + std::fmt::Debug>(what: &str, got: &T, want: &T) -> Result<(), String> {
    if got == want {
        return Ok(());
    }
    // Keep huge generated values readable: show their length and both ends.
    let short = |v: &T| {
        let text = format!("{v:?}");
        if text.len() <= 400 {
            return text;
        }
        let head: String = text.chars().take(150).collect();
        let tail: String = text
            .chars()
            .rev()
            .take(150)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("{head}...{tail} ({} bytes)", text.len())
    };
    Err(format!("{what}: got {}, want {}", short(got), short(want)))
}

fn check(evaluation: &Evaluation, got_trace: &[String], expect: &Expect) -> Result<(), String> {
    same(
        "outcome",
        &evaluation.decision.outcome(),
        &expect.outcome.as_str(),
    )?;
    let rule = evaluation.rule.as_deref().unwrap_or("default");
    same("rule", &rule, &expect.rule.as_str())?;
    if let Some(trace) = &expect.trace {
        same("trace", &got_trace, &trace.as_slice())?;
    }
    let metadata = |m: &rules::Metadata| serde_json::to_value(m).map_err(|e| e.to_string());
    let want_metadata =
        serde_json::to_value(&expect.dynamic_metadata).map_err(|e| e.to_string())?;
    match &evaluation.decision {
        Decision::Allow(allow) => {
            if expect.status.is_some() || expect.grpc_code.is_some() || expect.body.is_some() {
                return Err("allow: status/grpc_code/body only apply to a deny".into());
            }
            let got: BTreeMap<_, _> = allow
                .request_headers
                .iter()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect();
            same(
                "request header count",
                &allow.request_headers.len(),
                &got.len(),
            )?;
            let want: BTreeMap<_, _> = expect
                .request_headers
                .iter()
                .map(|(k, v)| (k.clone(), v.text()))
                .collect();
            same("request_headers", &got, &want)?;
            let appended: Vec<_> = allow
                .request_headers
                .iter()
                .filter(|h| h.append)
                .map(|h| h.name.clone())
                .collect();
            same("append", &appended, &expect.append.clone())?;
            same(
                "headers_to_remove",
                &&allow.headers_to_remove,
                &&expect.headers_to_remove,
            )?;
            let responses: Vec<_> = allow
                .response_headers
                .iter()
                .map(|h| (h.name.clone(), h.value.clone(), h.action))
                .collect();
            let want: Vec<_> = expect
                .response_headers
                .iter()
                .map(|h| (h.name.clone(), h.value.clone(), action(h.action.as_deref())))
                .collect();
            same("response_headers", &responses, &want)?;
            same(
                "query_set",
                &&allow.query_parameters_to_set,
                &&expect.query_set,
            )?;
            same(
                "query_remove",
                &&allow.query_parameters_to_remove,
                &&expect.query_remove,
            )?;
            same(
                "dynamic_metadata",
                &metadata(&allow.dynamic_metadata)?,
                &want_metadata,
            )?;
        }
        Decision::Deny(deny) => {
            let only_allow = !expect.request_headers.is_empty()
                || !expect.headers_to_remove.is_empty()
                || !expect.response_headers.is_empty();
            if only_allow {
                return Err("deny: request/response headers only apply to an allow".into());
            }
            let status = expect.status.ok_or("a deny case must give `status`")?;
            same("status", &deny.http_status, &status)?;
            let code = expect
                .grpc_code
                .ok_or("a deny case must give `grpc_code`")?;
            same("grpc_code", &deny.grpc_code, &code)?;
            let body = expect.body.as_ref().map(Text::text).unwrap_or_default();
            same("body", &&deny.body, &&body)?;
            same(
                "headers",
                &&deny.headers,
                &&deny_headers(expect.headers.as_ref())?,
            )?;
            same(
                "dynamic_metadata",
                &metadata(&deny.dynamic_metadata)?,
                &want_metadata,
            )?;
        }
    }
    Ok(())
}

fn action(name: Option<&str>) -> AppendAction {
    match name {
        Some("add_if_absent") => AppendAction::AddIfAbsent,
        Some("overwrite_if_exists_or_add") => AppendAction::OverwriteIfExistsOrAdd,
        Some("overwrite_if_exists") => AppendAction::OverwriteIfExists,
        _ => AppendAction::AppendIfExistsOrAdd,
    }
}

/// Deny headers as wanted: a table (order-free, no repeats) becomes the decision's headers
/// sorted by name; a list of pairs is compared in order.
fn deny_headers(value: Option<&toml::Value>) -> Result<Vec<(String, String)>, String> {
    let pair = |v: &toml::Value| -> Result<(String, String), String> {
        v.clone().try_into().map_err(|e| format!("headers: {e}"))
    };
    match value {
        None => Ok(Vec::new()),
        Some(toml::Value::Array(items)) => items.iter().map(pair).collect(),
        Some(toml::Value::Table(table)) => {
            let mut pairs = table
                .iter()
                .map(|(k, v)| match v.as_str() {
                    Some(v) => Ok((k.clone(), v.to_owned())),
                    None => Err(format!("headers.{k}: want a string")),
                })
                .collect::<Result<Vec<_>, String>>()?;
            pairs.sort();
            Ok(pairs)
        }
        Some(_) => Err("headers: want a table or a list of pairs".into()),
    }
}

fn run(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let case: Case = toml::from_str(&text).map_err(|e| format!("bad case file: {e}"))?;
    let (file, config) = match (&case.config, &case.config_file) {
        (Some(config), None) => ("inline".to_owned(), config.clone()),
        (None, Some(relative)) => {
            let dir = path.parent().ok_or("case file has no directory")?;
            let file = dir.join(relative);
            let text = std::fs::read_to_string(&file).map_err(|e| format!("{relative}: {e}"))?;
            (relative.clone(), text)
        }
        _ => return Err("give exactly one of `config` / `config_file`".into()),
    };
    let (_, rule_set) = rules::load::<toml::Table>(&file, &config).map_err(|e| e.to_string())?;
    let rule_set = rule_set.with_request_options(case.options.options()?);
    let request = request(&case.request)?;
    let mut trace = Vec::new();
    let mut evaluation = rule_set.decide_traced(&request, &mut trace);
    // Nobody tracing must not change the decision.
    same(
        "untraced evaluation",
        &&rule_set.decide(&request),
        &&evaluation,
    )?;
    let trace = rules::trace::lines(&trace);
    // Deny headers given as a table are order-free: compare sorted.
    if let (Decision::Deny(deny), Some(toml::Value::Table(_))) =
        (&mut evaluation.decision, &case.expect.headers)
    {
        deny.headers.sort();
    }
    check(&evaluation, &trace, &case.expect)
}

#[test]
fn every_case_file_holds() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/cases exists")
        .map(|entry| entry.expect("readable entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 20,
        "expected the case corpus, found {} files",
        files.len()
    );
    let failures: Vec<String> = files
        .iter()
        .filter_map(|path| {
            let name = path
                .strip_prefix(&dir)
                .unwrap_or(path)
                .display()
                .to_string();
            run(path).err().map(|why| format!("{name}: {why}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}
