//! `input.attributes` for a Rego policy, as OPA-Envoy builds it from a v3 check: the received
//! `AttributeContext` in protobuf's canonical JSON mapping (what Go's `protojson.Marshal` writes:
//! lowerCamelCase names, fields at their default left out, 64-bit integers as strings, bytes as
//! base64, `Timestamp` as RFC 3339, `Struct` as a plain object). Written from the message as it
//! arrived, before the neutral view takes it apart, so every field a policy may read is there
//! (`request.http.id`, `size`, `rawBody`, `request.time`, `metadataContext`, `tlsSession`, the
//! peers' `certificate`, `labels` and `service`, …).

use extauthz_proto::v3;
use prost::Message;
use prost_reflect::{DynamicMessage, SerializeOptions};
use rules::OpaAttributes;

use super::received::DESCRIPTORS;

/// The v3 attributes in OPA-Envoy's shape; `None` only if our own descriptors cannot describe
/// them (then the rule engine builds the document from the neutral view).
pub(super) fn v3(attributes: &v3::AttributeContext) -> Option<Box<OpaAttributes>> {
    let descriptor = DESCRIPTORS
        .as_ref()?
        .get_message_by_name("envoy.service.auth.v3.AttributeContext")?;
    let message = DynamicMessage::decode(descriptor, attributes.encode_to_vec().as_slice()).ok()?;
    let json = message
        .serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new())
        .ok()?;
    Some(Box::new(OpaAttributes {
        attributes: json,
        ..OpaAttributes::V3_SHAPE
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;

    #[test]
    fn the_attributes_in_protojson_as_opa_envoy_hands_them_to_a_policy() {
        let attributes = v3::AttributeContext {
            source: Some(v3::attribute_context::Peer {
                address: Some(v3::Address {
                    address: Some(v3::address::Address::SocketAddress(v3::SocketAddress {
                        address: "10.0.0.7".into(),
                        port_specifier: Some(v3::socket_address::PortSpecifier::PortValue(51234)),
                        ..Default::default()
                    })),
                }),
                principal: "spiffe://cluster.local/ns/default/sa/a".into(),
                certificate: "-----BEGIN CERTIFICATE-----".into(),
                labels: HashMap::from([("app".into(), "client".into())]),
                ..Default::default()
            }),
            request: Some(v3::attribute_context::Request {
                time: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 0,
                }),
                http: Some(v3::attribute_context::HttpRequest {
                    id: "7890".into(),
                    method: "POST".into(),
                    headers: HashMap::from([(":path".into(), "/a?b=c".into())]),
                    path: "/a?b=c".into(),
                    size: 5,
                    raw_body: b"hello".to_vec(),
                    ..Default::default()
                }),
            }),
            context_extensions: HashMap::from([("route".into(), "r1".into())]),
            ..Default::default()
        };
        let rendered = v3(&attributes).expect("our descriptors describe AttributeContext");
        assert_eq!(rendered.ext_authz, "v3");
        assert_eq!(rendered.encoding, "protojson");
        assert_eq!(
            rendered.attributes,
            json!({
                "source": {
                    "address": {"socketAddress": {"address": "10.0.0.7", "portValue": 51234}},
                    "principal": "spiffe://cluster.local/ns/default/sa/a",
                    "certificate": "-----BEGIN CERTIFICATE-----",
                    "labels": {"app": "client"},
                },
                "request": {
                    "time": "2023-11-14T22:13:20Z",
                    "http": {
                        "id": "7890",
                        "method": "POST",
                        "headers": {":path": "/a?b=c"},
                        "path": "/a?b=c",
                        "size": "5",
                        "rawBody": "aGVsbG8=",
                    },
                },
                "contextExtensions": {"route": "r1"},
            })
        );
    }
}
