"""grpc.health.v1.Health through grpcio-health-checking's generated client."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from contract import V2_SERVICE, V3_SERVICE

SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("service", ["", V3_SERVICE])
def test_reports_serving(grpc_channel, service):
    resp = health_pb2_grpc.HealthStub(grpc_channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=10
    )
    assert resp.status == SERVING, health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


def test_v2_service_reports_serving(grpc_channel):
    # v2 is served too (for old Envoys), so a per-service probe for it must not say NOT_FOUND.
    resp = health_pb2_grpc.HealthStub(grpc_channel).Check(
        health_pb2.HealthCheckRequest(service=V2_SERVICE), timeout=10
    )
    assert resp.status == SERVING


def test_unknown_service_is_not_found(grpc_channel):
    with pytest.raises(grpc.RpcError) as err:
        health_pb2_grpc.HealthStub(grpc_channel).Check(
            health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_watch_streams_serving(grpc_channel):
    stream = health_pb2_grpc.HealthStub(grpc_channel).Watch(
        health_pb2.HealthCheckRequest(service=V3_SERVICE), timeout=10
    )
    try:
        first = next(stream)
        assert first.status == SERVING
    finally:
        stream.cancel()
