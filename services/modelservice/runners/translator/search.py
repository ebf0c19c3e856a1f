"""The beam search math, once: a running set of sentences that changes every step.

`RunningBeams` holds the hypotheses of every sentence being decoded. One `select` call takes the
decoder's log-probabilities for all rows (each row is one live beam of one sentence), applies
the search rule to every sentence at once (numpy, no Python loop per sentence) and says which
sentences are done. Sentences may join (`add`) between any two steps, each with its own beam
size and length limit, so the same code serves the batch search (all sentences join at step 0)
and the serving loop (sentences join as they arrive, and leave the moment they are done).

The rule, per sentence with beam size k (fairseq's):
- candidates are (score of a beam + log p(token)) over its live beams and the vocabulary;
- of the 2k best, an EOS among the best k finishes a hypothesis (until k are finished), and
  the best k that do not end in EOS are the next live beams (k = 1 is greedy search);
- at the step that reaches the length limit only EOS may be chosen;
- the sentence is done with k finished hypotheses or no live beam left; its result is the
  finished hypothesis with the best length-normalised score sum / ((5 + length) / 6) ** alpha
  (GNMT), length counting the EOS, the first one found on ties.

A new sentence starts with one row (its only live beam), not k copies: the other k - 1 would
only produce candidates at -inf. Rows are placed so that a sentence that keeps its beams keeps
its row positions, and holes left by finished sentences are filled from the end: the decoder's
per-row context (the encoder output, repeated per beam) then moves only for the few rows whose
sentence changed (see rows.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

Arrays = dict[str, np.ndarray]
NEG_INF = np.float32(-1e30)  # a log-probability that rules a token out
CHUNK = 16  # vocabulary entries per chunk for the two-stage top-k in `_best_candidates`


def length_penalty(length: np.ndarray | int, alpha: float) -> np.ndarray:
    """GNMT's ((5 + length) / 6) ** alpha."""
    return np.power((5.0 + np.asarray(length, dtype=np.float64)) / 6.0, alpha)


class StepModel(Protocol):
    """What the search needs from a model, in numpy."""

    eos_id: int
    bos_id: int
    # decoder state name -> its batch axis, e.g. {"state_h": 1, "state_c": 1, "feed": 0}
    state_axes: dict[str, int]

    def encode(self, src: np.ndarray, src_mask: np.ndarray) -> tuple[Arrays, Arrays]:
        """src (B, S) int64, src_mask (B, S) float32 -> (context, initial states).
        Context arrays (memory, keys, src_mask) have the batch on axis 0 and the source position
        on axis 1: a sentence's context may be padded with zeros along axis 1 (src_mask 0 there)
        to sit in a wider batch without changing its translation."""
        ...

    def step(self, prev: np.ndarray, states: Arrays, context: Arrays) -> tuple[np.ndarray, Arrays]:
        """prev (N,) int64 -> log-probabilities (N, V) float32 and the next states."""
        ...


@dataclass(frozen=True)
class Hypothesis:
    tokens: list[int]  # without BOS and EOS
    score: float  # length-normalised log-probability


@dataclass(frozen=True)
class Done:
    """A sentence that left the running set, with its best hypothesis."""

    key: int
    hypothesis: Hypothesis


def search_limit(src_len: int, max_target_len: int, max_output_len: int | None = None) -> int:
    """Decoder steps a sentence may take (its last one forced to EOS): the shipped rule
    min(max_target_len, 2 * source tokens + 10, max_output_len), at least 1."""
    limit = min(max_target_len, 2 * src_len + 10)
    if max_output_len is not None:
        limit = min(limit, max_output_len)
    return max(1, limit)


def _chunking(vocab: int) -> int:
    """Entries per chunk: the largest divisor of the vocabulary size up to CHUNK."""
    return next(m for m in range(min(CHUNK, vocab), 0, -1) if vocab % m == 0)


class RunningBeams:
    """The live beams (rows) and finished hypotheses of the sentences being decoded."""

    def __init__(self, bos_id: int, eos_id: int, alpha: float, max_len: int) -> None:
        """`max_len`: the largest length limit any sentence will have (history width)."""
        self.bos_id, self.eos_id, self.alpha = bos_id, eos_id, alpha
        self.max_len = max_len
        # Per sentence (B,): its key, beam size, steps taken, length limit, finished count,
        # best normalised score so far and that hypothesis' tokens (B, max_len) and length.
        self.keys = np.zeros(0, dtype=np.int64)
        self.beam = np.zeros(0, dtype=np.int64)
        self.steps = np.zeros(0, dtype=np.int64)
        self.limit = np.zeros(0, dtype=np.int64)
        self.n_finished = np.zeros(0, dtype=np.int64)
        self.best_score = np.zeros(0, dtype=np.float64)
        self.best_tokens = np.zeros((0, max_len), dtype=np.int32)
        self.best_len = np.zeros(0, dtype=np.int64)
        # Per row (R,): its sentence (index into the arrays above), cumulative log-probability,
        # the tokens so far (R, max_len) and the token it feeds the decoder next.
        self.row_sentence = np.zeros(0, dtype=np.int64)
        self.row_score = np.zeros(0, dtype=np.float64)
        self.history = np.zeros((0, max_len), dtype=np.int32)
        self.prev = np.zeros(0, dtype=np.int64)

    @property
    def sentences(self) -> int:
        return len(self.keys)

    @property
    def rows(self) -> int:
        return len(self.row_sentence)

    def add(self, keys: np.ndarray, beam: np.ndarray, limit: np.ndarray) -> None:
        """New sentences, one row each, appended after the current rows (in this order)."""
        if np.any(beam < 1):
            raise ValueError("beam_size must be >= 1")
        if np.any(limit > self.max_len) or np.any(limit < 1):
            raise ValueError(f"length limits must be 1..{self.max_len}")
        n, first = len(keys), self.sentences
        self.keys = np.concatenate([self.keys, keys.astype(np.int64)])
        self.beam = np.concatenate([self.beam, beam.astype(np.int64)])
        self.steps = np.concatenate([self.steps, np.zeros(n, dtype=np.int64)])
        self.limit = np.concatenate([self.limit, limit.astype(np.int64)])
        self.n_finished = np.concatenate([self.n_finished, np.zeros(n, dtype=np.int64)])
        self.best_score = np.concatenate([self.best_score, np.full(n, -np.inf)])
        self.best_tokens = np.concatenate([self.best_tokens, np.zeros((n, self.max_len), np.int32)])
        self.best_len = np.concatenate([self.best_len, np.zeros(n, dtype=np.int64)])
        self.row_sentence = np.concatenate([self.row_sentence, first + np.arange(n)])
        self.row_score = np.concatenate([self.row_score, np.zeros(n)])
        self.history = np.concatenate([self.history, np.zeros((n, self.max_len), np.int32)])
        self.prev = np.concatenate([self.prev, np.full(n, self.bos_id, dtype=np.int64)])

    def select(self, log_probs: np.ndarray, drop: np.ndarray | None = None
               ) -> tuple[np.ndarray, list[Done]]:
        """One step: log_probs (R, V) for the current rows -> (parents, done sentences).

        `parents` (R',) gives, for each row of the next step, the row of this step it continues
        (the caller reorders the decoder states with it, see rows.py); `drop` (B,)
        bool marks sentences to remove without a result (cancelled requests)."""
        if self.sentences == 0:
            return np.zeros(0, dtype=np.int64), []
        if log_probs.shape[0] != self.rows:
            raise ValueError(f"{log_probs.shape[0]} rows of log-probabilities for {self.rows} rows")
        forced = self.steps[self.row_sentence] == self.limit[self.row_sentence] - 1  # (R,)
        if forced.any():  # the limit: only EOS may follow
            keep = log_probs[forced, self.eos_id]
            log_probs = log_probs.copy()
            log_probs[forced] = NEG_INF
            log_probs[forced, self.eos_id] = keep
        slot = self._slots()  # (B, kmax) row of each beam (-1: none)
        width = 2 * int(self.beam.max())
        value, parent, token = self._best_candidates(log_probs, slot, width)  # (B, W), best first

        # The rule, for every sentence at once (j: rank of the candidate).
        k = self.beam[:, None]
        j = np.arange(value.shape[1])[None, :]
        valid = (value > NEG_INF / 2) & (j < 2 * k)  # sorted, so a prefix: the loop's `break`
        eos = token == self.eos_id
        finishing = valid & eos & (j < k)  # only an EOS among the k best finishes a hypothesis
        finishing &= self.n_finished[:, None] + np.cumsum(finishing, axis=1) <= k
        live = valid & ~eos
        live &= np.cumsum(live, axis=1) <= k
        self.n_finished += finishing.sum(axis=1)
        self._keep_best(value, parent, finishing)
        done = (self.n_finished >= self.beam) | ~live.any(axis=1)
        if drop is not None:
            done |= drop
        results = [Done(int(self.keys[b]), self._best(int(b)))
                   for b in np.flatnonzero(done if drop is None else done & ~drop)]

        live &= ~done[:, None]
        parents = self._place(live, parent, token, value, slot, done)
        self.steps += 1
        if done.any():
            for name in ("keys", "beam", "steps", "limit", "n_finished", "best_score", "best_tokens",
                         "best_len"):
                setattr(self, name, getattr(self, name)[~done])
        return parents, results

    def _best(self, b: int) -> Hypothesis:
        if not np.isfinite(self.best_score[b]):  # nothing finished (cannot happen with EOS forced)
            return Hypothesis([], float(NEG_INF))
        return Hypothesis(self.best_tokens[b, :self.best_len[b]].tolist(), float(self.best_score[b]))

    def _slots(self) -> np.ndarray:
        """(B, kmax) position of the r-th row (in position order) of each sentence, -1 where it
        has fewer rows."""
        order = np.argsort(self.row_sentence, kind="stable")  # positions ascend per sentence
        counts = np.bincount(self.row_sentence, minlength=self.sentences)
        starts = np.cumsum(counts) - counts
        rank = np.arange(self.rows) - starts[self.row_sentence[order]]
        slot = np.full((self.sentences, int(self.beam.max())), -1, dtype=np.int64)
        slot[self.row_sentence[order], rank] = order
        return slot

    def _best_candidates(self, log_probs: np.ndarray, slot: np.ndarray, width: int
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The `width` best candidates per sentence, best first: value (B, W) float64 (the beam's
        score + log p, as a full (B, k * V) search would add them), parent row and token (B, W).

        Two stages instead of a partition over all k * V candidates: the vocabulary is cut into
        strided chunks (entries c, c + C, c + 2C, ... for C = V / m), a chunk's best candidate is
        the beam score plus the chunk's max, and the W best candidates all lie in the W best
        chunks (a candidate outside them has W chunk maxima above it). About 5x less work than
        numpy.argpartition over every row."""
        rows, vocab = log_probs.shape
        m = _chunking(vocab)
        chunks = vocab // m
        grid = log_probs.reshape(rows, m, chunks)  # grid[r, i, c] = log_probs[r, c + chunks * i]
        chunk_best = self.row_score[:, None] + grid.max(axis=1)  # (R, C) float64
        chunk_best = np.concatenate([chunk_best, np.full((1, chunks), -np.inf)])  # row -1: none
        per_sentence = chunk_best[slot].reshape(self.sentences, -1)  # (B, kmax * C)
        n_chunks = min(width, per_sentence.shape[1])
        top = np.argpartition(-per_sentence, n_chunks - 1, axis=1)[:, :n_chunks]  # (B, w)
        rows_of = slot[np.arange(self.sentences)[:, None], top // chunks]  # (B, w), -1: none
        chunk = top % chunks
        values = grid[rows_of[:, :, None], np.arange(m), chunk[:, :, None]]  # (B, w, m)
        score = np.where(rows_of >= 0, self.row_score[rows_of], -np.inf)
        candidates = (score[:, :, None] + values).reshape(self.sentences, -1)  # (B, w * m)
        tokens = (chunk[:, :, None] + chunks * np.arange(m)).reshape(self.sentences, -1)
        parents = np.repeat(rows_of, m, axis=1)
        n = min(width, candidates.shape[1])
        best = np.argpartition(-candidates, n - 1, axis=1)[:, :n]
        best = np.take_along_axis(best, np.argsort(-np.take_along_axis(candidates, best, axis=1),
                                                   axis=1, kind="stable"), axis=1)
        value, parent, token = (np.take_along_axis(a, best, axis=1) for a in (candidates, parents, tokens))
        return value, parent, token

    def _keep_best(self, value: np.ndarray, parent: np.ndarray, finishing: np.ndarray) -> None:
        """Record this step's finished hypotheses where one beats the sentence's best so far."""
        normed = np.where(finishing, value / length_penalty(self.steps + 1, self.alpha)[:, None],
                          -np.inf)  # (B, W)
        first = normed.argmax(axis=1)  # the first of equal scores, as max() over a list
        b = np.flatnonzero(normed[np.arange(len(first)), first] > self.best_score)
        if len(b):
            rows = parent[b, first[b]]
            self.best_score[b] = normed[b, first[b]]
            self.best_tokens[b] = self.history[rows]
            self.best_len[b] = self.steps[b]

    def _place(self, live: np.ndarray, parent: np.ndarray, token: np.ndarray, value: np.ndarray,
               slot: np.ndarray, done: np.ndarray) -> np.ndarray:
        """Lay out the next step's rows and return their parents (R',).

        The r-th new beam of a sentence takes the position of its r-th old row when it had one
        and that position is still inside the new row count; the others (a new sentence growing
        from 1 row to k, rows above the new count) fill the holes of finished sentences, lowest
        first, then positions past the old end."""
        b, r = np.nonzero(live)  # new beams: sentence and candidate rank, in order
        new_rows = len(b)
        rank = np.cumsum(live, axis=1)[b, r] - 1
        position = slot[b, rank]  # -1: the sentence had no r-th row
        stays = (position >= 0) & (position < new_rows)
        taken = np.zeros(max(self.rows, new_rows), dtype=bool)
        taken[position[stays]] = True
        holes = np.flatnonzero(~taken[:new_rows])
        position[~stays] = holes  # as many holes below new_rows as beams without a place
        parents = np.empty(new_rows, dtype=np.int64)
        parents[position] = parent[b, r]
        sentence = np.cumsum(~done) - 1  # old sentence index -> index after removing the done
        self.row_sentence = np.empty(new_rows, dtype=np.int64)
        self.row_sentence[position] = sentence[b]
        self.row_score = np.empty(new_rows, dtype=np.float64)
        self.row_score[position] = value[b, r]
        self.prev = np.empty(new_rows, dtype=np.int64)
        self.prev[position] = token[b, r]
        step = np.empty(new_rows, dtype=np.int64)
        step[position] = self.steps[b]
        self.history = self.history[parents]
        self.history[np.arange(new_rows), step] = self.prev
        return parents
