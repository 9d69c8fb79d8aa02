//! Policy text → compiled rule set (`authz_server::Config::parse`, the code `authz-server` runs
//! at start, reload and `validate`). Any text either loads or is refused with `file:line:col`
//! errors — never a panic, a hang or unbounded memory — and a policy that loads decides a few
//! fixed requests the same way indexed and traced, with wire-safe headers.

#![no_main]

mod common;

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use rules::{Peer, Request, Transport};

fn requests() -> Vec<Request> {
    let headers = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    vec![
        Request::default(),
        Request {
            method: "GET".into(),
            path: "/api/v1/items?api_key=k&x=1".into(),
            host: "Api.Example.com:443".into(),
            scheme: "https".into(),
            protocol: "HTTP/2".into(),
            headers: headers(&[
                ("x-ext-authz", "allow"),
                ("authorization", "Bearer a.b.c"),
                ("x-api-key", "test-key"),
                ("cookie", "session=s; other=1"),
                ("x-evil", "a\r\nset-cookie: forged\u{0}\u{7f}"),
            ]),
            source: Peer {
                ip: Some("10.1.2.3".parse().expect("ip")),
                port: 4242,
                principal: "spiffe://cluster.local/ns/default/sa/a".into(),
            },
            context_extensions: [("tenant".to_owned(), "acme\nx".to_owned())].into(),
            received: "x".repeat(70_000),
            ..Request::default()
        },
        Request {
            transport: Transport::Http,
            method: "POST".into(),
            path: "/authz/a/../%2e%2E//b%2Fc?q#frag".into(),
            host: "EXAMPLE.com.".into(),
            body: "{\"k\": \"v\"}".into(),
            headers: headers(&[
                ("x-forwarded-for", "1.2.3.4, 10.0.0.1"),
                ("x-ext-authz", "Allow"),
            ]),
            source: Peer {
                ip: Some("::ffff:10.0.0.9".parse().expect("ip")),
                ..Peer::default()
            },
            ..Request::default()
        },
    ]
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if common::names_special_file(text) {
        return;
    }
    match authz_server::Config::parse("fuzz/policy.toml", text) {
        Ok(config) => {
            let _ = config.warnings(true);
            for mut request in requests() {
                if !config.rules.needs_received() {
                    request.received.clear();
                }
                common::decide(&config.rules, &request);
            }
        }
        Err(error) => {
            let message = error.to_string();
            assert!(
                message.starts_with("fuzz/policy.toml:"),
                "an error that does not name its place: {message}"
            );
        }
    }
});
