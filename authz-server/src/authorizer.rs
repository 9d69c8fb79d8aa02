//! The extension point: anything that turns a [`Request`] into a decision can be served.

use std::future::Future;

use rules::{Evaluation, Request, RuleSet};

/// Why an authorizer could not decide. The server answers it as an *error*, not a deny
/// (gRPC `UNAVAILABLE`, HTTP 503), so the proxy applies its failure mode.
#[derive(Debug, thiserror::Error)]
#[error("authorizer could not decide: {0}")]
pub struct AuthorizeError(pub String);

/// What a transport renders into the [`Request`] besides the neutral view; each costs, so only
/// what the authorizer will read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Renders {
    /// [`Request::received`]: the one-line dump of the attributes (`{{received}}`).
    pub received: bool,
    /// [`Request::opa_attributes`]: the attributes as OPA-Envoy hands them to a Rego policy.
    pub opa_attributes: bool,
}

impl Renders {
    /// What `rules` reads.
    pub fn for_rules(rules: &RuleSet) -> Self {
        Renders {
            received: rules.needs_received(),
            opa_attributes: rules.needs_opa_attributes(),
        }
    }
}

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

    /// Whether [`Request::opa_attributes`] should be rendered (a Rego policy reads them); off
    /// unless asked for, like [`Authorizer::needs_received`].
    fn needs_opa_attributes(&self) -> bool {
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

    /// One check from start to end, against one view of the authorizer's state: `build` makes
    /// the request (told what to render besides the neutral view), then it is decided and its
    /// path made fit for the log. The default calls [`Authorizer::needs_received`],
    /// [`Authorizer::needs_opa_attributes`],
    /// [`Authorizer::check`] and [`Authorizer::path_for_log`] in turn; the rule engine
    /// overrides it so that a reload between those steps cannot mix two rule sets.
    fn decide<B>(&self, build: B) -> impl Future<Output = Checked> + Send
    where
        B: FnOnce(Renders) -> Request + Send,
    {
        async move {
            let request = build(Renders {
                received: self.needs_received(),
                opa_attributes: self.needs_opa_attributes(),
            });
            let evaluation = self.check(&request).await;
            let path_for_log = self.path_for_log(&request);
            Checked {
                request,
                evaluation,
                path_for_log,
            }
        }
    }
}

/// What [`Authorizer::decide`] hands back to the transport: the request as checked, the
/// verdict, and the path as the decision log may show it.
#[derive(Debug)]
pub struct Checked {
    /// The request as it was decided.
    pub request: Request,
    /// The decision, or why there is none.
    pub evaluation: Result<Evaluation, AuthorizeError>,
    /// [`Authorizer::path_for_log`] of the request.
    pub path_for_log: String,
}
