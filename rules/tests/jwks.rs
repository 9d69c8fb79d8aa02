//! JWT credentials with JWKS: a JWKS file read relative to the policy with keys picked by `kid`,
//! and JWKS URLs served through the hook, with key rotation and a failing source.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::JwkSet;
use rules::hooks::BoxFuture;
use rules::{Hooks, JwksError, JwksSource};
use serde_json::{Value, json};
use support::tokens::{bearer, ec_jwk, good_claims, jwks_policy, sign};
use support::{DecideTraced, assert_unauthenticated, evaluate, policy, request_headers};

// --- JWKS --------------------------------------------------------------------------------------

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
        let set: Arc<JwkSet> = Arc::new(serde_json::from_value(set).expect("a JWK set"));
        Arc::new(Self {
            published: Mutex::new(set.clone()),
            cached: Mutex::new(set),
            calls: AtomicUsize::new(0),
            refreshes: AtomicUsize::new(0),
            urls: Mutex::new(Vec::new()),
        })
    }

    fn publish(&self, set: Value) {
        *self.published.lock().expect("not poisoned") =
            Arc::new(serde_json::from_value(set).expect("a JWK set"));
    }
}

impl JwksSource for RotatingJwks {
    fn jwks<'a>(
        &'a self,
        url: &'a str,
        refresh: bool,
    ) -> BoxFuture<'a, Result<Arc<JwkSet>, JwksError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.urls.lock().expect("not poisoned").push(url.to_owned());
        if refresh {
            self.refreshes.fetch_add(1, Ordering::SeqCst);
            let fresh = self.published.lock().expect("not poisoned").clone();
            *self.cached.lock().expect("not poisoned") = fresh;
        }
        let set = self.cached.lock().expect("not poisoned").clone();
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
