"""Greedy and beam search of services.translation over a small numpy model (no torch)."""

from __future__ import annotations

import numpy as np
import pytest

from services.translation import Arrays, beam_search, greedy_search, length_penalty

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
        mean = (self.embed[src] * src_mask[:, :, None]).sum(1) / src_mask.sum(1, keepdims=True)
        state = np.tanh(mean).astype(np.float32)  # (B, H)
        return {"memory": mean, "src_mask": src_mask}, {"state": state, "layers": state[None]}

    def step(self, prev: np.ndarray, states: Arrays, context: Arrays) -> tuple[np.ndarray, Arrays]:
        state = np.tanh(self.embed[prev] + states["state"] @ self.recur + 0.5 * context["memory"])
        logits = state @ self.out
        logits = logits - logits.max(1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        return log_probs.astype(np.float32), {"state": state.astype(np.float32),
                                              "layers": state[None].astype(np.float32)}


def batch(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(r) for r in rows)
    src = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        src[i, :len(r)] = r
    return src, (src != 0).astype(np.float32)


SOURCES = [[5, 6, 7, EOS], [8, EOS], [9, 4, 5, 6, 7, 11, EOS], [10, 10, EOS], [4, EOS]]


def test_length_penalty_is_gnmt() -> None:
    assert float(length_penalty(1, 0.6)) == 1.0
    assert float(length_penalty(7, 1.0)) == pytest.approx(2.0)
    assert float(length_penalty(10, 0.0)) == 1.0


def test_beam_one_equals_greedy() -> None:
    model, (src, mask) = ToyModel(), batch(SOURCES)
    greedy = greedy_search(model, src, mask, max_len=15, alpha=0.6)
    beam = beam_search(model, src, mask, beam_size=1, max_len=15, alpha=0.6)
    assert [h.tokens for h in greedy] == [h.tokens for h in beam]
    assert [h.score for h in greedy] == pytest.approx([h.score for h in beam], abs=1e-5)


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


def test_finished_hypotheses_sorted_best_first_and_limit_forces_eos() -> None:
    model, (src, mask) = ToyModel(3), batch(SOURCES)
    for hyp in beam_search(model, src, mask, 4, max_len=3, alpha=0.6):
        assert len(hyp.tokens) <= 2  # two tokens + the forced EOS
    with pytest.raises(ValueError):
        beam_search(model, src, mask, 0, 5, 0.6)
