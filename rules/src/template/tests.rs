use std::collections::BTreeMap;

use super::*;
use crate::request::{Peer, Transport};

fn request() -> Request {
    Request {
        transport: Transport::Http,
        method: "POST".into(),
        path: "/a/b?c=d".into(),
        host: "example.com".into(),
        scheme: "https".into(),
        protocol: "HTTP/1.1".into(),
        headers: BTreeMap::from([("x-user".into(), "ann".into())]),
        body: "{\"k\":1}".into(),
        source: Peer {
            ip: "192.0.2.7".parse().ok(),
            port: 5000,
            principal: "spiffe://td/ns/n/sa/a".into(),
        },
        destination: Peer {
            ip: "::1".parse().ok(),
            port: 8000,
            principal: String::new(),
        },
        context_extensions: BTreeMap::from([("tenant".into(), "acme".into())]),
        received: "everything".into(),
        opa_attributes: None,
    }
}

fn render(text: &str) -> String {
    let template = Template::parse(text).unwrap();
    template.render(&Scope {
        request: &request(),
        rule: "r1",
        identity: None,
    })
}

#[test]
fn literal_only() {
    assert_eq!(render("plain text"), "plain text");
    assert_eq!(render(""), "");
    assert_eq!(render("a } b }} c"), "a } b }} c");
}

#[test]
fn every_variable() {
    let cases = [
        ("request.method", "POST"),
        ("request.path", "/a/b?c=d"),
        ("request.host", "example.com"),
        ("request.scheme", "https"),
        ("request.protocol", "HTTP/1.1"),
        ("request.body", "{\"k\":1}"),
        ("request.headers.x-user", "ann"),
        ("request.headers.X-User", "ann"),
        ("request.headers.absent", ""),
        ("source.address", "192.0.2.7"),
        ("source.principal", "spiffe://td/ns/n/sa/a"),
        ("destination.address", "::1"),
        ("context.tenant", "acme"),
        ("context.missing", ""),
        ("rule.name", "r1"),
        ("transport", "http"),
        ("received", "everything"),
    ];
    for (variable, want) in cases {
        assert_eq!(render(&format!("{{{{{variable}}}}}")), want, "{variable}");
        assert_eq!(
            render(&format!("<{{{{ {variable} }}}}>")),
            format!("<{want}>")
        );
    }
}

#[test]
fn missing_addresses_render_empty() {
    let template = Template::parse("[{{source.address}}|{{destination.address}}]").unwrap();
    let request = Request::default();
    let scope = Scope {
        request: &request,
        rule: "default",
        identity: None,
    };
    assert_eq!(template.render(&scope), "[|]");
}

#[test]
fn cap_filter_replaces_only_values_over_the_limit() {
    assert_eq!(
        render(r#"{{received | cap 10 "<too-long>"}}"#),
        "everything"
    );
    assert_eq!(render(r#"{{received | cap 9 "<too-long>"}}"#), "<too-long>");
    assert_eq!(render("{{received|cap 0 ''}}"), "");
    assert_eq!(render(r#"{{ request.method | cap 3 "x|}}y" }}!"#), "x|}}y!");
}

#[test]
fn uses_received() {
    assert!(Template::parse("a{{received}}").unwrap().uses_received());
    assert!(
        !Template::parse("a{{request.body}}")
            .unwrap()
            .uses_received()
    );
}

#[test]
fn literal_newlines_are_detected() {
    assert!(Template::parse("a\nb").unwrap().literal_has_newline());
    assert!(Template::parse("a\r").unwrap().literal_has_newline());
    assert!(
        !Template::parse("a{{request.body}}")
            .unwrap()
            .literal_has_newline()
    );
}

#[test]
fn header_rendering_replaces_control_characters() {
    let template = Template::parse("v={{request.body}}").unwrap();
    let request = Request {
        body: "a\r\nb\tc\u{7f}d\u{0}".into(),
        ..Request::default()
    };
    let scope = Scope {
        request: &request,
        rule: "r",
        identity: None,
    };
    assert_eq!(template.render_header(&scope), "v=a  b c d ");
    assert_eq!(template.render(&scope), "v=a\r\nb\tc\u{7f}d\u{0}");
}

#[test]
fn output_is_capped_on_a_char_boundary() {
    let template = Template::parse("ab{{request.body}}tail").unwrap();
    let request = Request {
        body: "é".repeat(MAX_RENDERED_BYTES),
        ..Request::default()
    };
    let scope = Scope {
        request: &request,
        rule: "r",
        identity: None,
    };
    let out = template.render(&scope);
    // "ab" + as many 2-byte chars as fit in the remaining 65534 bytes.
    assert_eq!(out.len(), MAX_RENDERED_BYTES);
    assert!(out.starts_with("abé"));
    assert!(!out.ends_with("tail"));
}

fn fault(text: &str) -> TemplateFault {
    Template::parse(text).unwrap_err()
}

#[test]
fn errors_name_the_tag_position() {
    let unknown = fault("ab {{ request.nope }}");
    assert_eq!(unknown.at, 3);
    assert_eq!(
        unknown.error,
        TemplateError::UnknownVariable {
            name: "request.nope".into()
        }
    );
    assert_eq!(fault("x{{received").error, TemplateError::Unclosed);
    assert_eq!(fault("x{{received").at, 1);
    assert_eq!(fault("{{ }}").error, TemplateError::Empty);
    assert_eq!(
        fault("{{received | upper}}").error,
        TemplateError::UnknownFilter {
            name: "upper".into()
        }
    );
    assert_eq!(fault("{{received | cap}}").error, TemplateError::CapUsage);
    assert_eq!(
        fault("{{received | cap x \"y\"}}").error,
        TemplateError::CapUsage
    );
    assert_eq!(
        fault("{{received | cap 1 y}}").error,
        TemplateError::CapUsage
    );
    assert_eq!(
        fault("{{request.headers.}}").error,
        TemplateError::UnknownVariable {
            name: "request.headers.".into()
        }
    );
    assert_eq!(
        fault("{{context.}}").error,
        TemplateError::UnknownVariable {
            name: "context.".into()
        }
    );
    assert_eq!(
        fault("{{a b}}").error,
        TemplateError::UnknownVariable { name: "a b".into() }
    );
}

#[test]
fn error_messages_read_well() {
    assert_eq!(
        TemplateError::Unclosed.to_string(),
        "unclosed `{{` in template (no matching `}}`)"
    );
    assert_eq!(
        TemplateError::CapUsage.to_string(),
        "filter `cap` takes a byte count and a quoted replacement, e.g. `cap 60000 \"<too-long>\"`"
    );
}
