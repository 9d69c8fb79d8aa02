//! What one check is given: the request as it stands, the connection's facts, and the body
//! prefix a policy asks for.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::SystemTime;

use ::http::request::Parts;
use bytes::Bytes;

use crate::tls::PeerIdentity;

/// Envoy's `with_request_body`.
#[derive(Debug, Clone, Copy)]
pub struct WithRequestBody {
    /// How many bytes to send at most.
    pub max_request_bytes: usize,
    /// Over the limit: send a prefix (true) or answer 413 (false).
    pub allow_partial_message: bool,
    /// Send `raw_body` instead of `body`.
    pub pack_as_bytes: bool,
}

/// What the check of one request sees besides the request itself.
#[derive(Debug)]
pub struct CheckInput<'a> {
    /// The request head, as it stands after earlier policies mutated it.
    pub parts: &'a Parts,
    /// The client's address.
    pub peer: SocketAddr,
    /// The listener's local address the client connected to.
    pub local: SocketAddr,
    /// `x-request-id`.
    pub request_id: &'a str,
    /// When the request arrived.
    pub time: SystemTime,
    /// The policy's context extensions, then the route's (which win on a shared key).
    pub context_extensions: [&'a BTreeMap<String, String>; 2],
    /// The body prefix, when the policy asked for it.
    pub body: Option<CheckBody>,
    /// `http` or `https` (a TLS listener).
    pub scheme: &'static str,
    /// The TLS client's identity, on TLS listeners.
    pub tls: Option<&'a PeerIdentity>,
}

/// The body bytes a check carries.
#[derive(Debug, Clone)]
pub struct CheckBody {
    /// At most `max_request_bytes`.
    pub bytes: Bytes,
    /// Whether the body was longer than what is sent.
    pub partial: bool,
    /// Send as `raw_body` bytes instead of the `body` string.
    pub pack_as_bytes: bool,
}
