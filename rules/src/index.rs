//! Which rules can match a request, found without trying each one.
//!
//! A rule's `when` is a conjunction; when one of its top-level conditions is an exact path, an
//! exact host, a case-sensitive exact header value, a list of source networks or a path regex,
//! that condition is *necessary*: a request that fails it cannot match the rule. Such a rule is
//! filed under that key (hash maps for exact values and for networks, one per prefix length;
//! one [`RegexSet`] pass for path regexes), every other rule
//! is a candidate for every request, and the candidates of a request are yielded in file order
//! — so precedence ([`crate::RuleSet::evaluate_traced`]) is unchanged: the index only skips
//! rules whose `when` would not hold, and each candidate is still tried in full.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use regex::{RegexSet, RegexSetBuilder};

use crate::matcher::{Condition, Copies, EntryOp, StringMatch, StringOp, path_without_query};
use crate::request::Request;

/// Distinct header names indexed at most; rules keyed on other names fall back to another key
/// or to "always a candidate". Bounds the sources merged per request.
const MAX_HEADER_NAMES: usize = 5;

/// The sources merged per request: always, path, host, source networks, path regexes, and the
/// header names.
const MAX_SOURCES: usize = 5 + MAX_HEADER_NAMES;

/// Combined compiled size allowed for the path regex set; over it, those rules are simply
/// always candidates.
const REGEX_SET_SIZE_LIMIT: usize = 64 << 20;

/// The index of a rule set (rule positions are `u32`, in file order).
#[derive(Debug, Clone, Default)]
pub(crate) struct RuleIndex {
    /// Rules with no indexed key: candidates for every request (ascending).
    always: Vec<u32>,
    /// Exact canonical path (query excluded) to rules.
    paths: HashMap<String, Vec<u32>>,
    /// Exact host name (lower case, no port) to rules.
    hosts: HashMap<String, Vec<u32>>,
    /// Header name to exact value to rules.
    headers: Vec<(String, HashMap<String, Vec<u32>>)>,
    /// Path regexes, one pattern per rule, and the rule of each pattern (ascending).
    path_regexes: Option<(RegexSet, Vec<u32>)>,
    /// Rules whose `source_ip` networks are known, by prefix length: the network address (host
    /// bits zero) to rules, one table per address family and prefix length in use.
    source_nets: Vec<NetTable>,
}

/// Networks of one address family and prefix length, by network address, to rules.
#[derive(Debug, Clone)]
struct NetTable {
    v6: bool,
    prefix_len: u8,
    rules: HashMap<IpAddr, Vec<u32>>,
}

/// The key a rule is filed under.
enum Key<'c> {
    Path(&'c str),
    Host(&'c str),
    Header(&'c str, &'c str),
    SourceIp(&'c [IpNet]),
    PathRegex(String),
}

impl RuleIndex {
    /// Indexes rules by their `when`s, given in file order.
    pub(crate) fn new<'c>(whens: impl Iterator<Item = &'c Condition> + Clone) -> Self {
        let header_names = popular_header_names(whens.clone());
        let mut index = RuleIndex::default();
        let mut regexes: Vec<(String, u32)> = Vec::new();
        for (position, when) in whens.enumerate() {
            let position = u32::try_from(position).unwrap_or(u32::MAX);
            match key(when, &header_names) {
                Some(Key::Path(path)) => file(&mut index.paths, path, position),
                Some(Key::Host(host)) => file(&mut index.hosts, host, position),
                Some(Key::Header(name, value)) => {
                    let slot = match index.headers.iter().position(|(n, _)| n == name) {
                        Some(slot) => slot,
                        None => {
                            index.headers.push((name.to_owned(), HashMap::new()));
                            index.headers.len() - 1
                        }
                    };
                    file(&mut index.headers[slot].1, value, position);
                }
                Some(Key::SourceIp(nets)) => {
                    for net in nets {
                        index.file_net(net, position);
                    }
                }
                Some(Key::PathRegex(pattern)) => regexes.push((pattern, position)),
                None => index.always.push(position),
            }
        }
        if !regexes.is_empty() {
            let set = RegexSetBuilder::new(regexes.iter().map(|(pattern, _)| pattern))
                .size_limit(REGEX_SET_SIZE_LIMIT)
                .build();
            match set {
                Ok(set) => {
                    index.path_regexes = Some((set, regexes.iter().map(|(_, p)| *p).collect()));
                }
                Err(_) => {
                    // Too big together: those rules are tried on every request, as unindexed.
                    index.always.extend(regexes.iter().map(|(_, p)| *p));
                    index.always.sort_unstable();
                }
            }
        }
        index
    }

    /// Whether every rule is a candidate for every request (nothing is indexed).
    pub(crate) fn is_trivial(&self) -> bool {
        self.paths.is_empty()
            && self.hosts.is_empty()
            && self.headers.is_empty()
            && self.path_regexes.is_none()
            && self.source_nets.is_empty()
    }

    /// Files a rule under one of its source networks.
    fn file_net(&mut self, net: &IpNet, position: u32) {
        let (v6, prefix_len) = (matches!(net, IpNet::V6(_)), net.prefix_len());
        let slot = match self
            .source_nets
            .iter()
            .position(|t| t.v6 == v6 && t.prefix_len == prefix_len)
        {
            Some(slot) => slot,
            None => {
                self.source_nets.push(NetTable {
                    v6,
                    prefix_len,
                    rules: HashMap::new(),
                });
                self.source_nets.len() - 1
            }
        };
        let rules = self.source_nets[slot]
            .rules
            .entry(net.network())
            .or_default();
        // A rule listing overlapping networks is filed once per network; kept ascending.
        if rules.last() != Some(&position) {
            rules.push(position);
        }
    }

    /// Appends the rules filed under a network holding `ip` (or, for an IPv4 client seen
    /// through a dual-stack socket as `::ffff:a.b.c.d`, its IPv4 address: see the `source_ip`
    /// condition), ascending and each once.
    fn source_candidates(&self, ip: Option<IpAddr>, hits: &mut Vec<u32>) {
        let Some(ip) = ip else {
            return;
        };
        let start = hits.len();
        let mapped = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        for table in &self.source_nets {
            for address in [Some(ip), mapped].into_iter().flatten() {
                if table.v6 != address.is_ipv6() {
                    continue;
                }
                let Ok(net) = IpNet::new(address, table.prefix_len) else {
                    continue;
                };
                if let Some(rules) = table.rules.get(&net.network()) {
                    hits.extend_from_slice(rules);
                }
            }
        }
        if let Some(found) = hits.get_mut(start..) {
            found.sort_unstable();
        }
        let mut kept = start;
        for i in start..hits.len() {
            if kept == start || hits[kept - 1] != hits[i] {
                hits[kept] = hits[i];
                kept += 1;
            }
        }
        hits.truncate(kept);
    }

    /// The positions of the rules that may match `request` (already canonical), ascending.
    /// `hits` holds the path regex and source network matches while the candidates are read.
    pub(crate) fn candidates<'i>(
        &'i self,
        request: &Request,
        hits: &'i mut Vec<u32>,
    ) -> Candidates<'i> {
        let mut candidates = Candidates {
            sources: [&[]; MAX_SOURCES],
            used: 0,
        };
        let mut add = |rules: &'i [u32]| {
            if let Some(free) = candidates.sources.get_mut(candidates.used) {
                *free = rules;
                candidates.used += 1;
            }
        };
        add(&self.always);
        let path = path_without_query(request);
        if let Some(rules) = self.paths.get(path) {
            add(rules);
        }
        if !self.hosts.is_empty() {
            let host = canonical::host_name(&request.host);
            let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                Cow::Owned(host.to_ascii_lowercase())
            } else {
                Cow::Borrowed(host)
            };
            if let Some(rules) = self.hosts.get(host.as_ref()) {
                add(rules);
            }
        }
        for (name, values) in &self.headers {
            let Some(value) = request.header(name) else {
                continue;
            };
            if let Some(rules) = values.get(header_key(name, value)) {
                add(rules);
            }
        }
        hits.clear();
        if let Some((set, positions)) = &self.path_regexes {
            hits.extend(
                set.matches(path)
                    .iter()
                    .filter_map(|i| positions.get(i).copied()),
            );
        }
        let regex_count = hits.len();
        self.source_candidates(request.source.ip, hits);
        let hits: &'i Vec<u32> = hits;
        let (regex_hits, source_hits) = hits.split_at(regex_count);
        for found in [regex_hits, source_hits] {
            if !found.is_empty() {
                add(found);
            }
        }
        candidates
    }
}

/// The value a header is looked up by. Only conditions read whole (pseudo-headers) or needing
/// every copy to match are filed (see `exact_header`). Copies joined with `,` all equal the filed
/// value when such a condition holds, so the first copy finds it; the joined value never could.
fn header_key<'v>(name: &str, value: &'v str) -> &'v str {
    match value.split_once(',') {
        Some((first, _)) if !name.starts_with(':') => first.trim_matches(|c| c == ' ' || c == '\t'),
        _ => value,
    }
}

/// Rule positions from a few ascending sources, merged ascending without repeats.
pub(crate) struct Candidates<'i> {
    sources: [&'i [u32]; MAX_SOURCES],
    /// How many of `sources` are filled.
    used: usize,
}

impl Iterator for Candidates<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let sources = self.sources.get_mut(..self.used)?;
        if let [only] = sources {
            // The common case (no indexed key matched): nothing to merge.
            let (&first, rest) = only.split_first()?;
            *only = rest;
            return Some(first as usize);
        }
        let least = sources.iter().filter_map(|s| s.first()).min().copied()?;
        for source in sources.iter_mut() {
            if let Some((&first, rest)) = source.split_first()
                && first == least
            {
                *source = rest;
            }
        }
        Some(least as usize)
    }
}

fn file(map: &mut HashMap<String, Vec<u32>>, key: &str, position: u32) {
    map.entry(key.to_owned()).or_default().push(position);
}

/// The top-level conditions of a `when` (nested `all`s flattened; `any` and `not` are not
/// necessary conditions and stay whole).
fn conjuncts<'c>(when: &'c Condition, out: &mut Vec<&'c Condition>) {
    match when {
        Condition::All(inner) => inner.iter().for_each(|c| conjuncts(c, out)),
        other => out.push(other),
    }
}

/// A case-sensitive exact header condition's name and value.
fn exact_header(condition: &Condition) -> Option<(&str, &str)> {
    match condition {
        // A condition that holds when any copy matches is not filed: a request's value may
        // join any number of copies, and each would need a lookup.
        Condition::Header(name, EntryOp::Value(m), copies) if *copies != Copies::Any => {
            match (m.op(), m.ignore_case()) {
                (StringOp::Exact(value), false) => Some((name, value)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The header names most rules could be filed under.
fn popular_header_names<'c>(whens: impl Iterator<Item = &'c Condition>) -> Vec<&'c str> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    let mut found = Vec::new();
    for when in whens {
        found.clear();
        conjuncts(when, &mut found);
        if let Some((name, _)) = found.iter().copied().find_map(exact_header) {
            *counts.entry(name).or_default() += 1;
        }
    }
    let mut names: Vec<(&str, usize)> = counts.into_iter().collect();
    names.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    names
        .into_iter()
        .take(MAX_HEADER_NAMES)
        .map(|(n, _)| n)
        .collect()
}

/// The key a rule is filed under: the first exact path, else exact host, else exact header on
/// an indexed name, else source networks, else path regex, among its top-level conditions.
fn key<'c>(when: &'c Condition, header_names: &[&str]) -> Option<Key<'c>> {
    let mut found: Vec<&'c Condition> = Vec::new();
    conjuncts(when, &mut found);
    let exact = |m: &'c StringMatch| match m.op() {
        StringOp::Exact(value) => Some(value.as_str()),
        _ => None,
    };
    let conditions = || found.iter().copied();
    let path = conditions().find_map(|c| match c {
        Condition::Path(m) if !m.ignore_case() => exact(m),
        _ => None,
    });
    if let Some(path) = path {
        return Some(Key::Path(path));
    }
    // Host patterns are compiled lower case and compared ignoring case: file them lower case.
    let host = conditions().find_map(|c| match c {
        Condition::Host(m) if m.ignore_case() => exact(m),
        _ => None,
    });
    if let Some(host) = host {
        return Some(Key::Host(host));
    }
    let header = conditions()
        .filter_map(exact_header)
        .find(|(name, _)| header_names.contains(name));
    if let Some((name, value)) = header {
        return Some(Key::Header(name, value));
    }
    let nets = conditions().find_map(|c| match c {
        Condition::SourceIp(nets) => Some(nets.as_slice()),
        _ => None,
    });
    if let Some(nets) = nets {
        return Some(Key::SourceIp(nets));
    }
    conditions().find_map(|c| match c {
        Condition::Path(m) => match m.op() {
            // The compiled regex is anchored already; its case flag is the matcher's.
            StringOp::Regex(regex) if m.ignore_case() => {
                Some(Key::PathRegex(format!("(?i){}", regex.as_str())))
            }
            StringOp::Regex(regex) => Some(Key::PathRegex(regex.as_str().to_owned())),
            _ => None,
        },
        _ => None,
    })
}
