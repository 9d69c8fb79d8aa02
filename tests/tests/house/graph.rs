//! The import graph between the modules of one crate, and its cycles.
//!
//! Module A has an edge to module B when A's code names something in B: a `use` item (at module
//! level or inside a function), or a qualified path anywhere in its items (`crate::`, `super::`,
//! `self::`, a child module's name, or a name A imported), macro arguments included. A path is
//! resolved to the longest prefix that is a module; when the rest names something that module
//! only imports (`use` or `pub use`, named or glob), it is followed to where it is defined.
//!
//! Not edges:
//! - a `mod` declaration: a parent declaring its child is the tree, not a dependency;
//! - a `use` with a visibility (`pub use`, `pub(crate) use`, ...) at module level: a re-export is
//!   the module's public face — what it offers others — not a dependency of its own code; when
//!   the module's own code names the re-exported item, that use is an edge like any other;
//! - anything in `#[cfg(test)]` modules or items: unit tests reach into the code they test by
//!   design, and are not compiled into the crate.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

use proc_macro2::{Spacing, TokenStream, TokenTree};
use syn::visit::{self, Visit};

use super::tree::{Crate, is_cfg_test, item_attrs};

/// A name a module brings into scope with `use`.
struct Import {
    /// The name it is bound to, or `*` for a glob.
    name: String,
    /// What it names, from the crate root.
    target: Vec<String>,
}

/// What one module defines and imports.
#[derive(Default)]
struct Scope {
    defined: BTreeSet<String>,
    imports: Vec<Import>,
}

/// A path as written in a module, before resolution.
struct Written {
    segments: Vec<String>,
    line: usize,
    /// From a `use` item: a single segment still names something.
    from_use: bool,
}

/// Where an edge was first seen.
#[derive(Clone)]
pub(crate) struct Evidence {
    pub(crate) line: usize,
    pub(crate) path: String,
}

/// The edges of one crate's import graph: (from, to) module indices and where each was seen.
pub(crate) type Edges = BTreeMap<(usize, usize), Evidence>;

/// The import graph of a crate (modules under `#[cfg(test)]` left out).
pub(crate) fn edges(krate: &Crate) -> Edges {
    let mut scopes: Vec<Scope> = Vec::with_capacity(krate.modules.len());
    let mut written: Vec<Vec<Written>> = Vec::with_capacity(krate.modules.len());
    for index in 0..krate.modules.len() {
        let (scope, paths) = read_module(krate, index);
        scopes.push(scope);
        written.push(paths);
    }
    let mut edges = Edges::new();
    for (from, paths) in written.iter().enumerate() {
        if krate.modules[from].test_only {
            continue;
        }
        for path in paths {
            let Some(absolute) = resolve_start(krate, &scopes[from], from, path) else {
                continue;
            };
            let to = locate(krate, &scopes, &absolute, 0);
            if to != from && !krate.modules[to].test_only {
                edges.entry((from, to)).or_insert_with(|| Evidence {
                    line: path.line,
                    path: path.segments.join("::"),
                });
            }
        }
    }
    edges
}

/// A module's scope, and the paths its code writes. Module-level `use` items with a visibility
/// are re-exports: they enter the scope but are not written paths.
fn read_module(krate: &Crate, index: usize) -> (Scope, Vec<Written>) {
    let module = &krate.modules[index];
    let mut scope = Scope::default();
    scope.defined.extend(module.children.keys().cloned());
    let mut collector = Collector::default();
    for item in &module.items {
        if let Some(name) = defined_name(item) {
            scope.defined.insert(name);
        }
        let syn::Item::Use(item_use) = item else {
            collector.visit_item(item);
            continue;
        };
        if item_use.leading_colon.is_some() {
            continue; // `use ::name::...`: another crate
        }
        let public = !matches!(item_use.vis, syn::Visibility::Inherited);
        let line = item_use.use_token.span.start().line;
        for (segments, name) in flatten_use(&item_use.tree) {
            let written = Written {
                segments,
                line,
                from_use: true,
            };
            if let Some(target) = resolve_start(krate, &scope, index, &written) {
                scope.imports.push(Import { name, target });
            }
            if !public {
                collector.written.push(written);
            }
        }
    }
    (scope, collector.written)
}

/// The path from the crate root that `path`, written in module `index`, starts from; `None` for
/// paths outside the crate (other crates, std, locals, generics).
fn resolve_start(
    krate: &Crate,
    scope: &Scope,
    index: usize,
    path: &Written,
) -> Option<Vec<String>> {
    let module = &krate.modules[index];
    let first = path.segments.first()?.as_str();
    if path.segments.len() == 1 && !path.from_use {
        // A lone name only counts when it is one the module imported.
        return scope
            .imports
            .iter()
            .find(|i| i.name == first)
            .map(|i| i.target.clone());
    }
    match first {
        "crate" => Some(path.segments[1..].to_vec()),
        "self" | "super" => {
            let mut base = module.path.clone();
            let mut rest = &path.segments[..];
            if first == "self" {
                rest = &rest[1..];
            }
            while rest.first().is_some_and(|s| s == "super") {
                base.pop()?;
                rest = &rest[1..];
            }
            base.extend(rest.iter().cloned());
            Some(base)
        }
        _ if module.children.contains_key(first) => {
            let mut base = module.path.clone();
            base.extend(path.segments.iter().cloned());
            Some(base)
        }
        _ => {
            let import = scope.imports.iter().find(|i| i.name == first)?;
            let mut base = import.target.clone();
            base.extend(path.segments[1..].iter().cloned());
            Some(base)
        }
    }
}

/// The module that defines what `absolute` names: the longest prefix that is a module, then
/// through that module's imports when the next segment is one.
fn locate(krate: &Crate, scopes: &[Scope], absolute: &[String], depth: usize) -> usize {
    let mut module = 0;
    let mut consumed = 0;
    while let Some(&child) = absolute
        .get(consumed)
        .and_then(|s| krate.modules[module].children.get(s))
    {
        module = child;
        consumed += 1;
    }
    let Some(name) = absolute.get(consumed) else {
        return module;
    };
    let scope = &scopes[module];
    if depth > 8 || scope.defined.contains(name) {
        return module;
    }
    if let Some(import) = scope.imports.iter().find(|i| &i.name == name) {
        let mut next = import.target.clone();
        next.extend(absolute[consumed + 1..].iter().cloned());
        return locate(krate, scopes, &next, depth + 1);
    }
    for glob in scope.imports.iter().filter(|i| i.name == "*") {
        let source = locate(krate, scopes, &glob.target, depth + 1);
        let has = &scopes[source];
        if has.defined.contains(name) || has.imports.iter().any(|i| &i.name == name) {
            let mut next = glob.target.clone();
            next.extend(absolute[consumed..].iter().cloned());
            return locate(krate, scopes, &next, depth + 1);
        }
    }
    module
}

fn defined_name(item: &syn::Item) -> Option<String> {
    let ident = match item {
        syn::Item::Const(i) => &i.ident,
        syn::Item::Enum(i) => &i.ident,
        syn::Item::Fn(i) => &i.sig.ident,
        syn::Item::Macro(i) => i.ident.as_ref()?,
        syn::Item::Static(i) => &i.ident,
        syn::Item::Struct(i) => &i.ident,
        syn::Item::Trait(i) => &i.ident,
        syn::Item::Type(i) => &i.ident,
        syn::Item::Union(i) => &i.ident,
        _ => return None,
    };
    Some(ident.to_string())
}

/// Every leaf of a use tree: its full path and the name it binds (`*` for a glob).
fn flatten_use(tree: &syn::UseTree) -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    flatten_into(tree, &mut Vec::new(), &mut out);
    out
}

fn flatten_into(
    tree: &syn::UseTree,
    prefix: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, String)>,
) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            flatten_into(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) if n.ident == "self" => {
            let name = prefix.last().cloned().unwrap_or_default();
            out.push((prefix.clone(), name));
        }
        syn::UseTree::Name(n) => {
            let mut path = prefix.clone();
            path.push(n.ident.to_string());
            out.push((path, n.ident.to_string()));
        }
        syn::UseTree::Rename(r) => {
            let mut path = prefix.clone();
            if r.ident != "self" {
                path.push(r.ident.to_string());
            }
            out.push((path, r.rename.to_string()));
        }
        syn::UseTree::Glob(_) => out.push((prefix.clone(), "*".to_owned())),
        syn::UseTree::Group(g) => {
            for item in &g.items {
                flatten_into(item, prefix, out);
            }
        }
    }
}

/// Collects the paths written in a module's items, not descending into inline modules (modules
/// of their own) or `#[cfg(test)]` items.
#[derive(Default)]
struct Collector {
    written: Vec<Written>,
}

impl<'ast> Visit<'ast> for Collector {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        if !is_cfg_test(item_attrs(item)) {
            visit::visit_item(self, item);
        }
    }

    fn visit_item_mod(&mut self, _: &'ast syn::ItemMod) {}

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if !is_cfg_test(&f.attrs) {
            visit::visit_impl_item_fn(self, f);
        }
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        // A `use` inside a function body or block (`use ::name::...` is another crate).
        if item.leading_colon.is_some() {
            return;
        }
        let line = item.use_token.span.start().line;
        for (segments, _) in flatten_use(&item.tree) {
            self.written.push(Written {
                segments,
                line,
                from_use: true,
            });
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        match path.segments.first() {
            Some(first) if path.leading_colon.is_none() => self.written.push(Written {
                segments: path.segments.iter().map(|s| s.ident.to_string()).collect(),
                line: first.ident.span().start().line,
                from_use: false,
            }),
            _ => {}
        }
        visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        visit::visit_macro(self, mac);
        scan_tokens(mac.tokens.clone(), &mut self.written);
    }
}

/// Paths of two or more segments (`a::b::c`) in a macro's arguments, which syn leaves as tokens.
fn scan_tokens(tokens: TokenStream, out: &mut Vec<Written>) {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    let is_colon = |t: Option<&TokenTree>, joint: bool| {
        matches!(t, Some(TokenTree::Punct(p)) if p.as_char() == ':'
            && (!joint || p.spacing() == Spacing::Joint))
    };
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            TokenTree::Group(group) => scan_tokens(group.stream(), out),
            TokenTree::Ident(first) if !(i > 0 && is_colon(tokens.get(i - 1), false)) => {
                let mut segments = vec![first.to_string()];
                while is_colon(tokens.get(i + 1), true) && is_colon(tokens.get(i + 2), false) {
                    let Some(TokenTree::Ident(next)) = tokens.get(i + 3) else {
                        break;
                    };
                    segments.push(next.to_string());
                    i += 3;
                }
                if segments.len() > 1 {
                    out.push(Written {
                        segments,
                        line: first.span().start().line,
                        from_use: false,
                    });
                }
            }
            _ => {}
        }
        i += 1;
    }
}

/// One cycle: module indices, the first repeated at the end.
pub(crate) struct Cycle(pub(crate) Vec<usize>);

/// The cycles of the graph: for each strongly connected component, the shortest cycle through
/// each of its modules (so every module caught in a knot is named, without listing every
/// elementary cycle of a large component).
pub(crate) fn cycles(edges: &Edges) -> Vec<Cycle> {
    let mut next: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &(from, to) in edges.keys() {
        next.entry(from).or_default().push(to);
    }
    let mut seen: BTreeSet<Vec<usize>> = BTreeSet::new();
    let mut found = Vec::new();
    for &start in next.keys() {
        let Some(mut cycle) = shortest_cycle(&next, start) else {
            continue;
        };
        // The same cycle found from another of its modules: rotate to its smallest index.
        cycle.pop();
        let smallest = (0..cycle.len()).min_by_key(|&i| cycle[i]).unwrap_or(0);
        cycle.rotate_left(smallest);
        cycle.push(cycle[0]);
        if seen.insert(cycle.clone()) {
            found.push(Cycle(cycle));
        }
    }
    found
}

/// Breadth-first from `start` back to itself.
fn shortest_cycle(next: &BTreeMap<usize, Vec<usize>>, start: usize) -> Option<Vec<usize>> {
    let mut came_from: BTreeMap<usize, usize> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for &to in next.get(&node).map_or(&[][..], Vec::as_slice) {
            if to == start {
                let mut path = vec![start, node];
                let mut at = node;
                while at != start {
                    at = came_from[&at];
                    path.push(at);
                }
                path.reverse();
                return Some(path);
            }
            if let std::collections::btree_map::Entry::Vacant(e) = came_from.entry(to) {
                e.insert(node);
                queue.push_back(to);
            }
        }
    }
    None
}

/// `label: a -> b -> a`, then each edge with the file and line that makes it.
pub(crate) fn render(krate: &Crate, edges: &Edges, cycle: &Cycle, repo: &Path) -> String {
    let names: Vec<String> = cycle.0.iter().map(|&m| krate.modules[m].name()).collect();
    let mut text = format!("{}: {}", krate.label, names.join(" -> "));
    for pair in cycle.0.windows(2) {
        let (from, to) = (&krate.modules[pair[0]], &krate.modules[pair[1]]);
        let evidence = &edges[&(pair[0], pair[1])];
        let file = from.file.strip_prefix(repo).unwrap_or(&from.file);
        text.push_str(&format!(
            "\n    {} -> {}: {}:{} names `{}`",
            from.name(),
            to.name(),
            file.display(),
            evidence.line,
            evidence.path
        ));
    }
    text
}
