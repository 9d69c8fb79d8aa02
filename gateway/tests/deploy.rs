//! The deployment artifacts: `docker-compose.yml` (validated by `docker-compose config` when that
//! tool is installed, and its topology run as processes with the compose file's exact commands,
//! configs and ports, then the seed's curl commands), the Kubernetes manifests in the seed's
//! shape with their args checked against `authz-server --help`, and the Dockerfile's basics.
//!
//! The `authz-server` binary comes from `cargo build --workspace --bins`; tests that need it
//! (and docker-compose, curl) say SKIPPED when it is missing, and fail under `AUTHZ_TEST_STRICT=1`.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_yaml::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml_docs(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo().join(path)).expect("reads the file");
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("valid YAML"))
        .collect()
}

/// The built binary a compose service runs: gateway's own from Cargo, authz-server from the
/// workspace build (`None` with a skip, a failure under strict, when it is not built).
fn binary(test: &str, name: &str) -> Option<PathBuf> {
    match name {
        "gateway" => Some(env!("CARGO_BIN_EXE_gateway").into()),
        "demo-backend" => Some(env!("CARGO_BIN_EXE_demo-backend").into()),
        "authz-server" => testkit::binary(test, "authz-server"),
        other => panic!("compose runs an unknown binary `{other}`"),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a list: {v:?}"))
        .iter()
        .map(|s| s.as_str().expect("a YAML string").to_owned())
        .collect()
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| &v[*k])
}

#[test]
fn docker_compose_config_validates_the_file() {
    let Some(docker_compose) = testkit::tool(
        "docker_compose_config_validates_the_file",
        "docker-compose",
        "docker-compose",
    ) else {
        return;
    };
    let out = Command::new(docker_compose)
        .args(["-f", "docker-compose.yml", "config", "-q"])
        .current_dir(repo())
        .output()
        .expect("runs docker-compose");
    assert!(
        out.status.success(),
        "docker-compose config failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_compose_file_wires_the_services_the_way_their_configs_expect() {
    let compose = &yaml_docs("docker-compose.yml")[0];
    let services = compose["services"].as_mapping().unwrap();
    let names: Vec<&str> = services.keys().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(names, ["authz-server", "demo-backend", "gateway"]);
    for (_, svc) in services {
        assert_eq!(svc["image"], "extauthz:local");
        assert_eq!(svc["build"], ".");
    }
    let gateway_cmd = strings(&compose["services"]["gateway"]["command"]);
    let config_at = gateway_cmd.iter().position(|a| a == "--config").unwrap() + 1;
    let config = &gateway_cmd[config_at];
    let text = std::fs::read_to_string(repo().join(config)).unwrap();
    // The compose config is a valid gateway config and points at the compose service names.
    gateway::Config::from_toml(&text, config).unwrap();
    assert!(text.contains("url = \"http://demo-backend:9100\""));
    assert!(text.contains("url = \"http://authz-server:9000\""));
    assert!(text.contains("address = \"0.0.0.0:8080\""));
    assert!(
        strings(&compose["services"]["demo-backend"]["command"])
            .join(" ")
            .contains("--listen 0.0.0.0:9100")
    );
    assert_eq!(
        strings(&compose["services"]["gateway"]["ports"]),
        ["8080:8080", "9901:9901"]
    );
    assert_eq!(
        strings(&compose["services"]["authz-server"]["ports"]),
        ["9000:9000", "8000:8000"]
    );
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `args` (the compose command, binary first) and waits until it printed `want` lines
/// starting with `listening`.
fn start(name: &'static str, bin: &Path, args: &[String], want: usize) -> Proc {
    let mut child = Command::new(bin)
        .args(args)
        .current_dir(repo())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
    let mut seen = 0;
    while seen < want {
        match lines.next() {
            Some(Ok(line)) if line.starts_with("listening ") => seen += 1,
            Some(Ok(_)) => {}
            _ => panic!("{name} exited before listening (is one of its compose ports busy?)"),
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    Proc(child)
}

/// Runs `curl` with `args`; returns (status line code, headers+body text).
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

const SEED_JSON: &str = r#"{ "model": "gpt-3.5-turbo", "messages": [ { "role": "system", "content": "You are a poetic assistant, skilled in explaining complex programming concepts with creative flair." }, { "role": "user", "content": "Write 5 sentences." } ] }"#;

/// Each compose service's command as it would run in its container, moved onto loopback:
/// `0.0.0.0` → `127.0.0.1`, and compose service names → `127.0.0.1` on the same ports (through
/// the binaries' override flags, so the config files are the compose file's, unedited).
#[test]
fn the_compose_topology_runs_as_processes_and_the_seed_curls_work() {
    let test = "the_compose_topology_runs_as_processes_and_the_seed_curls_work";
    if testkit::tool(test, "curl", "curl").is_none()
        || testkit::binary(test, "authz-server").is_none()
    {
        return;
    }
    let compose = &yaml_docs("docker-compose.yml")[0];
    let mut commands: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, svc) in compose["services"].as_mapping().unwrap() {
        let args = strings(&svc["command"])
            .into_iter()
            .map(|a| a.replace("0.0.0.0:", "127.0.0.1:"))
            .collect();
        commands.insert(name.as_str().unwrap().to_owned(), args);
    }
    let published = |svc: &str| -> Vec<u16> {
        strings(&compose["services"][svc]["ports"])
            .iter()
            .map(|p| p.split(':').next_back().unwrap().parse().unwrap())
            .collect()
    };

    // authz-server: its config binds 0.0.0.0; on loopback, the same ports.
    let mut authz = commands["authz-server"].clone();
    let authz_ports = published("authz-server");
    authz.extend([
        "--grpc-addr".into(),
        format!("127.0.0.1:{}", authz_ports[0]),
        "--http-addr".into(),
        format!("127.0.0.1:{}", authz_ports[1]),
    ]);
    let demo = commands["demo-backend"].clone();
    // gateway: service names in its config → 127.0.0.1, same ports.
    let mut gw = commands["gateway"].clone();
    let config_at = gw.iter().position(|a| a == "--config").unwrap() + 1;
    let text = std::fs::read_to_string(repo().join(&gw[config_at])).unwrap();
    let gw_ports = published("gateway");
    gw.extend([
        "--listen".into(),
        format!("127.0.0.1:{}", gw_ports[0]),
        "--admin".into(),
        format!("127.0.0.1:{}", gw_ports[1]),
    ]);
    for (flag, name, url) in [
        ("--backend-url", "openai", "http://demo-backend:9100"),
        ("--authz-url", "ext-authz", "http://authz-server:9000"),
    ] {
        assert!(
            text.contains(url),
            "{url} not in the compose gateway config"
        );
        let host = url.trim_start_matches("http://").split(':').next().unwrap();
        assert!(
            commands.contains_key(host),
            "{host} is not a compose service"
        );
        gw.extend([
            flag.into(),
            format!("{name}={}", url.replace(host, "127.0.0.1")),
        ]);
    }

    let _authz = start(
        "authz-server",
        &binary(test, &authz[0]).expect("found above"),
        &authz[1..],
        2,
    );
    let _demo = start(
        "demo-backend",
        &binary(test, &demo[0]).expect("built with this crate"),
        &demo[1..],
        1,
    );
    let _gw = start(
        "gateway",
        &binary(test, &gw[0]).expect("built with this crate"),
        &gw[1..],
        2,
    );

    let gateway = format!("localhost:{}/openai", gw_ports[0]);
    // The seed, step 3: the policy denies.
    let (code, text) = curl(&[
        &gateway,
        "-H",
        "content-type:application/json",
        "-d",
        SEED_JSON,
    ]);
    assert_eq!(code, 403, "{text}");
    assert!(text.ends_with(support::DENY_BODY), "{text}");
    assert!(text.contains("x-ext-authz-check-result: denied"), "{text}");
    // Step 4: with the header, through to the backend, which saw the authz server's header.
    let (code, text) = curl(&[
        &gateway,
        "-H",
        "content-type:application/json",
        "-H",
        "x-ext-authz: allow",
        "-H",
        "x-ai-api-key:N2YwMDIxZTEtNGUzNS1jNzgzLTRkYjAtYjE2YzRkZGVmNjcy",
        "-d",
        SEED_JSON,
    ]);
    assert_eq!(code, 200, "{text}");
    assert!(
        text.contains(r#""x-ext-authz-check-result":"allowed""#),
        "{text}"
    );
    // The README's HTTP-mode curls against the authz server's published HTTP port.
    let http_mode = format!("localhost:{}/openai", authz_ports[1]);
    assert_eq!(curl(&[&http_mode, "-H", "x-ext-authz: allow"]).0, 200);
    let (code, text) = curl(&[&http_mode]);
    assert_eq!(code, 403);
    assert!(text.ends_with(support::DENY_BODY), "{text}");
    // The gateway's admin port.
    let deadline = Instant::now() + Duration::from_secs(2);
    let metrics = loop {
        let (code, text) = curl(&[&format!("localhost:{}/metrics", gw_ports[1])]);
        if code == 200 || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        metrics.contains("gateway_ext_authz_ok_total{policy=\"gateway-ext-auth-policy\"} 1"),
        "{metrics}"
    );
}

#[test]
fn the_kubernetes_manifests_have_the_seeds_shape() {
    let docs = yaml_docs("deploy/kubernetes/ext-authz.yaml");
    assert_eq!(docs.len(), 2);
    let (deploy, service) = (&docs[0], &docs[1]);

    assert_eq!(deploy["apiVersion"], "apps/v1");
    assert_eq!(deploy["kind"], "Deployment");
    for doc in [deploy, service] {
        assert_eq!(s(doc, &["metadata", "namespace"]), "agentgateway-system");
        assert_eq!(s(doc, &["metadata", "name"]), "ext-authz");
        assert_eq!(s(doc, &["metadata", "labels", "app"]), "ext-authz");
    }
    // Two replicas (the HPA in ext-authz-scaling.yaml scales from there), not the seed's one.
    assert_eq!(s(deploy, &["spec", "replicas"]), 2);
    assert_eq!(
        s(deploy, &["spec", "selector", "matchLabels", "app"]),
        "ext-authz"
    );
    let template = s(deploy, &["spec", "template"]);
    assert_eq!(s(template, &["metadata", "labels", "app"]), "ext-authz");
    assert_eq!(
        s(template, &["metadata", "labels", "app.kubernetes.io/name"]),
        "ext-authz"
    );
    let containers = s(template, &["spec", "containers"]).as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(c["name"], "ext-authz");
    assert_eq!(c["image"], "extauthz:local", "our image, not Istio's");
    let ports = c["ports"].as_sequence().unwrap();
    assert_eq!(ports.len(), 3, "gRPC, HTTP mode, admin");
    assert_eq!(ports[0]["containerPort"], 9000);
    // Probes on the admin port (tests/interop/test_kubernetes_manifests.py checks the paths).
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(s(c, &[probe, "httpGet", "port"]), "admin", "{probe}");
    }
    assert_eq!(
        s(template, &["spec", "securityContext", "runAsNonRoot"]).as_bool(),
        Some(true)
    );

    assert_eq!(service["apiVersion"], "v1");
    assert_eq!(service["kind"], "Service");
    let sports = s(service, &["spec", "ports"]).as_sequence().unwrap();
    // The seed's port first; the second is the HTTP mode's 8000.
    assert_eq!(sports.len(), 2);
    let p = &sports[0];
    assert_eq!(
        (
            &p["port"],
            &p["targetPort"],
            &p["protocol"],
            &p["appProtocol"]
        ),
        (
            &Value::from(4444),
            &Value::from(9000),
            &Value::from("TCP"),
            &Value::from("kubernetes.io/h2c")
        )
    );
    assert_eq!(s(service, &["spec", "selector", "app"]), "ext-authz");

    // The container's gRPC port is the one the args bind.
    let args = strings(&c["args"]);
    let grpc_at = args.iter().position(|a| a == "--grpc-addr").unwrap() + 1;
    assert_eq!(args[grpc_at], "0.0.0.0:9000");
    assert_eq!(strings(&c["command"]), ["authz-server"]);

    let policy = &yaml_docs("deploy/kubernetes/gateway-ext-auth-policy.yaml")[0];
    assert_eq!(policy["apiVersion"], "agentgateway.dev/v1alpha1");
    assert_eq!(policy["kind"], "AgentgatewayPolicy");
    assert_eq!(s(policy, &["metadata", "namespace"]), "agentgateway-system");
    assert_eq!(s(policy, &["metadata", "name"]), "gateway-ext-auth-policy");
    assert_eq!(s(policy, &["metadata", "labels", "app"]), "ext-authz");
    let target = &s(policy, &["spec", "targetRefs"]).as_sequence().unwrap()[0];
    assert_eq!(target["group"], "gateway.networking.k8s.io");
    assert_eq!(target["kind"], "Gateway");
    assert_eq!(target["name"], "agentgateway-proxy");
    let ext = s(policy, &["spec", "traffic", "extAuth"]);
    assert_eq!(
        s(ext, &["backendRef", "name"]),
        s(service, &["metadata", "name"])
    );
    assert_eq!(
        s(ext, &["backendRef", "namespace"]),
        s(service, &["metadata", "namespace"])
    );
    assert_eq!(s(ext, &["backendRef", "port"]), &p["port"]);
    assert!(
        ext["grpc"]
            .as_mapping()
            .is_some_and(serde_yaml::Mapping::is_empty)
    );

    let kustomization = &yaml_docs("deploy/kubernetes/kustomization.yaml")[0];
    assert_eq!(
        strings(&kustomization["resources"]),
        [
            "ext-authz-rules.yaml",
            "ext-authz.yaml",
            "ext-authz-scaling.yaml",
            "gateway-ext-auth-policy.yaml"
        ]
    );
}

#[test]
fn the_manifest_args_are_flags_the_authz_server_accepts() {
    let Some(bin) = testkit::binary(
        "the_manifest_args_are_flags_the_authz_server_accepts",
        "authz-server",
    ) else {
        return;
    };
    let help = Command::new(&bin).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let docs = yaml_docs("deploy/kubernetes/ext-authz.yaml");
    let c = &s(&docs[0], &["spec", "template", "spec", "containers"])[0];
    let args = strings(&c["args"]);
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        assert!(
            help.contains(&format!("{flag} <")),
            "authz-server --help has no {flag}:\n{help}"
        );
    }
    // The compose command's flags too.
    let compose = &yaml_docs("docker-compose.yml")[0];
    for flag in strings(&compose["services"]["authz-server"]["command"])
        .iter()
        .filter(|a| a.starts_with("--"))
    {
        assert!(help.contains(&format!("{flag} <")), "no {flag}:\n{help}");
    }
    // And the values parse: `validate` accepts the same global flags and exits 0 on the default.
    let out = Command::new(&bin)
        .args(&args)
        .args(["validate", "config/istio-ext-authz.toml"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "authz-server {args:?} validate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_dockerfile_builds_every_binary_the_deployments_run_as_non_root() {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "multi-stage: a builder and a runtime");
    assert!(froms[0].ends_with(" AS builder"));
    assert!(text.contains("USER nonroot"));
    for bin in ["authz-server", "gateway", "demo-backend"] {
        assert!(
            text.contains(&format!("target/release/{bin}")),
            "{bin} not built into the image"
        );
    }
    assert!(text.contains("COPY config/ /app/config/"));
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "target/"));
}
