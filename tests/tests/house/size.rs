//! Sizes: the `.rs` files of the repository, and the functions in a file.

use std::path::{Path, PathBuf};

use syn::spanned::Spanned;
use syn::visit::{self, Visit};

use super::tree::is_cfg_test;

/// Directories that hold build output, installed tools or run state, not the project's source
/// (the git-ignored directories of `.gitignore`, and `.git`).
const NOT_SOURCE: [&str; 7] = [
    "target",
    "fuzz/target",
    "fuzz/artifacts",
    "fuzz/coverage",
    ".venv",
    ".test-run",
    ".git",
];

/// Every `.rs` file under `dir`, skipping the build output and the Python venv.
pub(crate) fn rust_files(repo: &Path, dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).expect("a directory of the repository is readable");
        for entry in entries.flatten() {
            let path = entry.path();
            let relative = path.strip_prefix(repo).unwrap_or(&path);
            // Symbolic links are not followed: a link is not a second copy of the source.
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if !NOT_SOURCE.iter().any(|skip| relative == Path::new(skip)) {
                    pending.push(path);
                }
            } else if kind.is_file() && path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// A function and its length: from the first token of its signature (`pub`, `async`, `fn`; doc
/// comments and attributes not counted) to the closing brace of its body, both lines included.
pub(crate) struct FnLength {
    pub(crate) name: String,
    pub(crate) line: usize,
    pub(crate) lines: usize,
}

/// Every function with a body in `file`: free functions, methods in `impl` blocks, default
/// methods in traits, functions nested in functions or inline modules. `#[cfg(test)]` modules,
/// `#[cfg(test)]` items and `#[test]` functions are left out.
pub(crate) fn functions(file: &syn::File) -> Vec<FnLength> {
    let mut collector = Functions::default();
    collector.visit_file(file);
    collector.found
}

#[derive(Default)]
struct Functions {
    found: Vec<FnLength>,
    /// The `impl` or trait the visitor is inside, for the name `Type::method`.
    owner: Vec<String>,
}

impl Functions {
    fn record(&mut self, vis: &syn::Visibility, sig: &syn::Signature, body: &syn::Block) {
        let mut start = sig.span().start().line;
        if !matches!(vis, syn::Visibility::Inherited) {
            start = start.min(vis.span().start().line);
        }
        let end = body.brace_token.span.close().end().line;
        let name = match self.owner.last() {
            Some(owner) => format!("{owner}::{}", sig.ident),
            None => sig.ident.to_string(),
        };
        self.found.push(FnLength {
            name,
            line: start,
            lines: end + 1 - start,
        });
    }
}

impl<'ast> Visit<'ast> for Functions {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if !is_cfg_test(&m.attrs) {
            visit::visit_item_mod(self, m);
        }
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        if !is_cfg_test(&f.attrs) {
            self.record(&f.vis, &f.sig, &f.block);
            visit::visit_item_fn(self, f);
        }
    }

    fn visit_item_impl(&mut self, i: &'ast syn::ItemImpl) {
        if is_cfg_test(&i.attrs) {
            return;
        }
        let owner = match &*i.self_ty {
            syn::Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
            _ => None,
        };
        self.owner.push(owner.unwrap_or_else(|| "impl".to_owned()));
        visit::visit_item_impl(self, i);
        self.owner.pop();
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if !is_cfg_test(&f.attrs) {
            self.record(&f.vis, &f.sig, &f.block);
            visit::visit_impl_item_fn(self, f);
        }
    }

    fn visit_item_trait(&mut self, t: &'ast syn::ItemTrait) {
        if !is_cfg_test(&t.attrs) {
            self.owner.push(t.ident.to_string());
            visit::visit_item_trait(self, t);
            self.owner.pop();
        }
    }

    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        if let Some(body) = &f.default {
            self.record(&syn::Visibility::Inherited, &f.sig, body);
        }
        visit::visit_trait_item_fn(self, f);
    }
}
