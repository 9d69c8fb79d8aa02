"""gRPC through the gateway: a real grpcio server behind a `protocol = "http2"` backend, called by the
grpcio client and by grpcurl, with the seed's gateway-level ext_authz policy against our `authz-server`.

The service (tests/interop/protos/referee_echo.proto) has one method of each streaming kind; its stubs are
generated at test time with grpcio-tools' protoc into a temporary directory. The server has reflection on
(grpcio-reflection), so grpcurl learns everything it prints from the server, through the gateway.
"""

from __future__ import annotations

import importlib
import importlib.resources
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from contract import DENY_BODY, RESULT_HEADER
from gateway_support import start_authz_server, start_gateway, write_config
from upstream_support import TestCA, closed_port

protoc = pytest.importorskip("grpc_tools.protoc", reason="grpcio-tools is not installed: install requirements.txt")
reflection = pytest.importorskip("grpc_reflection.v1alpha.reflection", reason="grpcio-reflection is not installed")

PROTO_DIR = Path(__file__).resolve().parent / "protos"
SERVICE = "referee.echo.v1.Echo"
ALLOW = (("x-ext-authz", "allow"),)
CONNECT_ERROR = "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
CODES = {c.value[0]: c for c in grpc.StatusCode}
GRPCURL = str(Path(sys.executable).parent / "grpcurl")


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory(prefix="upstream-grpc-") as d:
        yield Path(d)


@pytest.fixture(scope="module")
def stubs(workdir):
    """referee_echo_pb2 and referee_echo_pb2_grpc, generated now from the .proto."""
    out = workdir / "stubs"
    out.mkdir()
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"-I{well_known}", f"--python_out={out}",
                      f"--grpc_python_out={out}", "referee_echo.proto"])
    assert rc == 0, "protoc failed on referee_echo.proto"
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module("referee_echo_pb2"), importlib.import_module("referee_echo_pb2_grpc")
    finally:
        sys.path.remove(str(out))


class Calls:
    """What the server saw: per call, the method, its metadata and the deadline it was given."""

    def __init__(self):
        self.lock = threading.Lock()
        self.seen = []
        self.cancelled = threading.Event()

    def record(self, method, context):
        with self.lock:
            self.seen.append({"method": method, "metadata": dict(context.invocation_metadata()),
                              "time_remaining": context.time_remaining()})


def make_servicer(pb2, pb2_grpc, calls: Calls):
    class Echo(pb2_grpc.EchoServicer):
        def Unary(self, request, context):
            calls.record("Unary", context)
            end = time.monotonic() + request.delay_ms / 1000
            while time.monotonic() < end:
                if not context.is_active():
                    calls.cancelled.set()
                    return pb2.Note()
                time.sleep(0.01)
            fail(request, context)
            return pb2.Note(text=f"echo: {request.text}")

        def ServerStream(self, request, context):
            calls.record("ServerStream", context)
            for i in range(request.count):
                yield pb2.Note(text=f"{request.text} #{i}")
            fail(request, context)

        def ClientStream(self, request_iterator, context):
            calls.record("ClientStream", context)
            texts = [n.text for n in request_iterator]
            return pb2.Summary(texts=texts, received=len(texts))

        def Bidi(self, request_iterator, context):
            calls.record("Bidi", context)
            for note in request_iterator:
                yield pb2.Note(text=note.text.upper())

    def fail(request, context):
        if request.fail_code:
            context.set_trailing_metadata((("x-failure-detail", "from the backend"),))
            context.abort(CODES[request.fail_code], request.text)

    return Echo()


@pytest.fixture(scope="module")
def grpc_backend(stubs):
    pb2, pb2_grpc = stubs
    calls = Calls()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    pb2_grpc.add_EchoServicer_to_server(make_servicer(pb2, pb2_grpc, calls), server)
    names = (pb2.DESCRIPTOR.services_by_name["Echo"].full_name, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", calls
    server.stop(grace=None)


@pytest.fixture(scope="module")
def ext_authz(workdir):
    proc = start_authz_server(workdir)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def broken_backend():
    """A raw HTTP/2 server (the h2 package). On /referee.broken.v1.Echo it starts a gRPC answer, sends half
    a message, then drops the connection: what a backend crashing mid-stream looks like on the wire. On
    /referee.silent.v1.Echo it never answers (and knows nothing of grpc-timeout)."""
    h2 = pytest.importorskip("h2.connection", reason="h2 is not installed: install tests/interop/requirements.txt")
    import h2.config
    import h2.events

    listener = socket.create_server(("127.0.0.1", 0))
    answered = []

    def serve_one(sock):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        with sock:
            while data := sock.recv(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        path = dict(event.headers)[b":path"].decode()
                        if path.startswith("/referee.silent."):
                            answered.append(path)
                            continue
                        conn.send_headers(event.stream_id, [(":status", "200"), ("content-type", "application/grpc")])
                        # A 5-byte gRPC prefix announcing 100 bytes, then only 10 of them.
                        conn.send_data(event.stream_id, b"\x00\x00\x00\x00\x64" + b"x" * 10)
                        sock.sendall(conn.data_to_send())
                        answered.append(path)
                        return  # closing the socket: no END_STREAM, no trailers
                sock.sendall(conn.data_to_send())

    def accept_loop():
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve_one, args=(sock,), daemon=True).start()

    threading.Thread(target=accept_loop, name="broken-h2", daemon=True).start()
    yield "127.0.0.1:%d" % listener.getsockname()[1], answered
    listener.close()


CONFIG = """
[[listeners]]
name = "agentgateway-proxy"
address = "127.0.0.1:0"

[[backends]]
name = "echo"
url = "http://{echo}"
protocol = "http2"

[[backends]]
name = "down"
url = "http://127.0.0.1:{closed}"
protocol = "http2"

[[routes]]
name = "echo"
path = {{ prefix = "/referee.echo.v1.Echo" }}
backend = "echo"

# A prefix matches whole segments: each reflection service is a route of its own.
[[routes]]
name = "reflection"
path = {{ prefix = "/grpc.reflection.v1alpha.ServerReflection" }}
backend = "echo"

[[routes]]
name = "reflection-v1"
path = {{ prefix = "/grpc.reflection.v1.ServerReflection" }}
backend = "echo"

[[backends]]
name = "broken"
url = "http://{broken}"
protocol = "http2"

[[routes]]
name = "broken"
path = {{ prefix = "/referee.broken.v1.Echo" }}
backend = "broken"

[[routes]]
name = "silent"
path = {{ prefix = "/referee.silent.v1.Echo" }}
backend = "broken"

[[routes]]
name = "down"
path = {{ prefix = "/referee.down.v1.Echo" }}
backend = "down"

[[authz_backends]]
name = "ext-authz"
url = "{authz}"

[[policies]]
name = "gateway-ext-auth-policy"
target_refs = [{{ kind = "Gateway", name = "agentgateway-proxy" }}]
ext_auth = {{ backend = "ext-authz", grpc = {{}} }}
"""


@pytest.fixture(scope="module")
def gateway(workdir, grpc_backend, broken_backend, ext_authz):
    text = CONFIG.format(echo=grpc_backend[0], broken=broken_backend[0], closed=closed_port(),
                         authz=f"http://{ext_authz.addr('grpc')}")
    proc = start_gateway(workdir, write_config(workdir, "gateway-grpc", text))
    yield proc
    proc.assert_alive()
    proc.stop()


@pytest.fixture(scope="module")
def channel(gateway):
    ch = grpc.insecure_channel(gateway.addr())
    yield ch
    ch.close()


@pytest.fixture
def echo(stubs, channel):
    return stubs[1].EchoStub(channel)


@pytest.fixture
def calls(grpc_backend):
    return grpc_backend[1]


# --- grpcio through the gateway -------------------------------------------------------------------------


def test_unary(stubs, echo, calls):
    reply = echo.Unary(stubs[0].Note(text="hello"), metadata=ALLOW, timeout=10)

    assert reply.text == "echo: hello"
    seen = calls.seen[-1]
    assert seen["method"] == "Unary"
    assert seen["metadata"][RESULT_HEADER] == "allowed", "the call reached the backend checked"


def test_server_streaming(stubs, echo):
    replies = echo.ServerStream(stubs[0].Note(text="part", count=5), metadata=ALLOW, timeout=10)

    assert [r.text for r in replies] == [f"part #{i}" for i in range(5)]


def test_client_streaming(stubs, echo):
    notes = (stubs[0].Note(text=t) for t in ["one", "two", "three", "four"])

    summary = echo.ClientStream(notes, metadata=ALLOW, timeout=10)

    assert (list(summary.texts), summary.received) == (["one", "two", "three", "four"], 4)


def test_bidi_streaming_interleaves(stubs, echo):
    """Each reply is read before the next note is sent: nothing in the path may buffer the stream."""
    outbox: queue.Queue = queue.Queue()

    def notes():
        while (note := outbox.get()) is not None:
            yield note

    replies = echo.Bidi(notes(), metadata=ALLOW, timeout=10)
    for text in ["alpha", "beta", "gamma"]:
        outbox.put(stubs[0].Note(text=text))
        assert next(replies).text == text.upper()
    outbox.put(None)
    assert list(replies) == []
    assert replies.code() == grpc.StatusCode.OK


MESSAGE = "quota 100% used: réessayez\tplus tard ✓"


def test_error_status_and_message_arrive_intact(stubs, echo):
    with pytest.raises(grpc.RpcError) as failed:
        echo.Unary(stubs[0].Note(text=MESSAGE, fail_code=8), metadata=ALLOW, timeout=10)

    assert failed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert failed.value.details() == MESSAGE
    assert ("x-failure-detail", "from the backend") in failed.value.trailing_metadata()


def test_trailers_after_a_streamed_body(stubs, echo):
    """Messages first, then the status in trailers: both reach the client."""
    replies = echo.ServerStream(stubs[0].Note(text=MESSAGE, count=3, fail_code=9), metadata=ALLOW, timeout=10)

    got = []
    with pytest.raises(grpc.RpcError) as failed:
        for r in replies:
            got.append(r.text)

    assert got == [f"{MESSAGE} #{i}" for i in range(3)]
    assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert failed.value.details() == MESSAGE
    assert ("x-failure-detail", "from the backend") in failed.value.trailing_metadata()


def test_deadline_reaches_the_backend_and_ends_the_call(stubs, echo, calls):
    calls.cancelled.clear()
    started = time.monotonic()

    with pytest.raises(grpc.RpcError) as failed:
        echo.Unary(stubs[0].Note(text="slow", delay_ms=5000), metadata=ALLOW, timeout=0.5)

    # Two clocks run out at the same moment: the client's own (DEADLINE_EXCEEDED) and the gateway's,
    # which honours grpc-timeout and then answers as Envoy does (504 -> UNAVAILABLE). Either may win.
    outcome = (failed.value.code(), failed.value.details())
    assert outcome[0] == grpc.StatusCode.DEADLINE_EXCEEDED or outcome == (
        grpc.StatusCode.UNAVAILABLE, "upstream request timeout"), outcome
    assert time.monotonic() - started < 2
    seen = calls.seen[-1]
    assert seen["method"] == "Unary"
    remaining = seen["time_remaining"]
    assert remaining is not None and 0 < remaining <= 0.6, f"grpc-timeout not forwarded: {remaining}"
    assert calls.cancelled.wait(2), "the backend's call was still running 2 s after the deadline"


def test_denied_by_the_check(stubs, echo, calls):
    before = len(calls.seen)

    with pytest.raises(grpc.RpcError) as denied:
        echo.Unary(stubs[0].Note(text="hello"), timeout=10)

    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert denied.value.details() == DENY_BODY
    # The authz server's deny headers are kept (Envoy's local reply carries them).
    metadata = dict(denied.value.initial_metadata()) | dict(denied.value.trailing_metadata())
    assert metadata.get(RESULT_HEADER) == "denied", metadata
    assert len(calls.seen) == before, "a denied call reached the backend"


def call_generic(channel, path, stubs):
    pb2 = stubs[0]
    method = channel.unary_unary(path, request_serializer=pb2.Note.SerializeToString,
                                 response_deserializer=pb2.Note.FromString)
    with pytest.raises(grpc.RpcError) as failed:
        method(pb2.Note(text="x"), metadata=ALLOW, timeout=10)
    return failed.value


def test_no_route_is_unimplemented(channel, stubs):
    failed = call_generic(channel, "/referee.nowhere.v1.Echo/Unary", stubs)

    assert failed.code() == grpc.StatusCode.UNIMPLEMENTED


def test_upstream_down_is_unavailable(channel, stubs):
    failed = call_generic(channel, "/referee.down.v1.Echo/Unary", stubs)

    assert failed.code() == grpc.StatusCode.UNAVAILABLE
    assert failed.details() == CONNECT_ERROR


def test_a_backend_dropping_mid_stream_ends_the_call(channel, stubs, broken_backend):
    """Half a message, then the backend's connection is gone: the client's call must end in an error
    at once (a reset), not wait for its deadline and not succeed."""
    pb2 = stubs[0]
    method = channel.unary_stream("/referee.broken.v1.Echo/ServerStream",
                                  request_serializer=pb2.Note.SerializeToString,
                                  response_deserializer=pb2.Note.FromString)
    started = time.monotonic()

    with pytest.raises(grpc.RpcError) as failed:
        list(method(pb2.Note(text="x"), metadata=ALLOW, timeout=10))

    assert time.monotonic() - started < 5
    assert broken_backend[1] == ["/referee.broken.v1.Echo/ServerStream"], "the call did not reach the backend"
    assert failed.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE), failed.value


def raw_grpc_call(addr: str, path: str, message: bytes, headers) -> dict:
    """One gRPC call by hand over h2c (the h2 package), with no deadline of the client's own: returns
    the headers that ended the stream (trailers, or the single HEADERS of a trailers-only answer)."""
    import h2.config
    import h2.connection
    import h2.events

    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, [(":method", "POST"), (":scheme", "http"), (":authority", addr), (":path", path),
                                   ("content-type", "application/grpc"), ("te", "trailers"), *headers])
        conn.send_data(stream, b"\x00" + len(message).to_bytes(4, "big") + message, end_stream=True)
        sock.sendall(conn.data_to_send())
        last_headers = {}
        while data := sock.recv(65536):
            for event in conn.receive_data(data):
                if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    last_headers = dict(event.headers)
                elif isinstance(event, h2.events.StreamEnded):
                    return last_headers
                elif isinstance(event, h2.events.StreamReset):
                    pytest.fail(f"the gateway reset the stream (error {event.error_code}) instead of answering")
            sock.sendall(conn.data_to_send())
    pytest.fail("the gateway closed the connection without ending the stream")


def test_the_gateway_honours_grpc_timeout_itself(gateway, stubs, broken_backend):
    """A backend that never answers, a client that never gives up: grpc-timeout alone ends the call."""
    note = stubs[0].Note(text="x").SerializeToString()
    started = time.monotonic()

    status = raw_grpc_call(gateway.addr(), "/referee.silent.v1.Echo/Unary", note,
                           [("grpc-timeout", "300m"), ("x-ext-authz", "allow")])

    elapsed = time.monotonic() - started
    assert broken_backend[1][-1] == "/referee.silent.v1.Echo/Unary", "the call did not reach the backend"
    assert 0.3 <= elapsed < 2, elapsed
    assert (status.get("grpc-status"), status.get("grpc-message")) == ("14", "upstream request timeout"), status


TLS_CONFIG = """
[[listeners]]
name = "agentgateway-proxy"
address = "127.0.0.1:0"

[[backends]]
name = "echo-tls"
url = "https://localhost:{port}"
tls = {{ ca = "{ca}" }}

[[routes]]
name = "echo"
path = {{ prefix = "/referee.echo.v1.Echo" }}
backend = "echo-tls"

[[authz_backends]]
name = "ext-authz"
url = "{authz}"

[[policies]]
name = "gateway-ext-auth-policy"
target_refs = [{{ kind = "Gateway", name = "agentgateway-proxy" }}]
ext_auth = {{ backend = "ext-authz", grpc = {{}} }}
"""


def test_grpc_over_tls_with_alpn(workdir, stubs, ext_authz):
    """The same service behind TLS (grpcio's own TLS server, which offers only h2): the default
    protocol ("auto") must choose h2 by ALPN and verify the certificate against `tls.ca`."""
    pb2, pb2_grpc = stubs
    ca = TestCA(workdir, "grpc")
    cert, key = ca.issue("echo")
    calls = Calls()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb2_grpc.add_EchoServicer_to_server(make_servicer(pb2, pb2_grpc, calls), server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())]))
    server.start()
    text = TLS_CONFIG.format(port=port, ca=ca.cert_path, authz=f"http://{ext_authz.addr('grpc')}")
    gw = start_gateway(workdir, write_config(workdir, "gateway-grpc-tls", text))
    try:
        with grpc.insecure_channel(gw.addr()) as ch:
            echo = pb2_grpc.EchoStub(ch)
            assert echo.Unary(pb2.Note(text="sealed"), metadata=ALLOW, timeout=10).text == "echo: sealed"
            replies = echo.ServerStream(pb2.Note(text="s", count=3), metadata=ALLOW, timeout=10)
            assert [r.text for r in replies] == ["s #0", "s #1", "s #2"]
            with pytest.raises(grpc.RpcError) as failed:
                echo.Unary(pb2.Note(text=MESSAGE, fail_code=8), metadata=ALLOW, timeout=10)
            assert (failed.value.code(), failed.value.details()) == (grpc.StatusCode.RESOURCE_EXHAUSTED, MESSAGE)
        assert [c["metadata"][RESULT_HEADER] for c in calls.seen] == ["allowed"] * 3
        gw.assert_alive()
    finally:
        gw.stop()
        server.stop(grace=None)


# --- grpcurl through the gateway ------------------------------------------------------------------------


def grpcurl(gateway, *args: str) -> subprocess.CompletedProcess:
    if not Path(GRPCURL).exists():
        pytest.fail(f"{GRPCURL} missing: install tests/interop/requirements.txt (scripts/test does)")
    cmd = [GRPCURL, "-plaintext", "-max-time", "10", *args[:-1], gateway.addr(), args[-1]]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=dict(os.environ))


def test_grpcurl_lists_services_through_reflection(gateway):
    done = grpcurl(gateway, "-H", "x-ext-authz: allow", "list")

    assert done.returncode == 0, done.stderr
    services = done.stdout.split()
    assert SERVICE in services and "grpc.reflection.v1alpha.ServerReflection" in services, services


def test_grpcurl_unary_allowed(gateway):
    done = grpcurl(gateway, "-H", "x-ext-authz: allow", "-d", '{"text": "from grpcurl"}', f"{SERVICE}/Unary")

    assert done.returncode == 0, done.stderr
    assert done.stdout.replace(" ", "").replace("\n", "") == '{"text":"echo:fromgrpcurl"}'


def test_grpcurl_unary_denied(gateway):
    # Reflection is allowed (so grpcurl can learn the method), the call itself is not.
    done = grpcurl(gateway, "-reflect-header", "x-ext-authz: allow", "-d", '{"text": "x"}', f"{SERVICE}/Unary")

    assert done.stdout == ""
    assert done.stderr == f"ERROR:\n  Code: PermissionDenied\n  Message: {DENY_BODY}\n"
    assert done.returncode == 64 + 7  # grpcurl: 64 + the status code


def test_grpcurl_list_denied_without_the_header(gateway):
    done = grpcurl(gateway, "list")

    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"Failed to list services: rpc error: code = PermissionDenied desc = {DENY_BODY}\n"
