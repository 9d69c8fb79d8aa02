//! Every listener of the gateway and of `authz-server` (the gateway's listeners and admin port;
//! the HTTP-mode and admin ports) serves its connections through this crate, so one client can
//! never hold more than its share: connections, streams, header fields and bytes, and time.
//!
//! - [`Limits`]: the bounds, with safe defaults named after Envoy's settings.
//! - [`ConnectionSlot`]: one of a listener's `max_connections`.
//! - [`serve_connection`]: one connection (HTTP/1.1 and h2 on the same socket) under those limits.
//!
//! The binaries read their limits from their own config files; this crate only enforces them.

mod body;
mod connection;
mod fields;
mod limits;
mod request;
mod slot;
mod socket;
mod state;

pub use body::{IdleBody, LimitedBody, StreamIdle};
pub use connection::serve_connection;
pub use fields::{MALFORMED_HEADER, malformed_field};
pub use limits::*;
pub use request::{
    PREMATURE_RESET_LIFETIME, PREMATURE_RESET_STREAM_COUNT, STREAM_TIMEOUT, TOO_MANY_HEADERS,
};
pub use slot::ConnectionSlot;

/// Any error a body can yield.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
