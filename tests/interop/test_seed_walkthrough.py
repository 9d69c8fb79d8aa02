"""The seed walk-through (shared/seed, docs/gateway.md) with the real binaries and the real curl.

`authz-server` with its built-in default stands in for Istio's ext-authz image, `demo-backend` for the
OpenAI backend, `gateway` with config/gateway.toml for the agentgateway proxy; every port is chosen by the
OS (the `--listen/--backend-url/--authz-url` overrides), everything else is the shipped file. The requests
are the seed's curl commands, argument for argument, with `localhost:PORT` for `localhost:8080`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from contract import DENY_BODY, OVERRIDE_GRPC_VALUE, OVERRIDE_HEADER, RECEIVED_HEADER, RESULT_HEADER
from gateway_support import (
    SEED_API_KEY,
    SEED_BODY,
    curl,
    seed_config_text,
    seed_config_without_policies,
    start_authz_server,
    start_demo_backend,
    start_gateway,
    write_config,
)

JSON = "content-type:application/json"
ALLOW = "x-ext-authz: allow"
API_KEY = f"x-ai-api-key:{SEED_API_KEY}"

# The seed's policy targets a route by name in its later steps; these are the route-level variants.
ROUTE_POLICY = """
[[policies]]
name = "route-ext-auth-policy"
target_refs = [{ kind = "HTTPRoute", name = "openai" }]
ext_auth = { backend = "ext-authz", grpc = {} }
"""
PUBLIC_ROUTE = """
[[routes]]
name = "public"
path = { prefix = "/public" }
backend = "openai"
"""

# A second, differently configured authz-server for the route level, so "both must pass" is observable:
# it allows only `x-team: platform` and denies with its own status, header and body.
TEAM_RULES = """
[default.deny]
status = 401
grpc_code = "UNAUTHENTICATED"
body = "route policy: only the platform team"
headers = [{ name = "www-authenticate", value = "X-Team" }]

[[rules]]
name = "platform-team"
[rules.when]
headers = [{ name = "x-team", exact = "platform" }]
[rules.allow]
request_headers = [{ name = "x-route-check", value = "passed" }]
"""
TEAM_DENY_BODY = "route policy: only the platform team"


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory(prefix="seed-walkthrough-") as d:
        yield Path(d)


@pytest.fixture(scope="module")
def ext_authz(workdir):
    """The seed's ext-authz Deployment: authz-server with no arguments but OS-chosen ports."""
    proc = start_authz_server(workdir)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def backend(workdir):
    proc = start_demo_backend(workdir)
    yield proc
    proc.stop()


@pytest.fixture
def gateway(workdir, ext_authz, backend):
    """Start `gateway run` on a config text; the processes are checked alive and stopped after the test."""
    started = []

    def start(config_text: str, authz_urls=None):
        config = write_config(workdir, "gateway", config_text)
        urls = {"ext-authz": f"http://{ext_authz.addr('grpc')}"}
        urls.update(authz_urls or {})
        proc = start_gateway(workdir, config, {"openai": f"http://{backend.addr()}"}, urls)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.assert_alive()
        proc.stop()
    ext_authz.assert_alive()
    backend.assert_alive()


def seed_curl(gw, path="/openai", extra_headers=(), method=None, data=SEED_BODY):
    """The seed's `curl -v "localhost:8080/openai" -H content-type:application/json [-H ...] -d '{...}'`."""
    port = gw.addr().rsplit(":", 1)[1]
    return curl(f"localhost:{port}{path}", headers=[JSON, *extra_headers], data=data, method=method)


def assert_istio_denied(resp, path="/openai"):
    """Step 3's answer, exactly: 403, the 76-byte Istio body, `x-ext-authz-check-result: denied`."""
    assert (resp.http_version, resp.status, resp.reason) == ("HTTP/1.1", 403, "Forbidden")
    assert resp.body == DENY_BODY.encode()
    assert resp.header("content-length") == "76"
    assert resp.header("content-type") == "text/plain"
    assert resp.header(RESULT_HEADER) == "denied"
    assert resp.header(OVERRIDE_HEADER) == OVERRIDE_GRPC_VALUE
    received = resp.header(RECEIVED_HEADER)
    assert f'path:"{path}"' in received and 'method:"POST"' in received and 'protocol:"HTTP/1.1"' in received


def assert_reached_backend(resp, path="/openai", body=SEED_BODY):
    assert (resp.http_version, resp.status, resp.reason) == ("HTTP/1.1", 200, "OK")
    assert resp.header("content-type") == "application/json"
    completion = resp.json()
    assert completion["object"] == "chat.completion"
    assert completion["model"] == "gpt-3.5-turbo"
    echo = resp.echo()
    assert (echo["method"], echo["path"], echo["version"]) == ("POST", path, "HTTP/1.1")
    assert echo["body"] == body
    assert resp.backend_saw("content-type") == "application/json"


# --- the walk-through, step by step --------------------------------------------------------------------


def test_step1_without_policy_the_request_is_not_checked(gateway):
    gw = gateway(seed_config_without_policies())

    resp = seed_curl(gw)

    assert resp.request_lines[0] == "POST /openai HTTP/1.1"
    assert_reached_backend(resp)
    # No check happened, so none of the ext-authz headers were added on the way.
    assert not [h for h in resp.echo()["headers"] if h.startswith("x-ext-authz")]


def test_step3_gateway_policy_denies_without_the_allow_header(gateway):
    gw = gateway(seed_config_text())

    resp = seed_curl(gw)

    assert_istio_denied(resp)


def test_step4_gateway_policy_allows_with_the_allow_header(gateway):
    gw = gateway(seed_config_text())

    resp = seed_curl(gw, extra_headers=[ALLOW, API_KEY])

    assert_reached_backend(resp)
    assert resp.backend_saw(RESULT_HEADER) == "allowed"
    assert resp.backend_saw(OVERRIDE_HEADER) == OVERRIDE_GRPC_VALUE
    assert 'key:"x-ext-authz",value:"allow"' in resp.backend_saw(RECEIVED_HEADER)
    assert resp.backend_saw("x-ext-authz") == "allow"
    assert resp.backend_saw("x-ai-api-key") == SEED_API_KEY
    # The check's mutations go upstream only; the client sees the backend's answer untouched.
    assert not [n for n in resp.names() if n.startswith("x-ext-authz")]


def test_walkthrough_in_one_sitting(gateway):
    """Steps 1-4 in the seed's order: the same request, then the policy, then the allow header."""
    assert_reached_backend(seed_curl(gateway(seed_config_without_policies())))
    gw = gateway(seed_config_text())
    assert_istio_denied(seed_curl(gw))
    resp = seed_curl(gw, extra_headers=[ALLOW, API_KEY])
    assert_reached_backend(resp)
    assert resp.backend_saw(RESULT_HEADER) == "allowed"


def test_wrong_allow_value_is_denied(gateway):
    gw = gateway(seed_config_text())
    assert_istio_denied(seed_curl(gw, extra_headers=["x-ext-authz: Allow"]))


# --- policy attachment: route level, both levels, opting out ---------------------------------------------


def test_route_level_policy_guards_only_its_route(gateway):
    gw = gateway(seed_config_without_policies() + PUBLIC_ROUTE + ROUTE_POLICY)

    assert_istio_denied(seed_curl(gw))

    public = seed_curl(gw, path="/public")
    assert_reached_backend(public, path="/public")
    assert public.backend_saw(RESULT_HEADER) is None

    allowed = seed_curl(gw, extra_headers=[ALLOW, API_KEY])
    assert_reached_backend(allowed)
    assert allowed.backend_saw(RESULT_HEADER) == "allowed"


def test_both_levels_must_allow_gateway_first(workdir, gateway):
    team = start_authz_server(workdir, write_config(workdir, "team-rules", TEAM_RULES))
    try:
        config = seed_config_text() + """
[[authz_backends]]
name = "team-authz"
url = "http://127.0.0.1:9001"

[[policies]]
name = "route-team-policy"
target_refs = [{ kind = "HTTPRoute", name = "openai" }]
ext_auth = { backend = "team-authz", grpc = {} }
"""
        gw = gateway(config, authz_urls={"team-authz": f"http://{team.addr('grpc')}"})

        # Neither passes: the gateway level answers first.
        assert_istio_denied(seed_curl(gw))
        # Only the route level would pass: still the gateway level's denial.
        assert_istio_denied(seed_curl(gw, extra_headers=["x-team: platform"]))

        # The gateway level passes, the route level denies with its own answer.
        resp = seed_curl(gw, extra_headers=[ALLOW, API_KEY])
        assert (resp.status, resp.reason) == (401, "Unauthorized")
        assert resp.body == TEAM_DENY_BODY.encode()
        assert resp.header("www-authenticate") == "X-Team"
        assert resp.header(RESULT_HEADER) is None

        # Both pass: both servers' headers reach the backend.
        resp = seed_curl(gw, extra_headers=[ALLOW, API_KEY, "x-team: platform"])
        assert_reached_backend(resp)
        assert resp.backend_saw(RESULT_HEADER) == "allowed"
        assert resp.backend_saw("x-route-check") == "passed"
        team.assert_alive()
    finally:
        team.stop()


def test_a_route_can_opt_out_of_the_gateway_policy(gateway):
    config = seed_config_text() + """
[[routes]]
name = "health"
path = { exact = "/healthz" }
backend = "openai"

[[policies]]
name = "health-no-auth"
target_refs = [{ kind = "HTTPRoute", name = "health" }]
ext_auth = { disabled = true }
"""
    gw = gateway(config)

    health = seed_curl(gw, path="/healthz")
    assert_reached_backend(health, path="/healthz")
    assert health.backend_saw(RESULT_HEADER) is None

    # The other route still carries the gateway-level policy.
    assert_istio_denied(seed_curl(gw))
