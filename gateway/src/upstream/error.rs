//! Every way one try to a backend can fail, with the status and body the client sees (Envoy's)
//! and a short reason for metrics, logs and retry conditions. The only place these are mapped.

use http::StatusCode;

/// Why a try did not get a response from upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made (refused, unreachable, unresolvable, connect timeout).
    #[error("upstream connect error: {0}")]
    Connect(String),
    /// The TLS handshake failed; rustls's words for what did not verify.
    #[error("upstream TLS error: {0}")]
    Tls(String),
    /// The connection failed after the request was sent.
    #[error("upstream reset: {0}")]
    Reset(String),
    /// The backend refused the stream before processing it (HTTP/2 `REFUSED_STREAM`).
    #[error("upstream refused the stream: {0}")]
    RefusedStream(String),
    /// The response was malformed.
    #[error("upstream protocol error: {0}")]
    Protocol(String),
    /// No response headers within the request's upstream wait.
    #[error("upstream request timeout")]
    Timeout,
    /// Every endpoint is ejected or unhealthy.
    #[error("no healthy upstream")]
    NoHealthyUpstream,
}

impl UpstreamError {
    /// The status the client sees, as Envoy answers: 503 when no connection could be made, 502
    /// when one broke or answered nonsense, 504 on timeout.
    pub fn status(&self) -> StatusCode {
        match self {
            UpstreamError::Connect(_)
            | UpstreamError::Tls(_)
            | UpstreamError::RefusedStream(_)
            | UpstreamError::NoHealthyUpstream => StatusCode::SERVICE_UNAVAILABLE,
            UpstreamError::Reset(_) | UpstreamError::Protocol(_) => StatusCode::BAD_GATEWAY,
            UpstreamError::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The body of the local reply (Envoy's texts).
    pub fn body(&self) -> String {
        const BEFORE: &str = "upstream connect error or disconnect/reset before headers";
        match self {
            UpstreamError::Connect(_) => format!("{BEFORE}. reset reason: connection failure"),
            UpstreamError::Tls(reason) => format!(
                "{BEFORE}. reset reason: connection failure, transport failure reason: TLS_error: {reason}"
            ),
            UpstreamError::Reset(_) => format!("{BEFORE}. reset reason: remote reset"),
            UpstreamError::RefusedStream(_) => {
                format!("{BEFORE}. reset reason: remote refused stream reset")
            }
            UpstreamError::Protocol(_) => format!("{BEFORE}. reset reason: protocol error"),
            UpstreamError::Timeout => "upstream request timeout".to_owned(),
            UpstreamError::NoHealthyUpstream => "no healthy upstream".to_owned(),
        }
    }

    /// The failure kind, for metric labels, logs and retry conditions.
    pub fn reason(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect_failure",
            UpstreamError::Tls(_) => "tls_failure",
            UpstreamError::Reset(_) => "reset",
            UpstreamError::RefusedStream(_) => "refused_stream",
            UpstreamError::Protocol(_) => "protocol_error",
            UpstreamError::Timeout => "timeout",
            UpstreamError::NoHealthyUpstream => "no_healthy_upstream",
        }
    }
}
