"""Counters behind ModelStatistics, added up in the process and flushed to Redis on a timer.

Every process (gateways, replicas) adds into the same `stats:<model>:<version>` hashes, but never on a
request's path: one HINCRBY per counter per flush instead of a dozen per execution.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Mapping

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from services.queue import keys
from services.queue.wire import Command, Wire

log = logging.getLogger(__name__)

FLUSH_S = 0.1  # how stale ModelStatistics may be (a reader flushes its own process first)
LAST_INFERENCE = "last_inference_ms"


class StatisticsBuffer:
    def __init__(self, redis: aioredis.Redis, interval_s: float = FLUSH_S) -> None:
        self._wire = Wire.like(redis)  # one packed round trip per flush, not a redis-py pipeline
        self._interval_s = interval_s
        self._counts: defaultdict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        self._last_ms: dict[tuple[str, str], int] = {}
        self._closing = asyncio.Event()
        self._flushing = asyncio.Lock()  # one flush at a time: the timer's, a reader's, close()'s
        self._closed = False

    def add(self, model: str, version: str, fields: Mapping[str, int], inference: bool = True) -> None:
        """Count one event (execution or answered request) of a model version; `inference`
        stamps last_inference."""
        self._counts[model, version].update(fields)
        if inference:
            self._last_ms[model, version] = int(time.time() * 1000)

    async def flush(self) -> None:
        async with self._flushing:
            if not self._closed:
                await self._flush()

    async def _flush(self) -> None:
        counts, self._counts = self._counts, defaultdict(Counter)
        last, self._last_ms = self._last_ms, {}
        if not counts and not last:
            return
        commands: list[Command] = []
        for (model, version), fields in counts.items():
            key = keys.statistics(model, version)
            commands.extend(["HINCRBY", key, field, amount] for field, amount in fields.items())
        for (model, version), ms in last.items():
            commands.append(["HSET", keys.statistics(model, version), LAST_INFERENCE, ms])
        try:
            await self._wire.execute(*commands)
        except (RedisError, TimeoutError) as err:  # kept for the next flush, not lost
            log.warning("statistics not recorded yet (%s); will retry", err)
            for pair, fields in counts.items():
                self._counts[pair].update(fields)
            for pair, ms in last.items():
                self._last_ms.setdefault(pair, ms)

    async def run(self) -> None:
        """Flush every interval until `close`."""
        while not self._closing.is_set():
            try:
                await asyncio.wait_for(self._closing.wait(), self._interval_s)
            except TimeoutError:
                pass
            await self.flush()

    async def close(self) -> None:
        """The last flush (after any under way), then the connection; later flushes do nothing."""
        self._closing.set()
        async with self._flushing:
            try:
                if not self._closed:
                    await self._flush()
            finally:
                self._closed = True
                await self._wire.aclose()


async def read_statistics(redis: aioredis.Redis, model: str, version: str) -> dict[str, int]:
    raw: dict[bytes, bytes] = await redis.hgetall(keys.statistics(model, version))  # type: ignore[assignment]
    return {k.decode(): int(v) for k, v in raw.items()}
