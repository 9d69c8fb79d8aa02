//! Who the caller turned out to be: the verified token's claims and the lookup's row. Filled in
//! while one rule is evaluated and read by that rule's `require` conditions and templates.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::hooks::Row;

/// The verified identity of one request under one rule.
#[derive(Debug, Clone, Default)]
pub(crate) struct Identity {
    /// The verified JWT's claims; `None` without a JWT credential.
    pub claims: Option<Map<String, Value>>,
    /// The first row of the rule's lookup; `None` without a lookup.
    pub row: Option<Arc<Row>>,
}

/// A claim name split at its dots: `realm.roles` reaches `{"realm": {"roles": ...}}`. A claim
/// whose own name contains dots is found too: the whole name is tried first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClaimPath {
    /// The name as written, for traces and as the first key tried.
    pub name: String,
}

impl ClaimPath {
    /// A path for a dotted name.
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
        }
    }

    /// The claim's value, if present.
    pub(crate) fn find<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        if let Some(value) = claims.get(&self.name) {
            return Some(value);
        }
        let mut parts = self.name.split('.');
        let mut value = claims.get(parts.next()?)?;
        for part in parts {
            value = value.as_object()?.get(part)?;
        }
        Some(value)
    }
}

impl Identity {
    /// A claim's value, if there are claims and the claim is present.
    pub(crate) fn claim(&self, path: &ClaimPath) -> Option<&Value> {
        self.claims.as_ref().and_then(|claims| path.find(claims))
    }

    /// A column of the row; NULL (absent) and no row are `None`.
    pub(crate) fn column(&self, name: &str) -> Option<&str> {
        self.row
            .as_ref()
            .and_then(|row| row.get(name))
            .map(String::as_str)
    }
}

/// A claim as text: strings as they are, numbers and booleans printed, arrays of those joined with
/// `,`, `null` empty, objects as compact JSON.
pub(crate) fn claim_text(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(text) => Cow::Borrowed(text),
        Value::Null => Cow::Borrowed(""),
        Value::Bool(b) => Cow::Owned(b.to_string()),
        Value::Number(n) => Cow::Owned(n.to_string()),
        Value::Array(items) => {
            let texts: Vec<Cow<'_, str>> = items.iter().map(claim_text).collect();
            Cow::Owned(texts.join(","))
        }
        Value::Object(_) => Cow::Owned(value.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{ClaimPath, claim_text};

    #[test]
    fn dotted_names_reach_into_objects_and_literal_dots_win() {
        let claims = json!({"realm": {"roles": ["a", "b"]}, "a.b": 1, "a": {"b": 2}});
        let claims = claims.as_object().unwrap();
        assert_eq!(
            ClaimPath::new("realm.roles").find(claims),
            Some(&json!(["a", "b"]))
        );
        assert_eq!(ClaimPath::new("a.b").find(claims), Some(&json!(1)));
        assert_eq!(ClaimPath::new("realm.nope").find(claims), None);
        assert_eq!(ClaimPath::new("realm.roles.x").find(claims), None);
    }

    #[test]
    fn claims_render_as_text() {
        assert_eq!(claim_text(&json!("x")), "x");
        assert_eq!(claim_text(&json!(42)), "42");
        assert_eq!(claim_text(&json!(true)), "true");
        assert_eq!(claim_text(&json!(null)), "");
        assert_eq!(claim_text(&json!(["a", 1, false])), "a,1,false");
        assert_eq!(claim_text(&json!({"k": "v"})), r#"{"k":"v"}"#);
    }
}
