//! The gRPC transport: `envoy.service.auth.v3.Authorization/Check` over the backend's shared
//! channel, and the `CheckResponse` read as Envoy reads it.

use std::time::Duration;

use ::http::{HeaderName, HeaderValue, StatusCode};
use bytes::Bytes;
use extauthz_proto::v3::{
    CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValueOption,
    OkHttpResponse, authorization_client::AuthorizationClient, check_response::HttpResponse,
};

use super::backend::AuthzBackend;
use super::mutation::{Allowed, Denied};
use super::mutation::{AppendAction, is_protected};
use super::verdict::Verdict;

/// The largest CheckRequest sent and CheckResponse read: gRPC's customary 4 MiB, the limit
/// `authz-server` (and most gRPC servers) enforce. `with_request_body.max_request_bytes` is
/// refused at load when a body that size could not fit.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Sends one check and waits at most `timeout` (also sent as `grpc-timeout`).
pub async fn check(backend: &AuthzBackend, request: CheckRequest, timeout: Duration) -> Verdict {
    // Over the server's limit the RPC would fail as an error, which `failure_mode_allow` lets
    // through; a request that cannot be checked is invalid instead (never allowed).
    let size = prost::Message::encoded_len(&request);
    if size > MAX_MESSAGE_BYTES {
        return Verdict::Invalid {
            reason: format!(
                "check request of {size} bytes is over the {MAX_MESSAGE_BYTES}-byte gRPC message limit"
            ),
        };
    }
    let Some(h2c) = backend.h2c() else {
        // Boxed: tonic's call future is large, and inline it would make the h2c path's future
        // (moved whole at every move) as large.
        return Box::pin(check_over_tonic(backend, request, timeout)).await;
    };
    let message = Bytes::from(prost::Message::encode_to_vec(&request));
    // Connecting (at startup, or after the connection ended) is inside the timeout too.
    let call = h2c.unary(CHECK_PATH, message, timeout, MAX_MESSAGE_BYTES);
    match tokio::time::timeout(timeout, call).await {
        Err(_) => timed_out(timeout),
        Ok(Err(e)) => Verdict::Error {
            reason: format!("rpc error: {e}"),
            response: None,
        },
        Ok(Ok(reply)) if reply.status != 0 => Verdict::Error {
            reason: format!(
                "rpc error: {:?}: {}",
                tonic::Code::from_i32(reply.status),
                reply.message
            ),
            response: None,
        },
        Ok(Ok(reply)) => match <CheckResponse as prost::Message>::decode(reply.body) {
            Ok(response) => verdict(response),
            Err(e) => Verdict::Error {
                reason: format!("rpc error: undecodable CheckResponse: {e}"),
                response: None,
            },
        },
    }
}

/// The gRPC method a check calls.
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

fn timed_out(timeout: Duration) -> Verdict {
    Verdict::Error {
        reason: format!("timeout after {}ms", timeout.as_millis()),
        response: None,
    }
}

/// A check over TLS, through tonic's channel.
async fn check_over_tonic(
    backend: &AuthzBackend,
    request: CheckRequest,
    timeout: Duration,
) -> Verdict {
    let mut request = tonic::Request::new(request);
    request.set_timeout(timeout);
    crate::otel::inject_current_metadata(request.metadata_mut());
    // Getting the channel may wait for the startup connect: it is inside the timeout too.
    let call = async {
        let mut client = AuthorizationClient::new(backend.channel().await)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        client.check(request).await
    };
    match tokio::time::timeout(timeout, call).await {
        Err(_) => timed_out(timeout),
        Ok(Err(status)) => Verdict::Error {
            reason: format!("rpc error: {:?}: {}", status.code(), status.message()),
            response: None,
        },
        Ok(Ok(response)) => verdict(response.into_inner()),
    }
}

/// Reads a `CheckResponse`: the status code decides, the `http_response` details it.
/// A deny is a successful RPC with a non-OK status; OK with a denied body is still OK.
pub fn verdict(response: CheckResponse) -> Verdict {
    let CheckResponse {
        status,
        dynamic_metadata,
        http_response,
    } = response;
    // A missing status counts as OK: Envoy reads `response.status().code()`, and protobuf gives
    // an absent message its defaults (code 0). We match it for compatibility, but warn (once per
    // such response) since a server that forgets the field allows everything it answers.
    let code = match &status {
        Some(status) => status.code,
        None => {
            tracing::warn!(
                "ext_authz CheckResponse without a status; treated as OK, as Envoy does"
            );
            0
        }
    };
    let metadata = dynamic_metadata.as_ref().map(struct_to_json);
    match (code, http_response) {
        (0, Some(HttpResponse::OkResponse(ok))) => match allowed(ok) {
            Ok(mut allowed) => {
                allowed.dynamic_metadata = metadata;
                Verdict::Allow(allowed)
            }
            // Not an error: `failure_mode_allow` would forward the request with none of the
            // changes (a header removal lost). Envoy's `validate_mutations` also answers
            // `status_on_error` here.
            Err(reason) => Verdict::Invalid { reason },
        },
        (0, _) => Verdict::Allow(Allowed {
            dynamic_metadata: metadata,
            ..Allowed::default()
        }),
        // A non-OK status is a deny whatever the details look like: a malformed
        // `denied_response` must never become an error, which `failure_mode_allow` would let
        // through.
        (_, Some(HttpResponse::DeniedResponse(denied))) => Verdict::Deny(denied_response(denied)),
        (_, Some(HttpResponse::ErrorResponse(error))) => Verdict::Error {
            reason: format!("server reported an error (status {code})"),
            response: Some(denied_response(error)),
        },
        (_, Some(HttpResponse::OkResponse(_)) | None) => Verdict::Deny(Denied::default()),
    }
}

// `OkHttpResponse.dynamic_metadata` is deprecated in favour of the top-level field; it is
// destructured (and ignored) so a new field is a compile error.
#[allow(deprecated)]
fn allowed(ok: OkHttpResponse) -> Result<Allowed, String> {
    let OkHttpResponse {
        headers,
        headers_to_remove,
        dynamic_metadata: _,
        response_headers_to_add,
        query_parameters_to_set,
        query_parameters_to_remove,
    } = ok;
    let mut out = Allowed::default();
    // Pseudo headers are skipped before parsing (`HeaderName` cannot hold them): Envoy ignores
    // them in every mutation list rather than rejecting the answer.
    for option in headers.into_iter().filter(|o| !names_pseudo_header(o)) {
        let (name, value, how) = header_option(option)?;
        // Request headers follow the deprecated `append` flag when it is present (true: comma-
        // append; false: overwrite) and overwrite when it is absent, as DESIGN §3 documents;
        // a non-default `append_action` is honoured when `append` is absent.
        let target = match how {
            HowToApply::Append(true) => &mut out.headers_to_append,
            HowToApply::Append(false)
            | HowToApply::Action(
                AppendAction::AppendIfExistsOrAdd | AppendAction::OverwriteIfExistsOrAdd,
            ) => &mut out.headers_to_set,
            HowToApply::Action(AppendAction::AddIfAbsent) => &mut out.headers_to_add_if_absent,
            HowToApply::Action(AppendAction::OverwriteIfExists) => {
                &mut out.headers_to_overwrite_if_exists
            }
        };
        target.push((name, value));
    }
    for name in headers_to_remove {
        if is_protected(&name) {
            continue;
        }
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name to remove: {name:?}"))?;
        out.headers_to_remove.push(name);
    }
    for option in response_headers_to_add
        .into_iter()
        .filter(|o| !names_pseudo_header(o))
    {
        let (name, value, how) = header_option(option)?;
        let action = match how {
            HowToApply::Append(true) => AppendAction::AppendIfExistsOrAdd,
            HowToApply::Append(false) => AppendAction::OverwriteIfExistsOrAdd,
            HowToApply::Action(action) => action,
        };
        out.response_headers.push((name, value, action));
    }
    for param in query_parameters_to_set {
        out.query_to_set.push((param.key, param.value));
    }
    out.query_to_remove = query_parameters_to_remove;
    Ok(out)
}

/// Reads a `denied_response` (or `error_response`) leniently: it cannot fail, so a deny stays a
/// deny. An unusable status counts as absent (the situation's default: 403 for a deny) and an
/// unusable header is dropped, each with a warning.
fn denied_response(denied: DeniedHttpResponse) -> Denied {
    let DeniedHttpResponse {
        status,
        headers,
        body,
    } = denied;
    let status = match status.map(|s| s.code) {
        None | Some(0) => None,
        Some(code) => {
            let status = u16::try_from(code)
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok());
            if status.is_none() {
                tracing::warn!(
                    status = code,
                    "ext_authz denied response has an invalid HTTP status; using the default"
                );
            }
            status
        }
    };
    let headers = headers
        .into_iter()
        .filter_map(|o| match header_option(o) {
            Ok((name, value, _)) => Some((name, value)),
            Err(reason) => {
                tracing::warn!(%reason, "ext_authz denied response header dropped");
                None
            }
        })
        .collect();
    Denied {
        status,
        headers,
        body: Bytes::from(body),
    }
}

fn names_pseudo_header(option: &HeaderValueOption) -> bool {
    option
        .header
        .as_ref()
        .is_some_and(|h| h.key.starts_with(':'))
}

enum HowToApply {
    Append(bool),
    Action(AppendAction),
}

fn header_option(
    option: HeaderValueOption,
) -> Result<(HeaderName, HeaderValue, HowToApply), String> {
    let HeaderValueOption {
        header,
        append,
        append_action,
        keep_empty_value: _,
    } = option;
    let header = header.ok_or("header option without header")?;
    let name = HeaderName::from_bytes(header.key.to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("invalid header name {:?}", header.key))?;
    let raw = if header.value.is_empty() {
        header.raw_value
    } else {
        header.value.into_bytes()
    };
    let value =
        HeaderValue::from_bytes(&raw).map_err(|_| format!("invalid value for header {name}"))?;
    let how = match append {
        Some(append) => HowToApply::Append(append),
        None => HowToApply::Action(
            match HeaderAppendAction::try_from(append_action)
                .unwrap_or(HeaderAppendAction::AppendIfExistsOrAdd)
            {
                HeaderAppendAction::AppendIfExistsOrAdd => AppendAction::AppendIfExistsOrAdd,
                HeaderAppendAction::AddIfAbsent => AppendAction::AddIfAbsent,
                HeaderAppendAction::OverwriteIfExistsOrAdd => AppendAction::OverwriteIfExistsOrAdd,
                HeaderAppendAction::OverwriteIfExists => AppendAction::OverwriteIfExists,
            },
        ),
    };
    Ok((name, value, how))
}

/// `google.protobuf.Struct` as compact JSON, for the access log.
fn struct_to_json(s: &prost_types::Struct) -> String {
    fn value(v: &prost_types::Value) -> serde_json::Value {
        use prost_types::value::Kind;
        match &v.kind {
            None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
            Some(Kind::NumberValue(n)) => serde_json::json!(n),
            Some(Kind::StringValue(s)) => serde_json::json!(s),
            Some(Kind::BoolValue(b)) => serde_json::json!(b),
            Some(Kind::StructValue(s)) => object(s),
            Some(Kind::ListValue(l)) => l.values.iter().map(value).collect(),
        }
    }
    fn object(s: &prost_types::Struct) -> serde_json::Value {
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value(v)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
    object(s).to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use extauthz_proto::RpcStatus;

    use super::*;

    /// The log lines written while `f` runs, at warn level and above.
    fn warnings<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .finish();
        let out = tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        (out, text.lines().map(str::to_owned).collect())
    }

    #[test]
    fn a_missing_status_is_ok_with_one_warning() {
        let ok = OkHttpResponse {
            headers: vec![
                HeaderValueOption {
                    header: Some(extauthz_proto::v3::HeaderValue {
                        key: "x-a".into(),
                        value: "1".into(),
                        raw_value: Vec::new(),
                    }),
                    ..HeaderValueOption::default()
                };
                2
            ],
            ..OkHttpResponse::default()
        };
        let (v, logged) = warnings(|| {
            verdict(CheckResponse {
                status: None,
                http_response: Some(HttpResponse::OkResponse(ok)),
                ..CheckResponse::default()
            })
        });
        assert!(matches!(v, Verdict::Allow(_)), "{v:?}");
        assert_eq!(logged.len(), 1, "{logged:?}");
        assert!(
            logged[0].contains("ext_authz CheckResponse without a status; treated as OK"),
            "{logged:?}"
        );

        let (v, logged) = warnings(|| verdict(CheckResponse::default()));
        assert!(matches!(v, Verdict::Allow(_)), "{v:?}");
        assert_eq!(logged.len(), 1, "{logged:?}");

        let (v, logged) = warnings(|| {
            verdict(CheckResponse {
                status: Some(RpcStatus::default()),
                ..CheckResponse::default()
            })
        });
        assert!(matches!(v, Verdict::Allow(_)), "{v:?}");
        assert!(logged.is_empty(), "{logged:?}");
    }

    #[tokio::test]
    async fn a_check_over_the_message_limit_is_invalid_and_never_sent() {
        // Port 9 (discard) on loopback: nothing answers, so a sent check would be an error.
        let backend =
            AuthzBackend::new("authz".into(), "127.0.0.1:9".parse().unwrap(), None).unwrap();
        let request = CheckRequest {
            attributes: Some(extauthz_proto::v3::AttributeContext {
                request: Some(extauthz_proto::v3::attribute_context::Request {
                    http: Some(extauthz_proto::v3::attribute_context::HttpRequest {
                        body: "x".repeat(MAX_MESSAGE_BYTES),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        let verdict = check(&backend, request, Duration::from_secs(1)).await;
        match verdict {
            Verdict::Invalid { reason } => assert_eq!(
                reason,
                "check request of 4194324 bytes is over the 4194304-byte gRPC message limit"
            ),
            other => panic!("{other:?}"),
        }
    }
}
