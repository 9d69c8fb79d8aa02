//! The body a policy's `with_request_body` asks for, buffered before its check is sent.

use std::time::Duration;

use http::header;
use http::request::Parts;
use http::{Response, StatusCode};

use super::reply::local_reply;
use crate::body::{BufferedBody, ProxyBody};
use crate::ext_authz::{CheckBody, WithRequestBody};

/// Buffers what a policy's `with_request_body` asks for; 413 when the body is over the limit
/// and partial messages are not allowed (decided before any check is sent).
///
/// A client that stalls cannot hold the request here for longer than the policy's `timeout`:
/// then the bytes so far go in the check, marked partial, when partial messages are allowed;
/// otherwise the client gets 408, as Envoy's connection manager answers a request whose body
/// does not arrive in time (its ext_authz filter has no timer of its own while buffering).
pub(super) async fn read_body_for_check(
    body: &mut BufferedBody,
    parts: &Parts,
    settings: WithRequestBody,
    timeout: Duration,
) -> Result<CheckBody, Response<ProxyBody>> {
    let max = settings.max_request_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || local_reply(StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large");
    if !settings.allow_partial_message && declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let want = if settings.allow_partial_message {
        max
    } else {
        max + 1
    };
    // `fill_to` keeps every frame it finished reading, so stopping it at the deadline loses
    // nothing: the rest still streams upstream after an allow.
    match tokio::time::timeout(timeout, body.fill_to(want)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "client body failed while buffering for ext_authz");
            return Err(local_reply(
                StatusCode::BAD_REQUEST,
                "request body read error",
            ));
        }
        Err(_) if settings.allow_partial_message => {
            tracing::debug!(
                buffered = body.len(),
                "client body slow while buffering for ext_authz; checking the partial body"
            );
        }
        Err(_) => {
            tracing::debug!(
                buffered = body.len(),
                "client body slow while buffering for ext_authz"
            );
            return Err(local_reply(StatusCode::REQUEST_TIMEOUT, "request timeout"));
        }
    }
    let partial = !body.is_complete() || body.len() > max;
    if partial && !settings.allow_partial_message {
        return Err(too_large());
    }
    Ok(CheckBody {
        bytes: body.prefix(max),
        partial,
        pack_as_bytes: settings.pack_as_bytes,
    })
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;
    use crate::body;

    fn request(content_length: usize) -> Parts {
        let (parts, ()) = http::Request::builder()
            .header(header::CONTENT_LENGTH, content_length)
            .body(())
            .expect("request")
            .into_parts();
        parts
    }

    fn settings(allow_partial_message: bool) -> WithRequestBody {
        WithRequestBody {
            max_request_bytes: 4,
            allow_partial_message,
            pack_as_bytes: false,
        }
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_413_before_reading() {
        let mut body = BufferedBody::new(body::full("hello"));
        let refused = read_body_for_check(
            &mut body,
            &request(5),
            settings(false),
            Duration::from_secs(1),
        )
        .await
        .expect_err("over the limit");
        assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(refused.headers()[header::CONTENT_TYPE], "text/plain");
        let text = refused
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(text, "Payload Too Large");
    }

    #[tokio::test]
    async fn with_partial_messages_the_prefix_goes_in_the_check_marked_partial() {
        let mut body = BufferedBody::new(body::full("hello"));
        let check = read_body_for_check(
            &mut body,
            &request(5),
            settings(true),
            Duration::from_secs(1),
        )
        .await
        .expect("partial allowed");
        assert_eq!(check.bytes, "hell");
        assert!(check.partial);
    }
}
