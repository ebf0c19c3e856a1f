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


def test_the_gateway_sends_one_script_call_per_model_and_answers_in_submission_order() -> None:
    """QueueBackend._enqueue_together, the Coalescer's flush in the gateway: one model's requests
    in one call (the usual case), several models' in one call each, results back in order."""
    from types import SimpleNamespace

    from services.gateway.dispatcher import QueueBackend

    calls: list[tuple[str, list[str], int]] = []

    class Producer:
        async def enqueue(self, model: str, entries: list[str], max_queue_size: int) -> list[bool]:
            calls.append((model, list(entries), max_queue_size))
            return [entry != "full" for entry in entries]

    backend = QueueBackend.__new__(QueueBackend)  # only the producer is used by this method
    backend._producer = Producer()  # type: ignore[assignment]
    mlp, cnn = SimpleNamespace(name="mlp", max_queue_size=8), SimpleNamespace(name="cnn", max_queue_size=4)
    one = asyncio.run(backend._enqueue_together([(mlp, "a"), (mlp, "full"), (mlp, "b")]))  # type: ignore[list-item]
    assert one == [True, False, True] and calls == [("mlp", ["a", "full", "b"], 8)]
    calls.clear()
    mixed = asyncio.run(backend._enqueue_together([(mlp, "a"), (cnn, "full"), (mlp, "b"), (cnn, "c")]))  # type: ignore[list-item]
    assert mixed == [True, False, True, True]
    assert sorted(calls) == [("cnn", ["full", "c"], 4), ("mlp", ["a", "b"], 8)]
