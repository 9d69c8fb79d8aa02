//! The input document OPA-Envoy builds for a policy (`envoyauth/request.go`), field for field:
//! `attributes`, `parsed_path`, `parsed_query`, `parsed_body`, `truncated_body`, `version`; and
//! our own extras under `input.authz_server`, never mixed into OPA-Envoy's keys.
//! `docs/rules.md` ("Coming from OPA-Envoy") records every decision taken here.

use serde_json::{Map, Value as Json, json};

use crate::identity::Identity;
use crate::request::{OpaAttributes, Peer, Request};

/// Why no input document could be built: OPA-Envoy answers these with a `400` deny whose body
/// is the reason (its `RequestParseErr`), and so do we.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InputError {
    /// The path is not a URL Go's `url.Parse` accepts.
    #[error("request path is not a valid URL: {0}")]
    Path(&'static str),
    /// A JSON body's `content-length` is not an integer.
    #[error("content-length is not an integer")]
    ContentLength,
    /// A body declared `application/json` is not JSON.
    #[error("request body is not valid JSON: {0}")]
    Body(String),
}

/// The whole input document for `request` (`raw`: as received; `canonical`: after step 0).
pub(crate) fn document(
    raw: &Request,
    canonical: &Request,
    identity: Option<&Identity>,
) -> Result<Json, InputError> {
    let (attributes, version) = match &raw.opa_attributes {
        Some(rendered) => (rendered.attributes.clone(), version(rendered)),
        None => (attributes(raw), version(&OpaAttributes::V3_SHAPE)),
    };
    let (parsed_path, parsed_query) = parsed_path_and_query(&raw.path)?;
    let (parsed_body, truncated_body) = parsed_body(raw)?;
    let mut extras = Map::new();
    extras.insert("transport".into(), raw.transport.as_str().into());
    extras.insert("path".into(), canonical.path.clone().into());
    extras.insert("host".into(), canonical.host.clone().into());
    if let Some(identity) = identity {
        if let Some(claims) = &identity.claims {
            extras.insert("claims".into(), Json::Object(claims.clone()));
        }
        if let Some(row) = &identity.row {
            extras.insert("db".into(), row_json(row));
        }
    }
    Ok(json!({
        "attributes": attributes,
        "parsed_path": parsed_path,
        "parsed_query": parsed_query,
        "parsed_body": parsed_body,
        "truncated_body": truncated_body,
        "version": version,
        "authz_server": extras,
    }))
}

fn version(rendered: &OpaAttributes) -> Json {
    json!({ "ext_authz": rendered.ext_authz, "encoding": rendered.encoding })
}

fn row_json(row: &crate::hooks::Row) -> Json {
    Json::Object(
        row.iter()
            .map(|(column, value)| (column.clone(), Json::String(value.clone())))
            .collect(),
    )
}

/// `input.attributes` built from the neutral view, in the protojson shape OPA-Envoy emits for
/// v3 (camelCase names, empty fields left out). Used for HTTP mode, which OPA-Envoy does not
/// serve, and for requests no transport rendered (tests, custom authorizers).
pub(crate) fn attributes(request: &Request) -> Json {
    let mut http = Map::new();
    let mut put = |key: &str, value: &str| {
        if !value.is_empty() {
            http.insert(key.to_owned(), value.into());
        }
    };
    put("method", &request.method);
    put("path", &request.path);
    put("host", &request.host);
    put("scheme", &request.scheme);
    put("protocol", &request.protocol);
    put("body", &request.body);
    if !request.headers.is_empty() {
        let headers: Map<String, Json> = request
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), value.clone().into()))
            .collect();
        http.insert("headers".into(), Json::Object(headers));
    }
    let mut attributes = Map::new();
    if let Some(source) = peer(&request.source) {
        attributes.insert("source".into(), source);
    }
    if let Some(destination) = peer(&request.destination) {
        attributes.insert("destination".into(), destination);
    }
    attributes.insert("request".into(), json!({ "http": http }));
    if !request.context_extensions.is_empty() {
        let extensions: Map<String, Json> = request
            .context_extensions
            .iter()
            .map(|(key, value)| (key.clone(), value.clone().into()))
            .collect();
        attributes.insert("contextExtensions".into(), Json::Object(extensions));
    }
    Json::Object(attributes)
}

fn peer(peer: &Peer) -> Option<Json> {
    let mut out = Map::new();
    if let Some(ip) = peer.ip {
        let mut socket = Map::new();
        socket.insert("address".into(), ip.to_string().into());
        if peer.port != 0 {
            socket.insert("portValue".into(), peer.port.into());
        }
        out.insert("address".into(), json!({ "socketAddress": socket }));
    }
    if !peer.principal.is_empty() {
        out.insert("principal".into(), peer.principal.clone().into());
    }
    (!out.is_empty()).then_some(Json::Object(out))
}

/// `parsed_path` and `parsed_query` as OPA-Envoy computes them with Go's `url.Parse`: the path
/// percent-decoded, leading slashes trimmed, split on `/` (so `/` gives `[""]`); the query as
/// `url.Query()` reads it: `&`-separated pairs, `+` as space, each name to every value in
/// order, pairs Go refuses (a bad escape, a `;`) dropped.
pub(crate) fn parsed_path_and_query(path: &str) -> Result<(Json, Json), InputError> {
    if path.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(InputError::Path("invalid control character in URL"));
    }
    let without_fragment = path.split_once('#').map_or(path, |(before, _)| before);
    let (mut path_part, query) = match without_fragment.split_once('?') {
        Some((path_part, query)) => (path_part, query),
        None => (without_fragment, ""),
    };
    // `//host/path` is a network-path reference to Go: the authority is not part of the path.
    if let Some(rest) = path_part.strip_prefix("//") {
        path_part = rest.find('/').map_or("", |slash| &rest[slash..]);
    }
    let decoded = unescape(path_part, false).ok_or(InputError::Path("invalid URL escape"))?;
    let segments: Vec<Json> = decoded
        .trim_start_matches('/')
        .split('/')
        .map(|segment| Json::String(segment.to_owned()))
        .collect();
    let mut parsed_query: Map<String, Json> = Map::new();
    for pair in query.split('&') {
        if pair.is_empty() || pair.contains(';') {
            continue;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (Some(key), Some(value)) = (unescape(key, true), unescape(value, true)) else {
            continue;
        };
        let values = parsed_query
            .entry(key)
            .or_insert_with(|| Json::Array(Vec::new()));
        if let Json::Array(values) = values {
            values.push(Json::String(value));
        }
    }
    Ok((Json::Array(segments), Json::Object(parsed_query)))
}

/// Go's `url.PathUnescape` / `url.QueryUnescape` (`plus_is_space`): `None` on a bad escape.
/// Bytes that do not form UTF-8 are replaced, as the JSON document cannot hold them.
fn unescape(text: &str, plus_is_space: bool) -> Option<String> {
    if !text.contains(['%', '+']) {
        return Some(text.to_owned());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(byte);
                i += 1;
            }
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// `parsed_body` and `truncated_body`: a body is parsed only when `content-type` contains
/// `application/json`; an empty one is `null`; one shorter than `content-length` is `null` and
/// truncated. Anything else (gRPC bodies included: we load no descriptor sets) is `null`.
pub(crate) fn parsed_body(request: &Request) -> Result<(Json, bool), InputError> {
    let is_json = request
        .header("content-type")
        .is_some_and(|value| value.contains("application/json"));
    if !is_json || request.body.is_empty() {
        return Ok((Json::Null, false));
    }
    if let Some(length) = request.header("content-length") {
        let length: i64 = length
            .trim()
            .parse()
            .map_err(|_| InputError::ContentLength)?;
        if length != -1 && length > request.body.len() as i64 {
            return Ok((Json::Null, true));
        }
    }
    let body: Json =
        serde_json::from_str(&request.body).map_err(|error| InputError::Body(error.to_string()))?;
    Ok((body, false))
}
