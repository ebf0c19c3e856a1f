"""Continuous batching for the translator: waiting -> running -> done, one decoder step at a time.

In the spirit of vLLM's scheduler: `step` admits waiting sentences into the running batch while
the budget allows, runs one decoder step for every running beam, and retires the sentences that
are done, so a sentence starts at the next step after it arrives and its rows leave the decoder
the step it ends. The budget is `max_sentences` running sentences and `max_tokens` context
tokens, counted as beam size x the batch's padded source width summed over running sentences
(what the decoder reads per step and, on a GPU, what it holds in memory).

Admission is first come, first served for the head of the queue (it never waits behind a later
arrival, so nothing starves); the rest of the room goes to the waiting sentences closest in
length to the running batch, so the padded context wastes little. Sentences are encoded when
they arrive (the first ones of the queue), together, one encoder call per group of similar
length; a single encoder call for one sentence costs about twice as much per sentence as in a
group of 16.

Not thread-safe: one thread owns a Scheduler (runner.py's DecodeLoop).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.modelservice.runners.translator.rows import Rows, aligned
from services.modelservice.runners.translator.search import Hypothesis, RunningBeams

log = logging.getLogger(__name__)

@dataclass(eq=False)
class Sentence:
    """One sentence to translate, with whoever wants its result."""

    ids: list[int]  # source token ids, EOS included
    beam: int
    limit: int  # decoder steps at most (search.search_limit)
    owner: Any = None  # for the caller (its request and position)
    key: int = -1  # given by the scheduler
    encoded: Any = None  # the row store's encoding, once done


@dataclass
class Outcome:
    """What one `step` finished: results, and sentences that failed with the exception."""

    done: list[tuple[Sentence, Hypothesis]] = field(default_factory=list)
    failed: list[tuple[Sentence, BaseException]] = field(default_factory=list)


@dataclass
class Counters:
    """Running totals, for tests and logs."""

    steps: int = 0
    row_steps: int = 0  # decoder rows summed over steps
    peak_tokens: int = 0  # largest reserved budget (beam x padded width, summed) seen at a step
    peak_rows: int = 0
    peak_sentences: int = 0


class Scheduler:
    def __init__(self, rows: Rows, bos_id: int, eos_id: int, pad_id: int, alpha: float,
                 max_len: int, max_sentences: int, max_tokens: int) -> None:
        """`max_len`: the largest length limit of any sentence."""
        self.rows, self.pad_id = rows, pad_id
        self.max_sentences, self.max_tokens = max_sentences, max_tokens
        self.beams = RunningBeams(bos_id, eos_id, alpha, max_len)
        self.waiting: list[Sentence] = []
        self.running: dict[int, Sentence] = {}
        self.counters = Counters()
        self._cancelled: set[int] = set()
        self._next_key = 0

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.running)

    def reserved_tokens(self) -> int:
        """The budget in use: beam x padded source width, over the running sentences."""
        return sum(s.beam for s in self.running.values()) * self.rows.width

    def add(self, sentence: Sentence) -> int:
        if sentence.beam < 1:
            raise ValueError("beam_size must be >= 1")
        sentence.key = self._next_key
        self._next_key += 1
        self.waiting.append(sentence)
        return sentence.key

    def cancel(self, keys: set[int]) -> None:
        """Forget these sentences: waiting ones at once, running ones at the next step."""
        self.waiting = [s for s in self.waiting if s.key not in keys]
        self._cancelled |= keys & self.running.keys()

    def step(self) -> Outcome:
        outcome = Outcome()
        self._admit(outcome)
        if not self.running:
            return outcome
        c = self.counters
        c.steps += 1
        c.row_steps += self.beams.rows
        c.peak_tokens = max(c.peak_tokens, self.reserved_tokens())
        c.peak_rows = max(c.peak_rows, self.beams.rows)
        c.peak_sentences = max(c.peak_sentences, len(self.running))
        drop = np.isin(self.beams.keys, list(self._cancelled)) if self._cancelled else None
        try:
            log_probs = self.rows.step(self.beams.prev)
            parents, done = self.beams.select(log_probs, drop)
            self.rows.reorder(parents)
        except Exception as err:  # the step of every running sentence is lost
            log.exception("decoder step failed: failing the %d running sentences", len(self.running))
            outcome.failed += [(s, err) for s in self.running.values()]
            self._reset()
            return outcome
        for finished in done:
            outcome.done.append((self.running.pop(finished.key), finished.hypothesis))
        for key in self._cancelled:
            self.running.pop(key, None)
        self._cancelled.clear()
        self.rows.fit(max((len(s.ids) for s in self.running.values()), default=0))
        return outcome

    def _reset(self) -> None:
        self.running.clear()
        self._cancelled.clear()
        self.rows.clear()
        self.beams = RunningBeams(self.beams.bos_id, self.beams.eos_id, self.beams.alpha,
                                  self.beams.max_len)

    def _choose(self) -> list[Sentence]:
        """Waiting sentences that fit the budget now, the head of the queue first."""
        room = self.max_sentences - len(self.running)
        if room <= 0 or not self.waiting:
            return []
        beams = sum(s.beam for s in self.running.values())
        width = max((len(s.ids) for s in self.running.values()), default=0)
        ahead = 2 * self.max_sentences  # the encoded prefix lies within it (_encode_arrivals)
        window = [s for s in self.waiting[:ahead] if s.encoded is not None]
        if not window:
            return []
        head, rest = window[0], window[1:]
        target = width or len(head.ids)
        rest.sort(key=lambda s: abs(len(s.ids) - target))  # stable: arrival order on ties
        chosen: list[Sentence] = []
        for s in [head, *rest]:
            if len(chosen) == room:
                break
            wider = max(width, len(s.ids))
            if (beams + s.beam) * max(aligned(wider), self.rows.width) > self.max_tokens \
                    and (chosen or self.running):
                if s is head:
                    return []  # the head waits for room; nothing overtakes it
                continue
            chosen.append(s)
            beams, width = beams + s.beam, wider
        taken = set(map(id, chosen))
        self.waiting[:ahead] = [s for s in self.waiting[:ahead] if id(s) not in taken]
        return chosen

    def _encode_arrivals(self, outcome: Outcome) -> None:
        """Keep the queue's first max_sentences to 2 x max_sentences sentences encoded (an
        encoded prefix of the queue, which admission chooses from). They are encoded together,
        in groups of similar length: a group ends where a source is more than a quarter (and 2
        tokens) longer than the group's first, or at max_sentences."""
        ready = next((i for i, s in enumerate(self.waiting) if s.encoded is None), len(self.waiting))
        if ready >= self.max_sentences:
            return
        fresh = sorted(self.waiting[ready:2 * self.max_sentences], key=lambda s: len(s.ids))
        groups: list[list[Sentence]] = []
        for s in fresh:
            if groups and len(groups[-1]) < self.max_sentences and \
                    len(s.ids) <= len(groups[-1][0].ids) * 5 // 4 + 2:
                groups[-1].append(s)
            else:
                groups.append([s])
        failed: set[int] = set()
        for group in groups:
            width = max(len(s.ids) for s in group)
            src = np.full((len(group), width), self.pad_id, dtype=np.int64)
            for row, s in enumerate(group):
                src[row, :len(s.ids)] = s.ids
            lengths = np.array([len(s.ids) for s in group])
            mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.float32)  # (n, S)
            try:
                for s, encoded in zip(group, self.rows.encode(src, mask)):
                    s.encoded = encoded
            except Exception as err:  # only this group's sentences are lost
                log.exception("encoder failed: failing %d sentences", len(group))
                outcome.failed += [(s, err) for s in group]
                failed |= {s.key for s in group}
        if failed:
            self.waiting = [s for s in self.waiting if s.key not in failed]

    def _admit(self, outcome: Outcome) -> None:
        self._encode_arrivals(outcome)
        chosen = self._choose()
        if not chosen:
            return
        try:
            self.rows.append([s.encoded for s in chosen])
        except Exception as err:
            log.exception("admitting %d sentences failed", len(chosen))
            outcome.failed += [(s, err) for s in chosen]
            return
        for s in chosen:
            s.encoded = None  # the rows hold it now
        self.beams.add(np.array([s.key for s in chosen]), np.array([s.beam for s in chosen]),
                       np.array([s.limit for s in chosen]))
        self.running.update((s.key, s) for s in chosen)
