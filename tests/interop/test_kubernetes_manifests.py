"""deploy/kubernetes, deploy/istio and deploy/agentgateway: every Kubernetes object validates against the
API server's own OpenAPI schemas (kubernetes-validate, strict: unknown fields are errors), every custom
resource against the schema kept beside it (deploy/*/schemas, with where it came from), and the settings
the READMEs promise are asserted."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import List

import jsonschema
import kubernetes_validate
import pytest
import yaml

from deploy_support import DEPLOY, REPO_ROOT, load_yaml_documents

# The oldest and newest Kubernetes releases the manifests are checked for.
K8S_VERSIONS = ["1.29.0", "1.33.0"]
CORE_FILES = [
    DEPLOY / "kubernetes" / "ext-authz.yaml",
    DEPLOY / "kubernetes" / "ext-authz-rules.yaml",
    DEPLOY / "kubernetes" / "ext-authz-scaling.yaml",
    DEPLOY / "istio" / "ext-authz.yaml",
]
AGW_FILES = [
    DEPLOY / "kubernetes" / "gateway-ext-auth-policy.yaml",
    DEPLOY / "agentgateway" / "ext-authz-backend-policy.yaml",
    DEPLOY / "agentgateway" / "route-ext-auth-policy-http.yaml",
]


def schema(path: Path):
    data = json.loads(path.read_text())
    jsonschema.Draft7Validator.check_schema(data)
    return jsonschema.Draft7Validator(data)


def errors(validator, doc) -> List[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def by_kind(path: Path) -> dict:
    return {d["kind"]: d for d in load_yaml_documents(path)}


# --- Kubernetes core objects -------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_core_objects_validate_against_kubernetes_openapi(path, version):
    docs = load_yaml_documents(path)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_a_misspelt_field_is_refused():
    """The check above can fail: strict validation refuses a field the API does not have."""
    deployment = copy.deepcopy(by_kind(DEPLOY / "kubernetes" / "ext-authz.yaml")["Deployment"])
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


def test_kustomizations_list_files_that_exist():
    for directory in ("kubernetes", "agentgateway"):
        kustomization = load_yaml_documents(DEPLOY / directory / "kustomization.yaml")[0]
        for resource in kustomization["resources"]:
            assert (DEPLOY / directory / resource).exists(), f"{directory}/kustomization.yaml: {resource}"
    resources = load_yaml_documents(DEPLOY / "kubernetes" / "kustomization.yaml")[0]["resources"]
    assert set(resources) == {p.name for p in (DEPLOY / "kubernetes").glob("*.yaml")} - {"kustomization.yaml"}


# --- what the plain Kubernetes deployment promises -------------------------------------------------


def test_deployment_has_resources_admin_probes_and_the_rules_mounted():
    objects = by_kind(DEPLOY / "kubernetes" / "ext-authz.yaml")
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert set(container["resources"]) == {"requests", "limits"}
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": 9000, "http": 8000, "admin": 9901}
    args = container["args"]
    flag = lambda name: args[args.index(name) + 1]  # noqa: E731
    assert flag("--admin-addr") == "0.0.0.0:9901"
    assert flag("--grpc-addr") == "0.0.0.0:9000"
    assert flag("--http-addr") == "0.0.0.0:8000"
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    (mount,) = container["volumeMounts"]
    assert "subPath" not in mount, "a subPath mount never sees ConfigMap updates"
    assert flag("--config") == f"{mount['mountPath']}/rules.toml"
    (volume,) = pod["volumes"]
    assert volume["name"] == mount["name"]
    rules = by_kind(DEPLOY / "kubernetes" / "ext-authz-rules.yaml")["ConfigMap"]
    assert volume["configMap"]["name"] == rules["metadata"]["name"]
    # The ConfigMap carries the Istio-compatible default, byte for byte (that file is tested elsewhere).
    assert rules["data"]["rules.toml"] == (REPO_ROOT / "config" / "istio-ext-authz.toml").read_text()


def test_service_keeps_the_seeds_port_and_adds_http_mode():
    service = by_kind(DEPLOY / "kubernetes" / "ext-authz.yaml")["Service"]
    ports = service["spec"]["ports"]
    assert (ports[0]["port"], ports[0]["targetPort"], ports[0]["appProtocol"]) == (4444, 9000, "kubernetes.io/h2c")
    assert (ports[1]["port"], ports[1]["targetPort"]) == (8000, 8000)
    assert all("name" in p for p in ports), "a Service with several ports must name each"


def test_autoscaler_and_disruption_budget_select_the_deployment():
    objects = by_kind(DEPLOY / "kubernetes" / "ext-authz.yaml")
    scaling = by_kind(DEPLOY / "kubernetes" / "ext-authz-scaling.yaml")
    deployment = objects["Deployment"]
    hpa, pdb = scaling["HorizontalPodAutoscaler"], scaling["PodDisruptionBudget"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                              "name": deployment["metadata"]["name"]}
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "a drain must be able to evict one"
    for obj in (hpa, pdb):
        assert obj["metadata"]["namespace"] == deployment["metadata"]["namespace"]


# --- Istio ---------------------------------------------------------------------------------------------


def test_authorization_policy_validates_against_istios_crd_schema():
    validator = schema(DEPLOY / "istio" / "schemas" / "authorizationpolicy-v1.schema.json")
    (policy,) = load_yaml_documents(DEPLOY / "istio" / "authorization-policy.yaml")
    assert errors(validator, policy) == []
    spec = policy["spec"]
    assert spec["action"] == "CUSTOM"
    # The CRD's CEL rule: only one of selector, targetRef, targetRefs.
    assert sum(k in spec for k in ("selector", "targetRef", "targetRefs")) <= 1
    bad = copy.deepcopy(policy)
    bad["spec"]["rules"][0]["to"][0]["operation"]["path"] = ["/typo"]
    assert errors(validator, bad), "the schema must refuse an unknown field"


def test_mesh_config_providers_validate_and_match_the_service():
    validator = schema(DEPLOY / "istio" / "schemas" / "meshconfig-extension-providers.schema.json")
    (mesh,) = load_yaml_documents(DEPLOY / "istio" / "meshconfig-extension-providers.yaml")
    assert errors(validator, mesh) == []
    providers = {p["name"]: p for p in mesh["meshConfig"]["extensionProviders"]}
    grpc, http = providers["ext-authz-grpc"]["envoyExtAuthzGrpc"], providers["ext-authz-http"]["envoyExtAuthzHttp"]
    service = by_kind(DEPLOY / "istio" / "ext-authz.yaml")["Service"]
    fqdn = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert (grpc["service"], grpc["port"]) == (fqdn, ports["grpc"]) == (fqdn, 9000)
    assert (http["service"], http["port"]) == (fqdn, ports["http"]) == (fqdn, 8000)
    assert {"x-ext-authz", "x-ai-api-key"} <= set(http["includeRequestHeadersInCheck"])
    assert "x-ext-authz-check-result" in http["headersToUpstreamOnAllow"]
    for provider in (grpc, http):
        assert provider["timeout"] == "0.2s" and provider["failOpen"] is False
    # The AuthorizationPolicy names a provider that exists.
    (policy,) = load_yaml_documents(DEPLOY / "istio" / "authorization-policy.yaml")
    assert policy["spec"]["provider"]["name"] in providers
    bad = copy.deepcopy(mesh)
    bad["meshConfig"]["extensionProviders"][1]["envoyExtAuthzHttp"]["includeHeadersInCheckk"] = ["x"]
    assert errors(validator, bad)


def test_istio_deployment_replaces_the_sample_image_one_for_one():
    objects = by_kind(DEPLOY / "istio" / "ext-authz.yaml")
    service, deployment = objects["Service"], objects["Deployment"]
    assert {(p["name"], p["port"]) for p in service["spec"]["ports"]} == {("http", 8000), ("grpc", 9000)}
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "extauthz:local"
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]


# --- agentgateway --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", AGW_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_agentgateway_policies_validate(path):
    validator = schema(DEPLOY / "agentgateway" / "schemas" / "agentgatewaypolicy.schema.json")
    for doc in load_yaml_documents(path):
        assert errors(validator, doc) == []


def test_agentgateway_policies_point_at_the_ext_authz_service():
    service = by_kind(DEPLOY / "kubernetes" / "ext-authz.yaml")["Service"]
    ports = [p["port"] for p in service["spec"]["ports"]]
    (seed,) = load_yaml_documents(DEPLOY / "kubernetes" / "gateway-ext-auth-policy.yaml")
    assert seed["spec"]["traffic"]["extAuth"]["grpc"] == {}
    assert seed["spec"]["traffic"]["extAuth"]["backendRef"]["port"] == ports[0] == 4444

    (timeout,) = load_yaml_documents(DEPLOY / "agentgateway" / "ext-authz-backend-policy.yaml")
    (target,) = timeout["spec"]["targetRefs"]
    assert (target["group"], target["kind"], target["name"]) == ("", "Service", service["metadata"]["name"])
    assert timeout["spec"]["backend"]["http"]["requestTimeout"] == "200ms"

    (http,) = load_yaml_documents(DEPLOY / "agentgateway" / "route-ext-auth-policy-http.yaml")
    ext = http["spec"]["traffic"]["extAuth"]
    assert ext["backendRef"]["port"] == ports[1] == 8000
    assert {"x-ext-authz", "x-ai-api-key"} <= set(ext["http"]["allowedRequestHeaders"])
    assert "x-ext-authz-check-result" in ext["http"]["allowedResponseHeaders"]


def test_agentgateway_schema_refuses_what_the_crd_refuses():
    validator = schema(DEPLOY / "agentgateway" / "schemas" / "agentgatewaypolicy.schema.json")
    (http,) = load_yaml_documents(DEPLOY / "agentgateway" / "route-ext-auth-policy-http.yaml")
    both = copy.deepcopy(http)
    both["spec"]["traffic"]["extAuth"]["grpc"] = {}
    assert errors(validator, both), "grpc and http together (ExactlyOneOf)"
    (timeout,) = load_yaml_documents(DEPLOY / "agentgateway" / "ext-authz-backend-policy.yaml")
    bad = copy.deepcopy(timeout)
    bad["spec"]["backend"]["http"]["requestTimeout"] = "0.2s"
    assert errors(validator, bad), "durations are Go-style (200ms), not protobuf-style"
    wrong_target = copy.deepcopy(timeout)
    wrong_target["spec"]["targetRefs"][0]["group"] = "core"
    assert errors(validator, wrong_target)


def test_every_deploy_yaml_is_checked_by_some_test():
    """A new file under deploy/ must be added to a suite, not silently left unvalidated."""
    checked = set(CORE_FILES) | set(AGW_FILES) | {
        DEPLOY / "kubernetes" / "kustomization.yaml",
        DEPLOY / "agentgateway" / "kustomization.yaml",
        DEPLOY / "istio" / "authorization-policy.yaml",
        DEPLOY / "istio" / "meshconfig-extension-providers.yaml",
        DEPLOY / "envoy" / "envoy-grpc.yaml",  # test_envoy_config.py
        DEPLOY / "envoy" / "envoy-http.yaml",
    }
    # deploy/observability has its own suite (test_observability.py) and other owners' files.
    found = {p for d in ("envoy", "istio", "kubernetes", "agentgateway")
             for pattern in ("*.yaml", "*.yml") for p in (DEPLOY / d).rglob(pattern)}
    unchecked = sorted(str(p.relative_to(DEPLOY)) for p in found - checked)
    assert not unchecked, f"deploy/ files no test validates: {unchecked}"
