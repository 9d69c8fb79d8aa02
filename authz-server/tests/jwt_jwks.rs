//! JWT rules end to end with keys from a JWKS URL served by a tiny HTTP(S) server in the test:
//! rotation, the refresh rate limit, malformed and oversized tokens, a JWKS server that is down,
//! `https://` with a CA made at run time (trusted: allowed; not trusted: 401).

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authz_server::RuleEngine;
use authz_server::jwks::{HttpJwks, JwksSettings};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rules::JwksSource;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use support::{Answer, check, client, start_engine};

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "authz-tests";

/// An Ed25519 key with its `kid`.
struct Key {
    kid: String,
    signing: ed25519_dalek::SigningKey,
}

impl Key {
    fn new(kid: &str) -> Self {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).expect("randomness");
        Self {
            kid: kid.to_owned(),
            signing: ed25519_dalek::SigningKey::from_bytes(&seed),
        }
    }

    fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "use": "sig",
            "alg": "EdDSA",
            "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(self.signing.verifying_key().to_bytes()),
        })
    }

    fn token(&self, sub: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let der = self.signing.to_pkcs8_der().expect("pkcs8");
        jsonwebtoken::encode(
            &header,
            &serde_json::json!({ "sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": now + 600 }),
            &EncodingKey::from_ed_der(der.as_bytes()),
        )
        .expect("signs")
    }
}

/// Serves a JWKS document that the test can swap, counting fetches.
struct JwksServer {
    url: String,
    document: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
    /// How long each answer is held back.
    stall: Arc<Mutex<Duration>>,
}

impl JwksServer {
    /// Over plain HTTP.
    async fn start(keys: &[&Key]) -> Self {
        Self::start_with(keys, None).await
    }

    /// Over HTTPS as `localhost`, with a certificate issued by `ca`.
    async fn start_tls(keys: &[&Key], ca: &TestCa) -> Self {
        Self::start_with(keys, Some(ca.acceptor("localhost"))).await
    }

    async fn start_with(keys: &[&Key], tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address: SocketAddr = listener.local_addr().expect("address");
        let url = match tls {
            None => format!("http://{address}/.well-known/jwks.json"),
            Some(_) => format!("https://localhost:{}/jwks.json", address.port()),
        };
        let server = Self {
            url,
            document: Arc::default(),
            fetches: Arc::default(),
            stall: Arc::default(),
        };
        server.publish(keys);
        let (document, fetches) = (server.document.clone(), server.fetches.clone());
        let stall = server.stall.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (document, fetches, tls) = (document.clone(), fetches.clone(), tls.clone());
                let stall = stall.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_request| {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        let body = document.lock().expect("lock").clone();
                        let stall = *stall.lock().expect("lock");
                        async move {
                            tokio::time::sleep(stall).await;
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::from(body),
                            )))
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    let _ = match tls {
                        None => http.serve_connection(TokioIo::new(stream), service).await,
                        // A client that does not trust the CA aborts the handshake here.
                        Some(tls) => match tls.accept(stream).await {
                            Ok(stream) => {
                                http.serve_connection(TokioIo::new(stream), service).await
                            }
                            Err(_) => return,
                        },
                    };
                });
            }
        });
        server
    }

    fn publish(&self, keys: &[&Key]) {
        let keys: Vec<_> = keys.iter().map(|k| k.jwk()).collect();
        *self.document.lock().expect("lock") = serde_json::json!({ "keys": keys }).to_string();
    }

    /// Holds every later answer back this long.
    fn stall(&self, stall: Duration) {
        *self.stall.lock().expect("lock") = stall;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

fn policy(jwks_url: &str) -> String {
    format!(
        r#"
[default]
deny = {{ status = 403, body = "no rule" }}

[[rules]]
name = "jwt"
allow = {{ request_headers = [{{ name = "x-user", value = "{{{{claims.sub}}}}" }}] }}
[rules.credential]
from = {{ header = "authorization", scheme = "Bearer" }}
[rules.credential.jwt]
algorithms = ["EdDSA"]
jwks_url = "{jwks_url}"
issuer = "{ISSUER}"
audience = ["{AUDIENCE}"]
"#
    )
}

/// A certificate authority made at run time; nothing is committed.
struct TestCa(CertifiedIssuer<'static, KeyPair>);

impl TestCa {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "JWKS test CA");
        Self(CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA"))
    }

    fn root(&self) -> CertificateDer<'static> {
        self.0.der().clone()
    }

    /// A TLS acceptor presenting a certificate for `name` issued by this CA.
    fn acceptor(&self, name: &str) -> tokio_rustls::TlsAcceptor {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .signed_by(&key, &self.0)
            .expect("signed");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server config");
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

const REFRESH_INTERVAL: Duration = Duration::from_millis(300);

fn settings(extra_roots: Vec<CertificateDer<'static>>) -> JwksSettings {
    JwksSettings {
        fetch_timeout: Duration::from_millis(500),
        max_wait: Duration::from_millis(500),
        min_refresh_interval: REFRESH_INTERVAL,
        max_age: Duration::from_secs(60),
        extra_roots,
    }
}

async fn serve(jwks_url: &str) -> support::Running {
    serve_trusting(jwks_url, Vec::new()).await
}

/// The server with `extra_roots` trusted for `https://` JWKS URLs.
async fn serve_trusting(
    jwks_url: &str,
    extra_roots: Vec<CertificateDer<'static>>,
) -> support::Running {
    let config = authz_server::Config::parse("jwt.toml", &policy(jwks_url)).expect("loads");
    let hooks = authz_server::hooks::connect_with(&config.rules, None, settings(extra_roots)).await;
    start_engine(RuleEngine::with_hooks(config.rules, hooks)).await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn assert_unauthenticated(answer: &Answer) {
    assert_eq!((answer.status, answer.code), (401, 16), "{answer:?}");
    assert!(answer.header("www-authenticate").is_some(), "{answer:?}");
}

#[tokio::test]
async fn tokens_verify_against_a_jwks_url_and_follow_key_rotation() {
    let (k1, k2) = (Key::new("k1"), Key::new("k2"));
    let jwks = JwksServer::start(&[&k1]).await;
    let server = serve(&jwks.url).await;
    let mut client = client(&server).await;

    let auth = bearer(&k1.token("alice"));
    let answer = check(&mut client, "/", &[("authorization", &auth)]).await;
    assert_eq!(
        (answer.status, answer.header("x-user")),
        (200, Some("alice"))
    );
    for _ in 0..5 {
        check(&mut client, "/", &[("authorization", &auth)]).await;
    }
    assert_eq!(jwks.fetches(), 1, "the set is cached");

    // Rotation: the issuer now signs with k2 only. A k2 token names a kid the cached set lacks,
    // so the set is fetched again (once the refresh interval since the last fetch has passed).
    jwks.publish(&[&k2]);
    tokio::time::sleep(REFRESH_INTERVAL + Duration::from_millis(50)).await;
    let auth2 = bearer(&k2.token("bob"));
    let answer = check(&mut client, "/", &[("authorization", &auth2)]).await;
    assert_eq!(
        (answer.status, answer.header("x-user")),
        (200, Some("bob")),
        "{answer:?}"
    );
    assert_eq!(jwks.fetches(), 2);

    // The retired key no longer verifies, and unknown kids cannot force a fetch per request.
    assert_unauthenticated(&check(&mut client, "/", &[("authorization", &auth)]).await);
    let stranger = Key::new("k9");
    let auth9 = bearer(&stranger.token("mallory"));
    let flood = std::time::Instant::now();
    for _ in 0..20 {
        assert_unauthenticated(&check(&mut client, "/", &[("authorization", &auth9)]).await);
    }
    // At most one fetch per refresh interval, however many tokens name unknown kids.
    let intervals = flood.elapsed().as_millis() / REFRESH_INTERVAL.as_millis() + 1;
    let allowed = 2 + usize::try_from(intervals).expect("small");
    assert!(
        jwks.fetches() <= allowed.min(20),
        "refreshes are rate-limited: {} fetches, at most {allowed}",
        jwks.fetches()
    );
}

/// A check never waits on a JWKS refetch beyond its own budget: with the JWKS server stalling
/// 3 s, the token naming a new kid is refused (401) within its budget, tokens arriving while the
/// fetch runs are refused at once without another fetch, known keys keep working, and once the
/// fetch lands the new kid verifies.
#[tokio::test]
async fn an_unknown_kid_never_waits_for_a_stalled_jwks_refetch() {
    let (k1, k2) = (Key::new("k1"), Key::new("k2"));
    let jwks = JwksServer::start(&[&k1]).await;
    let config = authz_server::Config::parse("jwt.toml", &policy(&jwks.url)).expect("loads");
    let budget = JwksSettings {
        fetch_timeout: Duration::from_secs(10),
        max_wait: Duration::from_millis(300),
        ..settings(Vec::new())
    };
    let hooks = authz_server::hooks::connect_with(&config.rules, None, budget).await;
    let server = start_engine(RuleEngine::with_hooks(config.rules, hooks)).await;
    let mut client = client(&server).await;
    let old = bearer(&k1.token("alice"));
    assert_eq!(
        check(&mut client, "/", &[("authorization", &old)])
            .await
            .status,
        200
    );
    assert_eq!(jwks.fetches(), 1);

    jwks.publish(&[&k1, &k2]);
    jwks.stall(Duration::from_secs(3));
    tokio::time::sleep(REFRESH_INTERVAL + Duration::from_millis(50)).await;
    let new = bearer(&k2.token("bob"));
    let started = std::time::Instant::now();
    assert_unauthenticated(&check(&mut client, "/", &[("authorization", &new)]).await);
    for _ in 0..5 {
        assert_unauthenticated(&check(&mut client, "/", &[("authorization", &new)]).await);
    }
    assert_eq!(
        check(&mut client, "/", &[("authorization", &old)])
            .await
            .status,
        200
    );
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_millis(2500),
        "checks waited {waited:?} on a stalled fetch"
    );
    assert_eq!(jwks.fetches(), 2, "one refetch, however many tokens asked");

    // The fetch completes in the background; then the new kid verifies.
    loop {
        let answer = check(&mut client, "/", &[("authorization", &new)]).await;
        if answer.status == 200 {
            assert_eq!(answer.header("x-user"), Some("bob"));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the new key never arrived: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(jwks.fetches(), 2);
}

#[tokio::test]
async fn malformed_oversized_and_forged_tokens_are_401() {
    let k1 = Key::new("k1");
    let jwks = JwksServer::start(&[&k1]).await;
    let server = serve(&jwks.url).await;
    let mut client = client(&server).await;

    let good = k1.token("alice");
    let forged = {
        // Same header and claims, signed by another key that claims to be k1.
        Key {
            kid: "k1".into(),
            signing: Key::new("x").signing,
        }
        .token("alice")
    };
    let (head, rest) = good.split_once('.').expect("a JWT");
    let none_alg = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#),
        rest.split('.').next().expect("claims")
    );
    let huge = format!("{head}.{}.sig", "A".repeat(200 * 1024));
    for token in [
        "abc",
        "a.b.c",
        "..",
        "",
        forged.as_str(),
        none_alg.as_str(),
        huge.as_str(),
        "eyJhbGciOiJFZERTQSJ9.\u{7f}\u{0}.x",
    ] {
        let answer = check(&mut client, "/", &[("authorization", &bearer(token))]).await;
        assert_unauthenticated(&answer);
    }
    assert_unauthenticated(&check(&mut client, "/", &[]).await);
    let answer = check(&mut client, "/", &[("authorization", &bearer(&good))]).await;
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn a_jwks_server_that_is_down_denies_within_the_timeout() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address")
    };
    let server = serve(&format!("http://{closed}/jwks.json")).await;
    let mut client = client(&server).await;
    let token = Key::new("k1").token("alice");
    let started = std::time::Instant::now();
    let answer = check(&mut client, "/", &[("authorization", &bearer(&token))]).await;
    assert_ne!(answer.status, 200, "{answer:?}");
    assert_ne!(answer.code, 0);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn an_https_jwks_is_fetched_only_when_its_ca_is_trusted() {
    let ca = TestCa::new();
    let jwks = JwksServer::start_tls(&[&Key::new("k1")], &ca).await;

    let trusting = HttpJwks::new(settings(vec![ca.root()]));
    let set = trusting.jwks(&jwks.url, false).await.expect("fetches");
    assert_eq!(set.keys[0].common.key_id.as_deref(), Some("k1"));
    assert_eq!(jwks.fetches(), 1);

    let untrusting = HttpJwks::new(settings(Vec::new()));
    let error = untrusting
        .jwks(&jwks.url, false)
        .await
        .expect_err("an unknown CA is refused");
    assert_eq!(error.url, jwks.url);
    assert!(error.to_string().contains(&jwks.url), "{error}");
    assert!(error.reason.contains("certificate"), "{error}");
    assert_eq!(
        jwks.fetches(),
        1,
        "no request is sent over an untrusted connection"
    );
}

#[tokio::test]
async fn tokens_verify_against_an_https_jwks_url_and_are_401_when_its_ca_is_not_trusted() {
    let ca = TestCa::new();
    let k1 = Key::new("k1");
    let jwks = JwksServer::start_tls(&[&k1], &ca).await;
    assert!(jwks.url.starts_with("https://localhost:"), "{}", jwks.url);
    let auth = bearer(&k1.token("alice"));

    let server = serve_trusting(&jwks.url, vec![ca.root()]).await;
    let answer = check(&mut client(&server).await, "/", &[("authorization", &auth)]).await;
    assert_eq!(
        (answer.status, answer.header("x-user")),
        (200, Some("alice")),
        "{answer:?}"
    );

    let server = serve(&jwks.url).await;
    let answer = check(&mut client(&server).await, "/", &[("authorization", &auth)]).await;
    assert_unauthenticated(&answer);
}
