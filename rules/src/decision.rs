//! What the engine answers: allow (with mutations) or deny (with a response), and why.

use std::collections::BTreeMap;
use std::sync::Arc;

/// How a header returned to the client is applied, mirroring Envoy's
/// `HeaderValueOption.HeaderAppendAction` (same names, same default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AppendAction {
    /// Append to an existing header, or add it.
    #[default]
    AppendIfExistsOrAdd,
    /// Add only when the header is absent.
    AddIfAbsent,
    /// Overwrite an existing header, or add it.
    OverwriteIfExistsOrAdd,
    /// Overwrite only when the header exists.
    OverwriteIfExists,
}

/// A header the proxy should add to the upstream request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    /// Lower-case header name.
    pub name: String,
    /// The rendered value.
    pub value: String,
    /// `true`: comma-append to an existing header; `false`: overwrite or add.
    pub append: bool,
}

/// A header the proxy should add to the response sent back to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHeader {
    /// Lower-case header name.
    pub name: String,
    /// The rendered value.
    pub value: String,
    /// How to combine with a header already on the response.
    pub action: AppendAction,
}

/// A JSON-like value for dynamic metadata (becomes a `google.protobuf.Struct` on the wire).
pub type Metadata = BTreeMap<String, serde_json::Value>;

/// The mutations an allow carries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Allow {
    /// Headers to set or append on the upstream request, in config order.
    pub request_headers: Vec<RequestHeader>,
    /// Upstream request headers to remove (lower-case names).
    pub headers_to_remove: Vec<String>,
    /// Headers to add to the client's response.
    pub response_headers: Vec<ResponseHeader>,
    /// Query parameters to set on the upstream request's path, in config order.
    pub query_parameters_to_set: Vec<(String, String)>,
    /// Query parameters to remove from the upstream request's path.
    pub query_parameters_to_remove: Vec<String>,
    /// Dynamic metadata handed back to the proxy.
    pub dynamic_metadata: Metadata,
}

/// The response a deny sends to the client.
#[derive(Debug, Clone, PartialEq)]
pub struct Deny {
    /// The HTTP status the client sees (Envoy's default for a deny is 403).
    pub http_status: u16,
    /// The gRPC code put in `CheckResponse.status` (never 0; 7 PERMISSION_DENIED by default).
    pub grpc_code: i32,
    /// Headers on the denied response, in config order; repeated names are kept.
    pub headers: Vec<(String, String)>,
    /// The denied response's body.
    pub body: String,
    /// Dynamic metadata handed back to the proxy.
    pub dynamic_metadata: Metadata,
}

/// Allow or deny.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Let the request through, applying the mutations.
    Allow(Allow),
    /// Stop the request with this response.
    Deny(Deny),
}

impl Decision {
    /// `allow` or `deny`, for logs.
    pub fn outcome(&self) -> &'static str {
        match self {
            Decision::Allow(_) => "allow",
            Decision::Deny(_) => "deny",
        }
    }

    /// Whether this is an allow.
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }
}

/// A decision together with the rule that made it, for logs and metrics. The reasoning is a
/// [`crate::Trace`], kept only when a caller asks for one.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The decision.
    pub decision: Decision,
    /// The deciding rule's name, or `None` when no rule matched and the default decided.
    pub rule: Option<Arc<str>>,
    /// Shadow rules that matched before the deciding rule, with what they would have decided.
    /// They are counted and logged, never enforced.
    pub shadow: Vec<ShadowMatch>,
    /// Why the deciding rule's Rego policy did not decide (the decision is then a deny).
    pub failure: Option<PolicyFailure>,
}

/// A Rego policy that did not decide: undefined, an error, a wrong shape, over its limit.
/// The check is denied; the server logs the reason and counts the kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFailure {
    /// `undefined`, `error`, `invalid`, `limit` or `input`: a metric label.
    pub kind: &'static str,
    /// What happened, for the log (never request values beyond the policy's own message).
    pub reason: String,
}

/// A shadow rule that matched: what it would have decided had it been enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowMatch {
    /// The shadow rule's name.
    pub rule: Arc<str>,
    /// `allow` or `deny`.
    pub outcome: &'static str,
}

impl From<Decision> for Evaluation {
    /// A decision made outside the rule engine: no rule name.
    fn from(decision: Decision) -> Self {
        Evaluation {
            decision,
            rule: None,
            shadow: Vec::new(),
            failure: None,
        }
    }
}
