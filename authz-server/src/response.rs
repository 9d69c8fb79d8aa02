//! A [`Decision`] written as Envoy's `CheckResponse`, v3 and v2.

use extauthz_proto::{RpcStatus, v2, v3};
use prost_types::{ListValue, Struct, Value, value::Kind};
use rules::{AppendAction, Decision, Deny, Metadata};

/// `google.rpc.Code.OK`.
const OK: i32 = 0;

/// `google.rpc.Code.PERMISSION_DENIED`: what a deny that says OK is sent as.
const PERMISSION_DENIED: i32 = 7;

/// The gRPC code and HTTP status a deny is sent with. A deny can never be sent as an OK: the
/// rule engine refuses `grpc_code = 0` at load, but an [`crate::Authorizer`] of one's own
/// builds [`Deny`] freely, and Envoy reads code 0 as *allow* whatever else the answer says. So
/// code 0 becomes `PERMISSION_DENIED` (7) — mapped rather than refused, because a typed error
/// at construction would break every `Deny { .. }` literal and the edge is the one place all
/// decisions pass. Likewise an HTTP status of 200 (what a client reads as success) or a 1xx
/// (not a final response) becomes 403, as HTTP mode does; redirects and other codes stay.
/// Each mapping logs a warning naming the mistake.
pub(crate) fn deny_codes(deny: &Deny) -> (i32, u16) {
    let code = if deny.grpc_code == OK {
        tracing::warn!("a deny with gRPC code 0 (OK) is sent as 7 (PERMISSION_DENIED)");
        PERMISSION_DENIED
    } else {
        deny.grpc_code
    };
    let status = if deny.http_status == 200 || !(200..=599).contains(&deny.http_status) {
        tracing::warn!(
            status = deny.http_status,
            "a deny with HTTP status 200 or outside 201..=599 is sent as 403"
        );
        403
    } else {
        deny.http_status
    };
    (code, status)
}

/// The v3 answer: an allow carries every mutation the rule asked for; a deny carries its status,
/// headers and body. Either way the RPC itself succeeds. The decision's strings move into the
/// message, uncopied.
// `OkHttpResponse.dynamic_metadata` is deprecated in favour of `CheckResponse.dynamic_metadata`,
// which is the one we fill; the old field is only named to be left empty.
#[allow(deprecated)]
pub(crate) fn to_v3(decision: Decision) -> v3::CheckResponse {
    match decision {
        Decision::Allow(allow) => {
            let rules::Allow {
                request_headers,
                headers_to_remove,
                response_headers,
                query_parameters_to_set,
                query_parameters_to_remove,
                dynamic_metadata,
            } = allow;
            v3::CheckResponse {
                status: Some(status(OK)),
                http_response: Some(v3::check_response::HttpResponse::OkResponse(
                    v3::OkHttpResponse {
                        headers: request_headers
                            .into_iter()
                            .map(|h| header_v3(h.name, h.value, h.append.then_some(true), None))
                            .collect(),
                        headers_to_remove,
                        dynamic_metadata: None,
                        response_headers_to_add: response_headers
                            .into_iter()
                            .map(|h| header_v3(h.name, h.value, None, Some(h.action)))
                            .collect(),
                        query_parameters_to_set: query_parameters_to_set
                            .into_iter()
                            .map(|(key, value)| extauthz_proto::v3::QueryParameter { key, value })
                            .collect(),
                        query_parameters_to_remove,
                    },
                )),
                dynamic_metadata: metadata(&dynamic_metadata),
            }
        }
        Decision::Deny(deny) => {
            let (code, http_status) = deny_codes(&deny);
            v3::CheckResponse {
                status: Some(status(code)),
                http_response: Some(v3::check_response::HttpResponse::DeniedResponse(
                    v3::DeniedHttpResponse {
                        status: Some(v3::HttpStatus {
                            code: i32::from(http_status),
                        }),
                        headers: deny
                            .headers
                            .into_iter()
                            .map(|(name, value)| header_v3(name, value, None, None))
                            .collect(),
                        body: deny.body,
                    },
                )),
                dynamic_metadata: metadata(&deny.dynamic_metadata),
            }
        }
    }
}

/// The v2 answer. The v2 API has no header removal, query rewriting, response headers or
/// dynamic metadata, so those parts of an allow are not sent to a v2 client.
pub(crate) fn to_v2(decision: Decision) -> v2::CheckResponse {
    let header = |key: String, value: String, append: bool| v2::HeaderValueOption {
        header: Some(v2::HeaderValue { key, value }),
        append: append.then_some(true),
    };
    match decision {
        Decision::Allow(allow) => v2::CheckResponse {
            status: Some(status(OK)),
            http_response: Some(v2::check_response::HttpResponse::OkResponse(
                v2::OkHttpResponse {
                    headers: allow
                        .request_headers
                        .into_iter()
                        .map(|h| header(h.name, h.value, h.append))
                        .collect(),
                },
            )),
        },
        Decision::Deny(deny) => {
            let (code, http_status) = deny_codes(&deny);
            v2::CheckResponse {
                status: Some(status(code)),
                http_response: Some(v2::check_response::HttpResponse::DeniedResponse(
                    v2::DeniedHttpResponse {
                        status: Some(v2::HttpStatus {
                            code: i32::from(http_status),
                        }),
                        headers: deny
                            .headers
                            .into_iter()
                            .map(|(name, value)| header(name, value, false))
                            .collect(),
                        body: deny.body,
                    },
                )),
            }
        }
    }
}

fn status(code: i32) -> RpcStatus {
    RpcStatus {
        code,
        message: String::new(),
        details: Vec::new(),
    }
}

fn header_v3(
    key: String,
    value: String,
    append: Option<bool>,
    action: Option<AppendAction>,
) -> v3::HeaderValueOption {
    v3::HeaderValueOption {
        header: Some(v3::HeaderValue {
            key,
            value,
            raw_value: Vec::new(),
        }),
        append,
        append_action: action.map_or(0, |action| append_action(action) as i32),
        keep_empty_value: false,
    }
}

fn append_action(action: AppendAction) -> v3::HeaderAppendAction {
    match action {
        AppendAction::AppendIfExistsOrAdd => v3::HeaderAppendAction::AppendIfExistsOrAdd,
        AppendAction::AddIfAbsent => v3::HeaderAppendAction::AddIfAbsent,
        AppendAction::OverwriteIfExistsOrAdd => v3::HeaderAppendAction::OverwriteIfExistsOrAdd,
        AppendAction::OverwriteIfExists => v3::HeaderAppendAction::OverwriteIfExists,
    }
}

/// Dynamic metadata as a `google.protobuf.Struct`; none when the rule set none.
fn metadata(metadata: &Metadata) -> Option<Struct> {
    (!metadata.is_empty()).then(|| Struct {
        fields: metadata
            .iter()
            .map(|(key, value)| (key.clone(), json_to_value(value)))
            .collect(),
    })
}

fn json_to_value(json: &serde_json::Value) -> Value {
    let kind = match json {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(fields) => Kind::StructValue(Struct {
            fields: fields
                .iter()
                .map(|(key, value)| (key.clone(), json_to_value(value)))
                .collect(),
        }),
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use extauthz_proto::{v2, v3};
    use rules::{Decision, Deny};

    fn deny(grpc_code: i32, http_status: u16) -> Decision {
        Decision::Deny(Deny {
            http_status,
            grpc_code,
            headers: Vec::new(),
            body: "no".into(),
            dynamic_metadata: Default::default(),
        })
    }

    fn v3_codes(decision: &Decision) -> (i32, i32) {
        let response = super::to_v3(decision.clone());
        let Some(v3::check_response::HttpResponse::DeniedResponse(denied)) = response.http_response
        else {
            panic!("a deny is a denied response");
        };
        (
            response.status.map_or(-1, |s| s.code),
            denied.status.map_or(-1, |s| s.code),
        )
    }

    fn v2_codes(decision: &Decision) -> (i32, i32) {
        let response = super::to_v2(decision.clone());
        let Some(v2::check_response::HttpResponse::DeniedResponse(denied)) = response.http_response
        else {
            panic!("a deny is a denied response");
        };
        (
            response.status.map_or(-1, |s| s.code),
            denied.status.map_or(-1, |s| s.code),
        )
    }

    #[test]
    fn a_deny_is_never_sent_as_ok() {
        for (code, status, wanted) in [
            (0, 403, (7, 403)),
            (0, 200, (7, 403)),
            (16, 401, (16, 401)),
            (7, 302, (7, 302)),
            (7, 204, (7, 204)),
            (7, 600, (7, 403)),
            (14, 503, (14, 503)),
            (7, 100, (7, 403)),
        ] {
            assert_eq!(v3_codes(&deny(code, status)), wanted, "v3 {code} {status}");
            assert_eq!(v2_codes(&deny(code, status)), wanted, "v2 {code} {status}");
        }
    }
}
