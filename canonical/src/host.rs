//! The authority of a request, made canonical: what routing, the check and the upstream `Host`
//! agree on.

/// How an authority is made canonical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostOptions {
    /// Remove any port, not only the scheme's default (Envoy's `strip_any_host_port`).
    pub strip_any_port: bool,
}

/// Why an authority has no canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// A character that has no place in a host name (space, `@`, `/`, `%`, a control character…).
    #[error("invalid character in host")]
    InvalidCharacter,
    /// The port is not a number from 0 to 65535.
    #[error("invalid port in host")]
    InvalidPort,
    /// An IPv6 literal without its closing `]`, or text after it other than a port.
    #[error("invalid IPv6 literal in host")]
    InvalidIpLiteral,
    /// A port with no host (`:80`), or a name that is only dots.
    #[error("empty host name")]
    EmptyName,
}

/// The canonical form of an authority (`host[:port]`): the name lower-cased, one trailing dot
/// removed, the port removed when it is the default for `scheme` (`http` 80, `https` 443; an
/// empty scheme strips both) or always with [`HostOptions::strip_any_port`]. A port that stays
/// is written without leading zeros. An empty authority stays empty (a check may carry none).
pub fn canonical_host(raw: &str, scheme: &str, options: &HostOptions) -> Result<String, HostError> {
    if raw.is_empty() {
        return Ok(String::new());
    }
    let (name, port) = split_port(raw)?;
    let name = canonical_name(name)?;
    let port = match port {
        None => None,
        Some(port) => Some(parse_port(port)?),
    };
    let keep_port = port.filter(|&port| !options.strip_any_port && !is_default_port(scheme, port));
    Ok(match keep_port {
        Some(port) => format!("{name}:{port}"),
        None => name,
    })
}

/// Whether `raw` is already canonical, i.e. [`canonical_host`] would return it unchanged: a
/// lower-case DNS name or IPv4 address (no trailing dot), optionally with a port that stays (no
/// leading zero, not the scheme's default, not stripped by `options`). One scan without
/// allocating; `false` (IPv6 literals, anything else) only means "take the full algorithm".
pub fn is_canonical_host(raw: &str, scheme: &str, options: &HostOptions) -> bool {
    let (name, port) = match raw.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (raw, None),
    };
    let name_ok = raw.is_empty()
        || (!name.starts_with('.')
            && !name.ends_with('.')
            && !name.contains("..")
            && !name.is_empty()
            && name.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
            }));
    let port_ok = match port {
        None => true,
        Some(port) => {
            !options.strip_any_port
                && (port == "0" || !port.starts_with('0'))
                && port.bytes().all(|b| b.is_ascii_digit())
                && port
                    .parse::<u16>()
                    .is_ok_and(|port| !is_default_port(scheme, port))
        }
    };
    name_ok && port_ok
}

/// The name part of an authority, without its port: `a.example:8080` → `a.example`,
/// `[::1]:80` → `[::1]`. What routing and the rule engine's `host` matcher compare, because
/// backends pick a virtual host by name whatever port the client wrote.
pub fn host_name(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |close| &authority[..=close]);
    }
    authority
        .split_once(':')
        .map_or(authority, |(name, _)| name)
}

fn is_default_port(scheme: &str, port: u16) -> bool {
    match scheme {
        "http" => port == 80,
        "https" => port == 443,
        _ => port == 80 || port == 443,
    }
}

/// `name[:port]` or `[v6][:port]`; `None` for no port or an empty one (`host:`, RFC 3986 allows it).
fn split_port(raw: &str) -> Result<(&str, Option<&str>), HostError> {
    let (name, rest) = if raw.starts_with('[') {
        let close = raw.find(']').ok_or(HostError::InvalidIpLiteral)?;
        let (name, rest) = raw.split_at(close + 1);
        if !rest.is_empty() && !rest.starts_with(':') {
            return Err(HostError::InvalidIpLiteral);
        }
        (name, rest)
    } else {
        match raw.find(':') {
            Some(colon) => raw.split_at(colon),
            None => (raw, ""),
        }
    };
    let port = rest.strip_prefix(':').filter(|port| !port.is_empty());
    Ok((name, port))
}

fn parse_port(port: &str) -> Result<u16, HostError> {
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HostError::InvalidPort);
    }
    let trimmed = port.trim_start_matches('0');
    if trimmed.is_empty() {
        return Ok(0);
    }
    trimmed.parse().map_err(|_| HostError::InvalidPort)
}

fn canonical_name(name: &str) -> Result<String, HostError> {
    if let Some(literal) = name.strip_prefix('[') {
        let inner = literal
            .strip_suffix(']')
            .ok_or(HostError::InvalidIpLiteral)?;
        let valid = !inner.is_empty()
            && inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'));
        if !valid {
            return Err(HostError::InvalidIpLiteral);
        }
        return Ok(name.to_ascii_lowercase());
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.starts_with('.') || name.contains("..") || name.ends_with('.') {
        return Err(HostError::EmptyName);
    }
    // Letters, digits, `-`, `_` and `.`: what DNS names and IPv4 addresses use. Percent-escapes
    // and the other reg-name characters RFC 3986 allows have no place in a name a backend routes on.
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(HostError::InvalidCharacter);
    }
    Ok(name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(raw: &str, scheme: &str) -> Result<String, HostError> {
        canonical_host(raw, scheme, &HostOptions::default())
    }

    #[test]
    fn case_trailing_dot_and_default_port_go() {
        assert_eq!(
            host("Admin.Example.COM", "http").unwrap(),
            "admin.example.com"
        );
        assert_eq!(
            host("admin.example.com.", "http").unwrap(),
            "admin.example.com"
        );
        assert_eq!(
            host("admin.example.com:80", "http").unwrap(),
            "admin.example.com"
        );
        assert_eq!(
            host("admin.example.com.:080", "http").unwrap(),
            "admin.example.com"
        );
        assert_eq!(
            host("admin.example.com:443", "https").unwrap(),
            "admin.example.com"
        );
        assert_eq!(
            host("admin.example.com:", "http").unwrap(),
            "admin.example.com"
        );
    }

    #[test]
    fn other_ports_stay_unless_asked() {
        assert_eq!(host("a.example:443", "http").unwrap(), "a.example:443");
        assert_eq!(host("a.example:80", "https").unwrap(), "a.example:80");
        assert_eq!(host("a.example:8080", "").unwrap(), "a.example:8080");
        assert_eq!(host("a.example:443", "").unwrap(), "a.example");
        assert_eq!(host("a.example:0008080", "http").unwrap(), "a.example:8080");
        let any = HostOptions {
            strip_any_port: true,
        };
        assert_eq!(
            canonical_host("A.example:8080", "http", &any).unwrap(),
            "a.example"
        );
    }

    #[test]
    fn the_name_is_the_authority_without_its_port() {
        assert_eq!(host_name("a.example:8080"), "a.example");
        assert_eq!(host_name("a.example"), "a.example");
        assert_eq!(host_name("[::1]:8080"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
        assert_eq!(host_name(""), "");
    }

    #[test]
    fn ip_literals() {
        assert_eq!(host("[::1]:80", "http").unwrap(), "[::1]");
        assert_eq!(host("[FE80::1]:8080", "http").unwrap(), "[fe80::1]:8080");
        assert_eq!(host("127.0.0.1:80", "http").unwrap(), "127.0.0.1");
        assert_eq!(host("[::1", "http"), Err(HostError::InvalidIpLiteral));
        assert_eq!(host("[::1]x", "http"), Err(HostError::InvalidIpLiteral));
        assert_eq!(host("[zz]", "http"), Err(HostError::InvalidIpLiteral));
    }

    #[test]
    fn what_has_no_canonical_form() {
        assert_eq!(host("", "http").unwrap(), "");
        assert_eq!(host(":80", "http"), Err(HostError::EmptyName));
        assert_eq!(host(".", "http"), Err(HostError::EmptyName));
        assert_eq!(host("a..b", "http"), Err(HostError::EmptyName));
        assert_eq!(host("a.b..", "http"), Err(HostError::EmptyName));
        assert_eq!(host("a b", "http"), Err(HostError::InvalidCharacter));
        assert_eq!(host("user@a", "http"), Err(HostError::InvalidCharacter));
        assert_eq!(host("a%2eb", "http"), Err(HostError::InvalidCharacter));
        assert_eq!(host("a\nb", "http"), Err(HostError::InvalidCharacter));
        assert_eq!(host("a:8x", "http"), Err(HostError::InvalidPort));
        assert_eq!(host("a:65536", "http"), Err(HostError::InvalidPort));
        assert_eq!(host("a:1:2", "http"), Err(HostError::InvalidPort));
    }
}
