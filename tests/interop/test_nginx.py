"""deploy/nginx/ext-authz.conf with Debian's real nginx (nginx-light, installed by scripts/test), in
front of the real demo backend, checking with the real authz-server's HTTP mode: the seed's three
requests (no policy → 200; policy → 403 and the Istio body; `x-ext-authz: allow` → 200 with our headers
upstream). The shipped file is used as it is but for the addresses (checked to occur once each), and
`nginx -t` must accept it first."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from contract import DENY_BODY, OVERRIDE_HEADER, RECEIVED_HEADER, RESULT_HEADER
from deploy_support import DEPLOY, REPO_ROOT, require_tool
from gateway_support import (
    AUTHZ_SERVER_BIN,
    SEED_API_KEY,
    SEED_BODY,
    curl,
    start_authz_server,
    start_demo_backend,
)

SHIPPED = DEPLOY / "nginx" / "ext-authz.conf"
JSON = "content-type:application/json"
ALLOW = "x-ext-authz: allow"
API_KEY = f"x-ai-api-key:{SEED_API_KEY}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{SHIPPED.name}: expected `{old}` exactly once"
    return text.replace(old, new)


def render(workdir: Path, authz_http: str, backend: str, port: int, with_policy: bool) -> Path:
    """The shipped file with our addresses, inside a minimal main config (pid, logs, temp paths)."""
    site = SHIPPED.read_text()
    site = replace_once(site, "server authz-server:8000;", f"server {authz_http};")
    site = replace_once(site, "server demo-backend:9100;", f"server {backend};")
    site = replace_once(site, "listen 8080;", f"listen 127.0.0.1:{port};")
    if not with_policy:
        # The seed's step 1: the same proxy with no check attached.
        site = replace_once(site, "auth_request /_ext_authz;", "")
    tag = "policy" if with_policy else "nopolicy"
    (workdir / f"site-{tag}.conf").write_text(site)
    user = "user root;\n" if os.geteuid() == 0 else ""
    main = workdir / f"nginx-{tag}.conf"
    main.write_text(
        f"""{user}worker_processes 1;
daemon off;
pid {workdir}/nginx-{tag}.pid;
error_log {workdir}/nginx-{tag}-error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/body-{tag};
    proxy_temp_path {workdir}/proxy-{tag};
    fastcgi_temp_path {workdir}/fastcgi-{tag};
    uwsgi_temp_path {workdir}/uwsgi-{tag};
    scgi_temp_path {workdir}/scgi-{tag};
    include {workdir}/site-{tag}.conf;
}}
"""
    )
    return main


class Nginx:
    def __init__(self, binary: str, config: Path, port: int, workdir: Path):
        test = subprocess.run([binary, "-t", "-p", str(workdir), "-c", str(config)], capture_output=True, text=True)
        assert test.returncode == 0, f"nginx -t refused {SHIPPED}:\n{test.stderr}"
        self.error_log = config.with_name(config.stem + "-error.log")
        self.proc = subprocess.Popen(
            [binary, "-p", str(workdir), "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.port = port
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"nginx did not start:\n{self.proc.stderr.read().decode(errors='replace')}")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def seed_curl(self, *extra_headers: str):
        """The seed's `curl -v localhost:8080/openai -H content-type:application/json [-H ...] -d '{...}'`."""
        return curl(f"localhost:{self.port}/openai", headers=[JSON, *extra_headers], data=SEED_BODY)


@pytest.fixture(scope="module")
def stack():
    binary = require_tool("nginx", "Debian's nginx-light; scripts/test installs it")
    with tempfile.TemporaryDirectory(prefix="nginx-ext-authz-") as d:
        workdir = Path(d)
        authz = start_authz_server(workdir)
        backend = start_demo_backend(workdir)
        started = []
        try:
            for with_policy in (False, True):
                port = free_port()
                config = render(workdir, authz.addr("http"), backend.addr(), port, with_policy)
                started.append(Nginx(binary, config, port, workdir))
            yield {"nopolicy": started[0], "policy": started[1], "authz": authz, "backend": backend}
        finally:
            for n in started:
                n.stop()
            authz.stop()
            backend.stop()


def assert_reached_backend(resp):
    assert (resp.status, resp.header("content-type")) == (200, "application/json")
    echo = resp.echo()
    assert (echo["method"], echo["path"]) == ("POST", "/openai")
    assert echo["body"] == SEED_BODY


def test_step1_without_policy_the_request_is_not_checked(stack):
    resp = stack["nopolicy"].seed_curl()
    assert_reached_backend(resp)
    assert not [h for h in resp.echo()["headers"] if h.startswith("x-ext-authz")]


def test_step3_policy_denies_with_authz_servers_status_headers_and_body(stack):
    resp = stack["policy"].seed_curl()
    assert resp.status == 403
    assert resp.body == DENY_BODY.encode()
    assert resp.header("content-type") == "text/plain; charset=utf-8"
    assert resp.header(RESULT_HEADER) == "denied"
    # The check saw the original request line, not the subrequest's GET.
    received = resp.header(RECEIVED_HEADER)
    assert "POST" in received and "/openai" in received, received
    stack["authz"].assert_alive()


def test_step4_allow_header_reaches_the_backend_with_our_headers(stack):
    resp = stack["policy"].seed_curl(ALLOW, API_KEY)
    assert_reached_backend(resp)
    assert resp.backend_saw(RESULT_HEADER) == "allowed"
    # Istio's HTTP handler describes the request Go-style: canonical header names.
    assert "X-Ext-Authz:[allow]" in resp.backend_saw(RECEIVED_HEADER)
    assert resp.backend_saw("x-ext-authz") == "allow"
    assert resp.backend_saw("x-ai-api-key") == SEED_API_KEY
    assert resp.backend_saw("x-request-id"), "nginx passes a request id upstream"
    # authz-server's headers go upstream only.
    assert not [n for n in resp.names() if n.startswith("x-ext-authz")]


def test_override_header_is_echoed_from_the_request_as_istio_does(stack):
    resp = stack["policy"].seed_curl(ALLOW, f"{OVERRIDE_HEADER}: from-client")
    assert resp.status == 200
    assert resp.backend_saw(OVERRIDE_HEADER) == "from-client"


def test_a_client_cannot_forge_what_authz_server_sets(stack):
    resp = stack["policy"].seed_curl(ALLOW, f"{RESULT_HEADER}: forged", "x-user-id: mallory", "x-plan: free")
    assert resp.status == 200
    assert resp.backend_saw(RESULT_HEADER) == "allowed"
    # The default rules set no x-user-id/x-plan: the client's are removed, not passed on.
    assert resp.backend_saw("x-user-id") is None
    assert resp.backend_saw("x-plan") is None


def test_authz_server_down_fails_closed(stack, tmp_path):
    binary = require_tool("nginx", "Debian's nginx-light")
    port = free_port()
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    config = render(tmp_path, dead, stack["backend"].addr(), port, with_policy=True)
    nginx = Nginx(binary, config, port, tmp_path)
    try:
        resp = nginx.seed_curl(ALLOW)
        assert resp.status == 500
        assert b"chat.completion" not in resp.body
    finally:
        nginx.stop()


def test_api_keys_identity_reaches_the_backend_and_401_passes_back(tmp_path, stack):
    """config/api-keys.toml behind nginx: the row's x-user-id/x-plan go upstream (auth_request_set),
    a missing key's 401 and www-authenticate and an unknown key's 403 body come back as authz-server
    wrote them."""
    binary = require_tool("nginx", "Debian's nginx-light")
    server_bin = str(AUTHZ_SERVER_BIN)
    config = tmp_path / "api-keys.toml"
    config.write_text((REPO_ROOT / "config" / "api-keys.toml").read_text())  # sqlite://keys.db beside it
    database = f"sqlite://{tmp_path / 'keys.db'}"
    subprocess.run([server_bin, "keys", "init", "--database", database], check=True, capture_output=True)
    added = subprocess.run(
        [server_bin, "keys", "add", "--database", database, "--subject", "alice", "--plan", "pro"],
        check=True, capture_output=True, text=True,
    )
    key = added.stdout.strip().splitlines()[-1].strip()
    authz = start_authz_server(tmp_path, config)
    port = free_port()
    nginx = Nginx(binary, render(tmp_path, authz.addr("http"), stack["backend"].addr(), port, True), port, tmp_path)
    try:
        allowed = nginx.seed_curl(f"x-ai-api-key: {key}", "x-user-id: mallory")
        assert_reached_backend(allowed)
        assert (allowed.backend_saw("x-user-id"), allowed.backend_saw("x-plan")) == ("alice", "pro")

        missing = nginx.seed_curl()
        assert missing.status == 401
        assert missing.header("www-authenticate") == "ApiKey"  # once, as authz-server sent it
        direct = curl(f"localhost:{authz.addr('http').rsplit(':', 1)[1]}/openai")
        assert (missing.status, missing.body) == (direct.status, direct.body)

        unknown = nginx.seed_curl("x-ai-api-key: not-a-key")
        assert unknown.status == 403
        assert unknown.body == b"unknown or revoked API key"
    finally:
        nginx.stop()
        authz.stop()
