//! The upstream scenarios (issue #18): the gateway in front of an HTTPS backend and a gRPC
//! backend, each beside nginx doing the same (`proxy_pass https://` with upstream keep-alive,
//! `grpc_pass grpc://`), and the gateway's own count of upstream connections and TLS handshakes
//! read from its admin `/metrics` around every measurement.
//!
//! The backend is one more `floor` process: its bare tonic Check is the gRPC backend, its
//! `--https` listener the HTTPS one (a certificate for `localhost` and `127.0.0.1` from a test CA
//! made with rcgen at the start of the run).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// The run's test CA and the HTTPS backend's certificate, as PEM files in the run's directory.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA certificate: what the gateway's `tls.ca` and nginx's
    /// `proxy_ssl_trusted_certificate` trust.
    pub ca: PathBuf,
    /// The backend's certificate (SANs `localhost`, `127.0.0.1`), signed by the CA.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// Makes a CA and a server certificate for `localhost` / `127.0.0.1`; writes them into `dir`.
pub fn pki(dir: &Path) -> anyhow::Result<Pki> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "bench test CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;

    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names = vec![
        SanType::DnsName("localhost".try_into()?),
        SanType::IpAddress([127, 0, 0, 1].into()),
    ];
    params
        .distinguished_name
        .push(DnType::CommonName, "bench backend");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;

    let pki = Pki {
        ca: dir.join("bench-ca.pem"),
        cert: dir.join("backend.pem"),
        key: dir.join("backend.key"),
    };
    std::fs::write(&pki.ca, ca.pem())?;
    std::fs::write(&pki.cert, cert.pem())?;
    std::fs::write(&pki.key, key.serialize_pem())?;
    Ok(pki)
}

use super::fixtures::{GatewayPolicy, Upstream};
use super::procs::Spec;
use super::starter::{Counted, Load, Scenario, Starter};

/// The processes of the upstream scenarios, as indices into the run's servers.
pub struct Servers {
    pki: Pki,
    /// The floor serving gRPC (h2c) and HTTPS.
    backend: usize,
    /// Gateway → HTTPS backend, `protocol = "http1"`.
    https_http1: usize,
    /// Gateway → HTTPS backend, `protocol = "auto"` (h2 by ALPN: the floor prefers it).
    https_auto: usize,
    /// Gateway → the floor's gRPC Check, `protocol = "http2"`.
    grpc: usize,
}

/// Makes the test CA, starts the TLS/gRPC backend and the three gateways in front of it.
pub(super) fn start(s: &mut Starter<'_>, dir: &Path) -> anyhow::Result<Servers> {
    let pki = pki(dir).context("the test CA")?;
    let program = s.bin("floor");
    let backend = s.start(&Spec {
        name: "backend-tls-grpc",
        program: &program,
        args: vec![
            "--https".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--cert".to_owned(),
            pki.cert.display().to_string(),
            "--key".to_owned(),
            pki.key.display().to_string(),
        ],
        env: vec![],
        listening: &["grpc", "https"],
        ready_port: None,
    })?;
    let https = s.addr(backend, "https")?;
    let tls = |protocol| Upstream::Https {
        address: https,
        ca: pki.ca.clone(),
        protocol,
    };
    let https_http1 = s.gateway("gateway-https-http1", &tls("http1"), GatewayPolicy::None)?;
    let https_auto = s.gateway("gateway-https-auto", &tls("auto"), GatewayPolicy::None)?;
    let grpc_upstream = Upstream::Grpc(s.addr(backend, "grpc")?);
    let grpc = s.gateway("gateway-grpc-backend", &grpc_upstream, GatewayPolicy::None)?;
    Ok(Servers {
        pki,
        backend,
        https_http1,
        https_auto,
        grpc,
    })
}

impl Servers {
    /// nginx's server blocks for the peer scenarios, listening on `https_front` (proxying to the
    /// HTTPS backend) and `grpc_front` (to the gRPC one).
    pub(super) fn nginx_sites(
        &self,
        s: &Starter<'_>,
        https_front: SocketAddr,
        grpc_front: SocketAddr,
    ) -> anyhow::Result<String> {
        Ok(nginx_sites(
            https_front,
            s.addr(self.backend, "https")?,
            &self.pki.ca,
            grpc_front,
            s.addr(self.backend, "grpc")?,
        ))
    }

    /// The scenarios: each gateway, and nginx's peers when `nginx` is (its index, HTTPS front,
    /// gRPC front).
    pub(super) fn scenarios(
        &self,
        s: &Starter<'_>,
        nginx: Option<(usize, SocketAddr, SocketAddr)>,
        concurrency: usize,
    ) -> anyhow::Result<Vec<Scenario>> {
        let http = |address| Load::Http {
            address,
            path: "/v1/chat/completions",
            headers: vec![],
            expect_status: 200,
        };
        let grpc = |address| Load::Grpc {
            address,
            api: "v3",
            headers: vec![],
            expect_code: 0,
        };
        let scenario = |name: &str, load, servers, counted| Scenario {
            name: name.to_owned(),
            group: "upstream",
            load,
            concurrency,
            rate: None,
            servers,
            counted,
        };
        let b = self.backend;
        let mut scenarios = Vec::new();
        for (name, gateway) in [
            (HTTPS_HTTP1, self.https_http1),
            (HTTPS_ALPN, self.https_auto),
        ] {
            let load = http(s.addr(gateway, "http")?);
            let counted = Some(Counted {
                admin: s.addr(gateway, "admin")?,
                tls: true,
            });
            scenarios.push(scenario(name, load, vec![gateway, b], counted));
        }
        if let Some((index, https, _)) = nginx {
            scenarios.push(scenario(NGINX_HTTPS, http(https), vec![index, b], None));
        }
        let g = self.grpc;
        let counted = Some(Counted {
            admin: s.addr(g, "admin")?,
            tls: false,
        });
        scenarios.push(scenario(
            GRPC,
            grpc(s.addr(g, "http")?),
            vec![g, b],
            counted,
        ));
        if let Some((index, _, grpc_front)) = nginx {
            scenarios.push(scenario(NGINX_GRPC, grpc(grpc_front), vec![index, b], None));
        }
        Ok(scenarios)
    }
}

/// Scenario names, as the comparisons name them.
pub const HTTPS_HTTP1: &str = "gateway, https backend, http1";
/// The gateway with `protocol = "auto"`: ALPN chooses h2.
pub const HTTPS_ALPN: &str = "gateway, https backend, h2 by alpn";
/// nginx `proxy_pass https://` with upstream keep-alive.
pub const NGINX_HTTPS: &str = "nginx, https backend";
/// The gateway in front of a gRPC server (h2c).
pub const GRPC: &str = "gateway, grpc backend";
/// nginx `grpc_pass grpc://` with upstream keep-alive.
pub const NGINX_GRPC: &str = "nginx, grpc backend";

/// nginx's side of the upstream scenarios: a server block per peer scenario, with keep-alive
/// upstreams as the gateway pools its connections.
pub fn nginx_sites(
    https_front: SocketAddr,
    https_backend: SocketAddr,
    ca: &Path,
    grpc_front: SocketAddr,
    grpc_backend: SocketAddr,
) -> String {
    let ca = ca.display();
    let port = https_backend.port();
    // proxy_ssl_protocols: nginx 1.22 offers at most TLS 1.2 to upstreams by default; the
    // gateway's rustls negotiates 1.3, so nginx gets 1.3 as well. proxy_ssl_name: the upstream
    // block's name is not the certificate's. keepalive_requests: nginx closes a connection after
    // 1000 requests by default (a GOAWAY on h2, which fails the gRPC calls past its last stream
    // id); the gateway keeps its connections, so nginx does too.
    format!(
        r#"
    upstream backend_tls {{ server 127.0.0.1:{port}; keepalive 32; keepalive_requests 1000000; }}
    upstream grpc_backend {{ server {grpc_backend}; keepalive 32; keepalive_requests 1000000; }}
    server {{
        listen {https_front};
        keepalive_requests 1000000;
        location / {{
            proxy_pass https://backend_tls;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ssl_protocols TLSv1.2 TLSv1.3;
            proxy_ssl_trusted_certificate {ca};
            proxy_ssl_verify on;
            proxy_ssl_name localhost;
            proxy_ssl_server_name on;
            proxy_ssl_session_reuse on;
        }}
    }}
    server {{
        listen {grpc_front} http2;
        keepalive_requests 1000000;
        location / {{
            grpc_pass grpc://grpc_backend;
        }}
    }}
"#
    )
}

/// What `nginx` lacks of the modules the peer scenarios need (`nginx -V`: ssl, http2 and grpc,
/// which is built unless `--without-http_grpc_module`), or `None` when it has them all.
pub fn nginx_lacks(nginx: &Path) -> Option<String> {
    let output = match std::process::Command::new(nginx).arg("-V").output() {
        Ok(output) => output,
        Err(error) => return Some(format!("a working `-V` ({error})")),
    };
    // nginx prints its configure arguments on stderr.
    let configure = String::from_utf8_lossy(&output.stderr);
    let mut missing = Vec::new();
    for module in ["--with-http_ssl_module", "--with-http_v2_module"] {
        if !configure.contains(module) {
            missing.push(module);
        }
    }
    if configure.contains("--without-http_grpc_module") {
        missing.push("the grpc module");
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// A gateway's upstream counters at one moment, summed over their label sets (0 while a counter
/// has no sample yet: prometheus-client writes a labelled family only once it has one).
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    /// `gateway_upstream_tls_handshakes_total`.
    pub handshakes: f64,
    /// `gateway_upstream_connections_total`.
    pub connections: f64,
    /// Requests the gateway answered (`gateway_requests_total`).
    pub requests: f64,
}

impl Counts {
    /// What happened between `before` and `self`.
    pub fn since(&self, before: &Counts) -> Counts {
        Counts {
            handshakes: self.handshakes - before.handshakes,
            connections: self.connections - before.connections,
            requests: self.requests - before.requests,
        }
    }

    /// The sum of two spans.
    pub fn plus(&self, other: &Counts) -> Counts {
        Counts {
            handshakes: self.handshakes + other.handshakes,
            connections: self.connections + other.connections,
            requests: self.requests + other.requests,
        }
    }
}

/// Reads the gateway's `/metrics` from its admin address.
pub fn counts(admin: SocketAddr) -> anyhow::Result<Counts> {
    let text = get_metrics(admin).with_context(|| format!("GET http://{admin}/metrics"))?;
    Ok(Counts {
        handshakes: metric_sum(&text, "gateway_upstream_tls_handshakes_total"),
        connections: metric_sum(&text, "gateway_upstream_connections_total"),
        requests: metric_sum(&text, "gateway_requests_total"),
    })
}

fn get_metrics(admin: SocketAddr) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&admin, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no end of headers in the answer")?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200"),
        "answered `{}`",
        head.lines().next().unwrap_or("")
    );
    anyhow::ensure!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "a chunked /metrics answer is not read here"
    );
    Ok(body.to_owned())
}

/// The sum of every sample of `name` (any labels) in a Prometheus text exposition; 0 when
/// there is none.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    let mut sum = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = match rest.chars().next() {
            Some('{') => rest.rsplit_once('}').map(|(_, v)| v),
            Some(' ') => Some(rest),
            _ => None,
        };
        if let Some(value) = value.and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok()) {
            sum += value;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::metric_sum;

    #[test]
    fn sums_every_label_set_of_one_metric_only() {
        let text = "# HELP gateway_upstream_connections_total New connections.\n\
                    # TYPE gateway_upstream_connections_total counter\n\
                    gateway_upstream_connections_total{backend=\"a\",endpoint=\"x:1\"} 3\n\
                    gateway_upstream_connections_total{backend=\"b\",endpoint=\"y:2\"} 4\n\
                    gateway_upstream_connections_total_created 17\n\
                    gateway_requests_total 12\n";
        assert_eq!(metric_sum(text, "gateway_upstream_connections_total"), 7.0);
        assert_eq!(metric_sum(text, "gateway_requests_total"), 12.0);
        assert_eq!(
            metric_sum(text, "gateway_upstream_tls_handshakes_total"),
            0.0
        );
    }
}
