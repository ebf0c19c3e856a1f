"""Operations on the streams: the gateway's side (enqueue, read replies) and the model
service's side (read through the consumer group, reply + ACK, reclaim, dead-letter).

The commands of every request (enqueue, reply read, group read, reply + ACK) go over
services.queue.wire connections to the same server as the redis-py client given; the rest uses
redis-py.

Delivery is at-least-once: an entry is acknowledged (and deleted) only in the same pipeline
that writes its reply, so a replica that dies mid-batch leaves its entries pending for
another replica to claim. A gateway drops replies it is no longer waiting for.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import ResponseError

from services.queue import keys
from services.queue.catalog import Announcement
from services.queue.messages import ReplyEntry, RequestEntry
from services.queue.wire import Command, Wire

# Admission and append in one atomic step, for any number of entries of one model: each is
# refused (0) when the stream already holds max_queue_size entries (queued + in a batch;
# acknowledged entries are deleted), else appended (1). ARGV: limit, then 6 fields per entry.
_ENQUEUE = """
local limit = tonumber(ARGV[1])
local length = redis.call('XLEN', KEYS[1])
local added = {}
for i = 2, #ARGV, 6 do
  if limit > 0 and length >= limit then
    added[#added + 1] = 0
  else
    redis.call('XADD', KEYS[1], '*', 'id', ARGV[i], 'reply_to', ARGV[i + 1], 'deadline', ARGV[i + 2],
               'enqueued', ARGV[i + 3], 'payload', ARGV[i + 4], 'inflight', ARGV[i + 5])
    length = length + 1
    added[#added + 1] = 1
  end
end
return added
"""
ENTRY_FIELDS = ("id", "reply_to", "deadline", "enqueued", "payload", "inflight")
_ENQUEUE_SHA = hashlib.sha1(_ENQUEUE.encode()).hexdigest()

REPLY_STREAM_MAXLEN = 100_000  # replies are read once by their gateway; the cap only bounds abandoned streams


RETRIES = 3  # a dropped connection is retried after 10, 20 and 40 ms, then the caller sees the error


def connect(url: str, timeout_s: float) -> aioredis.Redis:
    """A client whose every command times out (blocking reads must block for less) and is retried
    with exponential backoff on connection errors and timeouts (redis-py's Retry, not a loop of
    ours). The password or ACL user come from the URL (redis://user:password@host:port/db)."""
    retry = Retry(ExponentialBackoff(cap=0.25, base=0.01), RETRIES)
    return aioredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=retry,
                                   retry_on_error=[RedisConnectionError, RedisTimeoutError])


class RequestProducer:
    """Gateway side: append requests to a model's stream with admission control."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._wire = Wire.like(redis)

    async def enqueue(self, model: str, entries: Sequence[RequestEntry], max_queue_size: int) -> list[bool]:
        """Append entries in order, in one round trip; False for each refused because the queue was full."""
        command: list[str | bytes | int] = ["EVALSHA", _ENQUEUE_SHA, 1, keys.request_stream(model), max_queue_size]
        for entry in entries:
            fields = entry.to_fields()
            command.extend(fields[name] for name in ENTRY_FIELDS)
        try:
            (added,) = await self._wire.execute(command)
        except ResponseError as err:
            if not str(err).startswith("NOSCRIPT"):
                raise
            # A Redis that restarted (or was flushed) forgot the script: load it, and go again.
            (added,) = (await self._wire.execute(["SCRIPT", "LOAD", _ENQUEUE], command))[1:]
        return [bool(flag) for flag in added]

    async def close(self) -> None:
        await self._wire.aclose()


class ReplyReader:
    """Gateway side: read this gateway's own reply stream in order.

    Replies are read once: each read also deletes the entries the previous read returned, in the
    same round trip (a pipeline of XDEL then the blocking XREAD)."""

    def __init__(self, redis: aioredis.Redis, gateway_id: str) -> None:
        self._redis = redis
        self._wire = Wire.like(redis, blocking=True)  # blocks in XREAD: a connection of its own
        self.stream = keys.reply_stream(gateway_id)
        self._last_id: bytes | None = None  # set on the first read
        self._read_ids: list[bytes] = []

    async def read(self, block_ms: int, count: int = 512) -> list[ReplyEntry]:
        """The next replies; those of the previous call are deleted first."""
        if self._last_id is None:
            # Only replies written from now on: older ones (a restarted gateway of the same id)
            # answer nobody. Not "$" in every XREAD, which would skip replies written between two.
            newest: Any = await self._redis.xrevrange(self.stream, count=1)
            self._last_id = newest[0][0] if newest else b"0-0"
        commands: list[Command] = []
        if self._read_ids:
            commands.append(["XDEL", self.stream, *self._read_ids])
        commands.append(["XREAD", "COUNT", count, "BLOCK", block_ms, "STREAMS", self.stream, self._last_id])
        results = await self._wire.execute(*commands)
        self._read_ids = []
        replies: list[ReplyEntry] = []
        for entry_id, fields in stream_entries(results[-1]):
            self._last_id = entry_id
            self._read_ids.append(entry_id)
            replies.append(ReplyEntry.from_fields(fields))
        return replies

    async def close(self) -> None:
        await self._wire.aclose()
        await self._redis.delete(self.stream)


def stream_entries(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """(id, fields) of every entry of an XREAD / XREADGROUP reply in RESP2 (None: nothing came;
    an entry deleted while pending comes with no fields)."""
    out: list[tuple[bytes, dict[bytes, bytes]]] = []
    for _stream, entries in reply or []:
        for entry_id, flat in entries:
            flat = flat or []
            out.append((entry_id, dict(zip(flat[::2], flat[1::2]))))
    return out


@dataclass(frozen=True)
class Delivery:
    """One entry handed to this replica: its stream id, and the request (None if malformed)."""

    entry_id: bytes
    request: RequestEntry | None
    fields: Mapping[bytes, bytes]


def _text_name(name: str | bytes) -> str:
    return name.decode() if isinstance(name, bytes) else name


def _delivery(entry_id: bytes, fields: dict[bytes, bytes]) -> Delivery:
    try:
        return Delivery(entry_id, RequestEntry.from_fields(fields), fields)
    except (KeyError, ValueError, UnicodeDecodeError):
        return Delivery(entry_id, None, fields)


class RequestConsumer:
    """Model service side: one replica reading a model's stream through the consumer group."""

    def __init__(self, redis: aioredis.Redis, model: str, consumer: str) -> None:
        self._redis = redis
        self.model = model
        self.consumer = consumer
        self.stream = keys.request_stream(model)
        self._reads = Wire.like(redis, blocking=True)  # the group reads, which block while the queue is empty
        self._writes = Wire.like(redis)  # replies + ACKs, and CLIENT UNBLOCK
        self._window = Wire.like(redis, blocking=True)  # one connection of its own, for read_within
        self._window_id: int | None = None  # its CLIENT ID, for CLIENT UNBLOCK

    async def ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(self.stream, keys.GROUP, id="0", mkstream=True)
        except ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    async def read(self, count: int, block_ms: int | None) -> list[Delivery]:
        """New entries for this replica; block_ms None returns at once."""
        return await self._read_group(self._reads, count, block_ms)

    async def _read_group(self, wire: Wire, count: int, block_ms: int | None) -> list[Delivery]:
        command: list[str | int] = ["XREADGROUP", "GROUP", keys.GROUP, self.consumer, "COUNT", count]
        if block_ms is not None:
            command += ["BLOCK", block_ms]
        (result,) = await wire.execute([*command, "STREAMS", self.stream, ">"])
        return [_delivery(eid, fields) for eid, fields in stream_entries(result)]

    async def read_within(self, count: int, timeout_s: float) -> list[Delivery]:
        """New entries, waiting at most `timeout_s` for the first: back the moment one arrives.

        Redis checks blocking timeouts only about every 100 ms (its hz), far coarser than a
        batching window, and asyncio's timers have a 1 ms resolution; so the read blocks on a
        connection of its own and, when the window ends first, CLIENT UNBLOCK (from the shared
        connections) ends it as if it had timed out."""
        if self._window_id is None:
            self._window_id = int((await self._window.execute(["CLIENT", "ID"]))[0])
        block_ms = max(1, math.ceil(timeout_s * 1000))
        read = asyncio.ensure_future(self._read_group(self._window, count, block_ms))
        try:
            done, _ = await asyncio.wait({read}, timeout=timeout_s)
            if not done and not (await self._writes.execute(["CLIENT", "UNBLOCK", self._window_id]))[0]:
                # Not blocked: the reply is on its way, or the window reconnected under another
                # id (then the read ends at its own BLOCK, and the id is asked again next time).
                done, _ = await asyncio.wait({read}, timeout=0.001)
                if not done:
                    self._window_id = None
            return await read
        except BaseException:  # a failed or cancelled read: the connection may be a new one
            read.cancel()
            self._window_id = None
            raise

    async def close(self) -> None:
        for wire in (self._reads, self._writes, self._window):
            await wire.aclose()

    async def finish(self, entry_ids: Sequence[bytes], replies: Sequence[tuple[str, ReplyEntry]]) -> None:
        """Write the replies, ACK and delete the entries: one round trip."""
        commands: list[Command] = []
        for reply_to, reply in replies:
            command: list[str | bytes | int] = ["XADD", reply_to, "MAXLEN", "~", REPLY_STREAM_MAXLEN, "*"]
            for name, value in reply.to_fields().items():
                command += [name, value]
            commands.append(command)
        if entry_ids:
            commands.append(["XACK", self.stream, keys.GROUP, *entry_ids])
            commands.append(["XDEL", self.stream, *entry_ids])
        if commands:
            await self._writes.execute(*commands)

    async def claim_stale(self, min_idle_ms: int, max_deliveries: int) -> tuple[list[Delivery], list[Delivery]]:
        """Take over entries pending on any replica for `min_idle_ms` (XAUTOCLAIM): the safety net
        for a replica that heartbeats but no longer acknowledges. Returns (to_process, poisoned);
        poisoned entries are already in the dead-letter stream and acknowledged, and the caller
        still owes their requester a reply."""
        claimed: list[Delivery] = []
        start: bytes | str = "0-0"
        while True:
            result = await self._redis.xautoclaim(
                self.stream, keys.GROUP, self.consumer, min_idle_ms, start_id=start, count=100
            )
            start, entries = result[0], result[1]
            claimed.extend(_delivery(eid, fields) for eid, fields in entries if fields)
            if start in (b"0-0", "0-0"):
                break
        return await self._split_poisoned(claimed, max_deliveries)

    async def take_over_dead(self, dead_after_s: float, min_idle_ms: int,
                             max_deliveries: int) -> tuple[list[Delivery], list[Delivery], list[str]]:
        """Take over what replicas that stopped heartbeating left pending, without waiting for it
        to look idle: a crashed replica is known from its silence, a slow one keeps heartbeating
        (its event loop runs while the model computes), so a long batch is never taken from it.

        `min_idle_ms` keeps two live replicas from taking the same entries in turn: the first
        claim resets the idle time. Returns (to_process, poisoned, the dead consumers' names)."""
        consumers: Any = await self._redis.xinfo_consumers(self.stream, keys.GROUP)
        recent: Any = await self._redis.zrangebyscore(keys.alive(self.model), time.time() - dead_after_s, "+inf")
        alive = {_text_name(n) for n in recent}
        dead = [_text_name(c["name"]) for c in consumers if _text_name(c["name"]) not in alive and _text_name(c["name"]) != self.consumer]
        pending = {_text_name(c["name"]): int(c["pending"]) for c in consumers}
        claimed: list[Delivery] = []
        for name in dead:
            if pending[name] == 0:  # gone and owes nothing: forget it
                await self._redis.xgroup_delconsumer(self.stream, keys.GROUP, name)
                await self._redis.hdel(keys.serving(self.model), name)
                continue
            held: Any = await self._redis.xpending_range(self.stream, keys.GROUP, "-", "+", pending[name], consumername=name)
            ids = [h["message_id"] for h in held]
            if ids:
                taken: Any = await self._redis.xclaim(self.stream, keys.GROUP, self.consumer, min_idle_ms, ids)
                claimed.extend(_delivery(eid, fields) for eid, fields in taken if fields)
        fresh, poisoned = await self._split_poisoned(claimed, max_deliveries)
        return fresh, poisoned, [name for name in dead if pending[name]]

    async def _split_poisoned(self, claimed: list[Delivery], max_deliveries: int) -> tuple[list[Delivery], list[Delivery]]:
        """Split taken-over entries by their delivery count; dead-letter those delivered too often."""
        if not claimed:
            return [], []
        pipe = self._redis.pipeline(transaction=False)
        for d in claimed:
            pipe.xpending_range(self.stream, keys.GROUP, d.entry_id, d.entry_id, 1)
        pending = await pipe.execute()
        fresh: list[Delivery] = []
        poisoned: list[Delivery] = []
        for d, info in zip(claimed, pending):
            deliveries = info[0]["times_delivered"] if info else 0
            (poisoned if deliveries >= max_deliveries else fresh).append(d)
        if poisoned:
            await self.dead_letter(poisoned, "max deliveries")
        return fresh, poisoned

    async def dead_letter(self, deliveries: Sequence[Delivery], reason: str) -> None:
        """Move entries that cannot be processed to the dead-letter stream (ACK + delete): one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for d in deliveries:
            pipe.xadd(keys.dead_letter_stream(self.model), {**d.fields, b"dead_reason": reason.encode()})  # type: ignore[dict-item]
        ids = [d.entry_id for d in deliveries]
        pipe.xack(self.stream, keys.GROUP, *ids)
        pipe.xdel(self.stream, *ids)
        await pipe.execute()

    async def heartbeat(self, ready: bool = True, announcement: Announcement | None = None) -> None:
        """I am alive (and, when `ready`, take new work), serving what `announcement` says (see
        services.queue.catalog): one round trip."""
        now = time.time()
        pipe = self._redis.pipeline(transaction=False)
        pipe.zadd(keys.alive(self.model), {self.consumer: now})
        if ready:
            pipe.zadd(keys.replicas(self.model), {self.consumer: now})
        else:
            pipe.zrem(keys.replicas(self.model), self.consumer)
        if announcement is not None:
            pipe.zadd(keys.MODELS, {self.model: now})
            pipe.hset(keys.serving(self.model), self.consumer, announcement.to_json())
            if announcement.configs:
                pipe.hset(keys.configs(self.model), mapping=dict(announcement.configs))  # type: ignore[arg-type]
        await pipe.execute()

    async def leave(self) -> None:
        """Stop counting as a ready replica (on shutdown); still alive while it drains."""
        await self._redis.zrem(keys.replicas(self.model), self.consumer)

    async def exit(self) -> None:
        """Drained: no longer alive, and nothing pending under this name (so no one takes over)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.zrem(keys.alive(self.model), self.consumer)
        pipe.zrem(keys.replicas(self.model), self.consumer)
        pipe.hdel(keys.serving(self.model), self.consumer)
        await pipe.execute()


async def ready_replicas(redis: aioredis.Redis, model: str, ttl_s: float) -> int:
    """Replicas of a model whose heartbeat is younger than ttl_s."""
    return int(await redis.zcount(keys.replicas(model), time.time() - ttl_s, "+inf"))
