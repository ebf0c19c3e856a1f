"""deploy/k8s/ offline: each overlay renders with `kubectl kustomize`, every object validates
against the schemas of a pinned Kubernetes version (kubernetes-validate, strict) and KEDA's
ScaledObject / TriggerAuthentication against the models generated from KEDA's CRDs
(cloudcoil-models-keda, unknown fields refused), and the manifests agree with the code: the
contract's ports, settings fields, stream and consumer-group names, probes, limits, GPUs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.queue.keys import GROUP, request_stream
from services.settings import GatewaySettings, ModelServiceSettings
from services.stack import CONTRACT_MODELS, model_ports

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.32"
OVERLAYS = ("cpu", "gpu")
# The contract's port pairs (gRPC 8101.., metrics 9101..), as the local stack assigns them.
PORTS = model_ports(list(CONTRACT_MODELS), 8101, 9101)
# What KEDA's redis-streams scaler reads from its metadata (keda.sh/docs/scalers/redis-streams).
REDIS_STREAMS_KEYS = {"address", "host", "port", "stream", "consumerGroup", "pendingEntriesCount", "streamLength",
                      "lagCount", "activationLagCount", "databaseIndex", "enableTLS", "unsafeSsl"}


def _kubectl() -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: deploy/k8s not rendered")
    out = subprocess.run([kubectl, "version", "--client", "-o", "yaml"], capture_output=True, text=True, timeout=30)
    minor = int(re.sub(r"\D", "", yaml.safe_load(out.stdout)["clientVersion"]["minor"]) or 0)
    if minor < 27:
        pytest.skip(f"kubectl 1.{minor} is too old for these kustomizations (components): use 1.27+")
    return kubectl


def _render(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run([_kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, _render(K8S / "overlays" / request.param)


def _objects(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _model_deployments(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """model name -> its Deployment."""
    return {d["metadata"]["labels"]["tensorgate.io/model"]: d for d in _objects(docs, "Deployment").values()
            if d["metadata"]["labels"].get("app.kubernetes.io/component") == "model-service"}


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_overlays_validate_against_kubernetes(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (make test does)")
    _, docs = overlay
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith("keda.sh/"):
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {'.'.join(map(str, err.path))}: {err.message}")
        checked += 1
    assert checked >= 15


def test_keda_objects_validate_against_the_crds(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    keda = pytest.importorskip("cloudcoil.models.keda.v1alpha1", reason="pip install cloudcoil-models-keda (make test does)")
    _, docs = overlay
    kinds = {"ScaledObject": keda.ScaledObject, "TriggerAuthentication": keda.TriggerAuthentication}
    found = [d for d in docs if d["apiVersion"].startswith("keda.sh/")]
    assert {d["kind"] for d in found} == set(kinds)
    for doc in found:
        model = kinds[doc["kind"]].model_validate(doc)  # types and required fields of KEDA's CRD schema
        # A field the CRD does not know is dropped by the model: strict means nothing was dropped.
        assert model.model_dump(mode="json", by_alias=True, exclude_unset=True) == doc, doc["metadata"]["name"]


def test_every_model_scales_on_its_queue(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay
    deployments = _model_deployments(docs)
    assert set(deployments) == set(CONTRACT_MODELS)
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for d in _objects(docs, "ScaledObject").values()}
    auth = set(_objects(docs, "TriggerAuthentication"))
    for model, deployment in deployments.items():
        scaler = scaled[deployment["metadata"]["name"]]
        assert scaler["spec"]["minReplicaCount"] >= 1, "the gateway refuses a model with no replica"
        (trigger,) = scaler["spec"]["triggers"]
        meta = trigger["metadata"]
        assert trigger["type"] == "redis-streams" and set(meta) <= REDIS_STREAMS_KEYS, meta
        assert meta["stream"] == request_stream(model) and meta["consumerGroup"] == GROUP
        assert "lagCount" in meta or "pendingEntriesCount" in meta
        assert meta["address"].split(":")[0] in _objects(docs, "Service")
        assert trigger["authenticationRef"]["name"] in auth


def test_model_services_follow_the_contract(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = overlay
    pdbs = _objects(docs, "PodDisruptionBudget")
    services = _objects(docs, "Service")
    for model, deployment in _model_deployments(docs).items():
        container = _container(deployment)
        env = _env(container)
        grpc_port, metrics_port = PORTS[model]
        assert env["TENSORGATE_MODEL_NAME"] == model
        assert (env["TENSORGATE_MODEL_GRPC_PORT"], env["TENSORGATE_MODEL_METRICS_PORT"]) == (str(grpc_port), str(metrics_port))
        for key in env:
            assert key == "REDIS_PASSWORD" or key.removeprefix("TENSORGATE_MODEL_").lower() in ModelServiceSettings.model_fields, key
        assert env["TENSORGATE_MODEL_REDIS_URL"] == "redis://:$(REDIS_PASSWORD)@tensorgate-redis:6379/0"
        assert list(env).index("REDIS_PASSWORD") < list(env).index("TENSORGATE_MODEL_REDIS_URL"), "defined before use"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == grpc_port, (model, probe)
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]) and set(container["resources"]["limits"]) >= {"cpu", "memory"}
        assert deployment["metadata"]["name"] in pdbs, f"{model}: no PodDisruptionBudget"
        service = services[deployment["metadata"]["name"]]
        assert service["spec"]["clusterIP"] == "None"
        assert {p["port"] for p in service["spec"]["ports"]} == {grpc_port, metrics_port}
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(metrics_port)
        gpus = container["resources"]["limits"].get("nvidia.com/gpu")
        if name == "gpu":
            assert gpus == 1 and env["TENSORGATE_MODEL_DEVICE"] == "cuda" and container["image"].endswith(":gpu")
        else:
            assert gpus is None and env["TENSORGATE_MODEL_DEVICE"] == "auto" and container["image"].endswith(":cpu")


def test_gateway_and_redis(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay
    gateway = _objects(docs, "Deployment")["tensorgate-gateway"]
    container = _container(gateway)
    env = _env(container)
    for key in env:
        assert key == "REDIS_PASSWORD" or key.removeprefix("TENSORGATE_GATEWAY_").lower() in GatewaySettings.model_fields, key
    assert container["image"].endswith(":cpu"), "the gateway never needs the GPU image"
    assert container["readinessProbe"]["grpc"]["port"] == int(env["TENSORGATE_GATEWAY_GRPC_PORT"]) == 8001
    assert gateway["spec"]["replicas"] >= 2 and "tensorgate-gateway" in _objects(docs, "PodDisruptionBudget")
    assert {p["port"] for p in _objects(docs, "Service")["tensorgate-gateway"]["spec"]["ports"]} == {8001, 8002}
    redis = _objects(docs, "StatefulSet")["tensorgate-redis"]
    args = _container(redis)["args"]
    assert args[args.index("--appendonly") + 1] == "yes" and args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert {m["name"]: m["mountPath"] for m in _container(redis)["volumeMounts"]}[claim["metadata"]["name"]] == "/data"
    assert all(d["metadata"].get("namespace") == "tensorgate" for d in docs if d["kind"] != "Namespace")


def test_hpa_fallback_renders(tmp_path: Path) -> None:
    """Without KEDA: components/hpa-cpu instead of components/keda, one CPU HPA per model service."""
    def rel(path: Path) -> str:  # kustomize takes no absolute paths
        return os.path.relpath(path, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{rel(K8S / 'base')}]\ncomponents: [{rel(K8S / 'components' / 'hpa-cpu')}]\n")
    docs = _render(tmp_path)
    hpas = _objects(docs, "HorizontalPodAutoscaler")
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()} == {
        d["metadata"]["name"] for d in _model_deployments(docs).values()}
    assert not _objects(docs, "ScaledObject")
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for hpa in hpas.values():
        kubernetes_validate.validate(hpa, KUBERNETES_VERSION, strict=True)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus)")
def test_kubernetes_prometheus_config_scrapes_every_service() -> None:
    path = K8S / "prometheus" / "prometheus.yml"
    result = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(path.read_text())
    names = {job["job_name"]: [(n, sd["port"]) for sd in job["dns_sd_configs"] for n in sd["names"]]
             for job in config["scrape_configs"]}
    docs = _render(K8S / "overlays" / "cpu")
    assert names["gateway"] == [("tensorgate-gateway-pods.tensorgate.svc", 8002)]
    expected = [(f"{d['metadata']['name']}.tensorgate.svc", PORTS[m][1]) for m, d in _model_deployments(docs).items()]
    assert sorted(names["model_services"]) == sorted(expected)
