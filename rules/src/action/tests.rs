use std::collections::BTreeMap;

use super::*;
use crate::request::Request;

fn template(text: &str) -> Template {
    Template::parse(text).unwrap()
}

fn request() -> Request {
    Request {
        headers: BTreeMap::from([("x-user".into(), "ann\r\nx-evil: 1".into())]),
        path: "/p".into(),
        ..Request::default()
    }
}

/// An allow with one of every mutation, templated where it can be.
fn every_mutation() -> Action {
    Action::Allow(AllowAction {
        request_headers: vec![
            (
                "x-user".into(),
                template("{{request.headers.x-user}}"),
                false,
            ),
            ("x-rule".into(), template("{{rule.name}}"), true),
        ],
        remove_request_headers: vec!["x-debug".into()],
        response_headers: vec![
            ("x-a".into(), template("1"), AppendAction::AddIfAbsent),
            (
                "x-b".into(),
                template("2"),
                AppendAction::AppendIfExistsOrAdd,
            ),
        ],
        query_set: vec![("next".into(), template("{{request.path}}"))],
        query_remove: vec!["debug".into()],
        metadata: BTreeMap::from([
            ("who".into(), MetaValue::Text(template("{{rule.name}}"))),
            ("n".into(), MetaValue::Fixed(serde_json::json!(2))),
            (
                "list".into(),
                MetaValue::List(vec![MetaValue::Text(template("{{request.path}}"))]),
            ),
            (
                "map".into(),
                MetaValue::Map(BTreeMap::from([(
                    "k".into(),
                    MetaValue::Fixed(serde_json::json!(true)),
                )])),
            ),
        ]),
    })
}

#[test]
fn allow_renders_every_mutation_in_order() {
    let action = every_mutation();
    let request = request();
    let decision = action.render(&Scope {
        request: &request,
        rule: "r",
        identity: None,
    });
    let Decision::Allow(allow) = decision else {
        panic!("want an allow");
    };
    assert_eq!(
        allow.request_headers,
        vec![
            RequestHeader {
                name: "x-user".into(),
                value: "ann  x-evil: 1".into(),
                append: false
            },
            RequestHeader {
                name: "x-rule".into(),
                value: "r".into(),
                append: true
            },
        ]
    );
    assert_eq!(allow.headers_to_remove, vec!["x-debug".to_owned()]);
    assert_eq!(
        allow.response_headers,
        vec![
            ResponseHeader {
                name: "x-a".into(),
                value: "1".into(),
                action: AppendAction::AddIfAbsent
            },
            ResponseHeader {
                name: "x-b".into(),
                value: "2".into(),
                action: AppendAction::AppendIfExistsOrAdd
            },
        ]
    );
    assert_eq!(
        allow.query_parameters_to_set,
        vec![("next".to_owned(), "/p".to_owned())]
    );
    assert_eq!(allow.query_parameters_to_remove, vec!["debug".to_owned()]);
    assert_eq!(
        serde_json::to_value(&allow.dynamic_metadata).unwrap(),
        serde_json::json!({"who": "r", "n": 2, "list": ["/p"], "map": {"k": true}})
    );
}

#[test]
fn deny_renders_status_code_headers_body() {
    let action = Action::Deny(DenyAction {
        status: 401,
        grpc_code: 16,
        headers: vec![
            ("set-cookie".into(), template("a=1")),
            (
                "set-cookie".into(),
                template("b={{request.headers.x-user}}"),
            ),
        ],
        body: template("line1\n{{request.headers.x-user}}"),
        metadata: BTreeMap::new(),
    });
    let request = request();
    let decision = action.render(&Scope {
        request: &request,
        rule: "r",
        identity: None,
    });
    assert_eq!(
        decision,
        Decision::Deny(Deny {
            http_status: 401,
            grpc_code: 16,
            headers: vec![
                ("set-cookie".into(), "a=1".into()),
                ("set-cookie".into(), "b=ann  x-evil: 1".into()),
            ],
            // A body is not a header: newlines from the request stay.
            body: "line1\nann\r\nx-evil: 1".into(),
            dynamic_metadata: BTreeMap::new(),
        })
    );
}

#[test]
fn query_values_from_the_request_cannot_add_parameters() {
    let action = Action::Allow(AllowAction {
        query_set: vec![("user".into(), template("{{request.headers.x-user}}"))],
        ..AllowAction::default()
    });
    let mut request = request();
    request
        .headers
        .insert("x-user".into(), "bob&role=admin#frag+x y".into());
    let decision = action.render(&Scope {
        request: &request,
        rule: "r",
        identity: None,
    });
    let Decision::Allow(allow) = decision else {
        panic!("an allow")
    };
    assert_eq!(
        allow.query_parameters_to_set,
        vec![(
            "user".to_owned(),
            "bob%26role=admin%23frag%2Bx%20y".to_owned()
        )]
    );
}
