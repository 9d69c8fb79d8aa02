//! The `[server]` keys that say how requests are read before the rules match them: path
//! normalisation (Envoy's names), HTTP mode's `path_prefix` and trusted proxies. Each value is
//! checked while the TOML is read, so a bad one is reported at its `file:line:col`.

use std::fmt;

use ipnet::IpNet;
use serde::Deserialize;
use serde::de::{self, Deserializer};

/// The `path_prefix` Envoy's `http_service` puts in front of the original path: starts with
/// `/`, does not end with one, and is already canonical (no `.`/`..`, escapes or `//`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPrefix(pub String);

impl<'de> Deserialize<'de> for PathPrefix {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let canonical = canonical::canonical_path(&text, &canonical::PathOptions::default()).ok();
        if text.len() < 2 || text.ends_with('/') || canonical.as_deref() != Some(text.as_str()) {
            return Err(de::Error::custom(format!(
                "path_prefix `{text}` must be a canonical path such as \"/authz\": start with `/`, \
                 no trailing `/`, no `.`/`..` segments, escapes or `//`"
            )));
        }
        Ok(PathPrefix(text))
    }
}

/// A network in `trusted_proxies`: `10.0.0.0/8`, `2001:db8::/32`, or a bare address (a /32 or
/// /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(pub IpNet);

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse::<IpNet>()
            .ok()
            .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
            .map(|net| Cidr(net.trunc()))
            .ok_or_else(|| {
                de::Error::custom(format!(
                    "invalid CIDR `{text}` in trusted_proxies: expected an address or \
                     address/prefix such as `10.0.0.0/8`"
                ))
            })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, LoadError};

    fn error(server: &str) -> String {
        let text = format!("[server]\n{server}\n[default]\ndeny = {{}}\n");
        match Config::parse("t.toml", &text) {
            Err(LoadError::Invalid(errors)) => errors.to_string(),
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("{server}: accepted"),
        }
    }

    #[test]
    fn bad_request_keys_are_refused_at_their_position() {
        assert!(
            error("path_prefix = \"authz\"")
                .starts_with("t.toml:2:15: path_prefix `authz` must be"),
            "{}",
            error("path_prefix = \"authz\"")
        );
        for bad in ["\"/authz/\"", "\"/a/../b\"", "\"/%61\"", "\"/\""] {
            assert!(error(&format!("path_prefix = {bad}")).contains("must be a canonical path"));
        }
        assert_eq!(
            error("trusted_proxies = [\"10.0.0.0/8\", \"nope\"]"),
            "t.toml:2:19: invalid CIDR `nope` in trusted_proxies: expected an address or \
             address/prefix such as `10.0.0.0/8`"
        );
        assert!(
            error("path_with_escaped_slashes_action = \"decode\"")
                .contains("unknown variant `decode`")
        );
    }

    #[test]
    fn request_keys_reach_the_rule_set() {
        let text = "[server]\nnormalize_path = false\nmerge_slashes = false\n\
            path_with_escaped_slashes_action = \"unescape\"\npath_prefix = \"/authz\"\n\
            trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n[default]\ndeny = {}\n";
        let config = Config::parse("t.toml", text).expect("loads");
        let options = config.rules.request_options();
        assert!(!options.normalize_path);
        assert!(!options.path.merge_slashes);
        assert_eq!(
            options.path.escaped_slashes,
            rules::EscapedSlashes::Unescape
        );
        assert_eq!(options.http_path_prefix, "/authz");
        let proxies: Vec<String> = options
            .trusted_proxies
            .iter()
            .map(std::string::ToString::to_string)
            .collect();
        assert_eq!(proxies, ["10.0.0.0/8", "::1/128"]);
        let defaults = Config::parse("t.toml", "[default]\ndeny = {}\n").expect("loads");
        assert_eq!(
            defaults.rules.request_options(),
            &rules::RequestOptions::default()
        );
    }
}
