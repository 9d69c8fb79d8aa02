//! Compiling `when` tables into [`Condition`]s.

use std::net::IpAddr;

use ipnet::IpNet;
use regex::Regex;
use toml::Spanned;

use super::{Compiler, MAX_NESTING};
use crate::config::{
    OneOrMany, RawClaimMatch, RawDbMatch, RawHeaderMatch, RawStringMatch, RawWhen, TransportName,
};
use crate::error::Invalid;
use crate::identity::ClaimPath;
use crate::matcher::{
    ClaimOp, Condition, Copies, EntryOp, MethodCase, StringMatch, StringOp, compile_regex,
};
use crate::request::Transport;

const STRING_OPS: &str = "`exact`, `prefix`, `suffix`, `contains`, `regex`";
const ENTRY_OPS: &str = "`exact`, `prefix`, `suffix`, `contains`, `regex`, `present`, `absent`";
const CLAIM_OPS: &str =
    "`exact` (or `equals`), `one_of`, `contains`, `substring`, `regex`, `present`";

/// The operation fields of one matcher, by name, as written.
type Ops<'r> = [(&'static str, Option<&'r Spanned<String>>); 5];

impl Compiler<'_> {
    /// Compiles a `when` table at nesting `depth` (the rule's own `when` is depth 0). The
    /// conditions are tried in the order built here: identity, request fields, headers and
    /// context extensions, then nested tables.
    pub(super) fn when(&mut self, raw: &Spanned<RawWhen>, depth: usize) -> Option<Condition> {
        if depth > MAX_NESTING {
            self.fail(raw.span().start, Invalid::TooDeep { max: MAX_NESTING });
            return None;
        }
        let when = raw.get_ref();
        let mut conditions: Vec<Option<Condition>> = Vec::new();
        for claim in &when.claims {
            conditions.push(self.claim_match(claim));
        }
        for column in &when.db {
            conditions.push(self.db_match(column));
        }
        self.request_conditions(when, &mut conditions);
        self.nested_conditions(when, depth, &mut conditions);
        conditions
            .into_iter()
            .collect::<Option<_>>()
            .map(Condition::All)
    }

    /// The conditions on the request itself: transport, method, protocol, host, path,
    /// principal, addresses, headers and context extensions.
    fn request_conditions(&mut self, raw: &RawWhen, conditions: &mut Vec<Option<Condition>>) {
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
            all: _,
            any: _,
            not: _,
            claims: _,
            db: _,
        } = raw;
        if let Some(transport) = transport {
            conditions.push(Some(Condition::Transport(match transport {
                TransportName::Grpc => Transport::Grpc,
                TransportName::Http => Transport::Http,
            })));
        }
        if let Some(method) = method {
            conditions.push(self.method_match(method));
        }
        if let Some(protocol) = protocol {
            let protocols = self.word_list("protocol", protocol);
            conditions.push(protocols.map(Condition::Protocol));
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
            let nets = self.cidrs("destination_ip", ips);
            conditions.push(nets.map(Condition::DestinationIp));
        }
        for header in headers {
            conditions.push(self.header_match(header));
        }
        for entry in context_extensions {
            conditions.push(self.context_match(entry));
        }
    }

    /// The nested `all`, `any` and `not` tables, one level deeper.
    fn nested_conditions(
        &mut self,
        raw: &RawWhen,
        depth: usize,
        conditions: &mut Vec<Option<Condition>>,
    ) {
        for nested in &raw.all {
            conditions.push(self.when(nested, depth + 1));
        }
        if !raw.any.is_empty() {
            let nested: Vec<_> = raw.any.iter().map(|w| self.when(w, depth + 1)).collect();
            let any = nested.into_iter().collect::<Option<_>>();
            conditions.push(any.map(Condition::Any));
        }
        if let Some(not) = &raw.not {
            // What holding leads to flips under `not`, and with it how header copies are read.
            self.header_copies = self.header_copies.flipped();
            let inner = self.when(not, depth + 1);
            self.header_copies = self.header_copies.flipped();
            conditions.push(inner.map(|c| Condition::Not(Box::new(c))));
        }
    }

    /// A method condition, read as [`MethodCase`] says: where holding leads to a deny (header
    /// copies read as any copy), a standard method in another case counts as its upper-case
    /// name; where it leads to an allow, methods compare exactly.
    fn method_match(&mut self, raw: &Spanned<OneOrMany>) -> Option<Condition> {
        let case = match self.header_copies {
            Copies::Any => MethodCase::Standard,
            Copies::Every | Copies::Whole => MethodCase::Exact,
        };
        let methods = self.word_list("method", raw)?;
        Some(Condition::Method(methods, case))
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
        let ops = value_ops([exact, prefix, suffix, contains, regex]);
        let offset = raw.span().start;
        if !self.exactly_one(offset, "string matcher", STRING_OPS, &given(&ops, &[])) {
            return None;
        }
        self.one_op(&ops, *ignore_case || force_ignore_case)
    }

    /// A regex (anchored at both ends), or an error at the pattern.
    fn regex(&mut self, pattern: &Spanned<String>, ignore_case: bool) -> Option<Regex> {
        match compile_regex(pattern.get_ref(), ignore_case) {
            Ok(regex) => Some(regex),
            Err(reason) => {
                let pattern_text = pattern.get_ref().clone();
                self.fail(
                    pattern.span().start,
                    Invalid::Regex {
                        pattern: pattern_text,
                        reason,
                    },
                );
                None
            }
        }
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
            _ => StringOp::Regex(self.regex(value, ignore_case)?),
        };
        Some(StringMatch::new(op, ignore_case))
    }

    fn header_match(&mut self, raw: &Spanned<RawHeaderMatch>) -> Option<Condition> {
        let name = &raw.get_ref().name;
        let lower = self.header_name(name, true);
        let op = self.entry_op(raw);
        let lower = lower?;
        // A pseudo-header is single: read it whole.
        let copies = if lower.starts_with(':') {
            Copies::Whole
        } else {
            self.header_copies
        };
        Some(Condition::Header(lower, op?, copies))
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
        let ops = value_ops([exact, prefix, suffix, contains, regex]);
        let what = "header or context_extensions matcher";
        let flags = [*present, *absent];
        self.entry_ops(raw.span().start, what, &ops, flags, *ignore_case)
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
        let claim = raw.get_ref();
        let given = [
            ("exact", claim.exact.is_some()),
            ("equals", claim.equals.is_some()),
            ("one_of", claim.one_of.is_some()),
            ("contains", claim.contains.is_some()),
            ("substring", claim.substring.is_some()),
            ("regex", claim.regex.is_some()),
            ("present", claim.present.is_some()),
        ];
        if !self.exactly_one(raw.span().start, "claim matcher", CLAIM_OPS, &given) {
            return None;
        }
        let op = self.claim_op(claim)?;
        Some(Condition::Claim(ClaimPath::new(claim.name.get_ref()), op))
    }

    /// The one operation of a claim matcher already checked to have exactly one.
    fn claim_op(&mut self, raw: &RawClaimMatch) -> Option<ClaimOp> {
        let RawClaimMatch {
            name: _,
            exact,
            equals,
            one_of,
            contains,
            substring,
            regex,
            present,
        } = raw;
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
            ClaimOp::Regex(self.regex(pattern, false)?)
        } else if *present == Some(false) {
            ClaimOp::Absent
        } else {
            ClaimOp::Present
        };
        Some(op)
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
        let ops = value_ops([exact, prefix, suffix, contains, regex]);
        let flags = [*present, *absent];
        let op = self.entry_ops(raw.span().start, "db matcher", &ops, flags, *ignore_case)?;
        Some(Condition::Db(column.get_ref().clone(), op))
    }

    /// One entry operation out of the value ops and the `[present, absent]` flags.
    fn entry_ops(
        &mut self,
        offset: usize,
        what: &'static str,
        ops: &Ops<'_>,
        [present, absent]: [Option<bool>; 2],
        ignore_case: bool,
    ) -> Option<EntryOp> {
        let flags = [("present", present), ("absent", absent)];
        if !self.exactly_one(offset, what, ENTRY_OPS, &given(ops, &flags)) {
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

/// A matcher's value operations (`exact`, `prefix`, `suffix`, `contains`, `regex`, in that
/// order), by name: the one place their names are spelled.
fn value_ops(fields: [&Option<Spanned<String>>; 5]) -> Ops<'_> {
    let [exact, prefix, suffix, contains, regex] = fields;
    [
        ("exact", exact.as_ref()),
        ("prefix", prefix.as_ref()),
        ("suffix", suffix.as_ref()),
        ("contains", contains.as_ref()),
        ("regex", regex.as_ref()),
    ]
}

/// Which ops and flags were given, by name, for [`Compiler::exactly_one`].
fn given<'n>(ops: &Ops<'_>, flags: &[(&'n str, Option<bool>)]) -> Vec<(&'n str, bool)> {
    let ops = ops.iter().map(|(name, value)| (*name, value.is_some()));
    let flags = flags.iter().map(|(name, value)| (*name, value.is_some()));
    ops.chain(flags).collect()
}
