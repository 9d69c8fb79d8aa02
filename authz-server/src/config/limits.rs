//! `[server.limits]`: the resource limits of the gRPC, HTTP-mode and admin listeners, with safe
//! defaults named after Envoy's where Envoy has one. Each value is checked while the TOML is
//! read, so a bad one is reported at its `file:line:col`.

use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

pub use listener::Limits;

/// The `[server.limits]` table; every key is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Connections served at once per listener (default 10000); excess ones are closed at once.
    pub max_connections: Option<AtLeastOne>,
    /// HTTP/2 streams open at once on one connection (default 100).
    pub max_concurrent_streams: Option<AtLeastOne>,
    /// Request header fields per request (default 100): 431 over HTTP mode, `RESOURCE_EXHAUSTED`
    /// over gRPC.
    pub max_request_headers: Option<AtLeastOne>,
    /// Total request header size in KiB (default 60).
    pub max_request_headers_kb: Option<AtLeastOne>,
    /// Time to send a request's headers, e.g. `"10s"` (the default).
    pub request_headers_timeout: Option<Timeout>,
    /// Time a request may make no progress, e.g. `"5m"` (the default); `"0s"` is off.
    pub stream_idle_timeout: Option<TimeoutOrOff>,
    /// Time a connection may sit idle, e.g. `"1h"` (the default); `"0s"` is off.
    pub idle_timeout: Option<TimeoutOrOff>,
    /// Requests per connection before a graceful close (HTTP mode); 0, the default, is no limit.
    pub max_requests_per_connection: Option<u32>,
    /// HTTP/2 PING interval, e.g. `"30s"`; off by default.
    pub http2_keepalive_interval: Option<Timeout>,
    /// Close when a PING is not answered within this (default `"20s"`).
    pub http2_keepalive_timeout: Option<Timeout>,
    /// Streams a client may reset before they are accepted, before GOAWAY (default 20).
    pub http2_max_pending_accept_reset_streams: Option<AtLeastOne>,
    /// Streams reset for a client's protocol errors before GOAWAY (default 1024).
    pub http2_max_local_error_reset_streams: Option<AtLeastOne>,
}

impl LimitsSection {
    /// The limits, defaults filled in.
    pub fn limits(&self) -> Limits {
        let d = Limits::default();
        let count = |v: &Option<AtLeastOne>, default: usize| v.map_or(default, |v| v.0 as usize);
        Limits {
            max_connections: count(&self.max_connections, d.max_connections),
            max_concurrent_streams: self
                .max_concurrent_streams
                .map_or(d.max_concurrent_streams, |v| v.0),
            max_request_headers: count(&self.max_request_headers, d.max_request_headers),
            max_request_header_bytes: self
                .max_request_headers_kb
                .map_or(d.max_request_header_bytes, |kb| kb.0 as usize * 1024),
            request_headers_timeout: self
                .request_headers_timeout
                .map_or(d.request_headers_timeout, |t| t.0),
            stream_idle_timeout: self
                .stream_idle_timeout
                .map_or(d.stream_idle_timeout, |t| t.0),
            idle_timeout: self.idle_timeout.map_or(d.idle_timeout, |t| t.0),
            max_requests_per_connection: self
                .max_requests_per_connection
                .filter(|n| *n > 0)
                .map(u64::from),
            http2_keepalive_interval: self.http2_keepalive_interval.map(|t| t.0),
            http2_keepalive_timeout: self
                .http2_keepalive_timeout
                .map_or(d.http2_keepalive_timeout, |t| t.0),
            http2_max_pending_accept_reset_streams: count(
                &self.http2_max_pending_accept_reset_streams,
                d.http2_max_pending_accept_reset_streams,
            ),
            http2_max_local_error_reset_streams: count(
                &self.http2_max_local_error_reset_streams,
                d.http2_max_local_error_reset_streams,
            ),
        }
    }
}

/// A count of at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtLeastOne(pub u32);

impl<'de> Deserialize<'de> for AtLeastOne {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match u32::deserialize(deserializer)? {
            0 => Err(de::Error::custom("must be at least 1")),
            n => Ok(AtLeastOne(n)),
        }
    }
}

/// A positive duration: `"200ms"`, `"10s"`, `"5m"`, `"1h"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(pub Duration);

/// A duration, or `"0s"` for off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutOrOff(pub Option<Duration>);

fn parse_duration(text: &str) -> Option<Duration> {
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = digits.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "h" => Some(Duration::from_secs(n.checked_mul(3600)?)),
        _ => None,
    }
}

fn duration<'de, D: Deserializer<'de>>(deserializer: D, off: bool) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    match parse_duration(&text) {
        Some(d) if off || !d.is_zero() => Ok(d),
        _ => Err(de::Error::custom(format!(
            "invalid duration `{text}`: expected a positive whole number with unit ms, s, m or h, e.g. \"10s\"{}",
            if off { " (\"0s\" turns it off)" } else { "" }
        ))),
    }
}

impl<'de> Deserialize<'de> for Timeout {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        duration(deserializer, false).map(Timeout)
    }
}

impl<'de> Deserialize<'de> for TimeoutOrOff {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        duration(deserializer, true).map(|d| TimeoutOrOff((!d.is_zero()).then_some(d)))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, LoadError};

    fn parsed(limits: &str) -> Result<super::Limits, String> {
        let text = format!("[server.limits]\n{limits}\n[default]\ndeny = {{}}\n");
        match Config::parse("t.toml", &text) {
            Ok(config) => Ok(config.server.limits.limits()),
            Err(LoadError::Invalid(errors)) => Err(errors.to_string()),
            Err(other) => panic!("{other}"),
        }
    }

    #[test]
    fn absent_keys_take_the_defaults_and_zero_turns_timers_off() {
        assert_eq!(parsed("").unwrap(), super::Limits::default());
        let limits = parsed("stream_idle_timeout = \"0s\"\nidle_timeout = \"2h\"").unwrap();
        assert_eq!(limits.stream_idle_timeout, None);
        assert_eq!(
            limits.idle_timeout,
            Some(std::time::Duration::from_secs(7200))
        );
    }

    #[test]
    fn bad_limits_are_refused_at_their_position() {
        let error = parsed("max_connections = 0").unwrap_err();
        assert!(
            error.starts_with("t.toml:2:19: must be at least 1"),
            "{error}"
        );
        let error = parsed("request_headers_timeout = \"0s\"").unwrap_err();
        assert!(
            error.starts_with(
                "t.toml:2:27: invalid duration `0s`: expected a positive whole number"
            ),
            "{error}"
        );
    }
}
