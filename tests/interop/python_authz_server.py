"""An Envoy ext_authz server nobody on this project wrote: Python grpcio + the `xds-protos` generated stubs.

It serves `envoy.service.auth.v3.Authorization/Check` in-process on a free loopback port, answers each
request with whatever behaviour the current test set, and records every CheckRequest it received. The
response builders below use only the data-plane-api messages, so what the gateway has to apply is exactly
what an Envoy-compatible server would send it.

    server = PythonAuthzServer()
    server.behave(lambda req, ctx: ok(headers=[header("x-user", "alice")]))
    ... drive the gateway ...
    server.requests[-1].attributes.request.http.path
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2 as auth
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth_grpc
from google.protobuf import wrappers_pb2
from google.rpc import status_pb2

Behaviour = Callable[[auth.CheckRequest, grpc.ServicerContext], auth.CheckResponse]

APPEND_IF_EXISTS_OR_ADD = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
ADD_IF_ABSENT = base_pb2.HeaderValueOption.ADD_IF_ABSENT
OVERWRITE_IF_EXISTS_OR_ADD = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
OVERWRITE_IF_EXISTS = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS


class PythonAuthzServer:
    """The gRPC server and its per-test behaviour; `requests` holds what it was asked, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._behaviour: Behaviour = _unset_behaviour
        self._requests: List[auth.CheckRequest] = []
        self._metadata: List[Tuple[Tuple[str, str], ...]] = []
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        auth_grpc.add_AuthorizationServicer_to_server(_Servicer(self), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.addr = f"127.0.0.1:{self.port}"
        self._server.start()

    def behave(self, behaviour: Behaviour) -> None:
        """Answer every following Check with `behaviour(request, context)`."""
        with self._lock:
            self._behaviour = behaviour

    def reset(self) -> None:
        with self._lock:
            self._behaviour = _unset_behaviour
            self._requests.clear()
            self._metadata.clear()

    @property
    def requests(self) -> List[auth.CheckRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def metadata(self) -> List[Tuple[Tuple[str, str], ...]]:
        """The gRPC call metadata (invocation metadata) of each Check, in order."""
        with self._lock:
            return list(self._metadata)

    def stop(self) -> None:
        self._server.stop(grace=None).wait(5)


class _Servicer(auth_grpc.AuthorizationServicer):
    def __init__(self, owner: PythonAuthzServer) -> None:
        self._owner = owner

    def Check(self, request, context):  # noqa: N802 (the generated method name)
        owner = self._owner
        with owner._lock:
            owner._requests.append(request)
            owner._metadata.append(tuple(context.invocation_metadata()))
            behaviour = owner._behaviour
        return behaviour(request, context)


def _unset_behaviour(request, context):
    # A test that forgot to set a behaviour must not pass by accident: deny loudly.
    return denied(http_status=500, body="python authz server: no behaviour set for this test")


# --- response builders (data-plane-api messages only) ---------------------------------------------------


def header(key: str, value: str, append: Optional[bool] = None, action: Optional[int] = None):
    """A HeaderValueOption; `append` None leaves the BoolValue unset (Envoy tells unset from false)."""
    opt = base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value))
    if append is not None:
        opt.append.CopyFrom(wrappers_pb2.BoolValue(value=append))
    if action is not None:
        opt.append_action = action
    return opt


def ok(
    headers: Sequence = (),
    headers_to_remove: Iterable[str] = (),
    response_headers_to_add: Sequence = (),
    query_parameters_to_set: Sequence[Tuple[str, str]] = (),
    query_parameters_to_remove: Iterable[str] = (),
) -> auth.CheckResponse:
    return auth.CheckResponse(
        status=status_pb2.Status(code=0),
        ok_response=auth.OkHttpResponse(
            headers=list(headers),
            headers_to_remove=list(headers_to_remove),
            response_headers_to_add=list(response_headers_to_add),
            query_parameters_to_set=[base_pb2.QueryParameter(key=k, value=v) for k, v in query_parameters_to_set],
            query_parameters_to_remove=list(query_parameters_to_remove),
        ),
    )


def denied(
    code: int = grpc.StatusCode.PERMISSION_DENIED.value[0],
    http_status: Optional[int] = None,
    headers: Sequence = (),
    body: str = "",
) -> auth.CheckResponse:
    """A deny: a successful RPC whose status is not OK, with a denied_response."""
    resp = auth.CheckResponse(status=status_pb2.Status(code=code))
    resp.denied_response.SetInParent()
    if http_status is not None:
        resp.denied_response.status.code = http_status
    resp.denied_response.headers.extend(headers)
    resp.denied_response.body = body
    return resp


def status_only(code: int) -> auth.CheckResponse:
    """A non-OK status and nothing else (no denied_response)."""
    return auth.CheckResponse(status=status_pb2.Status(code=code))


def respond(response: auth.CheckResponse) -> Behaviour:
    return lambda request, context: response


def sleep_then(seconds: float, response: auth.CheckResponse) -> Behaviour:
    """Answer only after `seconds` (past the gateway's timeout, the answer must be ignored)."""

    def behaviour(request, context):
        time.sleep(seconds)
        return response

    return behaviour


def grpc_error(code: grpc.StatusCode, message: str) -> Behaviour:
    """Fail the RPC itself: an error, not a deny."""

    def behaviour(request, context):
        context.abort(code, message)

    return behaviour
