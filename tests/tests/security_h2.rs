//! HTTP/2 requests RFC 9113 §8.2.1 calls malformed, written as raw frames (client libraries
//! refuse to send most of them): a header value with leading or trailing SP/HTAB, a NUL, CR or LF
//! in a value, an upper-case or otherwise invalid field name, a connection-specific field.
//! Every h2 listener of both binaries must refuse each one (400, or a stream or connection
//! error) — never check it, never serve it. The danger is the first kind: `x-role: " blocked"`
//! does not match an `exact = "blocked"` deny, and the HTTP/1.1 backend behind the gateway trims
//! it and reads `blocked`.
//!
//! Also here, because it walks around the same deny: two copies of `x-role` (`ok`, `blocked`)
//! reach the check joined as `ok,blocked`, and a backend that reads one copy may read `blocked`;
//! a deny rule's value condition holds when any copy matches (docs/security.md).

use std::net::SocketAddr;
use std::time::Duration;

use e2e::security::{NormalisingBackend, raw_request, start_gateway};
use e2e::start_with;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const POLICY: &str = r#"
[default]
deny = { status = 403, body = "no rule matched" }

[[rules]]
name = "blocked-role"
[rules.when]
headers = [{ name = "x-role", exact = "blocked" }]
[rules.deny]
status = 403
body = "blocked role"

[[rules]]
name = "everyone-else"
[rules.allow]
"#;

/// Each malformed header field, as raw bytes: (name, value).
const MALFORMED: &[(&[u8], &[u8])] = &[
    (b"x-role", b" blocked"),
    (b"x-role", b"blocked "),
    (b"x-role", b"\tblocked"),
    (b"x-role", b"blocked\t"),
    (b"x-role", b" blocked\t"),
    (b"x-role", b"blocked\0"),
    (b"x-role", b"bl\rocked"),
    (b"x-role", b"blocked\n"),
    (b"X-Role", b"blocked"),
    (b"x role", b"blocked"),
    (b"x-role:", b"blocked"),
    (b"connection", b"x-role"),
    (b"te", b"gzip"),
];

/// What came back on stream 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// A response with this status.
    Status(u16),
    /// `RST_STREAM` with this error code.
    Reset(u32),
    /// `GOAWAY` with this error code, or the connection closed.
    Closed,
}

impl Outcome {
    fn refused(self) -> bool {
        matches!(
            self,
            Outcome::Status(400) | Outcome::Reset(_) | Outcome::Closed
        )
    }
}

/// An HPACK literal without indexing, with a new name (RFC 7541 §6.2.2); short strings only.
fn literal(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x00, u8::try_from(name.len()).expect("short name")];
    out.extend_from_slice(name);
    out.push(u8::try_from(value.len()).expect("short value"));
    out.extend_from_slice(value);
    out
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("small frame");
    let [_, high, middle, low] = len.to_be_bytes();
    let mut out = vec![high, middle, low, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The status a response HEADERS block starts with: an indexed static entry (how hyper's
/// encoder sends 200, 204, 206, 304, 400, 404 and 500) or a literal with the `:status` name
/// (RFC 7541 §6.2), plain or Huffman-coded; 0 for anything else.
fn status_of(block: &[u8]) -> u16 {
    const INDEXED: [u16; 7] = [200, 204, 206, 304, 400, 404, 500];
    match block {
        [first @ 0x88..=0x8e, ..] => INDEXED[usize::from(first - 0x88)],
        [0x48 | 0x08 | 0x18, length, rest @ ..] => {
            let len = usize::from(length & 0x7f);
            let text = rest.get(..len).unwrap_or_default();
            let digits = if length & 0x80 == 0 {
                String::from_utf8_lossy(text).into_owned()
            } else {
                huffman_digits(text)
            };
            digits.parse().unwrap_or(0)
        }
        _ => 0,
    }
}

/// Decodes a Huffman-coded string of digits (RFC 7541 Appendix B: `0`-`2` are the 5-bit codes
/// 0-2, `3`-`9` the 6-bit codes 0x19-0x1f); stops at the padding.
fn huffman_digits(bytes: &[u8]) -> String {
    let bits: Vec<u8> = bytes
        .iter()
        .flat_map(|byte| (0..8).rev().map(move |i| (byte >> i) & 1))
        .collect();
    let mut out = String::new();
    let mut at = 0;
    while at + 5 <= bits.len() {
        let five = bits[at..at + 5].iter().fold(0, |n, b| n << 1 | b);
        if five <= 2 {
            out.push(char::from(b'0' + five));
            at += 5;
            continue;
        }
        let Some(six) = bits.get(at..at + 6) else {
            break;
        };
        let six = six.iter().fold(0, |n, b| n << 1 | b);
        if !(0x19..=0x1f).contains(&six) {
            break;
        }
        out.push(char::from(b'3' + (six - 0x19)));
        at += 6;
    }
    out
}

/// Sends `GET /` with `:authority: app.example.com` and the extra fields on a fresh h2c
/// connection (prior knowledge); what came back on that stream.
async fn send_raw(address: SocketAddr, fields: &[(&[u8], &[u8])]) -> Outcome {
    let mut stream = TcpStream::connect(address).await.expect("connects");
    // :method GET, :scheme http, :path /, then :authority as a literal with an indexed name.
    let mut block = vec![0x82, 0x86, 0x84, 0x01, 15];
    block.extend_from_slice(b"app.example.com");
    for (name, value) in fields {
        block.extend_from_slice(&literal(name, value));
    }
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&frame(0x4, 0, 0, &[]));
    out.extend_from_slice(&frame(0x1, 0x5, 1, &block));
    stream.write_all(&out).await.expect("writes");
    let read = async {
        loop {
            let mut head = [0u8; 9];
            if stream.read_exact(&mut head).await.is_err() {
                return Outcome::Closed;
            }
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let (kind, flags) = (head[3], head[4]);
            let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0u8; len];
            if stream.read_exact(&mut payload).await.is_err() {
                return Outcome::Closed;
            }
            match (kind, id) {
                (0x4, 0) if flags & 0x1 == 0 => {
                    let _ = stream.write_all(&frame(0x4, 0x1, 0, &[])).await;
                }
                (0x1, 1) => return Outcome::Status(status_of(&payload)),
                (0x3, 1) => {
                    let code = payload
                        .get(..4)
                        .map_or(0, |c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
                    return Outcome::Reset(code);
                }
                (0x7, _) => return Outcome::Closed,
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("an answer within 5 s")
}

async fn gateway(authz: SocketAddr, backend: SocketAddr) -> SocketAddr {
    let listeners = start_gateway(&format!(
        r#"
[[listeners]]
name = "edge"
address = "127.0.0.1:0"

[[backends]]
name = "app"
url = "http://{backend}"

[[routes]]
name = "all"
backend = "app"

[[authz_backends]]
name = "authz-server"
url = "http://{authz}"

[[policies]]
name = "role"
target_refs = [{{ kind = "Gateway", name = "edge" }}]
ext_auth = {{ backend = "authz-server", grpc = {{}} }}
"#
    ))
    .await;
    listeners[0].1
}

#[tokio::test]
async fn the_gateway_refuses_every_malformed_h2_field_and_serves_none() {
    let authz = start_with(POLICY).await;
    let backend = NormalisingBackend::start().await;
    let edge = gateway(authz.grpc, backend.addr).await;
    assert_eq!(
        send_raw(edge, &[(b"x-role", b"blocked")]).await,
        Outcome::Status(403)
    );
    assert_eq!(
        send_raw(edge, &[(b"x-role", b"ok")]).await,
        Outcome::Status(200)
    );
    assert_eq!(backend.seen().len(), 1, "the control request is served");
    let mut let_through = Vec::new();
    for field in MALFORMED {
        let outcome = send_raw(edge, &[*field]).await;
        if !outcome.refused() {
            let_through.push((
                String::from_utf8_lossy(field.0),
                String::from_utf8_lossy(field.1),
                outcome,
            ));
        }
    }
    assert_eq!(let_through, [], "each malformed field is refused");
    assert_eq!(
        backend.seen().len(),
        1,
        "no malformed request reached the backend"
    );
}

#[tokio::test]
async fn authz_server_http_mode_refuses_every_malformed_h2_field() {
    let authz = start_with(POLICY).await;
    assert_eq!(
        send_raw(authz.http, &[(b"x-role", b"blocked")]).await,
        Outcome::Status(403)
    );
    assert_eq!(
        send_raw(authz.http, &[(b"x-role", b"ok")]).await,
        Outcome::Status(200)
    );
    let mut let_through = Vec::new();
    for field in MALFORMED {
        let outcome = send_raw(authz.http, &[*field]).await;
        if !outcome.refused() {
            let_through.push((
                String::from_utf8_lossy(field.0),
                String::from_utf8_lossy(field.1),
                outcome,
            ));
        }
    }
    assert_eq!(let_through, [], "each malformed field is refused");
}

#[tokio::test]
async fn authz_server_grpc_port_refuses_a_check_with_malformed_metadata() {
    let authz = start_with(POLICY).await;
    let mut client = e2e::v3_client(authz.grpc).await;
    let check = || e2e::v3_check(&[("x-role", "ok")], "");
    assert!(
        client.check(check()).await.is_ok(),
        "a plain Check is answered"
    );
    for value in [" blocked", "blocked ", "\tblocked", "blocked\t"] {
        let mut request = tonic::Request::new(check());
        let value = tonic::metadata::MetadataValue::try_from(value).expect("a valid field value");
        request.metadata_mut().insert("x-role", value);
        let status = client.check(request).await.expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert_eq!(status.message(), "malformed request header: x-role");
    }
}

#[tokio::test]
async fn a_duplicated_header_does_not_walk_around_a_value_deny_at_the_gateway() {
    let authz = start_with(POLICY).await;
    let backend = NormalisingBackend::start().await;
    let edge = gateway(authz.grpc, backend.addr).await;
    for (first, second) in [("ok", "blocked"), ("blocked", "ok")] {
        let head = format!(
            "GET / HTTP/1.1\r\nHost: app.example.com\r\nx-role: {first}\r\nx-role: {second}"
        );
        let reply = raw_request(edge, &head).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (403, "blocked role"),
            "HTTP/1.1 {first},{second}"
        );
        let outcome = send_raw(
            edge,
            &[
                (b"x-role", first.as_bytes()),
                (b"x-role", second.as_bytes()),
            ],
        )
        .await;
        assert_eq!(outcome, Outcome::Status(403), "h2 {first},{second}");
    }
    let ok = raw_request(
        edge,
        "GET / HTTP/1.1\r\nHost: app.example.com\r\nx-role: ok\r\nx-role: ok",
    )
    .await;
    assert_eq!(ok.status, 200, "two harmless copies pass");
    assert_eq!(
        backend.seen().len(),
        1,
        "only the harmless request reached the backend"
    );
}
