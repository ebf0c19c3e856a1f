"""The queue's round trips against a real redis-server: many enqueues in one script call with
admission per entry, replies deleted by the next read, statistics flushed from the buffer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.queue import keys, streams
from services.queue.counters import StatisticsBuffer, read_statistics
from services.queue.messages import ReplyEntry, RequestEntry
from services.queue.wire import Wire
from tests.support import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        yield server.url
    finally:
        server.stop()


def entry(i: int) -> RequestEntry:
    return RequestEntry(f"r{i}", "rep:test", time.time() + 30, time.time(), f"payload {i}".encode())


def test_enqueue_admits_entries_one_by_one_up_to_the_queue_size(redis_url: str) -> None:
    async def main() -> tuple[list[bool], list[bool], list[bytes]]:
        redis = streams.connect(redis_url, 5.0)
        producer = streams.RequestProducer(redis)
        first = await producer.enqueue("admit", [entry(i) for i in range(3)], max_queue_size=5)
        second = await producer.enqueue("admit", [entry(i) for i in range(3, 6)], max_queue_size=5)
        stored = [fields[b"id"] for _, fields in await redis.xrange(keys.request_stream("admit"))]
        await producer.close()
        await redis.aclose()
        return first, second, stored

    first, second, stored = asyncio.run(main())
    assert first == [True, True, True]
    assert second == [True, True, False]  # the sixth would exceed max_queue_size
    assert stored == [b"r0", b"r1", b"r2", b"r3", b"r4"]  # in order, fields intact


def test_reply_reader_deletes_what_it_read_on_its_next_read(redis_url: str) -> None:
    async def main() -> tuple[list[str], int, list[str], int]:
        redis = streams.connect(redis_url, 5.0)
        reader = streams.ReplyReader(redis, "reader-test")
        consumer = streams.RequestConsumer(redis, "unused", "c1")
        await reader.read(block_ms=1)  # from here on
        await consumer.finish([], [(reader.stream, ReplyEntry(f"a{i}", 0, "", b"x")) for i in range(3)])
        first = [r.request_id for r in await reader.read(block_ms=100)]
        left_after_first = await redis.xlen(reader.stream)
        await consumer.finish([], [(reader.stream, ReplyEntry("b0", 0, "", b"y"))])
        second = [r.request_id for r in await reader.read(block_ms=100)]
        left_after_second = await redis.xlen(reader.stream)
        await reader.close()
        await consumer.close()
        await redis.aclose()
        return first, left_after_first, second, left_after_second

    first, left_first, second, left_second = asyncio.run(main())
    assert first == ["a0", "a1", "a2"] and left_first == 3
    assert second == ["b0"] and left_second == 1  # the three read before were deleted in the same round trip


def test_statistics_buffer_adds_up_in_process_and_flushes(redis_url: str) -> None:
    async def main() -> tuple[dict[str, int], dict[str, int]]:
        redis = streams.connect(redis_url, 5.0)
        buffer = StatisticsBuffer(redis, interval_s=0.05)
        runner = asyncio.create_task(buffer.run())
        buffer.add("stats_model", "1", {"execution_count": 1, "inference_count": 4})
        buffer.add("stats_model", "1", {"execution_count": 1, "inference_count": 2})
        before = await read_statistics(redis, "stats_model", "1")  # nothing reached Redis yet
        await asyncio.sleep(0.2)
        after = await read_statistics(redis, "stats_model", "1")
        await buffer.close()
        await runner
        await redis.aclose()
        return before, after

    before, after = asyncio.run(main())
    assert before == {}
    assert after["execution_count"] == 2 and after["inference_count"] == 6
    assert after["last_inference_ms"] > 0


def test_statistics_buffer_keeps_counts_when_redis_is_unreachable(tmp_path: Path) -> None:
    async def main() -> dict[str, int]:
        dead = streams.connect("redis://127.0.0.1:1/0", 0.2)
        buffer = StatisticsBuffer(dead)
        buffer.add("m", "1", {"success_count": 3})
        await buffer.flush()  # logs, keeps the counts
        server = RedisServer(tmp_path / "late")
        try:
            live = streams.connect(server.url, 5.0)
            buffer._wire = Wire.like(live)  # the same buffer, Redis back
            await buffer.flush()
            stats = await read_statistics(live, "m", "1")
            await live.aclose()
        finally:
            server.stop()
        await dead.aclose()
        return stats

    assert asyncio.run(main())["success_count"] == 3


def test_read_within_wakes_on_arrival_and_ends_at_the_window(redis_url: str) -> None:
    """A window read returns the moment an entry arrives, and an empty window ends on time,
    not at Redis's own timeout check (about every 100 ms)."""
    async def main() -> tuple[list[float], list[int]]:
        redis = streams.connect(redis_url, 5.0)
        producer = streams.RequestProducer(redis)
        consumer = streams.RequestConsumer(redis, "window", "c1")
        await consumer.ensure_group()
        took, got = [], []
        for _ in range(5):  # nothing comes: each read ends with its 3 ms window
            t0 = time.perf_counter()
            got.append(len(await consumer.read_within(8, 0.003)))
            took.append(time.perf_counter() - t0)

        async def later() -> None:
            await asyncio.sleep(0.02)
            await producer.enqueue("window", [entry(1)], max_queue_size=0)

        sender = asyncio.create_task(later())
        t0 = time.perf_counter()
        got.append(len(await consumer.read_within(8, 1.0)))  # woken by the entry, not after 1 s
        took.append(time.perf_counter() - t0)
        await sender
        await consumer.close()
        await producer.close()
        await redis.aclose()
        return took, got

    took, got = asyncio.run(main())
    assert got == [0, 0, 0, 0, 0, 1]
    assert max(took[:5]) < 0.05, took  # Redis alone would answer BLOCK 3 after up to ~100 ms
    assert 0.015 < took[5] < 0.5, took


def test_statistics_close_waits_for_a_flush_under_way_and_later_flushes_send_nothing(redis_url: str) -> None:
    async def main() -> tuple[dict[str, int], bool]:
        redis = streams.connect(redis_url, 5.0)
        buffer = StatisticsBuffer(redis)
        buffer.add("closing", "1", {"success_count": 2})
        await asyncio.gather(buffer.flush(), buffer.close())  # the timer's flush and the drain's, together
        buffer.add("closing", "1", {"success_count": 5})  # after close: not sent, no new connection
        await buffer.flush()
        stats = await read_statistics(redis, "closing", "1")
        connected = buffer._wire._protocol is not None
        await redis.aclose()
        return stats, connected

    stats, connected = asyncio.run(main())
    assert stats["success_count"] == 2 and not connected
