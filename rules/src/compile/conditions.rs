//! Compiling `when` tables into [`Condition`]s.

use std::net::IpAddr;

use ipnet::IpNet;
use toml::Spanned;

use super::{Compiler, MAX_NESTING};
use crate::config::{
    OneOrMany, RawClaimMatch, RawDbMatch, RawHeaderMatch, RawStringMatch, RawWhen, TransportName,
};
use crate::error::Invalid;
use crate::identity::ClaimPath;
use crate::matcher::{ClaimOp, Condition, EntryOp, StringMatch, StringOp, compile_regex};
use crate::request::Transport;

const STRING_OPS: &str = "`exact`, `prefix`, `suffix`, `contains`, `regex`";
const ENTRY_OPS: &str = "`exact`, `prefix`, `suffix`, `contains`, `regex`, `present`, `absent`";
const CLAIM_OPS: &str =
    "`exact` (or `equals`), `one_of`, `contains`, `substring`, `regex`, `present`";

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
            claims,
            db,
        } = raw.get_ref();
        let mut conditions: Vec<Option<Condition>> = Vec::new();
        for claim in claims {
            conditions.push(self.claim_match(claim));
        }
        for column in db {
            conditions.push(self.db_match(column));
        }
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
            // The request's host is canonical (lower case); so is every pattern.
            conditions.push(self.host_match(host).map(Condition::Host));
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
    pub(super) fn word_list(
        &mut self,
        field: &'static str,
        raw: &Spanned<OneOrMany>,
    ) -> Option<Vec<String>> {
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
        self.string_match_with(raw, false)
    }

    /// A host matcher: always case-insensitive, as host names are.
    fn host_match(&mut self, raw: &Spanned<RawStringMatch>) -> Option<StringMatch> {
        self.string_match_with(raw, true)
    }

    fn string_match_with(
        &mut self,
        raw: &Spanned<RawStringMatch>,
        force_ignore_case: bool,
    ) -> Option<StringMatch> {
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
        self.one_op(&ops, *ignore_case || force_ignore_case)
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
        let what = "header or context_extensions matcher";
        self.entry_ops(
            raw.span().start,
            what,
            &ops,
            *present,
            *absent,
            *ignore_case,
        )
    }

    /// Whether identity conditions of this kind may appear here; reports why not at `offset`.
    fn identity_allowed(&mut self, offset: usize, claims: bool) -> bool {
        let field = if claims { "claims" } else { "db" };
        match self.identity_conditions {
            None => self.fail(offset, Invalid::IdentityInWhen { field }),
            Some(scope) if claims && !scope.claims => self.fail(offset, Invalid::ClaimsWithoutJwt),
            Some(scope) if !claims && !scope.db => self.fail(offset, Invalid::DbWithoutLookup),
            Some(_) => return true,
        }
        false
    }

    fn claim_match(&mut self, raw: &Spanned<RawClaimMatch>) -> Option<Condition> {
        if !self.identity_allowed(raw.span().start, true) {
            return None;
        }
        let RawClaimMatch {
            name,
            exact,
            equals,
            one_of,
            contains,
            substring,
            regex,
            present,
        } = raw.get_ref();
        let given = [
            ("exact", exact.is_some()),
            ("equals", equals.is_some()),
            ("one_of", one_of.is_some()),
            ("contains", contains.is_some()),
            ("substring", substring.is_some()),
            ("regex", regex.is_some()),
            ("present", present.is_some()),
        ];
        let found = names(given.iter().filter(|(_, g)| *g).map(|(n, _)| *n));
        if found.0 != 1 {
            self.fail(
                raw.span().start,
                ops_error("claim matcher", CLAIM_OPS, found),
            );
            return None;
        }
        let op = if let Some(want) = exact.as_ref().or(equals.as_ref()) {
            ClaimOp::Exact(want.get_ref().clone())
        } else if let Some(list) = one_of {
            if list.get_ref().is_empty() {
                let field = "one_of";
                self.fail(list.span().start, Invalid::EmptyList { field });
                return None;
            }
            ClaimOp::OneOf(list.get_ref().clone())
        } else if let Some(want) = contains {
            ClaimOp::Contains(want.get_ref().clone())
        } else if let Some(want) = substring {
            ClaimOp::Substring(want.get_ref().clone())
        } else if let Some(pattern) = regex {
            match compile_regex(pattern.get_ref(), false) {
                Ok(regex) => ClaimOp::Regex(regex),
                Err(reason) => {
                    let pattern_text = pattern.get_ref().clone();
                    self.fail(
                        pattern.span().start,
                        Invalid::Regex {
                            pattern: pattern_text,
                            reason,
                        },
                    );
                    return None;
                }
            }
        } else if *present == Some(false) {
            ClaimOp::Absent
        } else {
            ClaimOp::Present
        };
        Some(Condition::Claim(ClaimPath::new(name.get_ref()), op))
    }

    fn db_match(&mut self, raw: &Spanned<RawDbMatch>) -> Option<Condition> {
        if !self.identity_allowed(raw.span().start, false) {
            return None;
        }
        let RawDbMatch {
            column,
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
        let op = self.entry_ops(
            raw.span().start,
            "db matcher",
            &ops,
            *present,
            *absent,
            *ignore_case,
        )?;
        Some(Condition::Db(column.get_ref().clone(), op))
    }

    /// One entry operation out of the value ops and the `present` / `absent` flags.
    fn entry_ops(
        &mut self,
        offset: usize,
        what: &'static str,
        ops: &Ops<'_>,
        present: Option<bool>,
        absent: Option<bool>,
        ignore_case: bool,
    ) -> Option<EntryOp> {
        let flags = [("present", present), ("absent", absent)];
        let found = names(
            ops.iter()
                .filter(|(_, v)| v.is_some())
                .map(|(n, _)| *n)
                .chain(flags.iter().filter(|(_, v)| v.is_some()).map(|(n, _)| *n)),
        );
        if found.0 != 1 {
            self.fail(offset, ops_error(what, ENTRY_OPS, found));
            return None;
        }
        // `present = false` reads as "must be absent", as in Envoy's `present_match`.
        match (present, absent) {
            (Some(true), _) | (_, Some(false)) => Some(EntryOp::Present),
            (Some(false), _) | (_, Some(true)) => Some(EntryOp::Absent),
            (None, None) => self.one_op(ops, ignore_case).map(EntryOp::Value),
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
