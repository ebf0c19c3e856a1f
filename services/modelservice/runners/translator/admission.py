"""How much the translator runner takes in, and which of its decode loops takes each request.

`Admission` is the runner's `room()`: the worker reads that many stream entries (requests) and
calls `infer` once for each, so room is counted in requests; a request may carry many sentences,
so a sentence cap closes the door as well while too many are queued (one large request may go
over it: a request is never split).

`LengthRouter` sends a request to a loop by the length of its longest sentence, so that short
sentences decode in a batch of short ones: every decoder step costs about the same per row
whatever else is in the batch, so a short sentence in a batch of long ones waits for their
steps (one step per row of the batch) and, there, is answered no sooner than its neighbours'
longer steps allow. With `short_share` q the first loop takes the shortest q of the recent
sentences (by count) and the other loops split the rest evenly by work; without it, all bands
carry even work (∝ source tokens: a sentence's decoder steps grow with its source), so each
loop keeps one core about as busy as the others. Until enough lengths are seen, or with the
`least_loaded` policy, the loop with the fewest queued tokens takes the request.
"""

from __future__ import annotations

import bisect
import threading
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np

POLICIES = ("length", "least_loaded")


class Admission:
    """Requests and sentences taken and not yet answered, failed or cancelled, under two caps.
    Thread-safe: `take` on the event loop, `give` on a decode thread."""

    def __init__(self, max_requests: int, max_sentences: int) -> None:
        self.max_requests, self.max_sentences = max_requests, max_sentences
        self.requests = self.sentences = 0
        self._lock = threading.Lock()
        self._waiters: list[Callable[[], None]] = []

    def _room(self) -> int:
        if self.sentences >= self.max_sentences:
            return 0
        return max(0, self.max_requests - self.requests)

    def room(self) -> int:
        """How many more requests to take now (0: full)."""
        with self._lock:
            return self._room()

    def take(self, sentences: int) -> None:
        with self._lock:
            self.requests += 1
            self.sentences += sentences

    def give(self, sentences: int) -> None:
        """One request with `sentences` sentences is out; wakes the waiters if there is room."""
        with self._lock:
            self.requests -= 1
            self.sentences -= sentences
            waiters: list[Callable[[], None]] = []
            if self._room() > 0:
                waiters, self._waiters = self._waiters, []
        for wake in waiters:
            wake()

    def on_room(self, wake: Callable[[], None]) -> None:
        """Call `wake` as soon as room() > 0 (at once if it is already; else on a decode thread)."""
        with self._lock:
            if self._room() <= 0:
                self._waiters.append(wake)
                return
        wake()


class LengthRouter:
    """Picks one of `loops` decode loops for a request (see the module docstring). Called on
    the event loop (and by TranslatorModel.run's callers): its state is a bounded deque and a
    list of bounds replaced whole, so a rare concurrent call sees old bounds at worst."""

    def __init__(self, loops: int, policy: str = "length", short_share: float = 0.0, window: int = 1024,
                 every: int = 32) -> None:
        if policy not in POLICIES:
            raise ValueError(f"routing must be one of {', '.join(POLICIES)}, got {policy!r}")
        if not 0.0 <= short_share < 1.0:
            raise ValueError(f"short_share must be in [0, 1), got {short_share}")
        self.loops, self.policy, self.every = loops, policy, every
        self.short_share = short_share
        self.recent: deque[int] = deque(maxlen=window)  # source lengths of recent sentences
        self.bounds: list[int] = []  # loop i takes lengths in [bounds[i-1], bounds[i])
        self._seen = 0

    def choose(self, lengths: Sequence[int], queued_tokens: Sequence[int]) -> int:
        """A request's source lengths (EOS included) and each loop's queued tokens -> a loop."""
        if self.loops == 1:
            return 0
        self.recent.extend(lengths)
        self._seen += len(lengths)
        if self.policy == "length" and self._seen >= self.every:
            self._seen = 0
            self.bounds = self.band_bounds(list(self.recent), self.loops, self.short_share)
        if self.policy == "least_loaded" or not self.bounds:
            return int(np.argmin(queued_tokens))
        return bisect.bisect_right(self.bounds, max(lengths))

    @staticmethod
    def band_bounds(lengths: Sequence[int], loops: int, short_share: float = 0.0) -> list[int]:
        """The bands' bounds: the first at the `short_share` quantile by count (0: by work, as
        the others)."""
        if not short_share or loops < 2:
            return LengthRouter.even_work_bounds(lengths, loops)
        ordered = np.sort(np.asarray(lengths, dtype=np.int64))
        goal = short_share * len(ordered)
        v = int(ordered[min(int(goal), len(ordered) - 1)])
        # Equal lengths stay together, below or above, whichever count is closer to the goal.
        first = max(min((v, v + 1), key=lambda b: abs(int(np.searchsorted(ordered, b)) - goal)),
                    int(ordered[0]) + 1)
        rest = ordered[ordered >= first]
        if loops == 2 or not len(rest):
            return [first] + [first] * (loops - 2)
        return [first, *(max(b, first) for b in LengthRouter.even_work_bounds(rest.tolist(), loops - 1))]

    @staticmethod
    def even_work_bounds(lengths: Sequence[int], loops: int) -> list[int]:
        """loops - 1 bounds cutting `lengths` into bands of about equal summed length (a band
        takes the lengths >= its lower bound). Equal lengths stay in one band, the lower or the
        upper whichever is closer to even; the first loop always takes the shortest."""
        ordered = np.sort(np.asarray(lengths, dtype=np.int64))
        work = np.cumsum(ordered)

        def below(bound: int) -> int:  # summed length of the band under `bound`
            at = int(np.searchsorted(ordered, bound))
            return int(work[at - 1]) if at else 0

        bounds = []
        for i in range(1, loops):
            goal = work[-1] * i / loops
            v = int(ordered[min(int(np.searchsorted(work, goal)), len(ordered) - 1)])
            bounds.append(min((v, v + 1), key=lambda b: abs(below(b) - goal)))
        return [max(b, int(ordered[0]) + 1) for b in bounds]
