//! Credentials: where a rule reads one from the request, and how it is verified (static keys kept
//! as SHA-256 digests and compared in constant time, or a JWT). Verification never leaks the
//! credential: failure reasons name what was wrong, not the value.

pub(crate) mod jwt;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::action::DenyAction;
use crate::hooks::Hooks;
use crate::request::Request;

pub(crate) use jwt::{JwtKeys, JwtVerifier, set_keys as jwt_set_keys};

/// A credential longer than this many bytes is invalid without being looked at.
pub const MAX_CREDENTIAL_BYTES: usize = 8 * 1024;

/// At most this many static key digests per credential.
pub const MAX_STATIC_KEYS: usize = 100_000;

/// A compiled `[rules.credential]`.
#[derive(Debug, Clone)]
pub(crate) struct Credential {
    /// Where to read it.
    pub source: Source,
    /// How to verify it.
    pub verifier: Verifier,
    /// The deny for a missing or invalid credential.
    pub on_failure: DenyAction,
}

/// Where a credential is read from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// A header (lower-case name), with an optional scheme that must prefix the value.
    Header {
        /// Lower-case header name.
        name: String,
        /// `Bearer`, ...; compared case-insensitively and followed by at least one space.
        scheme: Option<String>,
    },
    /// A query parameter, percent-decoded.
    Query(String),
    /// A cookie from the `cookie` header.
    Cookie(String),
}

/// How a credential is verified.
#[derive(Debug, Clone)]
pub(crate) enum Verifier {
    /// Static keys or opaque bearer tokens, as SHA-256 digests.
    Keys(Vec<[u8; 32]>),
    /// A JSON Web Token.
    Jwt(Box<JwtVerifier>),
    /// An opaque value the rule's lookup checks (as a `credential` parameter).
    Lookup,
}

/// A verified credential: its value (for lookup parameters) and, for a JWT, its claims.
#[derive(Clone)]
pub(crate) struct Verified {
    /// The credential as presented.
    pub raw: String,
    /// The JWT's claims.
    pub claims: Option<Map<String, Value>>,
}

/// Why a credential was not accepted. The text goes to the trace: it never contains the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// The request does not carry it.
    Missing,
    /// It is there but not acceptable.
    Invalid(String),
}

impl Source {
    /// `header x-api-key`, for traces.
    pub(crate) fn describe(&self) -> String {
        match self {
            Source::Header { name, scheme: None } => format!("header {name}"),
            Source::Header {
                name,
                scheme: Some(scheme),
            } => format!("header {name} ({scheme})"),
            Source::Query(name) => format!("query parameter {name}"),
            Source::Cookie(name) => format!("cookie {name}"),
        }
    }

    /// The credential's text, or why there is none.
    pub(crate) fn extract(&self, request: &Request) -> Result<String, Rejected> {
        let value = match self {
            Source::Header { name, scheme } => {
                let value = request.header(name).ok_or(Rejected::Missing)?;
                match scheme {
                    None => value.trim().to_owned(),
                    Some(scheme) => strip_scheme(value, scheme)
                        .ok_or_else(|| Rejected::Invalid(format!("not a {scheme} credential")))?
                        .to_owned(),
                }
            }
            Source::Query(name) => {
                let query = request.path.split_once('?').map_or("", |(_, q)| q);
                let raw = query
                    .split('&')
                    .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
                    .find(|(key, _)| percent_decode(key).as_deref() == Some(name.as_bytes()))
                    .map(|(_, value)| value)
                    .ok_or(Rejected::Missing)?;
                let bytes = percent_decode(raw)
                    .ok_or_else(|| Rejected::Invalid("malformed percent-encoding".to_owned()))?;
                String::from_utf8(bytes)
                    .map_err(|_| Rejected::Invalid("not valid UTF-8".to_owned()))?
            }
            Source::Cookie(name) => request
                .header("cookie")
                .into_iter()
                .flat_map(|header| header.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(key, _)| key.trim() == name)
                .map(|(_, value)| value.trim().trim_matches('"').to_owned())
                .ok_or(Rejected::Missing)?,
        };
        if value.is_empty() {
            return Err(Rejected::Missing);
        }
        if value.len() > MAX_CREDENTIAL_BYTES {
            return Err(Rejected::Invalid(format!(
                "longer than {MAX_CREDENTIAL_BYTES} bytes"
            )));
        }
        Ok(value)
    }
}

/// The value after `scheme` and at least one space, case-insensitive on the scheme (RFC 9110).
fn strip_scheme<'v>(value: &'v str, scheme: &str) -> Option<&'v str> {
    let head = value.get(..scheme.len())?;
    let rest = value.get(scheme.len()..)?;
    if !head.eq_ignore_ascii_case(scheme) || !rest.starts_with(' ') {
        return None;
    }
    Some(rest.trim())
}

/// `%XX` decoding (a `+` stays a `+`: keys and tokens may contain it); `None` on a bad escape.
fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

/// The SHA-256 of `value`.
pub(crate) fn sha256(value: &[u8]) -> [u8; 32] {
    Sha256::digest(value).into()
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// A 32-byte digest from 64 hex digits (either case).
pub(crate) fn parse_digest(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

impl Credential {
    /// Reads and verifies the credential. A JWKS URL is resolved through `hooks.jwks`; without
    /// that hook such a token is invalid (fail closed).
    pub(crate) async fn verify(
        &self,
        request: &Request,
        hooks: &Hooks,
    ) -> Result<Verified, Rejected> {
        let raw = self.source.extract(request)?;
        match &self.verifier {
            Verifier::Keys(digests) => {
                let digest = sha256(raw.as_bytes());
                // Scan every digest, so the time taken does not depend on which one matched.
                let found = digests
                    .iter()
                    .fold(subtle::Choice::from(0), |found, known| {
                        found | known.ct_eq(&digest)
                    });
                if bool::from(found) {
                    Ok(Verified { raw, claims: None })
                } else {
                    Err(Rejected::Invalid("unknown key".to_owned()))
                }
            }
            Verifier::Lookup => Ok(Verified { raw, claims: None }),
            Verifier::Jwt(jwt) => match jwt.verify(&raw, hooks).await {
                Ok(claims) => Ok(Verified {
                    raw,
                    claims: Some(claims),
                }),
                Err(reason) => Err(Rejected::Invalid(reason)),
            },
        }
    }
}

#[cfg(test)]
mod tests;
