//! The binary under signals: reload on file change and SIGHUP, drain on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_authz-server");

struct Running {
    child: Child,
    http: String,
    admin: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(config: &std::path::Path) -> Running {
    let mut child = Command::new(BIN)
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args([
            "--admin-addr",
            "127.0.0.1:0",
            "--drain-timeout",
            "5",
            "--config",
        ])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut address = |kind: &str| {
        let line = lines.next().expect("a listening line").expect("utf-8");
        line.strip_prefix(&format!("listening {kind} "))
            .unwrap_or_else(|| panic!("unexpected line {line}"))
            .to_owned()
    };
    let _grpc = address("grpc");
    let http = address("http");
    let admin = address("admin");
    Running { child, http, admin }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// One HTTP/1.1 request on a fresh connection; the status code, or None if refused.
fn status_of(address: &str, header: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(address).ok()?;
    write!(
        stream,
        "GET / HTTP/1.1\r\nhost: x\r\n{header}\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    reply.get(9..12)?.parse().ok()
}

fn body_of(address: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(address).expect("admin connects");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .expect("write");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("read");
    reply
}

fn config_allowing(value: &str) -> String {
    format!(
        "[default]\ndeny = {{ status = 403 }}\n\n[[rules]]\nname = \"team\"\nwhen.headers = [{{ name = \"x-team\", exact = \"{value}\" }}]\nallow = {{}}\n"
    )
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn temp_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("authz-signals-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("rules.toml");
    std::fs::write(&path, text).expect("write");
    path
}

#[test]
fn file_change_and_sighup_reload_and_a_broken_config_keeps_the_old_rules() {
    let path = temp_config("reload", &config_allowing("red"));
    let server = start(&path);
    assert_eq!(status_of(&server.http, "x-team: red"), Some(200));
    assert_eq!(status_of(&server.http, "x-team: blue"), Some(403));

    std::fs::write(&path, config_allowing("blue")).expect("write");
    wait_until("the file change to take effect", || {
        status_of(&server.http, "x-team: blue") == Some(200)
    });
    assert_eq!(status_of(&server.http, "x-team: red"), Some(403));

    std::fs::write(&path, "[default]\ndeny = { status = 403 }\n[[rules]]\nname = \"x\"\nwhen.path = { regex = \"(\" }\nallow = {}\n").expect("write");
    signal(&server.child, "HUP");
    wait_until("the failed reload to show in metrics", || {
        body_of(&server.admin, "/metrics").contains("authz_config_synchronized 0")
    });
    assert_eq!(
        status_of(&server.http, "x-team: blue"),
        Some(200),
        "last good config serves"
    );
    assert!(
        body_of(&server.admin, "/metrics")
            .contains("authz_config_reloads_total{result=\"error\"} ")
    );
}

#[test]
fn sigterm_drains_requests_in_flight_refuses_new_ones_and_exits_0() {
    let path = temp_config("drain", &config_allowing("red"));
    let mut server = start(&path);
    // A request whose body is still arriving when SIGTERM lands.
    let mut in_flight = TcpStream::connect(&server.http).expect("connects");
    write!(
        in_flight,
        "POST / HTTP/1.1\r\nhost: x\r\nx-team: red\r\ncontent-length: 10\r\nconnection: close\r\n\r\nhello"
    )
    .expect("write head");
    std::thread::sleep(Duration::from_millis(200));
    signal(&server.child, "TERM");
    wait_until("readiness to turn off", || {
        body_of(&server.admin, "/readyz").starts_with("HTTP/1.1 503")
    });
    assert!(
        TcpStream::connect(&server.http).is_err()
            || status_of(&server.http, "x-team: red").is_none(),
        "new connections are refused while draining"
    );
    in_flight.write_all(b"world").expect("finish the body");
    let mut reply = String::new();
    in_flight.read_to_string(&mut reply).expect("reply");
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    let status = server.child.wait().expect("exits");
    assert_eq!(status.code(), Some(0));
}
