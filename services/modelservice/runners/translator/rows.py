"""The decoder inputs of a running batch, kept between steps (numpy, for any StepModel).

Rows are beams (search.py). Per row the decoder takes the recurrent states
and the context of the row's sentence: encoder memory (S, M), attention keys (S, A) and source
mask (S,), the same for all beams of a sentence. Copying the context of every row at every
step would cost about 5% of a step on CPU (49 KB per row at 16 source tokens), so it sits in
buffers of a fixed row capacity and moves only for rows whose sentence changed; the states
(4.6 KB per row) are simply gathered by parent row each step.

The context is padded with zeros to the batch's width (the longest source, rounded up to a
multiple of ALIGN so that not every longer arrival copies the whole buffer); attention masks
the padding, so a sentence's translation does not depend on its neighbours beyond rounding.
`device.BoundRows` is the same thing with everything on the accelerator.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from services.modelservice.runners.translator.search import Arrays, StepModel

ALIGN = 4  # context widths are multiples of this


def aligned(width: int) -> int:
    return -(-width // ALIGN) * ALIGN


def split_encoded(model: StepModel, context: Arrays, states: Arrays, src_mask: np.ndarray
                  ) -> list[tuple[Arrays, Arrays]]:
    """An encoder call's outputs -> (context (1, S_i, ...), states) per sentence: views, cut to
    the sentence's own length S_i (it widens a running batch only as much as it needs); nothing
    is copied until `append`."""
    lengths = src_mask.sum(axis=1).astype(np.int64)
    axes = model.state_axes
    return [({name: value[i:i + 1, :lengths[i]] for name, value in context.items()},
             {name: np.take(value, [i], axis=axes[name]) for name, value in states.items()})
            for i in range(len(lengths))]


class Rows(Protocol):
    """What the scheduler needs from a row store: the decoder over the running rows."""

    @property
    def rows(self) -> int: ...

    @property
    def width(self) -> int:
        """Source positions of the padded context (0 when empty)."""
        ...

    def encode(self, src: np.ndarray, src_mask: np.ndarray) -> list[Any]:
        """Sentences src (n, S) int64, src_mask (n, S) -> one encoded sentence each (opaque;
        a store may defer the encoder to `append`)."""
        ...

    def append(self, encoded: Sequence[Any]) -> None:
        """Append one row per encoded sentence, in order."""
        ...

    def step(self, prev: np.ndarray) -> np.ndarray:
        """One decoder step over all rows: prev (R,) int64 -> log-probabilities (R, V) on the host."""
        ...

    def reorder(self, parents: np.ndarray) -> None:
        """Row i of the next step continues row parents[i] of the last step (same sentence)."""
        ...

    def fit(self, width: int) -> None:
        """The running sentences need only `width` positions now: narrow the context if worth it."""
        ...

    def clear(self) -> None: ...


class HostRows:
    """Rows in numpy arrays, stepped through `StepModel.step`."""

    def __init__(self, model: StepModel) -> None:
        self.model = model
        self.states: Arrays = {}  # as the model takes them, batch axis per model.state_axes
        self._out: Arrays = {}  # the last step's new states, before reordering
        self._buffers: Arrays = {}  # context, (capacity, width, ...) each
        self._tag = np.zeros(0, dtype=np.int64)  # (R,) which sentence's context sits in a row
        self._next_tag = 0
        self._width = 0

    @property
    def rows(self) -> int:
        return len(self._tag)

    @property
    def width(self) -> int:
        return self._width

    def context(self) -> Arrays:
        """The running rows' context: contiguous (R, width, ...) views of the buffers."""
        return {name: buf[:self.rows] for name, buf in self._buffers.items()}

    def encode(self, src: np.ndarray, src_mask: np.ndarray) -> list[Any]:
        context, states = self.model.encode(src, src_mask)
        return split_encoded(self.model, context, states, src_mask)

    def append(self, encoded: Sequence[Any]) -> None:
        if not encoded:
            return
        contexts: list[Arrays] = [c for c, _ in encoded]
        n, first = len(encoded), self.rows
        width = max(self._width, aligned(max(next(iter(c.values())).shape[1] for c in contexts)))
        if not self._buffers:
            self._buffers = {name: np.zeros((max(n, 8), width, *value.shape[2:]), value.dtype)
                             for name, value in contexts[0].items()}
            self._width = width
        else:
            self._reserve(first + n, width)
        for name, buf in self._buffers.items():
            for row, context in enumerate(contexts, start=first):
                value = context[name][0]  # (S_i, ...)
                buf[row, :len(value)] = value
                buf[row, len(value):] = 0  # a former row's context may still be there
        axes = self.model.state_axes
        self.states = {name: np.concatenate(([self.states[name]] if self.states else [])
                                            + [states[name] for _, states in encoded], axis=axes[name])
                       for name in axes}
        self._tag = np.concatenate([self._tag, self._next_tag + np.arange(n)])
        self._next_tag += n

    def step(self, prev: np.ndarray) -> np.ndarray:
        log_probs, self._out = self.model.step(prev, self.states, self.context())
        return log_probs

    def reorder(self, parents: np.ndarray) -> None:
        axes = self.model.state_axes
        self.states = {name: np.take(value, parents, axis=axes[name]) for name, value in self._out.items()}
        self._out = {}
        old, new = self._tag, self._tag[parents]
        self._reserve(len(new), self._width)
        # A row keeps its context when its sentence stays; beams never change sentence, so the
        # context of a moved row is that of its parent's position.
        common = min(len(old), len(new))
        moved = np.concatenate([np.flatnonzero(new[:common] != old[:common]),
                                np.arange(common, len(new))])
        if len(moved):
            for buf in self._buffers.values():
                buf[moved] = buf[parents[moved]]  # the right side is read before writing
        self._tag = new

    def fit(self, width: int) -> None:
        if self.rows == 0:
            self.clear()
        # Narrowing copies every row; do it when it drops at least a quarter of the positions.
        elif aligned(width) <= self._width * 3 // 4:
            self._resize(self._capacity(), aligned(width))

    def clear(self) -> None:
        self.states, self._out, self._buffers = {}, {}, {}
        self._tag = np.zeros(0, dtype=np.int64)
        self._width = 0

    def _capacity(self) -> int:
        return len(next(iter(self._buffers.values()))) if self._buffers else 0

    def _reserve(self, rows: int, width: int) -> None:
        capacity = self._capacity()
        if rows > capacity or width != self._width:
            self._resize(max(rows, 2 * capacity) if rows > capacity else capacity, width)

    def _resize(self, capacity: int, width: int) -> None:
        """New buffers (capacity, width, ...) with the current rows copied, padding zeroed."""
        keep, rows = min(width, self._width), self.rows
        for name, buf in self._buffers.items():
            new = np.zeros((capacity, width, *buf.shape[2:]), dtype=buf.dtype)
            new[:rows, :keep] = buf[:rows, :keep]
            self._buffers[name] = new
        self._width = width
