"""Running one dynamic batch on one model version, in an executor thread: prepare each request,
group what can share a model call, concatenate, run, split the outputs back per request.

A model failure is narrowed down by halving the group until the request that fails alone is
found; its batch-mates are answered, and it is tried `max_deliveries` times on its own before
it counts as poison (services.modelservice.worker dead-letters it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tensorgate.errors import TensorgateError
from services.metrics import Metrics
from services.modelservice.versions import LoadedVersion
from tensorgate.tensors import split_rows
from services.validation import ValidRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Poison:
    """A request the model failed on alone, on every attempt."""

    reason: str


Result = dict[str, np.ndarray] | TensorgateError | Poison  # one request's outcome of a batch
Spans = tuple[int, int, int]  # (compute_input, compute_infer, compute_output) nanoseconds


def run_batch(version: LoadedVersion, requests: Sequence[ValidRequest], outputs: list[str], metrics: Metrics,
              max_deliveries: int) -> tuple[list[Result], Spans]:
    """Executor thread: every request's result (outputs, the TensorgateError that refused it, or
    Poison) and the batch's spans."""
    results: list[Result] = [{} for _ in requests]
    spans = [0, 0, 0]
    t0 = time.perf_counter_ns()
    prepared: dict[int, dict[str, np.ndarray]] = {}
    for i, valid in enumerate(requests):
        try:
            prepared[i] = version.model.prepare(valid.inputs)
        except TensorgateError as err:  # e.g. an undecodable image: this request alone fails
            results[i] = err
    spans[0] += time.perf_counter_ns() - t0
    # Requests with different options (e.g. beam sizes), inputs, or shapes past the batch dim
    # (an image model with dynamic height and width) cannot share one model call: they run in
    # separate groups of the batch, as Triton does without ragged batching.
    groups: dict[tuple[object, ...], list[int]] = {}
    for i, inputs in prepared.items():
        shapes = tuple((name, inputs[name].shape[1:]) for name in sorted(inputs))
        groups.setdefault((requests[i].options, shapes), []).append(i)
    group_run = _GroupRun(version, requests, prepared, outputs, results, spans, max_deliveries)
    for members in groups.values():
        group_run.run(members)
    name, label = version.spec.name, version.version
    metrics.batch_size.labels(name, label).observe(sum(r.rows for r in requests))
    metrics.compute_duration.labels(name, label).observe(sum(spans) / 1e9)
    return results, (spans[0], spans[1], spans[2])


@dataclass
class _GroupRun:
    version: LoadedVersion
    requests: Sequence[ValidRequest]
    prepared: dict[int, dict[str, np.ndarray]]
    outputs: list[str]
    results: list[Result]
    spans: list[int]
    max_deliveries: int

    def run(self, members: list[int]) -> None:
        """Run requests of equal options and shapes in one model call; on a failure split the
        group in halves and run each, down to the request that fails alone."""
        t0 = time.perf_counter_ns()
        prepared, group = self.prepared, [self.requests[i] for i in members]
        batching = self.version.spec.max_batch_size > 0
        rows = [r.rows for r in group]
        names = list(prepared[members[0]])
        if len(members) == 1 or not batching:
            feed = prepared[members[0]]
        else:
            feed = {name: np.concatenate([prepared[i][name] for i in members]) for name in names}
        t1 = time.perf_counter_ns()
        attempts = self.max_deliveries if len(members) == 1 else 1
        failure = ""
        for _ in range(max(1, attempts)):
            try:
                merged = self.version.model.run(feed, self.outputs, dict(group[0].options))
                break
            except Exception as err:  # the model itself failed: find the culprit
                failure = f"{type(err).__name__}: {err}"
                log.warning("model call over %d request(s) failed: %s", len(members), failure)
        else:
            self.spans[1] += time.perf_counter_ns() - t1
            if len(members) == 1:
                self.results[members[0]] = Poison(failure)
                return
            half = len(members) // 2
            self.run(members[:half])
            self.run(members[half:])
            return
        t2 = time.perf_counter_ns()
        if batching and len(members) > 1:
            parts = {k: split_rows(v, rows) for k, v in merged.items()}
            for n, (i, r) in enumerate(zip(members, group)):
                self.results[i] = {k: parts[k][n] for k in r.outputs}
        else:
            self.results[members[0]] = {k: merged[k] for k in group[0].outputs}
        t3 = time.perf_counter_ns()
        self.spans[0] += t1 - t0
        self.spans[1] += t2 - t1
        self.spans[2] += t3 - t2
