//! One request through the gateway, as a pipeline of named steps, each a function of its own:
//!
//! 1. **canonicalise** — the one spelling of the request ([`crate::request`]); no canonical form
//!    is a 400 and no check is ever sent;
//! 2. **route** — the route that serves it ([`crate::route`]); none is a 404;
//! 3. **authorize** — every policy in force, gateway level first, then route level; all must
//!    allow (`authorize`, with the body a policy asks for buffered by `check_body`);
//! 4. **forward** — the request to the route's backend and its response back (`forward`);
//! 5. **log** — the span, the metrics and the access-log line (`log`).
//!
//! Module map: `pipeline` (the steps in order, [`serve_request`]), `authorize`, `check_body`,
//! `forward`, `log`, `record` (what the steps write down for the log), `connection`
//! ([`Connection`]), `reply` ([`local_reply`], marked as the gateway's own), `grpc_reply` (a
//! gRPC client's local replies in gRPC), `request_id`, `tunnel` (WebSocket upgrades a route
//! allows, tunnelled after the check).

mod authorize;
mod check_body;
mod connection;
mod forward;
mod grpc_reply;
mod log;
mod pipeline;
mod record;
mod reply;
mod request_id;
pub mod retry;
pub mod route_headers;
mod tunnel;

pub use connection::Connection;
pub use pipeline::serve_request;
pub use reply::local_reply;
