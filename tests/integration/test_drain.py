"""Graceful shutdown: SIGTERM to a model service or the gateway loses no accepted request."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis

from tensorgate.proto import grpc_service_pb2 as pb
from tensorgate.proto import grpc_service_pb2_grpc
from tensorgate.tensors import add_input
from services.queue import keys
from tests.support import small_stack, start_model_service

pytestmark = pytest.mark.integration


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def read_statistics(url: str) -> dict[str, int]:
    raw = redis.Redis.from_url(url).hgetall(keys.statistics("mnist_mlp", "1"))
    return {k.decode(): int(v) for k, v in raw.items()}


def hammer(port: int, stop: threading.Event) -> list[grpc.StatusCode]:
    """Send requests from 8 threads until `stop` or the first refusal; return every call's status.

    (A thread ends on its first error rather than spin on a dead server: eight threads doing
    that can starve the gRPC client's locks for minutes on two cores.)"""
    stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    request = pb.ModelInferRequest(model_name="mnist_mlp")
    add_input(request, "image", np.zeros((1, 1, 28, 28), np.float32))

    def loop(_: int) -> list[grpc.StatusCode]:
        codes = []
        while not stop.is_set():
            try:
                stub.ModelInfer(request, timeout=10)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as err:
                codes.append(err.code())
                break
        return codes

    with ThreadPoolExecutor(8) as pool:
        return [code for codes in pool.map(loop, range(8)) for code in codes]


def test_sigterm_drains_model_service_then_gateway(tmp_path: Path) -> None:
    with small_stack(tmp_path) as stack:
        repo, redis, service, gateway = stack.repo, stack.redis, stack.service, stack.gateway
        stop = threading.Event()
        with ThreadPoolExecutor(1) as pool:
            codes = pool.submit(hammer, gateway.grpc_port, stop)
            time.sleep(1.0)
            assert service.stop() == 0  # SIGTERM: leaves the replica set, finishes what it holds
            assert redis_client(redis.url).xpending(keys.request_stream("mnist_mlp"), keys.GROUP)["pending"] == 0
            time.sleep(1.0)
            stop.set()
            seen = codes.result(timeout=60)
        assert seen.count(grpc.StatusCode.OK) > 20
        # After the only replica left, the gateway refuses at once; nothing times out or fails otherwise.
        assert set(seen) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, set(seen)
        assert grpc.StatusCode.UNAVAILABLE in seen

        service = stack.service = start_model_service(repo, "mnist_mlp", redis.url, tmp_path)
        service.wait_serving()
        time.sleep(0.6)  # past the gateway's readiness cache
        before = read_statistics(redis.url)
        stop = threading.Event()
        with ThreadPoolExecutor(1) as pool:
            codes = pool.submit(hammer, gateway.grpc_port, stop)
            time.sleep(1.0)
            assert gateway.stop() == 0  # in-flight calls finish; new connections are refused
            stop.set()
            seen = Counter(codes.result(timeout=60))
        after = read_statistics(redis.url)
        assert seen[grpc.StatusCode.OK] > 20
        # Calls caught in the instant the server stops accepting come back CANCELLED by gRPC itself,
        # before any handler saw them; every call the gateway did take (its statistics, flushed on
        # the way out) reached its client with OK.
        assert set(seen) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}, seen
        assert after.get("success_count", 0) - before.get("success_count", 0) == seen[grpc.StatusCode.OK]
        assert after.get("fail_count", 0) == before.get("fail_count", 0)
