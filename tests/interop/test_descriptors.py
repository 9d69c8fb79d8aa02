"""Our descriptors, fetched through gRPC server reflection, against envoyproxy/data-plane-api's (xds-protos).

Our .proto files are a trimmed copy of Envoy's. Trimming may drop whole messages or fields, but every
message, field, enum value and method we *do* define must be Envoy's exactly: same name, number, type,
label and type name. A difference there silently changes the wire format, so each one is reported.
"""

from __future__ import annotations

import importlib

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2

# Importing the generated modules registers their files (and imports) in the default pool.
import envoy.service.auth.v2.external_auth_pb2  # noqa: F401
import envoy.service.auth.v3.external_auth_pb2  # noqa: F401

from contract import HEALTH_SERVICE, V2_SERVICE, V3_SERVICE

TIMEOUT_S = 10

# Both reflection protocol versions share one message layout; only the service path differs.
# grpcurl 1.8 speaks v1alpha; newer grpcurl, grpcui and Postman try v1 first.
REFLECTION_METHODS = {
    "v1alpha": "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "v1": "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
}


def reflect(channel, requests, version="v1alpha"):
    call = channel.stream_stream(
        REFLECTION_METHODS[version],
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    responses = list(call(iter(requests), timeout=TIMEOUT_S))
    assert len(responses) == len(requests)
    for resp in responses:
        assert resp.WhichOneof("message_response") != "error_response", resp.error_response
    return responses


def fetch_files(channel, symbol: str) -> dict:
    """All FileDescriptorProtos reachable from the file defining `symbol`, by file name."""
    files: dict = {}
    (resp,) = reflect(channel, [reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)])
    pending = list(resp.file_descriptor_response.file_descriptor_proto)
    while pending:
        fdp = descriptor_pb2.FileDescriptorProto.FromString(pending.pop())
        if fdp.name in files:
            continue
        files[fdp.name] = fdp
        for dep in fdp.dependency:
            if dep not in files:
                (dep_resp,) = reflect(channel, [reflection_pb2.ServerReflectionRequest(file_by_filename=dep)])
                pending.extend(dep_resp.file_descriptor_response.file_descriptor_proto)
    return files


def reference_file(name: str):
    """Envoy's FileDescriptor with this file name, from xds-protos (or protobuf's well-known types)."""
    pool = descriptor_pool.Default()
    try:
        return pool.FindFileByName(name)
    except KeyError:
        pass
    try:
        importlib.import_module(name.removesuffix(".proto").replace("/", ".") + "_pb2")
        return pool.FindFileByName(name)
    except (ImportError, KeyError):
        return None


def reference_message(full_name: str):
    try:
        proto = descriptor_pb2.DescriptorProto()
        descriptor_pool.Default().FindMessageTypeByName(full_name).CopyToProto(proto)
        return proto
    except KeyError:
        return None


def reference_enum(full_name: str):
    try:
        proto = descriptor_pb2.EnumDescriptorProto()
        descriptor_pool.Default().FindEnumTypeByName(full_name).CopyToProto(proto)
        return proto
    except KeyError:
        return None


FIELD_TYPE = descriptor_pb2.FieldDescriptorProto.Type.Name
FIELD_LABEL = descriptor_pb2.FieldDescriptorProto.Label.Name


def compare_enum(ours, full_name: str, problems: list) -> None:
    ref = reference_enum(full_name)
    if ref is None:
        problems.append(f"enum {full_name}: not in xds-protos")
        return
    ref_values = {v.name: v.number for v in ref.value}
    for v in ours.value:
        if v.name not in ref_values:
            problems.append(f"enum {full_name}: value {v.name}={v.number} not in xds-protos")
        elif ref_values[v.name] != v.number:
            problems.append(f"enum {full_name}: value {v.name} is {v.number}, xds-protos has {ref_values[v.name]}")


def compare_message(ours, full_name: str, problems: list) -> int:
    """Compare one message (and, recursively, its nested types); return how many fields were checked."""
    ref = reference_message(full_name)
    if ref is None:
        problems.append(f"message {full_name}: not in xds-protos")
        return 0
    ref_fields = {f.number: f for f in ref.field}
    checked = 0
    for f in ours.field:
        where = f"{full_name}.{f.name} (#{f.number})"
        r = ref_fields.get(f.number)
        if r is None:
            problems.append(f"{where}: xds-protos has no field number {f.number}")
            continue
        checked += 1
        for attr, show in (("name", str), ("type", FIELD_TYPE), ("label", FIELD_LABEL), ("type_name", str)):
            mine, theirs = getattr(f, attr), getattr(r, attr)
            if mine != theirs:
                problems.append(f"{where}: {attr} is {show(mine)!r}, xds-protos has {show(theirs)!r}")
        if f.HasField("oneof_index") != r.HasField("oneof_index"):
            problems.append(f"{where}: oneof membership differs from xds-protos")
        elif f.HasField("oneof_index") and not f.proto3_optional:
            mine = ours.oneof_decl[f.oneof_index].name
            theirs = ref.oneof_decl[r.oneof_index].name
            if mine != theirs:
                problems.append(f"{where}: in oneof {mine!r}, xds-protos has {theirs!r}")
    if ours.options.map_entry != ref.options.map_entry:
        problems.append(f"message {full_name}: map_entry differs from xds-protos")
    for nested in ours.nested_type:
        checked += compare_message(nested, f"{full_name}.{nested.name}", problems)
    for enum in ours.enum_type:
        compare_enum(enum, f"{full_name}.{enum.name}", problems)
    return checked


def compare_file(fdp, problems: list) -> int:
    ref = reference_file(fdp.name)
    if ref is None:
        problems.append(f"file {fdp.name}: no such file in xds-protos")
    elif ref.package != fdp.package:
        problems.append(f"file {fdp.name}: package {fdp.package!r}, xds-protos has {ref.package!r}")
    prefix = f"{fdp.package}." if fdp.package else ""
    checked = 0
    for msg in fdp.message_type:
        checked += compare_message(msg, prefix + msg.name, problems)
    for enum in fdp.enum_type:
        compare_enum(enum, prefix + enum.name, problems)
    return checked


@pytest.mark.parametrize("service", [V3_SERVICE, V2_SERVICE])
def test_every_message_matches_envoy(grpc_channel, service):
    files = fetch_files(grpc_channel, service)
    assert any(name.startswith("envoy/service/auth/") for name in files), sorted(files)
    problems: list = []
    checked = sum(compare_file(fdp, problems) for fdp in files.values())
    assert not problems, f"{len(problems)} mismatches against xds-protos:\n" + "\n".join(problems)
    # Guard against comparing nothing (e.g. reflection returning empty files).
    assert checked >= 30, f"only {checked} fields compared across {sorted(files)}"


@pytest.mark.parametrize("service", [V3_SERVICE, V2_SERVICE])
def test_service_matches_envoy(grpc_channel, service):
    files = fetch_files(grpc_channel, service)
    package, _, name = service.rpartition(".")
    ours = [
        s for fdp in files.values() if fdp.package == package for s in fdp.service if s.name == name
    ]
    assert len(ours) == 1, f"service {service} defined {len(ours)} times"
    ref = descriptor_pb2.ServiceDescriptorProto()
    descriptor_pool.Default().FindServiceByName(service).CopyToProto(ref)
    methods = lambda svc: {  # noqa: E731
        m.name: (m.input_type, m.output_type, m.client_streaming, m.server_streaming) for m in svc.method
    }
    assert methods(ours[0]) == methods(ref)
    assert methods(ours[0])["Check"] == (f".{package}.CheckRequest", f".{package}.CheckResponse", False, False)


@pytest.mark.parametrize("version", ["v1alpha", "v1"])
def test_reflection_lists_services(grpc_channel, version):
    (resp,) = reflect(grpc_channel, [reflection_pb2.ServerReflectionRequest(list_services="")], version)
    names = {s.name for s in resp.list_services_response.service}
    assert {V3_SERVICE, V2_SERVICE, HEALTH_SERVICE} <= names, names
    assert any(n.startswith("grpc.reflection.") for n in names), names


def test_reflection_resolves_nested_symbol(grpc_channel):
    files = fetch_files(grpc_channel, "envoy.service.auth.v3.AttributeContext.HttpRequest")
    assert "envoy/service/auth/v3/attribute_context.proto" in files


def test_reflection_unknown_symbol_is_not_found(grpc_channel):
    """NOT_FOUND, either in-stream (reflection.proto's ErrorResponse, as grpc-go/grpc-java answer) or as the
    stream's status (tonic-reflection's way). Both tell a client clearly; anything else is a bug."""
    call = grpc_channel.stream_stream(
        REFLECTION_METHODS["v1alpha"],
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol="no.such.Thing")
    try:
        responses = list(call(iter([request]), timeout=TIMEOUT_S))
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.NOT_FOUND, f"got {err.code().name}: {err.details()}"
        return
    assert len(responses) == 1
    assert responses[0].WhichOneof("message_response") == "error_response", responses[0]
    assert responses[0].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
