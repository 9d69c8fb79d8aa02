//! JWT credentials: every supported algorithm with keys generated here, and every way a token
//! must be refused (expired, not yet valid, wrong issuer or audience, bad signature, `alg: none`,
//! algorithm confusion, oversized), plus JWKS files and JWKS URLs with key rotation.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::rngs::OsRng;
use rules::hooks::BoxFuture;
use rules::{Hooks, JwksError, JwksSource, RuleSet};
use serde_json::{Value, json};
use support::{DecideTraced, assert_unauthenticated, evaluate, policy, request, request_headers};

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "api";

/// A signing key and the matching verification config (`secret = ...` or `public_key_pem`).
struct Keys {
    encoding: EncodingKey,
    /// TOML for the key line of the `jwt` table.
    verify: String,
}

fn now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    i64::try_from(secs).unwrap()
}

fn pem_line(pem: &str) -> String {
    format!("public_key_pem = '''\n{pem}'''")
}

/// One RSA key per run: generating RSA keys is slow in debug builds.
fn rsa_key() -> &'static rsa::RsaPrivateKey {
    static KEY: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| rsa::RsaPrivateKey::new(&mut OsRng, 2048).unwrap())
}

fn rsa_keys() -> Keys {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    let key = rsa_key();
    let der = key.to_pkcs1_der().unwrap();
    let pem = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    Keys {
        encoding: EncodingKey::from_rsa_der(der.as_bytes()),
        verify: pem_line(&pem),
    }
}

fn hmac_keys() -> Keys {
    let secret: [u8; 32] = rand::random();
    let secret = URL_SAFE_NO_PAD.encode(secret);
    Keys {
        encoding: EncodingKey::from_secret(secret.as_bytes()),
        verify: format!("secret = {secret:?}"),
    }
}

fn p256_keys() -> Keys {
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let key = p256::ecdsa::SigningKey::random(&mut OsRng);
    let der = key.to_pkcs8_der().unwrap();
    let pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    Keys {
        encoding: EncodingKey::from_ec_der(der.as_bytes()),
        verify: pem_line(&pem),
    }
}

fn p384_keys() -> Keys {
    use p384::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let key = p384::ecdsa::SigningKey::random(&mut OsRng);
    let der = key.to_pkcs8_der().unwrap();
    let pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    Keys {
        encoding: EncodingKey::from_ec_der(der.as_bytes()),
        verify: pem_line(&pem),
    }
}

fn ed25519_keys() -> Keys {
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey, spki::der::pem::LineEnding};
    let key = ed25519_dalek::SigningKey::generate(&mut OsRng);
    let der = key.to_pkcs8_der().unwrap();
    let pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    Keys {
        encoding: EncodingKey::from_ed_der(der.as_bytes()),
        verify: pem_line(&pem),
    }
}

fn keys_for(alg: Algorithm) -> Keys {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => hmac_keys(),
        Algorithm::ES256 => p256_keys(),
        Algorithm::ES384 => p384_keys(),
        Algorithm::EdDSA => ed25519_keys(),
        _ => rsa_keys(),
    }
}

/// A policy with one JWT rule: issuer and audience checked, `sub` and `tier` forwarded.
fn jwt_policy(alg: Algorithm, key_line: &str) -> RuleSet {
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

fn good_claims() -> Value {
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

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn bearer(token: &str) -> rules::Request {
    request("/", &[("authorization", &format!("Bearer {token}"))])
}

const ALGORITHMS: [Algorithm; 12] = [
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

#[test]
fn every_algorithm_verifies_and_forwards_claims() {
    for alg in ALGORITHMS {
        let keys = keys_for(alg);
        let rules = jwt_policy(alg, &keys.verify);
        let token = sign(alg, None, &good_claims(), &keys.encoding);
        let evaluation = rules.traced(&bearer(&token));
        assert_eq!(
            request_headers(&evaluation),
            vec![
                ("x-user".to_owned(), "alice".to_owned()),
                ("x-tier".to_owned(), "pro".to_owned()),
                ("x-roles".to_owned(), "reader,writer".to_owned()),
            ],
            "{alg:?}"
        );
        assert_eq!(evaluation.trace, vec!["rule \"jwt\": matched".to_owned()]);
    }
}

#[test]
fn a_token_signed_by_another_key_is_refused_for_every_algorithm() {
    for alg in ALGORITHMS {
        let rules = jwt_policy(alg, &keys_for(alg).verify);
        // RSA reuses one key per run, so sign with a fresh non-RSA key of another family there.
        let (other_alg, other) = match alg {
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => (alg, None),
            Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512 => (alg, None),
            _ => (alg, Some(keys_for(alg))),
        };
        let token = match other {
            Some(other) => sign(other_alg, None, &good_claims(), &other.encoding),
            None => tamper_signature(&sign(alg, None, &good_claims(), &rsa_keys().encoding)),
        };
        let evaluation = rules.traced(&bearer(&token));
        assert_unauthenticated(&evaluation, "Bearer", "invalid: bad signature");
    }
}

/// Changes the signature's last-but-one character (the last may only carry padding bits).
fn tamper_signature(token: &str) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    let at = chars.len() - 2;
    chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

#[test]
fn claims_outside_their_validity_or_audience_are_refused() {
    let keys = hmac_keys();
    let rules = jwt_policy(Algorithm::HS256, &keys.verify);
    let cases = [
        ("exp", json!(now() - 120), "invalid: expired"),
        ("nbf", json!(now() + 120), "invalid: not yet valid (nbf)"),
        ("iss", json!("https://evil.test"), "invalid: wrong issuer"),
        ("aud", json!("other-api"), "invalid: wrong audience"),
    ];
    for (claim, value, reason) in cases {
        let mut claims = good_claims();
        claims[claim] = value;
        let token = sign(Algorithm::HS256, None, &claims, &keys.encoding);
        assert_unauthenticated(&rules.traced(&bearer(&token)), "Bearer", reason);
    }
    // Within the 30 s leeway, still valid.
    let mut claims = good_claims();
    claims["exp"] = json!(now() - 10);
    let token = sign(Algorithm::HS256, None, &claims, &keys.encoding);
    assert!(rules.traced(&bearer(&token)).decision.is_allow());
    // A configured issuer and audience must be present, and `exp` is required by default.
    for missing in ["iss", "aud", "exp"] {
        let mut claims = good_claims();
        claims.as_object_mut().unwrap().remove(missing);
        let token = sign(Algorithm::HS256, None, &claims, &keys.encoding);
        let reason = format!("invalid: missing claim {missing}");
        assert_unauthenticated(&rules.traced(&bearer(&token)), "Bearer", &reason);
    }
}

fn unsigned(header: &Value, claims: &Value) -> String {
    let encode = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    format!("{}.{}.", encode(header), encode(claims))
}

#[test]
fn alg_none_is_refused() {
    let rules = jwt_policy(Algorithm::HS256, &hmac_keys().verify);
    for alg in ["none", "None", "NONE"] {
        let token = unsigned(&json!({"alg": alg, "typ": "JWT"}), &good_claims());
        assert_unauthenticated(
            &rules.traced(&bearer(&token)),
            "Bearer",
            "invalid: malformed token: bad JSON",
        );
    }
}

#[test]
fn an_hs256_token_made_with_the_rsa_public_key_is_refused() {
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    let keys = rsa_keys();
    let public_pem = rsa_key()
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let forged = sign(
        Algorithm::HS256,
        None,
        &good_claims(),
        &EncodingKey::from_secret(public_pem.as_bytes()),
    );
    let rules = jwt_policy(Algorithm::RS256, &keys.verify);
    assert_unauthenticated(
        &rules.traced(&bearer(&forged)),
        "Bearer",
        "invalid: algorithm HS256 not allowed",
    );
    // Even when the config lists HS256 next to RS256 for a JWKS with only an RSA key, the RSA key
    // never verifies an HMAC token.
    let jwks = rsa_jwks("k1");
    let evaluation = jwks_policy(&jwks, &["RS256", "HS256"]).traced(&bearer(&forged));
    assert_unauthenticated(&evaluation, "Bearer", "invalid: no key for algorithm HS256");
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    let forged = jsonwebtoken::encode(
        &header,
        &good_claims(),
        &EncodingKey::from_secret(public_pem.as_bytes()),
    )
    .unwrap();
    let evaluation = jwks_policy(&jwks, &["RS256", "HS256"]).traced(&bearer(&forged));
    assert_unauthenticated(&evaluation, "Bearer", "invalid: unknown kid");
}

#[test]
fn missing_malformed_and_oversized_tokens_are_refused() {
    let rules = jwt_policy(Algorithm::HS256, &hmac_keys().verify);
    assert_unauthenticated(
        &rules.traced(&request("/", &[])),
        "Bearer",
        "credential (header authorization (Bearer)) missing",
    );
    assert_unauthenticated(
        &rules.traced(&request("/", &[("authorization", "Basic YTpi")])),
        "Bearer",
        "invalid: not a Bearer credential",
    );
    assert_unauthenticated(
        &rules.traced(&bearer("not-a-jwt")),
        "Bearer",
        "invalid: malformed token: not a JWT",
    );
    let huge = format!("{}.{}.x", "a".repeat(5000), "b".repeat(5000));
    assert_unauthenticated(
        &rules.traced(&bearer(&huge)),
        "Bearer",
        "invalid: longer than 8192 bytes",
    );
}

#[test]
fn traces_never_carry_the_token() {
    let keys = hmac_keys();
    let rules = jwt_policy(Algorithm::HS256, &keys.verify);
    let mut claims = good_claims();
    claims["exp"] = json!(now() - 1000);
    let token = sign(Algorithm::HS256, None, &claims, &keys.encoding);
    let evaluation = rules.traced(&bearer(&token));
    let signature = token.rsplit('.').next().unwrap();
    for line in &evaluation.trace {
        assert!(
            !line.contains(signature) && !line.contains("alice"),
            "{line}"
        );
    }
}

// --- JWKS --------------------------------------------------------------------------------------

/// A P-256 key with its JWK.
struct JwkKey {
    encoding: EncodingKey,
    jwk: Value,
}

fn ec_jwk(kid: &str) -> JwkKey {
    use p256::pkcs8::EncodePrivateKey;
    let key = p256::ecdsa::SigningKey::random(&mut OsRng);
    let point = key.verifying_key().to_encoded_point(false);
    JwkKey {
        encoding: EncodingKey::from_ec_der(key.to_pkcs8_der().unwrap().as_bytes()),
        jwk: json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
            "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
        }),
    }
}

fn rsa_jwks(kid: &str) -> Value {
    use rsa::traits::PublicKeyParts;
    let public = rsa_key().to_public_key();
    json!({"keys": [{
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
        "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
    }]})
}

/// A policy whose JWKS file (written to a temporary directory) holds `jwks`.
fn jwks_policy(jwks: &Value, algorithms: &[&str]) -> RuleSet {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "rules-jwks-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("jwks.json"), jwks.to_string()).unwrap();
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
    rules::load::<toml::Table>(file.to_str().unwrap(), &text)
        .unwrap_or_else(|e| panic!("{e}"))
        .1
}

#[test]
fn a_jwks_file_is_read_relative_to_the_policy_and_keys_are_picked_by_kid() {
    let (k1, k2) = (ec_jwk("k1"), ec_jwk("k2"));
    let rules = jwks_policy(&json!({"keys": [k1.jwk, k2.jwk]}), &["ES256"]);
    for (kid, key) in [("k1", &k1), ("k2", &k2)] {
        let token = sign(Algorithm::ES256, Some(kid), &good_claims(), &key.encoding);
        let evaluation = rules.traced(&bearer(&token));
        assert_eq!(
            request_headers(&evaluation),
            vec![("x-user".to_owned(), "alice".to_owned())]
        );
    }
    // k1's signature under k2's kid: the kid picks k2, and k2 does not verify it.
    let token = sign(Algorithm::ES256, Some("k2"), &good_claims(), &k1.encoding);
    assert_unauthenticated(
        &rules.traced(&bearer(&token)),
        "Bearer",
        "invalid: bad signature",
    );
    // Without a kid, two fitting keys are ambiguous.
    let token = sign(Algorithm::ES256, None, &good_claims(), &k1.encoding);
    assert_unauthenticated(
        &rules.traced(&bearer(&token)),
        "Bearer",
        "invalid: token has no kid and several keys fit algorithm ES256",
    );
    // With a single key, a token without kid uses it.
    let single = ec_jwk("only");
    let rules = jwks_policy(&json!({"keys": [single.jwk]}), &["ES256"]);
    let token = sign(Algorithm::ES256, None, &good_claims(), &single.encoding);
    assert!(rules.traced(&bearer(&token)).decision.is_allow());
}

/// A JWKS source double: `published` is what the issuer serves now, `cached` what the source
/// hands out until asked to refresh.
struct RotatingJwks {
    published: Mutex<Arc<JwkSet>>,
    cached: Mutex<Arc<JwkSet>>,
    calls: AtomicUsize,
    refreshes: AtomicUsize,
    urls: Mutex<Vec<String>>,
}

impl RotatingJwks {
    fn new(set: Value) -> Arc<Self> {
        let set: Arc<JwkSet> = Arc::new(serde_json::from_value(set).unwrap());
        Arc::new(Self {
            published: Mutex::new(set.clone()),
            cached: Mutex::new(set),
            calls: AtomicUsize::new(0),
            refreshes: AtomicUsize::new(0),
            urls: Mutex::new(Vec::new()),
        })
    }

    fn publish(&self, set: Value) {
        *self.published.lock().unwrap() = Arc::new(serde_json::from_value(set).unwrap());
    }
}

impl JwksSource for RotatingJwks {
    fn jwks<'a>(
        &'a self,
        url: &'a str,
        refresh: bool,
    ) -> BoxFuture<'a, Result<Arc<JwkSet>, JwksError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.urls.lock().unwrap().push(url.to_owned());
        if refresh {
            self.refreshes.fetch_add(1, Ordering::SeqCst);
            let fresh = self.published.lock().unwrap().clone();
            *self.cached.lock().unwrap() = fresh;
        }
        let set = self.cached.lock().unwrap().clone();
        Box::pin(async move { Ok(set) })
    }
}

struct DownJwks;

impl JwksSource for DownJwks {
    fn jwks<'a>(
        &'a self,
        url: &'a str,
        _refresh: bool,
    ) -> BoxFuture<'a, Result<Arc<JwkSet>, JwksError>> {
        let error = JwksError {
            url: url.to_owned(),
            reason: "connection refused".to_owned(),
        };
        Box::pin(async move { Err(error) })
    }
}

const URL_POLICY: &str = r#"
[default]
deny = {}
[[rules]]
name = "jwks-url"
[rules.credential]
from = { header = "authorization", scheme = "Bearer" }
jwt = { algorithms = ["ES256"], jwks_url = "https://issuer.test/.well-known/jwks.json" }
[rules.allow]
request_headers = [{ name = "x-user", value = "{{claims.sub}}" }]

[[rules]]
name = "second"
allow = {}
[rules.credential]
from = { cookie = "id" }
jwt = { algorithms = ["ES256"], jwks_url = "https://issuer.test/.well-known/jwks.json" }

[[rules]]
name = "third"
allow = {}
[rules.credential]
from = { query = "token" }
jwt = { algorithms = ["RS256"], jwks_url = "http://other.test/keys" }
"#;

#[test]
fn jwks_urls_are_listed_once_each() {
    let rules = policy(URL_POLICY);
    assert_eq!(
        rules.jwks_urls(),
        vec![
            "https://issuer.test/.well-known/jwks.json",
            "http://other.test/keys"
        ]
    );
}

#[test]
fn key_rotation_refreshes_once_for_a_new_kid_and_drops_the_old_one() {
    let rules = policy(URL_POLICY);
    let (old, new) = (ec_jwk("old"), ec_jwk("new"));
    let source = RotatingJwks::new(json!({"keys": [old.jwk]}));
    let hooks = Hooks {
        jwks: Some(source.clone()),
        ..Hooks::default()
    };
    let old_token = sign(Algorithm::ES256, Some("old"), &good_claims(), &old.encoding);
    let new_token = sign(Algorithm::ES256, Some("new"), &good_claims(), &new.encoding);

    let evaluation = evaluate(&rules, &bearer(&old_token), &hooks);
    assert_eq!(
        request_headers(&evaluation),
        vec![("x-user".to_owned(), "alice".to_owned())]
    );
    assert_eq!(source.calls.load(Ordering::SeqCst), 1);
    assert_eq!(source.refreshes.load(Ordering::SeqCst), 0);
    assert_eq!(
        source.urls.lock().unwrap().as_slice(),
        ["https://issuer.test/.well-known/jwks.json"]
    );

    source.publish(json!({"keys": [new.jwk]}));
    // Cached set lacks "new": exactly one refresh, then it verifies.
    let evaluation = evaluate(&rules, &bearer(&new_token), &hooks);
    assert!(evaluation.decision.is_allow(), "{evaluation:#?}");
    assert_eq!(source.calls.load(Ordering::SeqCst), 3);
    assert_eq!(source.refreshes.load(Ordering::SeqCst), 1);
    // Served from the refreshed set: no further refresh.
    assert!(
        evaluate(&rules, &bearer(&new_token), &hooks)
            .decision
            .is_allow()
    );
    assert_eq!(source.refreshes.load(Ordering::SeqCst), 1);

    // The old kid is gone: one refresh attempt for this request, then denied.
    let evaluation = evaluate(&rules, &bearer(&old_token), &hooks);
    assert_unauthenticated(&evaluation, "Bearer", "invalid: unknown kid");
    assert_eq!(source.refreshes.load(Ordering::SeqCst), 2);
}

#[test]
fn without_a_jwks_source_or_when_it_fails_the_token_is_refused() {
    let rules = policy(URL_POLICY);
    let key = ec_jwk("k");
    let token = sign(Algorithm::ES256, Some("k"), &good_claims(), &key.encoding);
    assert_unauthenticated(
        &rules.traced(&bearer(&token)),
        "Bearer",
        "invalid: no JWKS source to fetch the keys",
    );
    let hooks = Hooks {
        jwks: Some(Arc::new(DownJwks)),
        ..Hooks::default()
    };
    assert_unauthenticated(
        &evaluate(&rules, &bearer(&token), &hooks),
        "Bearer",
        "invalid: keys unavailable: JWKS https://issuer.test/.well-known/jwks.json: connection refused",
    );
}

// --- claims in `require` -----------------------------------------------------------------------

#[test]
fn claim_conditions_in_require_pass_non_matching_callers_to_the_next_rule() {
    let keys = hmac_keys();
    let rules = policy(&format!(
        r#"
[default]
deny = {{ status = 403, body = "no rule" }}

[[rules]]
name = "chat-pro"
credential = {{ from = {{ header = "authorization", scheme = "Bearer" }}, jwt = {{ algorithms = ["HS256"], {key} }} }}
allow = {{ request_headers = [{{ name = "x-user", value = "{{{{claims.sub}}}}" }}] }}
[rules.require]
claims = [
  {{ name = "scope", contains = "chat:write" }},
  {{ name = "tier", one_of = ["pro", "team"] }},
  {{ name = "realm.roles", contains = "writer" }},
  {{ name = "email", regex = ".*@example\\.com" }},
  {{ name = "banned", present = false }},
  {{ name = "sub", substring = "lic" }},
]

[[rules]]
name = "fallback"
credential = {{ from = {{ header = "authorization", scheme = "Bearer" }}, jwt = {{ algorithms = ["HS256"], {key} }} }}
deny = {{ status = 403, body = "plan {{{{claims.tier}}}} cannot chat" }}
"#,
        key = keys.verify
    ));
    let claims = |patch: Value| {
        let mut claims = json!({
            "sub": "alice", "exp": now() + 600, "scope": "read chat:write",
            "tier": "pro", "realm": {"roles": ["reader", "writer"]}, "email": "a@example.com",
        });
        for (k, v) in patch.as_object().unwrap() {
            claims[k] = v.clone();
        }
        sign(Algorithm::HS256, None, &claims, &keys.encoding)
    };
    let evaluation = rules.traced(&bearer(&claims(json!({}))));
    assert_eq!(
        request_headers(&evaluation),
        vec![("x-user".to_owned(), "alice".to_owned())]
    );
    let cases = [
        (
            json!({"tier": "free"}),
            "claim tier is not one_of [\"pro\", \"team\"]",
        ),
        (
            json!({"scope": "read"}),
            "claim scope is not contains \"chat:write\"",
        ),
        // `contains` on a string claim is one of its space-separated values, never a
        // substring: neither a longer scope nor a prefix of one grants `chat:write`.
        (
            json!({"scope": "read chat:write-all"}),
            "claim scope is not contains \"chat:write\"",
        ),
        (
            json!({"scope": "chat"}),
            "claim scope is not contains \"chat:write\"",
        ),
        (json!({"sub": "bob"}), "claim sub is not substring \"lic\""),
        (
            json!({"realm": {"roles": ["reader"]}}),
            "claim realm.roles is not contains \"writer\"",
        ),
        (
            json!({"email": "a@evil.com"}),
            "claim email is not regex \"^(?:.*@example\\\\.com)$\"",
        ),
        (json!({"banned": true}), "claim banned is not absent"),
        (json!({"tier": null}), "claim tier absent"),
    ];
    for (patch, reason) in cases {
        let evaluation = rules.traced(&bearer(&claims(patch.clone())));
        assert_eq!(evaluation.rule.as_deref(), Some("fallback"), "{patch}");
        assert_eq!(
            evaluation.trace[0],
            format!("rule \"chat-pro\": no match: require: {reason}"),
            "{patch}"
        );
        let deny = support::denied(&evaluation);
        assert_eq!(deny.http_status, 403);
    }
    let evaluation = rules.traced(&bearer(&claims(json!({"tier": "free"}))));
    assert_eq!(support::denied(&evaluation).body, "plan free cannot chat");
}
