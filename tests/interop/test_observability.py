"""deploy/observability: the alerting rules pass `promtool check rules` and their unit tests
(`promtool test rules`, Debian's prometheus package, installed by scripts/test); every PromQL query in
the Grafana dashboard parses with the same tool; and every metric (and label) the rules and the
dashboard name exists in a live /metrics scrape of both binaries after real traffic."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Dict, Set

import pytest
import yaml

from deploy_support import DEPLOY, require_tool
from gateway_support import (
    AUTHZ_SERVER_BIN,
    GATEWAY_BIN,
    curl,
    start_demo_backend,
    start_process,
)

OBS = DEPLOY / "observability"
RULES = OBS / "alerts.rules.yaml"
RULES_TEST = OBS / "alerts.test.yaml"
DASHBOARD = OBS / "grafana-dashboard.json"

# Our metric names all start with one of these; anything else in a query is PromQL or a label.
METRIC_RE = re.compile(r"\b((?:authz|gateway)_[a-z0-9_]+)\b")
SELECTOR_RE = re.compile(r"\b((?:authz|gateway)_[a-z0-9_]+)\{([^}]*)\}")
BY_RE = re.compile(r"\bby \(([^)]*)\)")
# Labels Prometheus adds at scrape time (instance) or histograms carry (le).
SCRAPE_LABELS = {"instance", "job", "le"}


def promtool() -> str:
    return require_tool("promtool", "Debian's prometheus package; scripts/test installs it")


def run(args, cwd=None) -> str:
    done = subprocess.run(args, capture_output=True, text=True, cwd=cwd)
    assert done.returncode == 0, f"{' '.join(map(str, args))} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def rule_exprs() -> Dict[str, str]:
    with open(RULES) as f:
        groups = yaml.safe_load(f)["groups"]
    return {r["alert"]: r["expr"] for g in groups for r in g["rules"]}


def dashboard_exprs() -> Dict[str, str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            exprs[f"{panel['title']} / {target['refId']}"] = target["expr"]
    return exprs


def as_plain_promql(expr: str) -> str:
    """Grafana's variables replaced by what they stand for, so Prometheus's parser can read it."""
    return expr.replace("$__rate_interval", "5m").replace('"$instance"', '".*"')


# --- the tool's own checks -------------------------------------------------------------------------


def test_promtool_check_rules():
    out = run([promtool(), "check", "rules", str(RULES)])
    assert f"SUCCESS: {len(rule_exprs())} rules found" in out


def test_promtool_unit_tests_fire_every_alert():
    run([promtool(), "test", "rules", RULES_TEST.name], cwd=OBS)
    with open(RULES_TEST) as f:
        tested = {t["alertname"] for case in yaml.safe_load(f)["tests"] for t in case["alert_rule_test"]}
    untested = set(rule_exprs()) - tested
    assert not untested, f"alerts with no promtool unit test: {sorted(untested)}"


def test_every_dashboard_query_parses(tmp_path):
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    groups = [{
        "name": "dashboard",
        "rules": [{"record": f"dashboard:query_{i}", "expr": as_plain_promql(e)} for i, e in enumerate(exprs.values())],
    }]
    path = tmp_path / "dashboard-queries.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    out = run([promtool(), "check", "rules", str(path)])
    assert f"SUCCESS: {len(exprs)} rules found" in out


def test_dashboard_is_grafana_json_with_a_datasource_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    names = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "instance"} <= names
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


# --- against live scrapes --------------------------------------------------------------------------


def scrape(addr: str) -> str:
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=10) as resp:
        assert resp.status == 200
        return resp.read().decode()


def families(text: str) -> Dict[str, dict]:
    """name → {type, sample names, label names, label values seen} from the Prometheus text exposition."""
    found: Dict[str, dict] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            found[name] = {"type": kind, "samples": set(), "labels": set(), "values": {}}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s", line)
        assert m, f"unparsable sample line: {line!r}"
        sample, labels = m.group(1), m.group(3) or ""
        for family, info in found.items():
            if sample == family or sample.startswith(family + "_"):
                info["samples"].add(sample)
                for label, value in re.findall(r'(\w+)="([^"]*)"', labels):
                    info["labels"].add(label)
                    info["values"].setdefault(label, set()).add(value)
    return found


def sample_names(info: dict, family: str) -> Set[str]:
    """The sample names a family of this type exposes (counter → _total, histogram → _bucket/_sum/_count)."""
    if info["type"] == "counter":
        return {family + "_total"}
    if info["type"] == "histogram":
        return {family + s for s in ("_bucket", "_sum", "_count")}
    return {family}


@pytest.fixture(scope="module")
def scrapes():
    """authz-server (an API-key lookup, a failing database, a shadow rule) and a gateway (gateway-level
    policy, a route that disables it, a fail-open route policy on a dead server), driven with real
    traffic and one config reload each, then scraped."""
    with tempfile.TemporaryDirectory(prefix="observability-") as d:
        workdir = Path(d)
        keys_db = workdir / "keys.db"
        run([str(AUTHZ_SERVER_BIN), "keys", "init", "--database", f"sqlite://{keys_db}"])
        added = run([str(AUTHZ_SERVER_BIN), "keys", "add", "--database", f"sqlite://{keys_db}", "--subject", "alice"])
        key = added.strip().splitlines()[-1].strip()
        authz_config = workdir / "authz.toml"
        authz_config.write_text(LOOKUP_CONFIG.format(keys=keys_db, missing=workdir / "no-such.db"))
        authz = start_process(
            "authz-server",
            [str(AUTHZ_SERVER_BIN), "--config", str(authz_config), "--grpc-addr", "127.0.0.1:0",
             "--http-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"],
            workdir, {"grpc": 1, "http": 1, "admin": 1},
        )
        backend = start_demo_backend(workdir)
        gateway_config = workdir / "gateway.toml"
        gateway_config.write_text(GATEWAY_CONFIG.format(dead=dead_address()))
        gateway = start_process(
            "gateway",
            [str(GATEWAY_BIN), "run", "--config", str(gateway_config), "--listen", "127.0.0.1:0",
             "--admin", "127.0.0.1:0", "--backend-url", f"openai=http://{backend.addr()}",
             "--authz-url", f"ext-authz=http://{authz.addr('grpc')}"],
            workdir, {"http": 1, "admin": 1},
        )
        try:
            gw = gateway.addr("http")
            assert curl(f"http://{gw}/openai", headers=["x-ext-authz: allow"]).status == 200
            assert curl(f"http://{gw}/openai").status == 403
            assert curl(f"http://{gw}/health").status == 200  # the gateway-level check disabled
            assert curl(f"http://{gw}/failopen", headers=["x-ext-authz: allow"]).status == 200  # dead, fail open
            http_mode = authz.addr("http")
            for _ in range(2):  # a miss, then a hit
                assert curl(f"http://{http_mode}/keyed", headers=[f"x-api-key: {key}"]).status == 200
            assert curl(f"http://{http_mode}/broken", headers=["x-api-key: anything"]).status == 503
            check_with_expired_deadline(authz.addr("grpc"))
            # One reload each: the same config with a comment added.
            for config in (authz_config, gateway_config):
                config.write_text(config.read_text() + "\n# reloaded\n")
            authz_text, gateway_text = wait_for_reloads(authz.addr("admin"), gateway.addr("admin"))
            yield {"authz": families(authz_text), "gateway": families(gateway_text)}
        finally:
            for proc in (gateway, backend, authz):
                proc.stop()


def dead_address() -> str:
    """A loopback address nothing listens on."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def wait_for_reloads(authz_admin: str, gateway_admin: str, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while True:
        authz_text, gateway_text = scrape(authz_admin), scrape(gateway_admin)
        if 'authz_config_reloads_total{result="ok"}' in authz_text and (
            'gateway_config_reloads_total{result="ok"}' in gateway_text
        ):
            return authz_text, gateway_text
        assert time.monotonic() < deadline, f"no reload counted:\n{authz_text}\n{gateway_text}"
        time.sleep(0.2)


GATEWAY_CONFIG = """
[[listeners]]
name = "agentgateway-proxy"
address = "127.0.0.1:0"

[[backends]]
name = "openai"
url = "http://127.0.0.1:9"

[[routes]]
name = "openai"
path = {{ prefix = "/openai" }}
backend = "openai"

[[routes]]
name = "health"
path = {{ prefix = "/health" }}
backend = "openai"

[[routes]]
name = "failopen"
path = {{ prefix = "/failopen" }}
backend = "openai"

[[authz_backends]]
name = "ext-authz"
url = "http://127.0.0.1:9"

[[authz_backends]]
name = "dead"
url = "http://{dead}"

[[policies]]
name = "gateway-ext-auth-policy"
target_refs = [{{ kind = "Gateway", name = "agentgateway-proxy" }}]
ext_auth = {{ backend = "ext-authz", grpc = {{}} }}

[[policies]]
name = "health-no-auth"
target_refs = [{{ kind = "HTTPRoute", name = "health" }}]
ext_auth = {{ disabled = true }}

[[policies]]
name = "fail-open"
target_refs = [{{ kind = "HTTPRoute", name = "failopen" }}]
ext_auth = {{ backend = "dead", grpc = {{}}, failure_mode_allow = true }}
"""


LOOKUP_CONFIG = """
[default]
deny = {{ status = 403, body = "denied" }}

[databases.keys]
url = "sqlite://{keys}"

[databases.broken]
url = "sqlite://{missing}"

# A shadow rule: counted in authz_shadow_matches_total, never enforced.
[[rules]]
name = "trial-deny-openai"
shadow = true
[rules.when]
path = {{ prefix = "/openai" }}
[rules.deny]
status = 403

[[rules]]
name = "istio-allow"
[rules.when]
headers = [{{ name = "x-ext-authz", exact = "allow" }}]
[rules.allow]

[[rules]]
name = "api-key"
[rules.when]
path = {{ prefix = "/keyed" }}
[rules.credential]
from = {{ header = "x-api-key" }}
[rules.lookup]
database = "keys"
query = "SELECT subject FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL"
params = [{{ credential = "sha256" }}]
on_error = "fail_closed"
[rules.allow]

[[rules]]
name = "broken-database"
[rules.when]
path = {{ prefix = "/broken" }}
[rules.credential]
from = {{ header = "x-api-key" }}
[rules.lookup]
database = "broken"
query = "SELECT subject FROM api_keys WHERE key_hash = $1"
params = [{{ credential = "sha256" }}]
on_error = "fail_closed"
[rules.allow]
"""


def check_with_expired_deadline(addr: str) -> None:
    """One v3 Check over raw HTTP/2 whose `grpc-timeout` (1 ns) is over when it arrives: answered
    DEADLINE_EXCEEDED (4) and counted, not evaluated. grpcio enforces deadlines on its own side, so
    this goes through the `h2` package."""
    import socket

    import h2.config
    import h2.connection
    import h2.events
    from envoy.service.auth.v3 import external_auth_pb2

    host, _, port = addr.rpartition(":")
    message = external_auth_pb2.CheckRequest().SerializeToString()
    frame = b"\x00" + len(message).to_bytes(4, "big") + message
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        conn.send_headers(1, [
            (":method", "POST"), (":scheme", "http"), (":authority", addr),
            (":path", "/envoy.service.auth.v3.Authorization/Check"),
            ("content-type", "application/grpc"), ("te", "trailers"), ("grpc-timeout", "1n"),
        ])
        conn.send_data(1, frame, end_stream=True)
        sock.sendall(conn.data_to_send())
        status = None
        while status is None:
            data = sock.recv(65536)
            assert data, "the server closed the connection without answering"
            for event in conn.receive_data(data):
                if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    headers = {k.decode() if isinstance(k, bytes) else k: v for k, v in event.headers}
                    found = headers.get("grpc-status")
                    if found is not None:
                        status = found.decode() if isinstance(found, bytes) else found
            sock.sendall(conn.data_to_send())
    assert status == "4", f"grpc-status {status}, want 4 (DEADLINE_EXCEEDED)"


def used_metrics() -> Dict[str, str]:
    """Every metric name in a rule or dashboard query → where it is used."""
    used = {}
    for where, expr in {**{f"alert {k}": v for k, v in rule_exprs().items()},
                        **{f"dashboard {k}": v for k, v in dashboard_exprs().items()}}.items():
        for name in METRIC_RE.findall(expr):
            used.setdefault(name, where)
    return used


def resolve(name: str, scraped: Dict[str, dict]):
    for family, info in scraped.items():
        if name in sample_names(info, family):
            return family, info
    return None, None


def test_every_metric_used_exists_in_a_live_scrape(scrapes):
    merged = {**scrapes["authz"], **scrapes["gateway"]}
    missing = {name: where for name, where in used_metrics().items() if resolve(name, merged)[0] is None}
    assert not missing, f"used but not exported by either binary: {missing}"


def test_every_label_used_exists_on_the_metric(scrapes):
    merged = {**scrapes["authz"], **scrapes["gateway"]}
    problems = []
    for where, expr in {**rule_exprs(), **dashboard_exprs()}.items():
        expr = as_plain_promql(expr)
        referenced = [resolve(n, merged) for n in METRIC_RE.findall(expr)]
        labels_here = set().union(*(info["labels"] for _, info in referenced if info))
        for name, matchers in SELECTOR_RE.findall(expr):
            family, info = resolve(name, merged)
            assert info["samples"], f"{where}: {name} has no samples to check labels against"
            for label in re.findall(r"(\w+)\s*(?:=~|!=|!~|=)", matchers):
                if label not in SCRAPE_LABELS and label not in info["labels"]:
                    problems.append(f"{where}: {name} has no label {label!r} (has {sorted(info['labels'])})")
        for group in BY_RE.findall(expr):
            for label in (l.strip() for l in group.split(",")):
                if label not in SCRAPE_LABELS and label not in labels_here:
                    problems.append(f"{where}: `by ({group})` names {label!r}, not a label of {sorted(labels_here)}")
    assert not problems, "\n".join(problems)


def test_the_traffic_reached_every_family_the_alerts_watch(scrapes):
    """So the label check above saw real samples, not empty families."""
    merged = {**scrapes["authz"], **scrapes["gateway"]}
    for name in ("authz_checks_total", "authz_check_duration_seconds_bucket", "authz_lookup_cache_total",
                 "authz_database_errors_total", "authz_checks_expired_total", "authz_shadow_matches_total",
                 "gateway_requests_total",
                 "gateway_ext_authz_ok_total", "gateway_ext_authz_denied_total",
                 "gateway_ext_authz_latency_seconds_bucket", "gateway_ext_authz_error_total",
                 "gateway_ext_authz_failure_mode_allowed_total", "gateway_ext_authz_disabled_total",
                 "authz_config_reloads_total", "gateway_config_reloads_total"):
        family, info = resolve(name, merged)
        assert family and info["samples"], f"{name}: no samples after the traffic"
    assert {"hit", "miss"} <= scrapes["authz"]["authz_lookup_cache"]["values"]["result"]
    assert scrapes["authz"]["authz_database_errors"]["values"]["database"] == {"broken"}
