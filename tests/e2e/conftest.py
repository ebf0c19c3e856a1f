"""One local stack (`python -m services.stack`) over the shipped model repository, shared by the
end-to-end tests that call its models through the gateway."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support import free_port, start_stack


@dataclass(frozen=True)
class Shipped:
    url: str  # the gateway, host:port
    metrics_port: int  # the gateway's /metrics


@pytest.fixture(scope="package")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shipped]:
    state = tmp_path_factory.mktemp("stack")
    port, metrics_port = free_port(), free_port()
    command = [sys.executable, "-m", "services.stack", "--port", str(port), "--metrics-port", str(metrics_port),
               "--model-base-port", str(free_port()), "--model-metrics-base-port", str(free_port()),
               "--redis-port", str(free_port()), "--no-prometheus", "--state-dir", str(state)]
    process, lines = start_stack(command)
    try:
        assert process.poll() is None, "".join(lines)
        yield Shipped(f"127.0.0.1:{port}", metrics_port)
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)


@pytest.fixture(scope="package")
def gateway(shipped: Shipped) -> str:
    return shipped.url
