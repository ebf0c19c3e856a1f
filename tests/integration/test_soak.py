"""A soak at half the measured capacity: no errors, and the resident memory of every process
(gateway, model service, redis-server) flat after warm-up (slope < 1 MB/min).

`make soak` runs it for 5 minutes (TENSORGATE_SOAK_S=300); `make test` for 30 s."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from tensorgate.proto import grpc_service_pb2_grpc
from tests.integration.test_gateway import infer_request
from tests.support import small_stack

pytestmark = pytest.mark.integration

SOAK_S = float(os.environ.get("TENSORGATE_SOAK_S", "30"))
CLIENTS = 8


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def slope_mb_per_min(samples: list[tuple[float, float]]) -> float:
    t = np.array([s[0] for s in samples])
    m = np.array([s[1] for s in samples])
    return float(np.polyfit(t, m, 1)[0] * 60)


def test_soak_at_half_capacity(tmp_path: Path) -> None:
    with small_stack(tmp_path) as stack:
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{stack.gateway.grpc_port}"))
        image = np.full((1, 1, 28, 28), 0.5, np.float32)
        request = infer_request(image)

        # Capacity: closed-loop clients for 3 s.
        stop_at = time.monotonic() + 3
        def flat_out(_: int) -> int:
            n = 0
            while time.monotonic() < stop_at:
                stub.ModelInfer(request, timeout=10)
                n += 1
            return n
        with ThreadPoolExecutor(CLIENTS) as pool:
            capacity = sum(pool.map(flat_out, range(CLIENTS))) / 3
        rate = capacity / 2
        interval = CLIENTS / rate  # each client's pace

        pids = {"gateway": stack.gateway.process.pid, "model service": stack.service.process.pid,
                "redis-server": stack.redis.process.pid}
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in pids}
        errors: list[str] = []
        sent = [0]
        lock = threading.Lock()
        started = time.monotonic()
        end = started + SOAK_S

        def paced(i: int) -> None:
            next_at = time.monotonic() + i * interval / CLIENTS
            while next_at < end:
                time.sleep(max(0.0, next_at - time.monotonic()))
                try:
                    stub.ModelInfer(request, timeout=10)
                except grpc.RpcError as err:
                    errors.append(f"{err.code().name}: {err.details()}")
                with lock:
                    sent[0] += 1
                next_at += interval

        with ThreadPoolExecutor(CLIENTS) as pool:
            for i in range(CLIENTS):
                pool.submit(paced, i)
            while time.monotonic() < end:
                now = time.monotonic() - started
                for name, pid in pids.items():
                    samples[name].append((now, rss_mb(pid)))
                time.sleep(1.0)
        warm = SOAK_S / 3  # the first third is warm-up (caches, allocator pools)
        slopes = {name: slope_mb_per_min([s for s in series if s[0] >= warm]) for name, series in samples.items()}
        print(f"\ncapacity {capacity:.0f}/s, soak at {rate:.0f}/s for {SOAK_S:.0f}s: {sent[0]} requests, "
              f"{len(errors)} errors; RSS slope after warm-up (MB/min): "
              + ", ".join(f"{n} {v:+.2f} ({series[-1][1]:.0f} MB)" for (n, v), series in zip(slopes.items(), samples.values())))
        assert not errors, errors[:5]
        assert sent[0] >= 0.8 * rate * SOAK_S
        for name, value in slopes.items():
            assert value < 1.0, f"{name}: resident memory grows {value:.2f} MB/min"
