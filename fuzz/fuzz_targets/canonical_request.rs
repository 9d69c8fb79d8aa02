//! A request head → the gateway's one canonical request (`gateway::request::canonicalise`:
//! authority, path, hop-by-hop headers, client address, the head rewritten), which routing, the
//! check and the upstream all use. The input's first byte picks the listener's options; the rest
//! is a head written as text: `METHOD TARGET` on the first line, `name: value` lines after.
//! Checked for every input that has a canonical form:
//!
//! - it is a fixed point: path and host are already canonical, and canonicalising the
//!   rewritten head again gives the same path, query and host;
//! - the head says it: the URI is `path?query`, there is exactly one `host`, the canonical one;
//! - the rule engine, reading the canonical request with the same path options (as
//!   `authz-server` behind this gateway does), sees the same path and host and finds it usable.

#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use canonical::{EscapedSlashes, HostOptions, PathOptions};
use gateway::request::{CanonicalOptions, canonicalise};
use http::header::{HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use rules::{Decision, Request, RequestOptions, RuleSet};

const ESCAPED: [EscapedSlashes; 3] = [
    EscapedSlashes::Keep,
    EscapedSlashes::Reject,
    EscapedSlashes::Unescape,
];

/// A policy that allows everything and echoes the path and host it sees, one per path option.
/// The echo goes into dynamic metadata, which carries text as rendered: a header would show a
/// control character in the query (UTF-8 `U+0085` is legal there) as a space, by design.
fn echo_rules(path: PathOptions) -> &'static RuleSet {
    static SETS: OnceLock<Vec<RuleSet>> = OnceLock::new();
    let sets = SETS.get_or_init(|| {
        let text = r#"
[default]
allow = { dynamic_metadata = { path = "{{request.path}}", host = "{{request.host}}" } }
"#;
        let mut sets = Vec::new();
        for merge_slashes in [false, true] {
            for escaped_slashes in ESCAPED {
                let (_, rules) = rules::load::<toml::Table>("echo.toml", text).expect("loads");
                sets.push(rules.with_request_options(RequestOptions {
                    path: PathOptions {
                        merge_slashes,
                        escaped_slashes,
                        ..PathOptions::default()
                    },
                    ..RequestOptions::default()
                }));
            }
        }
        sets
    });
    let escaped = ESCAPED
        .iter()
        .position(|e| *e == path.escaped_slashes)
        .unwrap_or(0);
    &sets[usize::from(path.merge_slashes) * 3 + escaped]
}

fn head(data: &[u8], version: http::Version) -> Option<http::request::Parts> {
    let mut lines = data.split(|&b| b == b'\n');
    let first = lines.next()?;
    let space = first.iter().position(|&b| b == b' ')?;
    let method = http::Method::from_bytes(&first[..space]).ok()?;
    let target = http::Uri::try_from(&first[space + 1..]).ok()?;
    let mut builder = http::Request::builder()
        .method(method)
        .uri(target)
        .version(version);
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            builder = builder.header(name, value);
        }
    }
    Some(builder.body(()).ok()?.into_parts().0)
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let options = CanonicalOptions {
        path: PathOptions {
            merge_slashes: flags & 1 != 0,
            escaped_slashes: ESCAPED[usize::from((flags >> 1) & 3) % 3],
            ..PathOptions::default()
        },
        host: HostOptions {
            strip_any_port: flags & 8 != 0,
        },
        xff_num_trusted_hops: u32::from((flags >> 4) & 3),
        ..CanonicalOptions::default()
    };
    let version = if flags & 64 != 0 {
        http::Version::HTTP_2
    } else {
        http::Version::HTTP_11
    };
    let scheme = if flags & 128 != 0 { "https" } else { "http" };
    let Some(mut parts) = head(data, version) else {
        return;
    };
    let peer: SocketAddr = "192.0.2.7:40000".parse().expect("addr");
    let Ok(canonical) = canonicalise(&mut parts, peer, scheme, &options) else {
        return;
    };

    if canonical.path != "*" {
        assert_eq!(
            canonical::canonical_path(&canonical.path, &options.path).as_deref(),
            Ok(canonical.path.as_str()),
            "the canonical path is not canonical"
        );
    }
    assert_eq!(
        canonical::canonical_host(&canonical.host, scheme, &options.host).as_deref(),
        Ok(canonical.host.as_str()),
        "the canonical host is not canonical"
    );
    assert_eq!(parts.uri, canonical.path_and_query().as_str());
    assert_eq!(parts.headers.get_all(http::header::HOST).iter().count(), 1);
    assert_eq!(parts.headers[http::header::HOST], canonical.host.as_str());

    let mut again = parts.clone();
    let second =
        canonicalise(&mut again, peer, scheme, &options).expect("a canonical head is accepted");
    assert_eq!(
        (&second.path, &second.query, &second.host),
        (&canonical.path, &canonical.query, &canonical.host),
        "canonicalising twice changed the request"
    );

    let request = Request {
        method: parts.method.to_string(),
        path: canonical.path_and_query(),
        host: canonical.host.clone(),
        scheme: scheme.to_owned(),
        ..Request::default()
    };
    let evaluation = echo_rules(options.path).decide(&request);
    let Decision::Allow(allow) = evaluation.decision else {
        panic!("the rule engine cannot read the gateway's canonical request {request:?}");
    };
    let seen = |key: &str| allow.dynamic_metadata.get(key).and_then(|v| v.as_str());
    assert_eq!(
        seen("path"),
        Some(canonical.path_and_query().as_str()),
        "path seen by the rules"
    );
    assert_eq!(
        seen("host"),
        Some(canonical.host.as_str()),
        "host seen by the rules"
    );
});
