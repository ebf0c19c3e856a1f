"""The translator runner's faults over the shipped model (no mocks; a wrapped StepModel injects
them), cancellations and closing.

Decided behaviour on faults: a decoder step that raises fails every request with a sentence in
that step (the states of all of them are lost), loudly (logged); requests still waiting, and
later ones, are answered. An encoder call that raises fails only the sentences it encoded."""

from __future__ import annotations

import asyncio

import pytest

from services.modelservice.runners.translator import TranslatorModel
from tests.unit.translator_shipped import (LONG, NEEDS_MODEL, SENTENCES, faulty_translator, infer, settings,
                                           spec, wait_until)
from tests.unit.translator_shipped import model, reference  # noqa: F401 (fixtures)

pytestmark = NEEDS_MODEL


def test_a_failing_step_fails_the_running_requests_only(
        reference: dict[int, list[tuple[str, float]]]) -> None:
    translator, faulty = faulty_translator()
    m = TranslatorModel(spec(max_batch_size=1), settings(), translator=translator)

    async def scenario() -> None:
        running = asyncio.create_task(infer(m, [LONG[0]], 5))
        waiting = asyncio.create_task(infer(m, [SENTENCES[5]], 5))  # queued behind (1 sentence max)
        await asyncio.to_thread(wait_until, lambda: faulty.steps >= 2)
        faulty.fail_step.set()
        with pytest.raises(RuntimeError, match="injected step fault"):
            await running
        out = await waiting
        assert out["translation"][0].decode() == reference[5][5][0]
        faulty.fail_encode.set()
        with pytest.raises(RuntimeError, match="injected encoder fault"):
            await infer(m, [SENTENCES[6]], 5)
        out = await infer(m, SENTENCES[7:9], 5)  # the loop goes on
        assert [t.decode() for t in out["translation"]] == [t for t, _ in reference[5][7:9]]

    try:
        asyncio.run(scenario())
    finally:
        m.close()


def test_a_cancelled_request_leaves_the_batch(model: TranslatorModel,
                                              reference: dict[int, list[tuple[str, float]]]) -> None:
    async def scenario() -> None:
        task = asyncio.create_task(infer(model, LONG, 5))
        await asyncio.to_thread(wait_until, lambda: len(model.decoders[0].scheduler.running) > 0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.to_thread(wait_until, lambda: not model.decoders[0].scheduler.busy)
        assert model.room() == 2 * model.max_sentences
        out = await infer(model, SENTENCES[:2], 5)
        assert [t.decode() for t in out["translation"]] == [t for t, _ in reference[5][:2]]

    asyncio.run(scenario())


def test_close_stops_the_thread_and_fails_what_is_left() -> None:
    m = TranslatorModel(spec(), settings())

    async def scenario() -> None:
        task = asyncio.create_task(infer(m, LONG, 5))
        await asyncio.sleep(0.01)
        m.close()
        assert not m.decoders[0]._thread.is_alive()
        with pytest.raises(RuntimeError, match="closed"):
            await task
        with pytest.raises(RuntimeError, match="closed"):
            await infer(m, ["Ja."], 5)

    asyncio.run(scenario())

