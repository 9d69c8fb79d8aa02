//! A policy's result mapped onto our allow / deny exactly as OPA-Envoy maps it onto the
//! CheckResponse (`envoyauth/response.go`, `internal/internal.go`): a boolean, or an object
//! with `allowed` and the optional fields below. Anything else is an invalid decision, which
//! the caller turns into a fail-closed deny.

use serde_json::{Map, Value as Json};

use crate::decision::{
    Allow, AppendAction, Decision, Deny, Metadata, RequestHeader, ResponseHeader,
};

/// The gRPC code of every deny a policy makes (OPA-Envoy: `PERMISSION_DENIED`).
const PERMISSION_DENIED: i32 = 7;

/// The status a deny gets unless the policy sets `http_status`.
const FORBIDDEN: u16 = 403;

/// Maps a decision value. `Err` names why the value is not a decision OPA-Envoy accepts.
pub(crate) fn map(decision: &Json) -> Result<Decision, String> {
    let object = match decision {
        Json::Bool(true) => return Ok(Decision::Allow(Allow::default())),
        Json::Bool(false) => return Ok(Decision::Deny(plain_deny(FORBIDDEN, String::new()))),
        Json::Object(object) => object,
        other => {
            return Err(format!(
                "illegal value for policy evaluation result: {} (want a boolean or an object)",
                kind(other)
            ));
        }
    };
    let allowed = match object.get("allowed") {
        Some(Json::Bool(allowed)) => *allowed,
        Some(other) => {
            return Err(format!(
                "expected allowed to be of type 'boolean' but got {}",
                kind(other)
            ));
        }
        None => return Err("missing \"allowed\" key in the decision".to_owned()),
    };
    // Checked for both outcomes, as OPA-Envoy does.
    let headers = headers(object, "headers")?;
    let dynamic_metadata = dynamic_metadata(object)?;
    if allowed {
        allow(object, headers, dynamic_metadata)
    } else {
        deny(object, headers, dynamic_metadata)
    }
}

/// `dynamic_metadata`: an object, or nothing.
fn dynamic_metadata(object: &Map<String, Json>) -> Result<Metadata, String> {
    match object.get("dynamic_metadata") {
        None => Ok(Metadata::new()),
        Some(Json::Object(map)) => Ok(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        Some(other) => Err(format!(
            "expected dynamic_metadata to be of type 'object' but got {}",
            kind(other)
        )),
    }
}

/// An allowed decision: `headers` go upstream, plus the response headers and query changes.
fn allow(
    object: &Map<String, Json>,
    headers: Vec<(String, String)>,
    dynamic_metadata: Metadata,
) -> Result<Decision, String> {
    let request_headers = headers
        .into_iter()
        .map(|(name, value)| RequestHeader {
            name,
            value,
            append: false,
        })
        .collect();
    let response_headers = self::headers(object, "response_headers_to_add")?
        .into_iter()
        .map(|(name, value)| ResponseHeader {
            name,
            value,
            action: AppendAction::AppendIfExistsOrAdd,
        })
        .collect();
    let headers_to_remove = strings(object, "request_headers_to_remove")?
        .into_iter()
        .map(|name| name.to_ascii_lowercase())
        .collect();
    Ok(Decision::Allow(Allow {
        request_headers,
        headers_to_remove,
        response_headers,
        query_parameters_to_set: query_parameters(object)?,
        query_parameters_to_remove: strings(object, "query_parameters_to_remove")?,
        dynamic_metadata,
    }))
}

/// A denied decision: `headers` go to the client with the body and status.
fn deny(
    object: &Map<String, Json>,
    headers: Vec<(String, String)>,
    dynamic_metadata: Metadata,
) -> Result<Decision, String> {
    let body = match object.get("body") {
        None => String::new(),
        Some(Json::String(body)) => body.clone(),
        Some(other) => {
            return Err(format!(
                "expected body to be of type 'string' but got {}",
                kind(other)
            ));
        }
    };
    let status = match object.get("http_status") {
        None => FORBIDDEN,
        Some(Json::Number(number)) => number
            .as_u64()
            .and_then(|code| u16::try_from(code).ok())
            .filter(|code| ENVOY_STATUS_CODES.contains(code))
            .ok_or_else(|| format!("invalid HTTP status code {number}"))?,
        Some(other) => {
            return Err(format!(
                "expected http_status to be of type 'number' but got {}",
                kind(other)
            ));
        }
    };
    let mut deny = plain_deny(status, body);
    deny.headers = headers;
    deny.dynamic_metadata = dynamic_metadata;
    Ok(Decision::Deny(deny))
}

/// A deny with a status and body and nothing else.
pub(crate) fn plain_deny(http_status: u16, body: String) -> Deny {
    Deny {
        http_status,
        grpc_code: PERMISSION_DENIED,
        headers: Vec::new(),
        body,
        dynamic_metadata: Metadata::new(),
    }
}

/// `headers` / `response_headers_to_add`: an object, or an array of objects, whose values are
/// strings or arrays of strings (one header each). Names are lower-cased, as HTTP/2 and Envoy
/// carry them; an object's keys come in sorted order (OPA-Envoy's follow Go's map order).
fn headers(object: &Map<String, Json>, field: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut add_map = |map: &Map<String, Json>| -> Result<(), String> {
        for (name, value) in map {
            let name = name.to_ascii_lowercase();
            match value {
                Json::String(value) => out.push((name, value.clone())),
                Json::Array(values) => {
                    for value in values {
                        let Json::String(value) = value else {
                            return Err(format!(
                                "invalid value type {} for header '{name}' in {field}",
                                kind(value)
                            ));
                        };
                        out.push((name.clone(), value.clone()));
                    }
                }
                other => {
                    return Err(format!(
                        "invalid value type {} for header '{name}' in {field}",
                        kind(other)
                    ));
                }
            }
        }
        Ok(())
    };
    match object.get(field) {
        None => {}
        Some(Json::Object(map)) => add_map(map)?,
        Some(Json::Array(items)) => {
            for item in items {
                let Json::Object(map) = item else {
                    return Err(format!(
                        "expected {field} to be of type 'object' but got {}",
                        kind(item)
                    ));
                };
                add_map(map)?;
            }
        }
        Some(other) => {
            return Err(format!(
                "expected {field} to be of type 'object' but got {}",
                kind(other)
            ));
        }
    }
    Ok(out)
}

/// An array of strings (`request_headers_to_remove`, `query_parameters_to_remove`).
fn strings(object: &Map<String, Json>, field: &str) -> Result<Vec<String>, String> {
    match object.get(field) {
        None => Ok(Vec::new()),
        Some(Json::Array(items)) => items
            .iter()
            .map(|item| match item {
                Json::String(s) => Ok(s.clone()),
                other => Err(format!(
                    "expected {field} value to be of type 'string' but got {}",
                    kind(other)
                )),
            })
            .collect(),
        Some(other) => Err(format!(
            "expected {field} to be of type '[]string' but got {}",
            kind(other)
        )),
    }
}

/// `query_parameters_to_set`: an object whose values are strings or arrays of strings.
fn query_parameters(object: &Map<String, Json>) -> Result<Vec<(String, String)>, String> {
    let map = match object.get("query_parameters_to_set") {
        None => return Ok(Vec::new()),
        Some(Json::Object(map)) => map,
        Some(other) => {
            return Err(format!(
                "expected query_parameters_to_set to be a map but got {}",
                kind(other)
            ));
        }
    };
    let mut out = Vec::new();
    for (key, value) in map {
        match value {
            Json::String(value) => out.push((key.clone(), value.clone())),
            Json::Array(values) => {
                for value in values {
                    let Json::String(value) = value else {
                        return Err(format!(
                            "expected query_parameters_to_set array element to be string but got {}",
                            kind(value)
                        ));
                    };
                    out.push((key.clone(), value.clone()));
                }
            }
            other => {
                return Err(format!(
                    "expected query_parameters_to_set value to be string or array but got {}",
                    kind(other)
                ));
            }
        }
    }
    Ok(out)
}

/// The JSON type of a value, for messages.
pub(crate) fn kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

/// The codes of Envoy's `envoy.type.v3.StatusCode` enum: the only statuses a denied response
/// can carry (OPA-Envoy rejects any other `http_status`).
const ENVOY_STATUS_CODES: &[u16] = &[
    100, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305, 307, 308,
    400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 421,
    422, 423, 424, 426, 428, 429, 431, 500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511,
];
