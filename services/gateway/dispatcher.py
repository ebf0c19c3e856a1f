"""The gateway's backend: admit a request onto its model's stream and wait for the reply.

Each gateway reads its own reply stream and resolves the waiting call by request id; a reply
for a call that already ended (timed out, or a duplicate after a redelivery) is dropped.
Which models exist, and which replicas serve them, comes from services.gateway.catalog;
repository commands (load, unload) go to every replica of a model over Redis pub/sub, and
their answers come back on the same reply stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from services.coalesce import Coalescer
from tensorgate.errors import DeadlineExceeded, ModelNotFound, QueueFull, Unavailable, from_status
from services.gateway.catalog import REFRESH_S, Catalog
from services.grpc.backend import IndexEntry
from services.grpc.handlers import InferCall
from services.grpc.statistics import duration_fields
from services.metrics import Metrics
from services.queue import keys, streams
from services.queue.catalog import READY
from services.queue.counters import StatisticsBuffer, read_statistics
from services.queue.messages import ReplyEntry, RequestEntry
from tensorgate.repository import ModelSpec
from services.settings import GatewaySettings
from services.validation import ValidRequest

log = logging.getLogger(__name__)

REPLY_BLOCK_MS = 1000

Submission = tuple[ModelSpec, RequestEntry]


@dataclass
class _Gathering:
    """A repository command's answers: one per replica that received it."""

    future: asyncio.Future[list[ReplyEntry]]
    expected: int | None = None
    replies: list[ReplyEntry] = field(default_factory=list)

    def add(self, reply: ReplyEntry) -> None:
        self.replies.append(reply)
        self.settle()

    def settle(self) -> None:
        if self.expected is not None and len(self.replies) >= self.expected and not self.future.done():
            self.future.set_result(self.replies)


def _expire(future: asyncio.Future[ReplyEntry], model: str) -> None:
    if not future.done():
        future.set_exception(DeadlineExceeded(f"model '{model}' did not answer within the deadline"))


class QueueBackend:
    def __init__(self, settings: GatewaySettings, metrics: Metrics, catalog: Catalog | None = None) -> None:
        self._settings = settings
        self._metrics = metrics
        self._redis = streams.connect(settings.redis_url, settings.redis_timeout_s)
        # The reply reader blocks; its own connection's timeout outlasts the block.
        self._reply_redis = streams.connect(settings.redis_url, settings.redis_timeout_s + REPLY_BLOCK_MS / 1000)
        self._producer = streams.RequestProducer(self._redis)
        # Requests that arrive together reach Redis in one script call per model.
        self._enqueues: Coalescer[Submission, bool] = Coalescer(self._enqueue_together)
        self._replies = streams.ReplyReader(self._reply_redis, settings.gateway_id)
        self.catalog = catalog or Catalog.with_repository(self._redis, settings.replica_ttl_s, settings.model_repository)
        self.specs = self.catalog.specs  # the same dict, updated in place as models come and go
        self._waiting: dict[str, asyncio.Future[ReplyEntry]] = {}
        self._commands: dict[str, _Gathering] = {}
        self._inflight: Counter[str] = Counter()  # per model: calls awaiting a reply (the batcher's hint)
        metrics.reply_waiters.set_function(lambda: len(self._waiting))
        self._statistics = StatisticsBuffer(self._redis)
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    async def start(self) -> None:
        await self._redis.ping()
        await self.catalog.refresh()
        self._tasks = [asyncio.create_task(self._read_replies()), asyncio.create_task(self._statistics.run()),
                       asyncio.create_task(self._follow_catalog())]

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
        await self._producer.close()
        await self._redis.aclose()
        await self._reply_redis.aclose()

    # -- the catalogue and readiness --------------------------------------------------
    async def _follow_catalog(self) -> None:
        while not self._closing:
            await asyncio.sleep(REFRESH_S)
            try:
                await self.catalog.refresh()
            except (RedisError, TimeoutError) as err:
                log.warning("reading the model catalogue failed (%s); retrying", err)

    def version_spec(self, name: str, version: str) -> ModelSpec:
        return self.catalog.version_spec(name, version)

    def versions(self, name: str) -> list[str]:
        return self.catalog.versions(name)

    async def index(self) -> list[IndexEntry]:
        entries = self.catalog.index()
        if any(entry.state != READY for entry in entries):  # a replica may have come up since the last read
            await self.catalog.refresh_on_miss()
            entries = self.catalog.index()
        return entries

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
            return await self._has_replica(spec, spec.version)
        except Unavailable:
            return False

    async def _has_replica(self, spec: ModelSpec, version: str = "") -> bool:
        """A ready replica serves it (as of the last catalogue read, at most REFRESH_S old, read
        again when it says no); Unavailable when Redis has been unreachable for longer than a
        heartbeat lives."""
        self.catalog.check_fresh(spec.name)
        if self.catalog.ready(spec.name, version):
            return True
        await self.catalog.refresh_on_miss()
        self.catalog.check_fresh(spec.name)
        return self.catalog.ready(spec.name, version)

    # -- inference ------------------------------------------------------------------
    async def infer(self, spec: ModelSpec, call: InferCall, valid: ValidRequest, deadline: float) -> bytes:
        started = time.perf_counter_ns()
        version = call.request.model_version or spec.version
        try:
            reply = await self._submit(spec, call.raw, deadline, call.request.model_version)
        except Exception:
            self._count(spec.name, version, "fail", started)
            raise
        if reply.code != 0:
            self._count(spec.name, version, "fail", started)
            raise from_status(reply.code, reply.message)
        self._count(spec.name, reply.version or version, "success", started)
        return reply.payload

    async def _submit(self, spec: ModelSpec, payload: bytes, deadline: float, version: str = "") -> ReplyEntry:
        """Queue the request exactly as the client sent it (validated, never re-serialised)."""
        if not await self._has_replica(spec, version):
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
            # One timer on the reply's future (asyncio.wait_for would add a waiter future, a
            # callback and a cancellation per request).
            timer = asyncio.get_running_loop().call_later(max(0.0, deadline - time.time()), _expire, future, spec.name)
            try:
                return await future
            finally:
                timer.cancel()
        finally:
            self._waiting.pop(request_id, None)
            self._inflight[spec.name] -= 1

    async def _enqueue_together(self, submissions: list[Submission]) -> list[bool]:
        """One script call per model for everything submitted together; results in order."""
        first = submissions[0][0]
        if all(spec.name == first.name for spec, _ in submissions):  # the usual case: no gather, no tasks
            return await self._producer.enqueue(first.name, [entry for _, entry in submissions], first.max_queue_size)
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

    def _count(self, model: str, version: str, outcome: str, started_ns: int) -> None:
        """Add to this gateway's statistics buffer (no Redis round trip on the request path)."""
        self._statistics.add(model, version, duration_fields(outcome, 1, time.perf_counter_ns() - started_ns),
                             inference=False)

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
                    gathering = self._commands.get(reply.request_id)
                    if gathering is not None:
                        gathering.add(reply)
                    else:
                        self._metrics.dropped_replies.inc()
                else:
                    future.set_result(reply)

    async def statistics(self, name: str, version: str) -> dict[str, int]:
        await self._statistics.flush()
        try:
            return await read_statistics(self._redis, name, version)
        except RedisError as err:
            raise Unavailable("statistics store cannot be reached") from err

    # -- repository commands --------------------------------------------------------------
    async def load(self, name: str) -> None:
        await self._command(name, "load")

    async def unload(self, name: str) -> None:
        await self._command(name, "unload")

    async def _command(self, name: str, op: str) -> None:
        """Send a repository command to every replica of the model and wait for all their answers."""
        if name not in self.specs:
            raise ModelNotFound(f"unknown model '{name}': no replica announces it (start a model service for it; "
                                "the gateway serves it without a restart)")
        command_id = uuid.uuid4().hex
        gathering = _Gathering(asyncio.get_running_loop().create_future())
        self._commands[command_id] = gathering
        message = json.dumps({"op": op, "id": command_id, "reply_to": self._replies.stream})
        try:
            try:
                receivers = int(await self._redis.publish(keys.control(name), message))
            except (RedisError, TimeoutError) as err:
                raise Unavailable(f"the replicas of model '{name}' cannot be reached") from err
            if receivers == 0:
                raise Unavailable(f"no replica of model '{name}' is running")
            gathering.expected = receivers
            gathering.settle()
            try:
                replies = await asyncio.wait_for(gathering.future, self._settings.command_timeout_s)
            except TimeoutError as err:
                raise DeadlineExceeded(f"{op} of model '{name}': {len(gathering.replies)} of {receivers} replicas "
                                       f"answered within {self._settings.command_timeout_s:.0f}s") from err
        finally:
            self._commands.pop(command_id, None)
        failed = [r for r in replies if r.code != 0]
        if failed:
            raise from_status(failed[0].code, f"{op} failed on {len(failed)} of {len(replies)} replicas: {failed[0].message}")
        await self.catalog.refresh()  # answer with the new state visible
