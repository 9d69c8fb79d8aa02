//! The servers every scenario needs, started once per run, and the scenarios themselves.
//!
//! Every server process runs on one CPU with one runtime worker ([`procs::start`]); they are idle
//! except while their scenario runs, so starting them all at once costs the measurements nothing.

use std::path::Path;

use anyhow::Context;

use super::fixtures::{self, GatewayPolicy, Upstream};
use super::options::{self, Options};
use super::procs::{self, Server, Spec};
use super::starter::Starter;
pub use super::starter::{Load, Scenario};
use super::upstreams;

/// The processes of a run, and where they listen.
pub struct Setup {
    /// Every server started.
    pub servers: Vec<Server>,
    /// The scenarios, in measuring order.
    pub scenarios: Vec<Scenario>,
    /// Why some scenarios are missing (nginx not installed), for the report.
    pub skipped: Vec<String>,
}

fn pair(name: &str, value: &str) -> (String, String) {
    (name.to_owned(), value.to_owned())
}

fn allow() -> Vec<(String, String)> {
    vec![pair("x-ext-authz", "allow")]
}

/// Starts every server and lists the scenarios.
pub fn setup(options: &Options, dir: &Path) -> anyhow::Result<Setup> {
    let pin = procs::can_pin();
    let mut s = Starter {
        options,
        dir,
        pin,
        servers: Vec::new(),
    };
    let mut skipped = Vec::new();
    if !pin {
        skipped.push("taskset not found: processes are not pinned".to_owned());
    }
    let floor_bin = s.bin("floor");
    let floor = s.start(&Spec {
        name: "floor",
        program: &floor_bin,
        args: vec![],
        env: vec![],
        listening: &["grpc"],
        ready_port: None,
    })?;
    let backend = s.start(&Spec {
        name: "backend",
        program: &floor_bin,
        args: vec!["--http".to_owned(), "127.0.0.1:0".to_owned()],
        env: vec![],
        listening: &["grpc", "http"],
        ready_port: None,
    })?;
    let header = s.authz("authz-header", Some(fixtures::HEADER_RULE), vec![])?;
    let quiet = s.authz(
        "authz-header-log-off",
        Some(fixtures::HEADER_RULE),
        vec![("RUST_LOG", "off")],
    )?;
    let istio = s.authz("authz-istio", None, vec![])?;
    let many = s.authz("authz-200-rules", Some(&fixtures::many_rules(200)), vec![])?;
    let (keys_config, api_key) =
        fixtures::api_keys(dir, &s.bin("authz-server")).context("the API-key database")?;
    let sqlite = s.authz_with(
        "authz-sqlite",
        vec![
            "--grpc-addr".into(),
            "127.0.0.1:0".into(),
            "--http-addr".into(),
            "127.0.0.1:0".into(),
            "--config".into(),
            keys_config.display().to_string(),
        ],
        vec![],
    )?;
    let mut jwt = Vec::new();
    for scheme in fixtures::jwts().context("generating JWT keys")? {
        let index = s.authz(
            &format!("authz-jwt-{}", scheme.algorithm.to_lowercase()),
            Some(&scheme.config),
            vec![],
        )?;
        jwt.push((scheme.algorithm, index, scheme.token));
    }
    let rbac = fixtures::rbac(dir).context("the RBAC policy pair")?;
    let rbac_toml = s.authz("authz-rbac-toml", Some(&rbac.toml), vec![])?;
    let rbac_rego = s.authz("authz-rbac-rego", Some(&rbac.rego), vec![])?;

    let c = options.concurrency;

    let grpc = |name: &str, group, server: usize, address, api, headers, expect_code| Scenario {
        name: name.to_owned(),
        group,
        load: Load::Grpc {
            address,
            api,
            headers,
            expect_code,
        },
        concurrency: c,
        rate: None,
        servers: vec![server],
        counted: None,
    };
    let mut scenarios = vec![
        grpc(
            "floor v3",
            "authz",
            floor,
            s.addr(floor, "grpc")?,
            "v3",
            allow(),
            0,
        ),
        grpc(
            "floor v2",
            "authz",
            floor,
            s.addr(floor, "grpc")?,
            "v2",
            allow(),
            0,
        ),
        grpc(
            "header rule v3",
            "authz",
            header,
            s.addr(header, "grpc")?,
            "v3",
            allow(),
            0,
        ),
        grpc(
            "header rule v2",
            "authz",
            header,
            s.addr(header, "grpc")?,
            "v2",
            allow(),
            0,
        ),
        grpc(
            "header rule v3, log off",
            "authz",
            quiet,
            s.addr(quiet, "grpc")?,
            "v3",
            allow(),
            0,
        ),
        grpc(
            "istio default allow",
            "authz",
            istio,
            s.addr(istio, "grpc")?,
            "v3",
            allow(),
            0,
        ),
        grpc(
            "istio default deny",
            "authz",
            istio,
            s.addr(istio, "grpc")?,
            "v3",
            vec![],
            7,
        ),
        grpc(
            "200 rules",
            "authz",
            many,
            s.addr(many, "grpc")?,
            "v3",
            vec![pair("x-ext-authz", "allow"), pair("x-tenant", "bench")],
            0,
        ),
        grpc(
            "sqlite key, cached",
            "authz",
            sqlite,
            s.addr(sqlite, "grpc")?,
            "v3",
            vec![pair("x-ai-api-key", &api_key)],
            0,
        ),
    ];
    for (algorithm, index, token) in &jwt {
        scenarios.push(grpc(
            &format!("jwt {algorithm}"),
            "authz",
            *index,
            s.addr(*index, "grpc")?,
            "v3",
            vec![pair("authorization", &format!("Bearer {token}"))],
            0,
        ));
    }
    // The same RBAC decision (roles from a JWT, method and path grants) as TOML rules and as
    // an OPA-Envoy Rego policy, side by side.
    for (name, index) in [
        ("rbac, TOML rules", rbac_toml),
        ("rbac, Rego policy", rbac_rego),
    ] {
        scenarios.push(grpc(
            name,
            "authz",
            index,
            s.addr(index, "grpc")?,
            "v3",
            vec![pair("authorization", &format!("Bearer {}", rbac.token))],
            0,
        ));
    }
    scenarios.push(Scenario {
        name: "header rule, HTTP mode".to_owned(),
        group: "authz",
        load: Load::Http {
            address: s.addr(header, "http")?,
            path: "/v1/chat/completions",
            headers: allow(),
            expect_status: 200,
        },
        concurrency: c,
        rate: None,
        servers: vec![header],
        counted: None,
    });
    for (name, server) in [
        ("floor v3", floor),
        ("header rule v3", header),
        ("istio default allow", istio),
    ] {
        let mut open = scenarios
            .iter()
            .find(|x| x.name == name)
            .cloned()
            .context("scenario")?;
        open.name = format!("{name}, open loop");
        open.group = "open";
        open.rate = Some(options.rate);
        open.servers = vec![server];
        scenarios.push(open);
    }

    // The gateway side: the static backend behind the gateway (no policy, gRPC, HTTP transport)
    // and behind nginx (plain proxy, auth_request to the same authz-server's HTTP mode).
    let backend_http = s.addr(backend, "http")?;
    let gw_authz = s.authz("authz-for-proxies", Some(fixtures::HEADER_RULE), vec![])?;
    let plain_upstream = Upstream::Http(backend_http);
    let plain = s.gateway("gateway-plain", &plain_upstream, GatewayPolicy::None)?;
    let via_grpc = s.gateway(
        "gateway-grpc-authz",
        &plain_upstream,
        GatewayPolicy::Grpc(s.addr(gw_authz, "grpc")?),
    )?;
    let via_http = s.gateway(
        "gateway-http-authz",
        &plain_upstream,
        GatewayPolicy::Http(s.addr(gw_authz, "http")?),
    )?;
    let upstream = upstreams::start(&mut s, dir)?;
    let nginx = match &options.nginx {
        Some(program) => {
            let (plain_port, auth_port) = (procs::free_port()?, procs::free_port()?);
            let (https_port, grpc_port) = (procs::free_port()?, procs::free_port()?);
            let sites = match upstreams::nginx_lacks(program) {
                None => upstream.nginx_sites(&s, https_port, grpc_port)?,
                Some(missing) => {
                    skipped.push(format!(
                        "nginx lacks {missing}: its upstream peers were not run"
                    ));
                    String::new()
                }
            };
            let conf = dir.join("nginx.conf");
            std::fs::write(
                &conf,
                fixtures::nginx_conf(
                    dir,
                    plain_port,
                    auth_port,
                    backend_http,
                    s.addr(gw_authz, "http")?,
                    &sites,
                ),
            )?;
            let index = s.start(&Spec {
                name: "nginx",
                program,
                args: vec![
                    "-e".into(),
                    dir.join("nginx-error.log").display().to_string(),
                    "-p".into(),
                    dir.display().to_string(),
                    "-c".into(),
                    conf.display().to_string(),
                ],
                env: vec![],
                listening: &[],
                ready_port: Some(auth_port),
            })?;
            let peers = (!sites.is_empty()).then_some((index, https_port, grpc_port));
            Some((index, plain_port, auth_port, peers))
        }
        None => {
            skipped.push("nginx not found: the nginx scenarios were not run".to_owned());
            None
        }
    };
    let http =
        |name: &str, group, address, headers, expect_status, concurrency, servers: Vec<usize>| {
            Scenario {
                name: name.to_owned(),
                group,
                load: Load::Http {
                    address,
                    path: "/v1/chat/completions",
                    headers,
                    expect_status,
                },
                concurrency,
                rate: None,
                servers,
                counted: None,
            }
        };
    let mut proxies = vec![
        ("backend direct", s.addr(backend, "http")?, vec![backend]),
        ("gateway", s.addr(plain, "http")?, vec![plain, backend]),
        (
            "gateway + grpc authz",
            s.addr(via_grpc, "http")?,
            vec![via_grpc, gw_authz, backend],
        ),
        (
            "gateway + http authz",
            s.addr(via_http, "http")?,
            vec![via_http, gw_authz, backend],
        ),
    ];
    if let Some((index, plain_port, auth_port, ..)) = nginx {
        proxies.insert(2, ("nginx proxy", plain_port, vec![index, backend]));
        proxies.push((
            "nginx auth_request",
            auth_port,
            vec![index, gw_authz, backend],
        ));
    }
    for (name, address, servers) in &proxies {
        scenarios.push(http(
            name,
            "proxy",
            *address,
            allow(),
            200,
            c,
            servers.clone(),
        ));
    }
    scenarios.push(http(
        "gateway + grpc authz, denied",
        "proxy",
        s.addr(via_grpc, "http")?,
        vec![],
        403,
        c,
        vec![via_grpc, gw_authz, backend],
    ));
    for (name, address, servers) in &proxies {
        if *name != "backend direct" {
            scenarios.push(http(
                &format!("{name}, c=1"),
                "latency",
                *address,
                allow(),
                200,
                1,
                servers.clone(),
            ));
        }
    }
    scenarios.extend(upstream.scenarios(&s, nginx.and_then(|(.., peers)| peers), c)?);
    if let Some(only) = &options.only {
        scenarios.retain(|x| options::selected(only, &x.name));
    }
    Ok(Setup {
        servers: s.servers,
        scenarios,
        skipped,
    })
}
