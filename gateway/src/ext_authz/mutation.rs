//! Applying an authorization answer, as Envoy's ext_authz filter does.

use ::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ::http::request::Parts;
use ::http::uri::PathAndQuery;
use ::http::{Response, StatusCode, Uri};
use bytes::Bytes;

use crate::body::{self, ProxyBody};

/// The changes an allow asks for.
#[derive(Debug, Default)]
pub struct Allowed {
    /// Request headers to overwrite or add.
    pub headers_to_set: Vec<(HeaderName, HeaderValue)>,
    /// Request headers to comma-append to (added when absent).
    pub headers_to_append: Vec<(HeaderName, HeaderValue)>,
    /// Request headers to add only when absent.
    pub headers_to_add_if_absent: Vec<(HeaderName, HeaderValue)>,
    /// Request headers to overwrite only when present.
    pub headers_to_overwrite_if_exists: Vec<(HeaderName, HeaderValue)>,
    /// Request headers to remove (pseudo headers and `host` are refused when parsed).
    pub headers_to_remove: Vec<HeaderName>,
    /// Query parameters to set (replacing every existing value of the key, compared decoded).
    pub query_to_set: Vec<(String, String)>,
    /// Query parameter keys to remove (compared with each key percent-decoded).
    pub query_to_remove: Vec<String>,
    /// The path and query the two lists above produce, worked out by
    /// [`Allowed::plan_query_rewrite`] while the check can still fail.
    pub rewritten_path: Option<PathAndQuery>,
    /// Headers for the response to the client.
    pub response_headers: Vec<(HeaderName, HeaderValue, AppendAction)>,
    /// The server's dynamic metadata as JSON, for the access log.
    pub dynamic_metadata: Option<String>,
}

/// Envoy's `HeaderValueOption.HeaderAppendAction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendAction {
    /// Add another value, or add the header (Envoy's default).
    AppendIfExistsOrAdd,
    /// Add only when absent.
    AddIfAbsent,
    /// Replace, or add when absent.
    OverwriteIfExistsOrAdd,
    /// Replace only when present.
    OverwriteIfExists,
}

/// A response the ext_authz server wants the client to get instead of the upstream's.
#[derive(Debug, Default)]
pub struct Denied {
    /// The status; `None` means the default for the situation (403, or `status_on_error`).
    pub status: Option<StatusCode>,
    /// Headers, applied remove-then-add so repeated names (`set-cookie`) all survive.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body.
    pub body: Bytes,
}

impl Denied {
    /// An empty response with `status`.
    pub fn status(status: StatusCode) -> Denied {
        Denied {
            status: Some(status),
            ..Denied::default()
        }
    }

    /// The response the client gets; `default_status` when the server named none.
    pub fn into_response(self, default_status: StatusCode) -> Response<ProxyBody> {
        let Denied {
            status,
            headers,
            body,
        } = self;
        let mut resp = Response::new(body::empty());
        *resp.status_mut() = status.unwrap_or(default_status);
        let map = resp.headers_mut();
        if !body.is_empty() {
            map.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        }
        // Remove every named header first, then add each value: a server that sends two
        // `set-cookie` headers gets both to the client.
        for (name, _) in &headers {
            map.remove(name);
        }
        for (name, value) in headers {
            if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
                continue;
            }
            map.append(name, value);
        }
        *resp.body_mut() = body::full(body);
        resp
    }
}

/// Whether an ext_authz server may remove or set this request header: pseudo headers and `host`
/// identify the request and are left alone, as Envoy does.
pub fn is_protected(name: &str) -> bool {
    name.starts_with(':') || name.eq_ignore_ascii_case("host")
}

impl Allowed {
    /// Applies the request changes to `parts`.
    pub fn apply_to_request(&self, parts: &mut Parts) {
        let headers = &mut parts.headers;
        for (name, value) in &self.headers_to_set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.headers_to_append {
            append_comma(headers, name, value);
        }
        for (name, value) in &self.headers_to_add_if_absent {
            if !headers.contains_key(name) {
                headers.insert(name.clone(), value.clone());
            }
        }
        for (name, value) in &self.headers_to_overwrite_if_exists {
            if headers.contains_key(name) {
                headers.insert(name.clone(), value.clone());
            }
        }
        for name in &self.headers_to_remove {
            headers.remove(name);
        }
        if let Some(path) = &self.rewritten_path {
            let mut uri_parts = std::mem::take(&mut parts.uri).into_parts();
            uri_parts.path_and_query = Some(path.clone());
            // Only the path changes, and it parsed: the URI stays valid.
            parts.uri = Uri::from_parts(uri_parts).unwrap_or_default();
        }
    }

    /// Works out the query rewrite against `uri` (the request as earlier policies left it), so
    /// that one that cannot be applied fails the check instead of letting the request through
    /// unchanged — a `query_parameters_to_remove` may be stripping a credential.
    pub fn plan_query_rewrite(&mut self, uri: &Uri) -> Result<(), InvalidMutation> {
        if self.query_to_set.is_empty() && self.query_to_remove.is_empty() {
            return Ok(());
        }
        self.rewritten_path = Some(rewrite_query(
            uri,
            &self.query_to_set,
            &self.query_to_remove,
        )?);
        Ok(())
    }

    /// Moves the response changes out, to apply once the upstream answers.
    pub fn take_response_headers(&mut self) -> Vec<(HeaderName, HeaderValue, AppendAction)> {
        std::mem::take(&mut self.response_headers)
    }
}

/// Applies response headers an allow asked for, each by its append action.
pub fn apply_response_headers(
    headers: &mut HeaderMap,
    additions: &[(HeaderName, HeaderValue, AppendAction)],
) {
    for (name, value, action) in additions {
        let present = headers.contains_key(name);
        match action {
            AppendAction::AppendIfExistsOrAdd => {
                headers.append(name.clone(), value.clone());
            }
            AppendAction::AddIfAbsent if !present => {
                headers.insert(name.clone(), value.clone());
            }
            AppendAction::OverwriteIfExistsOrAdd => {
                headers.insert(name.clone(), value.clone());
            }
            AppendAction::OverwriteIfExists if present => {
                headers.insert(name.clone(), value.clone());
            }
            AppendAction::AddIfAbsent | AppendAction::OverwriteIfExists => {}
        }
    }
}

/// `a: x` + `a: y` → `a: x,y` (all existing values folded into one), or `a: y` when absent.
fn append_comma(headers: &mut HeaderMap, name: &HeaderName, value: &HeaderValue) {
    let mut joined: Vec<u8> = Vec::new();
    for existing in headers.get_all(name) {
        joined.extend_from_slice(existing.as_bytes());
        joined.push(b',');
    }
    if joined.is_empty() {
        headers.insert(name.clone(), value.clone());
        return;
    }
    joined.extend_from_slice(value.as_bytes());
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(name.clone(), v);
    }
}

/// A change an allow asks for that cannot be made to the request.
#[derive(Debug, thiserror::Error)]
pub enum InvalidMutation {
    /// The query rewrite produced something that is not a valid path and query.
    #[error("query rewrite produced an invalid path {path:?}: {reason}")]
    QueryRewrite {
        /// What the rewrite produced.
        path: String,
        /// Why it does not parse.
        reason: String,
    },
}

/// Whether the raw (percent-encoded) query key `raw` names `key`: equal as written or once
/// decoded, so `%61pi_key` is `api_key`.
fn key_is(raw: &str, key: &str) -> bool {
    raw == key || percent_encoding::percent_decode_str(raw).eq(key.bytes())
}

/// Sets and removes query parameters, keeping the order and encoding of the others.
fn rewrite_query(
    uri: &Uri,
    set: &[(String, String)],
    remove: &[String],
) -> Result<PathAndQuery, InvalidMutation> {
    let path_and_query = crate::request::target(uri);
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let mut params: Vec<(String, Option<String>)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
            None => (p.to_owned(), None),
        })
        .collect();
    for (key, value) in set {
        if let Some(first) = params.iter().position(|(k, _)| key_is(k, key)) {
            params[first] = (key.clone(), Some(value.clone()));
            let mut i = 0;
            params.retain(|(k, _)| {
                i += 1;
                i - 1 == first || !key_is(k, key)
            });
        } else {
            params.push((key.clone(), Some(value.clone())));
        }
    }
    params.retain(|(k, _)| !remove.iter().any(|r| key_is(k, r)));
    let mut new = path.to_owned();
    for (i, (k, v)) in params.iter().enumerate() {
        new.push(if i == 0 { '?' } else { '&' });
        new.push_str(k);
        if let Some(v) = v {
            new.push('=');
            new.push_str(v);
        }
    }
    new.parse()
        .map_err(|e: ::http::uri::InvalidUri| InvalidMutation::QueryRewrite {
            reason: e.to_string(),
            path: new,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str) -> Parts {
        ::http::Request::get(uri).body(()).unwrap().into_parts().0
    }

    #[test]
    fn query_set_replaces_every_value_and_remove_drops() {
        let mut p = parts("/a?x=1&y=2&x=3&z");
        let mut allowed = Allowed {
            query_to_set: vec![("x".into(), "9".into()), ("new".into(), "v".into())],
            query_to_remove: vec!["y".into()],
            ..Allowed::default()
        };
        allowed.plan_query_rewrite(&p.uri).unwrap();
        allowed.apply_to_request(&mut p);
        assert_eq!(p.uri.to_string(), "/a?x=9&z&new=v");
    }

    #[test]
    fn query_keys_are_compared_decoded() {
        let mut p = parts("/a?%61pi_key=secret&keep=1&%74oken=old&api%5Fkey=2");
        let mut allowed = Allowed {
            query_to_set: vec![("token".into(), "new".into())],
            query_to_remove: vec!["api_key".into()],
            ..Allowed::default()
        };
        allowed.plan_query_rewrite(&p.uri).unwrap();
        allowed.apply_to_request(&mut p);
        assert_eq!(p.uri.to_string(), "/a?keep=1&token=new");
    }

    #[test]
    fn an_unparsable_query_rewrite_is_an_error() {
        let p = parts("/a?api_key=secret");
        let mut allowed = Allowed {
            query_to_set: vec![("x".into(), "a b".into())],
            query_to_remove: vec!["api_key".into()],
            ..Allowed::default()
        };
        let err = allowed.plan_query_rewrite(&p.uri).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("query rewrite produced an invalid path \"/a?x=a b\""),
            "{err}"
        );
        assert!(allowed.rewritten_path.is_none());
    }

    #[test]
    fn append_folds_existing_values_with_commas() {
        let mut p = parts("/");
        p.headers.append("a", HeaderValue::from_static("1"));
        p.headers.append("a", HeaderValue::from_static("2"));
        let allowed = Allowed {
            headers_to_append: vec![
                (HeaderName::from_static("a"), HeaderValue::from_static("3")),
                (HeaderName::from_static("b"), HeaderValue::from_static("4")),
            ],
            ..Allowed::default()
        };
        allowed.apply_to_request(&mut p);
        assert_eq!(p.headers["a"], "1,2,3");
        assert_eq!(p.headers["b"], "4");
    }

    #[test]
    fn response_append_actions() {
        let mut h = HeaderMap::new();
        h.insert("present", HeaderValue::from_static("old"));
        let v = HeaderValue::from_static("new");
        let n = |s: &'static str| HeaderName::from_static(s);
        apply_response_headers(
            &mut h,
            &[
                (n("present"), v.clone(), AppendAction::AddIfAbsent),
                (n("absent1"), v.clone(), AppendAction::AddIfAbsent),
                (n("absent2"), v.clone(), AppendAction::OverwriteIfExists),
                (n("absent3"), v.clone(), AppendAction::AppendIfExistsOrAdd),
            ],
        );
        assert_eq!(h["present"], "old");
        assert_eq!(h["absent1"], "new");
        assert!(!h.contains_key("absent2"));
        assert_eq!(h["absent3"], "new");
    }

    #[test]
    fn denied_keeps_repeated_headers() {
        let resp = Denied {
            status: None,
            headers: vec![
                (header::SET_COOKIE, HeaderValue::from_static("a=1")),
                (header::SET_COOKIE, HeaderValue::from_static("b=2")),
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
            ],
            body: Bytes::from_static(b"{}"),
        }
        .into_response(StatusCode::FORBIDDEN);
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert_eq!(resp.headers().get_all(header::SET_COOKIE).iter().count(), 2);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
    }
}
