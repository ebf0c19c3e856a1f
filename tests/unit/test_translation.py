"""Greedy and beam search of services.translation over a small numpy model (no torch).

The search runs vectorised over a running batch (services.translation_search); `reference_search`
below is the rule written out per sentence and per candidate, as the shipped search did before,
and every arrangement of the running batch must agree with it."""

from __future__ import annotations

import numpy as np
import pytest

from services.modelservice.runners.translator.translator import Arrays, Hypothesis, beam_search, greedy_search, length_penalty
from services.modelservice.runners.translator.rows import HostRows
from services.modelservice.runners.translator.scheduler import Scheduler, Sentence
from services.modelservice.runners.translator.search import NEG_INF, RunningBeams

VOCAB, HIDDEN, BOS, EOS = 12, 8, 2, 3


class ToyModel:
    """A random recurrent model: state (N, H), attention-free mean of the source."""

    bos_id, eos_id = BOS, EOS
    state_axes = {"state": 0, "layers": 1}

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.embed = rng.normal(size=(VOCAB, HIDDEN)).astype(np.float32)
        self.recur = rng.normal(scale=0.5, size=(HIDDEN, HIDDEN)).astype(np.float32)
        self.out = rng.normal(scale=1.5, size=(HIDDEN, VOCAB)).astype(np.float32)
        self.out[:, EOS] += 0.3  # sentences end sooner or later

    def encode(self, src: np.ndarray, src_mask: np.ndarray) -> tuple[Arrays, Arrays]:
        memory = self.embed[src] * src_mask[:, :, None]  # (B, S, H), zero on padding
        state = np.tanh(self._mean(memory, src_mask)).astype(np.float32)  # (B, H)
        return {"memory": memory, "src_mask": src_mask}, {"state": state, "layers": state[None]}

    @staticmethod
    def _mean(memory: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return memory.sum(1) / mask.sum(1, keepdims=True)

    def step(self, prev: np.ndarray, states: Arrays, context: Arrays) -> tuple[np.ndarray, Arrays]:
        mean = self._mean(context["memory"], context["src_mask"])
        state = np.tanh(self.embed[prev] + states["state"] @ self.recur + 0.5 * mean)
        logits = state @ self.out
        logits = logits - logits.max(1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        return log_probs.astype(np.float32), {"state": state.astype(np.float32),
                                              "layers": state[None].astype(np.float32)}


def reference_search(model: ToyModel, source: list[int], k: int, max_len: int, alpha: float
                     ) -> Hypothesis:
    """The rule, one sentence, one candidate at a time (k rows from the start, as fairseq)."""
    src = np.array([source]), np.ones((1, len(source)), np.float32)
    context, states = model.encode(*src)
    context = {n: np.repeat(v, k, axis=0) for n, v in context.items()}
    states = {n: np.repeat(v, k, axis=model.state_axes[n]) for n, v in states.items()}
    scores = np.full(k, NEG_INF, dtype=np.float64)
    scores[0] = 0.0
    history: list[list[int]] = [[] for _ in range(k)]
    prev = np.full(k, BOS, dtype=np.int64)
    finished: list[Hypothesis] = []
    for t in range(max_len):
        log_probs, states = model.step(prev, states, context)
        if t == max_len - 1:
            keep = log_probs[:, EOS].copy()
            log_probs = np.full_like(log_probs, NEG_INF)
            log_probs[:, EOS] = keep
        candidates = (scores[:, None] + log_probs).reshape(-1)
        order = np.argsort(-candidates, kind="stable")[:2 * k]
        beams, tokens, new_scores = [], [], []
        for j, c in enumerate(order):
            score, beam, token = float(candidates[c]), int(c // VOCAB), int(c % VOCAB)
            if score <= NEG_INF / 2:
                break
            if token == EOS:
                if j < k and len(finished) < k:
                    finished.append(Hypothesis(history[beam], score / float(length_penalty(t + 1, alpha))))
            elif len(beams) < k:
                beams.append(beam), tokens.append(token), new_scores.append(score)
        if len(finished) >= k or not beams:
            break
        history = [history[b] + [tok] for b, tok in zip(beams, tokens)]
        states = {n: np.take(v, beams, axis=model.state_axes[n]) for n, v in states.items()}
        context = {n: v[:len(beams)] for n, v in context.items()}
        scores, prev = np.array(new_scores), np.array(tokens, dtype=np.int64)
    return max(finished, key=lambda h: h.score)


def batch(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(r) for r in rows)
    src = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        src[i, :len(r)] = r
    return src, (src != 0).astype(np.float32)


SOURCES = [[5, 6, 7, EOS], [8, EOS], [9, 4, 5, 6, 7, 11, EOS], [10, 10, EOS], [4, EOS]]


def random_sources(n: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[*rng.integers(4, VOCAB, size=int(rng.integers(0, 9))).tolist(), EOS] for _ in range(n)]


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
