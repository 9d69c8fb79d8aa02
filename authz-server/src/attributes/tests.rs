use std::collections::HashMap;

use extauthz_proto::v3;

use super::*;

const RENDER_RECEIVED: Renders = Renders {
    received: true,
    opa_attributes: false,
};

fn socket(address: &str, port: u32) -> Option<v3::Address> {
    Some(v3::Address {
        address: Some(v3::address::Address::SocketAddress(v3::SocketAddress {
            address: address.to_owned(),
            port_specifier: Some(v3::socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    })
}

fn check(http: v3::attribute_context::HttpRequest) -> v3::CheckRequest {
    v3::CheckRequest {
        attributes: Some(v3::AttributeContext {
            source: Some(v3::attribute_context::Peer {
                address: socket("10.1.2.3", 51000),
                principal: "spiffe://cluster.local/ns/default/sa/a".to_owned(),
                ..Default::default()
            }),
            destination: Some(v3::attribute_context::Peer {
                address: socket("::1", 8080),
                ..Default::default()
            }),
            request: Some(v3::attribute_context::Request {
                time: None,
                http: Some(http),
            }),
            context_extensions: HashMap::from([("tenant".to_owned(), "acme".to_owned())]),
            ..Default::default()
        }),
    }
}

#[test]
fn v3_request_fields_reach_the_neutral_view() {
    let request = from_v3(
        check(v3::attribute_context::HttpRequest {
            method: "POST".into(),
            path: "/v1/chat?x=1".into(),
            host: "api.example.com".into(),
            scheme: "https".into(),
            protocol: "HTTP/2".into(),
            headers: HashMap::from([("X-Ext-Authz".to_owned(), "allow".to_owned())]),
            body: "{}".into(),
            ..Default::default()
        }),
        Renders::default(),
    );
    assert_eq!(request.transport, Transport::Grpc);
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v1/chat?x=1");
    assert_eq!(request.host, "api.example.com");
    assert_eq!(request.scheme, "https");
    assert_eq!(request.protocol, "HTTP/2");
    assert_eq!(request.header("x-ext-authz"), Some("allow"));
    assert_eq!(request.body, "{}");
    assert_eq!(request.source.ip, Some("10.1.2.3".parse().unwrap()));
    assert_eq!(request.source.port, 51000);
    assert_eq!(
        request.source.principal,
        "spiffe://cluster.local/ns/default/sa/a"
    );
    assert_eq!(request.destination.ip, Some("::1".parse().unwrap()));
    assert_eq!(request.context_extensions["tenant"], "acme");
    assert_eq!(request.received, "", "not rendered unless asked");
}

#[test]
fn pseudo_headers_fill_a_missing_request_line() {
    let request = from_v3(
        check(v3::attribute_context::HttpRequest {
            headers: HashMap::from([
                (":method".to_owned(), "GET".to_owned()),
                (":path".to_owned(), "/p".to_owned()),
                (":authority".to_owned(), "h".to_owned()),
            ]),
            ..Default::default()
        }),
        Renders::default(),
    );
    assert_eq!(
        (
            request.method.as_str(),
            request.path.as_str(),
            request.host.as_str()
        ),
        ("GET", "/p", "h")
    );
}

#[test]
fn header_map_is_used_and_duplicates_are_joined() {
    let header = |key: &str, raw: &str| v3::HeaderValue {
        key: key.to_owned(),
        value: String::new(),
        raw_value: raw.as_bytes().to_vec(),
    };
    let request = from_v3(
        check(v3::attribute_context::HttpRequest {
            header_map: Some(extauthz_proto::envoy::config::core::v3::HeaderMap {
                headers: vec![header("X-A", "1"), header("x-a", "2"), header("x-b", "3")],
            }),
            ..Default::default()
        }),
        Renders::default(),
    );
    assert_eq!(request.header("x-a"), Some("1,2"));
    assert_eq!(request.header("x-b"), Some("3"));
}

#[test]
fn empty_check_request_is_an_empty_view() {
    let request = from_v3(v3::CheckRequest::default(), RENDER_RECEIVED);
    assert_eq!(request.method, "");
    assert!(request.headers.is_empty());
    assert_eq!(request.source.principal, "");
}

#[test]
fn received_is_one_line_of_text_format() {
    let request = from_v3(
        check(v3::attribute_context::HttpRequest {
            method: "GET".into(),
            headers: HashMap::from([("x-ext-authz".to_owned(), "allow".to_owned())]),
            ..Default::default()
        }),
        RENDER_RECEIVED,
    );
    assert!(!request.received.contains('\n'), "{}", request.received);
    assert!(
        request.received.contains(r#"key:"x-ext-authz""#)
            && request.received.contains(r#"value:"allow""#),
        "{}",
        request.received
    );
    assert!(
        request
            .received
            .contains(r#"principal:"spiffe://cluster.local/ns/default/sa/a""#),
        "{}",
        request.received
    );
}

#[test]
fn v2_request_fields_reach_the_neutral_view() {
    let check = v2::CheckRequest {
        attributes: Some(v2::AttributeContext {
            source: Some(v2::attribute_context::Peer {
                principal: "spiffe://x/sa/a".into(),
                ..Default::default()
            }),
            request: Some(v2::attribute_context::Request {
                time: None,
                http: Some(v2::attribute_context::HttpRequest {
                    method: "PUT".into(),
                    path: "/v2".into(),
                    headers: HashMap::from([("x-ext-authz".to_owned(), "allow".to_owned())]),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    };
    let request = from_v2(check, RENDER_RECEIVED);
    assert_eq!(request.method, "PUT");
    assert_eq!(request.path, "/v2");
    assert_eq!(request.header("x-ext-authz"), Some("allow"));
    assert_eq!(request.source.principal, "spiffe://x/sa/a");
    assert!(
        request.received.contains(r#"method:"PUT""#),
        "{}",
        request.received
    );
}

/// Every field Envoy fills, one entry per map (prost-reflect prints map entries in hash order).
fn rich_v3() -> v3::AttributeContext {
    let mut check = check(v3::attribute_context::HttpRequest {
        id: "1234".into(),
        method: "POST".into(),
        headers: HashMap::from([("x-q\"uote".to_owned(), "tab\there é \u{1}".to_owned())]),
        path: "/a?b=c".into(),
        host: "api.example.com".into(),
        scheme: "https".into(),
        query: "b=c".into(),
        fragment: "f".into(),
        size: 42,
        protocol: "HTTP/2".into(),
        body: "{\"k\":\n1}".into(),
        raw_body: b"\x00\xffraw".to_vec(),
        header_map: None,
    });
    let attributes = check.attributes.as_mut().unwrap();
    attributes.request.as_mut().unwrap().time = Some(prost_types::Timestamp {
        seconds: 1_700_000_000,
        nanos: 5,
    });
    let source = attributes.source.as_mut().unwrap();
    source.service = "svc".into();
    source.labels = HashMap::from([("app".to_owned(), "web".to_owned())]);
    source.certificate = "PEM".into();
    attributes.metadata_context = Some(Default::default());
    attributes.route_metadata_context = Some(Default::default());
    attributes.tls_session = Some(v3::attribute_context::TlsSession {
        sni: "sni.example".into(),
    });
    check.attributes.unwrap()
}

#[test]
fn received_is_written_as_reflection_would_print_it() {
    let attributes = rich_v3();
    assert_eq!(
        super::received::v3(&attributes),
        super::received::reflected("envoy.service.auth.v3.AttributeContext", &attributes)
    );
    let empty = v3::AttributeContext::default();
    assert_eq!(
        super::received::v3(&empty),
        super::received::reflected("envoy.service.auth.v3.AttributeContext", &empty)
    );
    let v2 = v2::AttributeContext {
        source: Some(v2::attribute_context::Peer {
            principal: "spiffe://x/sa/a".into(),
            address: Some(v2::Address {
                address: Some(v2::address::Address::SocketAddress(v2::SocketAddress {
                    address: "10.0.0.1".into(),
                    port_specifier: Some(v2::socket_address::PortSpecifier::PortValue(0)),
                    protocol: 1,
                    ..Default::default()
                })),
            }),
            ..Default::default()
        }),
        request: Some(v2::attribute_context::Request {
            time: None,
            http: Some(v2::attribute_context::HttpRequest {
                method: "PUT".into(),
                headers: HashMap::from([("a".to_owned(), "b".to_owned())]),
                size: -1,
                ..Default::default()
            }),
        }),
        context_extensions: HashMap::from([("k".to_owned(), "v".to_owned())]),
        metadata_context: Some(Default::default()),
        ..Default::default()
    };
    assert_eq!(
        super::received::v2(&v2),
        super::received::reflected("envoy.service.auth.v2.AttributeContext", &v2)
    );
}

#[test]
fn received_lists_map_entries_in_sorted_order() {
    let mut attributes = rich_v3();
    let http = attributes.request.as_mut().unwrap().http.as_mut().unwrap();
    http.headers = HashMap::from([
        ("b".to_owned(), "2".to_owned()),
        ("a".to_owned(), "1".to_owned()),
        ("c".to_owned(), "3".to_owned()),
    ]);
    let text = super::received::v3(&attributes);
    assert!(
        text.contains(r#"headers:[{key:"a",value:"1"},{key:"b",value:"2"},{key:"c",value:"3"}]"#),
        "{text}"
    );
}
