//! Rego rules served end to end: one table of requests and the CheckResponse each must get over
//! gRPC v3, gRPC v2 and Envoy's HTTP mode (status, gRPC code, headers, body, dynamic metadata),
//! from OPA-Envoy's "additional controls" example policy; and hot reload of a `.rego` file.

mod support;

use std::time::Duration;

use authz_server::{Config, RuleEngine};
use extauthz_proto::envoy::service::auth::v2::authorization_client::AuthorizationClient as V2Client;
use extauthz_proto::{v2, v3};
use serde_json::{Value as Json, json};
use support::{client, start_engine};

/// OPA-Envoy's example with an object decision, written by us from its documentation.
const POLICY: &str = include_str!("../../rules/tests/rego/result.rego");

const CONFIG: &str = r#"
[default]
deny = { status = 418 }

[[rules]]
name = "opa"
[rules.rego]
files = ["policy.rego"]
query = "data.envoy.authz.result"
"#;

fn dir_with(test: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = support::temp_path(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("writes");
    }
    dir
}

/// What one row expects, whichever transport carried the check.
struct Row {
    headers: &'static [(&'static str, &'static str)],
    status: u16,
    code: i32,
    /// Upstream headers (allow) or the denied response's headers.
    answer_headers: &'static [(&'static str, &'static str)],
    body: &'static str,
    /// As a `google.protobuf.Struct` carries it: numbers are doubles.
    metadata: Json,
}

fn table() -> Vec<Row> {
    let controls = &[
        ("x-ext-auth-allow", "yes"),
        ("x-validated-by", "security-checkpoint"),
    ];
    vec![
        Row {
            headers: &[("x-user", "alice")],
            status: 200,
            code: 0,
            answer_headers: controls,
            body: "",
            metadata: json!({ "user": "alice", "checks": 2.0 }),
        },
        Row {
            headers: &[("accept", "*/*")],
            status: 401,
            code: 7,
            answer_headers: controls,
            body: "Authentication Failed",
            metadata: json!({ "user": "", "checks": 2.0 }),
        },
        Row {
            headers: &[("x-user", "bob")],
            status: 403,
            code: 7,
            answer_headers: controls,
            body: "Unauthorized Request",
            metadata: json!({ "user": "bob", "checks": 2.0 }),
        },
    ]
}

fn struct_json(value: &prost_types::Struct) -> Json {
    Json::Object(
        value
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), value_json(v)))
            .collect(),
    )
}

fn value_json(value: &prost_types::Value) -> Json {
    use prost_types::value::Kind;
    match &value.kind {
        Some(Kind::StringValue(s)) => json!(s),
        Some(Kind::NumberValue(n)) => json!(n),
        Some(Kind::BoolValue(b)) => json!(b),
        Some(Kind::StructValue(s)) => struct_json(s),
        Some(Kind::ListValue(l)) => Json::Array(l.values.iter().map(value_json).collect()),
        Some(Kind::NullValue(_)) | None => Json::Null,
    }
}

fn pairs3(headers: &[v3::HeaderValueOption]) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect()
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn a_table_of_requests_gets_opa_envoys_responses_over_v3_v2_and_http() {
    let dir = dir_with(
        "rego-table",
        &[("policy.rego", POLICY), ("rules.toml", CONFIG)],
    );
    let config = Config::load(&dir.join("rules.toml")).unwrap_or_else(|e| panic!("{e}"));
    let server = start_engine(RuleEngine::connect(config.rules, None).await).await;
    let mut v3_client = client(&server).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.grpc))
        .expect("uri")
        .connect()
        .await
        .expect("connects");
    let mut v2_client = V2Client::new(channel);

    for row in table() {
        let headers = || support::header_map(row.headers);
        // gRPC v3: the whole CheckResponse.
        let request = support::check_of(v3::attribute_context::HttpRequest {
            method: "GET".into(),
            path: "/x?debug=1&keep=2".into(),
            host: "api.example.com".into(),
            headers: headers(),
            ..Default::default()
        });
        let response = v3_client
            .check(request)
            .await
            .expect("answers")
            .into_inner();
        let code = response.status.as_ref().map_or(-1, |s| s.code);
        assert_eq!(code, row.code, "v3 {:?}", row.headers);
        assert_eq!(
            response.dynamic_metadata.as_ref().map(struct_json),
            Some(row.metadata.clone()),
            "v3 {:?}",
            row.headers
        );
        match response.http_response {
            Some(v3::check_response::HttpResponse::OkResponse(ok)) => {
                assert_eq!(row.status, 200);
                assert_eq!(pairs3(&ok.headers), owned(row.answer_headers));
                assert!(ok.headers.iter().all(|h| !h.append.is_some_and(|a| a)));
                assert_eq!(
                    ok.headers_to_remove,
                    ["one-auth-header", "another-auth-header"]
                );
                assert_eq!(
                    pairs3(&ok.response_headers_to_add),
                    owned(&[("x-response", "a"), ("x-response", "b")])
                );
                let set: Vec<_> = ok
                    .query_parameters_to_set
                    .iter()
                    .map(|q| (q.key.as_str(), q.value.as_str()))
                    .collect();
                assert_eq!(set, [("tenant", "acme")]);
                assert_eq!(ok.query_parameters_to_remove, ["debug"]);
            }
            Some(v3::check_response::HttpResponse::DeniedResponse(denied)) => {
                assert_eq!(
                    denied
                        .status
                        .map(|s| u16::try_from(s.code).expect("an HTTP status code")),
                    Some(row.status)
                );
                assert_eq!(pairs3(&denied.headers), owned(row.answer_headers));
                assert_eq!(denied.body, row.body);
            }
            other => panic!("v3: {other:?} for {:?}", row.headers),
        }

        // gRPC v2: status, code, headers, body.
        let request = v2::CheckRequest {
            attributes: Some(v2::AttributeContext {
                request: Some(v2::attribute_context::Request {
                    time: None,
                    http: Some(v2::attribute_context::HttpRequest {
                        method: "GET".into(),
                        path: "/x?debug=1&keep=2".into(),
                        host: "api.example.com".into(),
                        headers: headers(),
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }),
        };
        let response = v2_client
            .check(request)
            .await
            .expect("answers")
            .into_inner();
        assert_eq!(response.status.as_ref().map_or(-1, |s| s.code), row.code);
        let pairs2 = |headers: &[v2::HeaderValueOption]| -> Vec<(String, String)> {
            headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect()
        };
        match response.http_response {
            Some(v2::check_response::HttpResponse::OkResponse(ok)) => {
                assert_eq!(row.status, 200);
                assert_eq!(pairs2(&ok.headers), owned(row.answer_headers));
            }
            Some(v2::check_response::HttpResponse::DeniedResponse(denied)) => {
                assert_eq!(
                    denied
                        .status
                        .map(|s| u16::try_from(s.code).expect("an HTTP status code")),
                    Some(row.status)
                );
                assert_eq!(pairs2(&denied.headers), owned(row.answer_headers));
                assert_eq!(denied.body, row.body);
            }
            None => panic!("v2: no http_response for {:?}", row.headers),
        }

        // HTTP mode: the reply the proxy reads.
        let mut raw =
            "GET /x?debug=1&keep=2 HTTP/1.1\r\nhost: api.example.com\r\nconnection: close\r\n"
                .to_owned();
        for (name, value) in row.headers {
            raw.push_str(&format!("{name}: {value}\r\n"));
        }
        raw.push_str("\r\n");
        let reply = support::http_raw(server.http, raw.as_bytes()).await;
        let status_line = reply.lines().next().unwrap_or_default().to_owned();
        assert!(
            status_line.starts_with(&format!("HTTP/1.1 {}", row.status)),
            "http {:?}: {reply}",
            row.headers
        );
        for (name, value) in row.answer_headers {
            assert!(
                reply.contains(&format!("{name}: {value}\r\n")),
                "http {:?} lacks {name}: {reply}",
                row.headers
            );
        }
        assert!(reply.ends_with(row.body), "http {:?}: {reply}", row.headers);
        if row.status == 200 {
            assert!(
                reply.contains(
                    "x-envoy-auth-headers-to-remove: one-auth-header,another-auth-header\r\n"
                ),
                "{reply}"
            );
        }
    }
}

#[tokio::test]
async fn editing_the_rego_file_reloads_the_rules() {
    let deny_all = "package envoy.authz\nimport rego.v1\ndefault allow := false\n";
    let allow_all = "package envoy.authz\nimport rego.v1\ndefault allow := true\n";
    let config = "[default]\ndeny = { status = 418 }\n\n[[rules]]\nname = \"opa\"\nrego = { files = [\"authz.rego\"] }\n";
    let dir = dir_with(
        "rego-reload",
        &[("authz.rego", deny_all), ("rules.toml", config)],
    );
    let path = dir.join("rules.toml");
    let loaded = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let listening = loaded.server.clone();
    let engine = RuleEngine::connect(loaded.rules, None).await;
    let metrics = std::sync::Arc::new(authz_server::Metrics::new());
    let reloader = authz_server::reload::Reloader::new(path, engine.clone(), metrics, listening);
    let watching = tokio::spawn(reloader.run(Duration::from_millis(50)));
    let server = start_engine(engine).await;
    let mut client = client(&server).await;
    assert_eq!(support::check(&mut client, "/", &[]).await.status, 403);

    // A policy that does not compile keeps the last good rules.
    std::fs::write(dir.join("authz.rego"), "package envoy.authz\nallow if {\n").expect("writes");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(support::check(&mut client, "/", &[]).await.status, 403);

    std::fs::write(dir.join("authz.rego"), allow_all).expect("writes");
    let mut status = 0;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        status = support::check(&mut client, "/", &[]).await.status;
        if status == 200 {
            break;
        }
    }
    assert_eq!(status, 200, "the edited policy is in force");
    watching.abort();
}

/// Over gRPC v3 a policy reads the attributes as the proxy sent them, fields the neutral view
/// does not keep included (`request.http.id`, `size`, `request.time`, `source.labels`,
/// `metadataContext`), in protojson's shapes (64-bit integers as strings, RFC 3339 times).
#[tokio::test]
async fn a_policy_reads_every_attribute_envoy_sent_in_protojson_shape() {
    let policy = r#"package envoy.authz
import rego.v1

default allow := false

allow if {
    http := input.attributes.request.http
    http.id == "req-7"
    http.size == "42"
    input.attributes.request.time == "2023-11-14T22:13:20Z"
    input.attributes.source.labels.app == "billing"
    input.attributes.metadataContext.filterMetadata["envoy.filters.http.jwt_authn"].sub == "alice"
    input.attributes.contextExtensions.route == "r1"
    input.version == {"ext_authz": "v3", "encoding": "protojson"}
}
"#;
    let config = "[default]\ndeny = { status = 418 }\n\n[[rules]]\nname = \"opa\"\nrego = { files = [\"authz.rego\"] }\n";
    let dir = dir_with(
        "rego-attributes",
        &[("authz.rego", policy), ("rules.toml", config)],
    );
    let loaded = Config::load(&dir.join("rules.toml")).unwrap_or_else(|e| panic!("{e}"));
    let server = start_engine(RuleEngine::connect(loaded.rules, None).await).await;
    let mut client = client(&server).await;

    let request = |id: &str| v3::CheckRequest {
        attributes: Some(v3::AttributeContext {
            source: Some(v3::attribute_context::Peer {
                labels: [("app".to_owned(), "billing".to_owned())].into(),
                ..Default::default()
            }),
            request: Some(v3::attribute_context::Request {
                time: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 0,
                }),
                http: Some(v3::attribute_context::HttpRequest {
                    id: id.to_owned(),
                    method: "GET".into(),
                    path: "/".into(),
                    size: 42,
                    ..Default::default()
                }),
            }),
            context_extensions: [("route".to_owned(), "r1".to_owned())].into(),
            metadata_context: Some(extauthz_proto::envoy::config::core::v3::Metadata {
                filter_metadata: [(
                    "envoy.filters.http.jwt_authn".to_owned(),
                    prost_types::Struct {
                        fields: [(
                            "sub".to_owned(),
                            prost_types::Value {
                                kind: Some(prost_types::value::Kind::StringValue("alice".into())),
                            },
                        )]
                        .into(),
                    },
                )]
                .into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    for (id, want) in [("req-7", 0), ("req-8", 7)] {
        let response = client
            .check(request(id))
            .await
            .expect("answers")
            .into_inner();
        assert_eq!(response.status.map_or(-1, |s| s.code), want, "id {id}");
    }
}
