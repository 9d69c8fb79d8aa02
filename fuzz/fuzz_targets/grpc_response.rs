//! CheckResponse bytes → what the gateway does with them (`gateway::ext_authz::grpc::verdict`,
//! then the allow's changes applied to a request and its response, or the denied response
//! built). Checked for every input:
//!
//! - a non-OK status is never an allow, and an OK one never a deny (the status decides);
//! - applying an allow never panics and never changes the path (only the query); a query
//!   rewrite that cannot be made is refused up front (never applied half-way);
//! - a deny or error always becomes a response with a status.

#![no_main]

use extauthz_proto::v3::CheckResponse;
use gateway::ext_authz::mutation::apply_response_headers;
use gateway::ext_authz::{Verdict, grpc};
use http::StatusCode;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(response) = CheckResponse::decode(data) else {
        return;
    };
    let code = response.status.as_ref().map_or(0, |s| s.code);
    match grpc::verdict(response) {
        Verdict::Allow(mut allowed) => {
            assert_eq!(code, 0, "an allow from a non-OK status");
            let (mut parts, ()) = http::Request::get("/a/b?x=1&api_key=s&y")
                .header("host", "example.com")
                .header("x-a", "1")
                .header("x-a", "2")
                .body(())
                .expect("request")
                .into_parts();
            let uri = parts.uri.clone();
            if allowed.plan_query_rewrite(&uri).is_ok() {
                allowed.apply_to_request(&mut parts);
                let path = parts.uri.path_and_query().map_or("", |pq| pq.as_str());
                assert!(path.starts_with("/a/b"), "the path changed: {path}");
                let mut response_headers = http::HeaderMap::new();
                response_headers.insert("x-a", http::HeaderValue::from_static("upstream"));
                apply_response_headers(&mut response_headers, &allowed.take_response_headers());
            }
        }
        Verdict::Deny(denied) => {
            assert_ne!(code, 0, "a deny from an OK status");
            let response = denied.into_response(StatusCode::FORBIDDEN);
            assert!(!response.headers().contains_key("content-length"));
        }
        Verdict::Error { response, .. } => {
            assert_ne!(code, 0, "an error from an OK status");
            if let Some(denied) = response {
                let _ = denied.into_response(StatusCode::FORBIDDEN);
            }
        }
        Verdict::Invalid { reason } => {
            assert_eq!(code, 0, "only an allow can be invalid");
            assert!(!reason.is_empty());
        }
    }
});
