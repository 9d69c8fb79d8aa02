//! JWT credentials with static keys: every supported algorithm with keys generated here, and
//! every way a token must be refused (expired, not yet valid, wrong issuer or audience, bad
//! signature, `alg: none`, algorithm confusion, oversized); claim conditions in `require`. JWKS
//! files and URLs are in `jwks.rs`.

mod support;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::tokens::{
    bearer, good_claims, hmac_keys, jwks_policy, jwt_policy, keys_for, now, rsa_jwks, rsa_key,
    rsa_keys, sign,
};
use support::{DecideTraced, assert_unauthenticated, policy, request, request_headers};

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
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => (alg, None),
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
    let encode = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("JSON"));
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
