//! What a scenario is ([`Scenario`], its [`Load`]) and the [`Starter`] that starts the run's
//! server processes (authz-server, gateway, floor, nginx) and remembers where they listen.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::fixtures::{self, GatewayPolicy, Upstream};
use super::options::Options;
use super::procs::{self, Server, Spec};

/// How a scenario loads its server.
#[derive(Debug, Clone)]
pub enum Load {
    /// gRPC Check.
    Grpc {
        /// The server.
        address: SocketAddr,
        /// `v3` or `v2`.
        api: &'static str,
        /// Request headers.
        headers: Vec<(String, String)>,
        /// The status code every answer must carry.
        expect_code: i32,
    },
    /// HTTP/1.1 GET.
    Http {
        /// The server.
        address: SocketAddr,
        /// Path.
        path: &'static str,
        /// Request headers.
        headers: Vec<(String, String)>,
        /// The status every answer must have.
        expect_status: u16,
    },
}

/// One measured case.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Unique name, used in tables, the chart and comparisons.
    pub name: String,
    /// The section of the report it belongs to.
    pub group: &'static str,
    /// What is sent and what must come back.
    pub load: Load,
    /// Calls in flight.
    pub concurrency: usize,
    /// Open loop at this rate; closed loop when `None`.
    pub rate: Option<f64>,
    /// Indices (into the run's servers) of the processes that serve it, for CPU accounting.
    pub servers: Vec<usize>,
    /// The gateway whose upstream connections and TLS handshakes are counted around each
    /// measurement, if any.
    pub counted: Option<Counted>,
}

/// Which gateway's upstream counters a scenario reads, and what it must see.
#[derive(Debug, Clone, Copy)]
pub struct Counted {
    /// The gateway's admin address.
    pub admin: SocketAddr,
    /// The backend is behind TLS: its connections must show as handshakes.
    pub tls: bool,
}

/// Starts the run's servers, pinned, their logs in the run's directory.
pub(super) struct Starter<'a> {
    pub(super) options: &'a Options,
    pub(super) dir: &'a Path,
    pub(super) pin: bool,
    pub(super) servers: Vec<Server>,
}

impl Starter<'_> {
    pub(super) fn bin(&self, name: &str) -> PathBuf {
        self.options.bin_dir.join(name)
    }

    pub(super) fn start(&mut self, spec: &Spec<'_>) -> anyhow::Result<usize> {
        let server = procs::start(spec, self.dir, self.pin)?;
        self.servers.push(server);
        Ok(self.servers.len() - 1)
    }

    /// authz-server with `config` (a file written now; `None`: the built-in Istio default).
    pub(super) fn authz(
        &mut self,
        name: &str,
        config: Option<&str>,
        env: Vec<(&str, &str)>,
    ) -> anyhow::Result<usize> {
        let mut args = vec![
            "--grpc-addr".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--http-addr".to_owned(),
            "127.0.0.1:0".to_owned(),
        ];
        if let Some(config) = config {
            let path = self.dir.join(format!("{name}.toml"));
            std::fs::write(&path, config)?;
            args.extend(["--config".to_owned(), path.display().to_string()]);
        }
        self.authz_with(name, args, env)
    }

    pub(super) fn authz_with(
        &mut self,
        name: &str,
        args: Vec<String>,
        env: Vec<(&str, &str)>,
    ) -> anyhow::Result<usize> {
        let program = self.bin("authz-server");
        self.start(&Spec {
            name,
            program: &program,
            args,
            env,
            listening: &["grpc", "http"],
            ready_port: None,
        })
    }

    /// A gateway in front of `upstream`; it prints its listener and admin addresses.
    pub(super) fn gateway(
        &mut self,
        name: &str,
        upstream: &Upstream,
        policy: GatewayPolicy,
    ) -> anyhow::Result<usize> {
        let path = self.dir.join(format!("{name}.toml"));
        std::fs::write(&path, fixtures::gateway(upstream, policy))?;
        let program = self.bin("gateway");
        self.start(&Spec {
            name,
            program: &program,
            args: vec![
                "run".to_owned(),
                "--config".to_owned(),
                path.display().to_string(),
            ],
            env: vec![],
            listening: &["http", "admin"],
            ready_port: None,
        })
    }

    pub(super) fn addr(&self, index: usize, kind: &str) -> anyhow::Result<SocketAddr> {
        self.servers[index].address(kind)
    }
}
