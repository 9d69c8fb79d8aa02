#!/usr/bin/env python3
"""Writes the committed seed corpora under fuzz/corpus/<target>/ from what the repo ships:
the configs under config/, the conformance cases' policies and requests, and Envoy-shaped
CheckRequest/CheckResponse messages built with the xds-protos stubs (the venv scripts/test
makes). Rerun after changing it:  .venv/bin/python fuzz/seeds/make_seeds.py
"""

import hashlib
import pathlib
import tomllib

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import attribute_context_pb2 as ac
from envoy.service.auth.v3 import external_auth_pb2 as ea
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2, wrappers_pb2
from google.rpc import status_pb2

ROOT = pathlib.Path(__file__).resolve().parents[2]
CORPUS = ROOT / "fuzz" / "corpus"


def put(target: str, data: bytes) -> None:
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    (directory / hashlib.sha1(data).hexdigest()).write_bytes(data)


cases = sorted((ROOT / "rules" / "tests" / "cases").glob("*.toml"))
loaded = [tomllib.loads(p.read_text()) for p in cases]

# rules_config: the shipped policies and every inline conformance policy.
for name in ["istio-ext-authz.toml", "api-keys.toml", "jwt.toml"]:
    put("rules_config", (ROOT / "config" / name).read_bytes())
put("rules_config", (ROOT / "fuzz" / "fuzz_targets" / "common" / "policy.toml").read_bytes())
for case in loaded:
    if "config" in case:
        put("rules_config", case["config"].encode())

# gateway_config: the shipped gateway configs.
for name in ["gateway.toml", "gateway.compose.toml"]:
    put("gateway_config", (ROOT / "config" / name).read_bytes())


# check_request: each conformance case's request as the CheckRequest Envoy would send.
def check_request(request: dict) -> ea.CheckRequest:
    def text(v):
        if isinstance(v, dict):
            return v["repeat"] * min(v["count"], 100)
        return v

    http = ac.AttributeContext.HttpRequest(
        method=request.get("method", "GET"),
        path=text(request.get("path", "/")),
        host=request.get("host", ""),
        scheme=request.get("scheme", ""),
        protocol=request.get("protocol", "HTTP/1.1"),
        body=text(request.get("body", "")),
    )
    for k, v in request.get("headers", {}).items():
        http.headers[k.lower()] = text(v)
    attributes = ac.AttributeContext(request=ac.AttributeContext.Request(http=http))
    attributes.source.principal = request.get("principal", "")
    if "source_ip" in request:
        attributes.source.address.socket_address.address = request["source_ip"]
        attributes.source.address.socket_address.port_value = 40000
    if "destination_ip" in request:
        attributes.destination.address.socket_address.address = request["destination_ip"]
    for k, v in request.get("context_extensions", {}).items():
        attributes.context_extensions[k] = v
    return ea.CheckRequest(attributes=attributes)


for case in loaded:
    put("check_request", check_request(case.get("request", {})).SerializeToString())
jwt = check_request({"path": "/jwt/x", "headers": {"authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"}})
put("check_request", jwt.SerializeToString())
tenant = check_request({"path": "/t?api_key=1", "host": "a.example.com", "headers": {"x-echo": "v"},
                        "context_extensions": {"tenant": "acme"}})
put("check_request", tenant.SerializeToString())

# grpc_response: the answers authz-server gives, and a few Envoy documents.
def header(key, value, append=None, action=0):
    option = base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value), append_action=action)
    if append is not None:
        option.append.CopyFrom(wrappers_pb2.BoolValue(value=append))
    return option


ok = ea.CheckResponse(status=status_pb2.Status(code=0))
ok.ok_response.headers.extend([header("x-a", "1"), header("x-b", "2", append=True), header("x-c", "3", action=1),
                               header(":path", "/evil"), header("x-d", "4", action=3)])
ok.ok_response.headers_to_remove.extend(["x-debug", "host", ":authority"])
ok.ok_response.response_headers_to_add.extend([header("x-r", "1", action=2), header("set-cookie", "a=1")])
ok.ok_response.query_parameters_to_set.add(key="tenant", value="acme")
ok.ok_response.query_parameters_to_remove.append("api_key")
ok.dynamic_metadata.update({"team": "a", "n": 1, "nested": {"k": [1, "x", None, True]}})
put("grpc_response", ok.SerializeToString())
put("grpc_response", ea.CheckResponse().SerializeToString())
denied = ea.CheckResponse(status=status_pb2.Status(code=7))
denied.denied_response.status.code = http_status_pb2.Forbidden
denied.denied_response.headers.extend([header("set-cookie", "a=1"), header("set-cookie", "b=2"),
                                       header("content-length", "99"), header("x-ext-authz-check-result", "denied")])
denied.denied_response.body = "denied by ext_authz for not found header `x-ext-authz: allow` in the request"
put("grpc_response", denied.SerializeToString())
error = ea.CheckResponse(status=status_pb2.Status(code=14))
error.error_response.status.code = 503
error.error_response.body = "down"
put("grpc_response", error.SerializeToString())

# http_response: answers as text (status line, header lines, blank line, body).
for text in [
    "200\nx-user: alice\nx-a: 1\nx-envoy-auth-headers-to-remove: x-debug, host, :path\nx-served-by: authz\n\n",
    "403\ncontent-type: text/plain\nset-cookie: a=1\nset-cookie: b=2\ncontent-length: 5\nconnection: close\nhost: x\n\ndenied",
    "401\nwww-authenticate: Bearer\nx-reason: token\n\n",
    "503\n\nunavailable",
    "302\nlocation: https://login.example/\n\n",
]:
    put("http_response", text.encode())

# canonical_request: a flags byte (see the target) then a request head as text.
for flags, text in [
    (0b0000_0011, "GET /a/b?x=1\nhost: example.com\n"),
    (0b0000_0001, "GET //admin/./x/../y%2Fz?q#f\nhost: Example.COM.:80\n"),
    (0b0001_0101, "POST /%61dmin/%2e%2e/x\nhost: a.example:8080\nx-forwarded-for: 1.2.3.4, 10.0.0.1\nconnection: host, x-role\nx-role: admin\n"),
    (0b0100_0011, "GET https://a.example:443/x\nhost: a.example\n"),
    (0b1000_1011, "OPTIONS *\nhost: [::1]:8443\n"),
    (0b0000_0011, "GET http://evil.example/x\nhost: good.example\nhost: other.example\n"),
]:
    put("canonical_request", bytes([flags]) + text.encode())
