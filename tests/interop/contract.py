"""What the default configuration must answer: the Istio `ext-authz` test service, byte for byte.

Kept in one place so every suite asserts the same strings.
"""

CHECK_HEADER = "x-ext-authz"
ALLOW_VALUE = "allow"

RESULT_HEADER = "x-ext-authz-check-result"
RECEIVED_HEADER = "x-ext-authz-check-received"
OVERRIDE_HEADER = "x-ext-authz-additional-header-override"
OVERRIDE_GRPC_VALUE = "grpc-additional-header-override-value"

THREE_HEADERS = {RESULT_HEADER, RECEIVED_HEADER, OVERRIDE_HEADER}

DENY_BODY = "denied by ext_authz for not found header `x-ext-authz: allow` in the request"
assert len(DENY_BODY.encode()) == 76

TOO_LONG = "<too-long>"
# Over this many bytes the received-attributes dump is replaced by TOO_LONG.
RECEIVED_CAP = 60000

PRINCIPAL_A = "spiffe://cluster.local/ns/default/sa/a"
PRINCIPAL_B = "spiffe://cluster.local/ns/default/sa/b"

V3_SERVICE = "envoy.service.auth.v3.Authorization"
V2_SERVICE = "envoy.service.auth.v2.Authorization"
HEALTH_SERVICE = "grpc.health.v1.Health"
