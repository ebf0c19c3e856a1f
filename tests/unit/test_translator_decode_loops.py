"""Several decode loops in one translator runner (instance_group count), over the shipped model:
each its own thread and running batch, the same translations, short sentences routed to the
first loop, the longer loops at a lower CPU priority."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from services.modelservice.runners.translator import TranslatorModel
from tensorgate.repository import load_spec
from tests.unit.translator_shipped import (MODEL, NEEDS_MODEL, SENTENCES, assert_same, instances, settings,
                                           staggered, text, wait_until)
from tests.unit.translator_shipped import model, reference  # noqa: F401 (fixtures)

pytestmark = NEEDS_MODEL


@pytest.mark.parametrize("parameters", [{}, {"instance_sessions": "own"}, {"routing": "least_loaded"},
                                        {"short_share": "0", "nice_longer_loops": "10"}])
def test_two_decode_loops_give_the_batch_search_translations(
        reference: dict[int, list[tuple[str, float]]], parameters: dict[str, str]) -> None:
    m = TranslatorModel(instances(2, parameters), settings())
    try:
        m.warmup()
        assert len(m.decoders) == 2 and len({d._thread.name for d in m.decoders}) == 2
        assert (m.translators[0] is m.translators[1]) == (parameters.get("instance_sessions") != "own")
        for _ in range(3):  # enough arrivals for the length bands
            assert_same(asyncio.run(staggered(m, [5], seed=7))[5], reference[5])
        assert all(d.scheduler.counters.steps > 0 for d in m.decoders)  # both loops worked
        assert m.room() == 2 * 2 * m.max_sentences
    finally:
        m.close()


def test_the_shipped_config_serves_with_its_instances(reference: dict[int, list[tuple[str, float]]]) -> None:
    m = TranslatorModel(load_spec(MODEL), settings())
    try:
        m.warmup()
        assert len(m.decoders) == m.spec.instance_count
        assert_same(asyncio.run(staggered(m, [5], seed=11))[5], reference[5])
    finally:
        m.close()


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="no per-thread nice values here")
def test_the_longer_loops_run_at_a_lower_cpu_priority() -> None:
    m = TranslatorModel(instances(3, {"nice_longer_loops": "5"}), settings())
    try:
        wait_until(lambda: all(d.native_id is not None for d in m.decoders))
        own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        assert [os.getpriority(os.PRIO_PROCESS, d.native_id) for d in m.decoders] == [  # type: ignore[arg-type]
            own, min(19, own + 5), min(19, own + 5)]
    finally:
        m.close()


@pytest.mark.parametrize("share", ["0", "0.25"])  # bands of even work; the shortest quarter first
def test_length_routing_puts_short_sentences_on_the_first_loop(share: str) -> None:
    m = TranslatorModel(instances(2, {"short_share": share}), settings())
    try:
        for _ in range(2):
            m.run(text(*SENTENCES), ["translation"])  # lengths seen: bands set
        short = min(SENTENCES, key=lambda s: len(m.translator.source_ids(s)))
        longest = max(SENTENCES, key=lambda s: len(m.translator.source_ids(s)))
        assert m._route([m.translator.source_ids(short)]) is m.decoders[0]
        assert m._route([m.translator.source_ids(longest)]) is m.decoders[1]
    finally:
        m.close()

