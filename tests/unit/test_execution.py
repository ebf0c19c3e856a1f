"""Running one batch: the cost per row it leaves on its version, and which batches that cost lets
run on the event loop instead of an executor thread."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from services.metrics import Metrics
from services.modelservice.execution import run_batch, runs_inline
from services.modelservice.versions import LoadedVersion, build
from services.settings import ModelServiceSettings
from services.validation import ValidRequest
from tensorgate.repository import load_spec
from tests.support import make_tiny_repository


@pytest.fixture()
def version(tmp_path: Path) -> LoadedVersion:
    root = make_tiny_repository(tmp_path)
    spec = load_spec(root / "mnist_mlp", "1")
    loaded = build(spec, ModelServiceSettings(name="mnist_mlp", model_repository=root, intra_op_threads=1))
    yield loaded
    loaded.close()


def image_request(rows: int = 1) -> ValidRequest:
    return ValidRequest({"image": np.zeros((rows, 1, 28, 28), np.float32)}, rows, ("probabilities",))


def test_a_batch_leaves_its_cost_per_row_and_cheap_batches_may_run_inline(version: LoadedVersion) -> None:
    requests = [image_request(), image_request(3)]
    assert not runs_inline(version, requests, 10_000)  # no cost known yet: the first batch goes to a thread
    results, _ = run_batch(version, requests, ["probabilities"], Metrics(), max_deliveries=1)
    assert [r["probabilities"].shape for r in results] == [(1, 10), (3, 10)]  # type: ignore[index]
    first = version.row_cost_ns
    assert first > 0
    assert runs_inline(version, requests, 10_000)
    # The cost scales with the rows: a batch whose rows times the recent cost exceed the limit
    # runs in a thread; so does every batch when the limit is 0.
    limit_us = int(first * 4 / 1000) + 1
    assert runs_inline(version, requests, limit_us)
    assert not runs_inline(version, [image_request(64)], limit_us)
    assert not runs_inline(version, requests, 0)
    # Smoothed: after a stretch of slow batches (1 s a row), one fast batch moves the estimate a
    # fifth of the way, so one lucky batch does not move a slow model onto the event loop.
    version.row_cost_ns = 1e9
    run_batch(version, [image_request()], ["probabilities"], Metrics(), max_deliveries=1)
    assert 0.79e9 < version.row_cost_ns < 0.81e9


def test_bytes_inputs_and_parallel_instances_always_take_a_thread(version: LoadedVersion) -> None:
    run_batch(version, [image_request()], ["probabilities"], Metrics(), max_deliveries=1)
    encoded = ValidRequest({"image_bytes": np.array([b"\x89PNG..."], dtype=object)}, 1, ("probabilities",))
    assert not runs_inline(version, [image_request(), encoded], 10_000)  # decoding's cost is not the tensors'
    parallel = dataclasses.replace(version, spec=dataclasses.replace(version.spec, instance_count=2))
    parallel.row_cost_ns = version.row_cost_ns
    assert not runs_inline(parallel, [image_request()], 10_000)


def test_a_batch_holding_all_its_gateways_have_in_flight_may_run_inline_up_to_a_higher_limit(
        version: LoadedVersion) -> None:
    from services.modelservice.execution import ALONE_INLINE_MAX_US, inline_limit_us

    assert inline_limit_us(200, alone=False) == 200
    assert inline_limit_us(200, alone=True) == ALONE_INLINE_MAX_US
    assert inline_limit_us(5000, alone=True) == 5000  # a higher setting stands
    assert inline_limit_us(0, alone=True) == 0  # 0: always a thread, alone or not
    version.row_cost_ns = 500_000  # 0.5 ms a row: over the usual limit, under the alone one
    requests = [image_request(2)]
    assert not runs_inline(version, requests, inline_limit_us(200, alone=False))
    assert runs_inline(version, requests, inline_limit_us(200, alone=True))
    assert not runs_inline(version, [image_request(8)], inline_limit_us(200, alone=True))  # 4 ms: a thread
