//! The rule engine: a TOML policy compiled into matchers and actions, and a pure
//! `decide(&RuleSet, &Request) -> Evaluation`. No I/O, no gRPC, no HTTP.

pub mod decision;
pub mod request;

pub use decision::{Allow, AppendAction, Decision, Deny, Evaluation, Metadata, RequestHeader, ResponseHeader};
pub use request::{Peer, Request, Transport};
