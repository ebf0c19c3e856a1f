"""The Coalescer: calls of one loop iteration, and those that arrive while a flush is in flight,
go out together; every caller gets its own result or the flush's error."""

from __future__ import annotations

import asyncio

import pytest

from services.coalesce import Coalescer


def test_calls_of_one_iteration_share_a_flush_and_later_ones_queue_behind_it() -> None:
    flushes: list[list[int]] = []
    release = asyncio.Event()

    async def flush(items: list[int]) -> list[int]:
        flushes.append(items)
        if len(flushes) == 1:
            await release.wait()  # the first flush is slow: what comes meanwhile piles up
        return [i * 10 for i in items]

    async def main() -> list[int]:
        coalescer: Coalescer[int, int] = Coalescer(flush)
        first = [asyncio.create_task(coalescer.submit(i)) for i in range(3)]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        later = [asyncio.create_task(coalescer.submit(i)) for i in range(3, 6)]
        await asyncio.sleep(0.01)
        release.set()
        return list(await asyncio.gather(*first, *later))

    assert asyncio.run(main()) == [0, 10, 20, 30, 40, 50]
    assert flushes == [[0, 1, 2], [3, 4, 5]]


def test_a_lone_call_goes_out_alone_at_once() -> None:
    async def main() -> int:
        coalescer: Coalescer[int, int] = Coalescer(lambda items: asyncio.sleep(0, [i + 1 for i in items]))
        return await asyncio.wait_for(coalescer.submit(41), 1.0)

    assert asyncio.run(main()) == 42


def test_a_failed_flush_fails_its_callers_only() -> None:
    async def flush(items: list[int]) -> list[int]:
        if 13 in items:
            raise ConnectionError("redis went away")
        return items

    async def main() -> None:
        coalescer: Coalescer[int, int] = Coalescer(flush)
        with pytest.raises(ConnectionError):
            await asyncio.gather(coalescer.submit(1), coalescer.submit(13))
        assert await coalescer.submit(2) == 2  # the next flush works

    asyncio.run(main())
