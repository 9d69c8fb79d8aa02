//! Compiling `[rules.credential]`: where the credential is read from, how it is verified (a key
//! list, or a JWT: see `jwt.rs`), and the deny when it is missing or invalid. Key files are read
//! here, at load.

use toml::Spanned;

use super::Compiler;
use crate::action::DenyAction;
use crate::config::{RawCredential, RawDeny, RawHeaderValue, RawKeyList, RawOnFailure, RawSource};
use crate::credential::{Credential, MAX_STATIC_KEYS, Source, Verifier, parse_digest};
use crate::error::Invalid;
use crate::template::{Namespaces, Template};

const SOURCES: &str = "`header`, `query`, `cookie`";

impl Compiler<'_> {
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
            ok &= self.key_file(file, &mut digests);
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

    /// Reads `api_keys.file` (one hex digest a line, `#` comments) into `digests`: the one read
    /// of a key file, at load. Whether every line was a digest.
    fn key_file(&mut self, file: &Spanned<String>, digests: &mut Vec<[u8; 32]>) -> bool {
        let path = file.get_ref().clone();
        let text = match std::fs::read_to_string(self.config_path(&path)) {
            Ok(text) => text,
            Err(error) => {
                let reason = error.to_string();
                let what = "key file";
                self.fail(file.span().start, Invalid::ReadFile { what, path, reason });
                return false;
            }
        };
        let mut ok = true;
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
        ok
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
                let value = Template::literal(challenge);
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
            None => Some(Some(Template::literal(challenge))),
        };
        let mut deny = self.deny(&table, 401, 16)?;
        if let Some(value) = challenge_template? {
            deny.headers
                .insert(0, ("www-authenticate".to_owned(), value));
        }
        Some(deny)
    }
}
