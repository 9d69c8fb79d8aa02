//! Test support shared by the workspace's suites (gateway, authz-server, the `e2e` crate).
//!
//! The one rule this crate exists for: a test that cannot run its precondition (a binary not
//! built, no PostgreSQL, a tool not installed) says so with a visible `SKIPPED` line, and under
//! `AUTHZ_TEST_STRICT=1` (set by `scripts/test`) it fails instead, so the project's test command
//! can never go green on a suite that did not run. Every precondition goes through
//! [`precondition`]; the helpers below ([`binary`], [`tool`], [`postgres_url`]) are built on it.
//!
//! It depends on none of our crates (only std), so every suite can use it without a cycle and
//! it builds first. Builders that need our protobuf or config types live in the test-support
//! module of the crate that uses them.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

pub mod configs;
mod net;
mod postgres;
mod process;
#[cfg(test)]
mod tests;

pub use net::{free_port, wait_for_port};
pub use postgres::{POSTGRES_URL_VAR, Throwaway, postgres_url};
pub use process::{open_fds, rss_kib};

/// The variable that turns a skipped precondition into a failure.
pub const STRICT_VAR: &str = "AUTHZ_TEST_STRICT";

/// Whether `AUTHZ_TEST_STRICT` asks for strictness: set to anything but empty or `0`.
pub fn strict() -> bool {
    strict_value(std::env::var_os(STRICT_VAR).as_deref())
}

fn strict_value(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v != "0")
}

/// `found` when the precondition holds; otherwise says why `test` is skipped (a `SKIPPED` line
/// on stderr that libtest does not capture, so it shows in a plain `cargo test` run) and returns
/// `None`, or panics naming the precondition under `AUTHZ_TEST_STRICT=1`.
///
/// ```
/// let Some(path) = testkit::precondition("my_test", Some("/bin/sh"), || "sh is missing".into())
/// else {
///     return;
/// };
/// assert_eq!(path, "/bin/sh");
/// ```
pub fn precondition<T>(
    test: &str,
    found: Option<T>,
    missing: impl FnOnce() -> String,
) -> Option<T> {
    if found.is_some() {
        return found;
    }
    skip(test, &missing());
    None
}

/// Records that `test` cannot run because of `why`: panics under `AUTHZ_TEST_STRICT=1`, else
/// prints `SKIPPED test: why`.
pub fn skip(test: &str, why: &str) {
    skip_under(strict(), test, why);
}

fn skip_under(strict: bool, test: &str, why: &str) {
    let line = format!("SKIPPED {test}: {why}");
    assert!(
        !strict,
        "{line} — under {STRICT_VAR}=1 (set by scripts/test) a test that cannot run fails"
    );
    // Written to the stderr handle, not with eprintln!: libtest captures the print macros of a
    // passing test, and a skip must show in a plain `cargo test` run.
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// The repository's root (this crate's parent directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit sits in the workspace root")
        .to_path_buf()
}

/// Where a workspace binary is built: `target/<profile>/<name>` next to the running test
/// executable (which sits in `target/<profile>/deps/`), or the file named by `<NAME>_BIN`
/// (`AUTHZ_SERVER_BIN` for `authz-server`, as the interop suites read it) to test another build.
/// `None` when it is not there.
pub fn built_binary(name: &str) -> Option<PathBuf> {
    let override_var = format!("{}_BIN", name.to_ascii_uppercase().replace('-', "_"));
    let path = match std::env::var_os(override_var) {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe().ok()?.parent()?.parent()?.join(name),
    };
    path.is_file().then_some(path)
}

/// The workspace binary `name` ([`built_binary`]), or a skip (a failure under strict) when it is
/// not built.
pub fn binary(test: &str, name: &str) -> Option<PathBuf> {
    precondition(test, built_binary(name), || {
        format!(
            "the `{name}` binary is not built (run `cargo build --workspace --bins` first; scripts/test does)"
        )
    })
}

/// Several workspace binaries at once, all or nothing.
pub fn binaries<const N: usize>(test: &str, names: [&str; N]) -> Option<[PathBuf; N]> {
    let found = names.map(built_binary);
    let all = found
        .iter()
        .all(Option::is_some)
        .then(|| found.map(|p| p.expect("all found")));
    precondition(test, all, || {
        format!(
            "{names:?} not all built next to the test executable (run `cargo build --workspace --bins` first; scripts/test does)"
        )
    })
}

/// An executable `name` on `PATH` or in `/usr/sbin` (where Debian puts nginx).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The tool `name` ([`find_tool`]), or a skip (a failure under strict) naming the Debian package
/// that provides it; `scripts/test` installs the tools the suites need.
pub fn tool(test: &str, name: &str, package: &str) -> Option<PathBuf> {
    precondition(test, find_tool(name), || {
        format!(
            "`{name}` is not installed (Debian: apt-get install {package}; scripts/test installs it)"
        )
    })
}

/// `prefix_PID_N`: a name no other test of this run (or another run's process) uses.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Where throwaway servers and files go: `AUTHZ_TEST_RUN_DIR` (set by `scripts/test`) or the
/// system temp dir.
pub fn run_dir() -> PathBuf {
    std::env::var_os("AUTHZ_TEST_RUN_DIR").map_or_else(std::env::temp_dir, PathBuf::from)
}

/// A fresh, empty directory for one test's files (configs, logs) under [`run_dir`].
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = run_dir().join(unique(&format!("scratch-{name}")));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creates a scratch dir");
    dir
}

/// Replaces `path`'s content atomically (write a sibling, rename over it), as a careful deploy
/// tool does: a reader sees the old file or the new one, never half of one.
pub fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("writes the temp file");
    std::fs::rename(&tmp, path).expect("renames it over the file");
}

/// Runs `authz-server keys <args>` (the binary at `bin`) and returns what it printed, trimmed;
/// panics with its stderr when it fails. The database suites prepare their databases with it,
/// as an operator would.
pub fn authz_keys(bin: &std::path::Path, args: &[&str]) -> String {
    let output = std::process::Command::new(bin)
        .arg("keys")
        .args(args)
        .output()
        .expect("runs authz-server keys");
    assert!(
        output.status.success(),
        "keys {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("authz-server keys prints UTF-8")
        .trim()
        .to_owned()
}
