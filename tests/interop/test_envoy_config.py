"""deploy/envoy: each bootstrap parses as Envoy's own `envoy.config.bootstrap.v3.Bootstrap` (the
`xds-protos` package: unknown fields and unresolvable `@type`s are errors) and carries the ext_authz
settings the README promises. The per-route snippet in deploy/envoy/README.md is parsed too."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from google.protobuf import json_format

# Every message an `@type` in these files names must be registered before parsing an Any.
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401  (registers Router)
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.v3 import http_status_pb2

from conftest import SERVER_BIN
from deploy_support import DEPLOY, validated_blocks

ENVOY = DEPLOY / "envoy"


def parse(message, data: dict):
    """Strict parse: json_format raises on any field the message does not have."""
    return json_format.ParseDict(data, message, ignore_unknown_fields=False)


def load_bootstrap(name: str) -> bootstrap_pb2.Bootstrap:
    with open(ENVOY / name) as f:
        return parse(bootstrap_pb2.Bootstrap(), yaml.safe_load(f))


def connection_manager(bootstrap) -> hcm_pb2.HttpConnectionManager:
    (listener,) = bootstrap.static_resources.listeners
    assert listener.address.socket_address.port_value == 8080
    (chain,) = listener.filter_chains
    (network_filter,) = chain.filters
    hcm = hcm_pb2.HttpConnectionManager()
    assert network_filter.typed_config.Unpack(hcm)
    return hcm


def ext_authz_filter(hcm) -> ext_authz_pb2.ExtAuthz:
    names = [f.name for f in hcm.http_filters]
    assert names == ["envoy.filters.http.ext_authz", "envoy.filters.http.router"], names
    config = ext_authz_pb2.ExtAuthz()
    assert hcm.http_filters[0].typed_config.Unpack(config)
    return config


def per_route(route) -> ext_authz_pb2.ExtAuthzPerRoute:
    per = ext_authz_pb2.ExtAuthzPerRoute()
    assert route.typed_per_filter_config["envoy.filters.http.ext_authz"].Unpack(per)
    return per


def cluster(bootstrap, name: str):
    (found,) = [c for c in bootstrap.static_resources.clusters if c.name == name]
    return found


def endpoint(c) -> tuple:
    (locality,) = c.load_assignment.endpoints
    (lb,) = locality.lb_endpoints
    address = lb.endpoint.address.socket_address
    return address.address, address.port_value


def test_grpc_bootstrap_checks_every_request_over_grpc_v3():
    bootstrap = load_bootstrap("envoy-grpc.yaml")
    hcm = connection_manager(bootstrap)
    authz = ext_authz_filter(hcm)
    assert authz.WhichOneof("services") == "grpc_service"
    assert authz.grpc_service.envoy_grpc.cluster_name == "ext_authz"
    assert authz.grpc_service.timeout.ToMilliseconds() == 200
    assert authz.transport_api_version == config_source_pb2.V3
    assert authz.failure_mode_allow is False
    assert authz.status_on_error.code == http_status_pb2.ServiceUnavailable
    assert authz.with_request_body.max_request_bytes == 8192
    assert authz.with_request_body.allow_partial_message is True
    assert authz.with_request_body.pack_as_bytes is False
    assert authz.include_peer_certificate is True

    upstream = cluster(bootstrap, "ext_authz")
    assert endpoint(upstream) == ("authz-server", 9000)
    options = http_protocol_options_pb2.HttpProtocolOptions()
    assert upstream.typed_extension_protocol_options[
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ].Unpack(options)
    assert options.explicit_http_config.HasField("http2_protocol_options"), "gRPC needs HTTP/2"
    assert upstream.health_checks[0].HasField("grpc_health_check")
    assert endpoint(cluster(bootstrap, "demo_backend")) == ("demo-backend", 9100)


def test_grpc_bootstrap_routes_disable_health_and_name_the_openai_route():
    hcm = connection_manager(load_bootstrap("envoy-grpc.yaml"))
    (vhost,) = hcm.route_config.virtual_hosts
    routes = {r.match.path or r.match.prefix: r for r in vhost.routes}
    assert per_route(routes["/healthz"]).disabled is True
    openai = per_route(routes["/openai"])
    assert dict(openai.check_settings.context_extensions) == {"route": "openai"}
    assert "envoy.filters.http.ext_authz" not in routes["/"].typed_per_filter_config


def test_http_bootstrap_sends_the_headers_rules_need_and_passes_ours_on():
    bootstrap = load_bootstrap("envoy-http.yaml")
    authz = ext_authz_filter(connection_manager(bootstrap))
    assert authz.WhichOneof("services") == "http_service"
    service = authz.http_service
    assert service.server_uri.uri == "http://authz-server:8000"
    assert service.server_uri.cluster == "ext_authz_http"
    assert service.server_uri.timeout.ToMilliseconds() == 200
    assert endpoint(cluster(bootstrap, "ext_authz_http")) == ("authz-server", 8000)
    assert authz.failure_mode_allow is False
    assert authz.status_on_error.code == http_status_pb2.ServiceUnavailable

    sent = {p.exact for p in authz.allowed_headers.patterns}
    # The Istio-compatible default decides on x-ext-authz; config/api-keys.toml on x-ai-api-key.
    assert {"x-ext-authz", "x-ai-api-key", "x-request-id"} <= sent
    upstream = {p.exact for p in service.authorization_response.allowed_upstream_headers.patterns}
    assert upstream == {
        "x-ext-authz-check-result",
        "x-ext-authz-additional-header-override",
        "x-ext-authz-check-received",
        "x-user-id",
        "x-plan",
    }
    client = {p.exact for p in service.authorization_response.allowed_client_headers.patterns}
    assert {"content-type", "www-authenticate", "x-ext-authz-check-result"} <= client
    assert authz.with_request_body.max_request_bytes == 8192


def test_readme_per_route_snippet_is_a_valid_virtual_host():
    blocks = [b for b in validated_blocks(ENVOY / "README.md") if b[0] == "envoy.config.route.v3.VirtualHost"]
    assert blocks, "deploy/envoy/README.md has no VirtualHost block"
    for type_name, code, line in blocks:
        vhost = parse(route_components_pb2.VirtualHost(), yaml.safe_load(code))
        flags = {r.match.path or r.match.prefix: per_route(r) for r in vhost.routes}
        assert flags["/healthz"].disabled is True
        assert dict(flags["/openai"].check_settings.context_extensions) == {"route": "openai"}
    # The README's routes are the bootstrap's first routes, not a drifting copy.
    (bootstrap_vhost,) = connection_manager(load_bootstrap("envoy-grpc.yaml")).route_config.virtual_hosts
    assert list(vhost.routes) == list(bootstrap_vhost.routes[: len(vhost.routes)])


@pytest.mark.parametrize("field", ["with_request_bodyy", "failure_mode_allows"])
def test_a_misspelt_field_is_refused(field):
    """The check above would catch a typo: the same parser refuses an unknown field."""
    with open(ENVOY / "envoy-grpc.yaml") as f:
        data = yaml.safe_load(f)
    hcm = data["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"][0]["typed_config"][field] = True
    with pytest.raises(json_format.ParseError):
        parse(bootstrap_pb2.Bootstrap(), data)


def test_readme_rule_snippet_is_a_valid_authz_server_config(tmp_path):
    """The README's matching rule, with a default decision around it, passes `authz-server validate`."""
    if not SERVER_BIN.is_file():
        pytest.fail(f"{SERVER_BIN} does not exist; build it first (scripts/test does)")
    blocks = [b for b in validated_blocks(ENVOY / "README.md") if b[0] == "authz-server-rules"]
    assert blocks, "deploy/envoy/README.md has no authz-server-rules block"
    for _, code, line in blocks:
        assert "context_extensions" in code
        config = tmp_path / f"readme-{line}.toml"
        config.write_text('[default]\ndeny = { status = 403 }\n\n' + code)
        done = subprocess.run([str(SERVER_BIN), "validate", str(config)], capture_output=True, text=True)
        assert done.returncode == 0, f"README.md:{line}: {done.stdout}{done.stderr}"
        assert ": ok (1 rules)" in done.stdout
