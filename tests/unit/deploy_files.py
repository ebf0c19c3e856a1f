"""What the deployment tests share: the files under test (docker-compose.yml, deploy/), the
contract's ports, and compose's view of a service (its role, environment, settings, published
ports, ${VARIABLE} interpolation with .env.example)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from services.settings import GatewaySettings, ModelServiceSettings

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


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)

