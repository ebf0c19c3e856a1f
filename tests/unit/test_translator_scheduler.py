"""The translator's running batch (scheduler.py, with rows.py's host rows) over a small numpy
model: sentences join at any step with their own beam and limit, rows move as others finish,
and each result is still the sentence's own search (`reference_search`, translator_toy)."""

from __future__ import annotations

import numpy as np
import pytest

from services.modelservice.runners.translator.rows import HostRows
from services.modelservice.runners.translator.scheduler import Scheduler, Sentence
from services.modelservice.runners.translator.search import Hypothesis, RunningBeams
from tests.unit.translator_toy import BOS, EOS, SOURCES, ToyModel, batch, random_sources, reference_search


def test_sentences_joining_a_running_batch_at_any_step_with_their_own_beam() -> None:
    """Staggered arrivals, mixed beam sizes and limits, a small sentence cap: each result is the
    sentence's own search (rows move around as others finish; the context must follow)."""
    model, sources = ToyModel(5), random_sources(30, seed=7)
    rng = np.random.default_rng(0)
    beams, limits = rng.integers(1, 6, size=30), rng.integers(2, 14, size=30)
    scheduler = Scheduler(HostRows(model), BOS, EOS, pad_id=0, alpha=1.0, max_len=14,
                          max_sentences=6, max_tokens=2**40)
    results: dict[int, Hypothesis] = {}
    arrived = 0
    while arrived < 30 or scheduler.busy:
        for i in range(arrived, min(30, arrived + int(rng.integers(0, 4)))):
            scheduler.add(Sentence(sources[i], int(beams[i]), int(limits[i]), owner=i))
            arrived += 1
        outcome = scheduler.step()
        assert not outcome.failed
        results.update((s.owner, hyp) for s, hyp in outcome.done)
        assert len(scheduler.running) <= 6
    for i in range(30):
        want = reference_search(model, sources[i], int(beams[i]), int(limits[i]), alpha=1.0)
        assert results[i].tokens == want.tokens, i
        assert results[i].score == pytest.approx(want.score, abs=1e-5)


def test_dropped_sentences_leave_without_a_result() -> None:
    model = ToyModel(6)
    rows, beams = HostRows(model), RunningBeams(BOS, EOS, 1.0, max_len=10)
    src, mask = batch(SOURCES[:3])
    rows.append(rows.encode(src, mask))
    beams.add(np.arange(3), np.full(3, 3), np.full(3, 10))
    parents, done = beams.select(rows.step(beams.prev), drop=np.array([False, True, False]))
    rows.reorder(parents)
    assert 1 not in [d.key for d in done] and 1 not in beams.keys.tolist()
    assert rows.rows == beams.rows and set(beams.row_sentence.tolist()) <= set(range(beams.sentences))

