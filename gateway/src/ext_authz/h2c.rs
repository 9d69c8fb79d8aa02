//! One plaintext HTTP/2 connection to a gRPC ext_authz server, driven with the `h2` crate
//! directly.
//!
//! Why not tonic's `Channel`: it puts a `tower::Buffer` in front of hyper's HTTP/2 client, so a
//! check hops from the request's task to the buffer's worker task, then to hyper's connection
//! task, which spawns one more task per call to pipe the (streaming) request body — and the
//! HEADERS and DATA frames leave in separate writes. Here the request's own task encodes the
//! check and queues HEADERS and DATA (end of stream) together; the connection task writes them in
//! one go and hands the answer straight back. Profiled: 4.3 → 3 socket writes per proxied
//! request (`docs/performance.md` has the profile).
//!
//! What the channel does besides: connects on first use (at most one connect at a time),
//! reconnects after the connection ends, and sends keep-alive PINGs on an idle connection
//! (a server that stops answering them is dropped, as tonic's `http2_keep_alive_interval` did).
//! TLS backends keep tonic's channel (see [`super::AuthzBackend`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::http::uri::{Authority, PathAndQuery, Scheme, Uri};
use ::http::{HeaderValue, Method, Request, StatusCode, header};
use bytes::{BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use tokio::net::TcpStream;

/// How often an idle connection is pinged, and how long a ping may go unanswered.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a call got no gRPC answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No connection could be made.
    #[error("connect: {0}")]
    Connect(String),
    /// The HTTP/2 exchange failed (reset, connection lost, protocol error).
    #[error("transport: {0}")]
    Transport(#[from] h2::Error),
    /// The server answered, but not with a gRPC response we can read.
    #[error("{0}")]
    Protocol(String),
}

/// The end of a unary call: `grpc-status`, `grpc-message`, and the message when there is one.
#[derive(Debug)]
pub struct Reply {
    /// `grpc-status` (0 is OK).
    pub status: i32,
    /// `grpc-message`, percent-decoded.
    pub message: String,
    /// The response message (without its 5-byte gRPC prefix), when status is OK.
    pub body: Bytes,
}

/// The connection in use: its generation (so its driver forgets only itself) and its handle.
type Live = (u64, SendRequest<Bytes>);

/// A reconnecting HTTP/2 connection to one server.
#[derive(Debug)]
pub struct H2Channel {
    authority: Authority,
    connect_timeout: Duration,
    /// The live connection's request handle with its generation; `None` until connected or after
    /// the connection ended.
    current: Arc<Mutex<Option<Live>>>,
    /// Held while connecting, so concurrent first calls make one connection, not many.
    connecting: tokio::sync::Mutex<u64>,
}

impl H2Channel {
    /// A channel to `authority`; nothing connects until [`H2Channel::connect`] or the first call.
    pub fn new(authority: Authority, connect_timeout: Duration) -> H2Channel {
        H2Channel {
            authority,
            connect_timeout,
            current: Arc::new(Mutex::new(None)),
            connecting: tokio::sync::Mutex::new(0),
        }
    }

    fn live(&self) -> Option<SendRequest<Bytes>> {
        let current = self.current.lock().ok()?;
        current.as_ref().map(|(_, sender)| sender.clone())
    }

    /// The live connection, connecting first when there is none.
    pub async fn connect(&self) -> Result<SendRequest<Bytes>, CallError> {
        if let Some(sender) = self.live() {
            return Ok(sender);
        }
        let mut generation = self.connecting.lock().await;
        if let Some(sender) = self.live() {
            return Ok(sender);
        }
        let address = self.authority.as_str();
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| CallError::Connect(format!("timed out connecting to {address}")))?
            .map_err(|e| CallError::Connect(format!("{address}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (sender, mut connection) = h2::client::Builder::new()
            .handshake::<_, Bytes>(stream)
            .await?;
        *generation += 1;
        let this = *generation;
        if let Ok(mut current) = self.current.lock() {
            *current = Some((this, sender.clone()));
        }
        let pings = connection.ping_pong();
        let slot = self.current.clone();
        tokio::spawn(async move {
            let keep_alive = async move {
                let Some(mut pings) = pings else {
                    return std::future::pending().await;
                };
                loop {
                    tokio::time::sleep(KEEP_ALIVE_INTERVAL).await;
                    let pong = pings.ping(h2::Ping::opaque());
                    match tokio::time::timeout(KEEP_ALIVE_TIMEOUT, pong).await {
                        Ok(Ok(_)) => {}
                        _ => return,
                    }
                }
            };
            tokio::select! {
                result = &mut connection => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "ext_authz connection ended");
                    }
                }
                () = keep_alive => tracing::debug!("ext_authz server stopped answering pings"),
            }
            // Only forget the connection this task drove: a newer one may already be in place.
            if let Ok(mut current) = slot.lock()
                && current.as_ref().is_some_and(|(g, _)| *g == this)
            {
                *current = None;
            }
        });
        Ok(sender)
    }

    /// One unary call: `message` (already protobuf-encoded) to `path`, with `grpc-timeout`.
    /// The caller bounds the whole call with its own timer; dropping it resets the stream.
    pub async fn unary(
        &self,
        path: &'static str,
        message: Bytes,
        timeout: Duration,
        max_response_bytes: usize,
    ) -> Result<Reply, CallError> {
        // Connecting is the cold path, boxed: its futures (TCP connect, the h2 handshake with
        // its codec) are kilobytes, and inline they would be part of every call's future,
        // which is moved whole (memcpy) each time it is moved.
        let live = match self.live() {
            Some(sender) => sender,
            None => Box::pin(self.connect()).await?,
        };
        // A connection that ended since it was last used fails here, before anything was
        // sent: forget it and try once more on a fresh one.
        let mut sender = match live.ready().await {
            Ok(sender) => sender,
            Err(e) => {
                tracing::debug!(error = %e, "ext_authz connection gone; reconnecting");
                self.forget();
                Box::pin(async { Ok::<_, CallError>(self.connect().await?.ready().await?) }).await?
            }
        };
        let request = self.request_head(path, timeout)?;
        let (response, mut send) = sender.send_request(request, false)?;
        send.send_data(frame(&message), true)?;
        read_reply(response.await?, max_response_bytes).await
    }

    /// The head of one call: `POST path`, gRPC's content type, `te: trailers`, `grpc-timeout`
    /// and the trace context.
    fn request_head(
        &self,
        path: &'static str,
        timeout: Duration,
    ) -> Result<Request<()>, CallError> {
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(PathAndQuery::from_static(path))
            .build()
            .map_err(|e| CallError::Protocol(e.to_string()))?;
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .body(())
            .map_err(|e| CallError::Protocol(e.to_string()))?;
        let headers = request.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        crate::otel::inject_current(headers);
        if let Ok(value) = HeaderValue::from_str(&grpc_timeout(timeout)) {
            headers.insert("grpc-timeout", value);
        }
        Ok(request)
    }

    fn forget(&self) {
        if let Ok(mut current) = self.current.lock() {
            *current = None;
        }
    }
}

/// The reply to one call: trailers-only (status in the headers), or one message and the
/// status in the trailers; over `max_response_bytes` is a protocol error.
async fn read_reply(
    response: ::http::Response<h2::RecvStream>,
    max_response_bytes: usize,
) -> Result<Reply, CallError> {
    let (parts, mut body) = response.into_parts();
    if parts.status != StatusCode::OK {
        return Err(CallError::Protocol(format!(
            "HTTP status {} from the gRPC server",
            parts.status
        )));
    }
    // Trailers-only: the status is in the headers and there is no message.
    if let Some(status) = grpc_status(&parts.headers) {
        return Ok(Reply {
            status,
            message: grpc_message(&parts.headers),
            body: Bytes::new(),
        });
    }
    let mut received = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if received.len() + chunk.len() > max_response_bytes + 5 {
            return Err(CallError::Protocol(format!(
                "response over the {max_response_bytes}-byte message limit"
            )));
        }
        received.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await?.unwrap_or_default();
    let status = grpc_status(&trailers)
        .ok_or_else(|| CallError::Protocol("no grpc-status in the response".into()))?;
    Ok(Reply {
        status,
        message: grpc_message(&trailers),
        body: unframe(received.freeze(), status)?,
    })
}

/// The gRPC length-prefixed message: uncompressed flag, 4-byte big-endian length, the bytes.
// The cast cannot truncate: a check over `grpc::MAX_MESSAGE_BYTES` (4 MiB) is refused before
// it is framed.
#[allow(clippy::cast_possible_truncation)]
fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.put_slice(message);
    out.freeze()
}

/// The one message of a unary response (empty when the call failed and sent none).
fn unframe(mut data: Bytes, status: i32) -> Result<Bytes, CallError> {
    if data.is_empty() && status != 0 {
        return Ok(data);
    }
    if data.len() < 5 {
        return Err(CallError::Protocol("truncated gRPC message".into()));
    }
    if data[0] != 0 {
        return Err(CallError::Protocol(
            "compressed gRPC message (no compression was negotiated)".into(),
        ));
    }
    let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    if data.len() != 5 + len {
        return Err(CallError::Protocol(
            "gRPC message length does not match the data received".into(),
        ));
    }
    Ok(data.split_off(5))
}

fn grpc_status(headers: &::http::HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn grpc_message(headers: &::http::HeaderMap) -> String {
    headers
        .get("grpc-message")
        .map(|v| {
            percent_encoding::percent_decode(v.as_bytes())
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default()
}

/// `timeout` as gRPC's `grpc-timeout` value: at most 8 digits and a unit, so the finest unit
/// (from milliseconds up to hours) that fits; rounded up, never zero.
fn grpc_timeout(timeout: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let millis = timeout.as_nanos().div_ceil(1_000_000).max(1);
    let units = [(1, 'm'), (1_000, 'S'), (60_000, 'M'), (3_600_000, 'H')];
    let (amount, unit) = units
        .iter()
        .map(|&(per, unit)| (millis.div_ceil(per), unit))
        .find(|&(amount, _)| amount <= MAX)
        .unwrap_or((MAX, 'H'));
    format!("{amount}{unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_fit_grpcs_eight_digits() {
        let value = |millis| grpc_timeout(Duration::from_millis(millis));
        assert_eq!(grpc_timeout(Duration::ZERO), "1m");
        assert_eq!(grpc_timeout(Duration::from_micros(1500)), "2m");
        assert_eq!(value(250), "250m");
        assert_eq!(value(99_999_999), "99999999m");
        assert_eq!(value(100_000_000), "100000S");
        assert_eq!(value(100_000_001), "100001S");
        assert_eq!(grpc_timeout(Duration::MAX), "99999999H");
    }

    #[test]
    fn messages_are_framed_and_unframed() {
        let framed = frame(b"abc");
        assert_eq!(&framed[..], b"\0\0\0\0\x03abc");
        assert_eq!(unframe(framed, 0).unwrap(), Bytes::from_static(b"abc"));
        assert!(unframe(Bytes::from_static(b"\x01\0\0\0\x01a"), 0).is_err());
        assert!(unframe(Bytes::from_static(b"\0\0\0\0\x05a"), 0).is_err());
        assert!(unframe(Bytes::new(), 0).is_err());
        assert_eq!(unframe(Bytes::new(), 7).unwrap(), Bytes::new());
    }
}
