"""The gateway's backend: admit a request onto its model's stream and wait for the reply.

Each gateway reads its own reply stream and resolves the waiting call by request id; a reply
for a call that already ended (timed out, or a duplicate after a redelivery) is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter

from redis.exceptions import RedisError

from services.coalesce import Coalescer
from services.errors import DeadlineExceeded, QueueFull, Unavailable, from_status
from services.grpc.handlers import InferCall
from services.grpc.statistics import duration_fields
from services.metrics import Metrics
from services.queue import streams
from services.queue.counters import StatisticsBuffer, read_statistics
from services.queue.messages import ReplyEntry, RequestEntry
from services.repository import ModelSpec
from services.settings import GatewaySettings
from services.validation import ValidRequest

log = logging.getLogger(__name__)

READY_CACHE_S = 0.5  # replica heartbeats are read at most this often per model
REPLY_BLOCK_MS = 1000

Submission = tuple[ModelSpec, RequestEntry]


class QueueBackend:
    def __init__(self, settings: GatewaySettings, specs: dict[str, ModelSpec], metrics: Metrics) -> None:
        self.specs = specs
        self._settings = settings
        self._metrics = metrics
        self._redis = streams.connect(settings.redis_url, settings.redis_timeout_s)
        # The reply reader blocks; its own connection's timeout outlasts the block.
        self._reply_redis = streams.connect(settings.redis_url, settings.redis_timeout_s + REPLY_BLOCK_MS / 1000)
        self._producer = streams.RequestProducer(self._redis)
        # Requests that arrive together reach Redis in one script call per model.
        self._enqueues: Coalescer[Submission, bool] = Coalescer(self._enqueue_together)
        self._replies = streams.ReplyReader(self._reply_redis, settings.gateway_id)
        self._waiting: dict[str, asyncio.Future[ReplyEntry]] = {}
        self._inflight: Counter[str] = Counter()  # per model: calls awaiting a reply (the batcher's hint)
        metrics.reply_waiters.set_function(lambda: len(self._waiting))
        self._ready: dict[str, tuple[float, bool]] = {}
        self._statistics = StatisticsBuffer(self._redis)
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    async def start(self) -> None:
        await self._redis.ping()
        self._tasks = [asyncio.create_task(self._read_replies()), asyncio.create_task(self._statistics.run())]

    async def stop(self) -> None:
        # The flag, not only the cancel, ends the loops: a cancel that lands inside a redis-py
        # read can come back as a timeout error, which the loops would retry forever.
        self._closing = True
        await self._statistics.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.wait(self._tasks, timeout=self._settings.redis_timeout_s + REPLY_BLOCK_MS / 1000)
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(Unavailable("gateway is shutting down"))
        try:
            await self._replies.close()
        except RedisError:
            pass
        await self._redis.aclose()
        await self._reply_redis.aclose()

    # -- readiness ------------------------------------------------------------------
    async def ping(self) -> None:
        await self._redis.ping()

    async def server_ready(self) -> bool:
        try:
            await self._redis.ping()
        except RedisError:
            return False
        return all([await self.model_ready(spec) for spec in self.specs.values()])

    async def model_ready(self, spec: ModelSpec) -> bool:
        try:
            return await self._has_replica(spec)
        except Unavailable:
            return False

    async def _has_replica(self, spec: ModelSpec) -> bool:
        """A live replica heartbeat exists (cached briefly); Unavailable when Redis is unreachable."""
        now = time.monotonic()
        cached = self._ready.get(spec.name)
        if cached and now - cached[0] < READY_CACHE_S:
            return cached[1]
        try:
            ready = await streams.ready_replicas(self._redis, spec.name, self._settings.replica_ttl_s) > 0
        except (RedisError, TimeoutError) as err:
            raise Unavailable(f"the queue of model '{spec.name}' cannot be reached") from err
        self._ready[spec.name] = (now, ready)
        return ready

    # -- inference ------------------------------------------------------------------
    async def infer(self, spec: ModelSpec, call: InferCall, valid: ValidRequest, deadline: float) -> bytes:
        started = time.perf_counter_ns()
        try:
            reply = await self._submit(spec, call.raw, deadline)
        except Exception:
            self._count(spec, "fail", started)
            raise
        if reply.code != 0:
            self._count(spec, "fail", started)
            raise from_status(reply.code, reply.message)
        self._count(spec, "success", started)
        return reply.payload

    async def _submit(self, spec: ModelSpec, payload: bytes, deadline: float) -> ReplyEntry:
        """Queue the request exactly as the client sent it (validated, never re-serialised)."""
        if not await self._has_replica(spec):
            raise Unavailable(f"model '{spec.name}' has no ready replica")
        request_id = uuid.uuid4().hex
        self._inflight[spec.name] += 1
        entry = RequestEntry(request_id, self._replies.stream, deadline, time.time(), payload,
                             inflight=self._inflight[spec.name])
        future: asyncio.Future[ReplyEntry] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        try:
            try:
                accepted = await self._enqueues.submit((spec, entry))
            except (RedisError, TimeoutError) as err:
                raise Unavailable(f"the queue of model '{spec.name}' cannot be reached") from err
            if not accepted:
                raise QueueFull(f"the queue of model '{spec.name}' is full ({spec.max_queue_size} requests)")
            try:
                return await asyncio.wait_for(future, max(0.0, deadline - time.time()))
            except TimeoutError as err:
                raise DeadlineExceeded(f"model '{spec.name}' did not answer within the deadline") from err
        finally:
            self._waiting.pop(request_id, None)
            self._inflight[spec.name] -= 1

    async def _enqueue_together(self, submissions: list[Submission]) -> list[bool]:
        """One script call per model for everything submitted together; results in order."""
        by_model: dict[str, list[int]] = {}
        for i, (spec, _) in enumerate(submissions):
            by_model.setdefault(spec.name, []).append(i)
        calls = [self._producer.enqueue(name, [submissions[i][1] for i in members], submissions[members[0]][0].max_queue_size)
                 for name, members in by_model.items()]
        accepted = [False] * len(submissions)
        for members, flags in zip(by_model.values(), await asyncio.gather(*calls)):
            for i, flag in zip(members, flags):
                accepted[i] = flag
        return accepted

    def _count(self, spec: ModelSpec, outcome: str, started_ns: int) -> None:
        """Add to this gateway's statistics buffer (no Redis round trip on the request path)."""
        self._statistics.add(spec.name, duration_fields(outcome, 1, time.perf_counter_ns() - started_ns), inference=False)

    async def _read_replies(self) -> None:
        while not self._closing:
            try:
                replies = await self._replies.read(REPLY_BLOCK_MS)
            except (RedisError, TimeoutError) as err:
                log.warning("reading replies failed (%s); retrying", err)
                await asyncio.sleep(0.5)
                continue
            for reply in replies:
                future = self._waiting.get(reply.request_id)
                if future is None or future.done():
                    self._metrics.dropped_replies.inc()
                else:
                    future.set_result(reply)

    async def statistics(self, spec: ModelSpec) -> dict[str, int]:
        await self._statistics.flush()
        try:
            return await read_statistics(self._redis, spec.name)
        except RedisError as err:
            raise Unavailable("statistics store cannot be reached") from err
