"""deploy/k8s: every manifest validates against the Kubernetes OpenAPI schemas (offline, with
the kubernetes-validate package, strict: unknown fields fail), plus the production rules the
schema cannot express: pinned images, resources, probes, non-root, secrets by reference."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import (
    GATEWAY_SECRET_FILES,
    K8S_DIR,
    NOT_A_SECRET,
    k8s_object,
    only_container,
    require_module,
)

# Oldest Kubernetes the manifests promise to work on (grpc probes GA 1.27) and the newest the
# validator knows.
K8S_VERSIONS = ["1.29.0", "latest"]
PINNED = re.compile(r"^[a-z0-9./_-]+:[A-Za-z0-9._-]*[0-9][A-Za-z0-9._-]*(@sha256:[0-9a-f]{64})?$")
NOT_API_OBJECTS = {"Kustomization"}


def validate(doc: dict[str, Any], version: str) -> None:
    import kubernetes_validate

    if version == "latest":
        version = kubernetes_validate.latest_version()
    kubernetes_validate.validate(doc, version, strict=True)


def api_objects(docs: list[tuple[Path, dict[str, Any]]]) -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p, d in docs if d["kind"] not in NOT_API_OBJECTS]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_validate_against_kubernetes_schemas(
    k8s_docs: list[tuple[Path, dict[str, Any]]], version: str
) -> None:
    require_module("kubernetes_validate", "kubernetes-validate==1.37.0")
    for path, doc in api_objects(k8s_docs):
        try:
            validate(doc, version)
        except Exception as exc:  # the validator raises several error types
            pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']}: {exc}")


def test_validator_rejects_an_unknown_field(k8s_docs: list[tuple[Path, dict[str, Any]]]) -> None:
    """Guards the check above: strict mode really refuses a misspelled field."""
    require_module("kubernetes_validate", "kubernetes-validate==1.37.0")
    bad = copy.deepcopy(k8s_object(k8s_docs, "Deployment", "gateway"))
    only_container(bad)["readinesProbe"] = {"tcpSocket": {"port": 1}}
    with pytest.raises(Exception, match="readinesProbe"):
        validate(bad, "latest")


def test_every_object_has_the_basics(k8s_docs: list[tuple[Path, dict[str, Any]]]) -> None:
    for path, doc in k8s_docs:
        assert doc.get("apiVersion") and doc.get("kind"), path.name
        if doc["kind"] in NOT_API_OBJECTS:
            continue
        meta = doc["metadata"]
        assert meta.get("name"), path.name
        assert "namespace" not in meta, f"{path.name}: namespace comes from kustomization.yaml"
        assert meta.get("labels", {}).get("app.kubernetes.io/part-of") == "scoring", path.name


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    files = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    assert kustomization["namespace"] == "scoring"


@pytest.mark.parametrize("name", ["gateway", "triton"])
def test_deployments_are_production_ready(
    k8s_docs: list[tuple[Path, dict[str, Any]]], name: str
) -> None:
    deployment = k8s_object(k8s_docs, "Deployment", name)
    spec = deployment["spec"]
    assert spec["replicas"] >= 2, "one replica is one outage away from none"
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = only_container(deployment)
    assert PINNED.match(container["image"]), container["image"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert probe in container, f"{name}: no {probe}"
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    for env in container.get("env", []):
        if NOT_A_SECRET.search(env["name"]):
            continue  # a path to a mounted Secret (checked below), a switch
        if re.search("PASSWORD|SECRET|TOKEN|REGISTRY_PATH", env["name"]):
            assert "secretKeyRef" in env.get("valueFrom", {}), f"{env['name']}: use a Secret"
    pod_ports = {p["containerPort"] for p in container["ports"]}
    annotations = spec["template"]["metadata"].get("annotations", {})
    assert int(annotations["prometheus.io/port"]) in pod_ports


def test_triton_gets_a_gpu_and_the_read_only_model_repository(
    k8s_docs: list[tuple[Path, dict[str, Any]]],
) -> None:
    deployment = k8s_object(k8s_docs, "Deployment", "triton")
    container = only_container(deployment)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["models"]["readOnly"] is True
    assert f"--model-repository={mounts['models']['mountPath']}" in container["command"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    claim = volumes["models"]["persistentVolumeClaim"]["claimName"]
    k8s_object(k8s_docs, "PersistentVolumeClaim", claim)


def test_gateway_scales_horizontally(k8s_docs: list[tuple[Path, dict[str, Any]]]) -> None:
    hpa = k8s_object(k8s_docs, "HorizontalPodAutoscaler", "gateway")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "gateway",
    }
    deployment = k8s_object(k8s_docs, "Deployment", "gateway")
    assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"]
    pdb = k8s_object(k8s_docs, "PodDisruptionBudget", "gateway")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    # Liveness must not depend on Triton: a Triton outage must not restart every gateway.
    container = only_container(deployment)
    assert "grpc" not in container["livenessProbe"]
    assert "exec" not in container["livenessProbe"]
    # Readiness is grpc health SERVING, over TLS: the image's health check (the kubelet's grpc
    # probe speaks no TLS).
    assert container["readinessProbe"]["exec"]["command"] == ["scoring-healthcheck"]


def test_gateway_serves_tls_and_requires_auth_from_mounted_secrets(
    k8s_docs: list[tuple[Path, dict[str, Any]]],
) -> None:
    deployment = k8s_object(k8s_docs, "Deployment", "gateway")
    container = only_container(deployment)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SCORING_TLS__ENABLED"] == "true"
    assert env["SCORING_AUTH__REQUIRED"] == "true"
    assert env["SCORING_PRIVACY__GENERATE_SECRET"] == "false"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    files = {}
    for name, mount in mounts.items():
        projected = volumes[name].get("projected")
        if projected is None:
            continue
        assert mount["readOnly"] is True
        for source in projected["sources"]:
            for item in source["secret"]["items"]:
                files[f"{mount['mountPath']}/{item['path']}"] = source["secret"]["name"]
    for key in GATEWAY_SECRET_FILES:
        assert env[key] in files, f"{key}={env[key]} is no file of a mounted Secret"
    # The Service keeps the gateway inside the cluster.
    assert k8s_object(k8s_docs, "Service", "gateway")["spec"]["type"] == "ClusterIP"


@pytest.mark.parametrize("name", ["gateway", "triton", "console"])
def test_services_select_their_deployment(
    k8s_docs: list[tuple[Path, dict[str, Any]]], name: str
) -> None:
    service = k8s_object(k8s_docs, "Service", name)
    deployment = k8s_object(k8s_docs, "Deployment", name)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    named = {p["name"] for p in only_container(deployment)["ports"]}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in named, f"{name}: targetPort {port['targetPort']}"


def test_console_is_a_safe_single_replica_web_service(
    k8s_docs: list[tuple[Path, dict[str, Any]]],
) -> None:
    """deploy/k8s/console.yaml: `scoring console` from the gateway's image, non-root on a
    read-only root, probed on /healthz, the callers file and the registry URL from Secrets, the
    model repository read only, inside the cluster only."""
    deployment = k8s_object(k8s_docs, "Deployment", "console")
    spec = deployment["spec"]
    # Logins live in the process's memory: a second replica would log users out at random.
    assert spec["replicas"] == 1
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = only_container(deployment)
    gateway = only_container(k8s_object(k8s_docs, "Deployment", "gateway"))
    assert container["image"] == gateway["image"]
    assert PINNED.match(container["image"]), container["image"]
    assert container["command"] == ["scoring", "console"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        check = container[probe]["httpGet"]
        assert check["path"] == "/healthz" and check["port"] in ports, probe
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    env = {e["name"]: e for e in container["env"]}
    for name, item in env.items():
        if NOT_A_SECRET.search(name):
            continue
        if re.search("PASSWORD|SECRET|TOKEN|REGISTRY_PATH|REGISTRY__URL", name):
            assert "secretKeyRef" in item.get("valueFrom", {}), f"{name}: use a Secret"
    assert "SCORING_AUTH__ADMIN_TOKEN" not in env, "admins log in; the console holds no token"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    callers = env["SCORING_AUTH__CALLERS_FILE"]["value"]
    secret_files = {
        f"{mounts[name]['mountPath']}/{item['path']}": source["secret"]["name"]
        for name, volume in volumes.items()
        if "projected" in volume
        for source in volume["projected"]["sources"]
        for item in source["secret"]["items"]
    }
    assert secret_files == {callers: "scoring-callers"}
    models = env["SCORING_TRITON__MODEL_REPOSITORY"]["value"]
    (model_mount,) = [m for m in mounts.values() if m["mountPath"] == models]
    assert model_mount["readOnly"] is True
    claim = volumes[model_mount["name"]]["persistentVolumeClaim"]
    assert claim["readOnly"] is True
    k8s_object(k8s_docs, "PersistentVolumeClaim", claim["claimName"])
    # Plain HTTP inside the cluster: reach it with port-forward or a TLS-terminating Ingress.
    assert k8s_object(k8s_docs, "Service", "console")["spec"]["type"] == "ClusterIP"
