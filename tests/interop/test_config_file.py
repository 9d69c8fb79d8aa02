"""`--config FILE`: the shipped Istio config answers exactly like the built-in default; a broken file is refused."""

from __future__ import annotations

import subprocess

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth3_grpc

from conftest import REPO_ROOT, SERVER_BIN
from contract import ALLOW_VALUE, CHECK_HEADER, PRINCIPAL_A, PRINCIPAL_B
from test_grpcio_check import V3, make_request
from test_http_mode import request as http_request

ISTIO_CONFIG = REPO_ROOT / "config" / "istio-ext-authz.toml"

GRPC_CASES = {
    "allow-header": ({CHECK_HEADER: ALLOW_VALUE}, None),
    "deny-no-header": ({"x": "y"}, None),
    "deny-Allow": ({CHECK_HEADER: "Allow"}, None),
    "allow-principal": ({}, PRINCIPAL_A),
    "deny-principal": ({}, PRINCIPAL_B),
    "deny-header-beats-principal": ({CHECK_HEADER: "no"}, PRINCIPAL_A),
    "too-long": ({"x-big": "z" * 70_000, CHECK_HEADER: ALLOW_VALUE}, None),
}


@pytest.fixture(scope="module")
def istio_file_server(run_dir):
    from conftest import start_server

    if not ISTIO_CONFIG.is_file():
        pytest.fail(f"{ISTIO_CONFIG} is missing")
    srv = start_server(ISTIO_CONFIG, run_dir)
    yield srv
    srv.stop()


@pytest.mark.parametrize("case", list(GRPC_CASES))
def test_shipped_istio_config_matches_builtin_grpc(server, istio_file_server, case):
    headers, principal = GRPC_CASES[case]
    answers = []
    for srv in (server, istio_file_server):
        with grpc.insecure_channel(srv.grpc_addr) as channel:
            answers.append(auth3_grpc.AuthorizationStub(channel).Check(make_request(V3, headers, principal), timeout=10))
    builtin, from_file = answers
    assert from_file == builtin


@pytest.mark.parametrize("headers", [{CHECK_HEADER: ALLOW_VALUE}, {}, {CHECK_HEADER: "Allow"}])
def test_shipped_istio_config_matches_builtin_http(server, istio_file_server, headers):
    def significant(answer):
        status, hdrs, body = answer
        # `date` differs between two answers; the Host header is pinned so check-received can match.
        return status, {k.lower(): v for k, v in hdrs.items() if k.lower() not in ("date",)}, body

    builtin = significant(http_request(server, "GET", "/p", dict(headers, host="same")))
    from_file = significant(http_request(istio_file_server, "GET", "/p", dict(headers, host="same")))
    assert from_file == builtin


def test_broken_config_is_refused_with_location(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\ngrpc = "127.0.0.1:0"\n\n[[rules]]\nname = "r"\nno_such_key = 1\n')
    proc = subprocess.run(
        [str(SERVER_BIN), "--config", str(bad), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "listening" not in proc.stdout
    assert f"{bad}:6:" in proc.stderr, proc.stderr
    assert "no_such_key" in proc.stderr, proc.stderr


def test_missing_config_file_is_refused(tmp_path):
    missing = tmp_path / "nope.toml"
    proc = subprocess.run(
        [str(SERVER_BIN), "--config", str(missing), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0
    assert "listening" not in proc.stdout
    assert str(missing) in proc.stderr, proc.stderr
