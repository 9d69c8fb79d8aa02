//! The extension point: anything that turns a [`Request`] into a decision can be served.

use std::future::Future;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rules::{Evaluation, Request, RuleSet};

/// Why an authorizer could not decide. The server answers it as an *error*, not a deny
/// (gRPC `UNAVAILABLE`, HTTP 503), so the proxy applies its failure mode.
#[derive(Debug, thiserror::Error)]
#[error("authorizer could not decide: {0}")]
pub struct AuthorizeError(pub String);

/// Decides one request. Implement it to serve your own logic over gRPC (v3 and v2) and HTTP.
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
}

/// The TOML rule engine as an [`Authorizer`]. The rule set sits behind an [`ArcSwap`] so a
/// reload can publish a new snapshot while each check keeps the one it started with.
#[derive(Clone)]
pub struct RuleEngine {
    rules: Arc<ArcSwap<RuleSet>>,
}

impl RuleEngine {
    /// Serves `rules`.
    pub fn new(rules: RuleSet) -> Self {
        Self {
            rules: Arc::new(ArcSwap::from_pointee(rules)),
        }
    }

    /// Publishes a new rule set; checks already running finish on the old one.
    pub fn replace(&self, rules: RuleSet) {
        self.rules.store(Arc::new(rules));
    }
}

impl Authorizer for RuleEngine {
    async fn check(&self, request: &Request) -> Result<Evaluation, AuthorizeError> {
        Ok(self.rules.load().decide(request))
    }

    fn needs_received(&self) -> bool {
        self.rules.load().needs_received()
    }
}
