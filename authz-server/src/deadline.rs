//! The caller's deadline. A gRPC client sends how long it will wait (`grpc-timeout`, e.g. Envoy's
//! ext_authz `timeout`); the clock starts when the check's headers reach us. A check still queued
//! when that time is up is not evaluated: its caller has already given up (Envoy has applied its
//! failure mode), so evaluating it — a database lookup, a JWKS fetch — is work for no one that
//! only deepens an overload. It is answered `DEADLINE_EXCEEDED` and counted
//! (`authz_checks_expired_total`).

use std::time::{Duration, Instant};

/// When the caller stops waiting, as stamped at arrival.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline(pub Instant);

/// Stamps the deadline a request's `grpc-timeout` names (none when absent or malformed: a
/// check without a deadline is always evaluated). Runs as the request's headers arrive.
pub fn stamp(request: &mut tonic::Request<()>) {
    let timeout = request
        .metadata()
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout);
    if let Some(timeout) = timeout {
        let deadline = Instant::now().checked_add(timeout);
        if let Some(deadline) = deadline {
            request.extensions_mut().insert(Deadline(deadline));
        }
    }
}

/// Whether the deadline stamped on a request (if any) has passed.
pub fn passed(extensions: &http::Extensions) -> bool {
    extensions
        .get::<Deadline>()
        .is_some_and(|Deadline(at)| Instant::now() >= *at)
}

/// `grpc-timeout` per the gRPC HTTP/2 protocol: 1 to 8 ASCII digits, then a unit (`H`ours,
/// `M`inutes, `S`econds, `m`illi-, `u` micro-, `n`anoseconds).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units_and_malformed_values() {
        assert_eq!(parse_grpc_timeout("200m"), Some(Duration::from_millis(200)));
        assert_eq!(parse_grpc_timeout("1n"), Some(Duration::from_nanos(1)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(
            parse_grpc_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        for bad in ["", "m", "123456789m", "10x", "-1S", "1.5S", "١m", "1é"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_request_without_grpc_timeout_has_no_deadline() {
        let mut request = tonic::Request::new(());
        stamp(&mut request);
        assert!(!passed(request.extensions()));
    }

    #[test]
    fn a_deadline_passes_and_a_far_one_does_not() {
        let mut request = tonic::Request::new(());
        request
            .metadata_mut()
            .insert("grpc-timeout", "1n".parse().expect("ascii"));
        stamp(&mut request);
        std::thread::sleep(Duration::from_millis(1));
        assert!(passed(request.extensions()));

        let mut request = tonic::Request::new(());
        request
            .metadata_mut()
            .insert("grpc-timeout", "10S".parse().expect("ascii"));
        stamp(&mut request);
        assert!(!passed(request.extensions()));
    }
}
