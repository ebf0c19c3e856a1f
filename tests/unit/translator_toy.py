"""What the search and scheduler tests share: a small random numpy model (no torch), the search
rule written out per sentence and per candidate (as the shipped search did before it ran
vectorised over a running batch), and source sentences for it."""

from __future__ import annotations

import numpy as np

from services.modelservice.runners.translator.search import NEG_INF, Arrays, Hypothesis, length_penalty

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

