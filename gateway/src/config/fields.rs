//! The field-level checks every config section shares: the error list with byte offsets,
//! durations, URLs, regexes and header names. Each returns the validated value or records why
//! not, so a section goes on and every error in the file is reported in one go.

use std::time::Duration;

use http::HeaderName;
use http::uri::Authority;
use regex::Regex;
use toml::Spanned;

/// Every problem found so far, each with the byte offset it was written at.
#[derive(Default)]
pub(super) struct Errors(pub(super) Vec<(usize, String)>);

impl Errors {
    /// Records `message` at the place `spanned` was written.
    pub(super) fn at<T>(&mut self, spanned: &Spanned<T>, message: impl Into<String>) {
        self.0.push((spanned.span().start, message.into()));
    }
}

/// Parses `"200ms"`, `"2s"`, `"1m"`, `"1h"`; a bare number is not accepted, so the unit is never
/// guessed.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = digits.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "h" => Some(Duration::from_secs(n.checked_mul(3600)?)),
        _ => None,
    }
}

/// `<scheme>://host:port` with one of `schemes` → `(scheme, host:port)`.
pub(super) fn url_authority(
    url: &Spanned<String>,
    schemes: &[&str],
    errors: &mut Errors,
) -> Option<(String, Authority)> {
    let text = url.get_ref();
    let parsed = text.parse::<http::Uri>().ok().filter(|u| {
        u.scheme_str().is_some_and(|s| schemes.contains(&s))
            && u.authority().is_some_and(|a| a.port_u16().is_some())
            && u.path_and_query().is_none_or(|pq| pq.as_str() == "/")
    });
    match parsed.and_then(|u| Some((u.scheme_str()?.to_owned(), u.authority()?.clone()))) {
        Some(a) => Some(a),
        None => {
            errors.at(
                url,
                format!(
                    "invalid url `{text}`: expected {}://host:port with no path",
                    schemes.join("|")
                ),
            );
            None
        }
    }
}

pub(super) fn duration(
    field: &Option<Spanned<String>>,
    default: Duration,
    errors: &mut Errors,
) -> Duration {
    let Some(field) = field else { return default };
    match parse_duration(field.get_ref()) {
        Some(d) if !d.is_zero() => d,
        _ => {
            errors.at(
                field,
                format!(
                    "invalid duration `{}`: expected a positive whole number with unit ms, s or m, e.g. \"200ms\"",
                    field.get_ref()
                ),
            );
            default
        }
    }
}

pub(super) fn anchored(pattern: &Spanned<String>, errors: &mut Errors) -> Option<Regex> {
    // Check the pattern as written so the message shows the user's text, then anchor it.
    let checked = Regex::new(pattern.get_ref())
        .and_then(|_| Regex::new(&format!("^(?:{})$", pattern.get_ref())));
    match checked {
        Ok(re) => Some(re),
        Err(e) => {
            let text = e.to_string();
            let reason = text
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("error: "))
                .unwrap_or(text.as_str());
            errors.at(
                pattern,
                format!("invalid regex `{}`: {reason}", pattern.get_ref()),
            );
            None
        }
    }
}

pub(super) fn header_name(name: &Spanned<String>, errors: &mut Errors) -> Option<HeaderName> {
    match HeaderName::from_bytes(name.get_ref().to_ascii_lowercase().as_bytes()) {
        Ok(n) => Some(n),
        Err(_) => {
            errors.at(name, format!("invalid header name `{}`", name.get_ref()));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("200ms"), Some(Duration::from_millis(200)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("200"), None);
        assert_eq!(parse_duration("ms"), None);
        assert_eq!(parse_duration("1.5s"), None);
    }
}
