//! Keys, tokens and policies for the JWT suites (`jwt.rs`, `jwks.rs`): a signing key per
//! algorithm with the matching `jwt` config line, JWKs, and tokens signed with them.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::rngs::OsRng;
use rules::RuleSet;
use serde_json::{Value, json};

use super::{policy, request};

pub(crate) const ISSUER: &str = "https://issuer.test";
pub(crate) const AUDIENCE: &str = "api";

/// A signing key and the matching verification config (`secret = ...` or `public_key_pem`).
pub(crate) struct Keys {
    pub(crate) encoding: EncodingKey,
    /// TOML for the key line of the `jwt` table.
    pub(crate) verify: String,
}

pub(crate) fn now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();
    i64::try_from(secs).expect("seconds since 1970 fit i64")
}

pub(crate) fn pem_line(pem: &str) -> String {
    format!("public_key_pem = '''\n{pem}'''")
}

/// One RSA key per run: generating RSA keys is slow in debug builds.
pub(crate) fn rsa_key() -> &'static rsa::RsaPrivateKey {
    static KEY: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| rsa::RsaPrivateKey::new(&mut OsRng, 2048).expect("an RSA key"))
}

pub(crate) fn rsa_keys() -> Keys {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    let key = rsa_key();
    let der = key.to_pkcs1_der().expect("DER of the private key");
    let pem = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("PEM of the public key");
    Keys {
        encoding: EncodingKey::from_rsa_der(der.as_bytes()),
        verify: pem_line(&pem),
    }
}

pub(crate) fn hmac_keys() -> Keys {
    let secret: [u8; 32] = rand::random();
    let secret = URL_SAFE_NO_PAD.encode(secret);
    Keys {
        encoding: EncodingKey::from_secret(secret.as_bytes()),
        verify: format!("secret = {secret:?}"),
    }
}

pub(crate) fn p256_keys() -> Keys {
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let key = p256::ecdsa::SigningKey::random(&mut OsRng);
    let der = key.to_pkcs8_der().expect("DER of the private key");
    let pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("PEM of the public key");
    Keys {
        encoding: EncodingKey::from_ec_der(der.as_bytes()),
        verify: pem_line(&pem),
    }
}

pub(crate) fn p384_keys() -> Keys {
    use p384::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let key = p384::ecdsa::SigningKey::random(&mut OsRng);
    let der = key.to_pkcs8_der().expect("DER of the private key");
    let pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("PEM of the public key");
    Keys {
        encoding: EncodingKey::from_ec_der(der.as_bytes()),
        verify: pem_line(&pem),
    }
}

pub(crate) fn ed25519_keys() -> Keys {
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey, spki::der::pem::LineEnding};
    let key = ed25519_dalek::SigningKey::generate(&mut OsRng);
    let der = key.to_pkcs8_der().expect("DER of the private key");
    let pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("PEM of the public key");
    Keys {
        encoding: EncodingKey::from_ed_der(der.as_bytes()),
        verify: pem_line(&pem),
    }
}

pub(crate) fn keys_for(alg: Algorithm) -> Keys {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => hmac_keys(),
        Algorithm::ES256 => p256_keys(),
        Algorithm::ES384 => p384_keys(),
        Algorithm::EdDSA => ed25519_keys(),
        _ => rsa_keys(),
    }
}

/// A policy with one JWT rule: issuer and audience checked, `sub` and `tier` forwarded.
pub(crate) fn jwt_policy(alg: Algorithm, key_line: &str) -> RuleSet {
    policy(&format!(
        r#"
[default]
deny = {{ status = 403, body = "no rule" }}

[[rules]]
name = "jwt"
[rules.credential]
from = {{ header = "authorization", scheme = "Bearer" }}
[rules.credential.jwt]
algorithms = ["{alg:?}"]
{key_line}
issuer = "{ISSUER}"
audience = ["{AUDIENCE}"]
leeway_seconds = 30
[rules.allow]
request_headers = [
  {{ name = "x-user", value = "{{{{claims.sub}}}}" }},
  {{ name = "x-tier", value = "{{{{claims.tier}}}}" }},
  {{ name = "x-roles", value = "{{{{claims.realm.roles}}}}" }},
]
"#
    ))
}

pub(crate) fn good_claims() -> Value {
    json!({
        "sub": "alice",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": now() + 600,
        "nbf": now() - 10,
        "tier": "pro",
        "realm": { "roles": ["reader", "writer"] },
    })
}

pub(crate) fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("a signed token")
}

pub(crate) fn bearer(token: &str) -> rules::Request {
    request("/", &[("authorization", &format!("Bearer {token}"))])
}

/// A P-256 key with its JWK.
pub(crate) struct JwkKey {
    pub(crate) encoding: EncodingKey,
    pub(crate) jwk: Value,
}

pub(crate) fn ec_jwk(kid: &str) -> JwkKey {
    use p256::pkcs8::EncodePrivateKey;
    let key = p256::ecdsa::SigningKey::random(&mut OsRng);
    let point = key.verifying_key().to_encoded_point(false);
    JwkKey {
        encoding: EncodingKey::from_ec_der(
            key.to_pkcs8_der()
                .expect("DER of the private key")
                .as_bytes(),
        ),
        jwk: json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(point.x().expect("an uncompressed point has x")),
            "y": URL_SAFE_NO_PAD.encode(point.y().expect("an uncompressed point has y")),
        }),
    }
}

pub(crate) fn rsa_jwks(kid: &str) -> Value {
    use rsa::traits::PublicKeyParts;
    let public = rsa_key().to_public_key();
    json!({"keys": [{
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
        "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
    }]})
}

/// A policy whose JWKS file (written to a temporary directory) holds `jwks`.
pub(crate) fn jwks_policy(jwks: &Value, algorithms: &[&str]) -> RuleSet {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "rules-jwks-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    std::fs::write(dir.join("jwks.json"), jwks.to_string()).expect("the JWKS file written");
    let text = format!(
        r#"
[default]
deny = {{}}
[[rules]]
name = "jwks"
credential = {{ from = {{ header = "authorization", scheme = "Bearer" }}, jwt = {{ algorithms = {algorithms:?}, jwks_file = "jwks.json" }} }}
allow = {{ request_headers = [{{ name = "x-user", value = "{{{{claims.sub}}}}" }}] }}
"#
    );
    let file = dir.join("policy.toml");
    rules::load::<toml::Table>(file.to_str().expect("a UTF-8 temporary path"), &text)
        .unwrap_or_else(|e| panic!("{e}"))
        .1
}
