//! A listener's resource limits: the `limits` table as written ([`super::raw::RawLimits`]) made
//! into the validated values the connection code runs on ([`Limits`]).
//!
//! Every limit has a safe default, named after Envoy's setting where Envoy has one, so a config
//! that says nothing still bounds what one client can hold: connections, streams, header count
//! and size, and the time a connection or stream may sit without progress.

use std::time::Duration;

use toml::Spanned;

use super::fields::parse_duration;
use super::raw::{RawLimits, RawPolicy};

pub use listener::{
    DEFAULT_HTTP2_KEEPALIVE_TIMEOUT, DEFAULT_HTTP2_MAX_LOCAL_ERROR_RESET_STREAMS,
    DEFAULT_HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS, DEFAULT_MAX_CONCURRENT_STREAMS,
    DEFAULT_MAX_REQUEST_HEADERS, Limits,
};

/// Validates `raw` (absent keys: `defaults`), pushing `(byte offset, message)` for each problem.
pub(super) fn compile(
    raw: Option<&RawLimits>,
    defaults: Limits,
    errors: &mut Vec<(usize, String)>,
) -> Limits {
    let Some(raw) = raw else { return defaults };
    let mut limits = defaults;
    set_counts(raw, &mut limits, errors);
    set_times(raw, &mut limits, errors);
    limits
}

/// The count limits: connections, streams, header fields, requests per connection, resets.
fn set_counts(raw: &RawLimits, limits: &mut Limits, errors: &mut Vec<(usize, String)>) {
    let max_connections = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    limits.max_connections = count(
        &raw.max_connections,
        "max_connections",
        max_connections,
        false,
        errors,
    ) as usize;
    limits.max_concurrent_streams = count(
        &raw.max_concurrent_streams,
        "max_concurrent_streams",
        DEFAULT_MAX_CONCURRENT_STREAMS,
        false,
        errors,
    );
    limits.max_request_headers = count(
        &raw.max_request_headers,
        "max_request_headers",
        DEFAULT_MAX_REQUEST_HEADERS,
        false,
        errors,
    ) as usize;
    let max_requests = count(&raw.max_requests_per_connection, "", 0, true, errors);
    limits.max_requests_per_connection = (max_requests > 0).then_some(u64::from(max_requests));
    limits.http2_max_pending_accept_reset_streams = count(
        &raw.http2_max_pending_accept_reset_streams,
        "http2_max_pending_accept_reset_streams",
        DEFAULT_HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS,
        false,
        errors,
    ) as usize;
    limits.http2_max_local_error_reset_streams = count(
        &raw.http2_max_local_error_reset_streams,
        "http2_max_local_error_reset_streams",
        DEFAULT_HTTP2_MAX_LOCAL_ERROR_RESET_STREAMS,
        false,
        errors,
    ) as usize;
}

/// The time limits: header timeout, stream and connection idle timeouts, HTTP/2 keep-alive.
fn set_times(raw: &RawLimits, limits: &mut Limits, errors: &mut Vec<(usize, String)>) {
    if let Some(t) = time(&raw.request_headers_timeout, false, errors).flatten() {
        limits.request_headers_timeout = t;
    }
    if let Some(t) = time(&raw.stream_idle_timeout, true, errors) {
        limits.stream_idle_timeout = t;
    }
    if let Some(t) = time(&raw.idle_timeout, true, errors) {
        limits.idle_timeout = t;
    }
    limits.http2_keepalive_interval = time(&raw.http2_keepalive_interval, false, errors).flatten();
    if let Some(t) = time(&raw.http2_keepalive_timeout, false, errors).flatten() {
        limits.http2_keepalive_timeout = t;
    }
}

/// A count limit: absent → `default`; 0 is refused unless `zero_ok` (then `default` stands).
fn count(
    field: &Option<Spanned<u32>>,
    name: &str,
    default: u32,
    zero_ok: bool,
    errors: &mut Vec<(usize, String)>,
) -> u32 {
    let Some(value) = field else { return default };
    if *value.get_ref() == 0 && !zero_ok {
        errors.push((value.span().start, format!("{name} must be at least 1")));
        return default;
    }
    *value.get_ref()
}

/// A time limit: absent → `None` (the caller's default); `Some(None)` is "off" (`"0s"`, only
/// when `zero_ok`); an invalid one is recorded and counts as absent.
fn time(
    field: &Option<Spanned<String>>,
    zero_ok: bool,
    errors: &mut Vec<(usize, String)>,
) -> Option<Option<Duration>> {
    let field = field.as_ref()?;
    match parse_duration(field.get_ref()) {
        Some(d) if d.is_zero() && zero_ok => Some(None),
        Some(d) if !d.is_zero() => Some(Some(d)),
        _ => {
            let zero = if zero_ok {
                " (\"0s\" turns it off)"
            } else {
                ""
            };
            errors.push((
                field.span().start,
                format!(
                    "invalid duration `{}`: expected a positive whole number with unit ms, s, m or h, e.g. \"10s\"{zero}",
                    field.get_ref()
                ),
            ));
            None
        }
    }
}

/// Room in a gRPC check for everything but the body and the headers (addresses, method, path,
/// context extensions, certificate); generous, since an oversized check is refused at send time
/// anyway (never allowed, never let through by `failure_mode_allow`).
pub const CHECK_OVERHEAD_BYTES: usize = 16 * 1024;

/// The largest body `authz-server`'s HTTP mode reads (its `MAX_BODY_BYTES`).
pub const HTTP_AUTHZ_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Refuses a `with_request_body.max_request_bytes` whose check could not fit what the
/// authorization server accepts: over gRPC, the body plus `header_bytes` of request headers (the
/// largest `max_request_headers_kb` of any listener) plus [`CHECK_OVERHEAD_BYTES`] must stay
/// within the 4 MiB message limit; over HTTP, the body alone within 4 MiB.
pub(super) fn check_body_limits(
    policies: &[RawPolicy],
    header_bytes: usize,
    errors: &mut Vec<(usize, String)>,
) {
    let grpc_limit = crate::ext_authz::grpc::MAX_MESSAGE_BYTES;
    for policy in policies {
        let Some(body) = &policy.ext_auth.with_request_body else {
            continue;
        };
        let wanted = *body.max_request_bytes.get_ref() as usize;
        let (most, why) = if policy.ext_auth.http.is_some() {
            (
                HTTP_AUTHZ_MAX_BODY_BYTES,
                format!(
                    "the authorization server reads bodies up to {HTTP_AUTHZ_MAX_BODY_BYTES} bytes"
                ),
            )
        } else {
            (
                grpc_limit.saturating_sub(header_bytes + CHECK_OVERHEAD_BYTES),
                format!(
                    "a gRPC check must fit in {grpc_limit} bytes with up to {header_bytes} bytes of request headers and {CHECK_OVERHEAD_BYTES} of other attributes"
                ),
            )
        };
        if wanted > most {
            errors.push((
                body.max_request_bytes.span().start,
                format!(
                    "with_request_body.max_request_bytes = {wanted} is too large: {why}; at most {most} here"
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(text: &str) -> (Limits, Vec<String>) {
        let raw: RawLimits = toml::from_str(text).expect("parses");
        let mut errors = Vec::new();
        let limits = compile(Some(&raw), Limits::default(), &mut errors);
        (limits, errors.into_iter().map(|(_, m)| m).collect())
    }

    #[test]
    fn absent_keys_take_envoys_defaults() {
        let (limits, errors) = compiled("");
        assert!(errors.is_empty());
        assert_eq!(limits, Limits::default());
        assert_eq!(limits.max_concurrent_streams, 100);
        assert_eq!(limits.max_request_headers, 100);
        assert_eq!(limits.stream_idle_timeout, Some(Duration::from_secs(300)));
        assert_eq!(limits.idle_timeout, Some(Duration::from_secs(3600)));
        assert_eq!(limits.max_requests_per_connection, None);
        assert_eq!(limits.http2_keepalive_interval, None);
    }

    #[test]
    fn zero_turns_idle_timeouts_off_and_hours_parse() {
        let (limits, errors) = compiled(
            "stream_idle_timeout = \"0s\"\nidle_timeout = \"2h\"\nmax_requests_per_connection = 3",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(limits.stream_idle_timeout, None);
        assert_eq!(limits.idle_timeout, Some(Duration::from_secs(7200)));
        assert_eq!(limits.max_requests_per_connection, Some(3));
    }

    #[test]
    fn zero_counts_and_a_zero_header_timeout_are_refused() {
        let (_, errors) = compiled(
            "max_connections = 0\nmax_request_headers = 0\nrequest_headers_timeout = \"0s\"\nhttp2_keepalive_interval = \"soon\"",
        );
        assert_eq!(
            errors,
            [
                "max_connections must be at least 1",
                "max_request_headers must be at least 1",
                "invalid duration `0s`: expected a positive whole number with unit ms, s, m or h, e.g. \"10s\"",
                "invalid duration `soon`: expected a positive whole number with unit ms, s, m or h, e.g. \"10s\"",
            ]
        );
    }
}
