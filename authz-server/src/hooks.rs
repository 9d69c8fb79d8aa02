//! Connects the rule engine's hooks: a [`DatabaseLookup`] over the config's `[databases]` and an
//! [`HttpJwks`] for the `jwks_url`s its rules name.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rules::{Hooks, RuleSet};

use crate::jwks::{HttpJwks, JwksSettings};
use crate::lookup::DatabaseLookup;
use crate::metrics::{MeteredJwks, Metrics};

/// Opens a pool per `[databases.<name>]` (a database that cannot be reached is logged and its
/// lookups fail by their `on_error` until it is back) and starts fetching every JWKS URL in the
/// background. Relative SQLite paths are taken relative to `base_dir`, the config file's
/// directory, so a config finds its database wherever the server was started from.
pub async fn connect(rules: &RuleSet, base_dir: Option<&Path>) -> Hooks {
    connect_with(rules, base_dir, JwksSettings::default()).await
}

/// [`connect`], counting lookup cache results, database errors and JWKS failures into
/// `metrics`.
pub async fn connect_reporting(
    rules: &RuleSet,
    base_dir: Option<&Path>,
    metrics: Arc<Metrics>,
) -> Hooks {
    open(rules, base_dir, JwksSettings::default(), Some(metrics)).await
}

/// [`connect`] with these JWKS timings (tests shorten the refresh interval).
pub async fn connect_with(rules: &RuleSet, base_dir: Option<&Path>, jwks: JwksSettings) -> Hooks {
    open(rules, base_dir, jwks, None).await
}

async fn open(
    rules: &RuleSet,
    base_dir: Option<&Path>,
    settings: JwksSettings,
    metrics: Option<Arc<Metrics>>,
) -> Hooks {
    let databases: Vec<(String, String, u32)> = rules
        .databases()
        .iter()
        .map(|spec| {
            (
                spec.name.clone(),
                resolve_sqlite_path(&spec.url, base_dir),
                spec.pool_size,
            )
        })
        .collect();
    let lookup = DatabaseLookup::open(
        databases
            .iter()
            .map(|(name, url, pool_size)| (name.as_str(), url.as_str(), *pool_size)),
    )
    .await;
    let jwks = HttpJwks::new(settings);
    let urls: Vec<String> = rules.jwks_urls().into_iter().map(str::to_owned).collect();
    if !urls.is_empty() {
        let prefetching = jwks.clone();
        tokio::spawn(async move { prefetching.prefetch(urls.iter().map(String::as_str)).await });
    }
    match metrics {
        Some(metrics) => {
            lookup.report_to(metrics.clone());
            Hooks {
                lookup: Some(Arc::new(lookup)),
                jwks: Some(Arc::new(MeteredJwks::new(jwks, metrics))),
            }
        }
        None => Hooks {
            lookup: Some(Arc::new(lookup)),
            jwks: Some(Arc::new(jwks)),
        },
    }
}

/// `sqlite://keys.db` relative to `base_dir`; absolute paths, `:memory:` and other databases
/// unchanged.
pub fn resolve_sqlite_path(url: &str, base_dir: Option<&Path>) -> String {
    let Some(base_dir) = base_dir else {
        return url.to_owned();
    };
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return url.to_owned();
    };
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    if path.is_empty() || path.starts_with(':') || Path::new(path).is_absolute() {
        return url.to_owned();
    }
    let resolved: PathBuf = base_dir.join(path);
    match query {
        Some(query) => format!("sqlite://{}?{query}", resolved.display()),
        None => format!("sqlite://{}", resolved.display()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::resolve_sqlite_path;

    #[test]
    fn relative_sqlite_paths_follow_the_config_file() {
        let base = Some(Path::new("/etc/authz"));
        for (url, wanted) in [
            ("sqlite://keys.db", "sqlite:///etc/authz/keys.db"),
            ("sqlite:keys.db", "sqlite:///etc/authz/keys.db"),
            (
                "sqlite://data/keys.db?mode=ro",
                "sqlite:///etc/authz/data/keys.db?mode=ro",
            ),
            ("sqlite:///var/keys.db", "sqlite:///var/keys.db"),
            ("sqlite::memory:", "sqlite::memory:"),
            ("postgres://u@h/db", "postgres://u@h/db"),
        ] {
            assert_eq!(resolve_sqlite_path(url, base), wanted, "{url}");
        }
        assert_eq!(
            resolve_sqlite_path("sqlite://keys.db", None),
            "sqlite://keys.db"
        );
    }
}
