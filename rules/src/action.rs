//! Compiled actions: what an allow or a deny renders into a [`Decision`] for one request.

use std::collections::BTreeMap;

use crate::decision::{
    Allow, AppendAction, Decision, Deny, Metadata, RequestHeader, ResponseHeader,
};
use crate::template::{Scope, Template};

/// What a matching rule (or the default) does.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    /// Allow with mutations.
    Allow(AllowAction),
    /// Deny with a response.
    Deny(DenyAction),
}

/// A compiled `allow` table. Header names are validated and lower-case.
#[derive(Debug, Clone, Default)]
pub(crate) struct AllowAction {
    /// `(name, value, append)` for the upstream request.
    pub request_headers: Vec<(String, Template, bool)>,
    /// Upstream request headers to remove.
    pub remove_request_headers: Vec<String>,
    /// `(name, value, action)` for the client's response.
    pub response_headers: Vec<(String, Template, AppendAction)>,
    /// Query parameters to set.
    pub query_set: Vec<(String, Template)>,
    /// Query parameters to remove.
    pub query_remove: Vec<String>,
    /// Dynamic metadata, keyed at the top level.
    pub metadata: BTreeMap<String, MetaValue>,
}

/// A compiled `deny` table.
#[derive(Debug, Clone)]
pub(crate) struct DenyAction {
    /// HTTP status, 100..=599.
    pub status: u16,
    /// gRPC code, 1..=16.
    pub grpc_code: i32,
    /// Headers in order; repeated names kept.
    pub headers: Vec<(String, Template)>,
    /// Body template.
    pub body: Template,
    /// Dynamic metadata, keyed at the top level.
    pub metadata: BTreeMap<String, MetaValue>,
}

/// A dynamic-metadata value: strings are templates, everything else is fixed.
#[derive(Debug, Clone)]
pub(crate) enum MetaValue {
    /// A string template.
    Text(Template),
    /// A number, boolean or date, as JSON.
    Fixed(serde_json::Value),
    /// An array.
    List(Vec<MetaValue>),
    /// A table.
    Map(BTreeMap<String, MetaValue>),
}

impl MetaValue {
    fn render(&self, scope: &Scope<'_>) -> serde_json::Value {
        match self {
            MetaValue::Text(template) => serde_json::Value::String(template.render(scope)),
            MetaValue::Fixed(value) => value.clone(),
            MetaValue::List(items) => items.iter().map(|item| item.render(scope)).collect(),
            MetaValue::Map(map) => serde_json::Value::Object(
                map.iter()
                    .map(|(key, value)| (key.clone(), value.render(scope)))
                    .collect(),
            ),
        }
    }
}

fn render_metadata(metadata: &BTreeMap<String, MetaValue>, scope: &Scope<'_>) -> Metadata {
    metadata
        .iter()
        .map(|(key, value)| (key.clone(), value.render(scope)))
        .collect()
}

impl Action {
    /// Renders the decision for one request.
    pub(crate) fn render(&self, scope: &Scope<'_>) -> Decision {
        match self {
            Action::Allow(allow) => Decision::Allow(allow.render(scope)),
            Action::Deny(deny) => Decision::Deny(deny.render_deny(scope)),
        }
    }
}

impl AllowAction {
    fn render(&self, scope: &Scope<'_>) -> Allow {
        Allow {
            request_headers: self
                .request_headers
                .iter()
                .map(|(name, value, append)| RequestHeader {
                    name: name.clone(),
                    value: value.render_header(scope),
                    append: *append,
                })
                .collect(),
            headers_to_remove: self.remove_request_headers.clone(),
            response_headers: self
                .response_headers
                .iter()
                .map(|(name, value, action)| ResponseHeader {
                    name: name.clone(),
                    value: value.render_header(scope),
                    action: *action,
                })
                .collect(),
            query_parameters_to_set: self
                .query_set
                .iter()
                .map(|(name, value)| (name.clone(), query_value(&value.render_header(scope))))
                .collect(),
            query_parameters_to_remove: self.query_remove.clone(),
            dynamic_metadata: render_metadata(&self.metadata, scope),
        }
    }
}

/// A rendered query value made safe to splice into a query string: proxies insert
/// `query_parameters_to_set` values as they are, so a value taken from a header or a claim
/// (`bob&role=admin`) must not be able to add parameters or end the query.
fn query_value(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => encoded.push_str("%26"),
            '#' => encoded.push_str("%23"),
            '+' => encoded.push_str("%2B"),
            ' ' => encoded.push_str("%20"),
            _ => encoded.push(c),
        }
    }
    encoded
}

impl DenyAction {
    /// Renders the deny for one request.
    pub(crate) fn render_deny(&self, scope: &Scope<'_>) -> Deny {
        Deny {
            http_status: self.status,
            grpc_code: self.grpc_code,
            headers: self
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), value.render_header(scope)))
                .collect(),
            body: self.body.render(scope),
            dynamic_metadata: render_metadata(&self.metadata, scope),
        }
    }
}

#[cfg(test)]
mod tests;
