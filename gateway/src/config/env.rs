//! `${VAR}` in configured header values: replaced by the environment variable when the config is
//! loaded (a reload reads it again), so a secret such as an API key lives in the environment,
//! not in the file. An unset variable is a load error naming the variable, never its value; a
//! value that came from the environment is marked sensitive and never printed (see
//! [`crate::proxy::route_headers::ConfiguredValue`]).

/// Why a value could not be expanded. The messages name the variable, never a value.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum EnvError {
    /// `${NAME}` where `NAME` is not set.
    #[error("environment variable `{0}` is not set")]
    Unset(String),
    /// `${` without `}`, or a name that is not `[A-Za-z_][A-Za-z0-9_]*`.
    #[error("invalid `${{...}}`: expected `${{NAME}}` with NAME made of letters, digits and `_`")]
    Invalid,
}

/// `text` with every `${NAME}` replaced by the variable's value, and whether any was; `$$`
/// stands for a literal `$`.
pub(super) fn expand(text: &str) -> Result<(String, bool), EnvError> {
    expand_with(text, |name| std::env::var(name).ok())
}

/// [`expand`] with the variables looked up by `lookup` (tests pass their own).
pub(super) fn expand_with(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<(String, bool), EnvError> {
    let mut out = String::with_capacity(text.len());
    let mut used = false;
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail.find('}').ok_or(EnvError::Invalid)?;
            let name = &tail[..end];
            if !is_name(name) {
                return Err(EnvError::Invalid);
            }
            out.push_str(&lookup(name).ok_or_else(|| EnvError::Unset(name.to_owned()))?);
            used = true;
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok((out, used))
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "KEY").then(|| "sk-123".to_owned())
    }

    #[test]
    fn variables_are_replaced_and_dollars_kept() {
        assert_eq!(
            expand_with("Bearer ${KEY}", env),
            Ok(("Bearer sk-123".into(), true))
        );
        assert_eq!(expand_with("plain", env), Ok(("plain".into(), false)));
        assert_eq!(expand_with("$$5 $x", env), Ok(("$5 $x".into(), false)));
        assert_eq!(
            expand_with("${KEY}${KEY}", env),
            Ok(("sk-123sk-123".into(), true))
        );
    }

    #[test]
    fn unset_and_malformed_name_no_value() {
        assert_eq!(
            expand_with("Bearer ${NOPE}", env),
            Err(EnvError::Unset("NOPE".into()))
        );
        assert_eq!(expand_with("${KEY", env), Err(EnvError::Invalid));
        assert_eq!(expand_with("${1X}", env), Err(EnvError::Invalid));
        assert_eq!(expand_with("${}", env), Err(EnvError::Invalid));
    }
}
