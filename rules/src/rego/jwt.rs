//! OPA's `io.jwt.*` builtins, which `regorus` lacks, as engine extensions backed by the same
//! `jsonwebtoken` verification the `jwt` credential uses. Semantics follow OPA's documentation:
//! `decode` does not verify; `decode_verify` answers `[false, {}, {}]` for any invalid token;
//! the `verify_*` functions answer a boolean. Keys are PEM public keys or a JWKS document (JSON
//! string); X.509 certificates are accepted where `jsonwebtoken` parses them.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use regorus::Value;
use serde_json::{Map, Value as Json};

use crate::credential::MAX_CREDENTIAL_BYTES;

#[cfg(test)]
mod tests;

/// `(builtin name, number of arguments)` of every extension [`register`] adds.
pub(crate) const EXTENSIONS: &[(&str, u8)] = &[
    ("io.jwt.decode", 1),
    ("io.jwt.decode_verify", 2),
    ("io.jwt.verify_rs256", 2),
    ("io.jwt.verify_rs384", 2),
    ("io.jwt.verify_rs512", 2),
    ("io.jwt.verify_ps256", 2),
    ("io.jwt.verify_ps384", 2),
    ("io.jwt.verify_ps512", 2),
    ("io.jwt.verify_es256", 2),
    ("io.jwt.verify_es384", 2),
    ("io.jwt.verify_eddsa", 2),
    ("io.jwt.verify_hs256", 2),
    ("io.jwt.verify_hs384", 2),
    ("io.jwt.verify_hs512", 2),
];

/// Adds the `io.jwt.*` extensions to `engine`.
pub(crate) fn register(engine: &mut regorus::Engine) -> Result<(), String> {
    for &(name, nargs) in EXTENSIONS {
        let added = match name {
            "io.jwt.decode" => {
                engine.add_extension(name.to_owned(), nargs, Box::new(|args| decode(&args)))
            }
            "io.jwt.decode_verify" => engine.add_extension(
                name.to_owned(),
                nargs,
                Box::new(|args| decode_verify(&args)),
            ),
            _ => {
                let alg =
                    verify_algorithm(name).ok_or_else(|| format!("no algorithm for {name}"))?;
                engine.add_extension(
                    name.to_owned(),
                    nargs,
                    Box::new(move |args: Vec<Value>| verify(alg, &args)),
                )
            }
        };
        added.map_err(|error| format!("{name}: {error}"))?;
    }
    Ok(())
}

fn verify_algorithm(name: &str) -> Option<Algorithm> {
    Some(match name.strip_prefix("io.jwt.verify_")? {
        "rs256" => Algorithm::RS256,
        "rs384" => Algorithm::RS384,
        "rs512" => Algorithm::RS512,
        "ps256" => Algorithm::PS256,
        "ps384" => Algorithm::PS384,
        "ps512" => Algorithm::PS512,
        "es256" => Algorithm::ES256,
        "es384" => Algorithm::ES384,
        "eddsa" => Algorithm::EdDSA,
        "hs256" => Algorithm::HS256,
        "hs384" => Algorithm::HS384,
        "hs512" => Algorithm::HS512,
        _ => return None,
    })
}

/// Why a builtin call failed; regorus turns it into an undefined expression (OPA's non-strict
/// builtin errors).
#[derive(Debug, thiserror::Error)]
enum JwtError {
    #[error("{0}: expected a string argument")]
    NotAString(&'static str),
    #[error("{0}: expected an object argument")]
    NotAnObject(&'static str),
    #[error("io.jwt: token is not three base64url parts")]
    Malformed,
    #[error("io.jwt.decode_verify: exactly one of `cert` and `secret` is required")]
    KeyChoice,
    #[error("{0}: token longer than {MAX_CREDENTIAL_BYTES} bytes")]
    TooLong(&'static str),
}

fn string_arg<'a>(
    args: &'a [Value],
    index: usize,
    name: &'static str,
) -> Result<&'a str, JwtError> {
    match args.get(index) {
        Some(value) => value
            .as_string()
            .map(|s| &**s)
            .map_err(|_| JwtError::NotAString(name)),
        None => Err(JwtError::NotAString(name)),
    }
}

/// The token argument, refused past the `jwt` credential's own cap: a request controls it, and
/// decoding and verifying cost grows with its length.
fn token_arg<'a>(args: &'a [Value], name: &'static str) -> Result<&'a str, JwtError> {
    let token = string_arg(args, 0, name)?;
    if token.len() > MAX_CREDENTIAL_BYTES {
        return Err(JwtError::TooLong(name));
    }
    Ok(token)
}

/// The three parts of a compact JWS: header and payload as JSON objects, the signature's bytes.
fn split(token: &str) -> Result<(Json, Json, Vec<u8>), JwtError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let json = |part: &str| -> Result<Json, JwtError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part.trim_end_matches('='))
            .map_err(|_| JwtError::Malformed)?;
        match serde_json::from_slice::<Json>(&bytes) {
            Ok(object @ Json::Object(_)) => Ok(object),
            _ => Err(JwtError::Malformed),
        }
    };
    let signature = URL_SAFE_NO_PAD
        .decode(signature.trim_end_matches('='))
        .map_err(|_| JwtError::Malformed)?;
    Ok((json(header)?, json(payload)?, signature))
}

/// `io.jwt.decode(token)`: `[header, payload, signature as hex]`, unverified.
fn decode(args: &[Value]) -> anyhow::Result<Value> {
    let token = token_arg(args, "io.jwt.decode")?;
    let (header, payload, signature) = split(token)?;
    let hex: String = signature.iter().map(|b| format!("{b:02x}")).collect();
    Ok(Value::from(vec![
        Value::from(header),
        Value::from(payload),
        Value::from(hex),
    ]))
}

/// `io.jwt.verify_<alg>(token, key)`: whether the signature verifies with `key` under `alg`.
fn verify(alg: Algorithm, args: &[Value]) -> anyhow::Result<Value> {
    let token = token_arg(args, "io.jwt.verify")?;
    let key = string_arg(args, 1, "io.jwt.verify")?;
    let keys = if alg.family() == AlgorithmFamily::Hmac {
        vec![DecodingKey::from_secret(key.as_bytes())]
    } else {
        public_keys(key, alg)
    };
    Ok(Value::from(verified(token, alg, &keys).is_some()))
}

/// The token's payload when its signature verifies under `alg` with one of `keys` (no claim
/// checks: callers do those as OPA does).
fn verified(token: &str, alg: Algorithm, keys: &[DecodingKey]) -> Option<Json> {
    let header = jsonwebtoken::decode_header(token).ok()?;
    if header.alg != alg {
        return None;
    }
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    keys.iter().find_map(|key| {
        jsonwebtoken::decode::<Json>(token, key, &validation)
            .ok()
            .map(|data| data.claims)
    })
}

/// Keys from a PEM public key (or certificate) or a JWKS document, for `alg`'s family.
fn public_keys(text: &str, alg: Algorithm) -> Vec<DecodingKey> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        let Ok(set) = serde_json::from_str::<JwkSet>(trimmed) else {
            return Vec::new();
        };
        return crate::credential::jwt::set_keys(&set)
            .into_iter()
            .filter(|key| key.family == alg.family() && key.alg.is_none_or(|a| a == alg))
            .map(|key| key.key)
            .collect();
    }
    let pem = text.as_bytes();
    let key = match alg.family() {
        AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(pem),
        AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem),
        AlgorithmFamily::Ed => DecodingKey::from_ed_pem(pem),
        AlgorithmFamily::Hmac => return vec![DecodingKey::from_secret(pem)],
    };
    key.into_iter().collect()
}

/// `io.jwt.decode_verify(token, constraints)`: `[true, header, payload]` when the signature
/// verifies and the constraints (`alg`, `iss`, `aud`, `time`, and the token's own `exp`/`nbf`)
/// hold; `[false, {}, {}]` otherwise.
fn decode_verify(args: &[Value]) -> anyhow::Result<Value> {
    let token = string_arg(args, 0, "io.jwt.decode_verify")?;
    let Some(Ok(Json::Object(constraints))) = args.get(1).map(serde_json::to_value) else {
        return Err(JwtError::NotAnObject("io.jwt.decode_verify").into());
    };
    let invalid = || {
        Value::from(vec![
            Value::from(false),
            Value::new_object(),
            Value::new_object(),
        ])
    };
    let text = |key: &str| constraints.get(key).and_then(Json::as_str);
    let (cert, secret) = (text("cert"), text("secret"));
    if cert.is_some() == secret.is_some() {
        return Err(JwtError::KeyChoice.into());
    }
    if token.len() > MAX_CREDENTIAL_BYTES {
        return Ok(invalid());
    }
    let Ok((header, payload, _)) = split(token) else {
        return Ok(invalid());
    };
    let Some(alg) = header
        .get("alg")
        .and_then(Json::as_str)
        .and_then(|alg| alg.parse::<Algorithm>().ok())
    else {
        return Ok(invalid());
    };
    if text("alg").is_some_and(|wanted| wanted != alg_name(alg)) {
        return Ok(invalid());
    }
    let keys = match (cert, secret) {
        (Some(cert), _) if alg.family() != AlgorithmFamily::Hmac => public_keys(cert, alg),
        (_, Some(secret)) if alg.family() == AlgorithmFamily::Hmac => {
            vec![DecodingKey::from_secret(secret.as_bytes())]
        }
        _ => return Ok(invalid()),
    };
    if verified(token, alg, &keys).is_none() || !claims_hold(&payload, &constraints) {
        return Ok(invalid());
    }
    Ok(Value::from(vec![
        Value::from(true),
        Value::from(header),
        Value::from(payload),
    ]))
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
    }
}

/// OPA's claim checks for `decode_verify`: `exp` and `nbf` against `time` (nanoseconds, default
/// now), `iss` equal when constrained, `aud` present in the token exactly when constrained.
fn claims_hold(payload: &Json, constraints: &Map<String, Json>) -> bool {
    let now_ns = constraints
        .get("time")
        .and_then(Json::as_f64)
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_nanos() as f64)
        });
    let now = now_ns / 1e9;
    if let Some(exp) = payload.get("exp") {
        match exp.as_f64() {
            Some(exp) if now < exp => {}
            _ => return false,
        }
    }
    if let Some(nbf) = payload.get("nbf") {
        match nbf.as_f64() {
            Some(nbf) if now >= nbf => {}
            _ => return false,
        }
    }
    if let Some(iss) = constraints.get("iss").and_then(Json::as_str)
        && payload.get("iss").and_then(Json::as_str) != Some(iss)
    {
        return false;
    }
    let wanted = constraints.get("aud").and_then(Json::as_str);
    match (payload.get("aud"), wanted) {
        (None, None) => true,
        (Some(Json::String(aud)), Some(wanted)) => aud == wanted,
        (Some(Json::Array(auds)), Some(wanted)) => {
            auds.iter().any(|aud| aud.as_str() == Some(wanted))
        }
        // Present on one side only, or not a string or an array.
        (Some(_), _) | (None, Some(_)) => false,
    }
}
