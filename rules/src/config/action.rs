//! The raw `allow` and `deny` tables: what a decision does to the request and the response.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;

/// What an allow does to the request and response.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAllow {
    /// Headers to set (or append) on the upstream request.
    #[serde(default)]
    pub request_headers: Vec<RawRequestHeader>,
    /// Upstream request headers to remove.
    #[serde(default)]
    pub remove_request_headers: Vec<Spanned<String>>,
    /// Headers to add to the client's response.
    #[serde(default)]
    pub response_headers: Vec<RawResponseHeader>,
    /// Query parameters to set on the upstream request.
    #[serde(default)]
    pub query_set: Vec<RawQueryParam>,
    /// Query parameters to remove from the upstream request.
    #[serde(default)]
    pub query_remove: Vec<Spanned<String>>,
    /// Dynamic metadata for the proxy; string values are templates.
    pub dynamic_metadata: Option<Spanned<toml::Table>>,
}

/// One upstream request header.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRequestHeader {
    /// Header name; lower-cased at load.
    pub name: Spanned<String>,
    /// Value template.
    pub value: Spanned<String>,
    /// `true`: comma-append to an existing header; `false` (default): overwrite or add.
    #[serde(default)]
    pub append: bool,
}

/// One response header.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawResponseHeader {
    /// Header name; lower-cased at load.
    pub name: Spanned<String>,
    /// Value template.
    pub value: Spanned<String>,
    /// How to combine with an existing header; default `append_if_exists_or_add`.
    #[serde(default)]
    pub action: Option<ActionName>,
}

/// Envoy's `HeaderAppendAction`, by config name.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ActionName {
    /// Append to an existing header, or add it.
    AppendIfExistsOrAdd,
    /// Add only when absent.
    AddIfAbsent,
    /// Overwrite an existing header, or add it.
    OverwriteIfExistsOrAdd,
    /// Overwrite only when present.
    OverwriteIfExists,
}

/// One query parameter to set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawQueryParam {
    /// Parameter name.
    pub name: Spanned<String>,
    /// Value template.
    pub value: Spanned<String>,
}

/// What a deny sends back.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDeny {
    /// HTTP status, 100..=599; default 403.
    pub status: Option<Spanned<i64>>,
    /// gRPC code 1..=16 or its name; default 7 (`PERMISSION_DENIED`).
    pub grpc_code: Option<Spanned<RawGrpcCode>>,
    /// Body template; default empty.
    pub body: Option<Spanned<String>>,
    /// Headers on the denied response, in order; repeated names are kept.
    #[serde(default)]
    pub headers: Vec<RawHeaderValue>,
    /// Dynamic metadata for the proxy; string values are templates.
    pub dynamic_metadata: Option<Spanned<toml::Table>>,
}

/// A name and a value template.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaderValue {
    /// Header name; lower-cased at load.
    pub name: Spanned<String>,
    /// Value template.
    pub value: Spanned<String>,
}

/// A gRPC code as written: a number or a name such as `"PERMISSION_DENIED"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawGrpcCode {
    /// A numeric code.
    Number(i64),
    /// A canonical code name.
    Name(String),
}

impl<'de> Deserialize<'de> for RawGrpcCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CodeVisitor;
        impl Visitor<'_> for CodeVisitor {
            type Value = RawGrpcCode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a gRPC code: an integer 1..=16 or a name like \"PERMISSION_DENIED\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(RawGrpcCode::Number(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(RawGrpcCode::Number(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawGrpcCode::Name(v.to_owned()))
            }
        }
        deserializer.deserialize_any(CodeVisitor)
    }
}
