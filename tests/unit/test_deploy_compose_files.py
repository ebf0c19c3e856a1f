"""docker-compose.yml and its GPU override agree with the code (offline: tests/deploy/ runs
the compose stack for real):

- every TENSORGATE_* variable in compose is a real settings field of the process it configures,
  and the ports it publishes are the ones that process listens on;
- every model of the contract has its model service (compose, GPU override) on the contract's
  port pair;
- every ${VARIABLE} of the compose files is documented in .env.example with compose's default;
  Redis needs its password, keeps an append-only file on a named volume; every service has
  resource limits and a health check;
- the compose files are valid (checked by docker-compose when it is installed).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from services.settings import ModelServiceSettings
from services.stack import CONTRACT_MODELS
from tests.unit.deploy_files import (COMPOSE, COMPOSE_GPU, DOCKERIGNORE, ENV_EXAMPLE, MODEL_PORTS, PROMETHEUS,
                                     ROLES, ROOT, _env_example, _environment, _interpolate, _load_yaml,
                                     _published, _role, _settings, _variables, _walk)
from tests.unit.deploy_files import compose  # noqa: F401 (fixture)


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

