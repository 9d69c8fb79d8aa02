//! The path of a request target, made canonical (RFC 3986 §6.2.2 and §5.2.4).

use serde::Deserialize;

/// What to do with `%2F`, `%5C` and a raw `\` in a path — a choice, because backends disagree
/// on whether an encoded slash separates segments. Named after Envoy's
/// `path_with_escaped_slashes_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EscapedSlashes {
    /// Keep them escaped (`%2F`, `%5C`; a raw `\` becomes `%5C`): they are data, not separators.
    /// Safe only when every backend agrees.
    Keep,
    /// Refuse the request. The default: legitimate paths rarely carry them, and a backend that
    /// decodes them would serve a path the check never saw.
    #[default]
    Reject,
    /// Turn them into `/` before dot segments are resolved, so the check sees the segments a
    /// decoding backend would.
    Unescape,
}

/// What to do with `;` in a path segment (RFC 3986 §3.3 leaves its meaning to the server). Java
/// servers (Tomcat, Jetty, Spring) drop `;params` from each segment before they route, so
/// `/admin;x/y`, `/admin;/y` and `/x/..;/admin/y` are all `/admin/y` to them; Envoy and most other
/// servers keep `;` as data. A check on one reading and a backend on the other disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathParameters {
    /// `;` is data, as Envoy treats it. Safe only when no backend strips parameters.
    Keep,
    /// Refuse a path with a raw `;` in it. The default: legitimate paths rarely carry one, and
    /// the two readings disagree on what is served. `%3B` is data (see `Strip`).
    #[default]
    Reject,
    /// Drop `;` and what follows it up to the next `/` from each segment, before dot segments
    /// are resolved, as Tomcat does; the backend then gets the path the check saw. `%3B` is data
    /// (those servers strip before they decode).
    Strip,
}

/// How a path is made canonical.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathOptions {
    /// Collapse runs of `/` into one (on by default, as Istio sets Envoy's `merge_slashes`).
    pub merge_slashes: bool,
    /// The policy for encoded slashes and backslashes.
    pub escaped_slashes: EscapedSlashes,
    /// The policy for `;` path parameters.
    pub path_parameters: PathParameters,
}

impl Default for PathOptions {
    fn default() -> Self {
        PathOptions {
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::default(),
            path_parameters: PathParameters::default(),
        }
    }
}

/// Why a path has no canonical form. The text is what a log line or a trace shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/` (not origin-form), or is empty.
    #[error("path is not origin-form (must start with `/`)")]
    NotOriginForm,
    /// A raw control character (or an encoded NUL) in the path or query.
    #[error("control character in path")]
    ControlCharacter,
    /// `#` in a request target: fragments are never sent to a server.
    #[error("fragment in request target")]
    Fragment,
    /// `%` not followed by two hex digits.
    #[error("invalid percent-encoding in path")]
    InvalidPercentEncoding,
    /// `%2F`, `%5C` or `\` while the policy is [`EscapedSlashes::Reject`].
    #[error("escaped slash or backslash in path")]
    EscapedSlash,
    /// A `?` reached [`canonical_path`]; split the query off with [`split_target`] first.
    #[error("query in path")]
    QueryInPath,
    /// A raw `;` while the policy is [`PathParameters::Reject`].
    #[error("path parameter (`;`) in path")]
    PathParameter,
}

/// Splits a request target `path?query` at the first `?`. The query is returned as sent
/// (it is the backend's business), but a fragment or a control character anywhere is an error.
pub fn split_target(target: &str) -> Result<(&str, Option<&str>), PathError> {
    if target.contains('#') {
        return Err(PathError::Fragment);
    }
    match target.split_once('?') {
        None => Ok((target, None)),
        Some((path, query)) => {
            if query.bytes().any(is_control) {
                return Err(PathError::ControlCharacter);
            }
            Ok((path, Some(query)))
        }
    }
}

/// The canonical form of an origin-form path (no query).
///
/// Steps, in this order (the order matters: an escape can hide a dot or a slash):
/// 1. escapes of unreserved characters are decoded (`%61` → `a`, `%2e` → `.`), other escapes
///    upper-cased (`%3b` → `%3B`), characters not allowed raw in a path escaped (space → `%20`),
///    encoded slashes handled per [`EscapedSlashes`], `;` refused under
///    [`PathParameters::Reject`];
/// 2. under [`PathParameters::Strip`], each segment's `;params` dropped (after decoding, so
///    `%2e%2e;` is a `..` segment, as on Tomcat);
/// 3. runs of `/` merged, when asked;
/// 4. `.` and `..` segments resolved; `..` at the root stays at the root.
pub fn canonical_path(raw: &str, options: &PathOptions) -> Result<String, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotOriginForm);
    }
    let mut decoded = decode(raw, options)?;
    if options.path_parameters == PathParameters::Strip && decoded.contains(';') {
        decoded = strip_parameters(&decoded);
    }
    let merged = if options.merge_slashes {
        merge_slashes(&decoded)
    } else {
        decoded
    };
    Ok(remove_dot_segments(&merged))
}

/// Whether `raw` (no query) is already canonical under `options`, i.e. [`canonical_path`] would
/// return it unchanged: it starts with `/`, every byte may appear raw in a path (no `%`, no
/// `\`, nothing outside ASCII), no `.` or `..` segment, and no `//` when slashes are merged.
/// One scan without allocating, for the common case of a proxy sending a clean path; `false`
/// only means "take the full algorithm".
pub fn is_canonical_path(raw: &str, options: &PathOptions) -> bool {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return false;
    }
    let mut segment_start = 1;
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        if b == b'/' {
            let segment = bytes.get(segment_start..i).unwrap_or_default();
            if is_dot_segment(segment) || (options.merge_slashes && segment.is_empty()) {
                return false;
            }
            segment_start = i + 1;
        } else if !PATH_CHARS[usize::from(b)]
            || (b == b';' && options.path_parameters != PathParameters::Keep)
        {
            return false;
        }
    }
    !is_dot_segment(bytes.get(segment_start..).unwrap_or_default())
}

fn is_dot_segment(segment: &[u8]) -> bool {
    matches!(segment, b"." | b"..")
}

/// [`is_path_char`] as a table, for [`is_canonical_path`]'s scan.
static PATH_CHARS: [bool; 256] = {
    let mut table = [false; 256];
    let mut b: u8 = 0;
    loop {
        table[b as usize] = is_path_char(b);
        if b == u8::MAX {
            break table;
        }
        b += 1;
    }
};

/// Step 1: one pass over the bytes, deciding each escape and each raw byte.
fn decode(raw: &str, options: &PathOptions) -> Result<String, PathError> {
    let slashes = options.escaped_slashes;
    let reject_parameters = options.path_parameters == PathParameters::Reject;
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let escaped = bytes
                    .get(i + 1..i + 3)
                    .and_then(|hex| Some(hex_value(hex[0])? << 4 | hex_value(hex[1])?))
                    .ok_or(PathError::InvalidPercentEncoding)?;
                match escaped {
                    // An encoded NUL truncates paths in C backends: no single meaning.
                    0 => return Err(PathError::ControlCharacter),
                    b'/' | b'\\' => push_slash(&mut out, escaped, slashes)?,
                    c if is_unreserved(c) => out.push(char::from(c)),
                    c => push_escape(&mut out, c),
                }
                i += 3;
            }
            b'\\' => {
                push_slash(&mut out, b, slashes)?;
                i += 1;
            }
            b'#' => return Err(PathError::Fragment),
            b'?' => return Err(PathError::QueryInPath),
            b';' if reject_parameters => return Err(PathError::PathParameter),
            c if is_control(c) => return Err(PathError::ControlCharacter),
            c if is_path_char(c) => {
                out.push(char::from(c));
                i += 1;
            }
            c => {
                push_escape(&mut out, c);
                i += 1;
            }
        }
    }
    Ok(out)
}

fn push_slash(out: &mut String, which: u8, slashes: EscapedSlashes) -> Result<(), PathError> {
    match slashes {
        EscapedSlashes::Reject => Err(PathError::EscapedSlash),
        EscapedSlashes::Unescape => {
            out.push('/');
            Ok(())
        }
        EscapedSlashes::Keep => {
            push_escape(out, which);
            Ok(())
        }
    }
}

fn push_escape(out: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(byte >> 4)]));
    out.push(char::from(HEX[usize::from(byte & 0xF)]));
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

fn is_control(byte: u8) -> bool {
    byte < 0x20 || byte == 0x7F
}

/// RFC 3986 unreserved: `ALPHA / DIGIT / "-" / "." / "_" / "~"`.
const fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// What may appear raw in a path: `pchar` (unreserved, sub-delims, `:`, `@`) and `/`.
const fn is_path_char(byte: u8) -> bool {
    is_unreserved(byte)
        || matches!(
            byte,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
        )
}

/// Step 2: each segment up to its first raw `;`.
fn strip_parameters(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for (index, segment) in path.split('/').enumerate() {
        if index > 0 {
            out.push('/');
        }
        out.push_str(segment.split_once(';').map_or(segment, |(kept, _)| kept));
    }
    out
}

/// Step 3.
fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    out
}

/// Step 4 (RFC 3986 §5.2.4, on segments). A final `.` or `..` leaves a trailing slash, as the
/// RFC's algorithm does: `/a/b/..` → `/a/`.
fn remove_dot_segments(path: &str) -> String {
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let last = segments.len().saturating_sub(1);
    let mut kept: Vec<&str> = Vec::with_capacity(segments.len());
    for (index, segment) in segments.into_iter().enumerate() {
        match segment {
            "." => {}
            ".." => {
                kept.pop();
            }
            other => {
                kept.push(other);
                continue;
            }
        }
        if index == last {
            kept.push("");
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in kept {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests;
