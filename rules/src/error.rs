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
    #[error("status {status} is out of range 200..=599")]
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
    #[error("unknown database `{name}`; {known}")]
    UnknownDatabase { name: String, known: String },
    #[error("database name `{name}` must be letters, digits, `_` or `-`")]
    DatabaseName { name: String },
    #[error("database url must start with `sqlite:` or `postgres://` (or `postgresql://`)")]
    DatabaseUrl,
    #[error("{field} {value} is out of range {range}")]
    OutOfRange {
        field: &'static str,
        value: i64,
        range: &'static str,
    },
    #[error("{what} needs exactly one of {expected}; found {found}")]
    OneOf {
        what: &'static str,
        expected: &'static str,
        found: String,
    },
    #[error("a credential takes at most one of `api_keys`, `bearer`, `jwt`; found {found}")]
    CredentialKinds { found: String },
    #[error(
        "a credential without `api_keys`, `bearer` or `jwt` must be checked by a `[rules.lookup]` with a `{{ credential = ... }}` parameter"
    )]
    UncheckedCredential,
    #[error("`scheme` applies only to a `header` credential")]
    SchemeWithoutHeader,
    #[error("`scheme` must be a single word such as `Bearer`")]
    Scheme,
    #[error(
        "`sha256` entry {index} is not a SHA-256 hex digest (64 hex digits); store the key's hash, not the key"
    )]
    KeyDigest { index: usize },
    #[error("cannot read {what} `{path}`: {reason}")]
    ReadFile {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("key file `{path}` line {line} is not a SHA-256 hex digest (64 hex digits)")]
    KeyFileLine { path: String, line: usize },
    #[error("no keys: give `sha256` digests and/or a `file`")]
    NoKeys,
    #[error("too many keys: {count} (at most {max}); keep large key sets in a database")]
    TooManyKeys { count: usize, max: usize },
    #[error(
        "unknown JWT algorithm `{name}`; supported: HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA"
    )]
    JwtAlgorithm { name: String },
    #[error("algorithm {alg} does not fit {key}")]
    JwtKeyFamily { alg: String, key: &'static str },
    #[error(
        "`public_key_pem` is one key, so `algorithms` must be of one family (RSA, EC or EdDSA)"
    )]
    JwtMixedFamilies,
    #[error("`public_key_pem` is not a {family} public key in PEM form")]
    PemKey { family: &'static str },
    #[error("JWKS file `{path}` is not a JWKS document: {reason}")]
    JwksFile { path: String, reason: String },
    #[error("JWKS file `{path}` has no signature key for the configured algorithms")]
    JwksFileEmpty { path: String },
    #[error("`jwks_url` must be an http:// or https:// URL")]
    JwksUrl,
    #[error("`secret` must not be empty")]
    EmptySecret,
    #[error("unknown claim `{name}` in `require`; known: exp, nbf, iss, aud, sub")]
    RequiredClaim { name: String },
    #[error("`query` must not be empty")]
    EmptySql,
    #[error("`query` is {len} bytes (at most {max})")]
    SqlTooLong { len: usize, max: usize },
    #[error("too many lookup parameters: {count} (at most {max})")]
    TooManyParams { count: usize, max: usize },
    #[error("`query` uses `${index}` but `params` has {count} entries")]
    PlaceholderOutOfRange { index: usize, count: usize },
    #[error("`query` never uses `${index}` (parameter {index} of {count})")]
    PlaceholderUnused { index: usize, count: usize },
    #[error("`credential` parameter is \"raw\" or \"sha256\"")]
    CredentialForm,
    #[error(
        "`sha256 = ...` does not apply to a credential parameter; write `credential = \"sha256\"`"
    )]
    CredentialSha,
    #[error("a `credential` parameter needs a `[rules.credential]` in the same rule")]
    ParamNeedsCredential,
    #[error("a `claim` parameter needs a `jwt` credential in the same rule")]
    ParamNeedsJwt,
    #[error("`on_error` must be \"fail_closed\" or {{ serve_stale_seconds = N }}, not `{name}`")]
    OnError { name: String },
    #[error(
        "`{field}` conditions belong in `[rules.require]`: `when` is checked before the credential and lookup"
    )]
    IdentityInWhen { field: &'static str },
    #[error("`claims` conditions need a `jwt` credential in the same rule")]
    ClaimsWithoutJwt,
    #[error("`db` conditions need a `lookup` in the same rule")]
    DbWithoutLookup,
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
    pub(crate) fn error(&self, offset: usize, message: impl std::fmt::Display) -> ConfigError {
        let (line, column) = self.line_col(offset);
        ConfigError {
            file: self.file.to_owned(),
            line,
            column,
            message: message.to_string(),
        }
    }

    /// An error from the TOML parser or serde: one error at the span toml reports (1:1 if none).
    pub(crate) fn syntax(&self, error: &toml::de::Error) -> ConfigError {
        let offset = error.span().map_or(0, |span: Range<usize>| span.start);
        let message = error.message().trim_end().replace('\n', "; ");
        self.error(offset, message)
    }
}
