//! Which HTTP version a backend is spoken to, and the request marker for `host_rewrite = "auto"`.

/// Which HTTP version the gateway speaks to a backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only: h2c with prior knowledge on `http://`, ALPN offering only `h2` on `https://`.
    Http2,
    /// ALPN offers `h2` and `http/1.1` on `https://`; HTTP/1.1 on `http://`.
    #[default]
    Auto,
}

/// A request extension: set `Host` (and `:authority`) to the chosen endpoint's host, as
/// `host_rewrite = "auto"` asks; the endpoint that sends the try applies it.
#[derive(Debug, Clone, Copy)]
pub struct AutoHost;
