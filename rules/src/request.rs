//! The neutral view of a request under check: what the engine may look at, whichever transport
//! (gRPC v3, gRPC v2, Envoy's HTTP mode) brought it.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// Which API delivered the check. Rules may match on it, because Envoy's gRPC and HTTP modes
/// expect different answers (the Istio parity rules differ per transport).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// `envoy.service.auth.v3.Authorization/Check` or its v2 twin.
    #[default]
    Grpc,
    /// Envoy's HTTP ext_authz mode: the original request replayed to the server.
    Http,
}

impl Transport {
    /// The name used in config and logs: `grpc` or `http`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Http => "http",
        }
    }
}

/// One end of the connection, as the proxy saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    /// The socket address's IP, when the proxy sent a parseable one.
    pub ip: Option<IpAddr>,
    /// The socket address's port, 0 when absent.
    pub port: u32,
    /// The peer's identity, e.g. `spiffe://cluster.local/ns/default/sa/a`; empty when unknown.
    pub principal: String,
}

/// A request as the rule engine sees it. Header names are lower-case; repeated headers are joined
/// with `,` as Envoy does.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The transport the check arrived on.
    pub transport: Transport,
    /// `GET`, `POST`, ...; empty when the proxy sent none.
    pub method: String,
    /// The path including the query string, as Envoy sends it.
    pub path: String,
    /// The authority (`host` header or `:authority`).
    pub host: String,
    /// `http` or `https`; empty when unknown.
    pub scheme: String,
    /// `HTTP/1.0`, `HTTP/1.1`, `HTTP/2`, `HTTP/3`; empty when unknown.
    pub protocol: String,
    /// Lower-cased header names to values; includes pseudo headers (`:path`, ...) when sent.
    pub headers: BTreeMap<String, String>,
    /// The request body as far as the proxy forwarded it (lossy UTF-8 for display and matching).
    pub body: String,
    /// The client side of the connection.
    pub source: Peer,
    /// The proxy side of the connection.
    pub destination: Peer,
    /// `context_extensions` the proxy attached to the check (per route in Envoy).
    pub context_extensions: BTreeMap<String, String>,
    /// A one-line description of everything received, rendered by the transport. Filled only when
    /// the rule set asks for it ([`crate::RuleSet::needs_received`]), because rendering costs.
    pub received: String,
    /// The check's attributes as OPA-Envoy hands them to a Rego policy, rendered by the
    /// transport from the message it received. Filled only when the rule set asks for it
    /// ([`crate::RuleSet::needs_opa_attributes`]); when absent, a Rego rule builds them from
    /// this view instead (HTTP mode, tests, custom authorizers).
    pub opa_attributes: Option<Box<OpaAttributes>>,
}

/// `input.attributes` and `input.version` of OPA-Envoy's input document.
#[derive(Debug, Clone, PartialEq)]
pub struct OpaAttributes {
    /// The CheckRequest's `attributes`, as OPA-Envoy serializes them for this API version.
    pub attributes: serde_json::Value,
    /// `input.version.ext_authz`: `v3` or `v2`.
    pub ext_authz: &'static str,
    /// `input.version.encoding`: `protojson` (v3) or `encoding/json` (v2).
    pub encoding: &'static str,
}

impl OpaAttributes {
    /// The version of a v3 check, with no attributes: what an input built from the neutral
    /// view declares.
    pub const V3_SHAPE: OpaAttributes = OpaAttributes {
        attributes: serde_json::Value::Null,
        ext_authz: "v3",
        encoding: "protojson",
    };
}

impl Request {
    /// The value of a header, by lower-case name.
    pub fn header(&self, lower_case_name: &str) -> Option<&str> {
        self.headers.get(lower_case_name).map(String::as_str)
    }
}
