//! Config load for a `rego = { ... }` table: every policy and data file read, parsed, merged and
//! checked now, so a bad policy is a config error (`file:line:col`, as regorus reports it)
//! and never a surprise on the request path.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use regorus::utils::limits::ExecutionTimerConfig;
use toml::Spanned;

use super::{DEFAULT_QUERY, DEFAULT_TIMEOUT, QueryMode, RegoPolicy, run_query};
use crate::config::RawRego;
use crate::error::{ConfigError, Locator};
use crate::files::FileRead;

/// Longest `timeout_ms` accepted: a check that waits longer has long been failed by the proxy.
const MAX_TIMEOUT_MS: i64 = 10_000;

/// Compiles one `rego` table; `base_dir` anchors relative paths.
/// Every file read is added to `reads` with a digest of its bytes, whether or not it compiles.
pub(crate) fn compile(
    at: &Locator<'_>,
    base_dir: &Path,
    raw: &Spanned<RawRego>,
    reads: &mut Vec<FileRead>,
) -> Result<RegoPolicy, Vec<ConfigError>> {
    let RawRego {
        files,
        data,
        query,
        timeout_ms,
        v0_compatible,
    } = raw.get_ref();
    let mut errors = Vec::new();
    let timeout = timeout(at, timeout_ms.as_ref(), &mut errors);
    let query_text = query
        .as_ref()
        .map_or(DEFAULT_QUERY, |q| q.get_ref().as_str())
        .to_owned();
    let query_offset = query.as_ref().map_or(raw.span().start, |q| q.span().start);
    let package = rule_path(&query_text).unwrap_or_else(|| {
        errors.push(at.error(
            query_offset,
            format!(
                "`query` must name a rule as `data.<package>.<rule>` (e.g. \
                 `{DEFAULT_QUERY}`), not {query_text:?}"
            ),
        ));
        None
    });
    if files.is_empty() {
        errors.push(at.error(
            raw.span().start,
            "`rego.files` must name at least one .rego file",
        ));
    }
    let mut engine = new_engine(at, raw.span().start, timeout, *v0_compatible, &mut errors);
    let mut loaded = Loaded::default();
    loaded.policies(&mut engine, at, base_dir, files, &mut errors);
    loaded.data(&mut engine, at, base_dir, data, &mut errors);
    reads.append(&mut loaded.reads);
    if !errors.is_empty() {
        return Err(errors);
    }
    let query_at = (query_text.as_str(), query_offset);
    let mode = probe(&mut engine, at, query_at)?;
    if !declared(&engine, &loaded.sources, &query_text) {
        let message = format!("query `{query_text}`: no rule in the policy files declares it");
        return Err(vec![at.error(query_offset, message)]);
    }
    Ok(RegoPolicy {
        query: query_text,
        mode,
        package,
        timeout,
        files: loaded.watched,
        template: engine.clone(),
        pool: Mutex::new(vec![engine]),
    })
}

/// An engine with the time budget, the Rego version and our JWT built-ins.
fn new_engine(
    at: &Locator<'_>,
    offset: usize,
    timeout: Duration,
    v0_compatible: bool,
    errors: &mut Vec<ConfigError>,
) -> regorus::Engine {
    let mut engine = regorus::Engine::new();
    engine.set_rego_v0(v0_compatible);
    engine.set_execution_timer_config(ExecutionTimerConfig {
        limit: timeout,
        check_interval: NonZeroU32::MIN,
    });
    if let Err(reason) = super::jwt::register(&mut engine) {
        errors.push(at.error(offset, reason));
    }
    engine
}

/// `timeout_ms`, or the default (with an error) when out of range.
fn timeout(
    at: &Locator<'_>,
    timeout_ms: Option<&Spanned<i64>>,
    errors: &mut Vec<ConfigError>,
) -> Duration {
    match timeout_ms {
        None => DEFAULT_TIMEOUT,
        Some(ms) if (1..=MAX_TIMEOUT_MS).contains(ms.get_ref()) => {
            Duration::from_millis(ms.get_ref().unsigned_abs())
        }
        Some(ms) => {
            errors.push(at.error(
                ms.span().start,
                format!("`timeout_ms` must be 1..={MAX_TIMEOUT_MS}"),
            ));
            DEFAULT_TIMEOUT
        }
    }
}

/// What the policy and data files gave: every path (for the reloader to watch, read or not) and
/// each policy's (shown name, package).
#[derive(Default)]
struct Loaded {
    watched: Vec<PathBuf>,
    sources: Vec<(String, String)>,
    /// Each file read, with a digest of what was read.
    reads: Vec<FileRead>,
}

impl Loaded {
    /// Reads one named file, relative to the config's folder, and watches it whether or not it
    /// could be read (a file that appears later reloads the rules). Returns the path as shown in
    /// messages, and the text or why it could not be read.
    fn read(
        &mut self,
        base_dir: &Path,
        file: &Spanned<String>,
    ) -> (String, Result<String, String>) {
        let path = base_dir.join(file.get_ref());
        let shown = path.display().to_string();
        let bytes = std::fs::read(&path);
        self.reads.push(FileRead {
            path: path.clone(),
            digest: bytes.as_deref().ok().map(crate::files::digest),
        });
        let text = bytes
            .and_then(|bytes| {
                String::from_utf8(bytes).map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "stream did not contain valid UTF-8",
                    )
                })
            })
            .map_err(|error| format!("cannot read `{shown}`: {error}"));
        self.watched.push(path);
        (shown, text)
    }

    /// Reads and parses each policy file into `engine`: the one read of `.rego` files, at load.
    fn policies(
        &mut self,
        engine: &mut regorus::Engine,
        at: &Locator<'_>,
        base_dir: &Path,
        files: &[Spanned<String>],
        errors: &mut Vec<ConfigError>,
    ) {
        for file in files {
            let (shown, text) = self.read(base_dir, file);
            let text = match text {
                Ok(text) => text,
                Err(message) => {
                    errors.push(at.error(file.span().start, message));
                    continue;
                }
            };
            match engine.add_policy(shown.clone(), text) {
                Ok(package) => self.sources.push((shown, package)),
                Err(error) => errors.push(rego_error(&shown, &format!("{error:#}"))),
            }
        }
    }

    /// Reads each JSON data file and merges it at `data`: the one read of data files, at load.
    fn data(
        &mut self,
        engine: &mut regorus::Engine,
        at: &Locator<'_>,
        base_dir: &Path,
        files: &[Spanned<String>],
        errors: &mut Vec<ConfigError>,
    ) {
        for file in files {
            let (shown, text) = self.read(base_dir, file);
            let value = text.and_then(|text| {
                serde_json::from_str::<serde_json::Value>(&text)
                    .map_err(|error| format!("`{shown}` is not JSON: {error}"))
            });
            let merged = value.and_then(|value| {
                if !value.is_object() {
                    return Err(format!(
                        "`{shown}` must hold a JSON object (merged at `data`)"
                    ));
                }
                engine
                    .add_data(regorus::Value::from(value))
                    .map_err(|error| {
                        format!("`{shown}` conflicts with data loaded before: {error}")
                    })
            });
            if let Err(message) = merged {
                errors.push(at.error(file.span().start, message));
            }
        }
    }
}

/// A first evaluation on an empty input prepares the engine once (every clone starts prepared)
/// and reports what only analysis finds: unknown functions, unsafe variables, a query naming no
/// rule. The query mode that works: a rule path, or a general query.
fn probe(
    engine: &mut regorus::Engine,
    at: &Locator<'_>,
    (query_text, query_offset): (&str, usize),
) -> Result<QueryMode, Vec<ConfigError>> {
    engine.set_input(regorus::Value::new_object());
    let mut mode = QueryMode::Rule;
    let mut probe = run_query(engine, query_text, mode);
    if probe
        .as_ref()
        .is_err_and(|text| text.contains("not a valid rule path"))
    {
        mode = QueryMode::Query;
        probe = run_query(engine, query_text, mode);
    }
    // A policy slow on an empty input is judged on real ones, under the same budget.
    if let Err(text) = probe.as_ref().map_err(String::as_str)
        && !text.contains("exceeded time limit")
    {
        let error = if text.contains("\n--> ") {
            rego_error("", text)
        } else {
            at.error(
                query_offset,
                format!("query `{query_text}`: {}", last_line(text)),
            )
        };
        return Err(vec![error]);
    }
    Ok(mode)
}

/// Whether some policy declares the queried rule (rule paths are relative to a module's
/// package).
fn declared(engine: &regorus::Engine, sources: &[(String, String)], query_text: &str) -> bool {
    sources.iter().any(|(source, package)| {
        query_text
            .strip_prefix(package.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|rest| {
                engine
                    .has_declared_rule_rooted_at(source, rest)
                    .unwrap_or(false)
            })
    })
}

/// `Some(package)` for a query `data.a.b.rule` (package `data.a.b`, or `None` when the rule is
/// at the root); `None` when it is not such a path.
fn rule_path(query: &str) -> Option<Option<String>> {
    let rest = query.strip_prefix("data.")?;
    let parts: Vec<&str> = rest.split('.').collect();
    let identifier = |part: &&str| {
        let mut chars = part.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if !parts.iter().all(identifier) {
        return None;
    }
    let package = (parts.len() > 1).then(|| format!("data.{}", parts[..parts.len() - 1].join(".")));
    Some(package)
}

/// A regorus error (`\n--> file:line:col\n  | source\n  | ^\nerror: message`) as our
/// `file:line:col: message`; an error without a location is placed at line 1 of `file`.
fn rego_error(file: &str, text: &str) -> ConfigError {
    let located = text.lines().find_map(|line| {
        let rest = line.trim_start().strip_prefix("--> ")?;
        let mut parts = rest.rsplitn(3, ':');
        let column = parts.next()?.trim().parse().ok()?;
        let line = parts.next()?.parse().ok()?;
        Some((parts.next()?.to_owned(), line, column))
    });
    let (file, line, column) = located.unwrap_or_else(|| (file.to_owned(), 1, 1));
    let message = last_line(text);
    let message = message
        .strip_prefix("error: ")
        .unwrap_or(message)
        .to_owned();
    ConfigError {
        file,
        line,
        column,
        message,
    }
}

fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or(text)
        .trim()
}
