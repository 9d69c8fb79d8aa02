//! `x-request-id`: the client's, or a new one the request carries from here on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use http::header::{HeaderName, HeaderValue};
use http::request::Parts;

/// The request's id: the client's `x-request-id` when it sent a non-empty one, else a new one,
/// set on the request so the checks and the backend see it.
pub(super) fn ensure_request_id(parts: &mut Parts) -> String {
    if let Some(id) = parts
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
    {
        return id.to_owned();
    }
    let id = new_request_id();
    if let Ok(v) = HeaderValue::from_str(&id) {
        parts
            .headers
            .insert(HeaderName::from_static("x-request-id"), v);
    }
    id
}

/// A random UUID-shaped id (v4 layout); randomness from std's per-process SipHash keys mixed
/// with a counter and the clock — unique, not secret.
fn new_request_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let mut words = [0u64; 2];
    for (i, w) in words.iter_mut().enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(n);
        h.write_u64(nanos);
        h.write_usize(i);
        *w = h.finish();
    }
    let b = (u128::from(words[0]) << 64 | u128::from(words[1])) & !(0xF000u128 << 64)
        | (0x4000u128 << 64);
    let b = b & !(0xC000u128 << 48) | (0x8000u128 << 48);
    // 8-4-4-4-12 lower-case hex digits, written directly (`format!` with a width and the
    // joins cost ~5k instructions per request).
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(36);
    for i in 0..32 {
        if matches!(i, 8 | 12 | 16 | 20) {
            out.push('-');
        }
        let nibble = (b >> (124 - 4 * i)) & 0xF;
        out.push(char::from(HEX[nibble as usize]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_look_like_uuids_and_differ() {
        let a = new_request_id();
        let b = new_request_id();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
        for (i, c) in a.char_indices() {
            if matches!(i, 8 | 13 | 18 | 23) {
                assert_eq!(c, '-', "{a}");
            } else {
                assert!(c.is_ascii_hexdigit() && !c.is_ascii_uppercase(), "{a}");
            }
        }
        assert_ne!(a, b);
    }

    #[test]
    fn a_client_id_is_kept_and_a_missing_one_is_set_on_the_request() {
        let (mut parts, ()) = http::Request::builder()
            .header("x-request-id", "abc")
            .body(())
            .expect("request")
            .into_parts();
        assert_eq!(ensure_request_id(&mut parts), "abc");
        let (mut parts, ()) = http::Request::new(()).into_parts();
        let id = ensure_request_id(&mut parts);
        assert_eq!(parts.headers["x-request-id"], id.as_str());
    }
}
