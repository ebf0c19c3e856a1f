"""The model service's own KServe backend: direct, unqueued inference for debugging and
internal callers (no batching; the queue path is services.modelservice.worker), and the
repository commands for this replica."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from tensorgate.errors import DeadlineExceeded, InternalError, ModelNotFound, TensorgateError
from services.grpc.backend import IndexEntry
from services.grpc.handlers import InferCall
from services.grpc.statistics import execution_fields
from services.modelservice.versions import ModelVersions
from services.queue.counters import StatisticsBuffer, read_statistics
from tensorgate.repository import ModelSpec
from tensorgate.tensors import build_response
from services.validation import ValidRequest


class DirectBackend:
    def __init__(self, versions: ModelVersions, redis: aioredis.Redis, statistics: StatisticsBuffer,
                 drain_s: float) -> None:
        self._versions = versions
        self.specs: dict[str, ModelSpec] = {}  # this replica's one model, newest version; kept in step by sync_specs
        self._redis = redis
        self._statistics = statistics
        self._drain_s = drain_s
        self.ready = False  # set once warmed up; cleared on shutdown
        self.sync_specs()
        versions.listeners.append(self.sync_specs)

    def sync_specs(self) -> None:
        default = self._versions.default
        if default is None:
            self.specs.pop(self._versions.name, None)
        else:
            self.specs[self._versions.name] = default.spec

    def version_spec(self, name: str, version: str) -> ModelSpec:
        return self._versions.get(version).spec

    def versions(self, name: str) -> list[str]:
        return sorted(self._versions.current, key=int)

    async def server_ready(self) -> bool:
        return self.ready and self._versions.accepting

    async def model_ready(self, spec: ModelSpec) -> bool:
        return self.ready and self._versions.accepting and spec.version in self._versions.current

    async def infer(self, spec: ModelSpec, call: InferCall, valid: ValidRequest, deadline: float) -> bytes:
        loaded = self._versions.get(spec.version)
        started = time.perf_counter_ns()
        loaded.running += 1
        try:
            work = loaded.model.infer(valid.inputs, valid.outputs, dict(valid.options), loaded.executor)
            outputs = await asyncio.wait_for(work, max(0.0, deadline - time.time()))
        except TimeoutError as err:
            raise DeadlineExceeded(f"model '{spec.name}' did not answer within the deadline") from err
        finally:
            loaded.running -= 1
        elapsed = time.perf_counter_ns() - started
        self._statistics.add(spec.name, loaded.version, execution_fields(valid.rows, 1, (0, elapsed, 0)))
        return build_response(spec.name, loaded.version, call.request.id, outputs).SerializeToString()

    async def statistics(self, name: str, version: str) -> dict[str, int]:
        await self._statistics.flush()
        return await read_statistics(self._redis, name, version)

    async def index(self) -> list[IndexEntry]:
        announced = self._versions.announcement().versions
        return [IndexEntry(self._versions.name, v, s.state, s.reason) for v, s in sorted(announced.items())
                if v] or [IndexEntry(self._versions.name, "", "UNAVAILABLE", "no version loaded")]

    def _own(self, name: str) -> None:
        if name != self._versions.name:
            raise ModelNotFound(f"this replica serves model '{self._versions.name}', not '{name}'")

    async def load(self, name: str) -> None:
        self._own(name)
        try:
            await self._versions.load()
        except TensorgateError:
            raise
        except Exception as err:
            raise InternalError(f"loading model '{name}' failed: {type(err).__name__}: {err}") from err

    async def unload(self, name: str) -> None:
        self._own(name)
        await self._versions.unload(self._drain_s)

