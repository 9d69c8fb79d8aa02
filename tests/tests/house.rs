//! The house rules (issue 13), checked over the whole repository:
//!
//! - no import cycle between the modules of any crate — every library, binary, build script,
//!   integration test, bench and example of every workspace member and of `fuzz/`
//!   (`house/graph.rs` says what is an edge and what is not);
//! - no `.rs` file over 600 lines, anywhere (source, tests, benches, examples, fuzz targets,
//!   build scripts), and no generated code committed;
//! - no function over 60 lines in `src/` of the shipping crates.
//!
//! Every failure names `file:line` and the figure. The `scanner_*` tests run the same code on
//! small in-memory crates, so a scanner that stopped finding things could not pass silently.

mod house {
    pub(crate) mod graph;
    pub(crate) mod size;
    pub(crate) mod tree;
}

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use house::tree::{Crate, Disk, Target};
use house::{graph, size, tree};

const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 60;

/// The crates that ship; `bench` is a measuring tool, not shipped, and exempt from the function
/// rule (the file rule still holds for it).
const SHIPPING: [&str; 7] = [
    "proto",
    "canonical",
    "listener",
    "rules",
    "authz-server",
    "gateway",
    "telemetry",
];

/// Functions allowed past `MAX_FN_LINES`: (file, function, why). Only functions off the request
/// path (config compilation, metric registration, a CLI's main) may be listed, each with its
/// reason; no request-path function.
const LONG_FNS_ALLOWED: [(&str, &str, &str); 0] = [];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate sits in tests/ of the repository")
        .to_path_buf()
}

fn shown(path: &Path, repo: &Path) -> String {
    path.strip_prefix(repo)
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn no_import_cycle_between_the_modules_of_any_crate() {
    let repo = repo();
    let targets = tree::targets(&repo);
    assert!(
        targets
            .iter()
            .any(|t| t.label == "gateway (gateway/src/lib.rs)")
            && targets.iter().any(|t| t.label.starts_with("authz-fuzz ")),
        "crate discovery missed the gateway library or the fuzz targets"
    );
    let mut failures = Vec::new();
    let mut edge_count = 0;
    for Target { label, root } in &targets {
        let krate = Crate::load(label, root, &Disk);
        failures.extend(krate.errors.iter().map(|e| format!("{label}: {e}")));
        let edges = graph::edges(&krate);
        edge_count += edges.len();
        for cycle in graph::cycles(&edges) {
            failures.push(graph::render(&krate, &edges, &cycle, &repo));
        }
    }
    // The workspace has hundreds of module-to-module edges; far fewer means the scanner broke.
    assert!(
        edge_count > 200,
        "only {edge_count} import edges found in {} crates",
        targets.len()
    );
    assert!(
        failures.is_empty(),
        "{} import cycle(s) between modules (a -> b: where a names b):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn no_rs_file_over_600_lines_and_no_generated_code() {
    let repo = repo();
    let files = size::rust_files(&repo, &repo);
    assert!(files.len() > 100, "only {} .rs files found", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("a .rs file of the repository is readable");
        let lines = text.lines().count();
        if lines > MAX_FILE_LINES {
            let name = shown(file, &repo);
            failures.push(format!("{name}:1: {lines} lines (limit {MAX_FILE_LINES})"));
        }
        if let Some(n) = text.lines().take(5).position(|l| l.contains("@generated")) {
            let name = shown(file, &repo);
            failures.push(format!("{name}:{}: generated code is committed", n + 1));
        }
    }
    assert!(
        failures.is_empty(),
        "{} file(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn no_function_over_60_lines_in_the_shipping_crates() {
    let repo = repo();
    let mut failures = Vec::new();
    let mut checked = 0;
    for krate in SHIPPING {
        let src = repo.join(krate).join("src");
        // Unit-test files: `tests.rs`, and whatever a `#[cfg(test)] mod` declares.
        let mut tests: BTreeSet<PathBuf> = BTreeSet::new();
        for Target { label, root } in tree::targets(&repo) {
            if root.starts_with(&src) {
                let loaded = Crate::load(&label, &root, &Disk);
                tests.extend(loaded.test_files().into_iter().map(Path::to_path_buf));
            }
        }
        for file in size::rust_files(&repo, &src) {
            if tests.contains(&file) || file.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&file).expect("a .rs file is readable");
            let parsed = syn::parse_file(&text).expect("a source file of a shipping crate parses");
            let name = shown(&file, &repo);
            for f in size::functions(&parsed) {
                checked += 1;
                let allowed = LONG_FNS_ALLOWED
                    .iter()
                    .any(|(path, fun, _)| *path == name && *fun == f.name);
                if f.lines > MAX_FN_LINES && !allowed {
                    failures.push(format!(
                        "{name}:{}: fn {} is {} lines (limit {MAX_FN_LINES})",
                        f.line, f.name, f.lines
                    ));
                }
            }
        }
    }
    assert!(
        checked > 500,
        "only {checked} functions found in the shipping crates"
    );
    assert!(
        failures.is_empty(),
        "{} function(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// --- the scanner on small in-memory crates ---------------------------------------------------------

/// The cycles of a crate made of `files` (path, text), rooted at `src/lib.rs`, as `a -> b -> a`.
fn cycles_in(files: &[(&str, &str)]) -> Vec<String> {
    let source: BTreeMap<PathBuf, String> = files
        .iter()
        .map(|(path, text)| (PathBuf::from(path), (*text).to_owned()))
        .collect();
    let krate = Crate::load("mem", Path::new("src/lib.rs"), &source);
    assert_eq!(krate.errors, Vec::<String>::new());
    let edges = graph::edges(&krate);
    graph::cycles(&edges)
        .iter()
        .map(|c| {
            let names: Vec<String> = c.0.iter().map(|&m| krate.modules[m].name()).collect();
            names.join(" -> ")
        })
        .collect()
}

#[test]
fn scanner_finds_a_two_cycle_through_a_use_and_a_macro_argument() {
    let files = [
        ("src/lib.rs", "mod a;\nmod b;\n"),
        ("src/a.rs", "use crate::b::B;\npub struct A(B);\n"),
        (
            "src/b.rs",
            "pub struct B;\nfn f() -> String { format!(\"{:?}\", crate::a::A::new()) }\n",
        ),
    ];
    assert_eq!(cycles_in(&files), ["a -> b -> a"]);
    // Without the macro's path the knot is gone.
    let files = [
        files[0],
        files[1],
        (
            "src/b.rs",
            "pub struct B;\nfn f() -> String { format!(\"x\") }\n",
        ),
    ];
    assert_eq!(cycles_in(&files), Vec::<String>::new());
}

#[test]
fn scanner_finds_a_three_cycle_through_super_in_mod_rs_layout() {
    let files = [
        ("src/lib.rs", "mod net;\n"),
        ("src/net/mod.rs", "mod x;\nmod y;\nmod z;\n"),
        ("src/net/x.rs", "use super::y::Y;\npub struct X;\n"),
        ("src/net/y.rs", "pub struct Y;\nfn f() { super::z::g(); }\n"),
        (
            "src/net/z.rs",
            "pub fn g() -> Option<super::x::X> { None }\n",
        ),
    ];
    assert_eq!(cycles_in(&files), ["net::x -> net::y -> net::z -> net::x"]);
}

#[test]
fn scanner_follows_path_attributes_inline_modules_and_foo_rs_with_foo_dir() {
    let files = [
        (
            "src/lib.rs",
            "mod a;\n#[path = \"other/c_impl.rs\"]\nmod c;\nmod d {\n    pub fn f() { crate::a::inner::g() }\n}\n",
        ),
        ("src/a.rs", "pub mod inner;\n"),
        ("src/a/inner.rs", "pub fn g() { crate::c::h() }\n"),
        ("src/other/c_impl.rs", "pub fn h() { super::d::f() }\n"),
    ];
    assert_eq!(cycles_in(&files), ["a::inner -> c -> d -> a::inner"]);
}

#[test]
fn scanner_does_not_count_a_reexport_a_mod_declaration_or_unit_tests() {
    // config/mod.rs is a facade: it declares and re-exports. compile.rs takes `Route` through the
    // facade, which resolves to model.rs where it is defined: no edge back to the facade.
    let facade = [
        ("src/lib.rs", "mod config;\n"),
        (
            "src/config/mod.rs",
            "mod compile;\nmod model;\npub use compile::compile;\npub(crate) use model::Route;\n",
        ),
        (
            "src/config/compile.rs",
            "use super::Route;\npub fn compile() -> Route { Route }\n#[cfg(test)]\nmod tests;\n",
        ),
        ("src/config/model.rs", "pub struct Route;\n"),
        // Unit tests reach back into the facade; they are not part of the graph.
        (
            "src/config/compile/tests.rs",
            "use crate::config::compile;\nuse super::super::Route;\n",
        ),
    ];
    assert_eq!(cycles_in(&facade), Vec::<String>::new());
    // The same facade whose own code calls what it re-exports, while compile.rs uses a type the
    // facade defines itself: that is a knot.
    let knot = [
        facade[0],
        (
            "src/config/mod.rs",
            "mod compile;\npub use compile::compile;\npub struct Route;\nfn load() -> Route { compile() }\n",
        ),
        (
            "src/config/compile.rs",
            "use super::Route;\npub fn compile() -> Route { Route }\n",
        ),
    ];
    assert_eq!(cycles_in(&knot), ["config -> config::compile -> config"]);
}

#[test]
fn scanner_leaves_other_crates_alone() {
    // `::http` is the http crate, not the child module of the same name; `std::` is std.
    let files = [
        (
            "src/lib.rs",
            "mod http;\nuse ::http::StatusCode;\npub struct Root(std::fmt::Error);\n",
        ),
        (
            "src/http.rs",
            "pub fn f() -> Option<crate::Root> { None }\n",
        ),
    ];
    assert_eq!(cycles_in(&files), Vec::<String>::new());
    let files = [
        ("src/lib.rs", "mod http;\nuse http::f;\npub struct Root;\n"),
        files[1],
    ];
    assert_eq!(cycles_in(&files), ["crate -> http -> crate"]);
}

#[test]
fn scanner_measures_functions_methods_and_nested_functions_but_not_unit_tests() {
    let body = |n: usize| "    let _ = 1;\n".repeat(n);
    let text = format!(
        "pub fn long() {{\n{}}}\nfn exact() {{\n{}}}\nstruct S;\nimpl S {{\n    pub async fn method(&self) {{\n{}    }}\n}}\n#[cfg(test)]\nmod tests {{\n    fn big() {{\n{}    }}\n}}\n",
        body(59),
        body(58),
        body(70),
        body(90),
    );
    let parsed = syn::parse_file(&text).expect("the example parses");
    let found: Vec<(String, usize, usize)> = size::functions(&parsed)
        .into_iter()
        .map(|f| (f.name, f.line, f.lines))
        .collect();
    assert_eq!(
        found,
        [
            ("long".to_owned(), 1, 61),
            ("exact".to_owned(), 62, 60),
            ("S::method".to_owned(), 124, 72),
        ]
    );
}
