//! The extension point: anything that turns a [`Request`] into a decision can be served.

use std::future::Future;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rules::{Evaluation, Hooks, Request, RuleSet};

/// Why an authorizer could not decide. The server answers it as an *error*, not a deny
/// (gRPC `UNAVAILABLE`, HTTP 503), so the proxy applies its failure mode.
#[derive(Debug, thiserror::Error)]
#[error("authorizer could not decide: {0}")]
pub struct AuthorizeError(pub String);

/// Decides one request. Implement it to serve your own logic over gRPC (v3 and v2) and HTTP.
///
/// A [`rules::Deny`] is always sent as a denial: `grpc_code: 0` (OK, which Envoy would read as
/// an allow) goes out as 7 `PERMISSION_DENIED`, and `http_status: 200` or a 1xx as 403, each
/// with a warning in the log.
///
/// ```
/// use authz_server::{AuthorizeError, Authorizer};
/// use rules::{Allow, Decision, Evaluation, Request};
///
/// struct AllowEveryone;
///
/// impl Authorizer for AllowEveryone {
///     async fn check(&self, _request: &Request) -> Result<Evaluation, AuthorizeError> {
///         Ok(Decision::Allow(Allow::default()).into())
///     }
/// }
/// ```
pub trait Authorizer: Send + Sync + 'static {
    /// Decides `request`. An `Err` is reported to the proxy as an error, never as an allow.
    fn check(
        &self,
        request: &Request,
    ) -> impl Future<Output = Result<Evaluation, AuthorizeError>> + Send;

    /// Whether [`Request::received`] should be rendered before [`Authorizer::check`]; rendering
    /// the one-line dump of the attributes costs, so it is skipped unless asked for.
    fn needs_received(&self) -> bool {
        false
    }

    /// The request's path as the decision log may show it. The default drops the query (it
    /// may carry credentials) for `?<redacted>`; the rule engine also hides the path segments
    /// its lookups bind. Control characters are escaped by the logger either way.
    fn path_for_log(&self, request: &Request) -> String {
        match request.path.split_once('?') {
            Some((path, _)) => format!("{path}?<redacted>"),
            None => request.path.clone(),
        }
    }
}

/// The TOML rule engine as an [`Authorizer`]. The rule set sits behind an [`ArcSwap`] so a
/// reload can publish a new snapshot while each check keeps the one it started with; the hooks
/// (database pools, JWKS cache) live as long as the engine.
#[derive(Clone)]
pub struct RuleEngine {
    rules: Arc<ArcSwap<RuleSet>>,
    hooks: Hooks,
}

impl RuleEngine {
    /// Serves `rules` without hooks: rules that need a database or a JWKS URL fail closed.
    pub fn new(rules: RuleSet) -> Self {
        Self::with_hooks(rules, Hooks::default())
    }

    /// Serves `rules` with these hooks.
    pub fn with_hooks(rules: RuleSet, hooks: Hooks) -> Self {
        Self {
            rules: Arc::new(ArcSwap::from_pointee(rules)),
            hooks,
        }
    }

    /// Serves `rules` with hooks connected to what they name (see [`crate::hooks::connect`]);
    /// `base_dir` (the config file's directory) anchors relative SQLite paths.
    pub async fn connect(rules: RuleSet, base_dir: Option<&std::path::Path>) -> Self {
        let hooks = crate::hooks::connect(&rules, base_dir).await;
        Self::with_hooks(rules, hooks)
    }

    /// Publishes a new rule set; checks already running finish on the old one. The hooks stay:
    /// `[databases]` opened at start keep serving, and a changed `[databases]` table takes
    /// effect on restart.
    pub fn replace(&self, rules: RuleSet) {
        if rules.databases() != self.rules.load().databases() {
            tracing::warn!(
                "reload: [databases] changed; new or changed databases take effect on restart"
            );
        }
        self.rules.store(Arc::new(rules));
    }
}

impl Authorizer for RuleEngine {
    async fn check(&self, request: &Request) -> Result<Evaluation, AuthorizeError> {
        let rules = self.rules.load_full();
        Ok(rules.evaluate(request, &self.hooks).await)
    }

    fn needs_received(&self) -> bool {
        self.rules.load().needs_received()
    }

    fn path_for_log(&self, request: &Request) -> String {
        self.rules.load().path_for_log(request)
    }
}
