//! Compiling `when` tables into [`Condition`]s.

use std::net::IpAddr;

use ipnet::IpNet;
use toml::Spanned;

use super::{Compiler, MAX_NESTING};
use crate::config::{OneOrMany, RawHeaderMatch, RawStringMatch, RawWhen, TransportName};
use crate::error::Invalid;
use crate::matcher::{Condition, EntryOp, StringMatch, StringOp, compile_regex};
use crate::request::Transport;

const STRING_OPS: &str = "`exact`, `prefix`, `suffix`, `contains`, `regex`";
const ENTRY_OPS: &str = "`exact`, `prefix`, `suffix`, `contains`, `regex`, `present`, `absent`";

/// The operation fields of one matcher, by name, as written.
type Ops<'r> = [(&'static str, Option<&'r Spanned<String>>); 5];

impl Compiler<'_> {
    /// Compiles a `when` table at nesting `depth` (the rule's own `when` is depth 0).
    pub(super) fn when(&mut self, raw: &Spanned<RawWhen>, depth: usize) -> Option<Condition> {
        if depth > MAX_NESTING {
            self.fail(raw.span().start, Invalid::TooDeep { max: MAX_NESTING });
            return None;
        }
        let RawWhen {
            transport,
            method,
            path,
            host,
            principal,
            protocol,
            source_ip,
            destination_ip,
            headers,
            context_extensions,
            all,
            any,
            not,
        } = raw.get_ref();
        let mut conditions: Vec<Option<Condition>> = Vec::new();
        if let Some(transport) = transport {
            conditions.push(Some(Condition::Transport(match transport {
                TransportName::Grpc => Transport::Grpc,
                TransportName::Http => Transport::Http,
            })));
        }
        if let Some(method) = method {
            conditions.push(self.word_list("method", method).map(Condition::Method));
        }
        if let Some(protocol) = protocol {
            conditions.push(
                self.word_list("protocol", protocol)
                    .map(Condition::Protocol),
            );
        }
        if let Some(host) = host {
            conditions.push(self.string_match(host).map(Condition::Host));
        }
        if let Some(path) = path {
            conditions.push(self.string_match(path).map(Condition::Path));
        }
        if let Some(principal) = principal {
            conditions.push(self.string_match(principal).map(Condition::Principal));
        }
        if let Some(ips) = source_ip {
            conditions.push(self.cidrs("source_ip", ips).map(Condition::SourceIp));
        }
        if let Some(ips) = destination_ip {
            conditions.push(
                self.cidrs("destination_ip", ips)
                    .map(Condition::DestinationIp),
            );
        }
        for header in headers {
            conditions.push(self.header_match(header));
        }
        for entry in context_extensions {
            conditions.push(self.context_match(entry));
        }
        for nested in all {
            conditions.push(self.when(nested, depth + 1));
        }
        if !any.is_empty() {
            let nested: Vec<_> = any.iter().map(|w| self.when(w, depth + 1)).collect();
            conditions.push(
                nested
                    .into_iter()
                    .collect::<Option<_>>()
                    .map(Condition::Any),
            );
        }
        if let Some(not) = not {
            let inner = self.when(not, depth + 1);
            conditions.push(inner.map(|c| Condition::Not(Box::new(c))));
        }
        conditions
            .into_iter()
            .collect::<Option<_>>()
            .map(Condition::All)
    }

    /// A non-empty list of exact strings (methods, protocols).
    fn word_list(&mut self, field: &'static str, raw: &Spanned<OneOrMany>) -> Option<Vec<String>> {
        let words: Vec<String> = match raw.get_ref() {
            OneOrMany::One(word) => vec![word.clone()],
            OneOrMany::Many(words) => words.iter().map(|w| w.get_ref().clone()).collect(),
        };
        if words.is_empty() {
            self.fail(raw.span().start, Invalid::EmptyList { field });
            return None;
        }
        Some(words)
    }

    /// A non-empty list of networks; a bare address is a /32 or /128.
    fn cidrs(&mut self, field: &'static str, raw: &Spanned<OneOrMany>) -> Option<Vec<IpNet>> {
        let items: Vec<(&str, usize)> = match raw.get_ref() {
            OneOrMany::One(item) => vec![(item.as_str(), raw.span().start)],
            OneOrMany::Many(items) => items
                .iter()
                .map(|i| (i.get_ref().as_str(), i.span().start))
                .collect(),
        };
        if items.is_empty() {
            self.fail(raw.span().start, Invalid::EmptyList { field });
            return None;
        }
        let mut nets = Vec::with_capacity(items.len());
        let mut all_ok = true;
        for (item, offset) in items {
            let parsed = item
                .parse::<IpNet>()
                .ok()
                .or_else(|| item.parse::<IpAddr>().ok().map(IpNet::from));
            match parsed {
                Some(net) => nets.push(net),
                None => {
                    all_ok = false;
                    let value = item.to_owned();
                    self.fail(offset, Invalid::Cidr { value });
                }
            }
        }
        all_ok.then_some(nets)
    }

    fn string_match(&mut self, raw: &Spanned<RawStringMatch>) -> Option<StringMatch> {
        let RawStringMatch {
            exact,
            prefix,
            suffix,
            contains,
            regex,
            ignore_case,
        } = raw.get_ref();
        let ops = [
            ("exact", exact.as_ref()),
            ("prefix", prefix.as_ref()),
            ("suffix", suffix.as_ref()),
            ("contains", contains.as_ref()),
            ("regex", regex.as_ref()),
        ];
        let found = names(ops.iter().filter(|(_, v)| v.is_some()).map(|(n, _)| *n));
        if found.0 != 1 {
            self.fail(
                raw.span().start,
                ops_error("string matcher", STRING_OPS, found),
            );
            return None;
        }
        self.one_op(&ops, *ignore_case)
    }

    /// The single op of a matcher already checked to have exactly one.
    fn one_op(&mut self, ops: &Ops<'_>, ignore_case: bool) -> Option<StringMatch> {
        let (name, value) = ops.iter().find_map(|(n, v)| v.map(|v| (*n, v)))?;
        let text = value.get_ref().clone();
        let op = match name {
            "exact" => StringOp::Exact(text),
            "prefix" => StringOp::Prefix(text),
            "suffix" => StringOp::Suffix(text),
            "contains" => StringOp::Contains(text),
            _ => match compile_regex(&text, ignore_case) {
                Ok(regex) => StringOp::Regex(regex),
                Err(reason) => {
                    let pattern = text;
                    self.fail(value.span().start, Invalid::Regex { pattern, reason });
                    return None;
                }
            },
        };
        Some(StringMatch::new(op, ignore_case))
    }

    fn header_match(&mut self, raw: &Spanned<RawHeaderMatch>) -> Option<Condition> {
        let name = &raw.get_ref().name;
        let lower = self.header_name(name, true);
        let op = self.entry_op(raw);
        Some(Condition::Header(lower?, op?))
    }

    fn context_match(&mut self, raw: &Spanned<RawHeaderMatch>) -> Option<Condition> {
        let name = raw.get_ref().name.get_ref().clone();
        self.entry_op(raw).map(|op| Condition::Context(name, op))
    }

    fn entry_op(&mut self, raw: &Spanned<RawHeaderMatch>) -> Option<EntryOp> {
        let RawHeaderMatch {
            name: _,
            exact,
            prefix,
            suffix,
            contains,
            regex,
            present,
            absent,
            ignore_case,
        } = raw.get_ref();
        let ops = [
            ("exact", exact.as_ref()),
            ("prefix", prefix.as_ref()),
            ("suffix", suffix.as_ref()),
            ("contains", contains.as_ref()),
            ("regex", regex.as_ref()),
        ];
        let flags = [("present", present), ("absent", absent)];
        let found = names(
            ops.iter()
                .filter(|(_, v)| v.is_some())
                .map(|(n, _)| *n)
                .chain(flags.iter().filter(|(_, v)| v.is_some()).map(|(n, _)| *n)),
        );
        if found.0 != 1 {
            let what = "header or context_extensions matcher";
            self.fail(raw.span().start, ops_error(what, ENTRY_OPS, found));
            return None;
        }
        // `present = false` reads as "must be absent", as in Envoy's `present_match`.
        match (present, absent) {
            (Some(true), _) | (_, Some(false)) => Some(EntryOp::Present),
            (Some(false), _) | (_, Some(true)) => Some(EntryOp::Absent),
            (None, None) => self.one_op(&ops, *ignore_case).map(EntryOp::Value),
        }
    }
}

/// How many ops were given, and their names for the error.
fn names<'n>(found: impl Iterator<Item = &'n str>) -> (usize, String) {
    let found: Vec<String> = found.map(|n| format!("`{n}`")).collect();
    (found.len(), found.join(", "))
}

fn ops_error(what: &'static str, expected: &'static str, found: (usize, String)) -> Invalid {
    let found = match found {
        (0, _) => "none".to_owned(),
        (n, list) => format!("{n} ({list})"),
    };
    Invalid::MatcherOps {
        what,
        expected,
        found,
    }
}
