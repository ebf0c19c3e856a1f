"""Load, overload and deadlines through a real gateway: 1,000 valid requests all answered with
nothing left pending; several times the capacity with the replica frozen gets RESOURCE_EXHAUSTED
fast and Redis stays bounded; short deadlines against a slow model end on time; cancelled calls
leave no waiter behind. Each test prints its figures."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import redis

from tensorgate.proto import grpc_service_pb2_grpc
from services.queue import keys
from tensorgate.tensors import response_outputs
from tests.integration.test_gateway import infer_request
from tests.support import make_tiny_repository, scrape, small_stack

pytestmark = pytest.mark.integration


def stub_for(port: int) -> grpc_service_pb2_grpc.GRPCInferenceServiceStub:
    return grpc_service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))


@contextmanager
def frozen_later(pid: int) -> Iterator[None]:
    """Whatever the test does with SIGSTOP, the process runs again (SIGCONT) on the way out."""
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def p99(values: list[float]) -> float:
    return float(np.percentile(values, 99))


def test_thousand_valid_requests_all_correct_nothing_pending(tmp_path: Path) -> None:
    repo = make_tiny_repository(tmp_path / "models", "mnist_mlp", delay_us=2000)
    with small_stack(tmp_path, repo) as stack:
        stub = stub_for(stack.gateway.grpc_port)
        rng = np.random.default_rng(1)
        images = rng.random((1000, 1, 1, 28, 28), dtype=np.float32)
        session = ort.InferenceSession(str(repo / "mnist_mlp" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
        expected = session.run(None, {"image": images.reshape(1000, 1, 28, 28)})[0]
        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(lambda i: stub.ModelInfer(infer_request(images[i], request_id=f"v{i}"), timeout=20),
                                      range(1000)))
        elapsed = time.monotonic() - started
        got = np.concatenate([response_outputs(r)["probabilities"] for r in responses])
        print(f"\n1,000 requests at concurrency 16 in {elapsed:.2f}s ({1000 / elapsed:.0f}/s), max |diff| "
              f"{np.abs(got - expected).max():.2e}")
        assert [r.id for r in responses] == [f"v{i}" for i in range(1000)]
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert redis.Redis.from_url(stack.redis.url).xpending(keys.request_stream("mnist_mlp"), keys.GROUP)["pending"] == 0


def test_overload_with_the_replica_frozen_is_refused_fast_and_recovers(tmp_path: Path) -> None:
    repo = make_tiny_repository(tmp_path / "models", "mnist_mlp", delay_us=2000, max_queue_size=64)
    # replica_ttl_s: a frozen replica still counts as ready, so requests queue up for it.
    with small_stack(tmp_path, repo, gateway_env={"replica_ttl_s": "60"}) as stack, frozen_later(stack.service.process.pid):
        model, r = stack.service, redis.Redis.from_url(stack.redis.url)
        stub = stub_for(stack.gateway.grpc_port)
        image = np.full((1, 1, 28, 28), 0.5, np.float32)
        stub.ModelInfer(infer_request(image), timeout=10)
        memory_before = int(r.info("memory")["used_memory"])
        os.kill(model.process.pid, signal.SIGSTOP)

        # 80 closed-loop clients for 2 s against a queue of 64 places and no one taking work: 64 end
        # up waiting in the queue, the others are refused again and again.
        stop_at = time.monotonic() + 2.0
        refused: list[float] = []
        accepted: list[grpc.StatusCode] = []

        def client(i: int) -> None:
            n = 0
            while time.monotonic() < stop_at:
                started = time.monotonic()
                try:
                    stub.ModelInfer(infer_request(image, request_id=f"o{i}-{n}"), timeout=30)
                    accepted.append(grpc.StatusCode.OK)
                except grpc.RpcError as err:
                    if err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                        accepted.append(err.code())
                        return
                    refused.append(time.monotonic() - started)
                n += 1

        with ThreadPoolExecutor(80) as pool:
            for i in range(80):
                pool.submit(client, i)
            time.sleep(2.5)
            queued = r.xlen(keys.request_stream("mnist_mlp"))
            memory_during = int(r.info("memory")["used_memory"])
            os.kill(model.process.pid, signal.SIGCONT)
        codes = accepted + [grpc.StatusCode.RESOURCE_EXHAUSTED] * len(refused)
        print(f"\n80 clients for 2 s on a 64-place queue, replica frozen: {len(refused)} RESOURCE_EXHAUSTED "
              f"(p99 {1000 * p99(refused):.1f} ms), {codes.count(grpc.StatusCode.OK)} OK after "
              f"SIGCONT; queue held {queued}; Redis memory +{(memory_during - memory_before) / 1e6:.2f} MB")
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, set(codes)
        assert len(refused) >= 300 and p99(refused) < 0.05
        assert queued <= 64 and memory_during - memory_before < 5e6
        assert codes.count(grpc.StatusCode.OK) >= 64 - 1  # what was accepted is answered
        assert stub.ModelInfer(infer_request(image), timeout=10).outputs  # full service again


def test_short_deadlines_against_a_slow_model_and_cancelled_calls(tmp_path: Path) -> None:
    repo = make_tiny_repository(tmp_path / "models", "mnist_mlp", delay_us=1000)
    with (repo / "mnist_mlp" / "config.pbtxt").open("a") as config:
        config.write('parameters { key: "runner" value: { string_value: "tests.faults:SlowModel" } }\n'
                     'parameters { key: "slow_ms" value: { string_value: "300" } }\n')
    with small_stack(tmp_path, repo) as stack:
        gateway = stack.gateway
        stub = stub_for(gateway.grpc_port)
        image = np.full((1, 1, 28, 28), 0.5, np.float32)

        def call(i: int) -> tuple[grpc.StatusCode, float]:
            started = time.monotonic()
            try:
                stub.ModelInfer(infer_request(image), timeout=0.1)
                return grpc.StatusCode.OK, time.monotonic() - started
            except grpc.RpcError as err:
                return err.code(), time.monotonic() - started

        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(call, range(40)))
        late = [t for c, t in outcomes if c == grpc.StatusCode.DEADLINE_EXCEEDED]
        print(f"\n40 calls with 100 ms deadlines, model 300 ms: {len(late)} DEADLINE_EXCEEDED, slowest "
              f"{1000 * max(late):.1f} ms")
        assert len(late) == 40 and max(late) < 0.15

        # 500 calls cancelled while they wait: no waiter stays behind in the gateway.
        calls = [stub.ModelInfer.future(infer_request(image), timeout=30) for _ in range(500)]
        time.sleep(0.5)
        waiting = scrape(gateway.metrics_port)["tensorgate_reply_waiters"]
        for c in calls:
            c.cancel()
        deadline = time.monotonic() + 5
        while scrape(gateway.metrics_port)["tensorgate_reply_waiters"] > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        left = scrape(gateway.metrics_port)["tensorgate_reply_waiters"]
        print(f"500 calls cancelled: waiters {waiting:.0f} -> {left:.0f}")
        assert waiting > 0 and left == 0
        assert stub.ModelInfer(infer_request(image), timeout=10).outputs  # still serving
