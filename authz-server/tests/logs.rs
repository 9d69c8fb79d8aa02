//! No credential reaches the logs: tokens, API keys, cookies and query strings stay out of every
//! line the server writes, whatever the decision.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_authz-server");

const SECRETS: [&str; 4] = [
    "s3cr3t-bearer-token-0d5f",
    "s3cr3t-api-key-77aa",
    "s3cr3t-cookie-9c1e",
    "s3cr3t-query-token-4b2d",
];

fn http(address: &str, extra: &str) {
    let mut stream = TcpStream::connect(address).expect("connects");
    write!(
        stream,
        "GET /openai?token={} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\nx-ai-api-key: {}\r\ncookie: session={}\r\n{extra}connection: close\r\n\r\n",
        SECRETS[3], SECRETS[0], SECRETS[1], SECRETS[2]
    )
    .expect("writes");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("reads");
    assert!(reply.starts_with("HTTP/1.1 "), "{reply}");
}

#[test]
fn credentials_never_appear_in_any_log_line() {
    for format in ["text", "json"] {
        let mut child = Command::new(BIN)
            .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args(["--log-format", format])
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let _grpc = lines.next().expect("grpc line").expect("utf-8");
        let http_line = lines.next().expect("http line").expect("utf-8");
        let address = http_line.trim_start_matches("listening http ").to_owned();

        http(&address, "x-ext-authz: allow\r\n");
        http(&address, "");
        http(&address, "x-ext-authz: nope\r\n");

        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let mut logs = String::new();
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut logs)
            .expect("reads the logs");
        assert_eq!(child.wait().expect("exits").code(), Some(0));

        let decisions = logs.lines().filter(|l| l.contains("decision")).count();
        assert!(
            decisions >= 3,
            "{format}: one line per decision expected:\n{logs}"
        );
        for secret in SECRETS {
            assert!(
                !logs.contains(secret),
                "{format}: {secret} leaked into:\n{logs}"
            );
        }
    }
}

/// Values a client chooses cannot forge or hide a log line: control characters in the path,
/// host, method and request id arrive escaped, in the one line their decision writes.
#[test]
fn control_characters_in_logged_values_cannot_forge_lines() {
    use extauthz_proto::envoy::service::auth::v3::authorization_client::AuthorizationClient;
    use extauthz_proto::v3;

    for format in ["text", "json"] {
        let mut child = Command::new(BIN)
            .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args(["--log-format", format])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let grpc_line = lines.next().expect("grpc line").expect("utf-8");
        let address = grpc_line.trim_start_matches("listening grpc ").to_owned();

        let forged = "FORGED outcome=allow rule=admin";
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let mut client = AuthorizationClient::connect(format!("http://{address}"))
                .await
                .expect("connects");
            let http = v3::attribute_context::HttpRequest {
                method: format!("GET\n{forged}"),
                path: format!("/x\r\n{forged}?token={}", SECRETS[3]),
                host: format!("h\u{2028}{forged}"),
                headers: [("x-request-id".to_owned(), format!("id\n{forged}"))].into(),
                ..Default::default()
            };
            let request = v3::CheckRequest {
                attributes: Some(v3::AttributeContext {
                    request: Some(v3::attribute_context::Request {
                        time: None,
                        http: Some(http),
                    }),
                    ..Default::default()
                }),
            };
            let response = client.check(request).await.expect("answers").into_inner();
            // The path has no canonical form: the default decides, a deny.
            assert_eq!(response.status.map(|s| s.code), Some(7));
        });

        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let mut logs = String::new();
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut logs)
            .expect("reads the logs");
        assert_eq!(child.wait().expect("exits").code(), Some(0));

        for line in logs.lines() {
            assert!(!line.starts_with(forged), "{format}: forged line:\n{logs}");
            assert!(
                !line.contains('\u{2028}'),
                "{format}: raw separator:\n{logs}"
            );
        }
        let decision = logs
            .lines()
            .find(|l| l.contains("decision") && l.contains("FORGED"))
            .unwrap_or_else(|| panic!("{format}: no decision line:\n{logs}"));
        assert_eq!(decision.matches(forged).count(), 4, "{format}: {decision}");
        assert!(decision.contains("?<redacted>"), "{format}: {decision}");
        assert!(
            !logs.contains(SECRETS[3]),
            "{format}: query leaked:\n{logs}"
        );
        // The escapes, as the text or JSON formatter writes them.
        let (newline, separator) = match format {
            "text" => ("\\n", "\\u{2028}"),
            _ => ("\\\\n", "\\\\u{2028}"),
        };
        assert!(
            decision.contains(&format!("GET{newline}{forged}")),
            "{format}: {decision}"
        );
        assert!(
            decision.contains(&format!("h{separator}{forged}")),
            "{format}: {decision}"
        );
    }
}
