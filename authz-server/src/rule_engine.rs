//! The TOML rule engine as an [`Authorizer`]: the compiled rules behind a swappable snapshot,
//! with the hooks (database pools, JWKS cache) they call.

use std::future::Future;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rules::{Evaluation, Hooks, Request, RuleSet};

use crate::authorizer::{AuthorizeError, Authorizer, Checked, Renders};

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

    /// The Rego policy and data files the rules in force read, for the reloader to watch.
    pub fn rego_files(&self) -> Vec<std::path::PathBuf> {
        let rules = self.rules.load();
        rules.rego_files().into_iter().map(Into::into).collect()
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

    fn needs_opa_attributes(&self) -> bool {
        self.rules.load().needs_opa_attributes()
    }

    fn path_for_log(&self, request: &Request) -> String {
        self.rules.load().path_for_log(request)
    }

    /// One snapshot for the whole check: whether to render `received`, the decision and the
    /// log's path all come from the rule set loaded here.
    fn decide<B>(&self, build: B) -> impl Future<Output = Checked> + Send
    where
        B: FnOnce(Renders) -> Request + Send,
    {
        let rules = self.rules.load_full();
        async move {
            let request = build(Renders::for_rules(&rules));
            let evaluation = Ok(rules.evaluate(&request, &self.hooks).await);
            let path_for_log = rules.path_for_log(&request);
            Checked {
                request,
                evaluation,
                path_for_log,
            }
        }
    }
}
