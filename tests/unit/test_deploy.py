"""The deployment files agree with the code: docker-compose.yml, the Dockerfiles, Prometheus
and Grafana (deploy/). Offline: tests/deploy/ runs the compose stack for real.

- every TENSORGATE_* variable in compose is a real settings field of the process it configures,
  and the ports it publishes are the ones that process listens on;
- every model of the contract has its model service (compose, Prometheus, GPU override) on the
  contract's port pair, and the local stack (services/stack.py) assigns the same pairs;
- every ${VARIABLE} of the compose files is documented in .env.example with compose's default;
  Redis needs its password, keeps an append-only file on a named volume; every service has
  resource limits and a health check;
- the compose files, the Prometheus config and every PromQL expression of the dashboard are
  valid (checked by docker-compose, promtool and a real Prometheus when they are installed);
- every metric the dashboard queries is one services/metrics.py defines (and, for job="gateway",
  one the gateway exposes);
- the build helpers the Dockerfiles run (requirements from pyproject, protobuf generation,
  the gRPC health check) work, and the lock files pin every requirement of pyproject.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from urllib.parse import urlsplit
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from services.metrics import Metrics
from services.settings import GatewaySettings, ModelServiceSettings
from services.stack import CONTRACT_MODELS, model_ports
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_GPU = ROOT / "deploy" / "docker-compose.gpu.yml"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
DOCKERFILE_GPU = ROOT / "deploy" / "docker" / "Dockerfile.gpu"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
LOCKS = {name: ROOT / "deploy" / "docker" / f"requirements-{name}.lock" for name in ("cpu", "gpu", "tools")}
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "tensorgate.json"
DATASOURCE_UID = "prometheus"

# What each process kind reads its settings from, keyed by its entry point module.
ROLES: dict[str, type[GatewaySettings] | type[ModelServiceSettings]] = {
    "services.gateway": GatewaySettings,
    "services.modelservice": ModelServiceSettings,
}
# Metric families the gateway process updates (services/grpc/servicer.py, services/gateway/).
GATEWAY_FAMILIES = {
    "tensorgate_request_duration_seconds",
    "tensorgate_requests",
    "tensorgate_pending_requests",
    "tensorgate_dropped_replies",
}
# The contract's port table (ARCHITECTURE "Names and ports"): gRPC 8101.., metrics 9101.., one
# pair per model service, in the order of the contract's model list.
MODEL_PORTS = {
    "mnist_mlp": (8101, 9101),
    "mnist_cnn": (8102, 9102),
    "translator_de_en": (8103, 9103),
    "digit_gan": (8104, 9104),
}
METRIC_NAME = re.compile(r"\btensorgate_[a-zA-Z0-9_]+")
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error} (compose's forms).
VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def _yaml() -> Any:
    return pytest.importorskip(
        "yaml", reason="PyYAML is not installed: add pyyaml to the dev extra (pip install pyyaml)"
    )


def _load_yaml(path: Path) -> Any:
    return _yaml().safe_load(path.read_text())


def _role(service: dict[str, Any]) -> str | None:
    command = service.get("command") or []
    if isinstance(command, str):
        command = command.split()
    for module in ROLES:
        if module in command:
            return module
    return None


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _settings(service: dict[str, Any]) -> GatewaySettings | ModelServiceSettings:
    """The settings the service's process would build from its compose environment."""
    role = _role(service)
    assert role is not None
    cls = ROLES[role]
    # From the environment, as the process reads it (JSON lists such as API_KEYS included).
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENSORGATE_")}
    with mock.patch.dict(os.environ, {**env, **_environment(service)}, clear=True):
        return cls()


def _published(service: dict[str, Any]) -> set[int]:
    """Container ports published on the host ("8001:8001", "127.0.0.1:8001:8001" or long form)."""
    ports: set[int] = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            ports.add(int(entry["target"]))
        else:
            ports.add(int(str(entry).split(":")[-1].split("/")[0]))
    return ports


def _env_example() -> dict[str, str]:
    lines = [line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if "=" in line and not line.startswith("#")]
    return {k.strip(): v.strip() for k, v in lines}


def _interpolate(node: Any, env: dict[str, str]) -> Any:
    """What compose makes of ${...} with these variables set (unset ones take their default)."""
    if isinstance(node, dict):
        return {k: _interpolate(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, env) for v in node]
    if isinstance(node, str):
        def value(match: re.Match[str]) -> str:
            name, op, arg = match.groups()
            if name in env:
                return env[name]
            assert op is None or "?" not in op, f"{name} is required: {arg}"
            return arg or ""
        return VARIABLE.sub(value, node)
    return node


def _variables(path: Path) -> dict[str, str | None]:
    """Every ${NAME...} of a file: NAME -> its default (None where it has none)."""
    found: dict[str, str | None] = {}
    for name, op, arg in VARIABLE.findall(path.read_text()):
        default = arg if op and "-" in op else None
        if found.get(name) is None:
            found[name] = default
    return found


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml as compose reads it with .env.example copied to .env."""
    data = _interpolate(_load_yaml(COMPOSE), _env_example())
    assert isinstance(data, dict) and "services" in data
    return data


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [value for key, value in _walk(dashboard.get("panels", [])) if key == "expr"]
    assert exprs and all(isinstance(e, str) and e.strip() for e in exprs)
    return exprs


def _defined_series() -> set[str]:
    """Every series name the Metrics registry can expose (histogram _bucket/_sum/_count, counter _total)."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    return names


def _family(series: str) -> str:
    for suffix in ("_bucket", "_sum", "_count", "_total"):
        if series.endswith(suffix):
            return series[: -len(suffix)]
    return series


# ----------------------------------------------------------------------------- compose


def test_contract_models_are_the_port_table() -> None:
    assert tuple(MODEL_PORTS) == CONTRACT_MODELS


def test_compose_has_the_topology(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"redis", "gateway", "prometheus", "grafana", *MODEL_PORTS} <= set(services)
    assert services["redis"]["image"].startswith("redis:7")
    assert services["prometheus"]["image"].startswith("prom/prometheus")
    assert services["grafana"]["image"].startswith("grafana/grafana")
    assert _role(services["gateway"]) == "services.gateway"
    for name in MODEL_PORTS:
        assert _role(services[name]) == "services.modelservice", name
    # The gateway and the model services start once redis is healthy.
    for name in ("gateway", *MODEL_PORTS):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy", name
        assert "healthcheck" in services[name], name
        assert services[name]["build"]["dockerfile"] == "deploy/docker/Dockerfile", name
    # Prometheus starts after every process it scrapes.
    assert {"gateway", *MODEL_PORTS} <= set(services["prometheus"]["depends_on"])


def test_compose_env_vars_are_settings_fields(compose: dict[str, Any]) -> None:
    seen = 0
    for name, service in compose["services"].items():
        env = {k: v for k, v in _environment(service).items() if k.startswith("TENSORGATE_")}
        if not env:
            continue
        role = _role(service)
        assert role is not None, f"{name} sets {sorted(env)} but runs no tensorgate entry point"
        cls = ROLES[role]
        prefix = cls.model_config["env_prefix"]
        for key in env:
            seen += 1
            assert key.startswith(prefix), f"{name}: {key} is not read by {cls.__name__} (prefix {prefix})"
            field = key[len(prefix):].lower()
            assert field in cls.model_fields, f"{name}: {key} is no field of {cls.__name__}"
        _settings(service)  # the values validate (ports are ints, device is auto|cpu|cuda, ...)
    assert seen > 0


def _assert_redis_url(url: str) -> None:
    parts = urlsplit(url)
    assert (parts.scheme, parts.hostname, parts.port, parts.path) == ("redis", "redis", 6379, "/0"), url
    assert parts.password == _env_example()["TENSORGATE_REDIS_PASSWORD"], "the password of .env"


def test_compose_ports_match_settings(compose: dict[str, Any]) -> None:
    services = compose["services"]
    gateway = _settings(services["gateway"])
    assert (gateway.grpc_port, gateway.metrics_port) == (8001, 8002)
    assert _published(services["gateway"]) == {8001}  # metrics stay on the compose network
    _assert_redis_url(gateway.redis_url)

    models = {name: s for name, s in services.items() if _role(s) == "services.modelservice"}
    assert "mnist_mlp" in models
    ports: set[int] = set()
    for name, service in models.items():
        settings = _settings(service)
        assert isinstance(settings, ModelServiceSettings)
        assert settings.name == name, "a model service is named after the model it serves"
        _assert_redis_url(settings.redis_url)
        assert {settings.grpc_port, settings.metrics_port}.isdisjoint(ports), f"{name}: port clash"
        ports |= {settings.grpc_port, settings.metrics_port}
        assert {int(p) for p in service.get("expose", [])} == {settings.grpc_port, settings.metrics_port}
        replicas = (service.get("deploy") or {}).get("replicas", 1)
        assert replicas == 1 or not _published(service), f"{name}: {replicas} replicas cannot publish fixed ports"
    assert set(MODEL_PORTS) <= set(models)
    for name, (grpc_port, metrics_port) in MODEL_PORTS.items():
        settings = _settings(models[name])
        assert (settings.grpc_port, settings.metrics_port) == (grpc_port, metrics_port), name
        assert not _published(models[name]), f"{name}: model-service ports stay internal (expose, not ports)"
        # Its health check asks its own gRPC port.
        test = models[name]["healthcheck"]["test"]
        assert test[0] == "CMD" and "tensorgate-healthcheck" in " ".join(test), name
        assert test[-1] == str(grpc_port), f"{name}: health check on {test[-1]}, gRPC on {grpc_port}"


def test_compose_gpu_reservation_only_in_override(compose: dict[str, Any]) -> None:
    # The base file must start on a machine without a GPU: no device reservations there.
    assert not [k for k, v in _walk(compose) if k == "devices"]
    override = _interpolate(_load_yaml(COMPOSE_GPU), _env_example())
    models = {name for name, s in compose["services"].items() if _role(s) == "services.modelservice"}
    assert set(override["services"]) <= models
    assert set(MODEL_PORTS) <= set(override["services"]), "every model service reserves a GPU"
    for name, service in override["services"].items():
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}], name
        assert service["build"]["dockerfile"] == "deploy/docker/Dockerfile.gpu", name
        assert service["image"] == "tensorgate:gpu", name  # TENSORGATE_GPU_IMAGE's default
        assert _environment(service)["TENSORGATE_MODEL_DEVICE"] in ("cuda", "auto"), name
        # The override touches only the image and the device: name and ports stay the base file's.
        assert not {"TENSORGATE_MODEL_NAME", "TENSORGATE_MODEL_GRPC_PORT"} & set(_environment(service)), name


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed (apt-get install docker-compose)")
@pytest.mark.parametrize("files", [[COMPOSE], [COMPOSE, COMPOSE_GPU]], ids=["cpu", "gpu-override"])
def test_compose_config_is_valid(files: list[Path], tmp_path: Path) -> None:
    args = ["docker-compose", "--env-file", str(ENV_EXAMPLE)]
    for path in files:
        args += ["-f", str(path)]
    result = subprocess.run(args + ["config", "-q"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # Without the Redis password compose refuses to start, saying what to do.
    (tmp_path / "empty.env").write_text("")
    args[2] = str(tmp_path / "empty.env")
    result = subprocess.run(args + ["config", "-q"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "TENSORGATE_REDIS_PASSWORD" in result.stderr and ".env.example" in result.stderr


def test_env_example_documents_every_variable() -> None:
    example = _env_example()
    variables = {**_variables(COMPOSE_GPU), **_variables(COMPOSE)}
    assert set(variables) == set(example), "every ${VARIABLE} of the compose files, and only those"
    for name, default in variables.items():
        if default is not None:
            assert example[name] == default, f"{name}: .env.example says {example[name]!r}, compose {default!r}"
    assert _variables(COMPOSE)["TENSORGATE_REDIS_PASSWORD"] is None, "no default password"


def test_env_is_ignored_and_example_is_not() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT, timeout=30).returncode == 0
    assert ignored(".env") and not ignored(".env.example")
    assert ".env" not in {line.strip().lstrip("!") for line in DOCKERIGNORE.read_text().splitlines()
                          if line.startswith("!")}, ".env never enters the build context"


def _bytes(size: str) -> int:
    """'768mb', '1g', '512m' -> bytes (Redis and compose both count in powers of 1024)."""
    number, unit = re.fullmatch(r"(\d+)\s*([kmg]?)b?", size.lower()).groups()  # type: ignore[union-attr]
    return int(number) * 1024 ** " kmg".index(unit or " ")


def test_compose_runs_as_production_wants(compose: dict[str, Any]) -> None:
    services = compose["services"]
    redis = services["redis"]
    command = redis["command"]
    for flag, value in (("--appendonly", "yes"), ("--appendfsync", "everysec"), ("--dir", "/data"),
                        ("--maxmemory-policy", "noeviction")):
        assert command[command.index(flag) + 1] == value, flag
    assert command[command.index("--requirepass") + 1] == _env_example()["TENSORGATE_REDIS_PASSWORD"]
    assert "redis-data:/data" in redis["volumes"] and "redis-data" in compose["volumes"]
    # Redis' cap sits below its container's limit, so it refuses writes instead of being killed.
    assert _bytes(command[command.index("--maxmemory") + 1]) < _bytes(redis["mem_limit"])
    for name, service in services.items():
        assert service.get("cpus") and service.get("mem_limit"), f"{name}: no resource limits"
        assert service.get("healthcheck", {}).get("test"), f"{name}: no health check"
        assert service.get("restart") == "unless-stopped", name
    # The gateway takes requests once every model service is healthy (not merely started).
    depends = services["gateway"]["depends_on"]
    assert {name: dep["condition"] for name, dep in depends.items()} == dict.fromkeys(
        ("redis", *MODEL_PORTS), "service_healthy")
    prometheus = services["prometheus"]
    assert "./deploy/prometheus/rules:/etc/prometheus/rules:ro" in prometheus["volumes"]
    assert _load_yaml(PROMETHEUS)["rule_files"] == ["rules/*.yml"]


# ----------------------------------------------------------------------------- images


def test_dockerfiles() -> None:
    cpu = DOCKERFILE.read_text()
    gpu = DOCKERFILE_GPU.read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", cpu, re.M)
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:\S+-cudnn-runtime-", gpu, re.M)
    for text, extra in ((cpu, "cpu"), (gpu, "gpu")):
        assert len(re.findall(r"^FROM ", text, re.M)) >= 2, "multi-stage build"
        # Exactly the locked files, and pip's CA bundle only as a build secret (never a layer).
        assert f"-r /build/requirements-{extra}.lock" in text and "-r /build/requirements-tools.lock" in text
        assert text.count("--require-hashes") == 2
        assert "--mount=type=secret,id=pip_cert" in text
        assert not re.search(r"^# syntax=", text, re.M), "no frontend pulled from Docker Hub"
        assert "protos/generate.sh" in text
        assert re.search(r"^USER (?!root|0\b)\S+", text, re.M), "runs as a non-root user"
        assert "/app/models" in text
        instructions = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        assert "torch" not in instructions and "train" not in instructions, "serving images never install torch"
    assert 'CMD ["python", "-m", "services.gateway"]' in cpu
    # Everything the Dockerfiles copy from the context passes .dockerignore's whitelist.
    allowed = {line[1:].rstrip("/") for line in DOCKERIGNORE.read_text().splitlines() if line.startswith("!")}
    for needed in ("protos", "services", "models", "deploy/docker"):
        assert needed in allowed


def _requirements(*args: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "docker" / "requirements.py"), str(ROOT / "pyproject.toml"), *args],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout
    return [re.split(r"[\s\[<>=~!;]", line, maxsplit=1)[0].lower() for line in out.splitlines() if line.strip()]


def test_image_requirements_come_from_pyproject() -> None:
    cpu = _requirements("cpu")
    gpu = _requirements("gpu")
    assert "onnxruntime" in cpu and "onnxruntime-gpu" not in cpu
    assert "onnxruntime-gpu" in gpu and "onnxruntime" not in gpu
    for reqs in (cpu, gpu):
        assert {"grpcio", "redis", "prometheus-client", "pydantic-settings"} <= set(reqs)
        assert "torch" not in reqs and "grpcio-tools" not in reqs
    assert _requirements("--only", "dev", "grpcio-tools") == ["grpcio-tools"]


def _lock(path: Path) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (pinned versions, hashes) of a lock file (one entry per marker line)."""
    pins: dict[str, tuple[list[str], list[str]]] = {}
    text = path.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", line)
        assert match, f"{path.name}: not pinned with ==: {line}"
        versions, hashes = pins.setdefault(match.group(1).lower(), ([], []))
        versions.append(match.group(2))
        found = re.findall(r"--hash=sha256:([0-9a-f]{64})", line)
        assert found, f"{path.name}: {match.group(1)} has no hash"
        hashes += found
    return pins


@pytest.mark.parametrize("name, spec", [("cpu", ["cpu"]), ("gpu", ["gpu"]), ("tools", ["--only", "dev", "grpcio-tools"])])
def test_lock_files_pin_every_requirement(name: str, spec: list[str]) -> None:
    """Each lock satisfies pyproject's ranges (else: `make lock`)."""
    packaging = pytest.importorskip("packaging.requirements")
    sys.path.insert(0, str(ROOT / "deploy" / "docker"))
    try:
        from requirements import requirement_lines
    finally:
        sys.path.pop(0)
    pins = _lock(LOCKS[name])
    for line in requirement_lines(ROOT / "pyproject.toml", spec):
        req = packaging.Requirement(line)
        key = req.name.lower().replace("_", "-")
        assert key in pins, f"{req.name} is not in {LOCKS[name].name}: run `make lock`"
        for version in pins[key][0]:
            assert req.specifier.contains(version, prereleases=True), (
                f"{LOCKS[name].name} pins {req.name}=={version}, pyproject wants {req.specifier}: run `make lock`")
    assert "torch" not in pins


def test_protos_generate_script(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (dev extra) is needed to generate protobuf code")
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    (tmp_path / "services" / "proto").mkdir(parents=True)
    subprocess.run(
        ["sh", str(ROOT / "protos" / "generate.sh")], cwd=tmp_path, check=True, timeout=60,
        env={**os.environ, "PYTHON": sys.executable}, capture_output=True,
    )
    out = tmp_path / "services" / "proto"
    for name in ("model_config_pb2.py", "grpc_service_pb2.py", "grpc_service_pb2.pyi", "grpc_service_pb2_grpc.py"):
        assert (out / name).is_file(), name
    assert "from . import model_config_pb2 as" in (out / "grpc_service_pb2.py").read_text()
    assert "from . import grpc_service_pb2 as" in (out / "grpc_service_pb2_grpc.py").read_text()
    assert not re.search(r"^import \w+_pb2 as", (out / "grpc_service_pb2_grpc.py").read_text(), re.M)


def test_healthcheck_script() -> None:
    grpc = pytest.importorskip("grpc")
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    script = ROOT / "deploy" / "docker" / "healthcheck.py"

    def check(port: int) -> int:
        return subprocess.run([sys.executable, str(script), str(port)], capture_output=True, timeout=30).returncode

    server = grpc.server(__import__("concurrent.futures").futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert check(port) == 0
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert check(port) == 1
    finally:
        server.stop(None).wait()
    assert check(port) == 1  # nothing listening


# ----------------------------------------------------------------------------- prometheus


def test_prometheus_scrapes_the_compose_services(compose: dict[str, Any]) -> None:
    config = _load_yaml(PROMETHEUS)
    assert config["global"]["scrape_interval"] == "5s"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"gateway", "model_services"} <= set(jobs)
    gateway = _settings(compose["services"]["gateway"])
    targets = [t for sc in jobs["gateway"]["static_configs"] for t in sc["targets"]]
    assert targets == [f"gateway:{gateway.metrics_port}"]

    # model_services: one DNS name (= compose service) per model service, at its metrics port.
    scraped: dict[str, int] = {}
    for sd in jobs["model_services"].get("dns_sd_configs", []):
        for name in sd["names"]:
            scraped[name] = int(sd["port"])
    for sc in jobs["model_services"].get("static_configs", []):
        for target in sc["targets"]:
            host, port = target.rsplit(":", 1)
            scraped[host] = int(port)
    expected = {
        name: _settings(s).metrics_port for name, s in compose["services"].items() if _role(s) == "services.modelservice"
    }
    assert scraped == expected
    assert {name: port for name, port in expected.items() if name in MODEL_PORTS} == {
        name: metrics for name, (_, metrics) in MODEL_PORTS.items()
    }
    # Every target is labelled with its compose service (the DNS name), not its replica's IP.
    assert {"source_labels": ["__meta_dns_name"], "target_label": "service"} in jobs["model_services"]["relabel_configs"]
    assert "prometheus.yml" in " ".join(compose["services"]["prometheus"]["volumes"])


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus)")
def test_promtool_check_config() -> None:
    result = subprocess.run(["promtool", "check", "config", str(PROMETHEUS)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# ----------------------------------------------------------------------------- grafana


def test_grafana_provisioning(compose: dict[str, Any]) -> None:
    datasources = _load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    (prom,) = [d for d in datasources if d["type"] == "prometheus"]
    assert prom["uid"] == DATASOURCE_UID
    assert prom["url"] == "http://prometheus:9090"
    providers = _load_yaml(GRAFANA / "provisioning" / "dashboards" / "dashboards.yml")["providers"]
    paths = {p["options"]["path"] for p in providers}
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"] if v.startswith("./")}
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert mounts["./deploy/grafana/dashboards"] in paths
    env = _environment(grafana)
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true" and env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert [port.split(":", 1)[1] for port in grafana["ports"]] == ["3000:3000"]


def test_dashboard_shape(dashboard: dict[str, Any]) -> None:
    assert dashboard["title"] == "tensorgate latency" and dashboard["uid"]
    uids = {value["uid"] for key, value in _walk(dashboard) if key == "datasource" and isinstance(value, dict)
            and value.get("type") == "prometheus"}
    assert uids == {DATASOURCE_UID}
    (model,) = [v for v in dashboard["templating"]["list"] if v["name"] == "model"]
    assert model["definition"] == "label_values(tensorgate_request_duration_seconds_count, model)"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    types = {p["type"] for p in panels}
    assert {"timeseries", "heatmap", "table"} <= types
    titles = " | ".join(p["title"].lower() for p in panels)
    for word in ("latency", "queue", "compute", "throughput", "batch size", "pending", "error", "execution provider"):
        assert word in titles, word
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        for target in panel["targets"]:
            if "tensorgate_" in target["expr"] and "model" in target["expr"]:
                assert '"$model"' in target["expr"] or "tensorgate_dropped_replies" in target["expr"], target["expr"]


def test_dashboard_metrics_are_defined(dashboard: dict[str, Any]) -> None:
    defined = _defined_series()
    used: set[str] = set()
    for expr in _exprs(dashboard):
        names = set(METRIC_NAME.findall(expr))
        assert names, f"no tensorgate metric in {expr!r}"
        assert names <= defined, f"{expr!r} uses undefined {sorted(names - defined)}"
        used |= names
        if 'job="gateway"' in expr:
            families = {_family(n) for n in names}
            assert families <= GATEWAY_FAMILIES, f"the gateway does not expose {sorted(families - GATEWAY_FAMILIES)}"
    for var in dashboard["templating"]["list"]:
        assert set(METRIC_NAME.findall(var.get("definition", ""))) <= defined
    # The panels the dashboard promises.
    for family in ("tensorgate_request_duration_seconds", "tensorgate_queue_duration_seconds",
                   "tensorgate_compute_duration_seconds", "tensorgate_batch_size"):
        assert family + "_bucket" in used
    assert {"tensorgate_requests_total", "tensorgate_pending_requests", "tensorgate_execution_provider_info",
            "tensorgate_batch_size_sum", "tensorgate_batch_size_count"} <= used


def _get_json(url: str, timeout_s: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not installed (apt-get install prometheus): PromQL of the dashboard not checked")
    tmp = tmp_path_factory.mktemp("prometheus")
    (tmp / "prometheus.yml").write_text("global:\n  scrape_interval: 5s\nscrape_configs: []\n")
    port = free_port()
    log = (tmp / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                pytest.fail(f"prometheus exited: {(tmp / 'prometheus.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail("prometheus did not become ready in 15 s")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _grafana_to_promql(expr: str) -> str:
    """What Grafana sends for expr when every model is selected."""
    return expr.replace("$__rate_interval", "1m").replace("$model", ".*")


def test_dashboard_promql_parses(prometheus_url: str, dashboard: dict[str, Any]) -> None:
    queries = [_grafana_to_promql(e) for e in _exprs(dashboard)]
    queries.append("tensorgate_request_duration_seconds_count")  # the model variable's series
    for query in queries:
        assert "$" not in query, f"unsubstituted Grafana variable in {query!r}"
        url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        try:
            body = _get_json(url)
        except urllib.error.HTTPError as err:
            body = json.loads(err.read())
            err.close()
        assert body["status"] == "success", f"{query!r}: {body.get('error')}"


# ----------------------------------------------------------------------------- local stack


def test_stack_model_ports_follow_the_contract() -> None:
    every = ["zeta", "digit_gan", "alpha", "mnist_mlp", "translator_de_en", "mnist_cnn"]
    ports = model_ports(every, 8101, 9101)
    assert list(ports) == [*CONTRACT_MODELS, "alpha", "zeta"]  # start order: contract order, then the rest
    assert {name: ports[name] for name in MODEL_PORTS} == MODEL_PORTS
    assert ports["alpha"] == (8105, 9105) and ports["zeta"] == (8106, 9106)
    # The same table as compose with the default bases, and any other bases shift it as a whole.
    assert model_ports(every, 20000, 30000)["translator_de_en"] == (20002, 30002)


def test_stack_model_ports_keep_contract_slots_when_models_are_missing() -> None:
    # A repository with some of the contract's models: each keeps its own slot (no renumbering).
    assert model_ports(["mnist_mlp"], 8101, 9101) == {"mnist_mlp": (8101, 9101)}
    assert model_ports(["digit_gan", "mnist_cnn"], 8101, 9101) == {"mnist_cnn": (8102, 9102), "digit_gan": (8104, 9104)}
    # Models outside the contract come after every contract slot, even when those are unused.
    assert model_ports(["mnist_mlp", "extra"], 8101, 9101) == {"mnist_mlp": (8101, 9101), "extra": (8105, 9105)}
    assert model_ports([], 8101, 9101) == {}


def test_stack_serves_each_model_on_its_contract_ports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """build() with --models picks from the whole repository's table: mnist_cnn alone is still on base+1."""
    import services.stack as stack

    monkeypatch.setattr(stack, "load_repository", lambda root: dict.fromkeys(("mnist_mlp", "mnist_cnn", "digit_gan")))
    monkeypatch.setattr(stack.shutil, "which", lambda name: f"/usr/bin/{name}" if name == "redis-server" else None)
    args = argparse.Namespace(
        state_dir=str(tmp_path), redis_port=6390, model_repository="models", models=["mnist_cnn", "digit_gan"],
        model_base_port=18101, model_metrics_base_port=19101, port=18001, metrics_port=18002,
        prometheus_port=19090, no_prometheus=True,
    )
    children, _ = stack.build(args)
    served = {c.name: (c.grpc_port, c.argv[c.argv.index("--metrics-port") + 1]) for c in children
              if "services.modelservice" in c.argv}
    assert served == {"mnist_cnn": (18102, "19102"), "digit_gan": (18104, "19104")}
    assert [c.name for c in children] == ["redis", "mnist_cnn", "digit_gan", "gateway"]
