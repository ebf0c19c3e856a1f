"""The dynamic batching policy, as Triton's config describes it, kept free of I/O so it can be
tested alone: when is a batch ready, and does one more request fit."""

from __future__ import annotations

from dataclasses import dataclass

from services.repository import ModelSpec


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
