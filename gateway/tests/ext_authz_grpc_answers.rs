//! Envoy's ext_authz client scenarios over gRPC, the answers: OK responses that mutate the
//! request (headers, query) or the response, and denials as the client sees them.

mod support;

use extauthz_proto::v3::{OkHttpResponse, QueryParameter};
use http::StatusCode;
use support::*;

#[tokio::test]
async fn ok_response_appends_overwrites_and_removes_request_headers() {
    let authz = MockAuthz::always(ok(OkHttpResponse {
        headers: vec![
            header("x-append", "added", Some(true)),
            header("x-append-absent", "new", Some(true)),
            header("x-overwrite", "new", Some(false)),
            header("x-set-unset-append", "new", None),
        ]
        .into_iter()
        .chain([
            header_action("x-add-if-absent", "ignored", 1),
            header_action("x-fresh-if-absent", "fresh", 1),
            header_action("x-overwrite-if-exists", "replaced", 3),
            header_action("x-missing-if-exists", "never", 3),
        ])
        .collect(),
        headers_to_remove: vec![
            "x-remove".into(),
            "host".into(),
            ":path".into(),
            ":authority".into(),
        ],
        ..OkHttpResponse::default()
    }))
    .await;
    let gw = setup(&authz, "").await;
    let resp = send(get(
        gw,
        "/openai",
        &[
            ("x-append", "original"),
            ("x-overwrite", "old"),
            ("x-remove", "secret"),
            ("x-add-if-absent", "kept"),
            ("x-overwrite-if-exists", "old"),
        ],
    ))
    .await;
    assert_eq!(resp.status, StatusCode::OK);
    let saw = |h: &str| resp.backend_saw(h);
    assert_eq!(saw("x-append").as_deref(), Some("original,added"));
    assert_eq!(saw("x-append-absent").as_deref(), Some("new"));
    assert_eq!(saw("x-overwrite").as_deref(), Some("new"));
    assert_eq!(saw("x-set-unset-append").as_deref(), Some("new"));
    assert_eq!(saw("x-add-if-absent").as_deref(), Some("kept"));
    assert_eq!(saw("x-fresh-if-absent").as_deref(), Some("fresh"));
    assert_eq!(saw("x-overwrite-if-exists").as_deref(), Some("replaced"));
    assert_eq!(saw("x-missing-if-exists"), None);
    assert_eq!(saw("x-remove"), None);
    assert_eq!(saw("host"), Some(gw.to_string()), "host is not removable");
    assert_eq!(resp.json()["request"]["path"], "/openai");
}

#[tokio::test]
async fn pseudo_header_mutations_are_ignored_and_the_rest_applied() {
    let authz = MockAuthz::always(ok(OkHttpResponse {
        headers: vec![
            header(":path", "/admin", Some(false)),
            header(":authority", "evil.example", None),
            header("x-user", "alice", Some(false)),
        ],
        headers_to_remove: vec!["authorization".into(), ":method".into(), "host".into()],
        response_headers_to_add: vec![header(":status", "500", None), header("x-note", "ok", None)],
        ..OkHttpResponse::default()
    }))
    .await;
    let gw = setup(
        &authz,
        "failure_mode_allow = true\nfailure_mode_allow_header_add = true",
    )
    .await;
    let resp = send(get(gw, "/openai", &[("authorization", "Bearer secret")])).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.json()["request"]["path"], "/openai");
    assert_eq!(resp.json()["request"]["method"], "GET");
    assert_eq!(resp.backend_saw("x-user").as_deref(), Some("alice"));
    assert_eq!(resp.backend_saw("authorization"), None);
    assert_eq!(resp.backend_saw("host"), Some(gw.to_string()));
    assert_eq!(resp.backend_saw("x-envoy-auth-failure-mode-allowed"), None);
    assert_eq!(resp.headers["x-note"], "ok");
}

#[tokio::test]
async fn an_invalid_mutation_in_an_ok_response_is_status_on_error_even_with_failure_mode_allow() {
    let invalid = [
        OkHttpResponse {
            headers: vec![header("bad name", "v", None)],
            ..OkHttpResponse::default()
        },
        OkHttpResponse {
            headers: vec![header("x-user", "a\nb", None)],
            ..OkHttpResponse::default()
        },
        OkHttpResponse {
            headers: vec![extauthz_proto::v3::HeaderValueOption::default()],
            ..OkHttpResponse::default()
        },
        OkHttpResponse {
            headers_to_remove: vec!["bad name".into()],
            ..OkHttpResponse::default()
        },
        OkHttpResponse {
            response_headers_to_add: vec![header("x-note", "a\0b", None)],
            ..OkHttpResponse::default()
        },
    ];
    for (i, answer) in invalid.into_iter().enumerate() {
        let authz = MockAuthz::always(ok(OkHttpResponse {
            headers_to_remove: [answer.headers_to_remove, vec!["authorization".into()]].concat(),
            ..answer
        }))
        .await;
        let gw = setup(&authz, "failure_mode_allow = true\nstatus_on_error = 503").await;
        let resp = send(get(gw, "/openai", &[("authorization", "Bearer secret")])).await;
        assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE, "case {i}");
        assert!(resp.body.is_empty(), "case {i}");
    }
}

#[tokio::test]
async fn ok_response_rewrites_the_query() {
    let authz = MockAuthz::always(ok(OkHttpResponse {
        query_parameters_to_set: vec![
            QueryParameter {
                key: "set".into(),
                value: "new".into(),
            },
            QueryParameter {
                key: "added".into(),
                value: "v".into(),
            },
        ],
        query_parameters_to_remove: vec!["drop".into()],
        ..OkHttpResponse::default()
    }))
    .await;
    let gw = setup(&authz, "").await;
    let resp = send(get(gw, "/openai/x?keep=1&drop=2&set=old", &[])).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.json()["request"]["path"], "/openai/x");
    assert_eq!(resp.json()["request"]["query"], "keep=1&set=new&added=v");
    assert_eq!(authz.last_http().path, "/openai/x?keep=1&drop=2&set=old");
}

#[tokio::test]
async fn query_parameters_are_matched_percent_decoded() {
    let authz = MockAuthz::always(ok(OkHttpResponse {
        query_parameters_to_set: vec![QueryParameter {
            key: "token".into(),
            value: "new".into(),
        }],
        query_parameters_to_remove: vec!["api_key".into()],
        ..OkHttpResponse::default()
    }))
    .await;
    let gw = setup(&authz, "").await;
    let resp = send(get(
        gw,
        "/openai/x?%61pi_key=secret&keep=1&%74oken=old&api%5fkey=2",
        &[],
    ))
    .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.json()["request"]["query"], "keep=1&token=new");
}

#[tokio::test]
async fn an_unapplicable_query_rewrite_is_status_on_error_even_with_failure_mode_allow() {
    // The value has a space: the rewritten path would not parse, so the credential removal
    // cannot be made — the request must not go upstream unchanged.
    let authz = MockAuthz::always(ok(OkHttpResponse {
        query_parameters_to_set: vec![QueryParameter {
            key: "x".into(),
            value: "a b".into(),
        }],
        query_parameters_to_remove: vec!["api_key".into()],
        ..OkHttpResponse::default()
    }))
    .await;
    let gw = setup(
        &authz,
        "failure_mode_allow = true\nfailure_mode_allow_header_add = true\nstatus_on_error = 503",
    )
    .await;
    let resp = send(get(gw, "/openai/x?api_key=secret", &[])).await;
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.body.is_empty());
    assert!(!resp.headers.contains_key("content-type"));
}

#[tokio::test]
async fn response_headers_to_add_honour_append_action() {
    let authz = MockAuthz::always(ok(OkHttpResponse {
        response_headers_to_add: vec![
            header_action("x-appended", "one", 0),
            header_action("content-type", "text/ignored", 1),
            header_action("x-added-if-absent", "two", 1),
            header_action("x-overwrite-or-add", "three", 2),
            header_action("date", "overwritten", 3),
            header_action("x-overwrite-if-exists", "never", 3),
            header("x-legacy-append", "a", Some(true)),
            header("x-legacy-append", "b", Some(true)),
            header("x-legacy-set", "c", Some(false)),
        ],
        ..OkHttpResponse::default()
    }))
    .await;
    let gw = setup(&authz, "").await;
    let resp = send(get(gw, "/openai", &[])).await;
    assert_eq!(resp.status, StatusCode::OK);
    let h = &resp.headers;
    assert_eq!(h["x-appended"], "one");
    assert_eq!(
        h.get_all("content-type").iter().collect::<Vec<_>>(),
        ["application/json"]
    );
    assert_eq!(h["x-added-if-absent"], "two");
    assert_eq!(h["x-overwrite-or-add"], "three");
    assert_eq!(h["date"], "overwritten");
    assert!(!h.contains_key("x-overwrite-if-exists"));
    assert_eq!(
        h.get_all("x-legacy-append").iter().collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(h["x-legacy-set"], "c");
}

#[tokio::test]
async fn custom_denial_keeps_status_headers_body_and_repeated_set_cookie() {
    let authz = MockAuthz::always(deny(
        7,
        401,
        vec![
            header("set-cookie", "a=1", None),
            header("set-cookie", "b=2", None),
            header("content-type", "application/json", None),
            header("x-reason", "no-token", Some(true)),
        ],
        r#"{"error":"unauthenticated"}"#,
    ))
    .await;
    let gw = setup(&authz, "").await;
    let resp = send(get(gw, "/openai", &[])).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.text(), r#"{"error":"unauthenticated"}"#);
    assert_eq!(
        resp.headers
            .get_all("set-cookie")
            .iter()
            .collect::<Vec<_>>(),
        ["a=1", "b=2"]
    );
    assert_eq!(
        resp.headers
            .get_all("content-type")
            .iter()
            .collect::<Vec<_>>(),
        ["application/json"]
    );
    assert_eq!(resp.headers["x-reason"], "no-token");
}

#[tokio::test]
async fn non_ok_status_without_denied_response_is_403_with_empty_body() {
    let authz = MockAuthz::always(extauthz_proto::v3::CheckResponse {
        status: Some(extauthz_proto::RpcStatus {
            code: 16,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await;
    let gw = setup(&authz, "").await;
    let resp = send(get(gw, "/openai", &[])).await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert!(resp.body.is_empty());
}

#[tokio::test]
async fn denied_response_without_status_is_403() {
    let authz = MockAuthz::always(deny(7, 0, vec![], "nope")).await;
    let gw = setup(&authz, "").await;
    let resp = send(get(gw, "/openai", &[])).await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert_eq!(resp.text(), "nope");
}

#[tokio::test]
async fn a_malformed_denied_response_is_still_a_deny_under_failure_mode_allow() {
    // Each unusable part is dropped (headers) or treated as absent (status 42): the non-OK
    // status still denies, even though failure_mode_allow would let an error through.
    let authz = MockAuthz::always(deny(
        7,
        42,
        vec![
            header("bad name", "v", None),
            header("a:b", "v", None),
            header(":status", "200", None),
            header("x-newline", "a\nb", None),
            header("x-nul", "a\0b", None),
            extauthz_proto::v3::HeaderValueOption::default(),
            header("x-reason", "kept", None),
        ],
        "go away",
    ))
    .await;
    let gw = setup(&authz, "failure_mode_allow = true").await;
    let resp = send(get(gw, "/openai", &[])).await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert_eq!(resp.text(), "go away");
    assert_eq!(resp.headers["x-reason"], "kept");
    assert_eq!(resp.headers["content-type"], "text/plain");
    assert!(!resp.headers.contains_key("x-newline"));
    assert!(!resp.headers.contains_key("x-nul"));
    let mut names: Vec<&str> = resp.headers.keys().map(http::HeaderName::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        ["content-length", "content-type", "date", "x-reason"]
    );
}

#[tokio::test]
async fn a_denied_response_with_an_out_of_range_status_is_403() {
    for bad in [-1, 99, 1000, 70000] {
        let authz = MockAuthz::always(deny(16, bad, vec![], "")).await;
        let gw = setup(&authz, "failure_mode_allow = true").await;
        let resp = send(get(gw, "/openai", &[])).await;
        assert_eq!(resp.status, StatusCode::FORBIDDEN, "status {bad}");
        assert!(resp.body.is_empty());
    }
}
