//! One canonical spelling of a request's path and authority.
//!
//! An authorization decision is only as good as the agreement between what was checked and what
//! the backend serves. Backends normalise (`//admin` → `/admin`, `/a/../admin` → `/admin`,
//! `%61dmin` → `admin`, `Admin.Example.com:80` → `admin.example.com`), so a check on the raw
//! spelling can be walked around. The gateway and the rule engine both decide on the spelling
//! computed here, with the same options, so they agree with each other and with the backend.
//!
//! - [`canonical_path`]: RFC 3986 §6.2.2 normalisation of an origin-form path — percent-encoded
//!   unreserved characters decoded, the remaining escapes upper-cased, characters that may not
//!   appear raw escaped, `.`/`..` segments resolved (never above the root), repeated slashes
//!   merged (optional), and a declared policy for encoded slashes and backslashes
//!   ([`EscapedSlashes`]) and for `;` path parameters ([`PathParameters`]). Anything that has no single meaning (control characters, a
//!   fragment, broken escapes) is an error, never a guess.
//! - [`split_target`]: separates the query, which is carried along unchanged.
//! - [`canonical_host`]: lower case, no trailing dot, no default port.
//!
//! Every function is pure and allocation-bounded by its input; both are idempotent: the output
//! of a function given its own output (with the same options) is unchanged.

mod host;
mod path;

pub use host::{HostError, HostOptions, canonical_host, host_name, is_canonical_host};
pub use path::{
    EscapedSlashes, PathError, PathOptions, PathParameters, canonical_path, is_canonical_path,
    split_target,
};
