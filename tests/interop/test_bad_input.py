"""Malformed and oversized gRPC requests, sent as raw bytes: a clear gRPC error, never a crash."""

from __future__ import annotations

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2 as auth3

from contract import V2_SERVICE, V3_SERVICE

TIMEOUT_S = 10


def raw_check(channel, service: str):
    identity = lambda b: b  # noqa: E731
    return channel.unary_unary(f"/{service}/Check", request_serializer=identity, response_deserializer=identity)


def allow_request() -> bytes:
    req = auth3.CheckRequest()
    req.attributes.request.http.headers["x-ext-authz"] = "allow"
    return req.SerializeToString()


def assert_next_call_works(channel):
    resp = auth3.CheckResponse.FromString(raw_check(channel, V3_SERVICE)(allow_request(), timeout=TIMEOUT_S))
    assert resp.status.code == 0
    assert resp.WhichOneof("http_response") == "ok_response"


GARBAGE = {
    # Field 1 (attributes), length-delimited, claiming 2^35 bytes.
    "truncated-length": b"\x0a\xff\xff\xff\xff\x7f",
    # Tag with the reserved wire type 7.
    "bad-wire-type": b"\x0f\x01\x02",
    # Field 1 says 10 bytes, 3 follow.
    "short-submessage": b"\x0a\x0a\x01\x02\x03",
    # A varint that never ends.
    "endless-varint": b"\x08" + b"\xff" * 11,
}


@pytest.mark.parametrize("service", [V3_SERVICE, V2_SERVICE])
@pytest.mark.parametrize("payload", list(GARBAGE.values()), ids=list(GARBAGE))
def test_garbage_is_invalid_argument(grpc_channel, server, service, payload):
    with pytest.raises(grpc.RpcError) as err:
        raw_check(grpc_channel, service)(payload, timeout=TIMEOUT_S)
    code, details = err.value.code(), err.value.details()
    assert code == grpc.StatusCode.INVALID_ARGUMENT, f"got {code.name}: {details}"
    server.assert_alive()
    assert_next_call_works(grpc_channel)


def test_empty_bytes_are_an_empty_request(grpc_channel):
    # Zero bytes are a valid, empty CheckRequest: a deny decision, not an error.
    resp = auth3.CheckResponse.FromString(raw_check(grpc_channel, V3_SERVICE)(b"", timeout=TIMEOUT_S))
    assert resp.status.code == 7


def test_unknown_fields_are_ignored(grpc_channel):
    # Field 99 (varint) is not in CheckRequest: proto3 parsers skip it, as Envoy's newer fields would be.
    resp = auth3.CheckResponse.FromString(
        raw_check(grpc_channel, V3_SERVICE)(allow_request() + b"\x98\x06\x01", timeout=TIMEOUT_S)
    )
    assert resp.status.code == 0


def test_oversized_message_is_resource_exhausted(grpc_channel, server):
    req = auth3.CheckRequest()
    req.attributes.request.http.body = "x" * (5 * 1024 * 1024)
    with pytest.raises(grpc.RpcError) as err:
        raw_check(grpc_channel, V3_SERVICE)(req.SerializeToString(), timeout=30)
    code, details = err.value.code(), err.value.details()
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, f"got {code.name}: {details}"
    server.assert_alive()
    assert_next_call_works(grpc_channel)


def test_unknown_method_is_unimplemented(grpc_channel):
    with pytest.raises(grpc.RpcError) as err:
        grpc_channel.unary_unary(
            f"/{V3_SERVICE}/NoSuchMethod", request_serializer=lambda b: b, response_deserializer=lambda b: b
        )(b"", timeout=TIMEOUT_S)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert_next_call_works(grpc_channel)
