"""Tools for the gateway upstream suites (test_gateway_upstream_*.py): a test CA, an OpenAI-compatible
HTTPS server written on the standard library, the admin `/metrics` scrape and a free loopback port.

Nothing here is the gateway's code: the CA comes from the `cryptography` package, the server from
`http.server` + `ssl`, so a suite that passes has been answered by software nobody here wrote.
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError:  # conftest turns the skip into a failure under AUTHZ_TEST_STRICT=1
    pytest.skip("cryptography is not installed: install tests/interop/requirements.txt", allow_module_level=True)


# --- a test CA ------------------------------------------------------------------------------------------


def _write_key(path: Path, key) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


class TestCA:
    """A self-signed CA (EC P-256) written to `<dir>/<name>-ca.pem`; `issue` signs server certificates."""

    __test__ = False  # not a pytest class

    def __init__(self, directory: Path, name: str):
        self.directory = directory
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path = directory / f"{name}-ca.pem"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, leaf_name: str, dns_names: Sequence[str] = ("localhost",),
              ips: Sequence[str] = ("127.0.0.1",)) -> Tuple[Path, Path]:
        """A server certificate for `dns_names` and `ips`; returns (cert chain PEM path, key PEM path)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        san = [x509.DNSName(n) for n in dns_names] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, leaf_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        cert_path = self.directory / f"{self.name}-{leaf_name}.pem"
        key_path = self.directory / f"{self.name}-{leaf_name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path, key)
        return cert_path, key_path


# --- an OpenAI-compatible HTTPS server ------------------------------------------------------------------


@dataclass
class SeenRequest:
    """One request as the backend received it (header names lower-cased, in order)."""

    method: str
    path: str
    headers: List[Tuple[str, str]]
    body: bytes

    def header(self, name: str) -> Optional[str]:
        vals = [v for k, v in self.headers if k == name]
        assert len(vals) <= 1, f"backend got {name!r} {len(vals)} times: {vals}"
        return vals[0] if vals else None


def reply_for(messages: list) -> str:
    """What the server answers: the last user message, echoed, so a test can tell answers apart."""
    users = [m.get("content", "") for m in messages if m.get("role") == "user"]
    return f"You said: {users[-1] if users else ''}"


class _OpenAIHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the gateway can reuse its connection
    server: "_TLSServer"

    def log_message(self, fmt, *args):  # quiet: pytest shows failures, not access logs
        pass

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        stub = self.server.stub
        seen = SeenRequest("POST", self.path, [(k.lower(), v) for k, v in self.headers.items()], body)
        stub.record(seen)
        # What a hosted API checks before anything else: the virtual host, then the key.
        if seen.header("host") != stub.expected_host:
            return self._json(421, {"error": {"message": f"misdirected: host {seen.header('host')!r}",
                                              "type": "invalid_request_error", "code": "misdirected"}})
        if seen.header("authorization") != f"Bearer {stub.api_key}":
            return self._json(401, {"error": {"message": "Incorrect API key provided.",
                                              "type": "invalid_request_error", "code": "invalid_api_key"}})
        if self.path != "/v1/chat/completions":
            return self._json(404, {"error": {"message": f"Unknown request URL: POST {self.path}",
                                              "type": "invalid_request_error", "code": "unknown_url"}})
        request = json.loads(body)
        content = reply_for(request.get("messages", []))
        if request.get("stream"):
            return self._stream(request["model"], content)
        self._json(200, {
            "id": "chatcmpl-referee", "object": "chat.completion", "created": int(time.time()),
            "model": request["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": None,
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        })

    def _json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, model: str, content: str) -> None:
        """Server-sent events in chunked encoding, a pause between chunks (a real stream, not one write)."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        base = {"id": "chatcmpl-referee", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": model}
        deltas = [{"role": "assistant", "content": ""}] + [{"content": w} for w in re.findall(r"\S+\s*", content)]
        for delta in deltas:
            self._chunk(dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": None}]))
        self._chunk(dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]))
        self._event(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chunk(self, payload: dict) -> None:
        self._event(b"data: " + json.dumps(payload).encode() + b"\n\n")
        time.sleep(0.01)

    def _event(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, stub: "OpenAIServer", context: ssl.SSLContext):
        self.stub = stub
        self.tls_context = context
        super().__init__(("127.0.0.1", 0), _OpenAIHandler)

    def finish_request(self, request, client_address):
        # The handshake runs in the connection's own thread: a client that never completes one (or
        # rejects our certificate) does not hold up the accept loop.
        try:
            conn = self.tls_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            self.stub.handshake_failures.append(repr(e))
            return
        self.stub.count_connection()
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            conn.close()


@dataclass
class OpenAIServer:
    """`/v1/chat/completions` over HTTPS on 127.0.0.1 (non-streaming JSON and `stream: true` SSE); checks
    `Host: localhost:<port>` (421 otherwise) and `Authorization: Bearer <api_key>` (401 otherwise)."""

    api_key: str
    cert: Path
    key: Path
    requests: List[SeenRequest] = field(default_factory=list)
    connections: int = 0
    handshake_failures: List[str] = field(default_factory=list)
    port: int = 0

    def __post_init__(self):
        self._lock = threading.Lock()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        # HTTP/1.1 only: an ALPN offer of h2 from the gateway must fall back, as with many real servers.
        context.set_alpn_protocols(["http/1.1"])
        self._server = _TLSServer(self, context)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="openai-https", daemon=True)
        self._thread.start()

    @property
    def expected_host(self) -> str:
        return f"localhost:{self.port}"

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def record(self, seen: SeenRequest) -> None:
        with self._lock:
            self.requests.append(seen)

    def count_connection(self) -> None:
        with self._lock:
            self.connections += 1

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# --- admin /metrics -------------------------------------------------------------------------------------

_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass
class Sample:
    name: str
    labels: Dict[str, str]
    value: float


def scrape(admin_addr: str) -> List[Sample]:
    """GET http://ADMIN/metrics, parsed (Prometheus text format): every sample line."""
    host, port = admin_addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        text = resp.read().decode()
        assert resp.status == 200, f"/metrics answered {resp.status}: {text[:500]}"
    finally:
        conn.close()
    samples = []
    for line in text.splitlines():
        m = _SAMPLE_RE.match(line)
        if m and not line.startswith("#"):
            samples.append(Sample(m.group(1), dict(_LABEL_RE.findall(m.group(2) or "")), float(m.group(3))))
    return samples


def metric(samples: List[Sample], name: str, **labels: str) -> Optional[float]:
    """The sum of `name`'s samples whose labels contain `labels` (a label value may be matched as a
    substring with a `~` prefix: endpoint="~127.0.0.1:9101"); None when there is none."""
    def matches(s: Sample) -> bool:
        for k, want in labels.items():
            got = s.labels.get(k)
            if got is None or (got != want if not want.startswith("~") else want[1:] not in got):
                return False
        return True

    found = [s.value for s in samples if s.name == name and matches(s)]
    return sum(found) if found else None


def metric_lines(samples: List[Sample], prefix: str) -> str:
    """The samples whose name starts with `prefix`, one a line: for assertion messages."""
    return "\n".join(f"{s.name}{s.labels} {s.value}" for s in samples if s.name.startswith(prefix))


# --- ports ----------------------------------------------------------------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed: connecting to it is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

