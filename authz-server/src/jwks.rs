//! The JWKS hook: [`HttpJwks`] fetches the key sets rules name by `jwks_url`, caches each per URL
//! and refetches when a token names a key the cached set lacks — at most once per
//! `min_refresh_interval` per URL, counted from the *start* of a fetch, so a flood of tokens with
//! made-up `kid`s cannot turn into a flood of fetches.
//!
//! A check never waits on a fetch beyond its own budget ([`JwksSettings::max_wait`]): fetches run
//! in the background and publish their result when done. A token naming an unknown `kid` while a
//! fetch is already running is answered at once from the set in hand (so it is refused: 401),
//! and a check whose own fetch outlives the budget is answered the same way; the new set serves
//! later tokens once it arrives.
//!
//! `https://` URLs are verified against the platform's trust store (which honours
//! `SSL_CERT_FILE` and `SSL_CERT_DIR`), or Mozilla's roots when the platform has none, plus any
//! [`JwksSettings::extra_roots`]; TLS runs on rustls with the `ring` provider.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::JwkSet;
use rules::hooks::BoxFuture;
use rules::{JwksError, JwksSource};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;

/// The largest JWKS document read; real ones are a few KiB.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Timing of fetches, and whom `https://` fetches trust.
#[derive(Debug, Clone)]
pub struct JwksSettings {
    /// Longest one fetch (connect, request, body) may take; it runs in the background.
    pub fetch_timeout: Duration,
    /// Longest a check waits for a fetch it started (or, having no set at all, for one already
    /// running). A token naming an unknown `kid` never waits for a fetch another check started.
    pub max_wait: Duration,
    /// Fewest time between two fetches of one URL, whatever asks for them.
    pub min_refresh_interval: Duration,
    /// How long a fetched set is used before it is refetched in passing.
    pub max_age: Duration,
    /// Certificates trusted as roots for `https://` URLs besides the platform's (e.g. a private
    /// CA, or a test's).
    pub extra_roots: Vec<CertificateDer<'static>>,
}

impl Default for JwksSettings {
    fn default() -> Self {
        Self {
            fetch_timeout: Duration::from_secs(5),
            max_wait: Duration::from_secs(1),
            min_refresh_interval: Duration::from_secs(10),
            max_age: Duration::from_secs(300),
            extra_roots: Vec::new(),
        }
    }
}

/// Fetches JWKS documents over HTTP or HTTPS, cached per URL. Cheap to clone.
#[derive(Clone)]
pub struct HttpJwks {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    settings: JwksSettings,
    urls: Arc<Mutex<HashMap<String, Arc<UrlState>>>>,
}

struct UrlState {
    last: Mutex<Snapshot>,
    /// Counts finished fetches; checks waiting for one watch it.
    done: tokio::sync::watch::Sender<u64>,
}

impl Default for UrlState {
    fn default() -> Self {
        Self {
            last: Mutex::default(),
            done: tokio::sync::watch::Sender::new(0),
        }
    }
}

#[derive(Default, Clone)]
struct Snapshot {
    /// The last set fetched successfully, and when its fetch started.
    set: Option<(Arc<JwkSet>, Instant)>,
    /// When the latest fetch started (the refetch rate limit counts from here).
    started: Option<Instant>,
    /// Whether that fetch is still running.
    running: bool,
    /// Why the latest finished fetch failed; `None` when it succeeded.
    failure: Option<String>,
}

impl Default for HttpJwks {
    fn default() -> Self {
        Self::new(JwksSettings::default())
    }
}

impl HttpJwks {
    /// A source with these timings.
    pub fn new(settings: JwksSettings) -> Self {
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(settings.fetch_timeout));
        tcp.set_nodelay(true);
        // The TLS layer below takes `https://`; plain `http://` passes through it untouched.
        tcp.enforce_http(false);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(&settings.extra_roots))
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
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
        // Subscribed before the state is read, so a fetch ending in between is not missed.
        let mut done = state.done.subscribe();
        {
            let mut last = state.last.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(answer) = self.cached_answer(&last, refresh, Instant::now()) {
                return answer.map_err(|reason| error(url, reason));
            }
            if last.running {
                // Someone else's fetch is on its way. An unknown kid does not wait for it (the
                // set in hand answers: the token is refused); a stale set beats waiting; only
                // a caller with no set at all waits, within its budget.
                match (&last.set, refresh) {
                    (Some((set, _)), _) => return Ok(set.clone()),
                    (None, true) => {
                        return Err(error(url, "keys are being fetched".to_owned()));
                    }
                    (None, false) => {}
                }
            } else {
                last.running = true;
                last.started = Some(Instant::now());
                self.spawn_fetch(url, state.clone());
            }
        }
        let finished = tokio::time::timeout(self.settings.max_wait, done.changed())
            .await
            .is_ok();
        let now = state.snapshot();
        if !finished {
            // The budget is spent; the fetch goes on and serves later checks.
            return match &now.set {
                Some((set, _)) => Ok(set.clone()),
                None => Err(error(
                    url,
                    format!(
                        "no answer within {:?} (the fetch goes on in the background)",
                        self.settings.max_wait
                    ),
                )),
            };
        }
        match (&now.set, &now.failure) {
            (Some((set, _)), None) => Ok(set.clone()),
            // A set that merely aged is still better than none; a refresh asked for a key the
            // old set lacks, so the old set cannot help.
            (Some((set, _)), Some(_)) if !refresh => Ok(set.clone()),
            (_, Some(reason)) => Err(error(url, reason.clone())),
            (None, None) => Err(error(url, "no document".into())),
        }
    }

    /// Starts fetching `url` in the background; its result is published to `state` when it
    /// ends, whether or not anyone still waits for it.
    fn spawn_fetch(&self, url: &str, state: Arc<UrlState>) {
        let (this, url) = (self.clone(), url.to_owned());
        // A child of the check that started it (when tracing is on); it may outlive that check.
        let span = crate::otel::jwks_fetch(&url);
        let fetching = async move {
            let started = Instant::now();
            let timeout = this.settings.fetch_timeout;
            let fetched = match tokio::time::timeout(timeout, this.fetch(&url)).await {
                Ok(fetched) => fetched,
                Err(_) => Err(format!("no answer within {timeout:?}")),
            };
            {
                let mut last = state.last.lock().unwrap_or_else(PoisonError::into_inner);
                last.running = false;
                match fetched {
                    Ok(set) => {
                        last.set = Some((Arc::new(set), started));
                        last.failure = None;
                    }
                    Err(reason) => {
                        crate::otel::failed(&tracing::Span::current(), "jwks fetch");
                        tracing::warn!(url, "JWKS fetch failed: {reason}");
                        last.failure = Some(reason);
                    }
                }
            }
            state.done.send_modify(|count| *count += 1);
        };
        tokio::spawn(tracing::Instrument::instrument(fetching, span));
    }

    /// The answer the cache gives without fetching, or `None` when a fetch is due (or one is
    /// running and the caller has no set).
    fn cached_answer(
        &self,
        snapshot: &Snapshot,
        refresh: bool,
        now: Instant,
    ) -> Option<Result<Arc<JwkSet>, String>> {
        let rate_limited = snapshot.started.is_some_and(|started| {
            now.saturating_duration_since(started) < self.settings.min_refresh_interval
        });
        match &snapshot.set {
            Some((set, fetched))
                if !refresh && now.saturating_duration_since(*fetched) < self.settings.max_age =>
            {
                Some(Ok(set.clone()))
            }
            Some((set, _)) if rate_limited => Some(Ok(set.clone())),
            None if rate_limited && !snapshot.running => Some(Err(match &snapshot.failure {
                Some(reason) => format!(
                    "{reason} (next try within {:?})",
                    self.settings.min_refresh_interval
                ),
                None => "no document".into(),
            })),
            _ => None,
        }
    }

    async fn fetch(&self, url: &str) -> Result<JwkSet, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("invalid URL: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err("only http:// and https:// JWKS URLs are supported".into());
        }
        let request = http::Request::get(uri)
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| format!("invalid request: {e}"))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("request failed: {}", with_causes(&e)))?;
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
        if !telemetry::enabled() {
            return Box::pin(self.get(url, refresh));
        }
        let span = crate::otel::jwks(url);
        Box::pin(tracing::Instrument::instrument(
            async move {
                let answer = self.get(url, refresh).await;
                if answer.is_err() {
                    crate::otel::failed(&tracing::Span::current(), "jwks");
                }
                answer
            },
            span,
        ))
    }
}

/// The client's TLS settings: the platform's roots plus `extra_roots`, on the `ring` provider
/// (named here rather than taken from the process default, which another crate in the build could
/// set to a different one).
fn tls_config(extra_roots: &[CertificateDer<'static>]) -> rustls::ClientConfig {
    let mut roots = platform_roots().clone();
    let (_, ignored) = roots.add_parsable_certificates(extra_roots.iter().cloned());
    if ignored > 0 {
        tracing::warn!(
            ignored,
            "JWKS: extra root certificates that do not parse were ignored"
        );
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        // `ring`'s default provider has cipher suites for both safe protocol versions.
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// The platform's trust store, read once per process; Mozilla's roots (compiled in) when it has
/// no usable certificate, so a minimal container still reaches public identity providers.
fn platform_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::warn!("JWKS: reading the platform's root certificates: {error}");
        }
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(native.certs);
        if added == 0 {
            tracing::warn!(
                "JWKS: no platform root certificates found; trusting Mozilla's roots (webpki-roots)"
            );
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        roots
    })
}

/// `error: cause: cause…` — the client's own message ("client error (Connect)") hides the reason
/// (a refused connection, an untrusted certificate) in its sources.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn error(url: &str, reason: String) -> JwksError {
    JwksError {
        url: url.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests;
