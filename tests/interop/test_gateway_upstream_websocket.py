"""WebSocket upgrades through the gateway, with the `websockets` package on both sides.

The backend is a `websockets` server (its sync API, in a thread) that greets, echoes text as text and
bytes as bytes, and closes with its own code on "bye"; the client is `websockets`' sync client. The
route `/ws` has `upgrades = ["websocket"]`, `/plain` has not; the seed's gateway-level ext_authz policy
checks every upgrade request against our `authz-server`.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import pytest

from contract import DENY_BODY, RESULT_HEADER
from gateway_support import curl, start_authz_server, start_gateway, write_config

websockets = pytest.importorskip("websockets", reason="websockets is not installed: install requirements.txt")
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402
from websockets.sync.client import connect  # noqa: E402
from websockets.sync.server import serve  # noqa: E402

ALLOW = {"x-ext-authz": "allow"}
GREETING = "hello from the backend"


class Backend:
    """The WebSocket server and the handshake requests it received (path, headers lower-cased)."""

    def __init__(self):
        self.handshakes = []
        self.closes = []
        self.server = serve(self.handle, "127.0.0.1", 0, process_request=self.record, max_size=4 * 1024 * 1024)
        self.addr = "127.0.0.1:%d" % self.server.socket.getsockname()[1]
        threading.Thread(target=self.server.serve_forever, name="ws-backend", daemon=True).start()

    def record(self, connection, request):
        self.handshakes.append((request.path, [(k.lower(), v) for k, v in request.headers.raw_items()]))
        return None  # go on with the handshake (or websockets' own refusal of a non-upgrade request)

    def handle(self, ws):
        ws.send(GREETING)
        try:
            for message in ws:
                if message == "bye":
                    ws.close(4000, "backend says bye")
                    break
                ws.send(message)
        except ConnectionClosed:
            pass
        finally:
            self.closes.append((ws.close_code, ws.close_reason))

    def last_header(self, name):
        values = [v for k, v in self.handshakes[-1][1] if k == name]
        return values[0] if values else None

    def stop(self):
        self.server.shutdown()


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory(prefix="upstream-websocket-") as d:
        yield Path(d)


@pytest.fixture(scope="module")
def backend():
    b = Backend()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def ext_authz(workdir):
    proc = start_authz_server(workdir)
    yield proc
    proc.stop()


CONFIG = """
[[listeners]]
name = "agentgateway-proxy"
address = "127.0.0.1:0"

[[backends]]
name = "ws"
url = "http://{backend}"

[[routes]]
name = "ws"
path = {{ prefix = "/ws" }}
backend = "ws"
upgrades = ["websocket"]

[[routes]]
name = "plain"
path = {{ prefix = "/plain" }}
backend = "ws"

[[authz_backends]]
name = "ext-authz"
url = "{authz}"

[[policies]]
name = "gateway-ext-auth-policy"
target_refs = [{{ kind = "Gateway", name = "agentgateway-proxy" }}]
ext_auth = {{ backend = "ext-authz", grpc = {{}} }}
"""


@pytest.fixture(scope="module")
def gateway(workdir, backend, ext_authz):
    text = CONFIG.format(backend=backend.addr, authz=f"http://{ext_authz.addr('grpc')}")
    proc = start_gateway(workdir, write_config(workdir, "gateway-ws", text))
    yield proc
    proc.assert_alive()
    proc.stop()


def ws_url(gateway, path):
    return f"ws://{gateway.addr()}{path}"


def test_text_and_binary_echo_both_ways(gateway, backend):
    with connect(ws_url(gateway, "/ws/echo?room=1"), additional_headers=ALLOW, open_timeout=10) as ws:
        assert ws.recv(timeout=10) == GREETING  # the backend speaks first
        ws.send("ping ✓")
        assert ws.recv(timeout=10) == "ping ✓"
        blob = bytes(range(256)) * 4
        ws.send(blob)
        assert ws.recv(timeout=10) == blob
        big = bytes(i % 251 for i in range(1024 * 1024))
        ws.send(big)
        assert ws.recv(timeout=10) == big

    path, _ = backend.handshakes[-1]
    assert path == "/ws/echo?room=1"
    assert backend.last_header(RESULT_HEADER) == "allowed", "the upgrade request was checked"


def test_the_backend_closing_reaches_the_client(gateway):
    with connect(ws_url(gateway, "/ws"), additional_headers=ALLOW, open_timeout=10) as ws:
        assert ws.recv(timeout=10) == GREETING
        ws.send("bye")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4000, "backend says bye")


def test_the_client_closing_reaches_the_backend(gateway, backend):
    with connect(ws_url(gateway, "/ws"), additional_headers=ALLOW, open_timeout=10) as ws:
        assert ws.recv(timeout=10) == GREETING
        ws.close(4001, "client done")
    # The backend notes a close when its side of the closing handshake is over, maybe after ours.
    for _ in range(100):
        if (4001, "client done") in backend.closes:
            break
        threading.Event().wait(0.05)
    assert (4001, "client done") in backend.closes, backend.closes


def test_denied_upgrade_is_refused_with_the_check_answer(gateway, backend):
    before = len(backend.handshakes)

    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(gateway, "/ws"), open_timeout=10)

    response = refused.value.response
    assert response.status_code == 403
    assert response.body == DENY_BODY.encode()
    assert response.headers.get(RESULT_HEADER) == "denied"
    assert len(backend.handshakes) == before, "a denied upgrade reached the backend"


def test_a_route_without_upgrades_forwards_a_plain_get(gateway, backend):
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(gateway, "/plain"), additional_headers=ALLOW, open_timeout=10)

    # The backend got no upgrade to accept, so it refused the handshake itself (426).
    assert refused.value.response.status_code == 426
    path, headers = backend.handshakes[-1]
    assert path == "/plain"
    names = {k for k, _ in headers}
    assert "upgrade" not in names, headers
    assert "upgrade" not in (backend.last_header("connection") or "").lower()


def test_an_h2c_upgrade_is_never_tunnelled(gateway, backend):
    """curl --http2 on http:// asks `Upgrade: h2c`: the gateway must answer in HTTP/1.1, no switch."""
    resp = curl(f"http://{gateway.addr()}/ws/h2c", headers=["x-ext-authz: allow"], extra_args=["--http2"])

    assert resp.http_version == "HTTP/1.1" and resp.status != 101
    path, headers = backend.handshakes[-1]
    assert path == "/ws/h2c"
    assert "upgrade" not in {k for k, _ in headers}, headers
