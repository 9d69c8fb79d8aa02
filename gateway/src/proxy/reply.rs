//! The responses the gateway makes itself. Each is marked with a [`LocalReply`] extension, so
//! the end of the pipeline can tell them from a backend's response (which is never rewritten)
//! and answer a gRPC client in gRPC (`grpc_reply`).

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::body::{self, ProxyBody};

/// Marks a response the gateway made itself, with the text its body carries (what a gRPC
/// client gets as `grpc-message`).
#[derive(Debug, Clone)]
pub(super) struct LocalReply {
    /// The body text of the reply.
    pub(super) message: Bytes,
}

/// A response the gateway makes itself, `text/plain` when it has a body.
pub fn local_reply(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = status;
    if !text.is_empty() {
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    mark_local(&mut resp, Bytes::from_static(text.as_bytes()));
    resp
}

/// Marks `resp` as made by the gateway, whose body is `message`.
pub(super) fn mark_local(resp: &mut Response<ProxyBody>, message: Bytes) {
    resp.extensions_mut().insert(LocalReply { message });
}
