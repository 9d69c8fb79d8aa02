//! The JWKS hook: [`HttpJwks`] fetches the key sets rules name by `jwks_url`, caches each per URL
//! and refetches when a token names a key the cached set lacks — at most once per
//! `min_refresh_interval` per URL, so a flood of tokens with made-up `kid`s cannot turn into a
//! flood of fetches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::JwkSet;
use rules::hooks::BoxFuture;
use rules::{JwksError, JwksSource};

/// The largest JWKS document read; real ones are a few KiB.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Timing of fetches.
#[derive(Debug, Clone, Copy)]
pub struct JwksSettings {
    /// Longest one fetch (connect, request, body) may take.
    pub fetch_timeout: Duration,
    /// Fewest time between two fetches of one URL, whatever asks for them.
    pub min_refresh_interval: Duration,
    /// How long a fetched set is used before it is refetched in passing.
    pub max_age: Duration,
}

impl Default for JwksSettings {
    fn default() -> Self {
        Self {
            fetch_timeout: Duration::from_secs(5),
            min_refresh_interval: Duration::from_secs(10),
            max_age: Duration::from_secs(300),
        }
    }
}

/// Fetches JWKS documents over HTTP, cached per URL. Cheap to clone.
#[derive(Clone)]
pub struct HttpJwks {
    client: Client<HttpConnector, Empty<Bytes>>,
    settings: JwksSettings,
    urls: Arc<Mutex<HashMap<String, Arc<UrlState>>>>,
}

#[derive(Default)]
struct UrlState {
    last: Mutex<Snapshot>,
    /// Held while fetching, so concurrent askers share one fetch.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default, Clone)]
struct Snapshot {
    /// The last set fetched successfully, and when.
    set: Option<(Arc<JwkSet>, Instant)>,
    /// When the last fetch started, and why it failed if it did.
    attempt: Option<(Instant, Option<String>)>,
}

impl Default for HttpJwks {
    fn default() -> Self {
        Self::new(JwksSettings::default())
    }
}

impl HttpJwks {
    /// A source with these timings.
    pub fn new(settings: JwksSettings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.fetch_timeout));
        connector.set_nodelay(true);
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            settings,
            urls: Arc::default(),
        }
    }

    /// Fetches each URL now, so the first token does not wait; failures are logged and retried
    /// when a token needs the set.
    pub async fn prefetch<'a>(&self, urls: impl IntoIterator<Item = &'a str>) {
        for url in urls {
            match self.get(url, false).await {
                Ok(set) => tracing::info!(url, keys = set.keys.len(), "JWKS fetched"),
                Err(error) => tracing::error!("{error}"),
            }
        }
    }

    fn state(&self, url: &str) -> Arc<UrlState> {
        let mut urls = self.urls.lock().unwrap_or_else(PoisonError::into_inner);
        urls.entry(url.to_owned()).or_default().clone()
    }

    async fn get(&self, url: &str, refresh: bool) -> Result<Arc<JwkSet>, JwksError> {
        let state = self.state(url);
        let asked = Instant::now();
        if let Some(answer) = self.cached_answer(&state.snapshot(), refresh, asked) {
            return answer.map_err(|reason| error(url, reason));
        }
        let _fetching = state.fetching.lock().await;
        // Someone else may have fetched while this caller waited for the lock.
        let snapshot = state.snapshot();
        if let Some((started, failure)) = &snapshot.attempt
            && *started >= asked
        {
            return match (&snapshot.set, failure) {
                (Some((set, _)), None) => Ok(set.clone()),
                (Some((set, _)), Some(_)) if !refresh => Ok(set.clone()),
                (_, Some(reason)) => Err(error(url, reason.clone())),
                (None, None) => Err(error(url, "no document".into())),
            };
        }
        if let Some(answer) = self.cached_answer(&snapshot, refresh, Instant::now()) {
            return answer.map_err(|reason| error(url, reason));
        }
        let started = Instant::now();
        let fetched = match tokio::time::timeout(self.settings.fetch_timeout, self.fetch(url)).await
        {
            Ok(fetched) => fetched,
            Err(_) => Err(format!(
                "no answer within {:?}",
                self.settings.fetch_timeout
            )),
        };
        let mut last = state.last.lock().unwrap_or_else(PoisonError::into_inner);
        match fetched {
            Ok(set) => {
                let set = Arc::new(set);
                last.set = Some((set.clone(), started));
                last.attempt = Some((started, None));
                Ok(set)
            }
            Err(reason) => {
                tracing::warn!(url, "JWKS fetch failed: {reason}");
                last.attempt = Some((started, Some(reason.clone())));
                match &last.set {
                    // A set that merely aged is still better than none; a refresh asked for a
                    // key the old set lacks, so the old set cannot help.
                    Some((set, _)) if !refresh => Ok(set.clone()),
                    _ => Err(error(url, reason)),
                }
            }
        }
    }

    /// The answer the cache gives without fetching, or `None` when a fetch is due.
    fn cached_answer(
        &self,
        snapshot: &Snapshot,
        refresh: bool,
        now: Instant,
    ) -> Option<Result<Arc<JwkSet>, String>> {
        let rate_limited = snapshot.attempt.as_ref().is_some_and(|(started, _)| {
            now.saturating_duration_since(*started) < self.settings.min_refresh_interval
        });
        match &snapshot.set {
            Some((set, fetched))
                if !refresh && now.saturating_duration_since(*fetched) < self.settings.max_age =>
            {
                Some(Ok(set.clone()))
            }
            Some((set, _)) if rate_limited => Some(Ok(set.clone())),
            None if rate_limited => Some(Err(match &snapshot.attempt {
                Some((_, Some(reason))) => format!(
                    "{reason} (next try within {:?})",
                    self.settings.min_refresh_interval
                ),
                _ => "no document".into(),
            })),
            _ => None,
        }
    }

    async fn fetch(&self, url: &str) -> Result<JwkSet, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("invalid URL: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err("only http:// JWKS URLs are supported (serve https through a local proxy, or use jwks_file)".into());
        }
        let request = http::Request::get(uri)
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| format!("invalid request: {e}"))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("HTTP status {status}"));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e} (limit {MAX_JWKS_BYTES} bytes)"))?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| format!("not a JWKS document: {e}"))
    }
}

impl UrlState {
    fn snapshot(&self) -> Snapshot {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl JwksSource for HttpJwks {
    fn jwks<'a>(
        &'a self,
        url: &'a str,
        refresh: bool,
    ) -> BoxFuture<'a, Result<Arc<JwkSet>, JwksError>> {
        Box::pin(self.get(url, refresh))
    }
}

fn error(url: &str, reason: String) -> JwksError {
    JwksError {
        url: url.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests;
