//! The crates of the repository and the module tree of each, read from `mod` declarations the way
//! rustc finds module files: `foo.rs` with its children in `foo/`, or `foo/mod.rs`; `#[path]`;
//! inline `mod x { ... }` blocks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where source text comes from: the repository on disk, or a map in the scanner's own tests.
pub(crate) trait Source {
    fn read(&self, path: &Path) -> Option<String>;
}

/// The files on disk.
pub(crate) struct Disk;

impl Source for Disk {
    fn read(&self, path: &Path) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }
}

impl Source for BTreeMap<PathBuf, String> {
    fn read(&self, path: &Path) -> Option<String> {
        self.get(path).cloned()
    }
}

/// One module of a crate.
pub(crate) struct Module {
    /// Path from the crate root (empty for the root).
    pub(crate) path: Vec<String>,
    /// The file its items are written in (an inline module shares its parent's).
    pub(crate) file: PathBuf,
    pub(crate) children: BTreeMap<String, usize>,
    /// Its own items: `mod` declarations and `#[cfg(test)]` items left out.
    pub(crate) items: Vec<syn::Item>,
    /// Declared under `#[cfg(test)]` (or inside such a module): unit tests, not part of the graph.
    pub(crate) test_only: bool,
}

impl Module {
    pub(crate) fn name(&self) -> String {
        if self.path.is_empty() {
            "crate".to_owned()
        } else {
            self.path.join("::")
        }
    }
}

/// One compilation unit (a library, a binary, an integration test, ...) and its modules; module 0
/// is the root.
pub(crate) struct Crate {
    pub(crate) label: String,
    pub(crate) modules: Vec<Module>,
    /// Module files that could not be read or parsed.
    pub(crate) errors: Vec<String>,
}

/// Where a module's items sit and where the files of its children are looked for.
struct Place<'a> {
    file: &'a Path,
    /// `mod x;` is looked for as `children/x.rs` or `children/x/mod.rs`.
    children: PathBuf,
    /// What a `#[path]` on a `mod x;` here is relative to.
    path_base: PathBuf,
}

impl Crate {
    /// Reads the crate whose root file is `root`, following its `mod` declarations.
    pub(crate) fn load(label: &str, root: &Path, source: &dyn Source) -> Crate {
        let mut krate = Crate {
            label: label.to_owned(),
            modules: Vec::new(),
            errors: Vec::new(),
        };
        // A crate root owns the directory it sits in, as a mod.rs does.
        krate.add_file(None, "", root, true, false, source);
        krate
    }

    /// The files of modules declared under `#[cfg(test)]`.
    pub(crate) fn test_files(&self) -> Vec<&Path> {
        let mut files: Vec<&Path> = self
            .modules
            .iter()
            .filter(|m| m.test_only)
            .map(|m| m.file.as_path())
            .collect();
        files.dedup();
        files
    }

    fn add_file(
        &mut self,
        parent: Option<usize>,
        name: &str,
        file: &Path,
        mod_rs: bool,
        test_only: bool,
        source: &dyn Source,
    ) {
        let Some(text) = source.read(file) else {
            self.errors.push(format!(
                "{}: declared by a `mod` but not readable",
                file.display()
            ));
            return;
        };
        let parsed = match syn::parse_file(&text) {
            Ok(parsed) => parsed,
            Err(e) => {
                let line = e.span().start().line;
                self.errors
                    .push(format!("{}:{line}: does not parse: {e}", file.display()));
                return;
            }
        };
        let dir = file.parent().unwrap_or(Path::new("")).to_path_buf();
        // mod.rs, a crate root or a #[path] file keeps its children beside it; foo.rs in foo/.
        let children = if mod_rs {
            dir.clone()
        } else {
            dir.join(file.file_stem().unwrap_or_default())
        };
        let index = self.push(parent, name, file, test_only);
        let place = Place {
            file,
            children,
            path_base: dir,
        };
        self.add_items(index, parsed.items, &place, source);
    }

    fn push(&mut self, parent: Option<usize>, name: &str, file: &Path, test_only: bool) -> usize {
        let mut path = parent.map_or_else(Vec::new, |p| self.modules[p].path.clone());
        if parent.is_some() {
            path.push(name.to_owned());
        }
        let index = self.modules.len();
        self.modules.push(Module {
            path,
            file: file.to_path_buf(),
            children: BTreeMap::new(),
            items: Vec::new(),
            test_only,
        });
        if let Some(parent) = parent {
            self.modules[parent].children.insert(name.to_owned(), index);
        }
        index
    }

    fn add_items(
        &mut self,
        index: usize,
        items: Vec<syn::Item>,
        place: &Place,
        source: &dyn Source,
    ) {
        for item in items {
            let syn::Item::Mod(module) = item else {
                if !is_cfg_test(item_attrs(&item)) {
                    self.modules[index].items.push(item);
                }
                continue;
            };
            if self.modules[index].path.len() > 32 {
                self.errors
                    .push(format!("{}: modules nested too deep", place.file.display()));
                return;
            }
            let test_only = self.modules[index].test_only || is_cfg_test(&module.attrs);
            let name = module.ident.to_string();
            let path_attr = path_attr(&module.attrs);
            match module.content {
                Some((_, inner)) => {
                    let child = self.push(Some(index), &name, place.file, test_only);
                    // Inside an inline block, files and #[path]s are relative to its directory.
                    let dir = place.children.join(path_attr.unwrap_or(name));
                    let inner_place = Place {
                        file: place.file,
                        children: dir.clone(),
                        path_base: dir,
                    };
                    self.add_items(child, inner, &inner_place, source);
                }
                None => {
                    let (file, mod_rs) = match path_attr {
                        // A file named by #[path] is treated as a mod.rs file.
                        Some(path) => (place.path_base.join(path), true),
                        None => {
                            let flat = place.children.join(format!("{name}.rs"));
                            if source.read(&flat).is_some() {
                                (flat, false)
                            } else {
                                (place.children.join(&name).join("mod.rs"), true)
                            }
                        }
                    };
                    self.add_file(Some(index), &name, &file, mod_rs, test_only, source);
                }
            }
        }
    }
}

/// `#[cfg(test)]`, `#[cfg(all(test, ...))]` or `#[test]`: compiled for unit tests only.
pub(crate) fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        if attr.path().is_ident("test") {
            return true;
        }
        let Ok(list) = attr.meta.require_list() else {
            return false;
        };
        if !attr.path().is_ident("cfg") {
            return false;
        }
        let tokens = list.tokens.to_string().replace(' ', "");
        tokens == "test"
            || (tokens.starts_with("all(")
                && tokens.split(['(', ',', ')']).any(|word| word == "test"))
    })
}

fn path_attr(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find_map(|attr| {
        let syn::Meta::NameValue(nv) = &attr.meta else {
            return None;
        };
        if !nv.path.is_ident("path") {
            return None;
        }
        match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        }
    })
}

/// The attributes of an item (empty for the kinds that cannot carry `#[cfg(test)]` here).
pub(crate) fn item_attrs(item: &syn::Item) -> &[syn::Attribute] {
    match item {
        syn::Item::Const(i) => &i.attrs,
        syn::Item::Enum(i) => &i.attrs,
        syn::Item::ExternCrate(i) => &i.attrs,
        syn::Item::Fn(i) => &i.attrs,
        syn::Item::ForeignMod(i) => &i.attrs,
        syn::Item::Impl(i) => &i.attrs,
        syn::Item::Macro(i) => &i.attrs,
        syn::Item::Mod(i) => &i.attrs,
        syn::Item::Static(i) => &i.attrs,
        syn::Item::Struct(i) => &i.attrs,
        syn::Item::Trait(i) => &i.attrs,
        syn::Item::TraitAlias(i) => &i.attrs,
        syn::Item::Type(i) => &i.attrs,
        syn::Item::Union(i) => &i.attrs,
        syn::Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

/// One compilation unit of the repository: its label and root file.
pub(crate) struct Target {
    pub(crate) label: String,
    pub(crate) root: PathBuf,
}

/// Every compilation unit of every workspace member and of fuzz/: the library, binaries, build
/// script, integration tests, benches and examples, found as cargo finds them (the standard
/// places and any explicit `path` in the manifest).
pub(crate) fn targets(repo: &Path) -> Vec<Target> {
    let manifest = read_manifest(&repo.join("Cargo.toml"));
    let mut members: Vec<String> = manifest
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(toml::Value::as_array)
        .expect("the root Cargo.toml lists workspace.members")
        .iter()
        .filter_map(|m| m.as_str().map(str::to_owned))
        .collect();
    members.push("fuzz".to_owned());
    let mut found = Vec::new();
    for member in members {
        let dir = repo.join(&member);
        let manifest = read_manifest(&dir.join("Cargo.toml"));
        let package = manifest
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(toml::Value::as_str)
            .unwrap_or(&member)
            .to_owned();
        let mut roots = explicit_roots(&manifest, &dir);
        for standard in ["src/lib.rs", "src/main.rs", "build.rs"] {
            roots.push(dir.join(standard));
        }
        for folder in ["src/bin", "tests", "benches", "examples"] {
            roots.extend(folder_roots(&dir.join(folder)));
        }
        roots.sort();
        roots.dedup();
        for root in roots.into_iter().filter(|r| r.is_file()) {
            let shown = root
                .strip_prefix(repo)
                .unwrap_or(&root)
                .display()
                .to_string();
            found.push(Target {
                label: format!("{package} ({shown})"),
                root,
            });
        }
    }
    found
}

fn read_manifest(path: &Path) -> toml::Table {
    let text = std::fs::read_to_string(path).expect("a workspace member has a Cargo.toml");
    text.parse().expect("Cargo.toml parses")
}

fn explicit_roots(manifest: &toml::Table, dir: &Path) -> Vec<PathBuf> {
    let mut roots = Vec::new();
    let path_of = |t: &toml::Value| {
        t.get("path")
            .and_then(toml::Value::as_str)
            .map(|p| dir.join(p))
    };
    if let Some(lib) = manifest.get("lib") {
        roots.extend(path_of(lib));
    }
    for kind in ["bin", "test", "bench", "example"] {
        if let Some(list) = manifest.get(kind).and_then(toml::Value::as_array) {
            roots.extend(list.iter().filter_map(path_of));
        }
    }
    roots
}

/// `folder/*.rs` and `folder/*/main.rs`.
fn folder_roots(folder: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut roots = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            roots.push(path.join("main.rs"));
        } else if path.extension().is_some_and(|e| e == "rs") {
            roots.push(path);
        }
    }
    roots
}
