"""The model service's own KServe backend: direct, unqueued inference for debugging and
internal callers (no batching; the queue path is services.modelservice.worker)."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor

import redis.asyncio as aioredis

from services.errors import DeadlineExceeded
from services.grpc.statistics import execution_fields
from services.modelservice.runner import Model
from services.proto import grpc_service_pb2 as pb
from services.queue import streams
from services.repository import ModelSpec
from services.tensors import build_response
from services.validation import ValidRequest


class DirectBackend:
    def __init__(self, spec: ModelSpec, model: Model, redis: aioredis.Redis, executor: Executor) -> None:
        self.specs = {spec.name: spec}
        self._model = model
        self._redis = redis
        self._executor = executor
        self.ready = False  # set once warmed up; cleared on shutdown

    async def server_ready(self) -> bool:
        return self.ready

    async def model_ready(self, spec: ModelSpec) -> bool:
        return self.ready

    async def infer(
        self, spec: ModelSpec, request: pb.ModelInferRequest, valid: ValidRequest, deadline: float
    ) -> pb.ModelInferResponse:
        started = time.perf_counter_ns()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._model.run, valid.inputs, list(valid.outputs),
                                      dict(valid.options))
        try:
            outputs = await asyncio.wait_for(future, max(0.0, deadline - time.time()))
        except TimeoutError as err:
            raise DeadlineExceeded(f"model '{spec.name}' did not answer within the deadline") from err
        elapsed = time.perf_counter_ns() - started
        await streams.add_statistics(self._redis, spec.name, execution_fields(valid.rows, 1, (0, elapsed, 0)))
        return build_response(spec.name, spec.version, request.id, outputs)

    async def statistics(self, spec: ModelSpec) -> dict[str, int]:
        return await streams.read_statistics(self._redis, spec.name)
