//! Value templates: literal text with `{{ variable }}` or `{{ variable | filter args }}` tags,
//! parsed once at load into parts so the request path only copies strings.

use std::borrow::Cow;

use crate::identity::{ClaimPath, Identity, claim_text};
use crate::request::Request;

/// A rendered template never exceeds this many bytes; the rest is cut off.
pub const MAX_RENDERED_BYTES: usize = 64 * 1024;

/// A template compiled into literal and variable parts; the default renders as "".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Value {
        variable: Variable,
        filters: Vec<Filter>,
    },
}

/// What a `{{ ... }}` tag can refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Variable {
    /// `request.method`
    Method,
    /// `request.path` (with the query string)
    Path,
    /// `request.host`
    Host,
    /// `request.scheme`
    Scheme,
    /// `request.protocol`
    Protocol,
    /// `request.body`
    Body,
    /// `request.headers.<name>`, name lower-cased; empty when absent.
    Header(String),
    /// `source.address`: the client IP, empty when unknown.
    SourceAddress,
    /// `source.principal`
    SourcePrincipal,
    /// `destination.address`: the proxy-side IP, empty when unknown.
    DestinationAddress,
    /// `context.<name>`: a context extension, empty when absent.
    Context(String),
    /// `rule.name`: the deciding rule, or `default`.
    RuleName,
    /// `transport`: `grpc` or `http`.
    Transport,
    /// `received`: the transport's one-line dump of the request.
    Received,
    /// `claims.<name>`: a claim of the rule's verified JWT, as text; empty when absent.
    Claim(ClaimPath),
    /// `db.<column>`: a column of the rule's lookup row; empty when NULL.
    Db(String),
}

/// Which identity variables a template may use where it is written: `claims.*` only in rules
/// with a JWT credential, `db.*` only in rules with a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Namespaces {
    /// `claims.<name>` is available.
    pub claims: bool,
    /// `db.<column>` is available.
    pub db: bool,
}

impl Namespaces {
    /// Only request variables (the `[default]`, credential failures).
    pub(crate) const REQUEST: Self = Self {
        claims: false,
        db: false,
    };
}

/// A transformation applied to a variable's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Filter {
    /// `cap N "REPLACEMENT"`: a value longer than N bytes is replaced whole.
    Cap { max: usize, replacement: String },
}

/// Why a template failed to compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TemplateError {
    #[error("unclosed `{{{{` in template (no matching `}}}}`)")]
    Unclosed,
    #[error("empty `{{{{ }}}}` in template")]
    Empty,
    #[error(
        "unknown template variable `{name}`; known: request.method, request.path, request.host, request.scheme, request.protocol, request.body, request.headers.<name>, source.address, source.principal, destination.address, context.<name>, rule.name, transport, received, claims.<name>, db.<column>"
    )]
    UnknownVariable { name: String },
    #[error(
        "template variable `{name}` needs a `jwt` credential in the same rule (claims exist only after a token is verified)"
    )]
    ClaimsWithoutJwt { name: String },
    #[error(
        "template variable `{name}` needs a `lookup` in the same rule (and is not available in `on_missing`/`on_db_error`)"
    )]
    DbWithoutLookup { name: String },
    #[error("unknown template filter `{name}`; known: cap")]
    UnknownFilter { name: String },
    #[error(
        "filter `cap` takes a byte count and a quoted replacement, e.g. `cap 60000 \"<too-long>\"`"
    )]
    CapUsage,
    #[error("unterminated quoted string in template tag")]
    UnterminatedQuote,
}

/// A template error and the byte index in the template text where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TemplateFault {
    /// Byte index into the template text.
    pub at: usize,
    /// What is wrong.
    pub error: TemplateError,
}

/// What a template may read while rendering.
pub(crate) struct Scope<'a> {
    /// The request under check.
    pub request: &'a Request,
    /// The deciding rule's name, or `default`.
    pub rule: &'a str,
    /// The rule's verified identity (claims, row), if it has a credential or lookup.
    pub identity: Option<&'a Identity>,
}

impl Template {
    /// Compiles template text with every variable available (tests, tools).
    #[cfg(test)]
    pub(crate) fn parse(text: &str) -> Result<Self, TemplateFault> {
        Self::parse_in(
            text,
            Namespaces {
                claims: true,
                db: true,
            },
        )
    }

    /// Compiles template text where only `namespaces` of the identity variables exist; errors
    /// carry the byte index of the offending tag.
    pub(crate) fn parse_in(text: &str, namespaces: Namespaces) -> Result<Self, TemplateFault> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut consumed = 0;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let tag_start = consumed + open;
            let inner_and_rest = &rest[open + 2..];
            let close = find_close(inner_and_rest).ok_or(TemplateFault {
                at: tag_start,
                error: TemplateError::Unclosed,
            })?;
            let (variable, filters) =
                parse_tag(&inner_and_rest[..close], namespaces).map_err(|error| TemplateFault {
                    at: tag_start,
                    error,
                })?;
            parts.push(Part::Value { variable, filters });
            let advance = open + 2 + close + 2;
            rest = &rest[advance..];
            consumed += advance;
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// A template that renders `text` as is.
    pub(crate) fn literal(text: &str) -> Self {
        Self {
            parts: vec![Part::Literal(text.to_owned())],
        }
    }

    /// Whether any tag reads `received`.
    pub(crate) fn uses_received(&self) -> bool {
        self.parts.iter().any(|part| {
            matches!(
                part,
                Part::Value {
                    variable: Variable::Received,
                    ..
                }
            )
        })
    }

    /// Whether the literal text contains CR or LF (not allowed in header values).
    pub(crate) fn literal_has_newline(&self) -> bool {
        self.parts
            .iter()
            .any(|part| matches!(part, Part::Literal(text) if text.contains(['\r', '\n'])))
    }

    /// Renders as free text (a body, metadata), capped at [`MAX_RENDERED_BYTES`].
    pub(crate) fn render(&self, scope: &Scope<'_>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            let piece = match part {
                Part::Literal(text) => Cow::Borrowed(text.as_str()),
                Part::Value { variable, filters } => filters
                    .iter()
                    .fold(variable.value(scope), |value, filter| filter.apply(value)),
            };
            let room = MAX_RENDERED_BYTES.saturating_sub(out.len());
            if piece.len() <= room {
                out.push_str(&piece);
            } else {
                out.push_str(truncate(&piece, room));
                break;
            }
        }
        out
    }

    /// Renders a header (or query) value: as [`Template::render`], with every control character
    /// (CR, LF, tab, ...) replaced by a space so a request value can't split or forge a header.
    pub(crate) fn render_header(&self, scope: &Scope<'_>) -> String {
        let out = self.render(scope);
        // Every control character's UTF-8 has a byte below 0x20, 0x7F, or 0xC2 (C1 controls,
        // U+0080..U+009F): a byte scan rules most values out before the character scan.
        // Folded without an early exit, so the scan is vectorised.
        let suspect = out.bytes().fold(false, |seen, b| {
            seen | (b < 0x20) | (b == 0x7F) | (b == 0xC2)
        });
        if suspect && out.chars().any(char::is_control) {
            out.chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect()
        } else {
            out
        }
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

/// The byte index of the `}}` closing a tag, skipping quoted strings.
fn find_close(text: &str) -> Option<usize> {
    let mut quote = None;
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match quote {
            Some(q) if b == q => quote = None,
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if b == b'}' && bytes.get(i + 1) == Some(&b'}') => return Some(i),
            // Inside a quoted string, or an ordinary byte outside one.
            Some(_) | None => {}
        }
    }
    None
}

#[derive(Debug, PartialEq, Eq)]
enum Token<'a> {
    Word(&'a str),
    Quoted(&'a str),
    Pipe,
}

/// Splits a tag's inside into words, quoted strings and pipes.
fn tokenize(tag: &str) -> Result<Vec<Token<'_>>, TemplateError> {
    let mut tokens = Vec::new();
    let mut rest = tag.trim_start();
    while let Some(first) = rest.chars().next() {
        let len = if first == '|' {
            tokens.push(Token::Pipe);
            1
        } else if first == '"' || first == '\'' {
            let end = rest[1..]
                .find(first)
                .ok_or(TemplateError::UnterminatedQuote)?;
            tokens.push(Token::Quoted(&rest[1..1 + end]));
            end + 2
        } else {
            let end = rest
                .find(|c: char| c.is_whitespace() || c == '|' || c == '"' || c == '\'')
                .unwrap_or(rest.len());
            tokens.push(Token::Word(&rest[..end]));
            end
        };
        rest = rest[len..].trim_start();
    }
    Ok(tokens)
}

/// Parses `variable | filter args | ...`.
fn parse_tag(tag: &str, namespaces: Namespaces) -> Result<(Variable, Vec<Filter>), TemplateError> {
    let tokens = tokenize(tag)?;
    let mut groups = tokens.split(|token| *token == Token::Pipe);
    let variable = match groups.next() {
        Some([Token::Word(name)]) => Variable::parse(name, namespaces)?,
        Some([]) | None => return Err(TemplateError::Empty),
        Some(_) => {
            return Err(TemplateError::UnknownVariable {
                name: tag.trim().to_owned(),
            });
        }
    };
    let filters = groups.map(Filter::parse).collect::<Result<_, _>>()?;
    Ok((variable, filters))
}

impl Variable {
    /// The variable a dotted name refers to.
    fn parse(name: &str, namespaces: Namespaces) -> Result<Self, TemplateError> {
        let variable = match name {
            "request.method" => Variable::Method,
            "request.path" => Variable::Path,
            "request.host" => Variable::Host,
            "request.scheme" => Variable::Scheme,
            "request.protocol" => Variable::Protocol,
            "request.body" => Variable::Body,
            "source.address" => Variable::SourceAddress,
            "source.principal" => Variable::SourcePrincipal,
            "destination.address" => Variable::DestinationAddress,
            "rule.name" => Variable::RuleName,
            "transport" => Variable::Transport,
            "received" => Variable::Received,
            _ if name.starts_with("claims.") && name.len() > "claims.".len() => {
                if !namespaces.claims {
                    let name = name.to_owned();
                    return Err(TemplateError::ClaimsWithoutJwt { name });
                }
                Variable::Claim(ClaimPath::new(&name["claims.".len()..]))
            }
            _ if name.starts_with("db.") && name.len() > "db.".len() => {
                if !namespaces.db {
                    let name = name.to_owned();
                    return Err(TemplateError::DbWithoutLookup { name });
                }
                Variable::Db(name["db.".len()..].to_owned())
            }
            _ => match (
                name.strip_prefix("request.headers."),
                name.strip_prefix("context."),
            ) {
                (Some(header), _) if !header.is_empty() => {
                    Variable::Header(header.to_ascii_lowercase())
                }
                (_, Some(key)) if !key.is_empty() => Variable::Context(key.to_owned()),
                _ => {
                    return Err(TemplateError::UnknownVariable {
                        name: name.to_owned(),
                    });
                }
            },
        };
        Ok(variable)
    }

    /// The variable's value for one request; empty when the request doesn't carry it.
    fn value<'a>(&self, scope: &Scope<'a>) -> Cow<'a, str> {
        let request = scope.request;
        let text = |s: &'a str| Cow::Borrowed(s);
        match self {
            Variable::Method => text(&request.method),
            Variable::Path => text(&request.path),
            Variable::Host => text(&request.host),
            Variable::Scheme => text(&request.scheme),
            Variable::Protocol => text(&request.protocol),
            Variable::Body => text(&request.body),
            Variable::Header(name) => text(request.header(name).unwrap_or_default()),
            Variable::SourceAddress => request
                .source
                .ip
                .map_or(Cow::Borrowed(""), |ip| Cow::Owned(ip.to_string())),
            Variable::SourcePrincipal => text(&request.source.principal),
            Variable::DestinationAddress => request
                .destination
                .ip
                .map_or(Cow::Borrowed(""), |ip| Cow::Owned(ip.to_string())),
            Variable::Context(key) => text(
                request
                    .context_extensions
                    .get(key)
                    .map_or("", String::as_str),
            ),
            Variable::RuleName => text(scope.rule),
            Variable::Transport => text(request.transport.as_str()),
            Variable::Received => text(&request.received),
            Variable::Claim(path) => scope
                .identity
                .and_then(|identity| identity.claim(path))
                .map_or(Cow::Borrowed(""), claim_text),
            Variable::Db(column) => text(
                scope
                    .identity
                    .and_then(|identity| identity.column(column))
                    .unwrap_or_default(),
            ),
        }
    }
}

impl Filter {
    /// Parses one `name args...` group.
    fn parse(group: &[Token<'_>]) -> Result<Self, TemplateError> {
        match group {
            [
                Token::Word("cap"),
                Token::Word(max),
                Token::Quoted(replacement),
            ] => {
                let max = max.parse().map_err(|_| TemplateError::CapUsage)?;
                Ok(Filter::Cap {
                    max,
                    replacement: (*replacement).to_owned(),
                })
            }
            [Token::Word("cap"), ..] => Err(TemplateError::CapUsage),
            [Token::Word(name), ..] => Err(TemplateError::UnknownFilter {
                name: (*name).to_owned(),
            }),
            _ => Err(TemplateError::UnknownFilter {
                name: String::new(),
            }),
        }
    }

    fn apply<'a>(&self, value: Cow<'a, str>) -> Cow<'a, str> {
        match self {
            Filter::Cap { max, replacement } if value.len() > *max => {
                Cow::Owned(replacement.clone())
            }
            Filter::Cap { .. } => value,
        }
    }
}

#[cfg(test)]
mod tests;
