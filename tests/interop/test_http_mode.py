"""Envoy's HTTP ext_authz mode, with Python's own HTTP client and raw sockets.

Default configuration (Istio ext-authz parity): 200 + three headers when `x-ext-authz: allow`,
otherwise 403, `text/plain; charset=utf-8`, the fixed deny body.
"""

from __future__ import annotations

import http.client
import socket

import pytest

from contract import DENY_BODY, OVERRIDE_HEADER, RECEIVED_HEADER, RESULT_HEADER

TIMEOUT_S = 10


def request(server, method="GET", path="/", headers=None, body=None):
    host, port = server.http_addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT_S)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def assert_denied(status, headers, body):
    assert status == 403
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert body == DENY_BODY.encode()
    assert headers[RESULT_HEADER] == "denied"


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", ["/", "/check", "/a/b/c?x=1&y=2"])
def test_allow_any_method_and_path(server, method, path):
    status, headers, body = request(server, method, path, {"x-ext-authz": "allow"})
    assert status == 200, body
    assert headers[RESULT_HEADER] == "allowed"
    assert RECEIVED_HEADER in headers
    assert body == b""


def test_allow_header_name_is_case_insensitive(server):
    status, headers, _ = request(server, headers={"X-Ext-Authz": "allow"})
    assert status == 200
    assert headers[RESULT_HEADER] == "allowed"


@pytest.mark.parametrize("method", ["GET", "POST", "HEAD"])
def test_deny_without_header(server, method):
    status, headers, body = request(server, method, "/get")
    if method == "HEAD":
        assert status == 403
        assert headers[RESULT_HEADER] == "denied"
        assert body == b""
    else:
        assert_denied(status, headers, body)


@pytest.mark.parametrize("value", ["Allow", "deny", "allowed", ""])
def test_deny_other_values(server, value):
    assert_denied(*request(server, headers={"x-ext-authz": value}))


def test_deny_body_is_exact(server):
    status, headers, body = request(server)
    assert status == 403
    assert len(body) == 76
    assert headers["content-length"] == "76"


def test_override_header_echoed_on_allow(server):
    status, headers, _ = request(server, headers={"x-ext-authz": "allow", OVERRIDE_HEADER: "from-client-123"})
    assert status == 200
    assert headers[OVERRIDE_HEADER] == "from-client-123"


def test_override_header_echoed_on_deny(server):
    status, headers, body = request(server, headers={OVERRIDE_HEADER: "from-client-456"})
    assert_denied(status, headers, body)
    assert headers[OVERRIDE_HEADER] == "from-client-456"


def test_check_received_describes_request(server):
    status, headers, _ = request(
        server, "POST", "/some/path?q=1", {"x-ext-authz": "allow", "x-probe": "marker-9c1"}, body=b"payload-77"
    )
    assert status == 200
    received = headers[RECEIVED_HEADER]
    for part in ("POST", "/some/path", "marker-9c1", "payload-77"):
        assert part in received, received


def test_principal_fallback_is_grpc_only(server):
    # HTTP mode has no peer principal: no header means deny, whatever else is sent.
    assert_denied(*request(server, headers={"x-forwarded-client-cert": "URI=spiffe://cluster.local/ns/default/sa/a"}))


def raw_exchange(server, payload: bytes) -> bytes:
    """Send raw bytes, return everything the server answers until it closes or goes quiet."""
    host, port = server.http_addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as sock:
        sock.sendall(payload)
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                data = b"".join(chunks)
                if b"\r\n\r\n" in data and _complete(data):
                    break
        except (socket.timeout, ConnectionResetError):
            pass
    return b"".join(chunks)


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def status_of(raw: bytes) -> int:
    assert raw.startswith(b"HTTP/1."), raw[:200]
    return int(raw.split(b" ", 2)[1])


def test_huge_header_gets_clear_answer_and_server_survives(server):
    payload = (
        b"GET /big HTTP/1.1\r\nHost: test\r\nx-ext-authz: allow\r\nx-big: "
        + b"a" * 100_000
        + b"\r\nConnection: close\r\n\r\n"
    )
    raw = raw_exchange(server, payload)
    # Either a clear 4xx (e.g. 431) or a decision; never a dropped connection or a 5xx.
    assert raw, "server closed the connection without answering"
    assert 200 <= status_of(raw) < 500, raw[:300]
    status, headers, body = request(server, headers={"x-ext-authz": "allow"})
    assert status == 200


def test_invalid_utf8_header_value_and_server_survives(server):
    payload = b"GET /utf8 HTTP/1.1\r\nHost: test\r\nx-bad: \xff\xfe\xc3\x28\r\nConnection: close\r\n\r\n"
    raw = raw_exchange(server, payload)
    assert raw, "server closed the connection without answering"
    code = status_of(raw)
    assert code in (400, 403), raw[:300]
    if code == 403:
        # Treated as a request without the allow header: the normal deny.
        assert raw.endswith(DENY_BODY.encode())
    status, headers, body = request(server)
    assert_denied(status, headers, body)


def test_invalid_utf8_with_allow_header(server):
    payload = b"GET /utf8 HTTP/1.1\r\nHost: test\r\nx-ext-authz: allow\r\nx-bad: \xff\r\nConnection: close\r\n\r\n"
    raw = raw_exchange(server, payload)
    assert raw, "server closed the connection without answering"
    assert status_of(raw) in (200, 400), raw[:300]
    assert request(server, headers={"x-ext-authz": "allow"})[0] == 200


def test_malformed_request_line_gets_400(server):
    raw = raw_exchange(server, b"THIS IS NOT HTTP\r\n\r\n")
    assert raw == b"" or status_of(raw) == 400, raw[:300]
    assert request(server, headers={"x-ext-authz": "allow"})[0] == 200


def test_keep_alive_connection_serves_several_requests(server):
    host, port = server.http_addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT_S)
    try:
        for i in range(5):
            allow = i % 2 == 0
            conn.request("GET", f"/k{i}", headers={"x-ext-authz": "allow"} if allow else {})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == (200 if allow else 403)
    finally:
        conn.close()
