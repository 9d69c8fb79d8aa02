//! How long one request waits for its upstream response headers: the route's timeout, or the
//! gRPC client's own deadline (`grpc-timeout`) when that is sooner, so the gateway gives up when
//! the client would and never keeps a backend busy for a caller that has left.

use std::time::Duration;

use http::HeaderMap;

/// The smaller of `route_timeout` and the request's `grpc-timeout`, when it has a valid one.
pub fn upstream_wait(route_timeout: Duration, headers: &HeaderMap) -> Duration {
    headers
        .get("grpc-timeout")
        .and_then(|v| grpc_timeout(v.as_bytes()))
        .map_or(route_timeout, |t| t.min(route_timeout))
}

/// gRPC's `TimeoutValue TimeoutUnit`: 1 to 8 ASCII digits, then `H`, `M`, `S`, `m`, `u` or `n`.
pub fn grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(grpc_timeout(b"2H"), Some(Duration::from_secs(7200)));
        assert_eq!(grpc_timeout(b"3M"), Some(Duration::from_secs(180)));
        assert_eq!(grpc_timeout(b"100m"), Some(Duration::from_millis(100)));
        assert_eq!(
            grpc_timeout(b"99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(grpc_timeout(b"5n"), Some(Duration::from_nanos(5)));
        for bad in [&b""[..], b"S", b"123456789S", b"1x", b"-1S", b"1.5S"] {
            assert_eq!(grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_sooner_deadline_wins() {
        let route = Duration::from_secs(15);
        let mut h = HeaderMap::new();
        assert_eq!(upstream_wait(route, &h), route);
        h.insert("grpc-timeout", "200m".parse().expect("a value"));
        assert_eq!(upstream_wait(route, &h), Duration::from_millis(200));
        h.insert("grpc-timeout", "1H".parse().expect("a value"));
        assert_eq!(upstream_wait(route, &h), route);
        h.insert("grpc-timeout", "soon".parse().expect("a value"));
        assert_eq!(upstream_wait(route, &h), route);
    }
}
