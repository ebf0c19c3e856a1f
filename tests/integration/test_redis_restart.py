"""Redis restarted mid-load: nothing hangs; with the append-only file every queued request is
still answered; without it, the lost ones end with DEADLINE_EXCEEDED within their deadline; in
both cases full service is back within 5 s of Redis answering again."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from tensorgate.proto import grpc_service_pb2_grpc
from tests.integration.test_gateway import infer_request
from tests.integration.test_overload import frozen_later
from tests.support import make_tiny_repository, small_stack

pytestmark = pytest.mark.integration

DEADLINE_S = 5.0  # the tiny models' default_timeout_microseconds
ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


@pytest.mark.parametrize("appendonly", [True, False], ids=["aof", "no-aof"])
def test_redis_restart_with_requests_queued(tmp_path: Path, appendonly: bool) -> None:
    repo = make_tiny_repository(tmp_path / "models", "mnist_mlp", delay_us=2000)
    with small_stack(tmp_path, repo, appendonly=appendonly, gateway_env={"replica_ttl_s": "60"}) as stack, \
            frozen_later(stack.service.process.pid):
        model, server, gateway = stack.service, stack.redis, stack.gateway
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}"))
        image = np.full((1, 1, 28, 28), 0.5, np.float32)
        stub.ModelInfer(infer_request(image), timeout=10)

        def call(i: int) -> tuple[grpc.StatusCode, float]:
            started = time.monotonic()
            try:
                stub.ModelInfer(infer_request(image, request_id=f"q{i}"), timeout=30)
                return grpc.StatusCode.OK, time.monotonic() - started
            except grpc.RpcError as err:
                return err.code(), time.monotonic() - started

        def first_ok_after(back: float) -> float:
            """Seconds from Redis answering again to the first new request answered OK."""
            while True:
                code, _ = call(-1)
                if code == grpc.StatusCode.OK or time.monotonic() - back > 10:
                    return time.monotonic() - back
                time.sleep(0.05)

        os.kill(model.process.pid, signal.SIGSTOP)  # requests queue up in Redis
        with ThreadPoolExecutor(17) as pool:
            queued = [pool.submit(call, i) for i in range(16)]
            time.sleep(1.0)
            server.restart()
            back = time.monotonic()
            os.kill(model.process.pid, signal.SIGCONT)
            recovered = pool.submit(first_ok_after, back)
            outcomes = [f.result() for f in queued]
            recovery_s = recovered.result()
        codes = [c for c, _ in outcomes]
        print(f"\nAOF {'on' if appendonly else 'off'}: 16 queued requests across the restart -> "
              f"{ {c.name: codes.count(c) for c in set(codes)} }, slowest {max(t for _, t in outcomes):.2f}s")
        assert set(codes) <= ALLOWED, set(codes)
        assert max(t for _, t in outcomes) < DEADLINE_S + 1.0  # nothing hangs past its deadline
        if appendonly:
            assert codes == [grpc.StatusCode.OK] * 16  # the append-only file kept every queued request
        print(f"full service {recovery_s:.2f}s after Redis answered again")
        assert recovery_s < 5.0
