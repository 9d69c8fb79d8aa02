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
