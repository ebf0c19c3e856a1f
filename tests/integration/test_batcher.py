"""The adaptive batcher through the real stack: a closed-loop client alone does not wait out the
batching window (nothing can join it), while requests that arrive together still share batches."""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from services.queue.counters import FLUSH_S
from tensorgate.proto import grpc_service_pb2 as pb
from tests.integration.conftest import Stack
from tests.integration.test_gateway import infer_request

pytestmark = pytest.mark.integration

MODEL = "wide_window"  # max_queue_delay 300 ms, preferred sizes from make_tiny_repository
IMAGE = np.full((1, 1, 28, 28), 0.5, np.float32)


def counts(stack: Stack, inferences: int = 0) -> tuple[int, int]:
    """(inference count, execution count), once the replicas' statistics (flushed on a timer)
    reach `inferences` and have settled: the same in two reads a few flushes apart, so that a
    late flush of earlier requests is not counted in the next round."""
    deadline = time.monotonic() + 5
    last: tuple[int, int] | None = None
    while True:
        stats = stack.stub().ModelStatistics(pb.ModelStatisticsRequest(name=MODEL), timeout=10).model_stats[0]
        now = (stats.inference_count, stats.execution_count)
        if (now[0] >= inferences and now == last) or time.monotonic() > deadline:
            return now
        last = now
        time.sleep(3 * FLUSH_S)


def test_a_lone_closed_loop_client_is_not_held_for_the_window(stack: Stack) -> None:
    stub = stack.stub()
    latencies = []
    for i in range(12):
        started = time.perf_counter()
        stub.ModelInfer(infer_request(IMAGE, model=MODEL, request_id=f"lone{i}"), timeout=10)
        latencies.append(time.perf_counter() - started)
    # The first waits the window (nothing measured yet), a probe now and then too; the rest go at once.
    assert statistics.median(latencies) < 0.1, latencies
    assert sum(t >= 0.25 for t in latencies) <= 4, latencies


def test_requests_that_arrive_together_still_share_batches(stack: Stack) -> None:
    stub = stack.stub()
    after = (0, 0)
    for round_ in range(3):  # waits that see arrivals teach the estimator that waiting pays
        before = counts(stack, after[0] if round_ else 0)
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: stub.ModelInfer(infer_request(IMAGE, model=MODEL), timeout=10), range(16)))
        after = counts(stack, before[0] + 16)
    inferences, executions = after[0] - before[0], after[1] - before[1]
    assert inferences == 16
    assert executions <= 8, f"16 requests arriving together ran in {executions} batches"
