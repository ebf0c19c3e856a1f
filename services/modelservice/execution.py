"""Running one dynamic batch on one model version: prepare each request, group what can share a
model call, concatenate, run, split the outputs back per request.

A batch runs in the version's executor thread, or on the event loop when its recent cost says it
takes less than the hand-off to a thread and back (`runs_inline`: a 0.07 ms MLP call costs
more in thread wake-ups, GIL hand-overs and the loop's self-pipe than it computes).

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


ROW_COST_SMOOTHING = 0.2  # weight of the newest batch in LoadedVersion.row_cost_ns


ALONE_INLINE_MAX_US = 2000  # the limit for a lone request that is all its gateway has in flight


def inline_limit_us(limit_us: int, alone: bool) -> int:
    """The limit runs_inline applies: `limit_us`, or up to ALONE_INLINE_MAX_US for a batch of one
    request that is all its gateway has in flight (intake.missing_inflight is 0: a closed-loop
    client waits for this answer), since then nothing can arrive for the event loop to gather
    while it runs, and the thread's hand-off is pure cost. 0 (always a thread) stays 0."""
    return max(limit_us, ALONE_INLINE_MAX_US) if alone and limit_us > 0 else limit_us


def runs_inline(version: LoadedVersion, requests: Sequence[ValidRequest], limit_us: int) -> bool:
    """Whether this batch may run on the event loop: one model instance (more run in parallel
    threads), a known recent cost per row that puts the batch under `limit_us`, and no BYTES
    input (an encoded image or text is decoded in `prepare`, whose cost the tensors' does not
    predict)."""
    if limit_us <= 0 or version.spec.instance_count > 1 or version.row_cost_ns <= 0:
        return False
    rows = sum(r.rows for r in requests)
    if version.row_cost_ns * rows > limit_us * 1000:
        return False
    return all(array.dtype != object for r in requests for array in r.inputs.values())


def run_batch(version: LoadedVersion, requests: Sequence[ValidRequest], outputs: list[str], metrics: Metrics,
              max_deliveries: int) -> tuple[list[Result], Spans]:
    """Every request's result (outputs, the TensorgateError that refused it, or Poison) and the
    batch's spans; updates the version's cost per row."""
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
    rows = sum(r.rows for r in requests)
    metrics.batch_size.labels(name, label).observe(rows)
    metrics.compute_duration.labels(name, label).observe(sum(spans) / 1e9)
    if rows:
        cost = (time.perf_counter_ns() - t0) / rows
        previous = version.row_cost_ns
        version.row_cost_ns = cost if previous <= 0 else previous + ROW_COST_SMOOTHING * (cost - previous)
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
