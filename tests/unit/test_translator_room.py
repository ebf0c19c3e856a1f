"""The translator runner's room (how many requests the worker may hand it), over the shipped
model: counted in requests with a sentence cap inside, woken when room comes back, and given
back in full by a request that fails."""

from __future__ import annotations

import asyncio

import pytest

from services.modelservice.runners.translator import TranslatorModel
from services.modelservice.runners.translator.translator import OnnxStepModel, Translator
from tests.unit.translator_shipped import (LONG, MODEL, NEEDS_MODEL, SENTENCES, FaultyModel, infer, settings, spec,
                                           wait_until)

pytestmark = NEEDS_MODEL


def test_room_counts_queued_requests_and_wait_for_room_wakes_up() -> None:
    m = TranslatorModel(spec(max_batch_size=2), settings())  # room for 2 x 2 requests

    async def scenario() -> None:
        assert m.room() == 4
        await m.wait_for_room()  # returns at once while there is room
        tasks = [asyncio.create_task(infer(m, [s], 5)) for s in LONG[:4]]
        await asyncio.sleep(0)  # they submit
        assert m.room() == 0
        waiter = asyncio.create_task(m.wait_for_room())
        await asyncio.sleep(0.001)
        assert not waiter.done()
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        await asyncio.wait_for(waiter, 1.0)
        assert m.room() >= len(done)
        await asyncio.gather(*tasks)
        assert m.room() == 4

    try:
        asyncio.run(scenario())
    finally:
        m.close()


def test_room_is_in_requests_with_a_sentence_cap_inside() -> None:
    """The worker reads room() stream entries: a request of several sentences takes one unit of
    room, and room closes while the queued sentences reach the cap (2 x 4 here)."""
    m = TranslatorModel(spec(max_batch_size=4), settings())

    async def scenario() -> None:
        assert m.room() == 8
        three = asyncio.create_task(infer(m, LONG[:3], 5))
        await asyncio.sleep(0)
        assert m.room() == 7  # one request, though three sentences
        many = asyncio.create_task(infer(m, SENTENCES[:5], 5))
        await asyncio.sleep(0)
        assert m.room() == 0  # 8 sentences queued: the cap, whatever the request count
        await asyncio.gather(three, many)
        assert m.room() == 8 and m.admission.sentences == 0

    try:
        asyncio.run(scenario())
    finally:
        m.close()


def test_a_failed_request_gives_back_all_its_sentences() -> None:
    """Also those done before another of its sentences failed."""
    translator = Translator(MODEL / "1", threads=1)
    assert isinstance(translator.model, OnnxStepModel)
    faulty = FaultyModel(translator.model)
    translator.model = faulty
    m = TranslatorModel(spec(max_batch_size=4), settings(), translator=translator)

    async def scenario() -> None:
        task = asyncio.create_task(infer(m, ["Ja.", *LONG[:2]], 5))
        await asyncio.to_thread(wait_until, lambda: faulty.steps >= 6)  # "Ja." is done by now
        faulty.fail_step.set()
        with pytest.raises(RuntimeError, match="injected step fault"):
            await task
        assert m.room() == 8 and m.admission.sentences == 0

    try:
        asyncio.run(scenario())
    finally:
        m.close()

