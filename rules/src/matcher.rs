//! Compiled conditions: string, header, IP and transport matchers and the `all`/`any`/`not`
//! combinators. Each check says why it failed, for the evaluation trace. Traces name the
//! condition, never the request's value, so secrets in headers don't leak into logs.

use std::net::IpAddr;

use ipnet::IpNet;
use regex::{Regex, RegexBuilder};

use crate::identity::{ClaimPath, Identity, claim_text};
use crate::request::{Request, Transport};

/// Compiled size limit for one regex; a pattern over it is a load error.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// How a string matcher compares.
#[derive(Debug, Clone)]
pub(crate) enum StringOp {
    /// Equal to.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Ends with.
    Suffix(String),
    /// Contains.
    Contains(String),
    /// Matches the whole value.
    Regex(Regex),
}

/// One string condition. With `ignore_case`, patterns are stored lower-case and compared
/// ASCII-case-insensitively (as Envoy's `StringMatcher.ignore_case`).
#[derive(Debug, Clone)]
pub(crate) struct StringMatch {
    op: StringOp,
    ignore_case: bool,
}

impl StringMatch {
    /// A matcher; a regex must already be compiled with the same `ignore_case`.
    pub(crate) fn new(op: StringOp, ignore_case: bool) -> Self {
        let lower = |s: String| {
            if ignore_case {
                s.to_ascii_lowercase()
            } else {
                s
            }
        };
        let op = match op {
            StringOp::Exact(s) => StringOp::Exact(lower(s)),
            StringOp::Prefix(s) => StringOp::Prefix(lower(s)),
            StringOp::Suffix(s) => StringOp::Suffix(lower(s)),
            StringOp::Contains(s) => StringOp::Contains(lower(s)),
            StringOp::Regex(r) => StringOp::Regex(r),
        };
        Self { op, ignore_case }
    }

    /// Whether `value` satisfies the matcher.
    pub(crate) fn matches(&self, value: &str) -> bool {
        let eq = |a: &[u8], b: &[u8]| {
            if self.ignore_case {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        let value_bytes = value.as_bytes();
        match &self.op {
            StringOp::Exact(p) => eq(value_bytes, p.as_bytes()),
            StringOp::Prefix(p) => value_bytes
                .get(..p.len())
                .is_some_and(|head| eq(head, p.as_bytes())),
            StringOp::Suffix(p) => value_bytes
                .len()
                .checked_sub(p.len())
                .and_then(|start| value_bytes.get(start..))
                .is_some_and(|tail| eq(tail, p.as_bytes())),
            StringOp::Contains(p) if self.ignore_case => {
                value.to_ascii_lowercase().contains(p.as_str())
            }
            StringOp::Contains(p) => value.contains(p.as_str()),
            StringOp::Regex(r) => r.is_match(value),
        }
    }

    /// How it compares (patterns are lower case under `ignore_case`).
    pub(crate) fn op(&self) -> &StringOp {
        &self.op
    }

    /// Whether it compares ASCII-case-insensitively.
    pub(crate) fn ignore_case(&self) -> bool {
        self.ignore_case
    }

    /// `prefix "/api/"`, for traces.
    fn describe(&self) -> String {
        let (op, pattern) = match &self.op {
            StringOp::Exact(p) => ("exact", p.as_str()),
            StringOp::Prefix(p) => ("prefix", p.as_str()),
            StringOp::Suffix(p) => ("suffix", p.as_str()),
            StringOp::Contains(p) => ("contains", p.as_str()),
            StringOp::Regex(r) => ("regex", r.as_str()),
        };
        let case = if self.ignore_case {
            " (ignore case)"
        } else {
            ""
        };
        format!("{op} {pattern:?}{case}")
    }
}

/// Compiles a regex with full-match semantics (`^(?:...)$`, as Envoy's `safe_regex`) and a size
/// limit. The pattern is first checked alone, so `a)|(b` can't escape the anchors.
pub(crate) fn compile_regex(pattern: &str, ignore_case: bool) -> Result<Regex, String> {
    let build = |p: &str| {
        RegexBuilder::new(p)
            .case_insensitive(ignore_case)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
    };
    build(pattern)
        .and_then(|_| build(&format!("^(?:{pattern})$")))
        .map_err(|error| regex_reason(&error))
}

/// The one-line reason inside the regex crate's multi-line error.
fn regex_reason(error: &regex::Error) -> String {
    match error {
        regex::Error::CompiledTooBig(limit) => {
            format!("compiled size exceeds the limit of {limit} bytes")
        }
        other => {
            let text = other.to_string();
            text.lines()
                .find_map(|line| line.strip_prefix("error: "))
                .map_or_else(|| text.replace('\n', " "), str::to_owned)
        }
    }
}

/// How a header value condition reads a value that may hold several copies of the header.
/// Envoy joins copies with `,` (`blocked` and `ok` arrive as `blocked,ok`), while a backend may
/// read any one copy: so where a condition holding leads to a deny, it holds when **any**
/// comma-separated part (trimmed of SP/HTAB) matches, or the whole value does; where it leads to
/// an allow, only when the whole value **and** every part match (so `allow,allow` is not
/// `allow`, as Istio's test server and any exact comparison of Envoy's joined value answer,
/// and `admin,guest` is not `prefix = "admin"`). A comma inside one copy cannot be told from a
/// join: both readings then fail closed (more denies, fewer allows). The compiler picks the
/// reading from the rule's action, flipping it under `not`; pseudo-headers (`:path`, ...) are
/// single and read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Copies {
    /// The value as received, whole.
    Whole,
    /// The whole value or any part.
    Any,
    /// The whole value and every part.
    Every,
}

impl Copies {
    /// The reading under a `not`.
    pub(crate) fn flipped(self) -> Copies {
        match self {
            Copies::Whole => Copies::Whole,
            Copies::Any => Copies::Every,
            Copies::Every => Copies::Any,
        }
    }

    /// Whether `value` matches under this reading.
    fn matches(self, m: &StringMatch, value: &str) -> bool {
        let mut parts = value
            .split(',')
            .map(|part| part.trim_matches(|c| c == ' ' || c == '\t'));
        match self {
            Copies::Whole => m.matches(value),
            _ if !value.contains(',') => m.matches(value),
            Copies::Any => m.matches(value) || parts.any(|part| m.matches(part)),
            Copies::Every => m.matches(value) && parts.all(|part| m.matches(part)),
        }
    }
}

/// The methods RFC 9110 and RFC 5789 define, which liberal backends recognise in any case.
const STANDARD_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// How a method condition compares the request's method. Methods are case-sensitive (RFC 9110
/// §9.1) and Envoy passes `delete` as sent, yet Django and Werkzeug upper-case it and serve
/// DELETE: so where a condition holding leads to a deny, a standard method sent in another
/// case matches its upper-case name; where it leads to an allow, methods compare exactly
/// (`get` is not GET). Extension methods always compare exactly. The compiler picks the reading
/// as it does [`Copies`], from the rule's action, flipped under `not`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MethodCase {
    /// Byte for byte.
    Exact,
    /// Byte for byte, or a standard method's upper-case name in any case.
    Standard,
}

impl MethodCase {
    /// Whether `method` is one of `methods` under this reading.
    fn matches(self, methods: &[String], method: &str) -> bool {
        let listed = |want: &str| methods.iter().any(|m| m == want);
        listed(method)
            || self == MethodCase::Standard
                && STANDARD_METHODS
                    .iter()
                    .find(|standard| standard.eq_ignore_ascii_case(method))
                    .is_some_and(|standard| listed(standard))
    }
}

/// A condition on a named entry (a header or a context extension).
#[derive(Debug, Clone)]
pub(crate) enum EntryOp {
    /// The entry is present and its value matches.
    Value(StringMatch),
    /// The entry is present.
    Present,
    /// The entry is absent.
    Absent,
}

/// A condition on one claim of the verified JWT.
#[derive(Debug, Clone)]
pub(crate) enum ClaimOp {
    /// The claim, as text, equals this.
    Exact(String),
    /// The claim, as text, is one of these.
    OneOf(Vec<String>),
    /// An array claim has an element equal to this (as text); a string claim has it as one of
    /// its space-separated values (OAuth `scope`); any other claim equals it as text. Never a
    /// substring.
    Contains(String),
    /// A string claim contains this text anywhere, or an array claim has an element that does:
    /// substring matching, only where a config asks for it by name.
    Substring(String),
    /// The claim, as text, matches (anchored).
    Regex(Regex),
    /// The claim is present (and not null).
    Present,
    /// The claim is absent (or null).
    Absent,
}

impl ClaimOp {
    fn holds(&self, value: Option<&serde_json::Value>) -> bool {
        let value = value.filter(|v| !v.is_null());
        match (self, value) {
            (ClaimOp::Present, found) => found.is_some(),
            (ClaimOp::Absent, found) => found.is_none(),
            (_, None) => false,
            (ClaimOp::OneOf(list), Some(v)) => {
                let text = claim_text(v);
                list.iter().any(|item| *item == text)
            }
            (ClaimOp::Contains(want), Some(serde_json::Value::Array(items))) => {
                items.iter().any(|item| claim_text(item) == want.as_str())
            }
            (ClaimOp::Contains(want), Some(serde_json::Value::String(text))) => {
                text.split(' ').any(|word| word == want)
            }
            // An exact claim, and `contains` on a claim neither array nor string: equal as text.
            (ClaimOp::Exact(want) | ClaimOp::Contains(want), Some(v)) => {
                claim_text(v) == want.as_str()
            }
            (ClaimOp::Substring(want), Some(serde_json::Value::Array(items))) => items
                .iter()
                .any(|item| claim_text(item).contains(want.as_str())),
            (ClaimOp::Substring(want), Some(v)) => claim_text(v).contains(want.as_str()),
            (ClaimOp::Regex(regex), Some(v)) => regex.is_match(&claim_text(v)),
        }
    }

    fn describe(&self) -> String {
        match self {
            ClaimOp::Exact(want) => format!("exact {want:?}"),
            ClaimOp::OneOf(list) => format!("one_of {list:?}"),
            ClaimOp::Contains(want) => format!("contains {want:?}"),
            ClaimOp::Substring(want) => format!("substring {want:?}"),
            ClaimOp::Regex(regex) => format!("regex {:?}", regex.as_str()),
            ClaimOp::Present => "present".to_owned(),
            ClaimOp::Absent => "absent".to_owned(),
        }
    }
}

/// One compiled condition; a rule's `when` is an [`Condition::All`].
#[derive(Debug, Clone)]
pub(crate) enum Condition {
    /// The check arrived on this transport.
    Transport(Transport),
    /// The method is one of these, compared as [`MethodCase`] says.
    Method(Vec<String>, MethodCase),
    /// The canonical path without its query matches.
    Path(StringMatch),
    /// The canonical authority matches (compiled case-insensitive).
    Host(StringMatch),
    /// The source principal matches.
    Principal(StringMatch),
    /// The protocol is one of these.
    Protocol(Vec<String>),
    /// The source IP is in one of these networks.
    SourceIp(Vec<IpNet>),
    /// The destination IP is in one of these networks.
    DestinationIp(Vec<IpNet>),
    /// A header (lower-case name) satisfies the op, reading its copies as [`Copies`] says.
    Header(String, EntryOp, Copies),
    /// A context extension satisfies the op.
    Context(String, EntryOp),
    /// Every inner condition holds (an empty list holds).
    All(Vec<Condition>),
    /// At least one inner condition holds.
    Any(Vec<Condition>),
    /// The inner condition does not hold.
    Not(Box<Condition>),
    /// A claim of the verified JWT satisfies the op (never holds without claims).
    Claim(ClaimPath, ClaimOp),
    /// A column of the lookup row satisfies the op (NULL counts as absent).
    Db(String, EntryOp),
}

impl Condition {
    /// Whether this condition, or one nested in it, looks at the source IP.
    pub(crate) fn uses_source_ip(&self) -> bool {
        match self {
            Condition::SourceIp(_) => true,
            Condition::All(inner) | Condition::Any(inner) => {
                inner.iter().any(Condition::uses_source_ip)
            }
            Condition::Not(inner) => inner.uses_source_ip(),
            _ => false,
        }
    }

    /// Whether the condition holds: [`Condition::holds_or_why`] without building the reason,
    /// for evaluations nobody traces. The two must agree; `holds_or_why` is the explained twin.
    pub(crate) fn holds(&self, request: &Request, identity: Option<&Identity>) -> bool {
        match self {
            Condition::Transport(want) => request.transport == *want,
            Condition::Method(methods, case) => case.matches(methods, &request.method),
            Condition::Path(m) => m.matches(path_without_query(request)),
            Condition::Host(m) => m.matches(canonical::host_name(&request.host)),
            Condition::Principal(m) => m.matches(&request.source.principal),
            Condition::Protocol(protocols) => protocols.contains(&request.protocol),
            Condition::SourceIp(nets) => ip_in(nets, request.source.ip),
            Condition::DestinationIp(nets) => ip_in(nets, request.destination.ip),
            Condition::Header(name, op, copies) => header_holds(op, *copies, request.header(name)),
            Condition::Context(name, op) => {
                entry_holds(op, request.context_extensions.get(name).map(String::as_str))
            }
            Condition::All(conditions) => conditions.iter().all(|c| c.holds(request, identity)),
            Condition::Any(conditions) => conditions.iter().any(|c| c.holds(request, identity)),
            Condition::Not(inner) => !inner.holds(request, identity),
            Condition::Claim(path, op) => op.holds(
                identity
                    .and_then(|identity| identity.claim(path))
                    .filter(|value| !value.is_null()),
            ),
            Condition::Db(column, op) => {
                entry_holds(op, identity.and_then(|identity| identity.column(column)))
            }
        }
    }

    /// `Ok` when the condition holds; otherwise why not, for the trace. `identity` is the rule's
    /// verified identity for `claims` and `db` conditions (`None` in a request-level `when`,
    /// where they do not hold).
    pub(crate) fn holds_or_why(
        &self,
        request: &Request,
        identity: Option<&Identity>,
    ) -> Result<(), String> {
        match self {
            Condition::Transport(want) if request.transport == *want => Ok(()),
            Condition::Transport(want) => Err(format!(
                "transport is {}, want {}",
                request.transport.as_str(),
                want.as_str()
            )),
            Condition::Method(methods, case) if case.matches(methods, &request.method) => Ok(()),
            Condition::Method(methods, _) => {
                Err(format!("method {:?} not in {methods:?}", request.method))
            }
            Condition::Path(m) => string_or_why("path", m, path_without_query(request)),
            // The name only: a backend picks its virtual host by name whatever the port, so
            // `admin.example.com:8443` is still admin.example.com (gateway routing agrees).
            Condition::Host(m) => string_or_why("host", m, canonical::host_name(&request.host)),
            Condition::Principal(m) => string_or_why("principal", m, &request.source.principal),
            Condition::Protocol(protocols) if protocols.contains(&request.protocol) => Ok(()),
            Condition::Protocol(protocols) => Err(format!("protocol not in {protocols:?}")),
            Condition::SourceIp(nets) => ip_or_why("source ip", nets, request.source.ip),
            Condition::DestinationIp(nets) => {
                ip_or_why("destination ip", nets, request.destination.ip)
            }
            Condition::Header(name, op, copies) => header_or_why(name, op, *copies, request),
            Condition::Context(name, op) => entry_or_why(
                "context extension",
                name,
                op,
                request.context_extensions.get(name).map(String::as_str),
            ),
            Condition::All(conditions) => conditions
                .iter()
                .try_for_each(|c| c.holds_or_why(request, identity)),
            Condition::Any(conditions) => any_or_why(conditions, request, identity),
            Condition::Not(inner) => match inner.holds_or_why(request, identity) {
                Ok(()) => Err("`not` condition held".to_owned()),
                Err(_) => Ok(()),
            },
            Condition::Claim(path, op) => claim_or_why(path, op, identity),
            Condition::Db(column, op) => entry_or_why(
                "db column",
                column,
                op,
                identity.and_then(|identity| identity.column(column)),
            ),
        }
    }
}

/// [`Condition::holds_or_why`] for a header: copies joined with `,` are read as the condition's
/// [`Copies`] says (any copy in a deny, every copy in an allow).
fn header_or_why(
    name: &str,
    op: &EntryOp,
    copies: Copies,
    request: &Request,
) -> Result<(), String> {
    let value = request.header(name);
    match op {
        EntryOp::Value(_) if header_holds(op, copies, value) => Ok(()),
        EntryOp::Value(m) if copies == Copies::Every && value.is_some_and(|v| v.contains(',')) => {
            Err(format!(
                "header {name}: not every copy matches {}",
                m.describe()
            ))
        }
        _ => entry_or_why("header", name, op, value),
    }
}

/// [`Condition::holds_or_why`] for `any`: the first condition that holds, or how many did not.
fn any_or_why(
    conditions: &[Condition],
    request: &Request,
    identity: Option<&Identity>,
) -> Result<(), String> {
    if conditions
        .iter()
        .any(|c| c.holds_or_why(request, identity).is_ok())
    {
        Ok(())
    } else {
        Err(format!(
            "none of {} `any` conditions held",
            conditions.len()
        ))
    }
}

/// [`Condition::holds_or_why`] for a claim. Claim values may be personal data: the reason names
/// the claim and the test only.
fn claim_or_why(path: &ClaimPath, op: &ClaimOp, identity: Option<&Identity>) -> Result<(), String> {
    let value = identity
        .and_then(|identity| identity.claim(path))
        .filter(|value| !value.is_null());
    if op.holds(value) {
        Ok(())
    } else if value.is_none() && !matches!(op, ClaimOp::Absent) {
        Err(format!("claim {} absent", path.name))
    } else {
        Err(format!("claim {} is not {}", path.name, op.describe()))
    }
}

/// The canonical path as path conditions see it: without the query.
pub(crate) fn path_without_query(request: &Request) -> &str {
    request.path.split('?').next().unwrap_or_default()
}

/// Whether `ip` (an IPv4 client seen through a dual-stack socket as ::ffff:a.b.c.d too) is in
/// one of `nets`.
fn ip_in(nets: &[IpNet], ip: Option<IpAddr>) -> bool {
    let Some(ip) = ip else {
        return false;
    };
    let mapped = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    };
    nets.iter()
        .any(|net| net.contains(&ip) || mapped.is_some_and(|m| net.contains(&m)))
}

/// [`entry_holds`] for a header, reading its copies as `copies` says.
fn header_holds(op: &EntryOp, copies: Copies, value: Option<&str>) -> bool {
    match (op, value) {
        (EntryOp::Value(m), Some(value)) => copies.matches(m, value),
        _ => entry_holds(op, value),
    }
}

fn entry_holds(op: &EntryOp, value: Option<&str>) -> bool {
    match (op, value) {
        (EntryOp::Present, found) => found.is_some(),
        (EntryOp::Absent, found) => found.is_none(),
        (EntryOp::Value(m), Some(value)) => m.matches(value),
        (EntryOp::Value(_), None) => false,
    }
}

fn string_or_why(what: &str, m: &StringMatch, value: &str) -> Result<(), String> {
    if m.matches(value) {
        Ok(())
    } else {
        Err(format!("{what} does not match {}", m.describe()))
    }
}

fn ip_or_why(what: &str, nets: &[IpNet], ip: Option<IpAddr>) -> Result<(), String> {
    if ip.is_none() {
        return Err(format!("no {what}"));
    }
    if ip_in(nets, ip) {
        Ok(())
    } else {
        let list: Vec<String> = nets.iter().map(ToString::to_string).collect();
        Err(format!("{what} not in [{}]", list.join(", ")))
    }
}

fn entry_or_why(what: &str, name: &str, op: &EntryOp, value: Option<&str>) -> Result<(), String> {
    match (op, value) {
        (EntryOp::Present, Some(_)) | (EntryOp::Absent, None) => Ok(()),
        (EntryOp::Present | EntryOp::Value(_), None) => Err(format!("{what} {name} absent")),
        (EntryOp::Absent, Some(_)) => Err(format!("{what} {name} present")),
        (EntryOp::Value(m), Some(value)) if m.matches(value) => Ok(()),
        (EntryOp::Value(m), Some(_)) => {
            Err(format!("{what} {name} does not match {}", m.describe()))
        }
    }
}

#[cfg(test)]
mod tests;
