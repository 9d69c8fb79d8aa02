//! Shared support for the authz-server suites: servers on loopback ports, v3 Check clients,
//! fresh PostgreSQL databases per test and temporary files (where PostgreSQL is, and servers a
//! test may stop, come from `testkit`).

#![allow(dead_code)]

use std::path::PathBuf;

use authz_server::lookup::{Database, OpenMode};

/// A new, empty database on the server at `base` (a URL naming any database); its URL.
pub(crate) async fn fresh_postgres_database(base: &str) -> String {
    let name = testkit::unique("authz_t");
    let admin = Database::open(base, 1, OpenMode::Existing).expect("PostgreSQL URL");
    admin
        .execute(&format!("CREATE DATABASE {name}"), &[])
        .await
        .expect("creates a test database");
    admin.close().await;
    let (server, _) = base.rsplit_once('/').expect("URL with a database");
    format!("{server}/{name}")
}

/// A path for a new temporary file (not created).
pub(crate) fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join("authz-server-tests");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(testkit::unique(name));
    let _ = std::fs::remove_file(&path);
    path
}

/// Runs statements against a database, panicking with the statement on failure.
pub(crate) async fn run_sql(url: &str, statements: &[&str]) {
    let database = Database::open(url, 1, OpenMode::Create).expect("database URL");
    for sql in statements {
        database
            .execute(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    database.close().await;
}

/// The rows of a query, as text.
pub(crate) async fn query_rows(url: &str, sql: &str) -> Vec<rules::Row> {
    let database = Database::open(url, 1, OpenMode::Existing).expect("database URL");
    let rows = database
        .rows(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    database.close().await;
    rows
}

/// An authz server running in this test until dropped, with hooks connected as `serve` does.
pub(crate) struct Running {
    /// The gRPC address.
    pub grpc: std::net::SocketAddr,
    /// The HTTP-mode address.
    pub http: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Running {
    /// A server a test bound itself (e.g. with its own `Authorizer`), stopped on drop through
    /// `stop`.
    pub(crate) fn at(
        grpc: std::net::SocketAddr,
        http: std::net::SocketAddr,
        stop: tokio::sync::oneshot::Sender<()>,
    ) -> Self {
        Self {
            grpc,
            http,
            stop: Some(stop),
        }
    }
}

/// Sends `request` as raw bytes (exactly as written: nothing is normalised on the way) to an
/// HTTP-mode listener and returns the whole reply; the request should ask for
/// `connection: close`. Fails after 5 s.
pub(crate) async fn http_raw(address: std::net::SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connects");
        stream.write_all(request).await.expect("sends");
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.expect("reads");
        String::from_utf8_lossy(&reply).into_owned()
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), exchange)
        .await
        .expect("HTTP mode answers within 5 s")
}

/// [`http_raw`] for a request written as text.
pub(crate) async fn http_get(address: std::net::SocketAddr, request: &str) -> String {
    http_raw(address, request.as_bytes()).await
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Compiles `config` (panicking with every error) and serves it on loopback ports.
pub(crate) async fn start(config: &str) -> Running {
    let config = authz_server::Config::parse("test.toml", config)
        .unwrap_or_else(|e| panic!("test config loads: {e}"));
    start_engine(authz_server::RuleEngine::connect(config.rules, None).await).await
}

/// Serves an engine on loopback ports.
pub(crate) async fn start_engine(engine: authz_server::RuleEngine) -> Running {
    let loopback: std::net::SocketAddr = "127.0.0.1:0".parse().expect("loopback");
    let server = authz_server::Server::bind(engine, Some(loopback), Some(loopback))
        .await
        .expect("binds loopback ports");
    let grpc = server.grpc_addr().expect("grpc bound");
    let http = server.http_addr().expect("http bound");
    let (stop, stopped) = tokio::sync::oneshot::channel();
    tokio::spawn(server.serve_until(async {
        let _ = stopped.await;
    }));
    Running {
        grpc,
        http,
        stop: Some(stop),
    }
}

pub(crate) type Client =
    extauthz_proto::envoy::service::auth::v3::authorization_client::AuthorizationClient<
        tonic::transport::Channel,
    >;

/// A v3 Authorization client for a running server.
pub(crate) async fn client(server: &Running) -> Client {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.grpc))
        .expect("uri")
        .connect()
        .await
        .expect("connects");
    Client::new(channel)
}

/// What a proxy would make of one Check answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Answer {
    /// 200 for OK, else the denied response's HTTP status.
    pub status: u16,
    /// The gRPC status code of the decision (0 = OK, 7 = PERMISSION_DENIED, ...).
    pub code: i32,
    /// OK: request headers to add upstream; denied: headers for the client.
    pub headers: Vec<(String, String)>,
    /// The denied response's body.
    pub body: String,
}

impl Answer {
    /// A header's value, if present.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Header pairs as a check's `headers` map holds them.
pub(crate) fn header_map(headers: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A v3 CheckRequest carrying only `http` (no peers, no context extensions), as a proxy that
/// sends nothing else would.
pub(crate) fn check_of(
    http: extauthz_proto::v3::attribute_context::HttpRequest,
) -> extauthz_proto::v3::CheckRequest {
    use extauthz_proto::v3;
    v3::CheckRequest {
        attributes: Some(v3::AttributeContext {
            request: Some(v3::attribute_context::Request {
                time: None,
                http: Some(http),
            }),
            ..Default::default()
        }),
    }
}

/// Sends one v3 Check for `GET path` on `api.example.com` with these headers.
pub(crate) async fn check(client: &mut Client, path: &str, headers: &[(&str, &str)]) -> Answer {
    check_at(client, "api.example.com", path, headers).await
}

/// Sends one v3 Check for `GET path` on `host`, both exactly as given (as a proxy that does not
/// normalise would send them).
pub(crate) async fn check_at(
    client: &mut Client,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    use extauthz_proto::v3;
    let request = check_of(v3::attribute_context::HttpRequest {
        method: "GET".into(),
        path: path.into(),
        host: host.into(),
        protocol: "HTTP/1.1".into(),
        headers: header_map(headers),
        ..Default::default()
    });
    let response = client
        .check(request)
        .await
        .expect("Check answers (a deny is a successful RPC)")
        .into_inner();
    let code = response.status.as_ref().map_or(-1, |s| s.code);
    let pairs = |headers: &[v3::HeaderValueOption]| -> Vec<(String, String)> {
        headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .map(|h| (h.key.clone(), h.value.clone()))
            .collect()
    };
    match response.http_response {
        Some(v3::check_response::HttpResponse::OkResponse(ok)) => Answer {
            status: 200,
            code,
            headers: pairs(&ok.headers),
            body: String::new(),
        },
        Some(v3::check_response::HttpResponse::DeniedResponse(denied)) => Answer {
            status: denied
                .status
                .map_or(403, |s| u16::try_from(s.code).expect("an HTTP status code")),
            code,
            headers: pairs(&denied.headers),
            body: denied.body,
        },
        other => panic!("unexpected http_response {other:?}"),
    }
}
