"""The real gateway against an ext_authz server nobody here wrote (python_authz_server.py: grpcio + xds-protos).

curl -> gateway (target/debug) -> demo-backend, with every check answered by the Python server as each
test tells it to. Each test asserts three things as Envoy's ext_authz filter would have them (DESIGN.md §3):
what the client got, what the backend received, and what the authorization server was asked.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qsl

import grpc
import pytest

from gateway_support import curl, start_demo_backend, start_gateway, write_config
from python_authz_server import (
    ADD_IF_ABSENT,
    OVERWRITE_IF_EXISTS,
    OVERWRITE_IF_EXISTS_OR_ADD,
    PythonAuthzServer,
    denied,
    grpc_error,
    header,
    ok,
    respond,
    sleep_then,
    status_only,
)

# Three routes to the same backend, each guarded by the Python server with different error handling:
# Envoy's defaults (200 ms, fail closed with 403), fail open with the marker header, status_on_error 503.
GATEWAY_CONFIG = """
[[listeners]]
name = "python-interop"
address = "127.0.0.1:0"

[[backends]]
name = "demo"
url = "http://{backend}"

[[routes]]
name = "openai"
path = {{ prefix = "/openai" }}
backend = "demo"

[[routes]]
name = "failopen"
path = {{ prefix = "/failopen" }}
backend = "demo"

[[routes]]
name = "onerror"
path = {{ prefix = "/onerror" }}
backend = "demo"

[[authz_backends]]
name = "python"
url = "http://{authz}"

[[policies]]
name = "python-checks"
target_refs = [{{ kind = "HTTPRoute", name = "openai" }}]
ext_auth = {{ backend = "python", grpc = {{}}, context_extensions = {{ suite = "python-interop" }} }}

[[policies]]
name = "python-fail-open"
target_refs = [{{ kind = "HTTPRoute", name = "failopen" }}]
ext_auth = {{ backend = "python", grpc = {{}}, failure_mode_allow = true, failure_mode_allow_header_add = true }}

[[policies]]
name = "python-status-on-error"
target_refs = [{{ kind = "HTTPRoute", name = "onerror" }}]
ext_auth = {{ backend = "python", grpc = {{}}, status_on_error = 503 }}
"""

CHAT = '{"model":"gpt-3.5-turbo","messages":[{"role":"user","content":"hi"}]}'
STREAM_CHAT = '{"model":"gpt-3.5-turbo","stream":true,"messages":[{"role":"user","content":"hi"}]}'
JSON = "content-type: application/json"
FAILURE_MODE_HEADER = "x-envoy-auth-failure-mode-allowed"
# The Python server answers this late; the gateway's (default, Envoy's) timeout is 200 ms.
LATE_S = 2.0


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory(prefix="gateway-python-authz-") as d:
        yield Path(d)


@pytest.fixture(scope="module")
def python_authz():
    server = PythonAuthzServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def backend(workdir):
    proc = start_demo_backend(workdir, sse_delay_ms=0)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def gateway(workdir, python_authz, backend):
    # The authz server runs first: the gateway connects its gRPC channel at startup.
    config = write_config(workdir, "gateway-python", GATEWAY_CONFIG.format(backend=backend.addr(), authz=python_authz.addr))
    proc = start_gateway(workdir, config)
    yield proc
    proc.stop()


@pytest.fixture
def authz(python_authz, gateway, backend):
    """The Python server, reset for this test; the processes must still be alive afterwards."""
    python_authz.reset()
    yield python_authz
    gateway.assert_alive()
    backend.assert_alive()


def send(gateway, path="/openai", headers=(), data=CHAT, method=None, extra_args=()):
    return curl(f"{gateway.addr()}{path}", headers=[JSON, *headers] if data is not None else list(headers),
                data=data, method=method, extra_args=extra_args)


def raw(resp, name):
    """Every line of request header `name` the backend received, in order."""
    return [v for k, v in resp.echo()["raw_headers"] if k == name]


def only_check(authz):
    reqs = authz.requests
    assert len(reqs) == 1, f"expected exactly one Check, got {len(reqs)}"
    return reqs[0]


# --- what the server is asked ---------------------------------------------------------------------------


def test_check_request_is_filled_as_envoy_does(authz, gateway):
    authz.behave(respond(ok()))
    path = "/openai/v1/chat/completions?b=2&a=1&b=3"

    resp = send(gateway, path, headers=["X-Mixed-Case: Value", "x-dup: one", "x-dup: two"])

    assert resp.status == 200
    attrs = only_check(authz).attributes
    http = attrs.request.http
    assert (http.method, http.path, http.scheme, http.protocol) == ("POST", path, "http", "HTTP/1.1")
    assert http.host == gateway.addr()
    assert http.size == len(CHAT)
    assert http.body == "" and http.raw_body == b"", "no body unless with_request_body asks for it"
    headers = dict(http.headers)
    assert all(k == k.lower() for k in headers), sorted(headers)
    assert headers[":authority"] == gateway.addr()
    assert headers[":method"] == "POST"
    assert headers[":path"] == path
    assert headers[":scheme"] == "http"
    assert headers["host"] == gateway.addr()
    assert headers["content-type"] == "application/json"
    assert headers["content-length"] == str(len(CHAT))
    assert headers["x-mixed-case"] == "Value"
    assert headers["x-dup"] == "one,two"
    assert headers["user-agent"].startswith("curl/")
    # The request id the check carries is the one the backend receives.
    assert http.id and headers["x-request-id"] == http.id == resp.backend_saw("x-request-id")
    # Socket addresses: the client's connection as the peer, the gateway's listener as the local end.
    src, dst = attrs.source.address.socket_address, attrs.destination.address.socket_address
    assert (src.address, src.port_value) == ("127.0.0.1", resp.local_port)
    assert f"{dst.address}:{dst.port_value}" == gateway.addr()
    assert attrs.source.principal == ""
    assert dict(attrs.context_extensions) == {"suite": "python-interop"}
    assert abs(attrs.request.time.seconds - time.time()) < 60


def test_check_request_over_h2c_says_http2(authz, gateway):
    authz.behave(respond(ok(headers=[header("x-checked", "yes")])))

    resp = send(gateway, "/openai?h2=1", method="GET", data=None, extra_args=["--http2-prior-knowledge"])

    assert (resp.http_version, resp.status) == ("HTTP/2", 200)
    http = only_check(authz).attributes.request.http
    assert (http.method, http.path, http.protocol, http.host) == ("GET", "/openai?h2=1", "HTTP/2", gateway.addr())
    headers = dict(http.headers)
    assert {k: headers[k] for k in (":authority", ":method", ":path", ":scheme")} == {
        ":authority": gateway.addr(), ":method": "GET", ":path": "/openai?h2=1", ":scheme": "http"}
    assert resp.backend_saw("x-checked") == "yes"


def test_only_the_guarded_route_is_checked_once_per_request(authz, gateway):
    authz.behave(respond(ok()))
    for _ in range(3):
        assert send(gateway).status == 200
    assert len(authz.requests) == 3
    assert send(gateway, "/nowhere").status == 404
    assert len(authz.requests) == 3


# --- OK: request mutations -------------------------------------------------------------------------------


def test_ok_request_headers_set_append_remove(authz, gateway):
    authz.behave(respond(ok(
        headers=[
            header("x-existing", "two", append=True),          # comma-appended to the client's value
            header("x-overwrite", "new", append=False),        # replaces the client's value
            header("x-unset", "new"),                          # append unset: overwrite (DESIGN §3)
            header("x-added", "fresh"),                        # append unset, header absent: added
        ],
        # Pseudo headers and host can't be removed.
        headers_to_remove=["x-remove-me", "host", ":path", ":method", ":authority"],
    )))

    resp = send(gateway, headers=["x-existing: one", "x-overwrite: old", "x-unset: old", "x-remove-me: bye", "x-keep: k"])

    assert resp.status == 200
    echo = resp.echo()
    assert raw(resp, "x-existing") == ["one,two"]
    assert raw(resp, "x-overwrite") == ["new"]
    assert raw(resp, "x-unset") == ["new"]
    assert raw(resp, "x-added") == ["fresh"]
    assert raw(resp, "x-remove-me") == []
    assert raw(resp, "x-keep") == ["k"]
    assert raw(resp, "host") == [gateway.addr()]
    assert (echo["method"], echo["path"], echo["body"]) == ("POST", "/openai", CHAT)
    # Request mutations never leak to the client.
    assert not {"x-added", "x-overwrite", "x-existing"} & set(resp.names())


def test_ok_query_parameters_set_and_remove(authz, gateway):
    authz.behave(respond(ok(
        query_parameters_to_set=[("replace", "new"), ("added", "1")],
        query_parameters_to_remove=["drop"],
    )))

    resp = send(gateway, "/openai/v1?replace=old&drop=x&keep=y&replace=old2")

    assert resp.status == 200
    echo = resp.echo()
    assert echo["path"] == "/openai/v1"
    # Envoy re-serialises the query from a key-sorted map; compare as a multiset of pairs.
    assert sorted(parse_qsl(echo["query"], keep_blank_values=True)) == [("added", "1"), ("keep", "y"), ("replace", "new")]
    # The check saw the original path.
    assert only_check(authz).attributes.request.http.path == "/openai/v1?replace=old&drop=x&keep=y&replace=old2"


# --- OK: response headers by append_action ---------------------------------------------------------------
# The demo backend's SSE answer carries `content-type: text/event-stream` and `cache-control: no-cache`.


def test_ok_response_headers_to_add_add_and_if_absent(authz, gateway):
    authz.behave(respond(ok(response_headers_to_add=[
        header("cache-control", "private"),                                   # APPEND_IF_EXISTS_OR_ADD: one more line
        header("x-added", "a"),                                               # APPEND_IF_EXISTS_OR_ADD on absent: added
        header("content-type", "text/plain", action=ADD_IF_ABSENT),           # present: untouched
        header("x-if-absent", "yes", action=ADD_IF_ABSENT),                   # absent: added
        header("x-never", "no", action=OVERWRITE_IF_EXISTS),                  # absent: not added
        header("x-set", "s", action=OVERWRITE_IF_EXISTS_OR_ADD),              # absent: added
    ])))

    resp = send(gateway, data=STREAM_CHAT)

    assert resp.status == 200
    assert resp.values("cache-control") == ["no-cache", "private"]
    assert resp.values("x-added") == ["a"]
    assert resp.values("content-type") == ["text/event-stream"]
    assert resp.values("x-if-absent") == ["yes"]
    assert resp.values("x-never") == []
    assert resp.values("x-set") == ["s"]
    assert resp.body.rstrip().endswith(b"data: [DONE]")
    # Response headers are for the client, not the backend.
    assert resp.body.count(b"x-if-absent") == 0


def test_ok_response_headers_to_add_overwrite_and_legacy_append(authz, gateway):
    authz.behave(respond(ok(response_headers_to_add=[
        header("cache-control", "max-age=0", action=OVERWRITE_IF_EXISTS),
        header("content-type", "text/event-stream; charset=utf-8", action=OVERWRITE_IF_EXISTS_OR_ADD),
        # The deprecated `append` flag, when present, wins over append_action: true adds, false sets.
        header("x-legacy-add", "1", append=True),
        header("x-legacy-add", "2", append=True),
        header("x-legacy-set", "a", append=False),
        header("x-legacy-set", "b", append=False),
        header("x-legacy-wins", "v", append=True, action=OVERWRITE_IF_EXISTS),
    ])))

    resp = send(gateway, data=STREAM_CHAT)

    assert resp.status == 200
    assert resp.values("cache-control") == ["max-age=0"]
    assert resp.values("content-type") == ["text/event-stream; charset=utf-8"]
    assert resp.values("x-legacy-add") == ["1", "2"]
    assert resp.values("x-legacy-set") == ["b"]
    assert resp.values("x-legacy-wins") == ["v"]


# --- denied ----------------------------------------------------------------------------------------------


def test_custom_denial_with_two_set_cookies(authz, gateway):
    body = '{"error":"who are you?"}'
    authz.behave(respond(denied(
        code=grpc.StatusCode.UNAUTHENTICATED.value[0],
        http_status=401,
        headers=[
            header("set-cookie", "a=1; Path=/"),
            header("set-cookie", "b=2; Path=/"),
            header("www-authenticate", 'Bearer realm="python"'),
            header("content-type", "application/json"),
        ],
        body=body,
    )))

    resp = send(gateway)

    assert (resp.status, resp.reason) == (401, "Unauthorized")
    assert resp.body == body.encode()
    assert resp.values("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert resp.values("www-authenticate") == ['Bearer realm="python"']
    assert resp.values("content-type") == ["application/json"]
    assert resp.header("content-length") == str(len(body))
    assert len(authz.requests) == 1


def test_denial_without_http_status_is_403_with_its_body(authz, gateway):
    authz.behave(respond(denied(body="python says no")))

    resp = send(gateway)

    assert (resp.status, resp.reason) == (403, "Forbidden")
    assert resp.body == b"python says no"
    assert resp.values("content-type") == ["text/plain"]


@pytest.mark.parametrize("code", [grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED])
def test_non_ok_status_without_denied_response_is_403_empty(authz, gateway, code):
    authz.behave(respond(status_only(code.value[0])))

    resp = send(gateway)

    assert resp.status == 403
    assert resp.body == b""
    assert resp.header("content-length") in ("0", None)


# --- errors: timeout and RPC failure under each failure mode ----------------------------------------------

ERROR_CASES = {
    # route prefix: (status the client gets, whether the backend is reached)
    "/openai": (403, False),     # Envoy's default: fail closed with 403, empty body
    "/onerror": (503, False),    # status_on_error
    "/failopen": (200, True),    # failure_mode_allow + x-envoy-auth-failure-mode-allowed: true
}


def assert_error_outcome(resp, prefix):
    status, reached = ERROR_CASES[prefix]
    assert resp.status == status
    if reached:
        assert resp.echo()["path"] == prefix
        assert resp.backend_saw(FAILURE_MODE_HEADER) == "true"
    else:
        assert resp.body == b""
        assert resp.header(FAILURE_MODE_HEADER) is None


@pytest.mark.parametrize("prefix", list(ERROR_CASES))
def test_a_late_answer_is_an_error_after_the_200ms_timeout(authz, gateway, prefix):
    authz.behave(sleep_then(LATE_S, ok(headers=[header("x-late", "applied")])))

    resp = send(gateway, prefix)

    assert_error_outcome(resp, prefix)
    assert resp.elapsed_s < LATE_S - 0.5, f"the client waited {resp.elapsed_s:.2f}s for a 200 ms check timeout"
    if ERROR_CASES[prefix][1]:
        assert resp.backend_saw("x-late") is None, "a timed-out answer must not be applied"
    assert len(authz.requests) == 1


@pytest.mark.parametrize("prefix", list(ERROR_CASES))
def test_an_rpc_error_is_an_error_not_a_deny(authz, gateway, prefix):
    authz.behave(grpc_error(grpc.StatusCode.UNAVAILABLE, "python authz is having a bad day"))

    resp = send(gateway, prefix)

    assert_error_outcome(resp, prefix)
    assert len(authz.requests) == 1


def test_allowed_requests_carry_no_failure_mode_marker(authz, gateway):
    authz.behave(respond(ok()))
    resp = send(gateway, "/failopen")
    assert resp.status == 200
    assert resp.backend_saw(FAILURE_MODE_HEADER) is None
