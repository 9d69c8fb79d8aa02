"""Check over gRPC with Python grpcio and the xds-protos generated Envoy stubs (v3 and v2).

These stubs come from envoyproxy/data-plane-api, not from our .proto files: if our field numbers or
packages drift, the decoded responses here come out empty or wrong.
"""

from __future__ import annotations

from types import SimpleNamespace

import grpc
import pytest
from envoy.service.auth.v2 import attribute_context_pb2 as ac2
from envoy.service.auth.v2 import external_auth_pb2 as auth2
from envoy.service.auth.v2 import external_auth_pb2_grpc as auth2_grpc
from envoy.service.auth.v3 import attribute_context_pb2 as ac3
from envoy.service.auth.v3 import external_auth_pb2 as auth3
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth3_grpc

from contract import (
    ALLOW_VALUE,
    CHECK_HEADER,
    DENY_BODY,
    OVERRIDE_GRPC_VALUE,
    OVERRIDE_HEADER,
    PRINCIPAL_A,
    PRINCIPAL_B,
    RECEIVED_HEADER,
    RESULT_HEADER,
    THREE_HEADERS,
    TOO_LONG,
)

TIMEOUT_S = 10

V3 = SimpleNamespace(name="v3", auth=auth3, ac=ac3, stub=auth3_grpc.AuthorizationStub)
V2 = SimpleNamespace(name="v2", auth=auth2, ac=ac2, stub=auth2_grpc.AuthorizationStub)


def make_request(api, headers=None, principal=None):
    ac = api.ac.AttributeContext
    attrs = ac(request=ac.Request(http=ac.HttpRequest(headers=headers or {})))
    if principal is not None:
        attrs.source.principal = principal
    return api.auth.CheckRequest(attributes=attrs)


def check(channel, api, request):
    return api.stub(channel).Check(request, timeout=TIMEOUT_S)


def header_map(options) -> dict:
    """HeaderValueOption list -> {key: value}, failing on a duplicated key."""
    out = {}
    for opt in options:
        assert opt.header.key not in out, f"header {opt.header.key!r} returned twice"
        out[opt.header.key] = opt.header.value
    return out


def assert_allowed(resp) -> dict:
    assert resp.status.code == 0, resp
    assert resp.WhichOneof("http_response") == "ok_response", resp
    headers = header_map(resp.ok_response.headers)
    assert set(headers) == THREE_HEADERS
    assert headers[RESULT_HEADER] == "allowed"
    assert headers[OVERRIDE_HEADER] == OVERRIDE_GRPC_VALUE
    assert "\n" not in headers[RECEIVED_HEADER]
    return headers


def assert_denied(resp) -> dict:
    assert resp.status.code == grpc.StatusCode.PERMISSION_DENIED.value[0] == 7, resp
    assert resp.WhichOneof("http_response") == "denied_response", resp
    denied = resp.denied_response
    assert denied.status.code == 403
    assert denied.body == DENY_BODY
    headers = header_map(denied.headers)
    assert set(headers) == THREE_HEADERS
    assert headers[RESULT_HEADER] == "denied"
    assert headers[OVERRIDE_HEADER] == OVERRIDE_GRPC_VALUE
    assert "\n" not in headers[RECEIVED_HEADER]
    return headers


@pytest.fixture(params=[V3, V2], ids=lambda api: api.name)
def api(request):
    return request.param


def test_allow_by_header(grpc_channel, api):
    headers = assert_allowed(check(grpc_channel, api, make_request(api, {CHECK_HEADER: ALLOW_VALUE})))
    # The dump of the received attributes mentions what we sent.
    assert CHECK_HEADER in headers[RECEIVED_HEADER]
    assert ALLOW_VALUE in headers[RECEIVED_HEADER]


def test_deny_without_header(grpc_channel, api):
    assert_denied(check(grpc_channel, api, make_request(api, {":path": "/get", "other": "x"})))


def test_header_value_is_case_sensitive(grpc_channel, api):
    assert_denied(check(grpc_channel, api, make_request(api, {CHECK_HEADER: "Allow"})))


@pytest.mark.parametrize("value", ["deny", "allow ", " allow", "", "allow,allow"])
def test_other_header_values_deny(grpc_channel, value):
    assert_denied(check(grpc_channel, V3, make_request(V3, {CHECK_HEADER: value})))


def test_principal_fallback_allows_sa_a(grpc_channel, api):
    assert_allowed(check(grpc_channel, api, make_request(api, {}, principal=PRINCIPAL_A)))


def test_principal_fallback_denies_sa_b(grpc_channel, api):
    assert_denied(check(grpc_channel, api, make_request(api, {}, principal=PRINCIPAL_B)))


@pytest.mark.parametrize(
    "principal",
    ["spiffe://cluster.local/ns/default/sa/ab", "spiffe://cluster.local/ns/default/sa/a/x", "sa/a", ""],
)
def test_principal_must_end_with_sa_a(grpc_channel, principal):
    assert_denied(check(grpc_channel, V3, make_request(V3, {}, principal=principal)))


def test_header_present_but_wrong_decides_alone(grpc_channel, api):
    # The principal would allow, but a present header is the only thing that counts.
    req = make_request(api, {CHECK_HEADER: "nope"}, principal=PRINCIPAL_A)
    assert_denied(check(grpc_channel, api, req))


def test_header_allow_with_sa_b_principal(grpc_channel, api):
    req = make_request(api, {CHECK_HEADER: ALLOW_VALUE}, principal=PRINCIPAL_B)
    assert_allowed(check(grpc_channel, api, req))


def test_empty_request_is_a_deny_not_an_error(grpc_channel, api):
    assert_denied(check(grpc_channel, api, api.auth.CheckRequest()))


def test_check_received_mentions_sent_header(grpc_channel, api):
    marker = "interop-marker-7f3a"
    headers = assert_denied(check(grpc_channel, api, make_request(api, {"x-probe": marker})))
    assert "x-probe" in headers[RECEIVED_HEADER]
    assert marker in headers[RECEIVED_HEADER]


@pytest.mark.parametrize("allowed", [True, False], ids=["allow", "deny"])
def test_oversized_attributes_are_capped(grpc_channel, api, allowed):
    big = {"x-big": "b" * 70_000}
    if allowed:
        big[CHECK_HEADER] = ALLOW_VALUE
    resp = check(grpc_channel, api, make_request(api, big))
    headers = assert_allowed(resp) if allowed else assert_denied(resp)
    assert headers[RECEIVED_HEADER] == TOO_LONG


def test_small_attributes_are_not_capped(grpc_channel):
    resp = check(grpc_channel, V3, make_request(V3, {"x-mid": "m" * 50_000, CHECK_HEADER: ALLOW_VALUE}))
    headers = assert_allowed(resp)
    assert headers[RECEIVED_HEADER] != TOO_LONG
    assert "m" * 50_000 in headers[RECEIVED_HEADER]


def test_full_envoy_shaped_request(grpc_channel):
    """A request filled the way Envoy fills it: peers, pseudo-headers, body, context extensions."""
    ac = ac3.AttributeContext
    attrs = ac(
        source=ac.Peer(principal=PRINCIPAL_B),
        destination=ac.Peer(principal="spiffe://cluster.local/ns/default/sa/httpbin"),
        request=ac.Request(
            http=ac.HttpRequest(
                id="1234",
                method="POST",
                headers={":authority": "example.com", ":method": "POST", ":path": "/post?q=1", CHECK_HEADER: "allow"},
                path="/post?q=1",
                host="example.com",
                scheme="http",
                protocol="HTTP/1.1",
                size=5,
                body="hello",
            )
        ),
        context_extensions={"route": "r1"},
    )
    attrs.source.address.socket_address.address = "10.0.0.1"
    attrs.source.address.socket_address.port_value = 51000
    attrs.request.time.GetCurrentTime()
    headers = assert_allowed(check(grpc_channel, V3, auth3.CheckRequest(attributes=attrs)))
    assert "example.com" in headers[RECEIVED_HEADER]


def test_many_sequential_checks_on_one_channel(grpc_channel):
    stub = auth3_grpc.AuthorizationStub(grpc_channel)
    for i in range(50):
        allow = i % 2 == 0
        req = make_request(V3, {CHECK_HEADER: ALLOW_VALUE} if allow else {"n": str(i)})
        resp = stub.Check(req, timeout=TIMEOUT_S)
        assert resp.status.code == (0 if allow else 7)
