"""The model service's own KServe backend: direct, unqueued inference for debugging and
internal callers (no batching; the queue path is services.modelservice.worker)."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor

import redis.asyncio as aioredis

from services.errors import DeadlineExceeded
from services.grpc.handlers import InferCall
from services.grpc.statistics import execution_fields
from services.modelservice.runners import Model
from services.queue.counters import StatisticsBuffer, read_statistics
from services.repository import ModelSpec
from services.tensors import build_response
from services.validation import ValidRequest


class DirectBackend:
    def __init__(self, spec: ModelSpec, model: Model, redis: aioredis.Redis, executor: Executor,
                 statistics: StatisticsBuffer) -> None:
        self.specs = {spec.name: spec}
        self._model = model
        self._redis = redis
        self._executor = executor
        self._statistics = statistics
        self.ready = False  # set once warmed up; cleared on shutdown

    async def server_ready(self) -> bool:
        return self.ready

    async def model_ready(self, spec: ModelSpec) -> bool:
        return self.ready

    async def infer(self, spec: ModelSpec, call: InferCall, valid: ValidRequest, deadline: float) -> bytes:
        started = time.perf_counter_ns()
        work = self._model.infer(valid.inputs, valid.outputs, dict(valid.options), self._executor)
        try:
            outputs = await asyncio.wait_for(work, max(0.0, deadline - time.time()))
        except TimeoutError as err:
            raise DeadlineExceeded(f"model '{spec.name}' did not answer within the deadline") from err
        elapsed = time.perf_counter_ns() - started
        self._statistics.add(spec.name, execution_fields(valid.rows, 1, (0, elapsed, 0)))
        return build_response(spec.name, spec.version, call.request.id, outputs).SerializeToString()

    async def statistics(self, spec: ModelSpec) -> dict[str, int]:
        await self._statistics.flush()
        return await read_statistics(self._redis, spec.name)
