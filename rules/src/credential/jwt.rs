//! JWT verification with `jsonwebtoken`. The accepted algorithms come from the config, never from
//! the token: a token whose `alg` is not configured, is `none`, or does not fit the key's family
//! (an HS256 token against an RSA key) is invalid.

use std::fmt;

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Header, Validation};
use serde_json::{Map, Value};

use crate::hooks::Hooks;

/// A compiled `jwt = { ... }` verifier.
#[derive(Clone)]
pub(crate) struct JwtVerifier {
    /// The configured algorithms (also inside `validation`).
    pub algorithms: Vec<Algorithm>,
    /// Where the verification keys are.
    pub keys: JwtKeys,
    /// Algorithms, `exp`/`nbf` with leeway, `iss`, `aud`, required claims.
    pub validation: Validation,
}

/// Verification keys.
#[derive(Clone)]
pub(crate) enum JwtKeys {
    /// One key from `secret` or `public_key_pem`.
    Static(DecodingKey),
    /// The keys of a JWKS file, parsed at load.
    Set(Vec<SetKey>),
    /// A JWKS URL resolved through [`crate::JwksSource`] per request.
    Url(String),
}

/// One usable key of a JWKS.
#[derive(Clone)]
pub(crate) struct SetKey {
    /// `kid`, if the JWK has one.
    pub kid: Option<String>,
    /// The JWK's `alg`, if it names a signature algorithm.
    pub alg: Option<Algorithm>,
    /// The key's family, from its type.
    pub family: AlgorithmFamily,
    /// The parsed key.
    pub key: DecodingKey,
}

// Keys (an HMAC secret among them) must never reach logs through `{:?}`.
impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = match &self.keys {
            JwtKeys::Static(_) => "static key".to_owned(),
            JwtKeys::Set(keys) => format!("{} JWKS keys", keys.len()),
            JwtKeys::Url(url) => format!("JWKS {url}"),
        };
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.algorithms)
            .field("keys", &keys)
            .finish_non_exhaustive()
    }
}

/// The usable signature keys of a JWKS: encryption keys, keys with a non-signature `alg` and keys
/// `jsonwebtoken` cannot parse are skipped.
pub(crate) fn set_keys(set: &JwkSet) -> Vec<SetKey> {
    set.keys.iter().filter_map(set_key).collect()
}

fn set_key(jwk: &Jwk) -> Option<SetKey> {
    if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
        return None;
    }
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(alg) => Some(alg.to_string().parse::<Algorithm>().ok()?),
    };
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa,
        AlgorithmParameters::EllipticCurve(_) => AlgorithmFamily::Ec,
        AlgorithmParameters::OctetKeyPair(_) => AlgorithmFamily::Ed,
        AlgorithmParameters::OctetKey(_) => AlgorithmFamily::Hmac,
    };
    Some(SetKey {
        kid: jwk.common.key_id.clone(),
        alg,
        family,
        key: DecodingKey::from_jwk(jwk).ok()?,
    })
}

/// Why no key of a set fits the token.
enum NoKey {
    /// The token names a `kid` the set lacks (worth one refresh of a fetched set).
    UnknownKid,
    /// Anything else.
    Other(String),
}

/// The key for `header` among `keys`: by `kid`, or the only key fitting the algorithm when the
/// token has no `kid`.
fn select<'k>(keys: &'k [SetKey], header: &Header) -> Result<&'k DecodingKey, NoKey> {
    let fits = |key: &&SetKey| {
        key.family == header.alg.family() && key.alg.is_none_or(|alg| alg == header.alg)
    };
    match &header.kid {
        Some(kid) => keys
            .iter()
            .filter(fits)
            .find(|key| key.kid.as_deref() == Some(kid))
            .map(|key| &key.key)
            .ok_or(NoKey::UnknownKid),
        None => {
            let mut fitting = keys.iter().filter(fits);
            match (fitting.next(), fitting.next()) {
                (Some(only), None) => Ok(&only.key),
                (None, _) => Err(NoKey::Other(format!(
                    "no key for algorithm {:?}",
                    header.alg
                ))),
                (Some(_), Some(_)) => Err(NoKey::Other(format!(
                    "token has no kid and several keys fit algorithm {:?}",
                    header.alg
                ))),
            }
        }
    }
}

impl JwtVerifier {
    /// The verified claims, or why the token is invalid (never the token itself). The token
    /// comes from `Source::extract`, which refuses one over `MAX_CREDENTIAL_BYTES` before any
    /// verifier sees it.
    pub(crate) async fn verify(
        &self,
        token: &str,
        hooks: &Hooks,
    ) -> Result<Map<String, Value>, String> {
        // Unknown algorithms, `none` among them, fail to parse here.
        let header = jsonwebtoken::decode_header(token)
            .map_err(|error| format!("malformed token: {}", describe(&error)))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(format!("algorithm {:?} not allowed", header.alg));
        }
        match &self.keys {
            JwtKeys::Static(key) => self.decode(token, key),
            JwtKeys::Set(keys) => match select(keys, &header) {
                Ok(key) => self.decode(token, key),
                Err(NoKey::UnknownKid) => Err("unknown kid".to_owned()),
                Err(NoKey::Other(reason)) => Err(reason),
            },
            JwtKeys::Url(url) => {
                let Some(source) = &hooks.jwks else {
                    return Err("no JWKS source to fetch the keys".to_owned());
                };
                let set = source
                    .jwks(url, false)
                    .await
                    .map_err(|error| format!("keys unavailable: {error}"))?;
                let keys = set_keys(&set);
                match select(&keys, &header) {
                    Ok(key) => self.decode(token, key),
                    Err(NoKey::Other(reason)) => Err(reason),
                    Err(NoKey::UnknownKid) => {
                        // Keys rotate: a new kid asks the source, once, for a fresh document.
                        let set = source
                            .jwks(url, true)
                            .await
                            .map_err(|error| format!("keys unavailable: {error}"))?;
                        let keys = set_keys(&set);
                        match select(&keys, &header) {
                            Ok(key) => self.decode(token, key),
                            Err(NoKey::UnknownKid) => Err("unknown kid".to_owned()),
                            Err(NoKey::Other(reason)) => Err(reason),
                        }
                    }
                }
            }
        }
    }

    fn decode(&self, token: &str, key: &DecodingKey) -> Result<Map<String, Value>, String> {
        jsonwebtoken::decode::<Map<String, Value>>(token, key, &self.validation)
            .map(|data| data.claims)
            .map_err(|error| describe(&error))
    }
}

/// A short reason for the trace; `jsonwebtoken` errors never carry the token.
fn describe(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "expired".to_owned(),
        ErrorKind::ImmatureSignature => "not yet valid (nbf)".to_owned(),
        ErrorKind::InvalidIssuer => "wrong issuer".to_owned(),
        ErrorKind::InvalidAudience => "wrong audience".to_owned(),
        ErrorKind::InvalidSignature => "bad signature".to_owned(),
        ErrorKind::InvalidAlgorithm => "algorithm does not fit the key".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("missing claim {claim}"),
        ErrorKind::InvalidClaimFormat(claim) => format!("malformed claim {claim}"),
        ErrorKind::InvalidToken => "not a JWT".to_owned(),
        ErrorKind::Base64(_) => "bad base64".to_owned(),
        ErrorKind::Json(_) => "bad JSON".to_owned(),
        ErrorKind::Utf8(_) => "not UTF-8".to_owned(),
        other => format!("{other:?}")
            .split(['(', ' '])
            .next()
            .unwrap_or("invalid")
            .to_owned(),
    }
}
