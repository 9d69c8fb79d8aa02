//! Config errors: every problem names `file:line:column`, and loading reports all of them at once.

use std::fmt;
use std::ops::Range;

/// One problem in a policy file, at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ConfigError {
    /// The file name the caller passed to [`crate::load`].
    pub file: String,
    /// 1-based line of the offending value.
    pub line: usize,
    /// 1-based column (in characters) of the offending value.
    pub column: usize,
    /// What is wrong and, where it helps, what would be right.
    pub message: String,
}

/// Every problem found in a policy file, in document order; displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// The semantic facts that make a syntactically valid policy unusable. Each becomes the message
/// of one [`ConfigError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Invalid {
    #[error(
        "missing `[default]` table: say what happens when no rule matches (`allow = {{}}` or `deny = {{ ... }}`)"
    )]
    MissingDefault,
    #[error("{owner} has both `allow` and `deny`; give exactly one")]
    AllowAndDeny { owner: String },
    #[error("{owner} needs an `allow` or a `deny` table")]
    NoDecision { owner: String },
    #[error("rule name must not be empty")]
    EmptyRuleName,
    #[error("rule name `default` is reserved for the `[default]` decision")]
    ReservedRuleName,
    #[error("duplicate rule name `{name}` (first defined at line {first_line})")]
    DuplicateRule { name: String, first_line: usize },
    #[error("too many rules: {count} (at most {max})")]
    TooManyRules { count: usize, max: usize },
    #[error("conditions nested deeper than {max} levels of `all`/`any`/`not`")]
    TooDeep { max: usize },
    #[error("{what} needs exactly one of {expected}; found {found}")]
    MatcherOps {
        what: &'static str,
        expected: &'static str,
        found: String,
    },
    #[error("`{field}` is an empty list, so the rule could never match")]
    EmptyList { field: &'static str },
    #[error("invalid regex `{pattern}`: {reason}")]
    Regex { pattern: String, reason: String },
    #[error(
        "invalid CIDR `{value}`: expected an IP address or address/prefix such as `10.0.0.0/8`"
    )]
    Cidr { value: String },
    #[error(
        "invalid header name `{name}`: use letters, digits and !#$%&'*+-.^_`|~ only (pseudo-headers like `:path` only in matchers)"
    )]
    HeaderName { name: String },
    #[error("header value must not contain CR or LF")]
    HeaderValueNewline,
    #[error("query parameter name must not be empty")]
    EmptyQueryName,
    #[error("status {status} is out of range 100..=599")]
    Status { status: i64 },
    #[error("grpc_code 0 (OK) is not a denial; use 1..=16, e.g. 7 or \"PERMISSION_DENIED\"")]
    GrpcCodeOk,
    #[error("grpc_code {code} is out of range 1..=16")]
    GrpcCodeRange { code: i64 },
    #[error(
        "unknown grpc_code name `{name}`; expected e.g. \"PERMISSION_DENIED\" or \"UNAUTHENTICATED\""
    )]
    GrpcCodeName { name: String },
    #[error("dynamic_metadata value `{key}` cannot be represented in JSON (NaN or infinity)")]
    Metadata { key: String },
    #[error("{0}")]
    Template(#[from] crate::template::TemplateError),
}

/// Turns byte offsets into `file:line:column` errors.
pub(crate) struct Locator<'a> {
    file: &'a str,
    text: &'a str,
}

impl<'a> Locator<'a> {
    /// A locator over one document.
    pub(crate) fn new(file: &'a str, text: &'a str) -> Self {
        Self { file, text }
    }

    /// The document being located in.
    pub(crate) fn text(&self) -> &'a str {
        self.text
    }

    /// 1-based line and column (in characters) of a byte offset; offsets past the end or inside a
    /// character clamp to the nearest earlier character boundary.
    pub(crate) fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = self.text.get(..offset).unwrap_or_default();
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        (line, column)
    }

    /// An error at a byte offset.
    pub(crate) fn error(&self, offset: usize, message: impl Into<String>) -> ConfigError {
        let (line, column) = self.line_col(offset);
        ConfigError {
            file: self.file.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }

    /// An error from the TOML parser or serde: one error at the span toml reports (1:1 if none).
    pub(crate) fn syntax(&self, error: &toml::de::Error) -> ConfigError {
        let offset = error.span().map_or(0, |span: Range<usize>| span.start);
        let message = error.message().trim_end().replace('\n', "; ");
        self.error(offset, message)
    }
}
