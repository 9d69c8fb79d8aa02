"""The seed against a real TLS backend: the gateway in front of an OpenAI-compatible HTTPS server.

The backend is `upstream_support.OpenAIServer` (Python's `http.server` + `ssl`) with a certificate from a
test CA made here with the `cryptography` package; it answers like a hosted API: 421 unless
`Host: localhost:<port>`, 401 unless `Authorization: Bearer <the gateway's key>`, 404 off
`/v1/chat/completions`. The gateway reaches it with the config docs/gateway.md shows for
api.openai.com: `https://` URL with `tls.ca`, `host_rewrite = "auto"`, the key set from `${OPENAI_API_KEY}`
(given to the gateway process only), and the seed's gateway-level ext_authz policy against our
`authz-server`. The clients are the real curl (the seed's commands, argument for argument) and the
official `openai` Python SDK.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import pytest

from contract import DENY_BODY, RECEIVED_HEADER, RESULT_HEADER
from gateway_support import (
    SEED_API_KEY,
    SEED_BODY,
    seed_config_text,
    seed_config_without_policies,
    start_authz_server,
    start_gateway,
    write_config,
)
from test_seed_walkthrough import ALLOW, API_KEY, assert_istio_denied, seed_curl
from upstream_support import OpenAIServer, TestCA, metric, metric_lines, scrape

openai = pytest.importorskip("openai", reason="the openai SDK is not installed: install tests/interop/requirements.txt")

GATEWAY_KEY = "sk-referee-gateway-key-5f1c"
CLIENT_KEY = "client-side-key"
SEED_REPLY = "You said: Write 5 sentences."
CONNECT_ERROR = "upstream connect error or disconnect/reset before headers. reset reason: connection failure"


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory(prefix="upstream-openai-") as d:
        yield Path(d)


@pytest.fixture(scope="module")
def ca(workdir):
    return TestCA(workdir, "referee")


@pytest.fixture(scope="module")
def ext_authz(workdir):
    proc = start_authz_server(workdir)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def backend(ca):
    cert, key = ca.issue("openai")
    server = OpenAIServer(GATEWAY_KEY, cert, key)
    yield server
    server.stop()


def toml_str(value) -> str:
    return json.dumps(str(value))  # a TOML basic string: JSON's escapes are a subset


def https_config(base: str, url: str, ca_path) -> str:
    """`base` (the seed's file, with or without its policy) with the openai backend served over HTTPS.

    The seed's route `openai` keeps its name and prefix (the policy and the seed's curl address it):
    `POST /openai` is a chat completion, as on the seed's AI backend. `/openai/v1/...` is the OpenAI API
    as the SDK addresses it (its base URL ends in /v1)."""
    backend = 'url = "http://127.0.0.1:9100"'
    route = 'path = { prefix = "/openai" }\nbackend = "openai"\n'
    assert base.count(backend) == 1 and base.count(route) == 1, "config/gateway.toml changed shape"
    tls = f"\ntls = {{ ca = {toml_str(ca_path)} }}" if ca_path is not None else ""
    mutation = (
        'host_rewrite = "auto"\n'
        'request_headers = { set = { authorization = "Bearer ${OPENAI_API_KEY}" } }\n'
    )
    text = base.replace(backend, f"url = {toml_str(url)}{tls}")
    text = text.replace(route, route + 'rewrite_prefix = "/v1/chat/completions"\n' + mutation)
    return text + f"""
[[routes]]
name = "openai-api"
path = {{ prefix = "/openai/v1" }}
backend = "openai"
rewrite_prefix = "/v1"
{mutation}"""


@pytest.fixture
def gateway(workdir, ext_authz, ca, backend):
    """Start `gateway run` on the seed's config pointed at `url` (default: the HTTPS backend)."""
    started = []

    def start(with_policy: bool = True, url: str | None = None, ca_path=ca.cert_path):
        base = seed_config_text() if with_policy else seed_config_without_policies()
        config = write_config(workdir, "gateway", https_config(base, url or backend.url, ca_path))
        proc = start_gateway(workdir, config, authz_urls={"ext-authz": f"http://{ext_authz.addr('grpc')}"},
                             admin=True, env={"OPENAI_API_KEY": GATEWAY_KEY})
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.assert_alive()
        # The key came from the environment: it must not leak into the gateway's logs.
        assert GATEWAY_KEY not in proc.stderr(), "the gateway logged the API key"
        proc.stop()
    ext_authz.assert_alive()


def assert_completion(resp):
    """The seed's step 1/4 answer, from the HTTPS backend through the gateway."""
    assert (resp.http_version, resp.status, resp.reason) == ("HTTP/1.1", 200, "OK"), resp.body[:300]
    assert resp.header("content-type") == "application/json"
    completion = resp.json()
    assert completion["object"] == "chat.completion"
    assert completion["model"] == "gpt-3.5-turbo"
    assert completion["choices"][0]["message"] == {"role": "assistant", "content": SEED_REPLY}


def assert_backend_saw_seed_request(seen, backend):
    """What the hosted API needs: its path, its host, the gateway's key; the body as the client sent it."""
    assert (seen.method, seen.path) == ("POST", "/v1/chat/completions")
    assert seen.header("host") == backend.expected_host
    assert seen.header("authorization") == f"Bearer {GATEWAY_KEY}"
    assert seen.header("content-type") == "application/json"
    assert seen.body == SEED_BODY.encode()


# --- (a) the seed walk-through, unchanged, against the HTTPS backend ---------------------------------------


def test_step1_without_policy_reaches_the_https_backend(gateway, backend):
    gw = gateway(with_policy=False)
    before = len(backend.requests)

    resp = seed_curl(gw)

    assert resp.request_lines[0] == "POST /openai HTTP/1.1"
    assert_completion(resp)
    assert len(backend.requests) == before + 1
    seen = backend.requests[-1]
    assert_backend_saw_seed_request(seen, backend)
    assert not [k for k, _ in seen.headers if k.startswith("x-ext-authz")], "no check without a policy"


def test_step3_policy_denies_and_the_backend_is_not_reached(gateway, backend):
    gw = gateway()
    before = len(backend.requests)

    assert_istio_denied(seed_curl(gw))

    assert len(backend.requests) == before


def test_step4_allow_header_reaches_the_https_backend(gateway, backend):
    gw = gateway()

    resp = seed_curl(gw, extra_headers=[ALLOW, API_KEY])

    assert_completion(resp)
    seen = backend.requests[-1]
    assert_backend_saw_seed_request(seen, backend)
    assert seen.header(RESULT_HEADER) == "allowed"
    assert seen.header("x-ext-authz") == "allow"
    assert seen.header("x-ai-api-key") == SEED_API_KEY


def test_a_client_authorization_header_is_replaced_by_the_routes(gateway, backend):
    gw = gateway()

    resp = seed_curl(gw, extra_headers=[ALLOW, f"authorization: Bearer {CLIENT_KEY}"])

    assert_completion(resp)
    assert backend.requests[-1].header("authorization") == f"Bearer {GATEWAY_KEY}"


# --- (b) the official openai SDK through the gateway ----------------------------------------------------


def sdk_client(gw, **headers):
    port = gw.addr().rsplit(":", 1)[1]
    return openai.OpenAI(base_url=f"http://localhost:{port}/openai/v1", api_key=CLIENT_KEY,
                         default_headers=headers, max_retries=0, timeout=20)


MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello in three words"}]
SDK_REPLY = "You said: Say hello in three words"


def assert_client_key_never_forwarded(backend):
    # x-ext-authz-check-received is the Istio sample server's dump of the check it was asked (the client's
    # request, as the check saw it, before the route's mutation): an echo by design, not a forwarded key.
    for seen in backend.requests:
        leaked = [k for k, v in seen.headers if CLIENT_KEY in v and k != RECEIVED_HEADER]
        assert not leaked, f"the backend saw the client's key in {leaked}: {seen}"


def test_sdk_chat_completion(gateway, backend):
    gw = gateway()
    client = sdk_client(gw, **{"x-ext-authz": "allow"})

    completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.content == SDK_REPLY
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == 15
    seen = backend.requests[-1]
    assert (seen.path, seen.header("host")) == ("/v1/chat/completions", backend.expected_host)
    assert seen.header("authorization") == f"Bearer {GATEWAY_KEY}"
    assert json.loads(seen.body)["messages"] == MESSAGES
    assert_client_key_never_forwarded(backend)


def test_sdk_streaming_chat_completion(gateway, backend):
    gw = gateway()
    client = sdk_client(gw, **{"x-ext-authz": "allow"})

    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))

    assert len(chunks) >= 4, "one chunk per word, as the backend sent them"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == SDK_REPLY
    assert chunks[-1].choices[0].finish_reason == "stop"
    seen = backend.requests[-1]
    assert json.loads(seen.body)["stream"] is True
    assert seen.header("authorization") == f"Bearer {GATEWAY_KEY}"
    assert_client_key_never_forwarded(backend)


def test_sdk_without_the_allow_header_is_denied(gateway, backend):
    gw = gateway()
    before = len(backend.requests)

    with pytest.raises(openai.PermissionDeniedError) as denied:
        sdk_client(gw).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert denied.value.status_code == 403
    assert denied.value.response.text == DENY_BODY
    assert len(backend.requests) == before


# --- (c) a certificate the gateway must not accept --------------------------------------------------------


@pytest.fixture
def impostor(workdir):
    """An HTTPS server on localhost whose certificate comes from another CA than the one configured."""
    other = TestCA(workdir, "impostor")
    cert, key = other.issue("openai")
    server = OpenAIServer(GATEWAY_KEY, cert, key)
    yield server
    server.stop()


def assert_tls_refused(resp, server):
    assert (resp.status, resp.reason) == (503, "Service Unavailable")
    assert resp.header("content-type") == "text/plain"
    prefix = f"{CONNECT_ERROR}, transport failure reason: TLS_error:"
    assert resp.text().startswith(prefix), resp.text()
    assert server.requests == [], "the request was sent over a connection whose certificate did not verify"


def test_a_certificate_from_another_ca_is_refused(gateway, impostor):
    gw = gateway(url=impostor.url)

    resp = seed_curl(gw, extra_headers=[ALLOW])

    assert_tls_refused(resp, impostor)
    # The server notes the failed handshake when the gateway's alert arrives: maybe after curl's answer.
    deadline = time.monotonic() + 5
    while not impostor.handshake_failures and time.monotonic() < deadline:
        time.sleep(0.05)
    assert impostor.handshake_failures and impostor.connections == 0, "the handshake should have failed"


def test_without_a_ca_the_platform_roots_do_not_trust_a_test_ca(gateway, backend):
    gw = gateway(ca_path=None)
    before = len(backend.requests)

    resp = seed_curl(gw, extra_headers=[ALLOW])

    assert resp.status == 503 and resp.text().startswith(f"{CONNECT_ERROR}, transport failure reason: TLS_error:")
    assert len(backend.requests) == before


def test_a_certificate_for_another_name_is_refused(workdir, gateway, ca):
    cert, key = ca.issue("elsewhere", dns_names=["elsewhere.example"], ips=())
    wrong_name = OpenAIServer(GATEWAY_KEY, cert, key)
    try:
        gw = gateway(url=wrong_name.url)
        assert_tls_refused(seed_curl(gw, extra_headers=[ALLOW]), wrong_name)
    finally:
        wrong_name.stop()


# --- (d) connections are pooled: no handshake per request -------------------------------------------------


def test_requests_reuse_one_tls_connection(gateway, backend):
    gw = gateway()
    before = backend.connections
    requests = 12

    for _ in range(requests):
        assert_completion(seed_curl(gw, extra_headers=[ALLOW]))

    opened = backend.connections - before
    samples = scrape(gw.addr("admin"))
    handshakes = metric(samples, "gateway_upstream_tls_handshakes_total", backend="openai")
    assert handshakes is not None, "no gateway_upstream_tls_handshakes_total{backend=\"openai\"}:\n" + metric_lines(
        samples, "gateway_upstream")
    assert 1 <= opened <= 2, f"{opened} TLS connections for {requests} sequential requests"
    assert handshakes == opened, metric_lines(samples, "gateway_upstream")
    requests_total = metric(samples, "gateway_upstream_requests_total", backend="openai")
    assert requests_total == requests, metric_lines(samples, "gateway_upstream")
