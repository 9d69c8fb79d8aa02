//! Two things a proxy in front relies on: a check whose caller has already stopped waiting
//! (`grpc-timeout` passed on arrival) is answered `DEADLINE_EXCEEDED` and not evaluated; and the
//! decision log names the request by `x-request-id`, else by the check's own
//! `attributes.request.http.id` (what agentgateway sends).

mod support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use extauthz_proto::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use extauthz_proto::v3;

const BIN: &str = env!("CARGO_BIN_EXE_authz-server");

fn check(id: &str, headers: &[(&str, &str)]) -> v3::CheckRequest {
    support::check_of(v3::attribute_context::HttpRequest {
        id: id.to_owned(),
        method: "POST".into(),
        path: "/openai".into(),
        host: "gw".into(),
        headers: support::header_map(headers),
        ..Default::default()
    })
}

/// One v3 Check over raw HTTP/2, with `grpc-timeout` set as given and no client-side deadline of
/// its own (tonic's client would give up first), so the server's answer is what comes back.
/// Returns the `grpc-status`.
async fn raw_check(
    address: std::net::SocketAddr,
    grpc_timeout: Option<&str>,
    check: &v3::CheckRequest,
) -> String {
    use prost::Message as _;
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .expect("connects");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let mut request = http::Request::post(format!(
        "http://{address}/envoy.service.auth.v3.Authorization/Check"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers");
    if let Some(timeout) = grpc_timeout {
        request = request.header("grpc-timeout", timeout);
    }
    let (response, mut send) = client
        .send_request(request.body(()).expect("request"), false)
        .expect("sends headers");
    let message = check.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
    frame.extend_from_slice(&message);
    send.send_data(frame.into(), true)
        .expect("sends the message");
    let (parts, mut body) = response.await.expect("answers").into_parts();
    assert_eq!(parts.status, 200);
    if let Some(status) = parts.headers.get("grpc-status") {
        return status.to_str().expect("ascii").to_owned(); // trailers-only answer
    }
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("body");
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body.trailers().await.expect("trailers").expect("present");
    trailers["grpc-status"].to_str().expect("ascii").to_owned()
}

#[tokio::test]
async fn a_check_past_its_deadline_is_answered_deadline_exceeded_and_not_evaluated() {
    let config = authz_server::Config::parse("istio.toml", authz_server::config::BUILTIN_CONFIG)
        .unwrap_or_else(|e| panic!("{e}"));
    let engine = authz_server::RuleEngine::connect(config.rules, None).await;
    let loopback: std::net::SocketAddr = "127.0.0.1:0".parse().expect("loopback");
    let server = authz_server::Server::bind(engine, Some(loopback), None)
        .await
        .expect("binds");
    let metrics = server.metrics();
    let grpc = server.grpc_addr().expect("grpc");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve_until(async {
        let _ = stopped.await;
    }));
    let allow = check("", &[("x-ext-authz", "allow")]);

    // grpc-timeout: 1n — over before the check is read. DEADLINE_EXCEEDED is code 4.
    assert_eq!(raw_check(grpc, Some("1n"), &allow).await, "4");
    // Envoy's 200 ms: plenty on loopback, so the same check is decided (OK is code 0).
    assert_eq!(raw_check(grpc, Some("200m"), &allow).await, "0");
    // No grpc-timeout at all: no deadline; decided (the rules deny: the RPC is still OK).
    assert_eq!(raw_check(grpc, None, &check("", &[])).await, "0");

    let text = metrics.render();
    assert!(
        text.lines()
            .any(|l| l == r#"authz_checks_expired_total{api="grpc.v3"} 1"#),
        "{text}"
    );
    // Only the two checks in time were decided and counted.
    let decided: u64 = text
        .lines()
        .filter(|l| l.starts_with("authz_checks_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(decided, 2, "{text}");
    let _ = stop.send(());
}

/// The decision log's request id: the header when the proxy forwards one, else the check's id.
#[test]
fn the_log_names_the_request_by_header_else_by_the_checks_id() {
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

        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let mut client = AuthorizationClient::connect(format!("http://{address}"))
                .await
                .expect("connects");
            // agentgateway: the id field, no x-request-id header.
            client.check(check("agw-7f3a", &[])).await.expect("answers");
            // Envoy: both; the header wins.
            client
                .check(check("envoy-id", &[("x-request-id", "hdr-42")]))
                .await
                .expect("answers");
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

        let decisions: Vec<&str> = logs.lines().filter(|l| l.contains("decision")).collect();
        assert_eq!(decisions.len(), 2, "{format}:\n{logs}");
        let (first, second) = (decisions[0], decisions[1]);
        match format {
            "text" => {
                assert!(first.contains(" request_id=agw-7f3a "), "{first}");
                assert!(second.contains(" request_id=hdr-42 "), "{second}");
            }
            _ => {
                assert!(first.contains(r#""request_id":"agw-7f3a""#), "{first}");
                assert!(second.contains(r#""request_id":"hdr-42""#), "{second}");
            }
        }
        assert!(!second.contains("envoy-id"), "{second}");
    }
}
