//! CheckRequest bytes → decision, as `authz-server` decides a gRPC check: the protobuf decoded
//! (v3, and v2 for old Envoys), the rule engine's request view built from it
//! (`authz_server::attributes`), and the request decided by the shipped Istio policy and a
//! policy that reaches most of the engine. Checked for every input:
//!
//! - indexed and traced evaluation agree (the index only skips rules that cannot match);
//! - every header of the decision is valid on the wire (no CR/LF from request data);
//! - the Istio policy never allows what Istio would not: gRPC allows only with
//!   `x-ext-authz: allow`, or without that header for a principal ending in `/sa/a`;
//! - a query value rendered from a header cannot add parameters.

#![no_main]

mod common;

use authz_server::Renders;
use extauthz_proto::{v2, v3};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use rules::{Decision, Request};

fn istio_would_allow(request: &Request) -> bool {
    match request.header("x-ext-authz") {
        Some(value) => value == "allow",
        None => request.source.principal.ends_with("/sa/a"),
    }
}

fn check(request_for: impl Fn(Renders) -> Request) {
    let [(_, istio), (_, rich)] = common::rule_sets();
    let request = request_for(Renders::for_rules(istio));
    let evaluation = common::decide(istio, &request);
    if evaluation.decision.is_allow() {
        assert!(
            istio_would_allow(&request),
            "the Istio policy allowed a request Istio denies: {request:?}"
        );
    }
    let request = request_for(Renders::for_rules(rich));
    let evaluation = common::decide(rich, &request);
    if let Decision::Allow(allow) = &evaluation.decision {
        for (name, value) in &allow.query_parameters_to_set {
            assert!(
                !value.contains(['&', '#', ' ', '+', '\r', '\n']),
                "query value {name}={value:?} rendered from a header could add parameters"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = v3::CheckRequest::decode(data) {
        check(|renders| authz_server::attributes::from_v3(message.clone(), renders));
    }
    if let Ok(message) = v2::CheckRequest::decode(data) {
        check(|renders| authz_server::attributes::from_v2(message.clone(), renders));
    }
});
