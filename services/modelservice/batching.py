"""The dynamic batching policy, as Triton's config describes it, kept free of I/O so it can be
tested alone: when is a batch ready, does one more request fit, and is waiting worth it.

Triton's knobs keep their meaning: a batch goes when it is full, when it reaches a preferred
size, or when its first request has waited `max_queue_delay`. What we add is the question
Triton never asks: will anything arrive in the time left? `WaitEstimator` measures how many
requests arrived while earlier batches waited; when the answer is "almost surely nothing" (a
closed-loop client at concurrency 1), the batch goes at once instead of waiting in vain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tensorgate.repository import ModelSpec


@dataclass(frozen=True)
class BatchPolicy:
    max_batch_size: int  # rows; 0 in the config means the model takes no batch dim: one request a batch
    max_queue_delay_s: float
    preferred_batch_sizes: tuple[int, ...] = ()

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> BatchPolicy:
        return cls(spec.max_batch_size, spec.max_queue_delay_s, spec.preferred_batch_sizes)

    @property
    def capacity(self) -> int:
        return max(1, self.max_batch_size)

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 0

    def fits(self, rows: int, more: int) -> bool:
        """Can a request of `more` rows join a batch of `rows`?"""
        if not self.batching:
            return rows == 0
        return rows + more <= self.capacity

    def ready(self, rows: int, waited_s: float) -> bool:
        """Dispatch now? When full, when a preferred size is reached, or when the oldest request
        has waited max_queue_delay. (Called after every read that may have added requests.)"""
        if rows >= self.capacity or not self.batching:
            return True
        if rows in self.preferred_batch_sizes:
            return True
        return waited_s >= self.max_queue_delay_s

    def remaining_delay_s(self, waited_s: float) -> float:
        return max(0.0, self.max_queue_delay_s - waited_s)

    def target(self, rows: int) -> int:
        """The size this batch is waiting for: the next preferred size above `rows`, else full."""
        return next((size for size in self.preferred_batch_sizes if size > rows), self.capacity)


@dataclass
class WaitEstimator:
    """Arrivals per second while a batch could have waited for more, over recent observations
    (sums decayed per observation, each weighted by its duration).

    Observed: the waits, and the span after a batch that went without waiting (what arrived
    meanwhile could have joined it). Not the overall arrival rate: that says nothing about a
    closed-loop client, whose next request comes only after this one is answered.
    """

    decay: float = 0.7  # weight of the past per observed wait: a new regime shows within ~5 waits
    min_expected: float = 0.5  # wait only if at least this many requests are expected in the time left
    probe_interval_s: float = 0.5  # even then, wait once this often to notice the load coming back
    arrivals: float = 0.0
    waited_s: float = 0.0
    last_wait: float = -math.inf  # monotonic time the last wait started

    def rate(self) -> float | None:
        """Requests per second seen while waiting; None before any wait was observed."""
        return self.arrivals / self.waited_s if self.waited_s > 0 else None

    def observe(self, arrivals: int, waited_s: float) -> None:
        self.arrivals = self.arrivals * self.decay + arrivals
        self.waited_s = self.waited_s * self.decay + max(waited_s, 1e-6)

    def plan(self, rows: int, target: int, remaining_s: float, now: float) -> float:
        """Seconds to wait before reading again (0: dispatch now). At the measured rate, wait
        just long enough for the target size to fill, never past the window."""
        if remaining_s <= 0 or rows >= target:
            return 0.0
        rate = self.rate()
        if rate is None:  # nothing measured yet: wait as Triton would
            wait = remaining_s
        elif rate * remaining_s < self.min_expected:
            if now - self.last_wait < self.probe_interval_s:
                return 0.0
            wait = remaining_s  # a probe: measure the rate again over a whole window
        else:
            wait = min(remaining_s, (target - rows) / rate)
        self.last_wait = now
        return wait


@dataclass
class InflightPeaks:
    """Each gateway's recent peak of requests in flight for this model, from the count its
    entries carry (the gateway's in-flight count when it sent them).

    A closed-loop client group answered in one batch sends its next requests together, but they
    reach the stream a few hundred microseconds apart: the first comes alone and says "1 in
    flight". Judged by its own count it would go at once, and its batch-mates would then wait
    for the next batch (at concurrency 4, half the batches held one request). The peak over the
    last `window_s` says how many to expect; it falls back within the window once the load does.
    """

    window_s: float = 0.05
    peaks: dict[str, tuple[int, float]] = field(default_factory=dict)  # reply stream -> (peak, when seen)
    prune_above: int = 64  # gateways come and go (restarts, scale-in): past this many, forget the silent ones

    def observe(self, gateway: str, inflight: int, now: float) -> None:
        peak, seen = self.peaks.get(gateway, (0, -math.inf))
        if inflight >= peak or now - seen > self.window_s:
            if gateway not in self.peaks and len(self.peaks) >= self.prune_above:
                self.peaks = {g: p for g, p in self.peaks.items() if now - p[1] <= self.window_s}
            self.peaks[gateway] = (inflight, now)

    def expected(self, gateway: str, now: float) -> int:
        """The gateway's recent peak (0: none seen within the window)."""
        peak, seen = self.peaks.get(gateway, (0, -math.inf))
        return peak if now - seen <= self.window_s else 0
