"""The composed stack, built and brought up once for tests/deploy/test_compose.py (docker-compose.yml
for real). tests/deploy/test_k8s.py needs no engine: it renders and validates the manifests.

Skipped, with the reason, when no Docker engine answers (a plain `make test` on a machine
without dockerd); .ci/run starts dockerd, so CI runs it. Images: by default the ones
deploy/docker/local-images.sh builds from a debootstrap Debian base (no registry needed);
TENSORGATE_DEPLOY_IMAGES=public builds and pulls compose's public defaults instead.
TENSORGATE_SKIP_DEPLOY=1 skips on purpose (e.g. on a machine busy with a benchmark).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.compose import ROOT, Compose, Timings, docker_engine
from tests.support import free_port

# Every service but grafana (no image can be built without Docker Hub; its provisioning is
# checked offline by tests/unit/test_deploy.py).
SERVICES = ("redis", "mnist_mlp", "mnist_cnn", "translator_de_en", "digit_gan", "gateway", "prometheus")
MODELS = ("mnist_mlp", "mnist_cnn", "translator_de_en", "digit_gan")
# Entries of a killed replica are taken over after this (production default 30 s).
CLAIM_IDLE_MS = 3000


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "deploy: builds the images and runs docker-compose.yml on a Docker engine")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    compose_tests = [item for item in items if Path(item.fspath) == Path(__file__).parent / "test_compose.py"]
    if not compose_tests:
        return
    reason = "TENSORGATE_SKIP_DEPLOY is set" if os.environ.get("TENSORGATE_SKIP_DEPLOY") else docker_engine()
    for item in compose_tests:
        item.add_marker(pytest.mark.deploy)
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"compose stack not run: {reason}"))


TIMINGS = Timings()


@pytest.fixture(scope="session")
def timings() -> Timings:
    return TIMINGS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS.steps:
        terminalreporter.write_sep("-", "docker compose timings (tests/deploy)")
        for line in TIMINGS.lines():
            terminalreporter.write_line(line)


def _build(env: dict[str, str], timings: Timings) -> dict[str, str]:
    """Build the images; the env lines that name them."""
    started = time.monotonic()
    if os.environ.get("TENSORGATE_DEPLOY_IMAGES") == "public":
        subprocess.run(["docker-compose", "build"], cwd=ROOT, check=True, timeout=1800)
        subprocess.run(["docker-compose", "pull", "redis", "prometheus"], cwd=ROOT, check=True, timeout=600)
        timings.add("build tensorgate:cpu, pull redis + prometheus", started)
        return {}
    result = subprocess.run([str(ROOT / "deploy" / "docker" / "local-images.sh")], cwd=ROOT, capture_output=True,
                            text=True, timeout=1200, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    timings.add("build images (local Debian base; local-images.sh)", started)
    lines = [line.split("=", 1) for line in result.stdout.splitlines() if "=" in line and not line.startswith("#")]
    return dict(lines)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, timings: Timings) -> Iterator[tuple[Compose, dict[str, int]]]:
    """(compose, host ports) of a stack that is up and healthy; `down -v` afterwards."""
    images = _build(dict(os.environ), timings)
    ports = {"gateway": free_port(), "prometheus": free_port()}
    env_file = tmp_path_factory.mktemp("compose") / "test.env"
    settings = {
        **images,
        "TENSORGATE_REDIS_PASSWORD": secrets.token_hex(16),
        "TENSORGATE_PUBLISH_ADDRESS": "127.0.0.1",  # traffic stays on this machine
        "TENSORGATE_GATEWAY_HOST_PORT": str(ports["gateway"]),
        "PROMETHEUS_HOST_PORT": str(ports["prometheus"]),
        "GRAFANA_HOST_PORT": str(free_port()),
        "TENSORGATE_MODEL_CLAIM_IDLE_MS": str(CLAIM_IDLE_MS),
    }
    env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    compose = Compose(f"tgtest{secrets.token_hex(3)}", env_file)
    started = time.monotonic()
    try:
        # up -d returns once each service's dependencies are healthy and it is started; the
        # gateway starts only after every model service turned healthy.
        compose.run("up", "-d", "--no-build", *SERVICES, timeout_s=600)
        compose.wait_healthy(SERVICES, timeout_s=240)
        timings.add("docker-compose up -d until every service is healthy", started)
        yield compose, ports
    finally:
        started = time.monotonic()
        compose.run("down", "-v", "--remove-orphans", "--timeout", "20", timeout_s=300, check=False)
        timings.add("docker-compose down -v", started)
