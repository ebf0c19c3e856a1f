"""The short lane (config `short_lane: "priority"`) over the shipped model: a second running
batch in the same decode thread for the shortest sentences, stepped first. Same translations as
the batch search, short sentences in the short lane, the long lane never starved, cancels and
faults in either lane."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from services.modelservice.runners.translator import TranslatorModel
from services.modelservice.runners.translator.decode_loop import SHORT_BURST, DecodeLoop
from tests.unit.translator_shipped import (LONG, NEEDS_MODEL, SENTENCES, FaultyModel, assert_same, faulty_translator, infer,
                                           settings, spec, staggered, text, wait_until)
from tests.unit.translator_shipped import model, reference  # noqa: F401 (fixtures)

pytestmark = NEEDS_MODEL


def lengths_seen(m: TranslatorModel) -> None:
    """Enough requests for the lane router's bounds (it sets them every 32 sentences)."""
    for _ in range(2):
        m.run(text(*SENTENCES), ["translation"])


def test_the_short_lane_gives_the_batch_search_translations(
        reference: dict[int, list[tuple[str, float]]]) -> None:
    m = TranslatorModel(spec(short_lane="priority"), settings())
    try:
        m.warmup()
        loop = m.decoders[0]
        assert loop.short is not None and len(loop.lanes) == 2
        assert loop.short.counters.steps > 0 and loop.scheduler.counters.steps > 0  # the warm-up ran both lanes
        with pytest.raises(ValueError, match="lane 2 outside 0..1"):
            m.run(text("Ja."), ["translation"], decoder=loop, lane=2)
        lengths_seen(m)
        warm = loop.short.counters.steps
        for seed in (3, 4):
            got = asyncio.run(staggered(m, [5, 1], seed=seed))
            for beam in (5, 1):
                assert_same(got[beam], reference[beam])
        assert loop.short.counters.steps > warm and loop.scheduler.counters.steps > 0  # both lanes worked
        assert m.room() == 2 * m.max_sentences  # every request given back
    finally:
        m.close()


def test_short_sentences_take_the_short_lane_and_long_ones_the_other() -> None:
    m = TranslatorModel(spec(short_lane="priority"), settings())
    try:
        lengths_seen(m)
        loop = m.decoders[0]
        ids = [m.translator.source_ids(s) for s in SENTENCES]
        shortest, longest = min(ids, key=len), max(ids, key=len)
        assert loop._lane([shortest]) == 0
        assert loop._lane([longest]) == 1
        assert loop._lane([shortest, longest]) == 1  # a request goes whole, by its longest sentence
    finally:
        m.close()


def test_the_short_lane_is_off_unless_asked_and_a_wrong_value_is_refused() -> None:
    m = TranslatorModel(spec(), settings())
    try:
        assert m.decoders[0].short is None and m.decoders[0]._lane([[5, 3]]) == 0
    finally:
        m.close()
    with pytest.raises(ValueError, match="short_lane must be one of off, priority"):
        TranslatorModel(spec(short_lane="first"), settings())
    with pytest.raises(ValueError, match="short_share > 0"):
        TranslatorModel(spec(short_lane="priority", short_share="0"), settings())


class Busy:
    """A stand-in lane for the turn-taking rule: only `busy` is read."""

    def __init__(self, busy: bool) -> None:
        self.busy = busy


def test_the_short_lane_goes_first_and_the_other_gets_a_step_every_burst() -> None:
    loop = DecodeLoop.__new__(DecodeLoop)  # the rule alone, without a thread
    short, other = Busy(True), Busy(True)
    loop.short, loop.scheduler, loop._burst = short, other, 0  # type: ignore[assignment]
    turns = [loop._next_lane() for _ in range(2 * (SHORT_BURST + 1))]
    assert turns == 2 * ([short] * SHORT_BURST + [other])
    other.busy = False  # nothing else to do: the short lane steps on
    assert all(loop._next_lane() is short for _ in range(3 * SHORT_BURST))
    short.busy, other.busy = False, True
    assert loop._next_lane() is other


def short_lane_model() -> tuple[TranslatorModel, FaultyModel, DecodeLoop]:
    """A runner with a short lane over a faulty model; its loop sends requests whose first
    sentence has under 8 tokens to the short lane from the start (no lengths to learn first), so
    both lanes number their sentences from 0 and a cancel or fault sent to the wrong lane would
    hit the other lane's work."""
    translator, faulty = faulty_translator()
    m = TranslatorModel(spec(short_lane="priority"), settings(), translator=translator)
    loop = m.decoders[0]
    loop._lane = lambda sources: 0 if len(sources[0]) < 8 else 1  # type: ignore[method-assign]
    return m, faulty, loop


def expected(sentences: list[str], reference: dict[int, list[tuple[str, float]]]) -> list[str]:
    return [reference[5][SENTENCES.index(s)][0] for s in sentences]


SHORT = "Ja."


def run_then_close(m: TranslatorModel, scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run an async scenario against `m`, closing its loops whatever the scenario raised."""
    try:
        asyncio.run(scenario())
    finally:
        m.close()


def test_a_cancel_goes_to_the_requests_own_lane(reference: dict[int, list[tuple[str, float]]]) -> None:
    m, faulty, loop = short_lane_model()

    async def scenario() -> None:
        faulty.open.clear()  # the long lane's first step waits here
        long = asyncio.create_task(infer(m, LONG, 5))
        await asyncio.to_thread(wait_until, faulty.held.is_set)
        short = asyncio.create_task(infer(m, [SHORT] * 3, 5))  # its keys 0-2 are the long lane's too
        await asyncio.sleep(0.05)
        short.cancel()
        with pytest.raises(asyncio.CancelledError):
            await short
        faulty.open.set()
        out = await asyncio.wait_for(long, 60)  # a cancel sent to the long lane would drop 3 of these
        assert [t.decode() for t in out["translation"]] == expected(LONG, reference)
        await asyncio.to_thread(wait_until, lambda: not any(lane.busy for lane in loop.lanes))
        assert m.room() == 2 * m.max_sentences and loop.short.counters.steps == 0  # type: ignore[union-attr]

    run_then_close(m, scenario)


def test_a_failing_short_lane_step_fails_only_its_own_requests(
        reference: dict[int, list[tuple[str, float]]]) -> None:
    m, faulty, loop = short_lane_model()

    async def scenario() -> None:
        long = asyncio.create_task(infer(m, LONG, 5))  # beam 5: always a multiple of 5 rows
        await asyncio.to_thread(wait_until, lambda: len(loop.scheduler.running) > 0)
        # The short lane's second step: one sentence at beam 3 (its first step has 1 row); the long
        # lane's steps have len(LONG) rows, then multiples of 5.
        assert len(LONG) != 3
        faulty.fail_rows = 3
        with pytest.raises(RuntimeError, match="injected step fault"):
            await infer(m, [SHORT], 3)
        assert loop.scheduler.busy  # the long lane still decodes
        out = await asyncio.wait_for(long, 60)
        assert [t.decode() for t in out["translation"]] == expected(LONG, reference)
        out = await infer(m, [SHORT, SENTENCES[12]], 5)  # both lanes go on
        assert [t.decode() for t in out["translation"]] == expected([SHORT, SENTENCES[12]], reference)
        assert m.room() == 2 * m.max_sentences

    run_then_close(m, scenario)


def test_a_loop_error_with_both_lanes_running_fails_both_and_starts_them_afresh(
        reference: dict[int, list[tuple[str, float]]]) -> None:
    m, faulty, loop = short_lane_model()
    short_lane, long_lane = loop.short, loop.scheduler
    assert short_lane is not None

    def on_step(sentences: int) -> None:  # on the loop's thread, after a step
        if short_lane.running and long_lane.running and m.on_step is not None:
            m.on_step = None
            raise RuntimeError("a bug in the loop")

    async def scenario() -> None:
        m.on_step = on_step
        long = asyncio.create_task(infer(m, LONG, 5))
        await asyncio.to_thread(wait_until, lambda: len(long_lane.running) > 0)
        short = asyncio.create_task(infer(m, [SHORT] * 2, 16))
        for task in (long, short):
            with pytest.raises(RuntimeError, match="a bug in the loop"):
                await asyncio.wait_for(task, 60)
        assert loop.short is not short_lane and loop.scheduler is not long_lane  # both lanes afresh
        out = await infer(m, [SHORT, LONG[0]], 5)
        assert [t.decode() for t in out["translation"]] == expected([SHORT, LONG[0]], reference)
        assert m.room() == 2 * m.max_sentences

    run_then_close(m, scenario)
