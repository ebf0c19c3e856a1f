"""The short lane (config `short_lane: "priority"`) over the shipped model: a second running
batch in the same decode thread for the shortest sentences, stepped first. Same translations as
the batch search, short sentences in the short lane, the long lane never starved, cancels and
faults in either lane."""

from __future__ import annotations

import asyncio

import pytest

from services.modelservice.runners.translator import TranslatorModel
from services.modelservice.runners.translator.decode_loop import SHORT_BURST, DecodeLoop
from tests.unit.translator_shipped import (LONG, NEEDS_MODEL, SENTENCES, assert_same, faulty_translator, infer,
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
        lengths_seen(m)
        for seed in (3, 4):
            got = asyncio.run(staggered(m, [5, 1], seed=seed))
            for beam in (5, 1):
                assert_same(got[beam], reference[beam])
        assert loop.short.counters.steps > 0 and loop.scheduler.counters.steps > 0  # both lanes worked
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


def test_a_cancel_and_a_fault_in_the_short_lane_leave_the_other_lanes_work(
        reference: dict[int, list[tuple[str, float]]]) -> None:
    translator, faulty = faulty_translator()
    m = TranslatorModel(spec(short_lane="priority"), settings(), translator=translator)
    loop = m.decoders[0]
    assert loop.short is not None
    short = min(SENTENCES, key=lambda s: len(m.translator.source_ids(s)))

    async def scenario() -> None:
        await asyncio.to_thread(lengths_seen, m)
        long = asyncio.create_task(infer(m, LONG, 5))
        await asyncio.to_thread(wait_until, lambda: len(loop.scheduler.running) > 0)
        cancelled = asyncio.create_task(infer(m, [short] * 3, 5))
        await asyncio.to_thread(wait_until, lambda: len(loop.short.running) > 0)  # type: ignore[union-attr]
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        out = await long  # the cancel in the short lane touched nothing of the other
        assert [t.decode() for t in out["translation"]] == [t for t, _ in
                                                            [reference[5][SENTENCES.index(s)] for s in LONG]]
        await asyncio.to_thread(wait_until, lambda: not any(lane.busy for lane in loop.lanes))
        assert m.room() == 2 * m.max_sentences
        faulty.fail_step.set()  # the next step is the short lane's: its request fails, the loop goes on
        with pytest.raises(RuntimeError, match="injected step fault"):
            await infer(m, [short], 5)
        out = await infer(m, [short, SENTENCES[12]], 5)
        assert [t.decode() for t in out["translation"]] == [reference[5][SENTENCES.index(short)][0],
                                                            reference[5][12][0]]

    try:
        asyncio.run(scenario())
    finally:
        m.close()
