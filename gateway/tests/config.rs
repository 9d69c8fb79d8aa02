//! Configs that must be rejected, with the exact error text and place; `gateway validate`; and
//! the binaries driven as processes on OS-chosen ports.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use http::StatusCode;
use support::*;

const BASE: &str = r#"[[listeners]]
name = "gw"
address = "127.0.0.1:0"

[[backends]]
name = "b"
url = "http://127.0.0.1:9100"

[[authz_backends]]
name = "authz"
url = "http://127.0.0.1:9000"
"#;

/// BASE is 11 lines; a case's first line is line 12.
fn errors_of(extra: &str) -> Vec<String> {
    let text = format!("{BASE}{extra}");
    match gateway::Config::from_toml(&text, "t.toml") {
        Ok(_) => vec![],
        Err(e) => e.errors.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn rejected_configs_name_file_line_column_and_every_problem() {
    let cases: &[(&str, &[&str])] = &[
        (
            "[[routes]]\nname = \"r\"\nbackend = \"nope\"\n",
            &["t.toml:14:11: unknown backend `nope`"],
        ),
        (
            "[[routes]]\nname = \"r\"\nbackend = \"b\"\nbogus = 1\n",
            &[
                "t.toml:15:1: unknown field `bogus`, expected one of `name`, `hosts`, `path`, `methods`, `headers`, `backend`, `rewrite_prefix`, `timeout`, `host_rewrite`, `request_headers`, `response_headers`, `retries`, `upgrades`",
            ],
        ),
        (
            "[[routes]]\nname = \"r\"\nbackend = \"b\"\npath = { prefix = \"/a\", regex = \"x\" }\ntimeout = \"10\"\n",
            &[
                "t.toml:15:8: path needs exactly one of `exact`, `prefix`, `regex`",
                "t.toml:16:11: invalid duration `10`: expected a positive whole number with unit ms, s or m, e.g. \"200ms\"",
            ],
        ),
        (
            "[[routes]]\nname = \"r\"\nbackend = \"b\"\npath = { regex = \"(\" }\n",
            &["t.toml:15:8: invalid regex `(`: unclosed group"],
        ),
        (
            "[[routes]]\nname = \"r\"\nbackend = \"b\"\nrewrite_prefix = \"/x\"\n",
            &["t.toml:15:18: rewrite_prefix needs a `path = { prefix = ... }` match"],
        ),
        (
            "[[routes]]\nname = \"r\"\nbackend = \"b\"\nhosts = [\"a*.com\"]\nmethods = [\"GE T\"]\n",
            &[
                "t.toml:15:10: invalid host `a*.com`: expected example.com or *.example.com",
                "t.toml:16:12: invalid method `GE T`",
            ],
        ),
        (
            "[[policies]]\nname = \"p\"\ntarget_refs = [{ kind = \"Gateway\", name = \"other\" }]\next_auth = { backend = \"missing\" }\n",
            &[
                "t.toml:14:43: unknown listener `other`",
                "t.toml:15:24: unknown authz backend `missing`",
            ],
        ),
        (
            "[[policies]]\nname = \"p\"\ntarget_refs = [{ kind = \"Mesh\", name = \"gw\" }]\next_auth = { backend = \"authz\" }\n",
            &[
                "t.toml:14:25: unknown variant `Mesh`, expected one of `Gateway`, `HTTPRoute`, `Route`",
            ],
        ),
        (
            "[[policies]]\nname = \"p\"\ntarget_refs = [{ kind = \"Gateway\", name = \"gw\" }]\next_auth = { disabled = true }\n",
            &["t.toml:13:8: `disabled` only applies to policies that target routes"],
        ),
        (
            "[[policies]]\nname = \"p\"\ntarget_refs = [{ kind = \"Gateway\", name = \"gw\" }]\next_auth = { backend = \"authz\", status_on_error = 99, timeout = \"fast\" }\n",
            &[
                "t.toml:15:51: status_on_error must be an HTTP status between 200 and 599",
                "t.toml:15:65: invalid duration `fast`: expected a positive whole number with unit ms, s or m, e.g. \"200ms\"",
            ],
        ),
        (
            "[[policies]]\nname = \"p\"\ntarget_refs = [{ kind = \"Gateway\", name = \"gw\" }]\next_auth = { backend = \"authz\", grpc = {}, http = {} }\n",
            &["t.toml:13:8: ext_auth takes `grpc` or `http`, not both"],
        ),
        (
            "[[routes]]\nname = \"r\"\nbackend = \"b\"\npath = { prefix = \"/%7Euser/./docs\" }\n[[routes]]\nname = \"s\"\nbackend = \"b\"\npath = { exact = \"/a%zz\" }\n",
            &[
                "t.toml:15:8: route path `/%7Euser/./docs` can never match: requests are matched in canonical form, write `/~user/docs`",
                "t.toml:19:8: route path `/a%zz` can never match: invalid percent-encoding in path",
            ],
        ),
        (
            "[[backends]]\nname = \"b\"\nurl = \"https://x:1/path\"\n",
            &["t.toml:13:8: duplicate backend name `b`"],
        ),
        (
            "[[backends]]\nname = \"c\"\nurl = \"http://x:1/path\"\n",
            &[
                "t.toml:14:7: invalid url `http://x:1/path`: a backend url has no path (found `/path`); expected http://host[:port] or https://host[:port], and set the path with the route's `rewrite_prefix`",
            ],
        ),
    ];
    for (extra, want) in cases {
        assert_eq!(&errors_of(extra), want, "config:\n{extra}");
    }
}

#[test]
fn upstream_transport_and_header_rule_mistakes_are_placed() {
    let cases: &[(&str, &[&str])] = &[
        (
            "[[backends]]\nname = \"c\"\nurl = \"https://api.example/v1\"\n",
            &[
                "t.toml:14:7: invalid url `https://api.example/v1`: a backend url has no path (found `/v1`); expected http://host[:port] or https://host[:port], and set the path with the route's `rewrite_prefix`",
            ],
        ),
        (
            "[[backends]]\nname = \"c\"\nurl = \"ftp://x\"\nprotocol = \"http3\"\n",
            &[
                "t.toml:14:7: invalid url `ftp://x`: expected http://host[:port] or https://host[:port]",
                "t.toml:15:12: unknown protocol `http3`: expected \"http1\", \"http2\" or \"auto\"",
            ],
        ),
        (
            "[[backends]]\nname = \"c\"\nurl = \"http://x\"\ntls = { sni = \"x\" }\n",
            &["t.toml:15:7: `tls` needs an https:// url; `http://x` is plaintext"],
        ),
        (
            "[[backends]]\nname = \"c\"\nurl = \"https://x\"\ntls = { ca = \"no-such-ca.pem\" }\n",
            &[
                "t.toml:15:14: tls: cannot read `no-such-ca.pem`: No such file or directory (os error 2)",
            ],
        ),
        (
            "[[backends]]\nname = \"c\"\nurl = \"https://x\"\ntls = { cert = \"c.pem\" }\n",
            &["t.toml:15:16: tls `cert` and `key` go together"],
        ),
        (
            "[[backends]]\nname = \"c\"\nurl = \"https://x\"\ntls = { verify = false }\n",
            &["t.toml:15:9: unknown field `verify`, expected one of `ca`, `cert`, `key`, `sni`"],
        ),
        (
            "[[routes]]\nname = \"r\"\nbackend = \"b\"\nrequest_headers = { set = { authorization = \"Bearer ${GATEWAY_TEST_UNSET_VARIABLE}\" } }\n",
            &["t.toml:15:45: environment variable `GATEWAY_TEST_UNSET_VARIABLE` is not set"],
        ),
        (
            "[[routes]]\nname = \"r\"\nbackend = \"b\"\nrequest_headers = { set = { host = \"x\" }, add = { x = \"${BROKEN\" }, drop = [] }\n",
            &["t.toml:15:69: unknown field `drop`, expected one of `set`, `add`, `remove`"],
        ),
        (
            "[[routes]]\nname = \"r\"\nbackend = \"b\"\nrequest_headers = { set = { host = \"x\" }, add = { x = \"${BROKEN\" } }\nresponse_headers = { remove = [\"content-length\"] }\nhost_rewrite = \"not a host\"\n",
            &[
                "t.toml:15:29: a route cannot change `host` here: use `host_rewrite`",
                "t.toml:15:55: invalid `${...}`: expected `${NAME}` with NAME made of letters, digits and `_`",
                "t.toml:16:32: a route cannot change `content-length`: the proxy owns framing and connection headers",
                "t.toml:17:16: host_rewrite must be \"auto\" or a host (with an optional port)",
            ],
        ),
    ];
    for (extra, want) in cases {
        let got = errors_of(extra);
        assert_eq!(&got, want, "config:\n{extra}");
        // The value of a variable, or of a configured header, never shows in an error.
        assert!(got.iter().all(|e| !e.contains("Bearer")), "{got:?}");
    }
}

#[test]
fn a_listener_address_must_be_ip_and_port() {
    let text = "[[listeners]]\nname = \"gw\"\naddress = \"localhost\"\n";
    let err = gateway::Config::from_toml(text, "l.toml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "l.toml:3:11: invalid listener address `localhost`: expected ip:port, e.g. 0.0.0.0:8080"
    );
}

#[test]
fn validate_prints_every_error_and_exits_2() {
    let dir = std::env::temp_dir().join(format!("gateway-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        format!("{BASE}[[routes]]\nname = \"r\"\nbackend = \"nope\"\ntimeout = \"x\"\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let f = file.display();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "{f}:14:11: unknown backend `nope`\n{f}:15:11: invalid duration `x`: expected a positive whole number with unit ms, s or m, e.g. \"200ms\"\n"
        )
    );

    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/gateway.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["validate", shipped])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `config/gateway.openai.toml` (the seed's gateway in front of api.openai.com) loads when its key is in
/// the environment, never prints the key, and is refused naming the variable when it is not.
#[test]
fn the_shipped_openai_config_needs_its_key_and_never_prints_it() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/gateway.openai.toml");
    let key = "sk-test-0123456789-never-printed";
    let with_key = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["validate", shipped])
        .env("OPENAI_API_KEY", key)
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&with_key.stdout),
        String::from_utf8_lossy(&with_key.stderr)
    );
    assert_eq!(with_key.status.code(), Some(0), "{printed}");
    assert!(!printed.contains(key), "{printed}");

    let without = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["validate", shipped])
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    assert_eq!(without.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&without.stderr);
    assert!(stderr.contains("gateway.openai.toml:26:"), "{stderr}");
    assert!(stderr.contains("OPENAI_API_KEY"), "{stderr}");
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a binary and waits for its `listening http ADDR` line.
fn spawn_listening(bin: &str, args: &[&str]) -> (Proc, SocketAddr) {
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts the binary");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("reads a line");
    let addr = line
        .strip_prefix("listening http ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .trim()
        .parse()
        .expect("a socket address on the listening line");
    (Proc(child), addr)
}

#[tokio::test]
async fn the_binaries_run_the_shipped_config_on_chosen_ports() {
    let authz = MockAuthz::istio().await;
    let (_backend, backend_addr) = spawn_listening(
        env!("CARGO_BIN_EXE_demo-backend"),
        &["--listen", "127.0.0.1:0"],
    );
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/gateway.toml");
    let backend_url = format!("openai=http://{backend_addr}");
    let authz_url = format!("ext-authz=http://{}", authz.addr);
    let (_gateway, gw) = spawn_listening(
        env!("CARGO_BIN_EXE_gateway"),
        &[
            "run",
            "--config",
            shipped,
            "--listen",
            "127.0.0.1:0",
            "--backend-url",
            &backend_url,
            "--authz-url",
            &authz_url,
        ],
    );

    let denied = send(seed_post(gw, "/openai", &[])).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.text(), DENY_BODY);
    assert_eq!(denied.headers["x-ext-authz-check-result"], "denied");

    let allowed = send(seed_post(gw, "/openai", &[("x-ext-authz", "allow")])).await;
    assert_eq!(allowed.status, StatusCode::OK);
    assert_eq!(
        allowed.backend_saw("x-ext-authz-check-result").as_deref(),
        Some("allowed")
    );
}
