//! Envoy-shaped CheckRequests (v3 and v2) for a small JSON POST, plus the headers a scenario needs.

use extauthz_proto::envoy::api::v2::core as core_v2;
use extauthz_proto::envoy::config::core::v3 as core_v3;
use extauthz_proto::{v2, v3};

/// The headers Envoy sends for `POST /v1/chat/completions` from curl, before a scenario's own.
const BASE_HEADERS: [(&str, &str); 8] = [
    (":authority", "api.example.com"),
    (":method", "POST"),
    (":path", "/v1/chat/completions"),
    (":scheme", "http"),
    ("content-type", "application/json"),
    ("user-agent", "curl/8.5.0"),
    ("accept", "*/*"),
    ("x-request-id", "7f1c2a9e-5d43-4a8b-9b1e-2f6c8d0a1b3c"),
];

/// The client and proxy addresses Envoy reports (a pod talking to its sidecar).
const SOURCE: (&str, u32) = ("10.1.2.3", 43512);
const DESTINATION: (&str, u32) = ("10.1.2.4", 8080);

fn headers(extra: &[(String, String)]) -> std::collections::HashMap<String, String> {
    BASE_HEADERS
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .chain(
            extra
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone())),
        )
        .collect()
}

fn v3_peer((ip, port): (&str, u32)) -> v3::attribute_context::Peer {
    v3::attribute_context::Peer {
        address: Some(core_v3::Address {
            address: Some(core_v3::address::Address::SocketAddress(
                core_v3::SocketAddress {
                    address: ip.to_owned(),
                    port_specifier: Some(core_v3::socket_address::PortSpecifier::PortValue(port)),
                    ..Default::default()
                },
            )),
        }),
        ..Default::default()
    }
}

fn v2_peer((ip, port): (&str, u32)) -> v2::attribute_context::Peer {
    v2::attribute_context::Peer {
        address: Some(core_v2::Address {
            address: Some(core_v2::address::Address::SocketAddress(
                core_v2::SocketAddress {
                    address: ip.to_owned(),
                    port_specifier: Some(core_v2::socket_address::PortSpecifier::PortValue(port)),
                    ..Default::default()
                },
            )),
        }),
        ..Default::default()
    }
}

/// A v3 CheckRequest as Envoy sends it for a small JSON POST, plus `extra` headers.
pub fn v3(extra: &[(String, String)]) -> v3::CheckRequest {
    v3::CheckRequest {
        attributes: Some(v3::AttributeContext {
            source: Some(v3_peer(SOURCE)),
            destination: Some(v3_peer(DESTINATION)),
            request: Some(v3::attribute_context::Request {
                time: None,
                http: Some(v3::attribute_context::HttpRequest {
                    id: "1".into(),
                    method: "POST".into(),
                    path: "/v1/chat/completions".into(),
                    host: "api.example.com".into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    headers: headers(extra),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
}

/// The same request in the v2 shapes.
pub fn v2(extra: &[(String, String)]) -> v2::CheckRequest {
    v2::CheckRequest {
        attributes: Some(v2::AttributeContext {
            source: Some(v2_peer(SOURCE)),
            destination: Some(v2_peer(DESTINATION)),
            request: Some(v2::attribute_context::Request {
                time: None,
                http: Some(v2::attribute_context::HttpRequest {
                    id: "1".into(),
                    method: "POST".into(),
                    path: "/v1/chat/completions".into(),
                    host: "api.example.com".into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    headers: headers(extra),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
}
