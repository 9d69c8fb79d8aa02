//! Header fields no listener accepts. RFC 9113 §8.2.1 makes an HTTP/2 request whose field value
//! starts or ends with SP or HTAB (or holds NUL, CR or LF) malformed, and Envoy's codecs refuse
//! it. It matters beyond the letter of the RFC: a check compares the value as received
//! (`" blocked"` is not `blocked`), while every HTTP/1.1 parser trims it, so the backend behind
//! the gateway would read `blocked` — a deny walked around. The h2 codec (the `h2` crate) already
//! refuses the rest of §8.2.1 (upper-case or invalid names, NUL/CR/LF and other controls,
//! connection-specific fields, `te` other than `trailers`); this is the part it lets through.
//! HTTP/1.1 parsers trim the value before we see it, so there the rule never fires.

use http::{HeaderMap, HeaderName};

/// The answer body for a request carrying such a field (status 400).
pub const MALFORMED_HEADER: &str = "malformed request header\n";

/// The first field whose value starts or ends with whitespace or holds NUL, CR or LF; `None`
/// when every value is well-formed.
pub fn malformed_field(headers: &HeaderMap) -> Option<&HeaderName> {
    headers
        .iter()
        .find(|(_, value)| malformed_value(value.as_bytes()))
        .map(|(name, _)| name)
}

fn malformed_value(value: &[u8]) -> bool {
    let edge = |byte: Option<&u8>| matches!(byte, Some(b' ' | b'\t'));
    edge(value.first())
        || edge(value.last())
        || value.iter().any(|b| matches!(b, 0 | b'\r' | b'\n'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-ok", HeaderValue::from_static("fine"));
        headers.insert("x-role", HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn leading_or_trailing_space_or_tab_is_malformed() {
        for value in [" blocked", "blocked ", "\tblocked", "blocked\t", " ", "\t"] {
            assert_eq!(
                malformed_field(&with(value)).map(HeaderName::as_str),
                Some("x-role"),
                "{value:?}"
            );
        }
    }

    #[test]
    fn inner_whitespace_and_empty_values_are_fine() {
        for value in ["", "a b", "a\tb", "blocked, ok"] {
            assert_eq!(malformed_field(&with(value)), None, "{value:?}");
        }
    }
}
