//! Keeping credentials out of logs. The gateway never logs header values; the one request detail
//! that can carry a credential in the access log is the query string (`?token=...`,
//! `?api_key=...`), so every query value is replaced before it is logged.

/// What replaces a redacted value.
pub const REDACTED: &str = "REDACTED";

/// `path?k=v&flag` → `path?k=REDACTED&REDACTED`: parameter names stay (they help debugging),
/// values never appear.
pub fn path(path_and_query: &str) -> String {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query.to_owned();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((key, _)) => format!("{key}={REDACTED}"),
            None if param.is_empty() => String::new(),
            None => REDACTED.to_owned(),
        })
        .collect();
    format!("{path}?{}", params.join("&"))
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
    }
}
