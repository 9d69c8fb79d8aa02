//! The validated configuration the proxy runs on: built only by [`super::compile`]'s one
//! conversion, never re-checked on the request path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::limits::Limits;
use crate::ext_authz::{AuthzBackend, ExtAuthz};
use crate::route::RouteTable;
use crate::tls::ListenerTls;
use crate::upstream::Backend;

/// A validated gateway configuration.
#[derive(Debug)]
pub struct Config {
    /// The listeners, in file order.
    pub listeners: Vec<Listener>,
    /// Every route, in match precedence.
    pub routes: RouteTable,
    /// The admin endpoint's address, if any.
    pub admin: Option<SocketAddr>,
    /// The admin endpoint's limits.
    pub admin_limits: Limits,
    /// The upstream services by name (kept across reloads when unchanged, pools included).
    pub backends: HashMap<String, Arc<Backend>>,
    /// The authorization servers by name (kept across reloads when unchanged, channels
    /// included).
    pub authz_backends: HashMap<String, Arc<AuthzBackend>>,
}

/// A validated listener and its gateway-level policies.
#[derive(Debug)]
pub struct Listener {
    /// The listener's name (what `kind = "Gateway"` policies target).
    pub name: String,
    /// The address to bind.
    pub address: SocketAddr,
    /// Connection, stream, header and timeout limits.
    pub limits: Limits,
    /// Gateway-level ext_auth checks, run in file order before any route-level check.
    pub policies: Vec<Arc<ExtAuthz>>,
    /// TLS termination, when configured.
    pub tls: Option<Arc<ListenerTls>>,
    /// How requests on this listener are made canonical before routing and the check.
    pub canonical: crate::request::CanonicalOptions,
}
