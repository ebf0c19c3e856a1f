"""Greedy and beam search of the translator (translator.py, search.py) over a small numpy model
(no torch).

The search runs vectorised over a running batch (search.py); `reference_search` (translator_toy)
is the rule written out per sentence and per candidate, as the shipped search did before, and
every arrangement of the batch must agree with it."""

from __future__ import annotations

import numpy as np
import pytest

from services.modelservice.runners.translator.search import RunningBeams
from services.modelservice.runners.translator.translator import beam_search, greedy_search, length_penalty
from tests.unit.translator_toy import BOS, EOS, SOURCES, ToyModel, batch, random_sources, reference_search


def test_length_penalty_is_gnmt() -> None:
    assert float(length_penalty(1, 0.6)) == 1.0
    assert float(length_penalty(7, 1.0)) == pytest.approx(2.0)
    assert float(length_penalty(10, 0.0)) == 1.0


@pytest.mark.parametrize("beam_size", [1, 2, 3, 5])
@pytest.mark.parametrize("max_len", [1, 3, 15])
def test_search_follows_the_rule_written_out(beam_size: int, max_len: int) -> None:
    model, sources = ToyModel(4), random_sources(12, seed=beam_size)
    got = beam_search(model, *batch(sources), beam_size, max_len=max_len, alpha=0.8)
    for source, hyp in zip(sources, got):
        want = reference_search(model, source, beam_size, max_len, alpha=0.8)
        assert hyp.tokens == want.tokens
        assert hyp.score == pytest.approx(want.score, abs=1e-5)


def test_beam_one_is_greedy() -> None:
    model, (src, mask) = ToyModel(), batch(SOURCES)
    greedy = greedy_search(model, src, mask, max_len=15, alpha=0.6)
    beam = beam_search(model, src, mask, beam_size=1, max_len=15, alpha=0.6)
    assert [h.tokens for h in greedy] == [h.tokens for h in beam]
    for source, hyp in zip(SOURCES, greedy):  # the most likely token each step, EOS at the 15th
        context, states = model.encode(*batch([source]))
        prev, tokens = np.array([BOS]), []
        for _ in range(14):
            log_probs, states = model.step(prev, states, context)
            prev = log_probs.argmax(1)
            if prev[0] == EOS:
                break
            tokens.append(int(prev[0]))
        assert hyp.tokens == tokens


@pytest.mark.parametrize("beam_size", [1, 3, 5])
def test_batched_equals_one_by_one(beam_size: int) -> None:
    model, (src, mask) = ToyModel(1), batch(SOURCES)
    together = beam_search(model, src, mask, beam_size, max_len=15, alpha=0.6)
    for row, hyp in zip(SOURCES, together):
        alone = beam_search(model, *batch([row]), beam_size, max_len=15, alpha=0.6)[0]
        assert alone.tokens == hyp.tokens
        assert alone.score == pytest.approx(hyp.score, abs=1e-5)


def test_wider_beam_never_scores_worse_here_and_scores_are_normalised() -> None:
    model, (src, mask) = ToyModel(2), batch(SOURCES)
    greedy = greedy_search(model, src, mask, 15, 0.6)
    beam = beam_search(model, src, mask, 5, 15, 0.6)
    for g, b in zip(greedy, beam):
        assert b.score >= g.score - 1e-6  # log-probs are <= 0, so are scores
        assert b.score <= 0.0 and EOS not in b.tokens and BOS not in b.tokens


def test_limit_forces_eos_and_bad_arguments_are_refused() -> None:
    model, (src, mask) = ToyModel(3), batch(SOURCES)
    for hyp in beam_search(model, src, mask, 4, max_len=3, alpha=0.6):
        assert len(hyp.tokens) <= 2  # two tokens + the forced EOS
    with pytest.raises(ValueError):
        beam_search(model, src, mask, 0, 5, 0.6)
    beams = RunningBeams(BOS, EOS, 0.6, max_len=5)
    with pytest.raises(ValueError, match="length limits"):
        beams.add(np.array([0]), np.array([2]), np.array([6]))

