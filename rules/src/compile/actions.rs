//! Compiling `allow` / `deny` tables into [`Action`]s.

use std::collections::BTreeMap;

use toml::Spanned;

use super::Compiler;
use crate::action::{Action, AllowAction, DenyAction, MetaValue};
use crate::config::{
    ActionName, RawAllow, RawDeny, RawGrpcCode, RawHeaderValue, RawQueryParam, RawRequestHeader,
    RawResponseHeader,
};
use crate::decision::AppendAction;
use crate::error::Invalid;
use crate::template::Template;

/// gRPC's canonical code names, index = code.
const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

impl Compiler<'_> {
    /// Exactly one of `allow` / `deny` for `owner` (a rule or the default), reported at
    /// `offset` when neither is given and at the later table when both are.
    pub(super) fn decision(
        &mut self,
        owner: &str,
        offset: usize,
        allow: &Option<Spanned<RawAllow>>,
        deny: &Option<Spanned<RawDeny>>,
    ) -> Option<Action> {
        match (allow, deny) {
            (Some(allow), None) => self.allow(allow.get_ref()).map(Action::Allow),
            (None, Some(deny)) => self.deny(deny.get_ref(), 403, 7).map(Action::Deny),
            (Some(allow), Some(deny)) => {
                let later = allow.span().start.max(deny.span().start);
                let owner = owner.to_owned();
                self.fail(later, Invalid::AllowAndDeny { owner });
                None
            }
            (None, None) => {
                let owner = owner.to_owned();
                self.fail(offset, Invalid::NoDecision { owner });
                None
            }
        }
    }

    fn allow(&mut self, raw: &RawAllow) -> Option<AllowAction> {
        let RawAllow {
            request_headers,
            remove_request_headers,
            response_headers,
            query_set,
            query_remove,
            dynamic_metadata,
        } = raw;
        let request_headers: Vec<_> = request_headers
            .iter()
            .map(
                |RawRequestHeader {
                     name,
                     value,
                     append,
                 }| {
                    let name = self.header_name(name, false);
                    let value = self.header_value(value);
                    Some((name?, value?, *append))
                },
            )
            .collect();
        let remove: Vec<_> = remove_request_headers
            .iter()
            .map(|name| self.header_name(name, false))
            .collect();
        let response_headers: Vec<_> = response_headers
            .iter()
            .map(
                |RawResponseHeader {
                     name,
                     value,
                     action,
                 }| {
                    let name = self.header_name(name, false);
                    let value = self.header_value(value);
                    Some((name?, value?, append_action(*action)))
                },
            )
            .collect();
        let query_set: Vec<_> = query_set
            .iter()
            .map(|RawQueryParam { name, value }| {
                let name = self.query_name(name);
                let value = self.header_value(value);
                Some((name?, value?))
            })
            .collect();
        let query_remove: Vec<_> = query_remove.iter().map(|n| self.query_name(n)).collect();
        let metadata = self.metadata(dynamic_metadata.as_ref());
        Some(AllowAction {
            request_headers: request_headers.into_iter().collect::<Option<_>>()?,
            remove_request_headers: remove.into_iter().collect::<Option<_>>()?,
            response_headers: response_headers.into_iter().collect::<Option<_>>()?,
            query_set: query_set.into_iter().collect::<Option<_>>()?,
            query_remove: query_remove.into_iter().collect::<Option<_>>()?,
            metadata: metadata?,
        })
    }

    /// A deny table; `status` and `grpc_code` default to the given values.
    pub(super) fn deny(
        &mut self,
        raw: &RawDeny,
        default_status: u16,
        default_grpc_code: i32,
    ) -> Option<DenyAction> {
        let RawDeny {
            status,
            grpc_code,
            body,
            headers,
            dynamic_metadata,
        } = raw;
        let status = match status {
            None => Some(default_status),
            Some(s) => match u16::try_from(*s.get_ref()) {
                // 1xx is not a final response: a proxy would read it as an error, not a deny.
                Ok(code @ 200..=599) => Some(code),
                _ => {
                    let status = *s.get_ref();
                    self.fail(s.span().start, Invalid::Status { status });
                    None
                }
            },
        };
        let grpc_code = match grpc_code {
            None => Some(default_grpc_code),
            Some(code) => self.grpc_code(code),
        };
        let body = match body {
            None => Some(Template::default()),
            Some(body) => self.template(body),
        };
        let headers: Vec<_> = headers
            .iter()
            .map(|RawHeaderValue { name, value }| {
                let name = self.header_name(name, false);
                let value = self.header_value(value);
                Some((name?, value?))
            })
            .collect();
        let metadata = self.metadata(dynamic_metadata.as_ref());
        Some(DenyAction {
            status: status?,
            grpc_code: grpc_code?,
            headers: headers.into_iter().collect::<Option<_>>()?,
            body: body?,
            metadata: metadata?,
        })
    }

    fn grpc_code(&mut self, raw: &Spanned<RawGrpcCode>) -> Option<i32> {
        let offset = raw.span().start;
        let code = match raw.get_ref() {
            RawGrpcCode::Number(n) => *n,
            RawGrpcCode::Name(name) => {
                let upper = name.to_ascii_uppercase();
                match GRPC_CODES.iter().position(|known| *known == upper) {
                    Some(index) => i64::try_from(index).unwrap_or(-1),
                    None => {
                        let name = name.clone();
                        self.fail(offset, Invalid::GrpcCodeName { name });
                        return None;
                    }
                }
            }
        };
        match i32::try_from(code) {
            Ok(0) => self.fail(offset, Invalid::GrpcCodeOk),
            Ok(code @ 1..=16) => return Some(code),
            _ => self.fail(offset, Invalid::GrpcCodeRange { code }),
        }
        None
    }

    /// A validated, lower-cased header name; `pseudo` admits `:path`-style names (matchers only).
    pub(super) fn header_name(&mut self, raw: &Spanned<String>, pseudo: bool) -> Option<String> {
        let name = raw.get_ref();
        let token = match name.strip_prefix(':') {
            Some(rest) if pseudo => rest,
            _ => name.as_str(),
        };
        let valid = !token.is_empty()
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if valid {
            Some(name.to_ascii_lowercase())
        } else {
            let name = name.clone();
            self.fail(raw.span().start, Invalid::HeaderName { name });
            None
        }
    }

    /// A header or query value template whose literal text has no CR/LF.
    pub(super) fn header_value(&mut self, raw: &Spanned<String>) -> Option<Template> {
        let template = self.template(raw)?;
        if template.literal_has_newline() {
            self.fail(raw.span().start, Invalid::HeaderValueNewline);
            return None;
        }
        Some(template)
    }

    fn query_name(&mut self, raw: &Spanned<String>) -> Option<String> {
        if raw.get_ref().is_empty() {
            self.fail(raw.span().start, Invalid::EmptyQueryName);
            return None;
        }
        Some(raw.get_ref().clone())
    }

    fn metadata(
        &mut self,
        raw: Option<&Spanned<toml::Table>>,
    ) -> Option<BTreeMap<String, MetaValue>> {
        let Some(raw) = raw else {
            return Some(BTreeMap::new());
        };
        let offset = raw.span().start;
        let entries: Vec<_> = raw
            .get_ref()
            .iter()
            .map(|(key, value)| Some((key.clone(), self.meta_value(offset, key, value)?)))
            .collect();
        entries.into_iter().collect()
    }

    /// One metadata value; errors inside it are reported at the table (`offset`), because toml
    /// keeps no positions inside a free-form table.
    fn meta_value(&mut self, offset: usize, key: &str, value: &toml::Value) -> Option<MetaValue> {
        let fixed = |v: serde_json::Value| Some(MetaValue::Fixed(v));
        match value {
            toml::Value::String(text) => match Template::parse_in(text, self.namespaces) {
                Ok(template) => {
                    self.uses_received |= template.uses_received();
                    Some(MetaValue::Text(template))
                }
                Err(fault) => {
                    self.fail(offset, fault.error.into());
                    None
                }
            },
            toml::Value::Integer(n) => fixed((*n).into()),
            toml::Value::Boolean(b) => fixed((*b).into()),
            toml::Value::Datetime(d) => fixed(d.to_string().into()),
            toml::Value::Float(f) => match serde_json::Number::from_f64(*f) {
                Some(n) => fixed(serde_json::Value::Number(n)),
                None => {
                    let key = key.to_owned();
                    self.fail(offset, Invalid::Metadata { key });
                    None
                }
            },
            toml::Value::Array(items) => {
                let items: Vec<_> = items
                    .iter()
                    .map(|v| self.meta_value(offset, key, v))
                    .collect();
                items
                    .into_iter()
                    .collect::<Option<_>>()
                    .map(MetaValue::List)
            }
            toml::Value::Table(table) => {
                let entries: Vec<_> = table
                    .iter()
                    .map(|(k, v)| Some((k.clone(), self.meta_value(offset, k, v)?)))
                    .collect();
                entries
                    .into_iter()
                    .collect::<Option<_>>()
                    .map(MetaValue::Map)
            }
        }
    }
}

fn append_action(name: Option<ActionName>) -> AppendAction {
    match name {
        None | Some(ActionName::AppendIfExistsOrAdd) => AppendAction::AppendIfExistsOrAdd,
        Some(ActionName::AddIfAbsent) => AppendAction::AddIfAbsent,
        Some(ActionName::OverwriteIfExistsOrAdd) => AppendAction::OverwriteIfExistsOrAdd,
        Some(ActionName::OverwriteIfExists) => AppendAction::OverwriteIfExists,
    }
}
