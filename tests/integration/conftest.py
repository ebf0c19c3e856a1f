"""A real topology for the integration tests: redis-server, model services and the gateway as
separate processes on free ports, over a repository of tiny models.

Models: `mnist_mlp` (tiny linear stand-in, batching window 5 ms), `small_queue` (queue of 4;
tests pause its replica with SIGSTOP), `orphan` (no replica at all), `reclaim` (a replica quick to take over stale entries),
`wide_window` (a 300 ms batching window, for the adaptive batcher), `poison` (a runner that fails
on negative pixels, tests/faults.py).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tensorgate.proto import grpc_service_pb2_grpc
from tests.support import RedisServer, ServiceProcess, make_tiny_repository, start_gateway, start_model_service


@dataclass
class Stack:
    repo: Path
    redis: RedisServer
    gateway: ServiceProcess
    services: dict[str, ServiceProcess]
    logs: Path

    def stub(self, port: int | None = None) -> grpc_service_pb2_grpc.GRPCInferenceServiceStub:
        channel = grpc.insecure_channel(f"127.0.0.1:{port or self.gateway.grpc_port}")
        return grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)

    @contextmanager
    def paused(self, model: str) -> Iterator[None]:
        """Freeze a model's replica (SIGSTOP): it takes no work, and its last heartbeat stays
        within the gateway's replica TTL, so requests still queue up for it."""
        pid = self.services[model].process.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("stack")
    repo = root / "models"
    make_tiny_repository(repo, "mnist_mlp", max_batch_size=64, delay_us=5000)
    make_tiny_repository(repo, "small_queue", max_batch_size=8, delay_us=1000, max_queue_size=4)
    make_tiny_repository(repo, "orphan")
    make_tiny_repository(repo, "reclaim")
    make_tiny_repository(repo, "wide_window", max_batch_size=64, delay_us=300_000)  # 300 ms batching window
    make_tiny_repository(repo, "poison", max_batch_size=8, delay_us=500_000)
    with (repo / "poison" / "config.pbtxt").open("a") as config:  # fails on negative pixels (tests/faults.py)
        config.write('parameters { key: "runner" value: { string_value: "tests.faults:PoisonOnNegative" } }\n')
    logs = root / "logs"
    logs.mkdir()
    redis = RedisServer(root / "redis")
    services = {
        "mnist_mlp": start_model_service(repo, "mnist_mlp", redis.url, logs),
        "small_queue": start_model_service(repo, "small_queue", redis.url, logs),
        "wide_window": start_model_service(repo, "wide_window", redis.url, logs),
        "poison": start_model_service(repo, "poison", redis.url, logs, max_deliveries="3"),
        # Takes over entries idle for 0.5 s; the third delivery of one goes to the dead-letter stream.
        "reclaim": start_model_service(repo, "reclaim", redis.url, logs, claim_idle_ms="500", claim_interval_s="0.2",
                                       max_deliveries="3"),
    }
    # A long replica TTL keeps a paused (SIGSTOP) replica counted as ready, so requests queue up.
    gateway = start_gateway(repo, redis.url, logs, replica_ttl_s="60")
    try:
        for process in [*services.values(), gateway]:
            process.wait_serving()
        yield Stack(repo, redis, gateway, services, logs)
    finally:
        for process in [gateway, *services.values()]:
            process.stop()
        redis.stop()
