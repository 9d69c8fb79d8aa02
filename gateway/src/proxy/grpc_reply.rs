//! A gRPC client gets every response the gateway makes itself as gRPC, as Envoy answers it: HTTP
//! 200, `content-type: application/grpc`, `grpc-status` mapped from the HTTP status the reply
//! stood for, `grpc-message` the reply's text, and no body (a trailers-only response: the
//! headers end the stream). Headers the reply carries (a denial's, from the authz server) are
//! kept. Only responses marked [`LocalReply`] change; a backend's response is relayed as it is.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::reply::LocalReply;
use crate::body::{self, ProxyBody};

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// Whether the request is gRPC: its `content-type` is `application/grpc`, alone or followed by
/// `+` (a codec suffix such as `+proto`) or `;` (parameters), as Envoy decides it.
/// `application/grpc-web` is not gRPC.
pub(super) fn is_grpc_request(headers: &HeaderMap) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let value = value.as_bytes();
    value.len() >= GRPC.len()
        && value[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && matches!(value.get(GRPC.len()), None | Some(b'+' | b';'))
}

/// The gRPC status for an HTTP status, by the table gRPC publishes for intermediaries
/// (`doc/http-grpc-status-mapping.md`), which Envoy's `Grpc::Utility::httpToGrpcStatus` follows.
pub(super) fn grpc_status(status: StatusCode) -> u8 {
    match status.as_u16() {
        400 => 13,                   // INTERNAL
        401 => 16,                   // UNAUTHENTICATED
        403 => 7,                    // PERMISSION_DENIED
        404 => 12,                   // UNIMPLEMENTED
        429 | 502 | 503 | 504 => 14, // UNAVAILABLE
        _ => 2,                      // UNKNOWN
    }
}

/// `text` as a `grpc-message` value: bytes outside printable ASCII (0x20–0x7E) and `%` itself
/// are percent-encoded with upper-case hex, as the gRPC over HTTP/2 spec requires; UTF-8 text is
/// encoded byte by byte, which is how a client decodes it back.
pub(super) fn percent_encode(text: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len());
    for &b in text {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

/// `resp` as a gRPC client gets it: a local reply becomes a trailers-only gRPC answer; any other
/// response is returned untouched.
pub(super) fn to_grpc(mut resp: Response<ProxyBody>) -> Response<ProxyBody> {
    let Some(local) = resp.extensions_mut().remove::<LocalReply>() else {
        return resp;
    };
    let code = grpc_status(resp.status());
    *resp.status_mut() = StatusCode::OK;
    *resp.body_mut() = body::empty();
    let headers = resp.headers_mut();
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    // A `grpc-status` the authz server put in its denial wins, as in Envoy (whose ext_authz
    // applies the denial's headers after it set the mapped status).
    if !headers.contains_key(&GRPC_STATUS) {
        headers.insert(GRPC_STATUS, HeaderValue::from(u16::from(code)));
    }
    if local.message.is_empty() {
        headers.remove(&GRPC_MESSAGE);
    } else {
        let encoded = percent_encode(&local.message);
        // Percent-encoding leaves printable ASCII only: always a valid header value.
        if let Ok(value) = HeaderValue::try_from(encoded) {
            headers.insert(GRPC_MESSAGE, value);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::BodyExt;
    use hyper::body::Body;

    use super::*;
    use crate::proxy::reply::{local_reply, mark_local};

    fn with_type(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(value).expect("value"),
        );
        h
    }

    #[test]
    fn grpc_content_types_are_recognised_as_envoy_does() {
        for grpc in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc;charset=utf-8",
            "Application/GRPC",
        ] {
            assert!(is_grpc_request(&with_type(grpc)), "{grpc}");
        }
        for not in [
            "application/grpc-web",
            "application/json",
            "application/grp",
        ] {
            assert!(!is_grpc_request(&with_type(not)), "{not}");
        }
        assert!(!is_grpc_request(&HeaderMap::new()));
    }

    #[test]
    fn http_statuses_map_to_envoys_grpc_codes() {
        let table = [
            (400, 13),
            (401, 16),
            (403, 7),
            (404, 12),
            (429, 14),
            (502, 14),
            (503, 14),
            (504, 14),
            (413, 2),
            (500, 2),
            (408, 2),
            (418, 2),
        ];
        for (http, grpc) in table {
            let status = StatusCode::from_u16(http).expect("status");
            assert_eq!(grpc_status(status), grpc, "HTTP {http}");
        }
    }

    #[test]
    fn messages_are_percent_encoded_as_the_grpc_spec_says() {
        assert_eq!(
            percent_encode(b"upstream request timeout"),
            "upstream request timeout"
        );
        assert_eq!(percent_encode(b"100% sure"), "100%25 sure");
        assert_eq!(percent_encode(b"a\r\nb\tc"), "a%0D%0Ab%09c");
        assert_eq!(percent_encode("déjà ~".as_bytes()), "d%C3%A9j%C3%A0 ~");
        assert_eq!(percent_encode(b"\x7f"), "%7F");
    }

    #[tokio::test]
    async fn a_local_reply_becomes_trailers_only_grpc() {
        let resp = to_grpc(local_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "no healthy upstream",
        ));
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/grpc");
        assert_eq!(resp.headers()["grpc-status"], "14");
        assert_eq!(resp.headers()["grpc-message"], "no healthy upstream");
        assert!(resp.body().is_end_stream());
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert!(body.is_empty());
    }

    #[test]
    fn an_empty_reply_has_no_message_and_a_denials_headers_stay() {
        let mut resp = local_reply(StatusCode::NOT_FOUND, "");
        resp.headers_mut()
            .insert("x-why", HeaderValue::from_static("nothing here"));
        let resp = to_grpc(resp);
        assert_eq!(resp.headers()["grpc-status"], "12");
        assert!(resp.headers().get("grpc-message").is_none());
        assert_eq!(resp.headers()["x-why"], "nothing here");
    }

    #[test]
    fn a_grpc_status_the_denial_names_wins() {
        let mut resp = Response::new(body::full("slow down"));
        *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        resp.headers_mut()
            .insert("grpc-status", HeaderValue::from_static("8"));
        mark_local(&mut resp, Bytes::from_static(b"slow down"));
        let resp = to_grpc(resp);
        assert_eq!(resp.headers()["grpc-status"], "8");
        assert_eq!(resp.headers()["grpc-message"], "slow down");
    }

    #[test]
    fn a_backends_response_is_never_touched() {
        let mut resp = Response::new(body::full("teapot"));
        *resp.status_mut() = StatusCode::FORBIDDEN;
        let resp = to_grpc(resp);
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert!(resp.headers().get("grpc-status").is_none());
    }
}
