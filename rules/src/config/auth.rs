//! The raw model of token checks and database lookups: `[databases.<name>]`, `[rules.credential]`,
//! `[rules.lookup]` and the identity conditions (`claims`, `db`) of `[rules.require]`.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use toml::Spanned;

use super::action::{RawDeny, RawGrpcCode, RawHeaderValue};
use super::list::OneOrMany;

/// One `[databases.<name>]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDatabase {
    /// `sqlite://path` or `postgres://user@host:port/db`, kept as written; the server resolves it.
    pub url: Spanned<String>,
    /// Connections in the pool; default 8.
    pub pool_size: Option<Spanned<i64>>,
}

/// A rule's `[rules.credential]`: where the credential is and how it is verified.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCredential {
    /// Where the credential is read from.
    pub from: Spanned<RawSource>,
    /// Static API keys, as SHA-256 hashes.
    pub api_keys: Option<Spanned<RawKeyList>>,
    /// Static opaque bearer tokens, as SHA-256 hashes (an alias of `api_keys` with `Bearer`
    /// challenges).
    pub bearer: Option<Spanned<RawKeyList>>,
    /// A JSON Web Token verified with a configured key.
    pub jwt: Option<Spanned<RawJwt>>,
    /// The deny sent when the credential is missing or invalid; default 401.
    pub on_failure: Option<Spanned<RawOnFailure>>,
}

/// Where a credential is read from: exactly one of `header`, `query`, `cookie`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSource {
    /// A request header (case-insensitive name).
    pub header: Option<Spanned<String>>,
    /// With `header`: an authentication scheme such as `Bearer` that must prefix the value.
    pub scheme: Option<Spanned<String>>,
    /// A query parameter of the request path (percent-decoded).
    pub query: Option<Spanned<String>>,
    /// A cookie of the `cookie` header.
    pub cookie: Option<Spanned<String>>,
}

/// Static keys: SHA-256 hex digests, inline and/or one per line in a file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKeyList {
    /// Hex SHA-256 digests of the accepted keys.
    #[serde(default)]
    pub sha256: Vec<Spanned<String>>,
    /// A file (relative to the policy file's directory) with one hex digest per line; `#`
    /// starts a comment.
    pub file: Option<Spanned<String>>,
}

/// JWT verification settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJwt {
    /// Accepted `alg` values; the token's own `alg` must be one of these.
    pub algorithms: Spanned<Vec<Spanned<String>>>,
    /// HMAC shared secret (HS256/384/512).
    pub secret: Option<Spanned<String>>,
    /// PEM public key (RSA, EC or Ed25519).
    pub public_key_pem: Option<Spanned<String>>,
    /// A JWKS document on disk, read at load (relative to the policy file's directory).
    pub jwks_file: Option<Spanned<String>>,
    /// A JWKS document fetched by the server's JWKS hook.
    pub jwks_url: Option<Spanned<String>>,
    /// Accepted issuers (`iss`); any when absent.
    pub issuer: Option<Spanned<OneOrMany>>,
    /// Accepted audiences (`aud`); any when absent.
    pub audience: Option<Spanned<OneOrMany>>,
    /// Clock skew tolerated for `exp` and `nbf`; default 60.
    pub leeway_seconds: Option<Spanned<i64>>,
    /// Claims that must be present; default `["exp"]`.
    pub require: Option<Spanned<Vec<Spanned<String>>>>,
}

/// A deny for a missing or invalid credential: a `deny` table plus a `www_authenticate` shortcut.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOnFailure {
    /// HTTP status; default 401.
    pub status: Option<Spanned<i64>>,
    /// gRPC code; default 16 (`UNAUTHENTICATED`).
    pub grpc_code: Option<Spanned<RawGrpcCode>>,
    /// Body template; default empty.
    pub body: Option<Spanned<String>>,
    /// More headers on the denied response.
    #[serde(default)]
    pub headers: Vec<RawHeaderValue>,
    /// Dynamic metadata; string values are templates.
    pub dynamic_metadata: Option<Spanned<toml::Table>>,
    /// The `www-authenticate` challenge; default `Bearer` (jwt, bearer) or `ApiKey` (api_keys);
    /// `""` sends none.
    pub www_authenticate: Option<Spanned<String>>,
}

/// A rule's `[rules.lookup]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLookup {
    /// A name from `[databases]`.
    pub database: Spanned<String>,
    /// The SQL, with `$1`, `$2`, ... placeholders.
    pub query: Spanned<String>,
    /// The parameters, in placeholder order.
    #[serde(default)]
    pub params: Vec<Spanned<RawParam>>,
    /// Query timeout; default 200.
    pub timeout_ms: Option<Spanned<i64>>,
    /// How long a found row is cached; default 30, 0 disables.
    pub cache_ttl_seconds: Option<Spanned<i64>>,
    /// How long "no row" is cached; default 5.
    pub negative_ttl_seconds: Option<Spanned<i64>>,
    /// `"fail_closed"` (default) or `{ serve_stale_seconds = N }`.
    pub on_error: Option<Spanned<RawOnError>>,
    /// The deny when the query finds no row; default 403.
    pub on_missing: Option<Spanned<RawDeny>>,
    /// The deny when the database fails; default 503 / `UNAVAILABLE`.
    pub on_db_error: Option<Spanned<RawDeny>>,
}

/// One query parameter: exactly one source, optionally hashed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawParam {
    /// The rule's verified credential, `"raw"` or `"sha256"`.
    pub credential: Option<Spanned<String>>,
    /// A request header's value.
    pub header: Option<Spanned<String>>,
    /// A claim of the verified JWT (dotted names reach into objects).
    pub claim: Option<Spanned<String>>,
    /// A 1-based segment of the path without its query.
    pub path_segment: Option<Spanned<i64>>,
    /// Bind the hex SHA-256 of the value instead of the value.
    pub sha256: Option<bool>,
}

/// What a lookup does when its database fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawOnError {
    /// A name; only `fail_closed` is valid.
    Name(String),
    /// `{ serve_stale_seconds = N }`.
    ServeStale(i64),
}

impl<'de> Deserialize<'de> for RawOnError {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OnErrorVisitor;
        impl<'de> Visitor<'de> for OnErrorVisitor {
            type Value = RawOnError;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"fail_closed\" or { serve_stale_seconds = N }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawOnError::Name(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut seconds = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "serve_stale_seconds" && seconds.is_none() {
                        seconds = Some(map.next_value::<i64>()?);
                    } else {
                        return Err(de::Error::unknown_field(&key, &["serve_stale_seconds"]));
                    }
                }
                seconds
                    .map(RawOnError::ServeStale)
                    .ok_or_else(|| de::Error::missing_field("serve_stale_seconds"))
            }
        }
        deserializer.deserialize_any(OnErrorVisitor)
    }
}

/// A condition on a JWT claim: a name plus exactly one operation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClaimMatch {
    /// The claim's name; dots reach into nested objects (`realm.roles`).
    pub name: Spanned<String>,
    /// The claim, as text, equals this.
    pub exact: Option<Spanned<String>>,
    /// Alias of `exact`.
    pub equals: Option<Spanned<String>>,
    /// The claim, as text, is one of these.
    pub one_of: Option<Spanned<Vec<String>>>,
    /// An array claim has this element, or a string claim has it among its space-separated
    /// values (OAuth `scope`). Never a substring.
    pub contains: Option<Spanned<String>>,
    /// A string claim (or an element of an array claim) contains this text anywhere.
    pub substring: Option<Spanned<String>>,
    /// The claim, as text, matches this regex (anchored).
    pub regex: Option<Spanned<String>>,
    /// `true`: the claim must be present; `false`: absent.
    pub present: Option<bool>,
}

/// A condition on a column of the lookup's row.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDbMatch {
    /// The column name, as the query returns it.
    pub column: Spanned<String>,
    /// The value equals this.
    pub exact: Option<Spanned<String>>,
    /// The value starts with this.
    pub prefix: Option<Spanned<String>>,
    /// The value ends with this.
    pub suffix: Option<Spanned<String>>,
    /// The value contains this.
    pub contains: Option<Spanned<String>>,
    /// The whole value matches this regex.
    pub regex: Option<Spanned<String>>,
    /// `true`: the column must be non-NULL; `false`: NULL or missing.
    pub present: Option<bool>,
    /// `true`: the column must be NULL or missing.
    pub absent: Option<bool>,
    /// Compare ASCII letters case-insensitively.
    #[serde(default)]
    pub ignore_case: bool,
}
