//! Body types: one boxed streaming body for everything the proxy sends, and the request-body
//! buffer a policy uses when it asks for the body (the only place bytes are held back).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, SizeHint};

/// Any error a body can yield.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every request and response the gateway sends: streamed, never collected.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// An empty body.
pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Boxes any body whose error converts into [`BoxError`].
pub fn boxed<B>(body: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// The start of a request body read ahead for an authorization check, and the rest still unread.
///
/// Reading stops as soon as the wanted number of bytes is there, so a large upload is never held in
/// memory beyond the largest `max_request_bytes` of the policies that apply.
pub struct BufferedBody {
    chunks: Vec<Bytes>,
    len: usize,
    trailers: Option<HeaderMap>,
    rest: Option<ProxyBody>,
}

impl BufferedBody {
    /// Wraps a body nothing has been read from.
    pub fn new(body: ProxyBody) -> BufferedBody {
        BufferedBody {
            chunks: Vec::new(),
            len: 0,
            trailers: None,
            rest: Some(body),
        }
    }

    /// Reads until at least `limit` bytes are buffered or the body has ended.
    pub async fn fill_to(&mut self, limit: usize) -> Result<(), BoxError> {
        while self.len < limit {
            let Some(rest) = self.rest.as_mut() else {
                return Ok(());
            };
            match rest.frame().await {
                None => self.rest = None,
                Some(frame) => match frame?.into_data() {
                    Ok(data) => {
                        self.len += data.len();
                        self.chunks.push(data);
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.trailers = Some(trailers);
                        }
                        self.rest = None;
                    }
                },
            }
        }
        Ok(())
    }

    /// Whether the whole body has been read.
    pub fn is_complete(&self) -> bool {
        self.rest.is_none()
    }

    /// How many bytes are buffered.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first `n` buffered bytes (fewer if fewer are buffered).
    pub fn prefix(&self, n: usize) -> Bytes {
        if let [only] = self.chunks.as_slice() {
            return only.slice(..n.min(only.len()));
        }
        let mut out = BytesMut::with_capacity(n.min(self.len));
        for chunk in &self.chunks {
            let take = (n - out.len()).min(chunk.len());
            out.extend_from_slice(&chunk[..take]);
            if out.len() == n {
                break;
            }
        }
        out.freeze()
    }

    /// The body's total length when it is known: everything read, or the unread rest's exact
    /// size (its `content-length`, or zero when the request said it has no body).
    pub fn exact_len(&self) -> Option<u64> {
        let rest = match &self.rest {
            None => 0,
            Some(rest) => rest.size_hint().exact()?,
        };
        Some(self.len as u64 + rest)
    }

    /// A copy of the whole body, when it has been read to its end: what a retry sends again.
    /// The bytes are shared, not copied.
    pub fn try_clone(&self) -> Option<BufferedBody> {
        self.rest.is_none().then(|| BufferedBody {
            chunks: self.chunks.clone(),
            len: self.len,
            trailers: self.trailers.clone(),
            rest: None,
        })
    }

    /// The whole body again: the buffered bytes, then whatever was not read yet, streamed.
    pub fn into_body(self) -> ProxyBody {
        if self.chunks.is_empty()
            && self.trailers.is_none()
            && let Some(rest) = self.rest
        {
            return rest;
        }
        UnsyncBoxBody::new(Replay {
            buffered: self.chunks.into(),
            trailers: self.trailers,
            rest: self.rest,
        })
    }
}

struct Replay {
    buffered: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    rest: Option<ProxyBody>,
}

impl Body for Replay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(chunk) = self.buffered.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(trailers) = self.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.buffered.is_empty()
            && self.trailers.is_none()
            && self
                .rest
                .as_ref()
                .is_none_or(hyper::body::Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self.buffered.iter().map(|b| b.len() as u64).sum();
        match &self.rest {
            None => SizeHint::with_exact(buffered),
            Some(rest) => {
                let hint = rest.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(hint.lower() + buffered);
                if let Some(upper) = hint.upper() {
                    out.set_upper(upper + buffered);
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    fn chunked(parts: &[&'static str]) -> ProxyBody {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        UnsyncBoxBody::new(StreamBody::new(tokio_stream::iter(frames)))
    }

    #[tokio::test]
    async fn buffers_only_what_is_asked_and_replays_everything() {
        let mut b = BufferedBody::new(chunked(&["ab", "cd", "ef"]));
        b.fill_to(3).await.unwrap();
        assert_eq!(b.len(), 4);
        assert!(!b.is_complete());
        assert_eq!(b.prefix(3), Bytes::from_static(b"abc"));
        let all = b.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(all, Bytes::from_static(b"abcdef"));
    }

    #[tokio::test]
    async fn a_complete_body_can_be_sent_again() {
        let mut b = BufferedBody::new(chunked(&["ab", "cd"]));
        assert_eq!(b.exact_len(), None, "a stream without a length");
        assert!(b.try_clone().is_none(), "not read to its end yet");
        b.fill_to(100).await.unwrap();
        assert_eq!(b.exact_len(), Some(4));
        let copy = b.try_clone().expect("complete");
        let again = copy.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(again, Bytes::from_static(b"abcd"));
        let all = b.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(all, Bytes::from_static(b"abcd"));
        assert_eq!(BufferedBody::new(full("xyz")).exact_len(), Some(3));
    }

    #[tokio::test]
    async fn a_short_body_is_complete() {
        let mut b = BufferedBody::new(chunked(&["ab"]));
        b.fill_to(10).await.unwrap();
        assert!(b.is_complete());
        assert_eq!(b.prefix(10), Bytes::from_static(b"ab"));
    }
}
