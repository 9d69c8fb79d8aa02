//! Compiling `[rules.credential.jwt]`: the algorithms, the one key source (a secret, a PEM key,
//! a JWKS file read here at load, or a JWKS URL the server fetches through the hook), and the
//! validation of `exp`, `nbf`, `iss`, `aud` and the required claims.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use toml::Spanned;

use super::Compiler;
use crate::config::{OneOrMany, RawJwt};
use crate::credential::{JwtKeys, JwtVerifier, jwt_set_keys};
use crate::error::Invalid;

const KEY_SOURCES: &str = "`secret`, `public_key_pem`, `jwks_file`, `jwks_url`";

/// Which spec claims `require` may name (the ones `jsonwebtoken` checks for presence).
const SPEC_CLAIMS: [&str; 5] = ["exp", "nbf", "iss", "aud", "sub"];

/// The configured algorithms, each with its position for errors.
type Algorithms = [(Algorithm, usize)];

impl Compiler<'_> {
    /// A compiled `jwt` verifier.
    pub(super) fn jwt(&mut self, raw: &Spanned<RawJwt>) -> Option<JwtVerifier> {
        let RawJwt {
            algorithms,
            secret,
            public_key_pem,
            jwks_file,
            jwks_url,
            issuer,
            audience,
            leeway_seconds,
            require,
        } = raw.get_ref();
        let (parsed, mut ok) = self.jwt_algorithms(algorithms);
        let one_key = self.exactly_one(
            raw.span().start,
            "jwt",
            KEY_SOURCES,
            &[
                ("secret", secret.is_some()),
                ("public_key_pem", public_key_pem.is_some()),
                ("jwks_file", jwks_file.is_some()),
                ("jwks_url", jwks_url.is_some()),
            ],
        );
        let keys = if one_key && ok {
            self.jwt_keys(&parsed, raw.get_ref())
        } else {
            None
        };
        let leeway = self.integer(
            "leeway_seconds",
            leeway_seconds.as_ref(),
            60,
            0,
            3600,
            "0..=3600",
        );
        let (required, claims_ok) = self.required_claims(require.as_ref());
        ok &= claims_ok;
        let algorithms: Vec<Algorithm> = parsed.iter().map(|(alg, _)| *alg).collect();
        let mut validation = Validation::new(algorithms.first().copied().unwrap_or_default());
        validation.algorithms.clone_from(&algorithms);
        validation.leeway = u64::try_from(leeway?).ok()?;
        self.expected_claims(
            &mut validation,
            required,
            issuer.as_ref(),
            audience.as_ref(),
        )?;
        let keys = keys?;
        ok.then_some(JwtVerifier {
            algorithms,
            keys,
            validation,
        })
    }

    /// The `algorithms` list parsed, and whether every name was known and the list not empty.
    fn jwt_algorithms(
        &mut self,
        algorithms: &Spanned<Vec<Spanned<String>>>,
    ) -> (Vec<(Algorithm, usize)>, bool) {
        let mut parsed = Vec::new();
        let mut ok = true;
        for name in algorithms.get_ref() {
            match name.get_ref().parse::<Algorithm>() {
                Ok(alg) => parsed.push((alg, name.span().start)),
                Err(_) => {
                    ok = false;
                    let name = name.get_ref().clone();
                    self.fail(
                        name_offset(algorithms, &name),
                        Invalid::JwtAlgorithm { name },
                    );
                }
            }
        }
        if algorithms.get_ref().is_empty() {
            ok = false;
            let field = "algorithms";
            self.fail(algorithms.span().start, Invalid::EmptyList { field });
        }
        (parsed, ok)
    }

    /// The spec claims a token must carry (`exp` unless `require` says otherwise), and whether
    /// `require` named only spec claims.
    fn required_claims(
        &mut self,
        require: Option<&Spanned<Vec<Spanned<String>>>>,
    ) -> (Vec<String>, bool) {
        let Some(require) = require else {
            return (vec!["exp".to_owned()], true);
        };
        let mut required = Vec::new();
        let mut ok = true;
        for claim in require.get_ref() {
            if SPEC_CLAIMS.contains(&claim.get_ref().as_str()) {
                required.push(claim.get_ref().clone());
            } else {
                let name = claim.get_ref().clone();
                self.fail(claim.span().start, Invalid::RequiredClaim { name });
                ok = false;
            }
        }
        (required, ok)
    }

    /// Time, issuer and audience checks, and the claims that must be present.
    fn expected_claims(
        &mut self,
        validation: &mut Validation,
        mut required: Vec<String>,
        issuer: Option<&Spanned<OneOrMany>>,
        audience: Option<&Spanned<OneOrMany>>,
    ) -> Option<()> {
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // jsonwebtoken only checks `iss`/`aud` when the token has them: a configured issuer or
        // audience must also be present.
        if let Some(issuer) = issuer {
            validation.set_issuer(&self.word_list("issuer", issuer)?);
            required.push("iss".to_owned());
        }
        match audience {
            Some(audience) => {
                validation.set_audience(&self.word_list("audience", audience)?);
                required.push("aud".to_owned());
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Some(())
    }

    /// The keys from the one key source given (checked by the caller).
    fn jwt_keys(&mut self, algorithms: &Algorithms, raw: &RawJwt) -> Option<JwtKeys> {
        if let Some(secret) = &raw.secret {
            self.secret_key(algorithms, secret)
        } else if let Some(pem) = &raw.public_key_pem {
            self.pem_key(algorithms, pem)
        } else if let Some(file) = &raw.jwks_file {
            self.jwks_file_keys(algorithms, file)
        } else if let Some(url) = &raw.jwks_url {
            self.jwks_url(url)
        } else {
            None
        }
    }

    /// An HMAC secret: every algorithm must be an HMAC one.
    fn secret_key(&mut self, algorithms: &Algorithms, secret: &Spanned<String>) -> Option<JwtKeys> {
        let mut ok = true;
        for (alg, offset) in algorithms {
            if alg.family() != AlgorithmFamily::Hmac {
                ok = false;
                let alg = format!("{alg:?}");
                let key = "a `secret` (HMAC) key; use `public_key_pem` or a JWKS";
                self.fail(*offset, Invalid::JwtKeyFamily { alg, key });
            }
        }
        if secret.get_ref().is_empty() {
            self.fail(secret.span().start, Invalid::EmptySecret);
            return None;
        }
        ok.then(|| JwtKeys::Static(DecodingKey::from_secret(secret.get_ref().as_bytes())))
    }

    /// A PEM public key: the algorithms must share its one family, which is not HMAC.
    fn pem_key(&mut self, algorithms: &Algorithms, pem: &Spanned<String>) -> Option<JwtKeys> {
        let families: Vec<AlgorithmFamily> = algorithms.iter().map(|(a, _)| a.family()).collect();
        let &family = families.first()?;
        if families.iter().any(|f| *f != family) {
            self.fail(pem.span().start, Invalid::JwtMixedFamilies);
            return None;
        }
        let bytes = pem.get_ref().as_bytes();
        let (key, name) = match family {
            AlgorithmFamily::Hmac => {
                let (alg, offset) = algorithms.first().copied()?;
                let alg = format!("{alg:?}");
                let key = "a public key; HMAC algorithms take a `secret`";
                self.fail(offset, Invalid::JwtKeyFamily { alg, key });
                return None;
            }
            AlgorithmFamily::Rsa => (DecodingKey::from_rsa_pem(bytes), "RSA"),
            AlgorithmFamily::Ec => (DecodingKey::from_ec_pem(bytes), "EC"),
            AlgorithmFamily::Ed => (DecodingKey::from_ed_pem(bytes), "Ed25519"),
        };
        if let Ok(key) = key {
            Some(JwtKeys::Static(key))
        } else {
            self.fail(pem.span().start, Invalid::PemKey { family: name });
            None
        }
    }

    /// The keys of a JWKS file that fit the algorithms: the one read of a JWKS file, at load.
    fn jwks_file_keys(
        &mut self,
        algorithms: &Algorithms,
        file: &Spanned<String>,
    ) -> Option<JwtKeys> {
        let path = file.get_ref().clone();
        let text = match std::fs::read_to_string(self.config_path(&path)) {
            Ok(text) => text,
            Err(error) => {
                let reason = error.to_string();
                let what = "JWKS file";
                self.fail(file.span().start, Invalid::ReadFile { what, path, reason });
                return None;
            }
        };
        let set: JwkSet = match serde_json::from_str(&text) {
            Ok(set) => set,
            Err(error) => {
                let reason = error.to_string();
                self.fail(file.span().start, Invalid::JwksFile { path, reason });
                return None;
            }
        };
        let keys: Vec<_> = jwt_set_keys(&set)
            .into_iter()
            .filter(|key| algorithms.iter().any(|(alg, _)| alg.family() == key.family))
            .collect();
        if keys.is_empty() {
            self.fail(file.span().start, Invalid::JwksFileEmpty { path });
            return None;
        }
        Some(JwtKeys::Set(keys))
    }

    /// A JWKS URL, checked for its scheme; the server fetches it through the JWKS hook.
    fn jwks_url(&mut self, url: &Spanned<String>) -> Option<JwtKeys> {
        let text = url.get_ref();
        let valid = (text.starts_with("http://") && text.len() > "http://".len())
            || (text.starts_with("https://") && text.len() > "https://".len());
        if !valid {
            self.fail(url.span().start, Invalid::JwksUrl);
            return None;
        }
        Some(JwtKeys::Url(text.clone()))
    }
}

/// The offset of `name` in an algorithms list (the list's start if not found).
fn name_offset(list: &Spanned<Vec<Spanned<String>>>, name: &str) -> usize {
    list.get_ref()
        .iter()
        .find(|item| item.get_ref() == name)
        .map_or(list.span().start, |item| item.span().start)
}
