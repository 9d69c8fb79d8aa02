//! Compiling `[databases]`, `[rules.credential]` and `[rules.lookup]`: keys are decoded, key files
//! and JWKS files read, SQL placeholders checked against the parameters, all at load.

use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use toml::Spanned;

use super::Compiler;
use crate::action::DenyAction;
use crate::config::{
    OneOrMany, RawCredential, RawDatabase, RawDeny, RawHeaderValue, RawJwt, RawKeyList, RawLookup,
    RawOnError, RawOnFailure, RawParam, RawSource,
};
use crate::credential::{
    Credential, JwtKeys, JwtVerifier, MAX_STATIC_KEYS, Source, Verifier, parse_digest,
};
use crate::error::Invalid;
use crate::hooks::{LookupPolicy, OnLookupError};
use crate::identity::ClaimPath;
use crate::lookup::{DatabaseSpec, LookupSpec, MAX_PARAMS, MAX_SQL_BYTES, Param, ParamSource};
use crate::template::Namespaces;

const SOURCES: &str = "`header`, `query`, `cookie`";
const KEY_SOURCES: &str = "`secret`, `public_key_pem`, `jwks_file`, `jwks_url`";
const PARAM_SOURCES: &str = "`credential`, `header`, `claim`, `path_segment`";

/// Which spec claims `require` may name (the ones `jsonwebtoken` checks for presence).
const SPEC_CLAIMS: [&str; 5] = ["exp", "nbf", "iss", "aud", "sub"];

impl Compiler<'_> {
    /// One `[databases.<name>]` table.
    pub(super) fn database(
        &mut self,
        name: &str,
        raw: &Spanned<RawDatabase>,
    ) -> Option<DatabaseSpec> {
        let RawDatabase { url, pool_size } = raw.get_ref();
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            let name = name.to_owned();
            self.fail(raw.span().start, Invalid::DatabaseName { name });
        }
        let text = url.get_ref();
        let url_ok = text.starts_with("sqlite:")
            || text.starts_with("postgres://")
            || text.starts_with("postgresql://");
        if !url_ok {
            self.fail(url.span().start, Invalid::DatabaseUrl);
        }
        let pool_size = self.integer("pool_size", pool_size.as_ref(), 8, 1, 1024, "1..=1024");
        let pool_size = u32::try_from(pool_size?).ok()?;
        (name_ok && url_ok).then(|| DatabaseSpec {
            name: name.to_owned(),
            url: text.clone(),
            pool_size,
        })
    }

    /// An optional integer in `min..=max`, `default` when absent.
    fn integer(
        &mut self,
        field: &'static str,
        raw: Option<&Spanned<i64>>,
        default: i64,
        min: i64,
        max: i64,
        range: &'static str,
    ) -> Option<i64> {
        let Some(raw) = raw else {
            return Some(default);
        };
        let value = *raw.get_ref();
        if (min..=max).contains(&value) {
            Some(value)
        } else {
            self.fail(
                raw.span().start,
                Invalid::OutOfRange {
                    field,
                    value,
                    range,
                },
            );
            None
        }
    }

    /// Exactly one of several optional fields, reported at `offset` otherwise.
    fn exactly_one(
        &mut self,
        offset: usize,
        what: &'static str,
        expected: &'static str,
        given: &[(&str, bool)],
    ) -> bool {
        let found: Vec<String> = given
            .iter()
            .filter(|(_, present)| *present)
            .map(|(name, _)| format!("`{name}`"))
            .collect();
        if found.len() == 1 {
            return true;
        }
        let found = match found.len() {
            0 => "none".to_owned(),
            n => format!("{n} ({})", found.join(", ")),
        };
        self.fail(
            offset,
            Invalid::OneOf {
                what,
                expected,
                found,
            },
        );
        false
    }

    /// A path from the config, relative to the policy file's directory.
    fn config_path(&self, relative: &str) -> PathBuf {
        self.base_dir.join(relative)
    }

    /// A compiled `[rules.credential]`.
    pub(super) fn credential(&mut self, raw: &Spanned<RawCredential>) -> Option<Credential> {
        let RawCredential {
            from,
            api_keys,
            bearer,
            jwt,
            on_failure,
        } = raw.get_ref();
        let source = self.source(from);
        let kinds: Vec<String> = [
            ("api_keys", api_keys.is_some()),
            ("bearer", bearer.is_some()),
            ("jwt", jwt.is_some()),
        ]
        .iter()
        .filter(|(_, given)| *given)
        .map(|(name, _)| format!("`{name}`"))
        .collect();
        if kinds.len() > 1 {
            let found = format!("{} ({})", kinds.len(), kinds.join(", "));
            self.fail(raw.span().start, Invalid::CredentialKinds { found });
            return None;
        }
        let scheme = from.get_ref().scheme.as_ref().map(|s| s.get_ref().as_str());
        let (verifier, challenge) = match (api_keys, bearer, jwt) {
            (Some(keys), _, _) => (self.key_list(keys).map(Verifier::Keys), "ApiKey"),
            (_, Some(keys), _) => (self.key_list(keys).map(Verifier::Keys), "Bearer"),
            (_, _, Some(jwt)) => (
                self.jwt(jwt).map(|jwt| Verifier::Jwt(Box::new(jwt))),
                "Bearer",
            ),
            // Verified by the rule's lookup (checked by the caller).
            (None, None, None) => (Some(Verifier::Lookup), scheme.unwrap_or("ApiKey")),
        };
        let on_failure = self.on_failure(on_failure.as_ref(), challenge);
        Some(Credential {
            source: source?,
            verifier: verifier?,
            on_failure: on_failure?,
        })
    }

    fn source(&mut self, raw: &Spanned<RawSource>) -> Option<Source> {
        let RawSource {
            header,
            scheme,
            query,
            cookie,
        } = raw.get_ref();
        let one = self.exactly_one(
            raw.span().start,
            "credential `from`",
            SOURCES,
            &[
                ("header", header.is_some()),
                ("query", query.is_some()),
                ("cookie", cookie.is_some()),
            ],
        );
        if let Some(scheme) = scheme {
            if header.is_none() {
                self.fail(scheme.span().start, Invalid::SchemeWithoutHeader);
                return None;
            }
            let word = scheme.get_ref();
            if word.is_empty() || !word.bytes().all(|b| b.is_ascii_graphic()) {
                self.fail(scheme.span().start, Invalid::Scheme);
                return None;
            }
        }
        if !one {
            return None;
        }
        match (header, query, cookie) {
            (Some(name), _, _) => Some(Source::Header {
                name: self.header_name(name, false)?,
                scheme: scheme.as_ref().map(|s| s.get_ref().clone()),
            }),
            (_, Some(name), _) => Some(Source::Query(self.nonempty_name(name)?)),
            (_, _, Some(name)) => Some(Source::Cookie(self.nonempty_name(name)?)),
            (None, None, None) => None,
        }
    }

    fn nonempty_name(&mut self, raw: &Spanned<String>) -> Option<String> {
        if raw.get_ref().is_empty() {
            self.fail(raw.span().start, Invalid::EmptyQueryName);
            return None;
        }
        Some(raw.get_ref().clone())
    }

    /// SHA-256 digests from the inline list and the key file.
    fn key_list(&mut self, raw: &Spanned<RawKeyList>) -> Option<Vec<[u8; 32]>> {
        let RawKeyList { sha256, file } = raw.get_ref();
        let mut digests = Vec::with_capacity(sha256.len());
        let mut ok = true;
        for (index, entry) in sha256.iter().enumerate() {
            match parse_digest(entry.get_ref()) {
                Some(digest) => digests.push(digest),
                None => {
                    ok = false;
                    let index = index + 1;
                    self.fail(entry.span().start, Invalid::KeyDigest { index });
                }
            }
        }
        if let Some(file) = file {
            let path = file.get_ref().clone();
            match std::fs::read_to_string(self.config_path(&path)) {
                Ok(text) => {
                    for (number, line) in text.lines().enumerate() {
                        let line = line.split('#').next().unwrap_or_default().trim();
                        if line.is_empty() {
                            continue;
                        }
                        match parse_digest(line) {
                            Some(digest) => digests.push(digest),
                            None => {
                                ok = false;
                                let (path, line) = (path.clone(), number + 1);
                                self.fail(file.span().start, Invalid::KeyFileLine { path, line });
                            }
                        }
                    }
                }
                Err(error) => {
                    ok = false;
                    let reason = error.to_string();
                    let what = "key file";
                    self.fail(file.span().start, Invalid::ReadFile { what, path, reason });
                }
            }
        }
        if ok && digests.is_empty() {
            self.fail(raw.span().start, Invalid::NoKeys);
            return None;
        }
        if digests.len() > MAX_STATIC_KEYS {
            let (count, max) = (digests.len(), MAX_STATIC_KEYS);
            self.fail(raw.span().start, Invalid::TooManyKeys { count, max });
            return None;
        }
        ok.then_some(digests)
    }

    fn jwt(&mut self, raw: &Spanned<RawJwt>) -> Option<JwtVerifier> {
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
            self.jwt_keys(&parsed, secret, public_key_pem, jwks_file, jwks_url)
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
        let mut required: Vec<String> = vec!["exp".to_owned()];
        if let Some(require) = require {
            required.clear();
            for claim in require.get_ref() {
                if SPEC_CLAIMS.contains(&claim.get_ref().as_str()) {
                    required.push(claim.get_ref().clone());
                } else {
                    let name = claim.get_ref().clone();
                    self.fail(claim.span().start, Invalid::RequiredClaim { name });
                    ok = false;
                }
            }
        }
        let algorithms: Vec<Algorithm> = parsed.iter().map(|(alg, _)| *alg).collect();
        let mut validation = Validation::new(algorithms.first().copied().unwrap_or_default());
        validation.algorithms.clone_from(&algorithms);
        validation.leeway = u64::try_from(leeway?).ok()?;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // jsonwebtoken only checks `iss`/`aud` when the token has them: a configured issuer or
        // audience must also be present.
        if let Some(issuer) = issuer {
            validation.set_issuer(&self.word_list_of("issuer", issuer)?);
            required.push("iss".to_owned());
        }
        match audience {
            Some(audience) => {
                validation.set_audience(&self.word_list_of("audience", audience)?);
                required.push("aud".to_owned());
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        let keys = keys?;
        ok.then_some(JwtVerifier {
            algorithms,
            keys,
            validation,
        })
    }

    fn word_list_of(
        &mut self,
        field: &'static str,
        raw: &Spanned<OneOrMany>,
    ) -> Option<Vec<String>> {
        let words: Vec<String> = match raw.get_ref() {
            OneOrMany::One(word) => vec![word.clone()],
            OneOrMany::Many(words) => words.iter().map(|w| w.get_ref().clone()).collect(),
        };
        if words.is_empty() {
            self.fail(raw.span().start, Invalid::EmptyList { field });
            return None;
        }
        Some(words)
    }

    fn jwt_keys(
        &mut self,
        algorithms: &[(Algorithm, usize)],
        secret: &Option<Spanned<String>>,
        public_key_pem: &Option<Spanned<String>>,
        jwks_file: &Option<Spanned<String>>,
        jwks_url: &Option<Spanned<String>>,
    ) -> Option<JwtKeys> {
        if let Some(secret) = secret {
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
            return ok
                .then(|| JwtKeys::Static(DecodingKey::from_secret(secret.get_ref().as_bytes())));
        }
        if let Some(pem) = public_key_pem {
            let families: Vec<AlgorithmFamily> =
                algorithms.iter().map(|(a, _)| a.family()).collect();
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
            return match key {
                Ok(key) => Some(JwtKeys::Static(key)),
                Err(_) => {
                    self.fail(pem.span().start, Invalid::PemKey { family: name });
                    None
                }
            };
        }
        if let Some(file) = jwks_file {
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
            let keys: Vec<_> = crate::credential::jwt_set_keys(&set)
                .into_iter()
                .filter(|key| algorithms.iter().any(|(alg, _)| alg.family() == key.family))
                .collect();
            if keys.is_empty() {
                self.fail(file.span().start, Invalid::JwksFileEmpty { path });
                return None;
            }
            return Some(JwtKeys::Set(keys));
        }
        if let Some(url) = jwks_url {
            let text = url.get_ref();
            let valid = (text.starts_with("http://") && text.len() > "http://".len())
                || (text.starts_with("https://") && text.len() > "https://".len());
            if !valid {
                self.fail(url.span().start, Invalid::JwksUrl);
                return None;
            }
            return Some(JwtKeys::Url(text.clone()));
        }
        None
    }

    /// The deny for a missing or invalid credential: 401 / `UNAUTHENTICATED` with a
    /// `www-authenticate` challenge by default.
    fn on_failure(
        &mut self,
        raw: Option<&Spanned<RawOnFailure>>,
        challenge: &str,
    ) -> Option<DenyAction> {
        // Nothing is verified yet: only request variables.
        let saved = std::mem::replace(&mut self.namespaces, Namespaces::REQUEST);
        let result = self.on_failure_in_scope(raw, challenge);
        self.namespaces = saved;
        result
    }

    fn on_failure_in_scope(
        &mut self,
        raw: Option<&Spanned<RawOnFailure>>,
        challenge: &str,
    ) -> Option<DenyAction> {
        let Some(raw) = raw else {
            let mut deny = self.deny(&RawDeny::default(), 401, 16)?;
            if !challenge.is_empty() {
                let value = crate::template::Template::literal(challenge);
                deny.headers
                    .insert(0, ("www-authenticate".to_owned(), value));
            }
            return Some(deny);
        };
        let RawOnFailure {
            status,
            grpc_code,
            body,
            headers,
            dynamic_metadata,
            www_authenticate,
        } = raw.get_ref();
        let table = RawDeny {
            status: status.clone(),
            grpc_code: grpc_code.clone(),
            body: body.clone(),
            headers: headers.clone(),
            dynamic_metadata: dynamic_metadata.clone(),
        };
        let challenge_template = match www_authenticate {
            Some(value) if value.get_ref().is_empty() => Some(None),
            Some(value) => self.header_value(value).map(Some),
            None if challenge.is_empty()
                || headers.iter().any(|RawHeaderValue { name, .. }| {
                    name.get_ref().eq_ignore_ascii_case("www-authenticate")
                }) =>
            {
                Some(None)
            }
            None => Some(Some(crate::template::Template::literal(challenge))),
        };
        let mut deny = self.deny(&table, 401, 16)?;
        if let Some(value) = challenge_template? {
            deny.headers
                .insert(0, ("www-authenticate".to_owned(), value));
        }
        Some(deny)
    }

    /// A compiled `[rules.lookup]`.
    pub(super) fn lookup(
        &mut self,
        raw: &Spanned<RawLookup>,
        has_credential: bool,
        has_jwt: bool,
    ) -> Option<LookupSpec> {
        let RawLookup {
            database,
            query,
            params,
            timeout_ms,
            cache_ttl_seconds,
            negative_ttl_seconds,
            on_error,
            on_missing,
            on_db_error,
        } = raw.get_ref();
        let mut ok = true;
        if !self.database_names.contains(database.get_ref()) {
            ok = false;
            let known = if self.database_names.is_empty() {
                "no `[databases.<name>]` table is declared".to_owned()
            } else {
                format!("declared: {}", self.database_names.join(", "))
            };
            let name = database.get_ref().clone();
            self.fail(
                database.span().start,
                Invalid::UnknownDatabase { name, known },
            );
        }
        let sql = query.get_ref();
        if sql.trim().is_empty() {
            ok = false;
            self.fail(query.span().start, Invalid::EmptySql);
        } else if sql.len() > MAX_SQL_BYTES {
            ok = false;
            let (len, max) = (sql.len(), MAX_SQL_BYTES);
            self.fail(query.span().start, Invalid::SqlTooLong { len, max });
        }
        if params.len() > MAX_PARAMS {
            ok = false;
            let (count, max) = (params.len(), MAX_PARAMS);
            self.fail(raw.span().start, Invalid::TooManyParams { count, max });
        } else if ok {
            ok &= self.placeholders(query, params.len());
        }
        let compiled: Vec<Option<Param>> = params
            .iter()
            .map(|p| self.param(p, has_credential, has_jwt))
            .collect();
        let timeout = self.integer(
            "timeout_ms",
            timeout_ms.as_ref(),
            200,
            1,
            60_000,
            "1..=60000",
        );
        let day = 86_400;
        let cache = self.integer(
            "cache_ttl_seconds",
            cache_ttl_seconds.as_ref(),
            30,
            0,
            day,
            "0..=86400",
        );
        let negative = self.integer(
            "negative_ttl_seconds",
            negative_ttl_seconds.as_ref(),
            5,
            0,
            day,
            "0..=86400",
        );
        let on_error = match on_error {
            None => Some(OnLookupError::FailClosed),
            Some(raw) => match raw.get_ref() {
                RawOnError::Name(name) if name == "fail_closed" => Some(OnLookupError::FailClosed),
                RawOnError::Name(name) => {
                    let name = name.clone();
                    self.fail(raw.span().start, Invalid::OnError { name });
                    None
                }
                RawOnError::ServeStale(seconds) => {
                    let seconds = Spanned::new(raw.span(), *seconds);
                    self.integer(
                        "serve_stale_seconds",
                        Some(&seconds),
                        0,
                        1,
                        day,
                        "1..=86400",
                    )
                    .map(|s| OnLookupError::ServeStale { max_stale: secs(s) })
                }
            },
        };
        // The row is what failed to arrive: `on_missing` / `on_db_error` see claims, not `db`.
        let saved = std::mem::replace(
            &mut self.namespaces,
            Namespaces {
                claims: has_jwt,
                db: false,
            },
        );
        let on_missing = match on_missing {
            Some(table) => self.deny(table.get_ref(), 403, 7),
            None => self.deny(&RawDeny::default(), 403, 7),
        };
        let on_db_error = match on_db_error {
            Some(table) => self.deny(table.get_ref(), 503, 14),
            None => self.deny(&RawDeny::default(), 503, 14),
        };
        self.namespaces = saved;
        let params: Vec<Param> = compiled.into_iter().collect::<Option<_>>()?;
        let policy = LookupPolicy {
            timeout: Duration::from_millis(u64::try_from(timeout?).ok()?),
            cache_ttl: secs(cache?),
            negative_ttl: secs(negative?),
            on_error: on_error?,
        };
        let (on_missing, on_db_error) = (on_missing?, on_db_error?);
        ok.then(|| LookupSpec {
            database: database.get_ref().clone(),
            sql: sql.clone(),
            params,
            policy,
            on_missing,
            on_db_error,
        })
    }

    /// Every `$n` in the SQL is a parameter and every parameter is used.
    fn placeholders(&mut self, query: &Spanned<String>, count: usize) -> bool {
        let used = placeholder_indexes(query.get_ref());
        let offset = query.span().start;
        if let Some(&index) = used.iter().find(|&&i| i == 0 || i > count) {
            self.fail(offset, Invalid::PlaceholderOutOfRange { index, count });
            return false;
        }
        if let Some(index) = (1..=count).find(|i| !used.contains(i)) {
            self.fail(offset, Invalid::PlaceholderUnused { index, count });
            return false;
        }
        true
    }

    fn param(
        &mut self,
        raw: &Spanned<RawParam>,
        has_credential: bool,
        has_jwt: bool,
    ) -> Option<Param> {
        let RawParam {
            credential,
            header,
            claim,
            path_segment,
            sha256,
        } = raw.get_ref();
        let one = self.exactly_one(
            raw.span().start,
            "a lookup parameter",
            PARAM_SOURCES,
            &[
                ("credential", credential.is_some()),
                ("header", header.is_some()),
                ("claim", claim.is_some()),
                ("path_segment", path_segment.is_some()),
            ],
        );
        if !one {
            return None;
        }
        let hash = sha256.unwrap_or(false);
        if let Some(form) = credential {
            if sha256.is_some() {
                self.fail(raw.span().start, Invalid::CredentialSha);
                return None;
            }
            if !has_credential {
                self.fail(form.span().start, Invalid::ParamNeedsCredential);
                return None;
            }
            let sha256 = match form.get_ref().as_str() {
                "raw" => false,
                "sha256" => true,
                _ => {
                    self.fail(form.span().start, Invalid::CredentialForm);
                    return None;
                }
            };
            return Some(Param {
                source: ParamSource::Credential,
                sha256,
            });
        }
        let source = if let Some(name) = header {
            ParamSource::Header(self.header_name(name, true)?)
        } else if let Some(name) = claim {
            if !has_jwt {
                self.fail(name.span().start, Invalid::ParamNeedsJwt);
                return None;
            }
            ParamSource::Claim(ClaimPath::new(name.get_ref()))
        } else if let Some(segment) = path_segment {
            let n = self.integer("path_segment", Some(segment), 1, 1, 64, "1..=64")?;
            ParamSource::PathSegment(usize::try_from(n).ok()?)
        } else {
            return None;
        };
        Some(Param {
            source,
            sha256: hash,
        })
    }
}

fn secs(seconds: i64) -> Duration {
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

/// The offset of `name` in an algorithms list (the list's start if not found).
fn name_offset(list: &Spanned<Vec<Spanned<String>>>, name: &str) -> usize {
    list.get_ref()
        .iter()
        .find(|item| item.get_ref() == name)
        .map_or(list.span().start, |item| item.span().start)
}

/// The `n` of every `$n` placeholder in `sql`.
fn placeholder_indexes(sql: &str) -> Vec<usize> {
    let bytes = sql.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        i += 1;
        if b != b'$' {
            continue;
        }
        let start = i;
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if let Some(n) = sql.get(start..i).and_then(|d| d.parse().ok()) {
            found.push(n);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::placeholder_indexes;

    #[test]
    fn placeholders_are_found() {
        assert_eq!(
            placeholder_indexes("SELECT a FROM t WHERE k = $1 AND o = $12 AND p = '$'"),
            vec![1, 12]
        );
        assert_eq!(placeholder_indexes("SELECT 1"), Vec::<usize>::new());
    }
}
