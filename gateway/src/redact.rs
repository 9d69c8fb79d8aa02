//! Keeping logs honest and free of credentials.
//!
//! - **Forged lines.** A value written into a text log line as is can end the line and start a
//!   fake one (`/x\n... status=200`), or drive a terminal (`\x1b[...`). [`escape`] writes every
//!   control character (and the Unicode line and paragraph separators) as a visible escape;
//!   every value the access log and the request-path warnings print from a client, the config or
//!   an authorization server goes through it.
//! - **Credentials.** The gateway never logs header values; the one request detail that can
//!   carry a credential in the access log is the query string (`?token=...`, `?api_key=...`),
//!   so [`path`] replaces every query value before it is logged.

use std::borrow::Cow;
use std::fmt::Write;

/// What replaces a redacted value.
pub const REDACTED: &str = "REDACTED";

/// `s` with every control character escaped: `\n`, `\r`, `\t` and `\\` as themselves, any
/// other as `\x1b` (C0, DEL) or `\u{85}` (C1, U+2028, U+2029). Borrowed when nothing needed it.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Escaped too, so an escape in the output always means the byte was there.
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x80 && needs_escape(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control() || c == '\\' || c == '\u{2028}' || c == '\u{2029}'
}

/// `path?k=v&flag` → `path?k=REDACTED&REDACTED`: parameter names stay (they help debugging),
/// values never appear; the result is [`escape`]d.
pub fn path(path_and_query: &str) -> String {
    let mut out = Vec::with_capacity(path_and_query.len() + 16);
    write_path(&mut out, path_and_query);
    String::from_utf8_lossy(&out).into_owned()
}

/// [`path`] appended to `out` without building intermediate strings (the access log's hot
/// path). Escaping works character by character, so escaping the pieces equals escaping the
/// joined result.
pub fn write_path(out: &mut Vec<u8>, path_and_query: &str) {
    let Some((path, query)) = path_and_query.split_once('?') else {
        out.extend_from_slice(escape(path_and_query).as_bytes());
        return;
    };
    out.extend_from_slice(escape(path).as_bytes());
    out.push(b'?');
    for (i, param) in query.split('&').enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        match param.split_once('=') {
            Some((key, _)) => {
                out.extend_from_slice(escape(key).as_bytes());
                out.push(b'=');
                out.extend_from_slice(REDACTED.as_bytes());
            }
            None if param.is_empty() => {}
            None => out.extend_from_slice(REDACTED.as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_never_survive() {
        assert_eq!(path("/openai"), "/openai");
        assert_eq!(
            path("/openai?token=s3cr3t&model=x"),
            "/openai?token=REDACTED&model=REDACTED"
        );
        assert_eq!(path("/a?s3cr3t"), "/a?REDACTED");
        assert_eq!(path("/a?"), "/a?");
        assert_eq!(path("/a?#x=y&=z"), "/a?#x=REDACTED&=REDACTED");
    }

    #[test]
    fn control_characters_cannot_forge_a_line() {
        assert_eq!(
            escape("/x\n2026-01-01 INFO request status=200"),
            "/x\\n2026-01-01 INFO request status=200"
        );
        assert_eq!(escape("a\r\tb"), "a\\r\\tb");
        assert_eq!(escape("\x1b[31mred"), "\\x1b[31mred");
        assert_eq!(escape("nul\0del\x7f"), "nul\\x00del\\x7f");
        assert_eq!(
            escape("c1\u{85}ls\u{2028}ps\u{2029}"),
            "c1\\u{85}ls\\u{2028}ps\\u{2029}"
        );
        assert_eq!(escape("back\\slash"), "back\\\\slash");
        assert_eq!(escape("é plain ✓"), "é plain ✓");
        assert!(matches!(escape("/plain/path"), Cow::Borrowed(_)));
    }

    #[test]
    fn logged_paths_are_escaped_and_redacted() {
        assert_eq!(path("/a\nb?k=v\n"), "/a\\nb?k=REDACTED");
        assert_eq!(path("/a\x1b?k"), "/a\\x1b?REDACTED");
    }
}
